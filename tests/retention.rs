//! Retention end to end: forget by policy and by id, tag, prune (deleting and repacking),
//! locks, the generation counter, and prune and forget killed at random moments or run beside
//! backups. After each of these, `check` must pass and every remaining snapshot must restore
//! byte-exactly.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// What each committed snapshot must restore to.
type Expected = HashMap<String, BTreeMap<Vec<u8>, Entry>>;

fn backup_at(env: &Env, src: &Path, time: &str) -> String {
    let out = env.ok(&["backup", "--json", "--time", time, src.to_str().unwrap()]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["snapshot_id"].as_str().unwrap().to_string()
}

fn snapshot_ids(env: &Env) -> Vec<String> {
    env.snapshots()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// Every listed snapshot restores to what was backed up.
fn assert_snapshots_restore(env: &Env, src: &Path, expected: &Expected) {
    for id in snapshot_ids(env) {
        let want = expected
            .get(&id)
            .unwrap_or_else(|| panic!("snapshot {id} was never committed"));
        let target = env.path(&format!("restore-{}", &id[..8]));
        let _ = std::fs::remove_dir_all(&target);
        env.restore(&id, &target);
        assert_eq!(&describe(&restored(&target, src)), want, "snapshot {id}");
        std::fs::remove_dir_all(&target).unwrap();
    }
}

fn check_passes(env: &Env, extra: &[&str]) {
    let mut args = vec!["--json", "check"];
    args.extend_from_slice(extra);
    let out = env.run(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "check failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

fn utc(env: &Env, args: &[&str]) -> Command {
    let mut c = env.cmd(args);
    c.env("TZ", "UTC");
    c
}

fn nightly(env: &Env, src: &Path, days: u32) -> Vec<String> {
    (1..=days)
        .map(|d| {
            write(&src.join("night.txt"), format!("night {d}\n").as_bytes());
            backup_at(env, src, &format!("2026-10-{d:02}T02:00:00Z"))
        })
        .collect()
}

#[test]
fn forget_by_policy_dry_run_then_for_real() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("a"), b"a");
    let ids = nightly(&env, &src, 20);
    let out = utc(
        &env,
        &[
            "--json",
            "forget",
            "--keep-daily",
            "3",
            "--keep-weekly",
            "2",
            "--dry-run",
        ],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let plans: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plans.len(), 1);
    let kept: Vec<(&str, Vec<&str>)> = plans[0]["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let reasons = k["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            (k["id"].as_str().unwrap(), reasons)
        })
        .collect();
    // 20 Oct 2026 is a Tuesday: daily keeps 20, 19, 18; weekly keeps 20 (week 43) and
    // Sunday 18 (week 42).
    let expect = [
        (ids[19].as_str(), vec!["daily", "weekly"]),
        (ids[18].as_str(), vec!["daily"]),
        (ids[17].as_str(), vec!["daily", "weekly"]),
    ];
    assert_eq!(kept, expect);
    assert_eq!(plans[0]["remove"].as_array().unwrap().len(), 17);
    assert_eq!(snapshot_ids(&env).len(), 20, "a dry run removes nothing");

    let text = utc(&env, &["forget", "--keep-daily", "3", "--keep-weekly", "2"])
        .output()
        .unwrap();
    assert!(text.status.success());
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        stdout.contains(&format!("keep    {}", &ids[19][..8])),
        "{stdout}"
    );
    assert!(stdout.contains("daily, weekly"), "{stdout}");
    let left = snapshot_ids(&env);
    assert_eq!(left.len(), 3);
    for id in &ids[17..] {
        assert!(left.contains(id));
    }
    check_passes(&env, &[]);
}

