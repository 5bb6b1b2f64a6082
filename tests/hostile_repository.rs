//! A restore never writes outside its target, whatever the repository says. These snapshots
//! are crafted through the library with names no honest backup produces.

mod common;

use cairn::ids::{BlobType, SnapshotId};
use cairn::index::LocalIndex;
use cairn::packer::Packer;
use cairn::repo::{FileKind, KdfParams, Repository};
use cairn::snapshot::{Snapshot, Summary};
use cairn::storage::OpendalStorage;
use cairn::tree::{Node, NodeKind, Tree};
use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const FAST: KdfParams = KdfParams {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

/// Stores a snapshot whose root tree holds `nodes`, sorted by name as readers require (a tree
/// out of order is refused whole), with their names unchecked and repeats kept in order.
fn craft(env: &Env, build: impl FnOnce(&mut Packer) -> Vec<Node>) -> SnapshotId {
    craft_snapshot(env, true, build)
}

/// `craft`, for a snapshot that marks its sparse files or (as before cairn did) not.
fn craft_snapshot(
    env: &Env,
    marks_sparse: bool,
    build: impl FnOnce(&mut Packer) -> Vec<Node>,
) -> SnapshotId {
    let storage = OpendalStorage::local(env.repo.to_str().unwrap()).unwrap();
    let repo = Repository::init(Box::new(storage), PASSWORD.as_bytes(), FAST).unwrap();
    let (mut index, _) = LocalIndex::open(&env.cache, &repo).unwrap();
    let mut packer = Packer::new(&repo, &mut index, 3).unwrap();
    let nodes = build(&mut packer);
    let root = packer
        .add(BlobType::Tree, &Tree { nodes }.encode())
        .unwrap();
    packer.finish().unwrap();
    let snap = Snapshot {
        marks_sparse,
        time_ns: 1,
        utc_offset_s: 0,
        hostname: "evil".into(),
        username: "evil".into(),
        paths: vec![b"/".to_vec()],
        tags: vec![],
        tree: root,
        summary: Summary::default(),
        chunker: cairn::chunk::ChunkerParams::FILES,
        partial: false,
        program_version: "evil".into(),
        original: None,
        repair_note: None,
        supersedes: None,
        started_ns: None,
        copied_from: None,
    };
    SnapshotId(repo.save_file(FileKind::Snapshot, &snap.encode()).unwrap())
}

fn file_node(packer: &mut Packer, name: &[u8], content: &[u8]) -> Node {
    let mut n = Node::new(name.to_vec(), NodeKind::File);
    n.mode = 0o644;
    n.size = content.len() as u64;
    n.content = vec![packer.add(BlobType::Data, content).unwrap()];
    n
}

fn dir_node(packer: &mut Packer, name: &[u8], children: Vec<Node>) -> Node {
    let mut n = Node::new(name.to_vec(), NodeKind::Dir);
    n.mode = 0o755;
    n.subtree = Some(
        packer
            .add(BlobType::Tree, &Tree { nodes: children }.encode())
            .unwrap(),
    );
    n
}

#[test]
fn traversal_names_are_refused_and_named() {
    let env = Env::new();
    craft(&env, |p| {
        let escape = file_node(p, b"escape", b"pwned");
        vec![
            file_node(p, b"..", b"pwned"),
            file_node(p, b"../escape", b"pwned"),
            file_node(p, b"/tmp/cairn-absolute-escape", b"pwned"),
            dir_node(p, b"..", vec![escape]),
            file_node(p, b"fine", b"ok"),
        ]
    });
    let target = env.path("area/target");
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("\"..\""), "{err}");
    assert!(err.contains("../escape"), "{err}");
    assert!(err.contains("/tmp/cairn-absolute-escape"), "{err}");
    assert_eq!(std::fs::read(target.join("fine")).unwrap(), b"ok");
    // Nothing appeared beside the target or at the absolute path.
    assert_eq!(names_in(&env.path("area")), ["target"]);
    assert!(!std::path::Path::new("/tmp/cairn-absolute-escape").exists());
}

