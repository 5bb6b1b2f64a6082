//! Nightly backups: unchanged files are not read again, dump streams round-trip and
//! deduplicate, excludes and dry runs do what they say.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::*;

fn summary(json: &serde_json::Value, field: &str) -> u64 {
    json["summary"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {json}"))
}

#[test]
fn unchanged_files_are_not_read_again() {
    let env = Env::new();
    let src = env.path("src");
    for i in 0..200 {
        write(
            &src.join(format!("d{}/f{i}", i % 7)),
            &noise(i, 5000 + i as usize),
        );
    }
    settle();
    env.init();
    let first = env.backup_json(&[&src]);
    assert_eq!(summary(&first, "files_new"), 200);
    let second = env.backup_json(&[&src]);
    assert_eq!(second["parent"], first["snapshot_id"]);
    assert_eq!(summary(&second, "files_unchanged"), 200);
    assert_eq!(summary(&second, "bytes_read"), 0);
    // Only the trees of the folders above the source (/, tmp, the scratch folder) may change.
    assert!(
        summary(&second, "tree_blobs_added") <= 3,
        "unchanged folders must keep their trees: {second}"
    );
    // Regression: the ratio was bytes read per byte added, 0.0 for every unchanged backup.
    assert!(
        second["dedup_ratio"].as_f64().is_none_or(|r| r > 100.0),
        "an unchanged backup deduplicates everything: {second}"
    );
    write(&src.join("d3/f3"), b"edited");
    write(&src.join("d3/brand-new"), b"new");
    let third = env.backup_json(&[&src]);
    assert_eq!(summary(&third, "files_changed"), 1);
    assert_eq!(summary(&third, "files_new"), 1);
    assert_eq!(summary(&third, "files_unchanged"), 199);
    assert_eq!(summary(&third, "bytes_read"), 9);
    let forced = serde_json::from_str::<serde_json::Value>(&env.ok(&[
        "backup",
        "--json",
        "--force",
        src.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(summary(&forced, "files_unchanged"), 0);
    assert!(summary(&forced, "bytes_read") > 1_000_000);
    assert_eq!(summary(&forced, "data_blobs_added"), 0);
    let target = env.path("out");
    env.restore("latest", &target);
    assert_eq!(describe(&src), describe(&restored(&target, &src)));
}

/// Regression: a file changed just before or during its parent backup was trusted by size and
/// timestamps, which a change in the same timestamp tick after it was read leaves as they
/// were. Such a file is now read again.
#[test]
fn files_changed_around_the_parent_backup_are_read_again() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a/first"), b"first");
    write(&src.join("b/second"), b"second");
    settle();
    env.init();
    // One thread walks `a` before `b`: `b/second` changes after the backup started, then
    // is listed and read as changed.
    env.backup_hooked(
        &["--threads", "1", src.to_str().unwrap()],
        r#"file-listed:case "$1" in */a/first) printf SECOND > "${1%/a/first}/b/second";; esac"#,
    );
    let second = env.backup_json(&[&src]);
    assert_eq!(summary(&second, "files_unchanged"), 1, "{second}");
    assert_eq!(summary(&second, "files_changed"), 1, "{second}");
    let target = env.path("out");
    env.restore("latest", &target);
    let back = restored(&target, &src);
    assert_eq!(std::fs::read(back.join("b/second")).unwrap(), b"SECOND");
}

/// A parent whose blobs are gone from the index must not be trusted: the backup reads the
/// files again and stores the data anew (self-healing).
#[test]
fn lost_pack_is_healed_by_the_next_backup() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a"), &noise(1, 300_000));
    write(&src.join("b"), &noise(2, 300_000));
    env.init();
    env.backup_json(&[&src]);
    for f in files_below(&env.repo.join("packs"))
        .into_iter()
        .chain(files_below(&env.repo.join("index")))
    {
        std::fs::remove_file(f).unwrap();
    }
    let healed = env.backup_json(&[&src]);
    assert_eq!(summary(&healed, "files_unchanged"), 0, "{healed}");
    assert_eq!(summary(&healed, "data_blobs_added"), 2, "{healed}");
    let target = env.path("out");
    env.restore("latest", &target);
    assert_eq!(describe(&src), describe(&restored(&target, &src)));
}

/// A backup whose parent the local index vouches for skips looking up each reused blob; once
/// `check --read-data` found one of them damaged, that vouching must be gone, so the next
/// backup stores the blob again.
#[test]
fn a_damaged_blob_is_stored_again_even_below_a_parent_known_complete() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a"), &noise(3, 300_000));
    write(&src.join("b"), &noise(4, 300_000));
    settle();
    env.init();
    env.backup_json(&[&src]);
    let unchanged = env.backup_json(&[&src]);
    assert_eq!(summary(&unchanged, "files_unchanged"), 2, "{unchanged}");
    flip_in_largest_pack(&env.repo, 100);
    let check = env.run(&["check", "--read-data"]);
    assert_eq!(check.status.code(), Some(17), "{}", stderr(&check));
    let healed = env.backup_json(&[&src]);
    assert_eq!(summary(&healed, "data_blobs_added"), 1, "{healed}");
    let target = env.path("out");
    env.restore("latest", &target);
    assert_eq!(describe(&src), describe(&restored(&target, &src)));
}

fn backup_stdin(env: &Env, data: &[u8], extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["backup", "--json", "--stdin", "--stdin-name", "db.sql"];
    args.extend_from_slice(extra);
    let mut child = env
        .cmd(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Regression (helper-43): a stream that gave no data (`pg_dump` failing before the pipe,
/// or standard input closed) was committed as a complete snapshot with exit 0. It is stored
/// as the empty file it is, with a warning, and the exit code says partial.
#[test]
fn an_empty_stream_is_stored_but_not_as_if_nothing_were_wrong() {
    let env = Env::new();
    env.init();
    let stdin = ["backup", "--json", "--stdin", "--stdin-name", "db.sql"];
    let command = ["backup", "--json", "--stdin-from-command", "--", "true"];
    for args in [&stdin[..], &command[..]] {
        let out = env.cmd(args).stdin(Stdio::null()).output().unwrap();
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            v["warnings"][0]["message"]
                .as_str()
                .unwrap()
                .contains("no data"),
            "{v}"
        );
        assert_eq!(v["partial"], true, "{v}");
    }
    assert_eq!(env.snapshots().len(), 2);
}

/// A text dump of `rows` rows; `edit` changes some rows the way a database does overnight.
fn sql_dump(rows: u64, edit: impl Fn(u64) -> bool) -> Vec<u8> {
    let mut out = b"COPY public.assets (id, owner, path, size) FROM stdin;\n".to_vec();
    for i in 0..rows {
        let owner = if edit(i) { 99_999 } else { i * 7 % 5000 };
        out.extend_from_slice(
            format!(
                "{i}\t{owner}\t/srv/uploads/{}/{:x}.pdf\t{}\n",
                i % 5000,
                i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                i * 31 % 50_000_000
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(b"\\.\n");
    out
}

#[test]
fn dump_streams_round_trip_and_store_only_what_changed() {
    let env = Env::new();
    env.init();
    let night1 = sql_dump(300_000, |_| false);
    let first = backup_stdin(&env, &night1, &[]);
    // Night 2: scattered edits to 30 rows, and 1% more rows at the end.
    let night2 = sql_dump(303_000, |i| i % 9973 == 13);
    let second = backup_stdin(&env, &night2, &[]);
    let added1 = summary(&first, "bytes_added_raw");
    let added2 = summary(&second, "bytes_added_raw");
    assert!(
        added2 * 5 < added1,
        "night 2 added {added2} bytes, night 1 {added1}"
    );
    // Regression: a stream was not counted, so its summary said 0 files of 0 bytes.
    assert_eq!(summary(&first, "files_new"), 1, "{first}");
    assert_eq!(summary(&second, "files_changed"), 1, "{second}");
    assert_eq!(summary(&second, "total_file_bytes"), night2.len() as u64);
    let again = backup_stdin(&env, &night2, &[]);
    assert_eq!(summary(&again, "files_unchanged"), 1, "{again}");
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 3);
    assert_eq!(snaps[1]["paths"][0], "/db.sql");
    assert_eq!(snaps[1]["chunker"]["avg"], 16384);
    for (snap, expected) in [(&snaps[0], &night1), (&snaps[1], &night2)] {
        let out = env
            .cmd(&["dump", snap["short_id"].as_str().unwrap(), "db.sql"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            out.stdout == *expected,
            "dump differs from what was backed up"
        );
    }
}

#[test]
fn failing_command_saves_no_snapshot() {
    let env = Env::new();
    env.init();
    let ok = env.run(&[
        "backup",
        "--stdin-from-command",
        "--stdin-name",
        "x.sql",
        "--",
        "sh",
        "-c",
        "echo hello; echo progress >&2",
    ]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let dumped = env.ok(&["dump", "latest", "/x.sql"]);
    assert_eq!(dumped, "hello\n");
    let out = env.run(&[
        "backup",
        "--stdin-from-command",
        "--",
        "sh",
        "-c",
        "echo partial; echo 'pg_dump: connection refused' >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("exit status: 3"), "{err}");
    assert!(err.contains("connection refused"), "{err}");
    assert!(err.contains("no snapshot was saved"), "{err}");
    assert_eq!(env.snapshots().len(), 1);
    let killed = env.run(&[
        "backup",
        "--stdin-from-command",
        "--",
        "sh",
        "-c",
        "kill -9 $$",
    ]);
    assert_eq!(killed.status.code(), Some(1), "{}", stderr(&killed));
    assert_eq!(env.snapshots().len(), 1);
}

/// Regression: a process the command left behind holding its standard error open (a dump
/// script that starts something in the background) made the backup wait for it to end.
#[test]
fn a_process_left_holding_the_commands_stderr_is_not_waited_for() {
    let env = Env::new();
    env.init();
    let script = "echo hello; w=bye; echo \"good$w\" >&2; sleep 120 >/dev/null &";
    let mut backup = env
        .cmd(&["backup", "--stdin-from-command", "--", "sh", "-c", script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = backup.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            backup.kill().unwrap();
            panic!("the backup waited for the process left behind");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut backup.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}");
    assert!(err.contains("goodbye"), "{err}");
    assert_eq!(env.ok(&["dump", "latest", "/stdin"]), "hello\n");
}

/// Regression: standard error was read for a fixed 2 s after the command exited, so what a
/// process it left behind wrote later (often the actual error) was missing from the message.
#[test]
fn standard_error_is_read_while_it_keeps_coming() {
    let env = Env::new();
    env.init();
    // The message is put together when written, so the command line does not hold it.
    let script = "(for w in a b c; do sleep 0.5; echo $w >&2; done; sleep 1; e=real; \
                  echo \"the $e error\" >&2) >/dev/null & exit 3";
    let out = env.run(&["backup", "--stdin-from-command", "--", "sh", "-c", script]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("exit status: 3"), "{err}");
    let tail = err
        .split("The end of its error output:")
        .nth(1)
        .unwrap_or_default();
    assert!(tail.contains("the real error"), "{err}");
}

#[test]
fn excludes_leave_out_what_they_name() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("keep.txt"), b"keep");
    write(&src.join("skip.tmp"), b"tmp");
    write(&src.join("deep/er/skip.tmp"), b"tmp");
    write(
        &src.join("cache/CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55",
    );
    write(&src.join("cache/blob"), b"cached");
    write(&src.join("big.iso"), &vec![0u8; 2 * 1024 * 1024]);
    write(&src.join("logs/app.log"), b"log");
    // Regression: a pattern with `/` not starting at the root matched nothing.
    write(&src.join("deep/er/notes/a.txt"), b"a");
    let patterns = env.path("patterns");
    std::fs::write(&patterns, format!("# comment\n\n{}/logs\n", src.display())).unwrap();
    env.init();
    env.ok(&[
        "backup",
        src.to_str().unwrap(),
        "--exclude",
        "*.tmp",
        "--exclude",
        "er/notes",
        "--exclude-file",
        patterns.to_str().unwrap(),
        "--exclude-if-present",
        "CACHEDIR.TAG",
        "--exclude-larger-than",
        "1M",
    ]);
    let listing = env.ok(&["ls", "latest", src.to_str().unwrap(), "--recursive"]);
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(names, vec!["deep", "er", "keep.txt"], "{listing}");
}

/// Regression (helper-47): a source inside another was left to the outer one's walk, which
/// left it out without a word (exit 0) where an exclude or an exclude marker stopped it, or
/// stored a symlink on the way to it; a source matching an exclude was left out too. A named
/// source is saved whatever the excludes say, and one the walk would not reach is refused
/// before anything is read.
#[test]
fn a_named_source_is_saved_whatever_the_excludes_say() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("cache/keep/a"), b"a");
    write(&src.join("cache/other"), b"o");
    write(
        &src.join("tagged/CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55",
    );
    write(&src.join("tagged/b"), b"b");
    write(&src.join("c.log"), b"c");
    std::os::unix::fs::symlink(src.join("cache"), src.join("link")).unwrap();
    env.init();
    let at = |rel: &str| src.join(rel).to_str().unwrap().to_string();
    let excludes = ["--exclude", "cache", "--exclude-if-present", "CACHEDIR.TAG"];
    let listing = |paths: &[&str]| {
        let mut args = vec!["backup"];
        args.extend_from_slice(paths);
        args.extend_from_slice(&excludes);
        args.extend_from_slice(&["--exclude", "*.log"]);
        env.ok(&args);
        env.ok(&["ls", "latest", "--recursive"])
    };
    let names = |listing: &str| -> Vec<String> {
        let below = format!("{}/", src.display());
        let rel = listing.lines().filter_map(|l| l.strip_prefix(&below));
        rel.map(str::to_string).collect()
    };
    let saved = listing(&[&at("cache"), &at("tagged"), &at("c.log")]);
    let want = [
        "c.log",
        "cache",
        "cache/keep",
        "cache/keep/a",
        "cache/other",
    ];
    let want = [&want[..], &["tagged", "tagged/CACHEDIR.TAG", "tagged/b"]].concat();
    assert_eq!(names(&saved), want, "{saved}");
    // The way to a nested source is stopped by an exclude (also where a symlink on the way
    // leads), or goes through a symlink that leads nowhere the walk goes.
    let (top, link) = (src.to_str().unwrap(), at("link"));
    for (sources, why) in [
        ([top, &at("cache/keep")], "is excluded"),
        ([top, &at("link/keep")], "is excluded"),
        ([&link, &at("link/keep")], "is not a folder"),
    ] {
        let out = env.run(&[&["backup"][..], &sources, &excludes].concat());
        assert_eq!(out.status.code(), Some(2), "{sources:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(why), "{sources:?}: {}", stderr(&out));
    }
    // Regression (helper-48): a source behind a symlink whose real path the walk reaches
    // (`backup / /home/alice` where /home links to var/home) is saved there, as before.
    env.ok(&["backup", top, &at("link/keep")]);
    let listed = env.ok(&["ls", "latest", "--recursive"]);
    assert!(
        names(&listed).contains(&"cache/keep/a".to_string()),
        "{listed}"
    );
    // A folder named on the way is a new start: the exclude no longer stops it.
    let saved = listing(&[src.to_str().unwrap(), &at("cache"), &at("cache/keep")]);
    assert!(
        names(&saved).contains(&"cache/keep/a".to_string()),
        "{saved}"
    );
}

/// Regression (helper-47): backup printed names raw in its warnings (and dry-run list), so a
/// file name could fake lines of output or send escape sequences to the terminal.
#[test]
fn warnings_show_names_escaped() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("bad\nname\x1b[31m.victim"), b"goes away");
    env.init();
    let hook = r#"file-listed:case "$1" in *victim) rm -f "$1";; esac"#;
    let out = env.run_hooked(&["backup", src.to_str().unwrap()], hook);
    let err = stderr(&out);
    assert!(
        err.contains("bad\\nname\\x1b[31m.victim: vanished"),
        "{err}"
    );
    assert!(!err.contains('\x1b') && !err.contains("bad\nname"), "{err}");
}

#[test]
fn dry_run_writes_nothing_and_lists_new_files() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a.txt"), b"aaa");
    env.init();
    let before: Vec<_> = files_below(&env.repo);
    let out = env.ok(&["backup", "--dry-run", src.to_str().unwrap()]);
    assert!(out.contains("new") && out.contains("a.txt"), "{out}");
    assert!(out.contains("dry run"), "{out}");
    assert_eq!(files_below(&env.repo).len(), before.len());
    assert!(env.snapshots().is_empty());
}

#[test]
fn time_can_be_given() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a"), b"a");
    env.init();
    env.ok(&[
        "backup",
        "--time",
        "2024-02-29T23:59:58+01:00",
        src.to_str().unwrap(),
    ]);
    let snaps = env.snapshots();
    assert!(
        snaps[0]["time"]
            .as_str()
            .unwrap()
            .starts_with("2024-02-29T22:59:58"),
        "{}",
        snaps[0]["time"]
    );
}

/// `/dev/shm` is a tmpfs mounted inside `/dev` on Linux: with --one-file-system the backup of
/// `/dev` keeps the mount point as an empty folder and does not descend into it.
#[test]
fn one_file_system_stops_at_mount_points() {
    use std::os::unix::fs::MetadataExt;
    let (dev, shm) = match (std::fs::metadata("/dev"), std::fs::metadata("/dev/shm")) {
        (Ok(d), Ok(s)) if d.dev() != s.dev() => (d, s),
        _ => return eprintln!("skipped: /dev/shm is not a separate file system here"),
    };
    assert_ne!(dev.dev(), shm.dev());
    let marker = format!("cairn-one-fs-{}", std::process::id());
    let marker_path = std::path::Path::new("/dev/shm").join(&marker);
    std::fs::write(&marker_path, b"on another file system").unwrap();
    let env = Env::new();
    env.init();
    let with_x = env.run(&[
        "backup",
        "-x",
        "/dev/shm/..",
        "--exclude",
        "/dev/pts",
        "--exclude",
        "/dev/mqueue",
    ]);
    let without = env.run(&["backup", "/dev/shm"]);
    // Regression (helper-47): a source on another file system inside another source was
    // kept as an empty folder, with exit 0.
    let named = env.run(&[
        "backup",
        "-x",
        "/dev",
        "/dev/shm",
        "--exclude",
        "/dev/pts",
        "--exclude",
        "/dev/mqueue",
    ]);
    let _ = std::fs::remove_file(&marker_path);
    assert!(
        matches!(named.status.code(), Some(0 | 3)),
        "{}",
        stderr(&named)
    );
    let listed = env.ok(&["ls", "latest", "/dev/shm"]);
    assert!(listed.contains(&marker), "{listed}");
    assert!(
        matches!(with_x.status.code(), Some(0 | 3)),
        "{}",
        stderr(&with_x)
    );
    assert!(without.status.success(), "{}", stderr(&without));
    let snaps = env.snapshots();
    let listed_x = env.ok(&["ls", snaps[0]["short_id"].as_str().unwrap(), "/dev/shm"]);
    assert!(
        !listed_x.contains(&marker),
        "descended into another file system: {listed_x}"
    );
    let listed = env.ok(&["ls", snaps[1]["short_id"].as_str().unwrap(), "/dev/shm"]);
    assert!(listed.contains(&marker), "{listed}");
}

/// Sources that move: a file that vanishes after it was listed is left out with a warning,
/// without marking the snapshot partial (unless it was named as a source); one that changes
/// while it is read is stored as read, with a warning. Neither aborts the backup.
#[test]
fn files_that_vanish_or_change_while_read_are_warned_about() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("stays"), b"stays");
    write(&src.join("victim"), b"goes away");
    let backup = |hook: &str| env.backup_hooked(&[src.to_str().unwrap()], hook);
    let warned = |v: &serde_json::Value, name: &str, text: &str| {
        v["warnings"].as_array().unwrap().iter().any(|w| {
            w["path"].as_str().unwrap().ends_with(name)
                && w["message"].as_str().unwrap().contains(text)
        })
    };

    let v = backup(r#"file-listed:case "$1" in *victim) rm -f "$1";; esac"#);
    assert!(warned(&v, "victim", "vanished"), "{v:#}");
    assert_eq!(v["partial"], false);
    assert_eq!(summary(&v, "files"), 1);

    let original = noise(5, 2 << 20);
    write(&src.join("growing"), &original);
    let v = backup(r#"file-read:case "$1" in *growing) echo more >> "$1";; esac"#);
    assert!(warned(&v, "growing", "changed while it was read"), "{v:#}");
    assert_eq!(v["partial"], false);

    let out = env.path("out");
    env.restore("latest", &out);
    let back = restored(&out, &src);
    assert!(!back.join("victim").exists());
    assert_eq!(std::fs::read(back.join("stays")).unwrap(), b"stays");
    assert!(
        std::fs::read(back.join("growing")).unwrap() == original,
        "stored as read"
    );

    // Replaced under its name while read: the stat after reading is of the file read, and
    // its inode tells it from the new one.
    let before = noise(6, 100_000);
    write(&src.join("replaced"), &before);
    let v =
        backup(r#"file-read:case "$1" in *replaced) echo new > "$1.n" && mv "$1.n" "$1";; esac"#);
    assert!(warned(&v, "replaced", "changed while it was read"), "{v:#}");
    let out = env.path("out2");
    env.restore("latest", &out);
    let back = restored(&out, &src);
    assert_eq!(std::fs::read(back.join("replaced")).unwrap(), before);

    // Regression (helper-47): a source the user named that vanished, and a file replaced by
    // a symlink after it was listed, were only warned of: the snapshot looked complete.
    let victim = src.join("victim");
    write(&victim, b"goes away");
    let hook = r#"file-listed:rm -f "$1""#;
    let out = env.run_hooked(&["backup", victim.to_str().unwrap()], hook);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("vanished"), "{}", stderr(&out));
    write(&victim, b"replaced by a link");
    let hook = r#"file-listed:case "$1" in *victim) rm "$1" && ln -s stays "$1";; esac"#;
    let out = env.run_hooked(&["backup", src.to_str().unwrap()], hook);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("was replaced"), "{}", stderr(&out));
}

/// Regression: a source gone between the check of the sources and the walk (a share
/// unmounted while the key was derived) was only warned of: the snapshot looked complete
/// and the backup exited 0, so retention could count it as a good one.
#[test]
fn a_source_gone_before_the_walk_makes_the_snapshot_partial() {
    let env = Env::new();
    env.init();
    let (kept, gone) = (env.path("kept"), env.path("gone"));
    write(&kept.join("file"), b"kept");
    write(&gone.join("file"), b"gone");
    let hook = format!("sources-checked:rm -rf {}", gone.display());
    let out = env.run_hooked(
        &["backup", kept.to_str().unwrap(), gone.to_str().unwrap()],
        &hook,
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("cannot read the source"), "{err}");
    let target = env.path("out");
    env.restore("latest", &target);
    assert_eq!(
        std::fs::read(restored(&target, &kept).join("file")).unwrap(),
        b"kept"
    );
    // Regression (helper-48): a source inside another, gone before its folder was listed,
    // was not missed at all (exit 0). The wait outlasts listings read ahead (2 s), so the
    // folder is listed again, without it.
    let nested = kept.join("sub/named");
    write(&nested, b"named");
    let hook = format!("sources-checked:rm {} && sleep 2.5", nested.display());
    let out = env.run_hooked(
        &["backup", kept.to_str().unwrap(), nested.to_str().unwrap()],
        &hook,
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("sub/named: vanished"), "{err}");
}

/// Regression: a folder swapped for a symlink after its parent was listed was listed through
/// the link, and what it led to (here another user's secrets) was stored under the folder's
/// name: the files opened through the link matched that listing. The folder has more entries
/// than are listed ahead, so the walk lists it itself, after the swap; its parent is open to
/// everyone (as another user's own folder would be to them), which is what makes it checked.
#[test]
fn a_folder_swapped_for_a_symlink_after_its_parent_was_listed_is_not_followed() {
    let env = Env::new();
    env.init();
    let (src, secrets) = (env.path("src"), env.path("secrets"));
    for i in 0..2100 {
        write(&src.join(format!("d/f{i:04}")), b"plain");
    }
    write(&secrets.join("secret-file"), b"top secret");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o777)).unwrap();
    let d = src.join("d");
    let hook = format!(
        "sources-checked:mv {0} {0}.moved && ln -s {1} {0}",
        d.display(),
        secrets.display()
    );
    let out = env.run_hooked(&["backup", src.to_str().unwrap()], &hook);
    let err = stderr(&out);
    let ls = env.run(&["ls", "latest", "--recursive"]);
    let listed = String::from_utf8_lossy(&ls.stdout);
    assert!(
        !listed.contains("secret-file"),
        "followed the symlink: {listed}"
    );
    // Listed before the swap, the folder is reported as replaced; listed after, it is
    // stored as the symlink it is now.
    let replaced = err.contains("it was replaced since its parent folder was listed");
    assert!(replaced || out.status.success(), "{err}");
}

/// Regression (helper-47): a file was opened by its path after its folder was listed, so a
/// folder someone else had swapped for a symlink to /dev meanwhile had a device of that
/// name opened, by root: its driver runs on open (a watchdog arms, a tape rewinds). Now such
/// a file is looked at without being opened, and only a regular file is read. (`/dev/tty`
/// stands in: opened without a terminal, it fails, which the old code reported.)
#[test]
fn a_device_reached_through_a_swapped_folder_is_not_opened() {
    if !running_as_root() {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("d/tty"), b"a file");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o777)).unwrap();
    let d = src.join("d");
    let hook = format!(
        r#"file-listed:case "$1" in */tty) mv {0} {0}.moved && ln -s /dev {0};; esac"#,
        d.display()
    );
    let mut cmd = env.cmd(&["backup", src.to_str().unwrap()]);
    let out = cmd
        .env("CAIRN_HOOK", &hook)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("was replaced"), "{err}");
}