/// `--host`, `--tag` and `--path` narrow what forget looks at; `--group-by tags` makes groups
/// of equal tags.
#[test]
fn forget_filters_and_grouping() {
    let env = Env::new();
    env.init();
    let (one, two) = (env.path("one"), env.path("two"));
    write(&one.join("f"), b"1");
    write(&two.join("f"), b"2");
    let backup = |host: &str, tag: &str, src: &Path, day: u32| -> String {
        let time = format!("2026-10-{day:02}T02:00:00Z");
        let args = [
            "backup",
            "--json",
            "--host",
            host,
            "--tag",
            tag,
            "--time",
            &time,
            src.to_str().unwrap(),
        ];
        let v: Value = serde_json::from_str(&env.ok(&args)).unwrap();
        v["snapshot_id"].as_str().unwrap().to_string()
    };
    let a1 = backup("alpha", "daily", &one, 1);
    let a2 = backup("alpha", "daily", &one, 2);
    let a3 = backup("alpha", "weekly", &one, 3);
    let b1 = backup("beta", "daily", &one, 1);
    let b2 = backup("beta", "daily", &one, 2);
    let t1 = backup("alpha", "daily", &two, 4);
    let t2 = backup("alpha", "daily", &two, 5);
    let left = |env: &Env| -> std::collections::BTreeSet<String> {
        snapshot_ids(env).into_iter().collect()
    };
    let all: std::collections::BTreeSet<String> = [&a1, &a2, &a3, &b1, &b2, &t1, &t2]
        .map(String::clone)
        .into();

    // Only host beta: its older snapshot goes.
    env.ok(&["forget", "--keep-last", "1", "--host", "beta"]);
    let mut want = all.clone();
    want.remove(&b1);
    assert_eq!(left(&env), want);
    // Only the path `two`: its older snapshot goes.
    env.ok(&[
        "forget",
        "--keep-last",
        "1",
        "--path",
        two.to_str().unwrap(),
    ]);
    want.remove(&t1);
    assert_eq!(left(&env), want);
    // Only tag daily of host alpha, grouped by host and tags (not paths): of alpha's daily
    // snapshots (a1, a2, t2) the newest stays; the weekly a3 is not looked at.
    env.ok(&[
        "forget",
        "--keep-last",
        "1",
        "--host",
        "alpha",
        "--tag",
        "daily",
        "--group-by",
        "host,tags",
    ]);
    want.remove(&a1);
    want.remove(&a2);
    assert_eq!(left(&env), want);
    assert!(want.contains(&a3) && want.contains(&t2) && want.contains(&b2));
    check_passes(&env, &[]);

    // Regression: a named snapshot was looked up among all of them whatever the filters, so
    // `latest --host beta` was the newest of any host (t2, alpha's).
    env.ok(&["tag", "latest", "--host", "beta", "--add", "picked"]);
    let picked: Vec<String> = env
        .snapshots()
        .iter()
        .filter(|s| s["tags"].as_array().unwrap().iter().any(|t| t == "picked"))
        .map(|s| s["hostname"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(picked, ["beta"]);
    env.ok(&["forget", "latest", "--host", "beta"]);
    assert_eq!(left(&env), [&a3, &t2].map(String::clone).into());
    // Under a filter, another host's snapshot is not found by its id either.
    let other = env.run(&["forget", &t2[..8], "--host", "beta"]);
    assert!(!other.status.success(), "{}", stderr(&other));
    assert_eq!(left(&env), [&a3, &t2].map(String::clone).into());
}

#[test]
fn forget_refuses_unknown_keep_tag_and_removing_a_whole_group() {
    let env = Env::new();
    env.init();
    let (a, b) = (env.path("a"), env.path("b"));
    write(&a.join("f"), b"a");
    write(&b.join("f"), b"b");
    env.ok(&["backup", "--tag", "keep", a.to_str().unwrap()]);
    env.ok(&["backup", b.to_str().unwrap()]);
    env.ok(&["backup", b.to_str().unwrap()]);

    // Flags that cannot be right are refused as usage errors (exit 2), like the parser's.
    let out = env.run(&["forget", "--keep-tag", "kepp"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no snapshot has this tag"),
        "{}",
        stderr(&out)
    );
    // b's group has no snapshot tagged `keep`: the policy would empty it.
    let out = env.run(&["forget", "--keep-tag", "keep"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--allow-remove-all"),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot_ids(&env).len(), 3, "a refusal removes nothing");
    let out = env.run(&["forget"]);
    assert_eq!(out.status.code(), Some(2), "no policy is refused");
    for bad in [
        &["forget", "--keep-within", "3x"][..],
        &["check", "--read-data-subset", "0/5"],
        &["backup", "--exclude-larger-than", "5Q", a.to_str().unwrap()],
        &["prune", "--max-unused", "lots"],
    ] {
        let out = env.run(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
    }

    env.ok(&["forget", "--keep-tag", "keep", "--allow-remove-all"]);
    assert_eq!(snapshot_ids(&env).len(), 1);
}

#[test]
fn forget_named_snapshots_and_prune_frees_their_data() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("shared"), &noise(1, 1 << 20));
    write(&src.join("gone"), &noise(2, 3 << 20));
    let first = backup_at(&env, &src, "2026-10-01T02:00:00Z");
    std::fs::remove_file(src.join("gone")).unwrap();
    write(&src.join("new"), &noise(3, 1 << 20));
    let second = backup_at(&env, &src, "2026-10-02T02:00:00Z");
    let mut expected = Expected::new();
    expected.insert(second.clone(), describe(&src));

    env.ok(&["forget", &first[..8]]);
    assert_eq!(snapshot_ids(&env), vec![second.clone()]);
    let size_before = env.repo_size();
    let dry = env.ok(&["prune", "--dry-run"]);
    assert!(dry.contains("would be"), "{dry}");
    assert_eq!(env.repo_size(), size_before, "a dry run deletes nothing");
    let out: Value = serde_json::from_str(&env.ok(&["--json", "prune"])).unwrap();
    // `gone` (3 MiB) shared a data pack with `shared`: that pack is 75% unused and repacked;
    // the first snapshot's tree pack is needed no more and deleted.
    assert_eq!(out["packs_repacked"], 1, "{out}");
    assert!(out["packs_deleted"].as_u64().unwrap() >= 1, "{out}");
    assert!(
        env.repo_size() < size_before - (2 << 20),
        "{} -> {}",
        size_before,
        env.repo_size()
    );
    check_passes(&env, &["--read-data"]);
    assert_snapshots_restore(&env, &src, &expected);
    // Nothing left to do.
    let again: Value = serde_json::from_str(&env.ok(&["--json", "prune"])).unwrap();
    assert_eq!(again["packs_deleted"], 0);
    assert_eq!(again["packs_repacked"], 0);

    // A pack with less than the default 5% unused is kept as it is; `--max-unused 0%`
    // repacks it.
    write(&src.join("big"), &noise(4, 4 << 20));
    write(&src.join("tiny"), &noise(5, 100_000));
    let third = backup_at(&env, &src, "2026-10-03T02:00:00Z");
    std::fs::remove_file(src.join("tiny")).unwrap();
    let fourth = backup_at(&env, &src, "2026-10-04T02:00:00Z");
    expected.insert(fourth, describe(&src));
    env.ok(&["forget", &third[..8]]);
    let kept: Value = serde_json::from_str(&env.ok(&["--json", "prune"])).unwrap();
    assert_eq!(kept["packs_repacked"], 0, "{kept}");
    let repacked: Value =
        serde_json::from_str(&env.ok(&["--json", "prune", "--max-unused", "0%"])).unwrap();
    assert_eq!(repacked["packs_repacked"], 1, "{repacked}");
    check_passes(&env, &["--read-data"]);
    assert_snapshots_restore(&env, &src, &expected);
}

/// `forget --dry-run --prune` reports what the prune would free as if the snapshots were gone,
/// changes nothing, and takes only a shared lock; with `--json`, forget and prune print one
/// object.
#[test]
fn forget_dry_run_with_prune_reports_what_would_be_freed() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("gone"), &noise(11, 3 << 20));
    backup_at(&env, &src, "2026-10-01T02:00:00Z");
    std::fs::remove_file(src.join("gone")).unwrap();
    write(&src.join("kept"), b"kept");
    let second = backup_at(&env, &src, "2026-10-02T02:00:00Z");
    foreign_lock(&env, false, "elsewhere", "");
    let size_before = env.repo_size();

    let args = [
        "--json",
        "--retry-lock",
        "0",
        "forget",
        "--keep-last",
        "1",
        "--prune",
    ];
    let mut dry_args = args.to_vec();
    dry_args.push("--dry-run");
    let dry: Value = serde_json::from_str(&env.ok(&dry_args)).unwrap();
    assert_eq!(
        dry["forget"][0]["remove"].as_array().unwrap().len(),
        1,
        "{dry:#}"
    );
    assert_eq!(dry["prune"]["dry_run"], true);
    assert_eq!(dry["prune"]["snapshots"], 1, "{dry:#}");
    let freed = dry["prune"]["bytes_deleted"].as_u64().unwrap()
        + dry["prune"]["bytes_repacked"].as_u64().unwrap();
    assert!(freed >= 3 << 20, "{dry:#}");
    assert_eq!(env.repo_size(), size_before, "a dry run changes nothing");
    assert_eq!(snapshot_ids(&env).len(), 2);

    // The real one needs the exclusive lock.
    assert_eq!(env.run(&args).status.code(), Some(11));
    env.ok(&["unlock", "--remove-all"]);
    let done: Value = serde_json::from_str(&env.ok(&args)).unwrap();
    assert_eq!(done["prune"]["dry_run"], false);
    assert_eq!(snapshot_ids(&env), vec![second]);
    assert!(env.repo_size() < size_before - (2 << 20));
    check_passes(&env, &["--read-data"]);
}

#[test]
fn tag_replaces_snapshots_and_an_interrupted_tag_shows_one_version() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("f"), b"x");
    env.ok(&["backup", "--tag", "a", src.to_str().unwrap()]);
    env.ok(&["tag", "latest", "--add", "b", "--remove", "a"]);
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["tags"], serde_json::json!(["b"]));
    env.ok(&["tag", "--set", "c", "--set", "d"]);
    assert_eq!(env.snapshots()[0]["tags"], serde_json::json!(["c", "d"]));

    let out = env
        .cmd(&["tag", "latest", "--add", "e"])
        .env("CAIRN_FAILPOINT", "tag-written")
        .output()
        .unwrap();
    assert!(out.status.code().is_none(), "the failpoint kills it");
    let files = files_below(&env.repo.join("snapshots")).len();
    assert_eq!(files, 2, "new version written, old not yet deleted");
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1, "the replaced version is hidden");
    assert_eq!(snaps[0]["tags"], serde_json::json!(["c", "d", "e"]));
    env.ok(&["forget", "--keep-last", "1"]);
    assert_eq!(
        files_below(&env.repo.join("snapshots")).len(),
        1,
        "forget removes it"
    );
    check_passes(&env, &[]);
}