/// With `--json`, each failure is in the output too, its path exact where it is not UTF-8
/// (regression: failures went to stderr only, as text), in a dry run as in a real one.
#[test]
fn failures_are_listed_in_the_json_output() {
    let env = Env::new();
    craft(&env, |p| {
        let escape = file_node(p, b"..", b"pwned");
        vec![
            dir_node(p, b"d\xff", vec![escape]),
            file_node(p, b"fine", b"ok"),
        ]
    });
    let target = env.path("target");
    for dry_run in [true, false] {
        let mut args = vec![
            "--json",
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
        ];
        args.extend(dry_run.then_some("--dry-run"));
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["dry_run"], dry_run);
        assert_eq!(json["stats"]["errors"], 1);
        let failures = json["failures"].as_array().unwrap();
        assert_eq!(failures.len(), 1, "{json}");
        let folder = [target.as_os_str().as_encoded_bytes(), b"/d\xff"].concat();
        assert_eq!(failures[0]["path_hex"], hex(&folder).as_str(), "{json}");
        assert!(
            failures[0]["reason"].as_str().unwrap().contains("\"..\""),
            "{json}"
        );
    }
    assert_eq!(std::fs::read(target.join("fine")).unwrap(), b"ok");
}

#[test]
fn symlink_followed_by_a_folder_of_the_same_name_is_not_written_through() {
    let env = Env::new();
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let outside_str = outside.to_str().unwrap().as_bytes().to_vec();
    craft(&env, move |p| {
        let mut link = Node::new(b"link".to_vec(), NodeKind::Symlink);
        link.link_target = Some(outside_str);
        let pwned = file_node(p, b"pwned", b"pwned");
        vec![link, dir_node(p, b"link", vec![pwned])]
    });
    let target = env.path("target");
    refused_without_writing_through(
        &env,
        &target,
        &outside,
        "the snapshot lists \"link\" twice in this folder",
    );
}

/// The names in a folder.
fn names_in(dir: &Path) -> Vec<String> {
    let entries = std::fs::read_dir(dir).unwrap().flatten();
    entries
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Restores the latest snapshot into `target`: partial (exit 3), with `why` on stderr, and
/// nothing written into `outside`.
fn refused_without_writing_through(env: &Env, target: &Path, outside: &Path, why: &str) {
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains(why), "{}", stderr(&out));
    assert!(
        std::fs::read_dir(outside).unwrap().next().is_none(),
        "wrote through the symlink"
    );
}

/// A symlink already in the target where the snapshot has a folder is not written through.
#[test]
fn a_symlink_in_the_target_where_a_folder_goes_is_not_written_through() {
    let env = Env::new();
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    craft(&env, |p| {
        let pwned = file_node(p, b"pwned", b"pwned");
        vec![dir_node(p, b"link", vec![pwned])]
    });
    let target = env.path("target");
    std::fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("link")).unwrap();
    refused_without_writing_through(&env, &target, &outside, "refusing to write through it");
}

/// Regression: entries were made hard links of each other by (device, inode) alone, so two
/// files that only shared an inode number (reused while a long backup ran, or unstable on a
/// network file system) were restored with the first one's content.
#[test]
fn files_sharing_an_inode_number_but_not_content_are_not_linked() {
    let env = Env::new();
    craft(&env, |p| {
        let mut nodes = Vec::new();
        for (name, content) in [
            (&b"a"[..], &b"first"[..]),
            (b"b", b"other"),
            (b"c", b"first"),
            (b"d", b"other"),
        ] {
            let mut n = file_node(p, name, content);
            n.nlink = 2;
            n.device = 7;
            n.inode = 42;
            nodes.push(n);
        }
        nodes
    });
    let target = env.path("target");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(std::fs::read(target.join("a")).unwrap(), b"first");
    assert_eq!(std::fs::read(target.join("b")).unwrap(), b"other");
    let ino = |n: &str| std::fs::metadata(target.join(n)).unwrap().ino();
    assert_ne!(ino("a"), ino("b"));
    assert_eq!(ino("a"), ino("c"), "true links are still links");
    assert_eq!(ino("b"), ino("d"), "so are those of the other content");
}

