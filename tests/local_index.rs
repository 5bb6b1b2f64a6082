//! The local SQLite index is a cache: deleting or damaging it loses nothing, never makes a
//! backup skip a blob that is not stored, and is repaired without user action.

mod common;

use common::*;

fn index_file(env: &Env) -> std::path::PathBuf {
    let dirs: Vec<_> = std::fs::read_dir(&env.cache).unwrap().flatten().collect();
    assert_eq!(dirs.len(), 1, "one repository folder in the cache");
    dirs[0].path().join("index.sqlite")
}

fn tree(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    for i in 0..50 {
        write(&src.join(format!("f{i}")), &noise(i, 100_000));
    }
    write(&src.join("big"), &noise(77, 8 * 1024 * 1024));
    src
}

#[test]
fn deleted_index_is_rebuilt_and_still_dedups() {
    let env = Env::new();
    let src = tree(&env);
    env.init();
    env.backup_json(&[&src]);
    let size = env.repo_size();
    std::fs::remove_dir_all(&env.cache).unwrap();
    let out = env.run(&["backup", "--json", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["summary"]["data_blobs_added"], 0,
        "second backup re-uploaded data"
    );
    assert!(env.repo_size() - size < 10_000);
    let target = env.path("out");
    env.restore("latest", &target);
    assert_eq!(describe(&src), describe(&restored(&target, &src)));
}

#[test]
fn damaged_index_is_detected_and_rebuilt() {
    let env = Env::new();
    let src = tree(&env);
    env.init();
    env.backup_json(&[&src]);
    // Checkpoint the WAL so the pages live in the main file, then overwrite one page.
    env.ok(&["snapshots"]);
    let path = index_file(&env);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    drop(conn);
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() >= 3 * 4096);
    for b in &mut bytes[4096..8192] {
        *b = 0xA5;
    }
    std::fs::write(&path, bytes).unwrap();
    let out = env.run(&["snapshots", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rebuilt the local index"),
        "{}",
        stderr(&out)
    );
    let target = env.path("out");
    env.restore("latest", &target);
    assert_eq!(describe(&src), describe(&restored(&target, &src)));
}

#[test]
fn index_of_another_schema_version_is_rebuilt() {
    let env = Env::new();
    let src = tree(&env);
    env.init();
    env.backup_json(&[&src]);
    let conn = rusqlite::Connection::open(index_file(&env)).unwrap();
    conn.execute(
        "UPDATE meta SET value = '999' WHERE key = 'schema_version'",
        [],
    )
    .unwrap();
    drop(conn);
    let out = env.run(&["snapshots"]);
    assert!(
        stderr(&out).contains("schema version 999"),
        "{}",
        stderr(&out)
    );
}

/// A segment the cache merged disappears from the repository (as after a prune or repair):
/// the cache must forget its blobs, so the next backup stores them again instead of trusting
/// packs that nothing lists.
#[test]
fn vanished_segment_is_not_trusted_for_dedup() {
    let env = Env::new();
    let src = tree(&env);
    env.init();
    env.backup_json(&[&src]);
    for f in files_below(&env.repo.join("index")) {
        std::fs::remove_file(f).unwrap();
    }
    for f in files_below(&env.repo.join("packs")) {
        std::fs::remove_file(f).unwrap();
    }
    let json = env.backup_json(&[&src]);
    assert!(
        json["summary"]["data_blobs_added"].as_u64().unwrap() > 50,
        "{json}"
    );
    let target = env.path("out");
    env.restore("latest", &target);
    assert_eq!(describe(&src), describe(&restored(&target, &src)));
}

/// Regression: processes opening a fresh cache at the same moment used to see each other's
/// half-created index file ("no such table: blobs").
#[test]
fn processes_creating_the_local_index_at_once_all_succeed() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("f"), b"content");
    env.ok(&["backup", src.to_str().unwrap()]);
    for round in 0..5 {
        let cache = env.path(&format!("fresh-cache-{round}"));
        let children: Vec<_> = (0..4)
            .map(|_| {
                std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
                    .arg("--repo")
                    .arg(&env.repo)
                    .arg("--cache-dir")
                    .arg(&cache)
                    .args(["--json", "snapshots"])
                    .env("CAIRN_PASSWORD", PASSWORD)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
        }
    }
}
