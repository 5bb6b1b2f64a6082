//! Browsing history: find a path across snapshots; diff two snapshots, or a snapshot and the
//! disk.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;

use common::*;

fn json(env: &Env, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&env.ok(args)).unwrap()
}

#[test]
fn find_shows_when_a_file_changed() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("docs/contract.pdf"), b"version one");
    write(&src.join("docs/other.txt"), b"x");
    write(&src.join("kept/same/a.pdf"), b"never changes");
    env.init();
    env.ok(&["backup", "--tag", "nightly", src.to_str().unwrap()]);
    write(&src.join("docs/contract.pdf"), b"version two, longer");
    env.ok(&["backup", src.to_str().unwrap()]);
    std::fs::remove_file(src.join("docs/contract.pdf")).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let found = json(&env, &["find", "contract.pdf", "--json"]);
    // One folder, the same tree at the same path in all three snapshots: found in each.
    for pattern in [
        "a.pdf",
        "same/*.pdf",
        &format!("{}/kept/*/a.pdf", src.display()),
    ] {
        let kept = json(&env, &["find", pattern, "--json"]);
        let paths: Vec<&str> = (kept.as_array().unwrap().iter())
            .map(|s| s["matches"][0]["path"].as_str().unwrap())
            .collect();
        let path = format!("{}/kept/same/a.pdf", src.display());
        assert_eq!(paths, [&path[..]; 3], "{pattern}: {kept}");
    }
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0]["matches"][0]["size"], 11);
    assert_eq!(found[1]["matches"][0]["size"], 19);
    let path = found[0]["matches"][0]["path"].as_str().unwrap();
    assert_eq!(path, format!("{}/docs/contract.pdf", src.display()));
    let tagged = json(&env, &["find", "*.pdf", "--tag", "nightly", "--json"]);
    assert_eq!(tagged.as_array().unwrap().len(), 1);
    let by_path = json(
        &env,
        &["find", &format!("{}/docs/*", src.display()), "--json"],
    );
    assert_eq!(
        by_path[2]["matches"].as_array().unwrap().len(),
        1,
        "{by_path}"
    );
    // Regression: a path pattern not starting at the root matched nothing.
    let relative = json(&env, &["find", "docs/*.pdf", "--json"]);
    assert_eq!(relative.as_array().unwrap().len(), 2, "{relative}");
    let human = env.ok(&["find", "contract.pdf"]);
    assert!(human.contains("contract.pdf"), "{human}");
}

