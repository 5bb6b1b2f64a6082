//! End-to-end: back up generated trees with the real binary, restore them, compare content and
//! metadata; and check deduplication within and across runs.

mod common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use common::*;

/// Thousands of small files, large files, empty files and folders, symlinks, non-UTF-8 names,
/// 30 levels of nesting, and assorted modes and mtimes.
fn make_tree(root: &Path) {
    for d in 0..40 {
        for f in 0..60 {
            let len = (d * 131 + f * 977) % 20_000;
            write(
                &root.join(format!("small/d{d:02}/f{f:03}.txt")),
                &noise((d * 1000 + f) as u64, len),
            );
        }
    }
    let big = noise(1, 50 * 1024 * 1024 + 12_345);
    write(&root.join("big/random.bin"), &big);
    let text: Vec<u8> = (0..55 * 1024 * 1024 / 64)
        .flat_map(|i| {
            format!("line {i:>10} of a very compressible log file .............\n").into_bytes()
        })
        .collect();
    write(&root.join("big/log.txt"), &text);
    write(&root.join("empty/file"), b"");
    std::fs::create_dir_all(root.join("empty/folder")).unwrap();
    symlink("../small/d00/f000.txt", root.join("empty/rel-link")).unwrap();
    symlink("/etc/hostname", root.join("empty/abs-link")).unwrap();
    symlink("does/not/exist", root.join("empty/dangling")).unwrap();
    let weird = root.join("names");
    std::fs::create_dir_all(&weird).unwrap();
    write(&weird.join(os(b"latin1-\xe9t\xe9")), b"not utf-8 name");
    write(&weird.join(os(b"new\nline")), b"newline in name");
    write(&weird.join("sp ace"), b"space");
    let mut deep = root.join("deep");
    for level in 0..30 {
        deep = deep.join(format!("level{level}"));
    }
    write(&deep.join("bottom.txt"), b"thirty levels down");
    let modes = root.join("modes");
    for (name, mode) in [
        ("ro", 0o444),
        ("exec", 0o755),
        ("private", 0o600),
        ("setuid", 0o4755),
        ("sticky-dir", 0o1777),
    ] {
        let p = modes.join(name);
        if name.ends_with("dir") {
            std::fs::create_dir_all(&p).unwrap();
        } else {
            write(&p, name.as_bytes());
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    // Distinct, nanosecond-precise mtimes.
    let f = std::fs::File::options()
        .write(true)
        .open(root.join("names/sp ace"))
        .unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::new(1_234_567_890, 123_456_789))
        .unwrap();
}

#[test]
fn generated_tree_round_trips_with_metadata() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    env.init();
    let summary = env.backup_json(&[&src]);
    assert_eq!(summary["partial"], false);
    assert!(summary["summary"]["files"].as_u64().unwrap() > 2400);
    let target = env.path("restore");
    env.restore("latest", &target);
    let before = describe(&src);
    let after = describe(&restored(&target, &src));
    assert_eq!(before.len(), after.len());
    for (path, entry) in &before {
        let got = after
            .get(path)
            .unwrap_or_else(|| panic!("missing {:?}", os(path)));
        assert_eq!(got, entry, "differs: {:?}", os(path));
    }
    let space = std::fs::metadata(restored(&target, &src).join("names/sp ace")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (space.mtime(), space.mtime_nsec()),
        (1_234_567_890, 123_456_789)
    );
}

#[test]
fn second_backup_of_same_tree_adds_under_one_percent() {
    let env = Env::new();
    let src = env.path("src");
    for i in 0..500 {
        write(
            &src.join(format!("f{i}")),
            &noise(i, 10_000 + i as usize * 50),
        );
    }
    write(&src.join("large"), &noise(999, 20 * 1024 * 1024));
    env.init();
    env.backup_json(&[&src]);
    let first = env.repo_size();
    let second = env.backup_json(&[&src]);
    let grown = env.repo_size() - first;
    let tree_size: u64 = files_below(&src)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        grown * 100 < tree_size,
        "second backup added {grown} bytes for a {tree_size}-byte tree"
    );
    assert_eq!(second["summary"]["data_blobs_added"], 0);
    assert_eq!(env.snapshots().len(), 2);
}

#[test]
fn identical_large_files_are_stored_once() {
    let env = Env::new();
    let src = env.path("src");
    let big = noise(5, 60 * 1024 * 1024);
    write(&src.join("a.bin"), &big);
    write(&src.join("copy/b.bin"), &big);
    env.init();
    env.backup_json(&[&src]);
    let size = env.repo_size();
    assert!(
        size < big.len() as u64 + big.len() as u64 / 50,
        "repository is {size} bytes for one {}-byte file stored twice",
        big.len()
    );
    let target = env.path("out");
    env.restore("latest", &target);
    assert_eq!(
        std::fs::read(restored(&target, &src).join("copy/b.bin")).unwrap(),
        big
    );
}