/// A file listed small that grew by megabytes before it was read is stored exactly, the
/// part past the first mebibyte read through the chunker's window (it was read into one
/// buffer of whatever size it had reached).
#[test]
fn a_small_file_that_grows_before_it_is_read_is_stored_exactly() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("grows"), b"start");
    let extra = env.path("extra");
    let grown = noise(3, 5 << 20);
    write(&extra, &grown);
    let hook = format!(
        r#"file-listed:case "$1" in *grows) cat {} >> "$1";; esac"#,
        extra.display()
    );
    let out = env.run_hooked(&["backup", src.to_str().unwrap()], &hook);
    assert!(out.status.success(), "{}", stderr(&out));
    let target = env.path("out");
    env.restore("latest", &target);
    let back = std::fs::read(restored(&target, &src).join("grows")).unwrap();
    assert_eq!(back.len(), 5 + grown.len());
    assert!(back[..5] == *b"start" && back[5..] == grown[..]);
}

/// Regression: a source file swapped for a symlink between being listed and being opened was
/// followed (a root backup stored the target, perhaps a file the user may not read, under the
/// user's name), so was a folder above it, and a file swapped for a FIFO made the backup wait
/// forever. Each is skipped, and the snapshot partial (something is at the path, not stored).
#[test]
fn a_file_swapped_for_a_symlink_or_fifo_is_neither_followed_nor_waited_on() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let secret = env.path("secret");
    write(&secret, b"top secret");
    write(&src.join("stays"), b"stays");
    write(&src.join("to-link"), b"harmless");
    write(&src.join("to-fifo"), b"harmless");
    write(&src.join("folder/in-folder"), b"harmless");
    let secrets = env.path("secrets");
    write(&secrets.join("in-folder"), b"top secret");
    let hook = format!(
        r#"file-listed:case "$1" in *to-link) rm "$1" && ln -s {} "$1";; *to-fifo) rm "$1" && mkfifo "$1";; */folder/in-folder) d="${{1%/in-folder}}"; mv "$d" "$d.moved" && ln -s {} "$d";; esac"#,
        secret.display(),
        secrets.display()
    );
    let mut child = env
        .cmd(&["backup", "--json", src.to_str().unwrap()])
        .env("CAIRN_HOOK", hook)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the backup waited on the FIFO");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["partial"], true);
    for name in ["to-link", "to-fifo", "in-folder"] {
        let warned = v["warnings"].as_array().unwrap().iter().any(|w| {
            w["path"].as_str().unwrap().ends_with(name)
                && w["message"].as_str().unwrap().contains("replaced")
        });
        assert!(warned, "{name}: {v:#}");
    }
    assert_eq!(summary(&v, "files"), 1);
    let out = env.path("out");
    env.restore("latest", &out);
    let back = restored(&out, &src);
    assert_eq!(std::fs::read(back.join("stays")).unwrap(), b"stays");
    assert!(!back.join("to-link").exists() && !back.join("to-fifo").exists());
    assert!(!back.join("folder/in-folder").exists());
}