/// Writes a lock file through the library, as another host would.
fn foreign_lock(env: &Env, exclusive: bool, hostname: &str, namespace: &str) {
    use cairn::repo::{FileKind, Repository};
    let storage = cairn::storage::OpendalStorage::local(env.repo.to_str().unwrap()).unwrap();
    let repo = Repository::open(Box::new(storage), || Ok(PASSWORD.as_bytes().to_vec())).unwrap();
    let now = cairn::host::now_ns();
    let mut w = cairn::codec::FieldWriter::new();
    w.uint(1, exclusive.into())
        .bytes(2, hostname.as_bytes())
        .bytes(3, b"other")
        .uint(4, 4_000_000)
        .int(5, now)
        .int(6, now)
        .bytes(7, namespace.as_bytes());
    repo.save_named(FileKind::Lock, &w.finish()).unwrap();
}

#[test]
fn locks_keep_prune_and_backups_apart() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("f"), b"x");
    env.ok(&["backup", src.to_str().unwrap()]);

    // Another host holds an exclusive lock: a backup waits, then gives up with code 11.
    foreign_lock(&env, true, "elsewhere", "");
    let out = env.run(&["--retry-lock", "1s", "backup", src.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    assert!(stderr(&out).contains("elsewhere"), "{}", stderr(&out));
    assert_eq!(snapshot_ids(&env).len(), 1);
    // It is live (another host, fresh): unlock keeps it and says so; --remove-all removes it.
    let kept = env.ok(&["unlock"]);
    assert!(kept.contains("kept an exclusive lock"), "{kept}");
    assert_eq!(
        env.run(&["--retry-lock", "0", "prune"]).status.code(),
        Some(11)
    );
    env.ok(&["unlock", "--remove-all"]);

    // A shared lock from elsewhere lets backups run but keeps prune out; a dry run of prune
    // writes nothing and runs beside it (regression: it took an exclusive lock).
    foreign_lock(&env, false, "elsewhere", "");
    env.ok(&["--retry-lock", "0", "backup", src.to_str().unwrap()]);
    assert_eq!(
        env.run(&["--retry-lock", "0", "prune"]).status.code(),
        Some(11)
    );
    env.ok(&["--retry-lock", "0", "prune", "--dry-run"]);
    env.ok(&["unlock", "--remove-all"]);

    // Regression: a lock of another container with this host name (its own process ids) was
    // removed as stale because its pid does not exist here.
    let here = cairn::host::hostname();
    foreign_lock(&env, true, &here, "other-boot/1:2");
    assert_eq!(
        env.run(&["--retry-lock", "0", "prune"]).status.code(),
        Some(11)
    );
    env.ok(&["unlock", "--remove-all"]);

    // A lock of a process on this host that is gone is stale and ignored.
    foreign_lock(&env, true, &here, &cairn::host::process_namespace());
    env.ok(&["--retry-lock", "0", "prune"]);
    assert!(
        files_below(&env.repo.join("locks")).is_empty(),
        "stale lock removed, own released"
    );
}

#[test]
fn another_clients_index_is_rebuilt_after_prune_so_it_does_not_dedup_against_deleted_data() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("data"), &noise(7, 2 << 20));
    let other_cache = env.path("other-cache");
    let other = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("--repo")
            .arg(&env.repo)
            .arg("--cache-dir")
            .arg(&other_cache)
            .args(args)
            .env("CAIRN_PASSWORD", PASSWORD)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        out
    };
    other(&["backup", src.to_str().unwrap()]);
    env.ok(&["forget", "latest"]);
    env.ok(&["prune"]);
    // The other client's cache still lists the deleted blobs; the generation tells it.
    let out = other(&["backup", "--json", src.to_str().unwrap()]);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(summary["summary"]["data_blobs_added"].as_u64().unwrap() > 0);
    assert!(stderr(&out).contains("generation"), "{}", stderr(&out));
    check_passes(&env, &["--read-data"]);
    let mut expected = Expected::new();
    expected.insert(snapshot_ids(&env)[0].clone(), describe(&src));
    assert_snapshots_restore(&env, &src, &expected);
}