/// Regression: a file whose blobs held more or fewer bytes than its entry said was restored
/// as its blobs were (or cut off by a hole set to the recorded size), and `dump` put the
/// extra bytes in the tar stream after the header's size, where they read as more entries.
#[test]
fn a_file_whose_blobs_do_not_hold_its_size_is_refused() {
    let env = Env::new();
    craft(&env, |p| {
        let mut long = file_node(p, b"long", b"pwned");
        long.size = 0;
        let mut short = file_node(p, b"short", b"pwned");
        short.size = 100;
        // Not UTF-8: check names it exactly (`name_hex`).
        let mut odd = file_node(p, b"odd\xff", b"pwned");
        odd.size = 7;
        vec![file_node(p, b"fine", b"ok"), long, odd, short]
    });
    let target = env.path("target");
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("its entry says 0 bytes but its blobs hold 5"),
        "{err}"
    );
    assert!(
        err.contains("its entry says 100 bytes but its blobs hold 5"),
        "{err}"
    );
    assert_eq!(std::fs::read(target.join("fine")).unwrap(), b"ok");
    assert!(!target.join("long").exists() && !target.join("short").exists());
    for (path, why) in [
        (
            "/long",
            "its entry says 0 bytes but its blobs hold more than 0",
        ),
        ("/short", "its entry says 100 bytes but its blobs hold 5"),
        ("/", "its entry says 0 bytes but its blobs hold more than 0"),
    ] {
        let out = env.run(&["dump", "latest", path]);
        assert!(!out.status.success(), "dump {path} succeeded");
        assert!(stderr(&out).contains(why), "dump {path}: {}", stderr(&out));
    }
    // Regression (helper-44): check found nothing wrong with either.
    let out = env.run(&["--json", "check"]);
    assert_eq!(out.status.code(), Some(17), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let wrong: Vec<(&str, u64, u64)> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "file_size_wrong")
        .map(|p| {
            let (size, held) = (p["size"].as_u64(), p["blobs_hold"].as_u64());
            (p["name"].as_str().unwrap(), size.unwrap(), held.unwrap())
        })
        .collect();
    assert_eq!(
        wrong,
        [("long", 0, 5), ("odd\u{fffd}", 7, 5), ("short", 100, 5)],
        "{report}"
    );
    let odd = report["problems"].as_array().unwrap().iter();
    let odd: Vec<_> = odd.filter(|p| p["name_hex"] == "6f6464ff").collect();
    assert_eq!(odd.len(), 1, "{report}");
}

/// Regression: `dump` archived a name listed twice in a folder, so that an extractor could
/// write the second entry through the first (a symlink, then a folder of the same name). Only
/// the first is archived now, and the dump is partial.
#[test]
fn dump_archives_a_name_listed_twice_only_once() {
    let env = Env::new();
    craft(&env, |p| {
        let mut link = Node::new(b"link".to_vec(), NodeKind::Symlink);
        link.link_target = Some(b"/etc".to_vec());
        let passwd = file_node(p, b"passwd", b"pwned");
        vec![link, dir_node(p, b"link", vec![passwd])]
    });
    let out = env.run(&["dump", "latest", "/"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("lists \"link\" twice in folder"),
        "{}",
        stderr(&out)
    );
    let mut archive = tar::Archive::new(&out.stdout[..]);
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["link"]);
}

/// Regression: restoring one entry by its path did not check its name, so `latest:/..` with
/// a file named `..` in the snapshot was written at `TARGET/..` (the folder above it).
#[test]
fn a_start_entry_named_dot_dot_is_refused() {
    let env = Env::new();
    craft(&env, |p| vec![file_node(p, b"..", b"pwned")]);
    let target = env.path("area/target");
    let out = env.run(&[
        "restore",
        "latest:/..",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("\"..\""), "{}", stderr(&out));
    assert_eq!(names_in(&env.path("area")), ["target"]);
}

/// Regression: a tree nested without end (cheap to craft, a tiny tree per level) overflowed
/// the stack of `dump` (and of restore) and aborted it; deeper than `MAX_DEPTH` is refused.
#[test]
fn a_tree_nested_too_deep_is_refused_not_a_crash() {
    let env = Env::new();
    craft(&env, |p| {
        let mut node = file_node(p, b"leaf", b"leaf");
        for _ in 0..=cairn::walk::MAX_DEPTH {
            node = dir_node(p, b"d", vec![node]);
        }
        vec![node]
    });
    // Regression: `ls -R` and `find` followed it to the end too.
    for args in [
        &["dump", "latest", "/"][..],
        &["ls", "-R", "latest"],
        &["find", "leaf"],
    ] {
        let out = env.run(args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            stderr(&out).contains(&too_deep()),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

/// A snapshot from before sparse files were marked (no `marks_sparse`) restores every all-zero
/// blob as a hole, as those versions did; one that marks them writes the zeros of a file not
/// marked sparse.
#[test]
fn zeros_are_holes_only_where_the_snapshot_says_so() {
    for marks_sparse in [false, true] {
        let env = Env::new();
        craft_snapshot(&env, marks_sparse, |p| {
            let mut zeros = file_node(p, b"zeros", &vec![0u8; 2 << 20]);
            zeros.nlink = 1;
            vec![zeros]
        });
        let out = env.path("out");
        env.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
        let meta = std::fs::metadata(out.join("zeros")).unwrap();
        assert_eq!(meta.len(), 2 << 20);
        let allocated = std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
        assert_eq!(
            allocated >= 2 << 20,
            marks_sparse,
            "{allocated} bytes allocated"
        );
    }
}
