//! Compatibility suite: repositories written by earlier versions of cairn, committed under
//! `tests/fixtures/`, must stay readable and restore byte-exactly (design rule 7).
//!
//! To add the sample of a new format version, run
//! `CAIRN_WRITE_SAMPLE=tests/fixtures/repo-vN cargo test --release --test compat -- --ignored`
//! with that version's binary, commit the folder, and add a test like `format_v1_restores`.

mod common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use common::*;

const SAMPLE_PASSWORD: &str = "cairn sample repository";

/// The tree every sample repository holds. Never change it: old samples must keep matching.
fn sample_tree(root: &Path) {
    write(&root.join("hello.txt"), b"hello, cairn\n");
    write(&root.join("data/noise.bin"), &noise(42, 300_000));
    write(&root.join("data/empty"), b"");
    write(
        &root.join("data/log.txt"),
        &b"a compressible line of text\n".repeat(2000),
    );
    std::fs::create_dir_all(root.join("nested/deeper/still")).unwrap();
    symlink("hello.txt", root.join("link")).unwrap();
    std::fs::set_permissions(
        root.join("hello.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    for p in ["hello.txt", "data/noise.bin", "data/log.txt", "data/empty"] {
        let f = std::fs::File::options()
            .write(true)
            .open(root.join(p))
            .unwrap();
        f.set_modified(UNIX_EPOCH + Duration::new(1_763_800_000, 5))
            .unwrap();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for file in files_below(from) {
        let dest = to.join(file.strip_prefix(from).unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&file, &dest).unwrap();
    }
}

fn run_with_sample_password(env: &Env, args: &[&str]) -> Vec<u8> {
    let out = env
        .cmd(args)
        .env("CAIRN_PASSWORD", SAMPLE_PASSWORD)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    out.stdout
}

fn check_sample(fixture: &str) {
    let env = Env::new();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join(fixture),
        &env.repo,
    );
    let run = |args: &[&str]| run_with_sample_password(&env, args);
    // Its config and key file predate the checksum and the repository id in key files: check
    // says what that means.
    let report: serde_json::Value = serde_json::from_slice(&run(&["--json", "check"])).unwrap();
    let warnings = report["warnings"].as_array().unwrap();
    let kinds: Vec<_> = warnings
        .iter()
        .map(|w| w["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["config_without_checksum", "keys_without_repository_id"]
    );
    assert_eq!(warnings[1]["keys"], 1);
    // `repair config` gives its config the checksum (the rest of the test reads it so).
    let config = env.repo.join("config");
    let old = std::fs::read(&config).unwrap();
    run(&["repair", "config"]);
    let new = std::fs::read(&config).unwrap();
    let body = old.len() - 16;
    assert_eq!(new.len(), old.len() + 34);
    assert_eq!(
        (&new[..body], &new[body..body + 2]),
        (&old[..body], &[0x7f, 0x20][..])
    );
    assert_eq!(&new[body + 34..], &old[body..]);
    run(&["repair", "config"]);
    assert_eq!(std::fs::read(&config).unwrap(), new, "written again");
    let report: serde_json::Value = serde_json::from_slice(&run(&["--json", "check"])).unwrap();
    assert_eq!(
        report["warnings"].as_array().unwrap().len(),
        1,
        "{report:#}"
    );
    let snaps: serde_json::Value = serde_json::from_slice(&run(&["snapshots", "--json"])).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    let source = snaps[0]["paths"][0].as_str().unwrap().to_string();
    let target = env.path("out");
    run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let expected_root = env.path("expected");
    sample_tree(&expected_root);
    let expected = describe(&expected_root);
    let got = describe(&restored(&target, Path::new(&source)));
    assert_eq!(expected.len(), got.len());
    for (path, e) in &expected {
        let g = &got[path];
        // Directory mtimes and owners depend on when and by whom the sample was made.
        assert_eq!(
            (g.kind, g.size, g.content_hash, &g.link),
            (e.kind, e.size, e.content_hash, &e.link),
            "{:?}",
            os(path)
        );
        if e.kind == "file" {
            assert_eq!((g.mode, g.mtime_ns), (e.mode, e.mtime_ns), "{:?}", os(path));
        }
    }
}

#[test]
fn format_v1_restores() {
    check_sample("tests/fixtures/repo-v1");
}

#[test]
#[ignore = "writes a new sample repository; see the module comment"]
fn write_sample() {
    let Some(dest) = std::env::var_os("CAIRN_WRITE_SAMPLE") else {
        return;
    };
    let env = Env::new();
    let src = env.path("sample");
    sample_tree(&src);
    let run = |args: &[&str]| run_with_sample_password(&env, args);
    run(&["init", "--kdf-memory", "8", "--kdf-iterations", "1"]);
    run(&["backup", src.to_str().unwrap()]);
    let dest = Path::new(env!("CARGO_MANIFEST_DIR")).join(dest);
    std::fs::create_dir_all(&dest).unwrap();
    for file in files_below(&env.repo) {
        let rel = file.strip_prefix(&env.repo).unwrap();
        if !rel.starts_with("tmp") {
            let to = dest.join(rel);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&file, &to).unwrap();
        }
    }
}