/// A deterministic source change for round `n`: a new file, a changed one, a deleted one.
fn change_source(src: &Path, n: u64) {
    write(
        &src.join(format!("r{n}.bin")),
        &noise(n, 150_000 + (n as usize % 5) * 40_000),
    );
    write(
        &src.join("changing.txt"),
        format!("round {n}\n").repeat(500).as_bytes(),
    );
    if n >= 3 {
        let _ = std::fs::remove_file(src.join(format!("r{}.bin", n - 3)));
    }
}

fn spawn(env: &Env, args: &[&str]) -> Child {
    env.cmd(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn prune_and_forget_killed_at_random_moments_lose_nothing() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let mut expected = Expected::new();
    let mut killed = 0;
    let mut seed: u64 = 0x5eed;
    let mut random = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    let mut round = 0u64;
    while killed < 50 {
        assert!(
            round < 150,
            "only {killed} of {round} runs were killed before they finished"
        );
        change_source(&src, round);
        let id = backup_at(
            &env,
            &src,
            &format!("2026-10-01T{:02}:{:02}:00Z", round / 60, round % 60),
        );
        expected.insert(id, describe(&src));
        let command: &[&str] = if round.is_multiple_of(3) {
            &["forget", "--keep-last", "3"]
        } else {
            &[
                "forget",
                "--keep-last",
                "3",
                "--prune",
                "--max-unused",
                "0%",
            ]
        };
        let mut child = spawn(&env, command);
        std::thread::sleep(Duration::from_millis(random(45)));
        let _ = child.kill();
        if child.wait().unwrap().code().is_none() {
            killed += 1;
        }

        check_passes(&env, &[]);
        assert_snapshots_restore(&env, &src, &expected);
        env.ok(&["prune"]);
        round += 1;
    }
    env.ok(&[
        "forget",
        "--keep-last",
        "3",
        "--prune",
        "--max-unused",
        "0%",
    ]);
    check_passes(&env, &["--read-data"]);
    assert_snapshots_restore(&env, &src, &expected);
    assert_eq!(snapshot_ids(&env).len(), 3);
}

/// Forget and prune stopped at each of their steps (the process aborts there, as under
/// `kill -9`): removing snapshots, after the repacked packs are written, after each new index
/// segment, after the generation is raised, after each old segment and each pack is deleted.
#[test]
fn prune_and_forget_stopped_at_every_step_lose_nothing() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let mut expected = Expected::new();
    let stops = [
        "forget-recorded:1",
        "forget-removed:1",
        "forget-removed:2",
        "prune-packs-written:1",
        "prune-segment-written:1",
        "prune-generation-raised:1",
        "prune-segment-deleted:1",
        "prune-segment-deleted:2",
        "prune-pack-deleted:1",
        "prune-pack-deleted:2",
        "prune-pack-deleted:3",
    ];
    let mut round = 0u64;
    for stop in stops {
        for _ in 0..3 {
            round += 1;
            change_source(&src, round);
            let time = format!("2026-10-{:02}T{:02}:00:00Z", 1 + round / 24, round % 24);
            let id = backup_at(&env, &src, &time);
            expected.insert(id, describe(&src));
        }
        let out = env
            .cmd(&[
                "forget",
                "--keep-last",
                "2",
                "--prune",
                "--max-unused",
                "0%",
            ])
            .env("CAIRN_FAILPOINT", stop)
            .output()
            .unwrap();
        let name = assert_aborted_at(&out, stop);
        // Past its removal record, a forget shows as done even before its files are gone.
        assert_eq!(
            snapshot_ids(&env).len(),
            2,
            "{stop}: forget is all or nothing"
        );
        if name.starts_with("forget") {
            let report: Value = serde_json::from_str(&env.ok(&["--json", "check"])).unwrap();
            let kinds: Vec<&str> = report["warnings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["kind"].as_str().unwrap())
                .collect();
            assert!(kinds.contains(&"removal_pending"), "{stop}: {report:#}");
        }
        check_passes(&env, &[]);
        assert_snapshots_restore(&env, &src, &expected);
        env.ok(&["prune", "--max-unused", "0%"]);
        assert_eq!(files_below(&env.repo.join("snapshots")).len(), 2, "{stop}");
        assert!(files_below(&env.repo.join("removals")).is_empty(), "{stop}");
        check_passes(&env, &[]);
        assert_snapshots_restore(&env, &src, &expected);
    }
    check_passes(&env, &["--read-data"]);
}

#[test]
fn backups_beside_prune_and_beside_each_other_are_all_kept() {
    let env = Env::new();
    env.init();
    let (one, two) = (env.path("one"), env.path("two"));
    let mut expected: HashMap<String, (std::path::PathBuf, BTreeMap<Vec<u8>, Entry>)> =
        HashMap::new();
    for round in 0..20u64 {
        change_source(&one, round);
        change_source(&two, round + 1000);
        let described = [(one.clone(), describe(&one)), (two.clone(), describe(&two))];
        let backups = [
            spawn(&env, &["backup", "--json", one.to_str().unwrap()]),
            spawn(&env, &["backup", "--json", two.to_str().unwrap()]),
        ];
        let prune = spawn(
            &env,
            &[
                "forget",
                "--keep-last",
                "2",
                "--prune",
                "--max-unused",
                "0%",
            ],
        );
        for (child, state) in backups.into_iter().zip(described) {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "backup: {}", stderr(&out));
            let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
            let id = summary["snapshot_id"].as_str().unwrap().to_string();
            expected.insert(id, state);
        }
        let out = prune.wait_with_output().unwrap();
        assert!(out.status.success(), "forget --prune: {}", stderr(&out));
        // Every round, not only at the end: whatever is left must be whole.
        check_passes(&env, &[]);
        restore_all(&env, &expected, round);
    }
    // The last round's forget may have run before that round's backups committed.
    env.ok(&["forget", "--keep-last", "2", "--prune"]);
    check_passes(&env, &["--read-data"]);
    assert_eq!(restore_all(&env, &expected, 99), 4, "two per source");
}

/// Restores every snapshot left and compares it with what its source held; returns how many.
fn restore_all(
    env: &Env,
    expected: &HashMap<String, (std::path::PathBuf, BTreeMap<Vec<u8>, Entry>)>,
    round: u64,
) -> usize {
    let left = snapshot_ids(env);
    for id in &left {
        let (path, tree) = expected
            .get(id)
            .unwrap_or_else(|| panic!("snapshot {id} was never committed"));
        let target = env.path(&format!("r-{round}-{}", &id[..8]));
        env.restore(id, &target);
        assert_eq!(
            &describe(&restored(&target, path)),
            tree,
            "snapshot {id} after round {round}"
        );
        std::fs::remove_dir_all(&target).unwrap();
    }
    left.len()
}