#[test]
fn several_sources_keep_their_absolute_paths() {
    let env = Env::new();
    let a = env.path("one/a");
    let b = env.path("two/b");
    write(&a.join("x"), b"from a");
    write(&b.join("x"), b"from b");
    env.init();
    env.backup_json(&[&a, &b, &a.join("x")]);
    let snaps = env.snapshots();
    let paths: Vec<&str> = snaps[0]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(paths, vec![a.to_str().unwrap(), b.to_str().unwrap()]);
    let target = env.path("out");
    env.restore(snaps[0]["short_id"].as_str().unwrap(), &target);
    assert_eq!(
        std::fs::read(restored(&target, &a).join("x")).unwrap(),
        b"from a"
    );
    assert_eq!(
        std::fs::read(restored(&target, &b).join("x")).unwrap(),
        b"from b"
    );
    let listing = env.ok(&["ls", "latest", a.to_str().unwrap(), "-l"]);
    assert!(listing.contains(&format!("{}/x", a.display())), "{listing}");
    assert!(
        listing.lines().next().unwrap().starts_with("-rw"),
        "{listing}"
    );
    let file = env.ok(&["ls", "latest", a.join("x").to_str().unwrap()]);
    assert_eq!(file.trim(), a.join("x").to_str().unwrap());
    let out = env.run(&["ls", "latest", a.join("x/below-a-file").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is not in snapshot"),
        "{}",
        stderr(&out)
    );
    let all = env.ok(&["ls", "latest", "--recursive"]);
    assert!(
        all.lines()
            .any(|l| l.as_bytes() == format!("{}/x", b.display()).as_bytes()),
        "{all}"
    );
}

/// `copy` between two repositories (different keys): each copy restores exactly what its
/// original does, nothing is copied twice, a later copy reads only what changed, and a copy
/// killed between two snapshots leaves a repository that checks clean and finishes later.
#[test]
fn copies_restore_like_their_originals_and_read_only_what_changed() {
    let source = Env::new();
    let dest = Env::new();
    source.init();
    dest.init();
    let src = source.path("src");
    write(&src.join("big.bin"), &noise(7, 6 << 20));
    write(&src.join("dir/small.txt"), b"small");
    write(&src.join("dir/empty"), b"");
    symlink("dir/small.txt", src.join("link")).unwrap();
    source.backup_json(&[&src]);
    write(&src.join("dir/new.txt"), &noise(8, 300_000));
    source.backup_json(&[&src]);
    let copy = |extra: &[&str]| {
        let mut args = vec![
            "copy",
            "--json",
            "--from-repo",
            source.repo.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let mut cmd = dest.cmd(&args);
        cmd.env("CAIRN_FROM_PASSWORD", PASSWORD);
        cmd
    };
    let report = |cmd: &mut std::process::Command| -> serde_json::Value {
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };

    let first = report(&mut copy(&[]));
    assert_eq!(first["copied"].as_array().unwrap().len(), 2);
    assert!(first["bytes_read"].as_u64().unwrap() >= 6 << 20);
    let same_snapshots = || {
        let fields = |s: &serde_json::Value| {
            (
                s["time"].clone(),
                s["hostname"].clone(),
                s["paths"].clone(),
                s["summary"].clone(),
            )
        };
        let (a, b) = (source.snapshots(), dest.snapshots());
        assert_eq!(
            a.iter().map(fields).collect::<Vec<_>>(),
            b.iter().map(fields).collect::<Vec<_>>()
        );
        for (s, d) in a.iter().zip(&b) {
            let (from, to) = (source.path("from"), dest.path("to"));
            let _ = std::fs::remove_dir_all(&from);
            let _ = std::fs::remove_dir_all(&to);
            source.restore(s["id"].as_str().unwrap(), &from);
            dest.restore(d["id"].as_str().unwrap(), &to);
            assert_eq!(describe(&from), describe(&to), "snapshot {}", s["id"]);
        }
    };
    same_snapshots();

    let again = report(&mut copy(&[]));
    assert_eq!(again["copied"].as_array().unwrap().len(), 0);
    assert_eq!(again["already_there"], 2);

    // A small change: the next copy reads the changed file's data, not the 6 MiB beside it.
    write(&src.join("dir/small.txt"), b"changed");
    source.backup_json(&[&src]);
    let next = report(&mut copy(&["latest"]));
    assert_eq!(next["copied"].as_array().unwrap().len(), 1);
    assert!(next["bytes_read"].as_u64().unwrap() < 1 << 20, "{next}");
    same_snapshots();

    // Killed after the first of two snapshots: the repository checks clean, and the next
    // run copies the other one.
    for i in 0..2 {
        write(&src.join(format!("dir/night{i}")), &noise(20 + i, 100_000));
        source.backup_json(&[&src]);
    }
    let out = copy(&[])
        .env("CAIRN_FAILPOINT", "copy-snapshot-written")
        .output()
        .unwrap();
    assert_aborted_at(&out, "copy-snapshot-written");
    assert_eq!(dest.snapshots().len(), 4);
    dest.ok(&["check", "--read-data"]);
    let rest = report(&mut copy(&[]));
    assert_eq!(rest["copied"].as_array().unwrap().len(), 1);
    assert_eq!(rest["already_there"], 4);
    same_snapshots();

    let out = copy(&[])
        .env("CAIRN_FROM_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
}