/// Regression: a file renamed over between being listed and being opened, under a source
/// reached through a symlink (a data folder moved to another disk), was skipped as if a
/// folder had been swapped for a symlink; it is stored, with a warning. Regression too: it
/// was stored with the mode (and owner) of the file it replaced.
#[test]
fn a_file_renamed_over_under_a_symlinked_source_is_stored() {
    let env = Env::new();
    env.init();
    write(&env.path("disk/data/edited"), b"old");
    use std::os::unix::fs::PermissionsExt;
    let private = std::fs::Permissions::from_mode(0o600);
    std::fs::set_permissions(env.path("disk/data/edited"), private).unwrap();
    std::os::unix::fs::symlink(env.path("disk"), env.path("via")).unwrap();
    let src = env.path("via/data");
    let v = env.backup_hooked(
        &[src.to_str().unwrap()],
        r#"file-listed:printf new > "$1.n" && chmod 640 "$1.n" && mv "$1.n" "$1""#,
    );
    assert_eq!(summary(&v, "files"), 1, "{v:#}");
    let target = env.path("out");
    env.restore("latest", &target);
    let back = restored(&target, &src);
    assert_eq!(std::fs::read(back.join("edited")).unwrap(), b"new");
    let mode = std::fs::metadata(back.join("edited"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o640);
}

/// Regression: a file renamed over between being listed and being opened was stored with
/// the extended attributes of the file it replaced (an ACL, file capabilities).
#[test]
fn a_file_renamed_over_is_stored_with_its_own_extended_attributes() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("edited"), b"old");
    let new = env.path("new");
    write(&new, b"new");
    let tagged = xattr::set(src.join("edited"), "user.of", b"the old file")
        .and_then(|()| xattr::set(&new, "user.of", b"the new file"));
    if tagged.is_err() {
        return eprintln!("skipped: no user extended attributes here");
    }
    let hook = format!(r#"file-listed:mv {} "$1""#, new.display());
    env.backup_hooked(&[src.to_str().unwrap()], &hook);
    let target = env.path("out");
    env.restore("latest", &target);
    let back = restored(&target, &src).join("edited");
    assert_eq!(std::fs::read(&back).unwrap(), b"new");
    assert_eq!(
        xattr::get(&back, "user.of").unwrap().as_deref(),
        Some(&b"the new file"[..])
    );
}

