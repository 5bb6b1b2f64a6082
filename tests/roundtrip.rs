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