#[test]
fn diff_between_snapshots() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("keep.txt"), b"same");
    write(&src.join("change.txt"), b"before");
    write(&src.join("gone/old.txt"), b"old");
    write(&src.join("mode.sh"), b"#!/bin/sh");
    env.init();
    env.ok(&["backup", src.to_str().unwrap()]);
    write(&src.join("change.txt"), b"after!!");
    std::fs::remove_dir_all(src.join("gone")).unwrap();
    write(&src.join("new/file.bin"), &noise(1, 1000));
    std::fs::set_permissions(src.join("mode.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Regression: extended attributes were left out of the comparison.
    let tagged = xattr::set(src.join("keep.txt"), "user.tag", b"x").is_ok();
    env.ok(&["backup", src.to_str().unwrap()]);
    let snaps = env.snapshots();
    let (a, b) = (
        snaps[0]["short_id"].as_str().unwrap(),
        snaps[1]["short_id"].as_str().unwrap(),
    );
    let d = json(&env, &["diff", a, b, "--json"]);
    let entries: Vec<(String, String)> = d["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["change"].as_str().unwrap().to_string(),
                e["path"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert!(
        entries.contains(&("modified".into(), "change.txt".into())),
        "{entries:?}"
    );
    assert!(
        entries.contains(&("removed".into(), "old.txt".into())),
        "{entries:?}"
    );
    assert!(
        entries.contains(&("added".into(), "file.bin".into())),
        "{entries:?}"
    );
    assert!(
        !entries
            .iter()
            .any(|(_, n)| n == "keep.txt" || n == "mode.sh"),
        "{entries:?}"
    );
    assert_eq!(d["bytes_added"], 1000);
    let with_meta = json(&env, &["diff", a, b, "--metadata", "--json"]);
    let metadata_changed = |name: &str| {
        with_meta["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["change"] == "metadata" && e["path"].as_str().unwrap().ends_with(name))
    };
    assert!(metadata_changed("mode.sh"), "{with_meta}");
    assert!(!tagged || metadata_changed("keep.txt"), "{with_meta}");
    // Limited to a folder.
    let sub = json(
        &env,
        &["diff", a, b, &format!("{}/new", src.display()), "--json"],
    );
    // The folder itself (added with its file), and nothing outside it.
    let paths: Vec<&str> = (sub["entries"].as_array().unwrap().iter())
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    let new = format!("{}/new", src.display());
    assert_eq!(paths, [new.clone(), format!("{new}/file.bin")], "{sub}");
}

#[test]
fn diff_with_the_disk() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a.txt"), b"aaa");
    write(&src.join("b.txt"), b"bbb");
    write(&src.join("touched.txt"), b"same content");
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    env.init();
    env.ok(&["backup", src.to_str().unwrap()]);
    write(&src.join("a.txt"), b"changed");
    // Regression: a symlink pointed elsewhere counted as unchanged.
    std::fs::remove_file(src.join("link")).unwrap();
    std::os::unix::fs::symlink("c.txt", src.join("link")).unwrap();
    write(&src.join("c.txt"), b"new");
    std::fs::remove_file(src.join("b.txt")).unwrap();
    // Same content, new mtime: not a content change.
    write(&src.join("touched.txt"), b"same content");
    let d = json(
        &env,
        &["diff", "latest", "--live", src.to_str().unwrap(), "--json"],
    );
    let summary = |k: &str| d[k].as_u64().unwrap();
    assert_eq!(
        (summary("added"), summary("removed"), summary("modified")),
        (1, 1, 2),
        "{d}"
    );
    let modified: Vec<&str> = d["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["change"] == "modified")
        .map(|e| e["path"].as_str().unwrap().rsplit('/').next().unwrap())
        .collect();
    assert_eq!(modified, ["a.txt", "link"], "{d}");
    let with_meta = json(
        &env,
        &[
            "diff",
            "latest",
            "--live",
            src.to_str().unwrap(),
            "--metadata",
            "--json",
        ],
    );
    assert!(
        with_meta["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["change"] == "metadata"
                && e["path"].as_str().unwrap().ends_with("touched.txt")),
        "{with_meta}"
    );
}

/// Regression: paths in a snapshot were taken as UTF-8 strings, so a file below a folder
/// named in Latin-1 could not be dumped, listed or restored by its path, and `diff --live`
/// on such a folder reported everything in it as added.
#[test]
fn paths_that_are_not_utf8_can_be_named() {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    let env = Env::new();
    let src = env.path("src");
    let dir = src.join(os(b"caf\xe9"));
    let file = dir.join("menu.txt");
    write(&file, b"soup");
    env.init();
    env.ok(&["backup", src.to_str().unwrap()]);
    let run = |args: &[&str], path: OsString| {
        let out = env
            .cmd(&args[..1])
            .arg("latest")
            .arg(path)
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        out.stdout
    };
    assert_eq!(run(&["dump"], file.clone().into_os_string()), b"soup");
    let listed = run(&["ls"], dir.clone().into_os_string());
    assert!(String::from_utf8_lossy(&listed).contains("menu.txt"));
    let target = env.path("out");
    let mut spec = b"latest:".to_vec();
    spec.extend_from_slice(file.as_os_str().as_encoded_bytes());
    let out = env
        .cmd(&["restore"])
        .arg(OsString::from_vec(spec))
        .args(["--target", target.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(target.join("menu.txt")).unwrap(), b"soup");
    let out = env
        .cmd(&["--json", "diff", "latest", "--live"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["entries"].as_array().unwrap().len(), 0, "{d}");

    // Regression: `--json` gave such names only lossily (\u{fffd} for the byte), so two
    // names differing in it looked alike; `*_hex` now gives the bytes exactly.
    std::os::unix::fs::symlink(os(b"to-caf\xe9"), src.join("link")).unwrap();
    let before = env.backup_json(&[&src])["snapshot_id"].clone();
    let listed = json(
        &env,
        &["--json", "ls", "-R", "latest", src.to_str().unwrap()],
    );
    let entry = |suffix: &str| {
        let all = listed.as_array().unwrap();
        let found = all
            .iter()
            .find(|e| e["path"].as_str().unwrap().ends_with(suffix));
        found
            .unwrap_or_else(|| panic!("{suffix} in {listed}"))
            .clone()
    };
    let folder = dir.as_os_str().as_encoded_bytes();
    assert_eq!(entry("caf\u{fffd}")["path_hex"], hex(folder));
    assert_eq!(
        entry("menu.txt")["path_hex"],
        hex(file.as_os_str().as_encoded_bytes())
    );
    assert_eq!(entry("link")["link_target_hex"], hex(b"to-caf\xe9"));
    assert!(
        entry("link").get("path_hex").is_none(),
        "UTF-8 paths need no hex"
    );
    let found = json(&env, &["--json", "find", "menu.txt"]);
    assert_eq!(
        found[0]["matches"][0]["path_hex"],
        hex(file.as_os_str().as_encoded_bytes())
    );
    std::fs::remove_file(&file).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let diff = json(
        &env,
        &["--json", "diff", before.as_str().unwrap(), "latest"],
    );
    let entries = diff["entries"].as_array().unwrap();
    let removed = entries.iter().find(|e| e["change"] == "removed").unwrap();
    assert_eq!(
        removed["path_hex"],
        hex(file.as_os_str().as_encoded_bytes()),
        "{diff}"
    );
}

/// Regression: `diff --live` took a folder it could not list for an empty one, and reported
/// everything the snapshot has in it as removed, with exit code 0.
#[test]
fn diff_with_the_disk_says_what_it_could_not_read() {
    if !running_as_root() {
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("open.txt"), b"open");
    write(&src.join("locked/secret.txt"), b"secret");
    env.init();
    env.ok(&["backup", src.to_str().unwrap()]);
    std::fs::set_permissions(src.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();
    env.give_to_nobody();
    let out = env.run_as_nobody(&["--json", "diff", "latest", "--live", src.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("locked"), "{}", stderr(&out));
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["removed"], 0, "{d}");
    assert_eq!(d["unreadable"].as_array().unwrap().len(), 1, "{d}");
}

/// Regression: `ls` printed names as they were, so a name holding a newline faked a line.
#[test]
fn ls_escapes_control_characters_in_names() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("evil\nfake"), b"x");
    env.init();
    env.ok(&["backup", src.to_str().unwrap()]);
    let listed = env.ok(&["ls", "latest", src.to_str().unwrap()]);
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(listed.contains("evil\\nfake"), "{listed}");
}

/// Regression: `diff --live` chunked a touched file in one pass, while backup stores a sparse
/// file by data regions: the ids never matched and the file showed as modified. It is now
/// read in pieces of its blobs' lengths, as restore decides what to keep.
#[test]
fn diff_with_the_disk_keeps_a_touched_sparse_file_unchanged() {
    use std::os::unix::fs::FileExt;
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let sparse = std::fs::File::create(src.join("sparse.img")).unwrap();
    sparse.set_len(20 << 20).unwrap();
    sparse.write_all_at(&noise(3, 64 << 10), 1 << 20).unwrap();
    drop(sparse);
    env.init();
    env.ok(&["backup", src.to_str().unwrap()]);
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    let file = std::fs::File::options()
        .write(true)
        .open(src.join("sparse.img"))
        .unwrap();
    file.set_modified(later).unwrap();
    let live = ["--json", "diff", "latest", "--live", src.to_str().unwrap()];
    let d = json(&env, &live);
    assert_eq!(d["modified"], 0, "{d}");
    file.write_all_at(b"x", 5 << 20).unwrap();
    let d = json(&env, &live);
    assert_eq!(d["modified"], 1, "{d}");
}

/// Regression: a file `diff --live` could not read was reported as modified, with exit 0.
#[test]
fn diff_with_the_disk_leaves_out_a_file_it_cannot_read() {
    if !running_as_root() {
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("secret.txt"), b"secret");
    env.init();
    env.ok(&["backup", src.to_str().unwrap()]);
    write(&src.join("secret.txt"), b"SECRET");
    std::fs::set_permissions(
        src.join("secret.txt"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    env.give_to_nobody();
    let out = env.run_as_nobody(&["--json", "diff", "latest", "--live", src.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["modified"], 0, "{d}");
    let unreadable = &d["unreadable"][0];
    assert!(
        unreadable["path"].as_str().unwrap().ends_with("secret.txt"),
        "{d}"
    );
    assert!(stderr(&out).contains("secret.txt"), "{}", stderr(&out));
}

/// Regression: a PATH in neither snapshot (a typo, or one given without its leading `/`)
/// gave an empty diff and exit 0; a PATH naming a file was refused as "not a folder".
#[test]
fn diff_of_a_path_takes_it_from_the_root_and_refuses_one_in_neither_snapshot() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("docs/a.txt"), b"one");
    write(&src.join("docs/b.txt"), b"two");
    env.init();
    env.ok(&["backup", src.to_str().unwrap()]);
    write(&src.join("docs/a.txt"), b"one, longer");
    env.ok(&["backup", src.to_str().unwrap()]);
    let snaps = env.snapshots();
    let (a, b) = (
        snaps[0]["short_id"].as_str().unwrap(),
        snaps[1]["short_id"].as_str().unwrap(),
    );
    let docs = src.join("docs");
    let relative = docs.to_str().unwrap().trim_start_matches('/');
    for path in [docs.to_str().unwrap(), relative] {
        let d = json(&env, &["--json", "diff", a, b, path]);
        assert_eq!(d["modified"], 1, "{path}: {d}");
    }
    let file = docs.join("a.txt");
    let d = json(&env, &["--json", "diff", a, b, file.to_str().unwrap()]);
    assert_eq!(d["modified"], 1, "{d}");
    assert_eq!(d["bytes_modified_before"], 3, "{d}");
    assert_eq!(d["bytes_modified_after"], 11, "{d}");
    let typo = src.join("dosc");
    let out = env.run(&["diff", a, b, typo.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("dosc"), "{}", stderr(&out));
    // The text lists sizes, the change of size for a modified file.
    let text = env.ok(&["diff", a, b]);
    let line = text.lines().find(|l| l.ends_with("a.txt")).unwrap();
    assert!(
        line.starts_with('M') && line.contains("3 B -> 11 B"),
        "{text}"
    );
}

/// Regression: names that are not UTF-8 were printed with U+FFFD for each bad byte, so two
/// names differing only there printed alike; such a byte is now written `\xNN`.
#[test]
fn ls_and_find_tell_names_apart_that_are_not_utf8() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join(os(b"a\xfe")), b"1");
    write(&src.join(os(b"a\xff")), b"2");
    env.init();
    env.ok(&["backup", src.to_str().unwrap()]);
    let listed = env.ok(&["ls", "latest", src.to_str().unwrap()]);
    assert!(
        listed.contains("a\\xfe") && listed.contains("a\\xff"),
        "{listed}"
    );
    let found = env.ok(&["find", "a?"]);
    assert!(
        found.contains("a\\xfe") && found.contains("a\\xff"),
        "{found}"
    );
}

/// Regression: `restore --dry-run --json` panicked on a path that is not UTF-8 (serde
/// refuses such a path); each is now given lossily with its bytes in `path_hex`.
#[test]
fn a_json_dry_run_lists_paths_that_are_not_utf8() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join(os(b"caf\xe9.txt")), b"1");
    env.init();
    env.ok(&["backup", src.to_str().unwrap()]);
    let target = env.path("out");
    let args = [
        "--json",
        "restore",
        "latest",
        "--dry-run",
        "--target",
        target.to_str().unwrap(),
    ];
    let d = json(&env, &args);
    let listed = d["stats"]["would_write"].as_array().unwrap();
    let files: Vec<_> = listed.iter().filter(|e| e["kind"] == "file").collect();
    assert_eq!(files.len(), 1, "{d}");
    assert_eq!(files[0]["size"], 1, "{d}");
    let hex = files[0]["path_hex"].as_str().unwrap();
    assert!(hex.ends_with("636166e92e747874"), "{d}");
    assert!(!target.exists(), "a dry run made the target");
}

/// Names from the disk or a snapshot reach the terminal escaped, and JSON gives their exact
/// bytes (regression: `snapshots`, `forget`, `tag` and error messages wrote a source path's
/// control characters to the terminal as they were, and the JSON gave the path lossily).
#[test]
fn source_paths_tags_and_errors_are_escaped_and_exact() {
    let env = Env::new();
    let src = env.path("src");
    let odd = src.join(os(b"caf\xe9\x1b[31m"));
    write(&odd.join("a"), b"a");
    env.init();
    let backup = env
        .cmd(&["backup", "--host", "h\x1b[32m"])
        .arg(&odd)
        .output();
    let out = backup.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let tagged = env.ok(&["tag", "latest", "--add", "red\x1b[31m"]);
    assert!(tagged.contains("red\\x1b[31m"), "{tagged}");
    let listed = env.ok(&["snapshots"]);
    let forgotten = env.ok(&["forget", "--keep-last", "1", "--dry-run"]);
    let found = env.ok(&["find", "a"]);
    for text in [&tagged, &listed, &forgotten, &found] {
        assert!(!text.contains('\x1b'), "{text}");
    }
    assert!(found.contains("(h\\x1b[32m)"), "{found}");
    assert!(listed.contains("caf\\xe9\\x1b[31m"), "{listed}");
    assert!(forgotten.contains("caf\\xe9\\x1b[31m"), "{forgotten}");
    let hex = hex(odd.as_os_str().as_bytes());
    let snapshots = json(&env, &["--json", "snapshots"]);
    assert_eq!(snapshots[0]["paths_hex"], serde_json::json!([hex]));
    let groups = json(&env, &["--json", "forget", "--keep-last", "1", "--dry-run"]);
    assert_eq!(groups[0]["group"]["paths_hex"], serde_json::json!([hex]));
    // An error naming a path from the disk: exactly (regression: as U+FFFD).
    let missing = odd.join("gone\x1b[2J");
    let out = env.cmd(&["backup"]).arg(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(15), "{}", stderr(&out));
    let err = stderr(&out);
    // A name a message quotes (`{:?}` escapes it already) is not escaped twice.
    let out = env.run(&["ls", "latest", "/no\\such"]);
    let quoted = stderr(&out);
    assert!(quoted.contains("\"/no\\\\such\""), "{quoted}");
    assert!(
        err.contains("caf\\xe9\\x1b[31m/gone\\x1b[2J") && !err.contains('\x1b'),
        "{err}"
    );
}