/// Regression: since source files are opened without blocking (so a FIFO swapped in cannot
/// hang the backup), a file under a lease (an NFS delegation, a Samba oplock) was skipped at
/// once instead of waited for.
#[test]
fn a_file_under_a_lease_is_waited_for_not_skipped() {
    use std::os::unix::io::AsRawFd;
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("leased"), b"served over SMB");
    let holder = std::fs::OpenOptions::new()
        .write(true)
        .open(src.join("leased"))
        .unwrap();
    // SAFETY: ignoring SIGIO (the lease-break notice) and taking a lease on our descriptor.
    let leased = unsafe {
        libc::signal(libc::SIGIO, libc::SIG_IGN);
        libc::fcntl(holder.as_raw_fd(), libc::F_SETLEASE, libc::F_WRLCK)
    };
    if leased != 0 {
        eprintln!(
            "skipped: no leases here: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    let child = env
        .cmd(&["backup", "--json", src.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The holder lets go once the backup asked (the lease break is pending), as a file
    // server does.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // SAFETY: asking which lease our own descriptor holds.
    while unsafe { libc::fcntl(holder.as_raw_fd(), libc::F_GETLEASE) } == libc::F_WRLCK {
        assert!(
            std::time::Instant::now() < deadline,
            "the backup never asked"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: releasing the lease on our own descriptor.
    unsafe { libc::fcntl(holder.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary(&v, "files"), 1, "{v:#}");
}

/// The local index is opened and checked while the key is derived (from the repository id in
/// the config), and that prepared index is the one used: the speed-up cannot silently turn off.
#[test]
fn backup_restore_and_dump_use_the_index_prepared_while_the_key_is_derived() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    write(&src.join("a"), b"a");
    env.init();
    let target = env.path("target");
    let file = format!("{}/a", src.to_str().unwrap());
    let commands: [&[&str]; 4] = [
        &["backup", src.to_str().unwrap()],
        &["backup", src.to_str().unwrap()],
        &["restore", "latest", "--target", target.to_str().unwrap()],
        &["dump", "latest", &file],
    ];
    for args in commands {
        let out = env
            .cmd(args)
            .env("CAIRN_LOG", "cairn=debug")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("syncing the prepared local index"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(std::fs::read(target.join(&file[1..])).unwrap(), b"a");
}

/// `levels` folders named `d`, each in the one before, below `root`, with a file `leaf` at the
/// bottom (made relative to open folders: the path grows past what one call takes).
fn nest(root: &std::path::Path, levels: usize) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    std::fs::create_dir_all(root).unwrap();
    let mut dir: OwnedFd = std::fs::File::open(root).unwrap().into();
    for _ in 0..levels {
        // SAFETY: `dir` is an open folder and the names are NUL-terminated literals.
        let fd = unsafe {
            assert_eq!(libc::mkdirat(dir.as_raw_fd(), c"d".as_ptr(), 0o755), 0);
            libc::openat(
                dir.as_raw_fd(),
                c"d".as_ptr(),
                libc::O_DIRECTORY | libc::O_RDONLY,
            )
        };
        assert!(fd >= 0);
        // SAFETY: `fd` was just opened and is owned by nothing else.
        dir = unsafe { OwnedFd::from_raw_fd(fd) };
    }
    // SAFETY: as above.
    let leaf = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c"leaf".as_ptr(),
            libc::O_CREAT | libc::O_WRONLY,
            0o644,
        )
    };
    assert!(leaf >= 0);
    // SAFETY: `leaf` was just opened and is owned by nothing else.
    drop(unsafe { OwnedFd::from_raw_fd(leaf) });
}

/// Regression: a tree 3,000 folders deep (any user can make one in a folder a nightly backup
/// covers) overflowed the stack and aborted the backup, every night. Folders deeper than
/// `MAX_DEPTH` are skipped, the snapshot partial.
#[test]
fn deep_trees_are_backed_up_and_deeper_ones_skipped() {
    let env = Env::new();
    env.init();
    let deep = env.path("deep");
    nest(&deep, 3000);
    let out = env.run(&["backup", deep.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ls = env.run(&["ls", "latest", "--recursive"]);
    assert!(
        String::from_utf8_lossy(&ls.stdout).contains("/d/leaf"),
        "{}",
        stderr(&ls)
    );
    let deeper = env.path("deeper");
    nest(&deeper, cairn::walk::MAX_DEPTH + 1);
    let out = env.run(&["backup", deeper.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains(&too_deep()), "{}", stderr(&out));
}

/// Regression: every backup read each symlink's target, which sets the link's access time
/// (daily, under `relatime`), so the link's entry and every tree above it changed every
/// night. An unchanged link's target now comes from the parent snapshot.
#[test]
fn an_unchanged_symlink_is_not_read_again() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a.txt"), b"a");
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    env.init();
    let source = src.to_str().unwrap();
    // A link made in the tick before the backup began could be replaced within it unseen:
    // only an older one is trusted.
    settle();
    std::os::unix::fs::symlink("a.txt", src.join("fresh")).unwrap();
    env.ok(&["backup", source]);
    let reads = env.path("reads");
    let hook = format!("backup-read-link:echo \"$1\" >> {}", reads.display());
    env.backup_hooked(&[source], &hook);
    let read = std::fs::read_to_string(&reads).unwrap();
    assert!(
        !read.contains("/link"),
        "an unchanged link was read again: {read}"
    );
    assert!(
        read.contains("/fresh"),
        "a link made just before was trusted: {read}"
    );
    std::fs::remove_file(&reads).unwrap();
    std::fs::remove_file(src.join("link")).unwrap();
    std::os::unix::fs::symlink("b.txt", src.join("link")).unwrap();
    env.backup_hooked(&[source], &hook);
    assert!(reads.exists(), "a new link was not read");
    let listed = env.ok(&["ls", "-l", "latest", source]);
    assert!(listed.contains("link -> b.txt"), "{listed}");
}
