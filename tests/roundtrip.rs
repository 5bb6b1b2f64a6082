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
        ("setgid", 0o2755),
        ("sticky", 0o1644),
        ("sticky-dir", 0o1777),
        ("setgid-dir", 0o2775),
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
/// original does, nothing is copied twice, a later copy reads only what changed, a copy killed
/// before or after a snapshot's commit leaves a repository that checks clean and finishes
/// later, and data the destination lost is stored again.
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
    source.ok(&[
        "backup",
        "--tag",
        "second",
        "--host",
        "elsewhere",
        src.to_str().unwrap(),
    ]);
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
    let report = |extra: &[&str]| -> serde_json::Value {
        let out = copy(extra).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let count = |report: &serde_json::Value| report["copied"].as_array().unwrap().len();
    // Snapshot fields that a copy keeps, and the restored trees of the last `n` snapshots.
    let same_snapshots = |n: usize| {
        let fields = |s: &serde_json::Value| {
            ["time", "hostname", "username", "paths", "tags", "summary"].map(|f| s[f].clone())
        };
        let (a, b) = (source.snapshots(), dest.snapshots());
        assert_eq!(
            a.iter().map(fields).collect::<Vec<_>>(),
            b.iter().map(fields).collect::<Vec<_>>()
        );
        for (s, d) in a.iter().zip(&b).rev().take(n) {
            let (from, to) = (source.path("from"), dest.path("to"));
            let _ = std::fs::remove_dir_all(&from);
            let _ = std::fs::remove_dir_all(&to);
            source.restore(s["id"].as_str().unwrap(), &from);
            dest.restore(d["id"].as_str().unwrap(), &to);
            assert_eq!(describe(&from), describe(&to), "snapshot {}", s["id"]);
        }
    };

    let planned = report(&["--dry-run"]);
    assert_eq!(count(&planned), 2);
    assert!(planned["copied"][0]["copy"].is_null());
    assert!(dest.snapshots().is_empty());

    let first = report(&[]);
    assert_eq!(count(&first), 2);
    assert!(first["bytes_read"].as_u64().unwrap() >= 6 << 20);
    same_snapshots(2);
    let again = report(&[]);
    assert_eq!(
        (count(&again), again["already_there"].as_u64()),
        (0, Some(2))
    );

    // A small change: the next copy reads the changed file's data, not the 6 MiB beside it,
    // and a snapshot chosen twice is copied once.
    write(&src.join("dir/small.txt"), b"changed");
    source.backup_json(&[&src]);
    let latest = source.snapshots().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let next = report(&["latest", &latest]);
    assert_eq!(count(&next), 1);
    assert!(next["bytes_read"].as_u64().unwrap() < 1 << 20, "{next}");
    same_snapshots(1);

    // Killed before a snapshot's commit, then after the first of two: the repository checks
    // clean each time, and the next run copies the rest.
    for i in 0..2 {
        write(&src.join(format!("dir/night{i}")), &noise(20 + i, 100_000));
        source.backup_json(&[&src]);
    }
    for (stop, copies) in [("copy-packs-written", 3), ("copy-snapshot-written", 4)] {
        let out = copy(&[]).env("CAIRN_FAILPOINT", stop).output().unwrap();
        assert_aborted_at(&out, stop);
        assert_eq!(dest.snapshots().len(), copies);
        dest.ok(&["check", "--read-data"]);
    }
    let rest = report(&[]);
    assert_eq!((count(&rest), rest["already_there"].as_u64()), (1, Some(4)));
    same_snapshots(5);

    // A pack the destination lost: the next copy reads and stores its data again.
    std::fs::remove_file(flip_in_largest_pack(&dest.repo, 0)).unwrap();
    write(&src.join("dir/small.txt"), b"changed again");
    source.backup_json(&[&src]);
    let healed = report(&[]);
    assert_eq!(count(&healed), 1);
    assert!(
        healed["bytes_read"].as_u64().unwrap() >= 6 << 20,
        "{healed}"
    );
    same_snapshots(1);

    let out = copy(&[])
        .env("CAIRN_FROM_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    let out = copy(&[])
        .env_remove("CAIRN_FROM_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let mut same = dest.cmd(&["copy", "--from-repo", dest.repo.to_str().unwrap()]);
    let out = same.env("CAIRN_FROM_PASSWORD", PASSWORD).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// A source snapshot whose data is damaged is skipped and named (exit 3); the others are
/// copied.
/// Regression (helper-45): two repositories copying to each other echoed every snapshot: a
/// copy in B of A's snapshot was copied back into A as a new snapshot, and so on each night,
/// so retention kept fewer distinct backups than asked.
#[test]
fn snapshots_copied_back_to_where_they_came_from_are_already_there() {
    let (a, b) = (Env::new(), Env::new());
    a.init();
    b.init();
    let src = a.path("src");
    write(&src.join("f"), b"data");
    a.backup_json(&[&src]);
    let copy = |to: &Env, from: &Env| {
        let args = ["copy", "--json", "--from-repo", from.repo.to_str().unwrap()];
        let out = to
            .cmd(&args)
            .env("CAIRN_FROM_PASSWORD", PASSWORD)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["copied"].as_array().unwrap().len()
    };
    assert_eq!(copy(&b, &a), 1);
    for _ in 0..2 {
        assert_eq!(copy(&a, &b), 0, "copied back where it came from");
        assert_eq!(copy(&b, &a), 0);
    }
    assert_eq!((a.snapshots().len(), b.snapshots().len()), (1, 1));
}

/// Regression (helper-45): the copy held a lock on the source but never checked it, so a
/// source whose lock was removed and then pruned meanwhile was reported as damaged (exit 3,
/// "not copied: ... not found") though nothing in it was.
#[test]
fn a_source_pruned_after_the_copy_lost_its_lock_there_is_not_damage() {
    let (a, b) = (Env::new(), Env::new());
    a.init();
    b.init();
    let src = a.path("src");
    write(&src.join("f"), &noise(3, 200_000));
    a.backup_json(&[&src]);
    let prune = format!(
        "copy-snapshot:rm -f {0}/locks/* && rm -rf {0}/packs",
        a.repo.display()
    );
    let args = ["copy", "--from-repo", a.repo.to_str().unwrap()];
    let mut cmd = b.cmd(&args);
    let out = cmd
        .env("CAIRN_FROM_PASSWORD", PASSWORD)
        .env("CAIRN_HOOK", &prune);
    let out = out.output().unwrap();
    assert_ne!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("lock"), "{}", stderr(&out));
    assert!(b.snapshots().is_empty());
}

/// Regression (helper-45): a wrong password for the source of a copy was blamed on where
/// the destination's (right) password came from.
#[test]
fn a_wrong_source_password_is_said_to_be_the_sources() {
    let (a, b) = (Env::new(), Env::new());
    a.init();
    b.init();
    let args = ["copy", "--from-repo", a.repo.to_str().unwrap()];
    let out = b
        .cmd(&args)
        .env("CAIRN_FROM_PASSWORD", "not it")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("CAIRN_FROM_PASSWORD (the source repository's password)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn copy_skips_a_damaged_source_snapshot_and_copies_the_rest() {
    let source = Env::new();
    let dest = Env::new();
    source.init();
    dest.init();
    let (a, b) = (source.path("a"), source.path("b"));
    write(&a.join("small.bin"), &noise(1, 3 << 20));
    write(&b.join("large.bin"), &noise(2, 5 << 20));
    source.backup_json(&[&a]);
    source.backup_json(&[&b]);
    flip_in_largest_pack(&source.repo, 100);
    let mut cmd = dest.cmd(&[
        "copy",
        "--json",
        "--from-repo",
        source.repo.to_str().unwrap(),
    ]);
    let out = cmd.env("CAIRN_FROM_PASSWORD", PASSWORD).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let damaged = source.snapshots()[1]["id"].clone();
    assert_eq!(report["failed"][0]["source"], damaged);
    assert!(stderr(&out).contains("was not copied"), "{}", stderr(&out));
    assert_eq!(dest.snapshots().len(), 1);
    let target = dest.path("t");
    dest.restore("latest", &target);
    assert_eq!(describe(&a), describe(&restored(&target, &a)));
}
