//! Damaged repositories: for each kind of damage, `check` must name the damaged object and the
//! snapshots and files it affects, unaffected files must still restore, and where a repair
//! applies, repair followed by check must be clean.
//!
//! Every test starts from the same three snapshots: 1 holds `a/`, 2 adds `b/`, 3 adds `c/`.
//! Each backup writes its own data pack and tree pack, so damage to backup 2's packs touches
//! `b/` (in snapshots 2 and 3) and nothing else.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cairn::ids::{BlobId, BlobType, PackId};
use cairn::index::{IndexSegment, PackRecord};
use cairn::pack::{PackWriter, seal_blob};
use cairn::repo::{FileKind, Repository, object_path};
use cairn::storage::OpendalStorage;
use common::*;
use serde_json::Value;

struct Fixture {
    env: Env,
    src: PathBuf,
    /// Snapshot ids, in backup order.
    snapshots: Vec<String>,
    /// Files each backup added to the repository, by folder (`packs`, `index`, `snapshots`).
    added: Vec<Vec<PathBuf>>,
}

impl Fixture {
    fn new() -> Self {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        let mut fixture = Fixture {
            env,
            src,
            snapshots: Vec::new(),
            added: Vec::new(),
        };
        for (n, dir) in ["a", "b", "c"].iter().enumerate() {
            for i in 0..4 {
                let text = format!("file {i} of {dir}\n").repeat(50 + i * 10);
                write(
                    &fixture.src.join(dir).join(format!("small{i}.txt")),
                    text.as_bytes(),
                );
            }
            write(
                &fixture.src.join(dir).join("big.bin"),
                &noise(n as u64 + 1, 3 << 20),
            );
            fixture.backup();
        }
        fixture
    }

    fn backup(&mut self) -> String {
        let before: HashSet<PathBuf> = files_below(&self.env.repo).into_iter().collect();
        let summary = self.env.backup_json(&[&self.src]);
        let id = summary["snapshot_id"].as_str().unwrap().to_string();
        let mut added: Vec<PathBuf> = files_below(&self.env.repo)
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        added.sort();
        self.snapshots.push(id.clone());
        self.added.push(added);
        id
    }

    fn added_in(&self, backup: usize, folder: &str) -> Vec<PathBuf> {
        let prefix = self.env.repo.join(folder);
        let mut files: Vec<PathBuf> = self.added[backup]
            .iter()
            .filter(|p| p.starts_with(&prefix))
            .cloned()
            .collect();
        files.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
        files
    }

    /// The data pack of a backup (the largest pack it wrote).
    fn data_pack(&self, backup: usize) -> PathBuf {
        self.added_in(backup, "packs").pop().unwrap()
    }

    /// The tree pack of a backup (the smallest pack it wrote).
    fn tree_pack(&self, backup: usize) -> PathBuf {
        self.added_in(backup, "packs").remove(0)
    }

    fn segment(&self, backup: usize) -> PathBuf {
        let segments = self.added_in(backup, "index");
        assert_eq!(segments.len(), 1, "one index segment per backup");
        segments[0].clone()
    }

    /// Runs `check` with --json; returns the exit code and the report.
    fn check(&self, extra: &[&str]) -> (i32, Value) {
        let mut args = vec!["--json", "check"];
        args.extend_from_slice(extra);
        let out = self.env.run(&args);
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("check printed no JSON ({e}); stderr: {}", stderr(&out)));
        (out.status.code().unwrap(), report)
    }

    fn assert_clean(&self, extra: &[&str]) -> Value {
        let (code, report) = self.check(extra);
        assert_eq!(code, 0, "check {extra:?} should be clean: {report:#}");
        assert!(report["problems"].as_array().unwrap().is_empty());
        report
    }

    /// Restores `dir` of a snapshot and compares it with the source.
    fn assert_restores(&self, snapshot: usize, dir: &str) {
        let target = self.env.path(&format!("restore-{snapshot}-{dir}"));
        let _ = std::fs::remove_dir_all(&target);
        let source = self.src.join(dir);
        let spec = format!("{}:{}", self.snapshots[snapshot], source.display());
        self.env
            .ok(&["restore", &spec, "--target", target.to_str().unwrap()]);
        assert_eq!(
            describe(&target),
            describe(&source),
            "{dir} of snapshot {snapshot}"
        );
    }

    /// Every file of every snapshot restores byte-exactly.
    /// Flips a bit inside a data blob of the second backup's pack, which `check --read-data`
    /// then finds (and records in this machine's index); returns the pack.
    fn damage_a_blob_found_by_read_data(&self) -> PathBuf {
        let pack = self.data_pack(1);
        flip_bit(&pack, 100);
        assert_eq!(self.check(&["--read-data"]).0, 17);
        pack
    }

    /// From now on, commands run as from another machine: with a cache of their own, which
    /// never saw what the last check found.
    fn become_another_machine(&self) {
        let first = self.env.path("first-machine-cache");
        std::fs::rename(&self.env.cache, first).unwrap();
    }

    /// The next backup stores again what was lost, and every snapshot is whole again.
    fn backup_heals(&mut self) {
        self.backup();
        self.assert_clean(&["--read-data"]);
        self.assert_all_restore();
    }

    fn assert_all_restore(&self) {
        for s in 0..self.snapshots.len() {
            for dir in ["a", "b", "c"].iter().take(s + 1) {
                self.assert_restores(s, dir);
            }
        }
    }

    fn open_repo(&self) -> Repository {
        let storage = OpendalStorage::local(self.env.repo.to_str().unwrap()).unwrap();
        Repository::open(Box::new(storage), || Ok(PASSWORD.as_bytes().to_vec())).unwrap()
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn flip_bit(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

fn kinds(report: &Value) -> Vec<String> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_string())
        .collect()
}

fn has_problem(report: &Value, kind: &str, field: &str, id: &str) -> bool {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["kind"] == kind && p[field] == id)
}

fn has_warning(report: &Value, kind: &str) -> bool {
    report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["kind"] == kind)
}

/// (snapshot id, path relative to the source folder) of every affected entry.
fn affected(report: &Value, f: &Fixture) -> Vec<(String, String)> {
    let prefix = f.src.display().to_string();
    report["affected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let path = a["path"].as_str().unwrap();
            let rel = path.strip_prefix(&prefix).unwrap_or(path);
            (a["snapshot"].as_str().unwrap().to_string(), rel.to_string())
        })
        .collect()
}

/// Asserts that exactly snapshots 2 and 3 are affected, and only inside `b/`.
fn assert_only_b_affected(report: &Value, f: &Fixture) {
    let entries = affected(report, f);
    assert!(!entries.is_empty(), "nothing affected: {report:#}");
    let snaps: HashSet<&str> = entries.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        snaps,
        HashSet::from([f.snapshots[1].as_str(), f.snapshots[2].as_str()]),
        "{entries:?}"
    );
    for (_, path) in &entries {
        assert!(path.starts_with("/b"), "unexpected affected entry {path}");
    }
}

#[test]
fn clean_repository_checks_clean_with_and_without_data() {
    let f = Fixture::new();
    let plain = f.assert_clean(&[]);
    assert_eq!(plain["stats"]["snapshots"], 3);
    assert_eq!(plain["stats"]["packs_read"], 0);
    let data = f.assert_clean(&["--read-data"]);
    assert_eq!(data["stats"]["packs_read"], 6);
    let stored: u64 = files_below(&f.env.repo.join("packs"))
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(data["stats"]["bytes_read"], stored);
}

#[test]
fn read_data_subsets_cover_every_pack_once() {
    let f = Fixture::new();
    let mut total = 0;
    for n in 1..=3 {
        let spec = format!("{n}/3");
        let report = f.assert_clean(&["--read-data-subset", &spec]);
        total += report["stats"]["packs_read"].as_u64().unwrap();
    }
    assert_eq!(total, 6);
    let all = f.assert_clean(&["--read-data-subset", "100%"]);
    assert_eq!(all["stats"]["packs_read"], 6);
    let some = f.assert_clean(&["--read-data-subset", "1K"]);
    assert_eq!(
        some["stats"]["packs_read"], 1,
        "one pack already exceeds 1 KiB"
    );
    // A subset that cannot be is a usage error (2), not a check that could not run (18).
    let out = f.env.run(&["check", "--read-data-subset", "4/3"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// `check` has one exit code for "could not run", whatever stopped it, distinct from 17.
#[test]
fn a_check_that_cannot_run_exits_18() {
    let f = Fixture::new();
    let wrong = f
        .env
        .cmd(&["check"])
        .env("CAIRN_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(18), "{}", stderr(&wrong));
    assert!(
        stderr(&wrong).contains("could not run"),
        "{}",
        stderr(&wrong)
    );
    // Without a config, the key files say which repository it is; without both, nothing does.
    std::fs::remove_file(f.env.repo.join("config")).unwrap();
    std::fs::remove_dir_all(f.env.repo.join("keys")).unwrap();
    let gone = f.env.run(&["check"]);
    assert_eq!(gone.status.code(), Some(18), "{}", stderr(&gone));
}

#[test]
fn missing_pack_is_reported_and_healed_by_repair_index_and_the_next_backup() {
    let mut f = Fixture::new();
    let pack = f.data_pack(1);
    std::fs::remove_file(&pack).unwrap();
    let (code, report) = f.check(&[]);
    assert_eq!(code, 17, "{report:#}");
    assert!(has_problem(
        &report,
        "pack_missing",
        "pack",
        &file_name(&pack)
    ));
    assert_only_b_affected(&report, &f);
    // The text report names snapshot, file and pack.
    let text = f.env.run(&["check"]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        stdout.contains(&format!("snapshot {} file ", &f.snapshots[2][..8]))
            && stdout.contains("/b/big.bin cannot be restored")
            && stdout.contains(&file_name(&pack)[..8]),
        "{stdout}"
    );
    f.assert_restores(2, "a");
    f.assert_restores(2, "c");
    // Regression: reading a file whose pack is gone failed with a bare storage error and
    // exit code 1 instead of "damaged" (17) and the advice that goes with it.
    let big = f.src.join("b/big.bin");
    let dump = f.env.run(&["dump", &f.snapshots[2], big.to_str().unwrap()]);
    assert_eq!(dump.status.code(), Some(17), "{}", stderr(&dump));
    assert!(
        stderr(&dump).contains("check --read-data"),
        "{}",
        stderr(&dump)
    );

    // Regression: `repair index` exited 0 although the pack it dropped took data with it.
    let repaired = f.env.run(&["repair", "index"]);
    assert_eq!(repaired.status.code(), Some(17), "{}", stderr(&repaired));
    let (code, report) = f.check(&[]);
    assert_eq!(code, 17);
    assert!(
        kinds(&report).iter().all(|k| k == "blob_missing"),
        "{report:#}"
    );
    assert_only_b_affected(&report, &f);

    // The next backup of the same data stores the lost blobs again, which heals every
    // snapshot that referenced them.
    f.backup();
    f.assert_clean(&["--read-data"]);
    f.assert_all_restore();
}

/// Regression (helper-44): `repair index` exited 17 for a lost pack whose blobs a backup
/// had since stored again, as if data were still lost (`check` calls it a warning).
#[test]
fn repair_index_after_a_backup_healed_a_lost_pack_loses_nothing() {
    let mut f = Fixture::new();
    let pack = f.data_pack(1);
    std::fs::remove_file(&pack).unwrap();
    f.backup();
    let out = f.env.run(&["--json", "repair", "index"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["packs_dropped"],
        serde_json::json!([file_name(&pack)])
    );
    assert_eq!(report["blobs_lost_with_dropped"], 0);
    f.assert_clean(&["--read-data"]);
}

/// Regression: after a pack was lost, the next backup trusted the index and stored nothing
/// again, so the lost data stayed lost until `repair index` ran.
#[test]
fn the_next_backup_after_a_pack_was_lost_stores_its_blobs_again_without_repair() {
    let mut f = Fixture::new();
    let pack = f.data_pack(1);
    std::fs::remove_file(&pack).unwrap();
    let summary = f.env.backup_json(&[&f.src]);
    assert_eq!(summary["lost_packs"], serde_json::json!([file_name(&pack)]));
    assert!(
        summary["summary"]["bytes_added_raw"].as_u64().unwrap() >= 3 << 20,
        "b/big.bin is stored again: {summary:#}"
    );
    f.snapshots
        .push(summary["snapshot_id"].as_str().unwrap().to_string());
    // Nothing any snapshot needs is lost any more: the missing pack is only a warning.
    let report = f.assert_clean(&["--read-data"]);
    assert!(has_warning(&report, "pack_replaced"), "{report:#}");
    assert!(report["affected"].as_array().unwrap().is_empty());
    f.assert_all_restore();
    // A machine with no local index reads the new copy as well.
    std::fs::remove_dir_all(&f.env.cache).unwrap();
    f.assert_restores(1, "b");
    // prune drops the missing pack from the index.
    f.env.ok(&["prune"]);
    let report = f.assert_clean(&["--read-data"]);
    assert!(!has_warning(&report, "pack_replaced"), "{report:#}");
    f.assert_all_restore();
}

/// A blob that `check --read-data` found damaged is stored again by the next backup of the
/// same data; restores then read the good copy.
#[test]
fn the_next_backup_after_check_found_a_damaged_blob_stores_it_again() {
    let mut f = Fixture::new();
    let pack = f.data_pack(1);
    flip_bit(&pack, 100);
    let (code, _) = f.check(&["--read-data"]);
    assert_eq!(code, 17);
    let summary = f.env.backup_json(&[&f.src]);
    assert!(
        summary["summary"]["data_blobs_added"].as_u64().unwrap() >= 1,
        "the damaged blob is stored again: {summary:#}"
    );
    f.snapshots
        .push(summary["snapshot_id"].as_str().unwrap().to_string());
    f.assert_all_restore();
    let report = f.assert_clean(&["--read-data"]);
    assert!(has_warning(&report, "damaged_copy"), "{report:#}");
    assert!(report["affected"].as_array().unwrap().is_empty());
    // Regression: repair snapshots took a healed blob for lost and cut the files using it.
    let repair: Value =
        serde_json::from_str(&f.env.ok(&["--json", "repair", "snapshots", "--dry-run"])).unwrap();
    assert_eq!(repair["unchanged"], 4, "{repair:#}");
    // prune keeps the intact copy and repacks the damaged one away.
    let pruned: Value = serde_json::from_str(&f.env.ok(&["--json", "prune"])).unwrap();
    assert!(
        pruned["packs_repacked"].as_u64().unwrap() >= 1,
        "{pruned:#}"
    );
    let report = f.assert_clean(&["--read-data"]);
    assert!(!has_warning(&report, "damaged_copy"), "{report:#}");
    assert!(!has_warning(&report, "pack_content_differs"), "{report:#}");
    f.assert_all_restore();
}

/// Regression: prune took a pack cut short for sound, kept it for the blobs it claimed and
/// deleted the copies the next backup had stored again.
#[test]
fn after_a_pack_was_cut_short_the_next_backup_heals_and_prune_keeps_the_new_copies() {
    let mut f = Fixture::new();
    let pack = f.data_pack(1);
    let len = std::fs::metadata(&pack).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&pack).unwrap();
    file.set_len(len / 2).unwrap();
    let summary = f.env.backup_json(&[&f.src]);
    assert_eq!(summary["lost_packs"], serde_json::json!([file_name(&pack)]));
    f.snapshots
        .push(summary["snapshot_id"].as_str().unwrap().to_string());
    let report = f.assert_clean(&["--read-data"]);
    assert!(has_warning(&report, "pack_replaced"), "{report:#}");
    f.env.ok(&["prune"]);
    let report = f.assert_clean(&["--read-data"]);
    assert!(!has_warning(&report, "pack_replaced"), "{report:#}");
    f.assert_all_restore();
}

/// A removal record that cannot be read is damage `check` reports; the next prune deletes
/// it, and the snapshots it named stay (visible, as before that forget).
#[test]
fn an_unreadable_removal_record_is_reported_and_cleared_by_prune() {
    let f = Fixture::new();
    let removals = f.env.repo.join("removals");
    std::fs::create_dir_all(&removals).unwrap();
    std::fs::write(removals.join("ab".repeat(32)), b"not a removal record").unwrap();
    let (code, report) = f.check(&[]);
    assert_eq!(code, 17, "{report:#}");
    assert!(kinds(&report).contains(&"removal_record_damaged".to_string()));
    assert_eq!(f.env.snapshots().len(), 3);
    f.env.ok(&["prune"]);
    assert!(files_below(&removals).is_empty());
    f.assert_clean(&[]);
    f.assert_all_restore();
}

#[test]
fn truncated_pack_is_salvaged_by_repair_index() {
    let f = Fixture::new();
    let pack = f.data_pack(1);
    let len = std::fs::metadata(&pack).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&pack).unwrap();
    file.set_len(len / 2).unwrap();
    let (code, report) = f.check(&[]);
    assert_eq!(code, 17);
    assert!(has_problem(
        &report,
        "pack_size_differs",
        "pack",
        &file_name(&pack)
    ));
    assert_only_b_affected(&report, &f);
    f.assert_restores(2, "a");

    let repaired = f.env.run(&["repair", "index"]);
    assert_eq!(repaired.status.code(), Some(17), "blobs were lost");
    let out = String::from_utf8_lossy(&repaired.stdout);
    assert!(out.contains("copied into a new pack"), "{out}");
    assert!(!pack.exists(), "the salvaged pack is deleted");
    let (code, report) = f.check(&["--read-data"]);
    assert_eq!(code, 17, "the lost half is still lost");
    assert!(
        kinds(&report).iter().all(|k| k == "blob_missing"),
        "{report:#}"
    );
    assert_only_b_affected(&report, &f);

    f.env.ok(&["repair", "snapshots", "--forget"]);
    f.assert_clean(&["--read-data"]);
    // The repaired snapshots hold everything but the damaged file.
    let latest = f.env.snapshots().pop().unwrap();
    assert!(
        latest["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "repaired")
    );
    let target = f.env.path("after-repair");
    f.env.restore("latest", &target);
    // big.bin fills most of the pack, so part of it lay in the lost half; which small files
    // did depends on the order the parallel backup packed them in. Whatever is there is exact.
    let restored_b = restored(&target, &f.src.join("b"));
    assert!(!restored_b.join("big.bin").exists());
    for i in 0..4 {
        let name = format!("small{i}.txt");
        if let Ok(bytes) = std::fs::read(restored_b.join(&name)) {
            assert_eq!(bytes, std::fs::read(f.src.join("b").join(&name)).unwrap());
        }
    }
    for dir in ["a", "c"] {
        assert_eq!(
            describe(&restored(&target, &f.src.join(dir))),
            describe(&f.src.join(dir))
        );
    }
}

#[test]
fn flipped_bit_in_a_data_blob_needs_read_data_and_is_repaired_by_repair_snapshots() {
    let f = Fixture::new();
    let pack = f.data_pack(1);
    flip_bit(&pack, 100);
    f.assert_clean(&[]); // structure alone cannot see it
    let (code, report) = f.check(&["--read-data"]);
    assert_eq!(code, 17);
    assert!(has_problem(
        &report,
        "pack_content_differs",
        "pack",
        &file_name(&pack)
    ));
    assert!(has_problem(
        &report,
        "blob_damaged",
        "pack",
        &file_name(&pack)
    ));
    assert_only_b_affected(&report, &f);
    f.assert_restores(2, "a");
    f.assert_restores(2, "c");

    let out = f.env.ok(&["repair", "snapshots", "--truncate", "--forget"]);
    assert!(out.contains("truncated"), "{out}");
    let report = f.assert_clean(&["--read-data"]);
    assert!(has_warning(&report, "unused_blob_damaged"), "{report:#}");
    let snapshots = f.env.snapshots();
    assert_eq!(snapshots.len(), 3);
    // The repairs record what they repair and why; the originals are gone (--forget).
    let repaired: Vec<&Value> = snapshots
        .iter()
        .filter(|s| !s["original"].is_null())
        .collect();
    assert_eq!(repaired.len(), 2, "{snapshots:#?}");
    for s in &repaired {
        assert!(
            [&f.snapshots[1], &f.snapshots[2]]
                .contains(&&s["original"].as_str().unwrap().to_string()),
            "{s:#}"
        );
        let note = s["repair_note"].as_str().unwrap();
        assert!(note.contains("1 truncated"), "{note}");
    }
    // The one truncated file keeps its readable start: a shorter prefix of the original;
    // every other file of b/ is whole.
    let target = f.env.path("truncated");
    let spec = format!(
        "{}:{}",
        repaired[0]["id"].as_str().unwrap(),
        f.src.join("b").display()
    );
    f.env
        .ok(&["restore", &spec, "--target", target.to_str().unwrap()]);
    let mut cut = 0;
    for name in [
        "small0.txt",
        "small1.txt",
        "small2.txt",
        "small3.txt",
        "big.bin",
    ] {
        let back = std::fs::read(target.join(name)).unwrap();
        let whole = std::fs::read(f.src.join("b").join(name)).unwrap();
        if back != whole {
            assert!(
                back.len() < whole.len() && whole.starts_with(&back),
                "{name}"
            );
            cut += 1;
        }
    }
    assert_eq!(cut, 1);
}

/// A config with one bit flipped in its repository id made every password wrong, and so the
/// whole repository unreadable (every file binds the id). The key files now record the id:
/// the repository opens with it, `check` reports the config, `repair config` writes it again.
#[test]
fn a_damaged_config_is_recovered_from_the_key_files() {
    let f = Fixture::new();
    let config = f.env.repo.join("config");
    let intact = std::fs::read(&config).unwrap();
    flip_bit(&config, 5);
    let out = f.env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(
        said.contains("checksum does not match") && said.contains("cairn repair config"),
        "{said}"
    );
    let (code, report) = f.check(&[]);
    assert_eq!(code, 17, "{report:#}");
    assert_eq!(kinds(&report), ["config_damaged"]);
    let wrong = f
        .env
        .cmd(&["snapshots"])
        .env("CAIRN_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(12), "{}", stderr(&wrong));
    assert!(
        stderr(&wrong).contains("config may be damaged"),
        "{}",
        stderr(&wrong)
    );
    let damaged = std::fs::read(&config).unwrap();
    f.env.ok(&["repair", "config", "--dry-run"]);
    assert_eq!(std::fs::read(&config).unwrap(), damaged, "a dry run wrote");
    f.env.ok(&["repair", "config"]);
    assert_eq!(std::fs::read(&config).unwrap(), intact);
    let out = f.env.run(&["snapshots"]);
    assert!(!stderr(&out).contains("damaged"), "{}", stderr(&out));
    f.assert_clean(&["--read-data"]);
    f.assert_all_restore();
    // A flipped bit in the footer's version made it claim a newer format ("upgrade cairn").
    flip_bit(&config, intact.len() - 12);
    let out = f.env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    f.env.ok(&["repair", "config"]);
    assert_eq!(std::fs::read(&config).unwrap(), intact);
    // A config from before the checksum: its id not the one every key file records.
    let field_at = intact.len() - 16 - 34;
    let mut old = [&intact[..field_at], &intact[intact.len() - 16..]].concat();
    old[5] ^= 0x10;
    std::fs::write(&config, &old).unwrap();
    let out = f.env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(said.contains("not the one the key files record"), "{said}");
    f.env.ok(&["repair", "config"]);
    assert_eq!(std::fs::read(&config).unwrap(), intact);
}

/// A lost config: the key files say which repository this is, and `init` does not put a new
/// repository in its place.
#[test]
fn a_lost_config_is_recovered_from_the_key_files() {
    let f = Fixture::new();
    let config = f.env.repo.join("config");
    let intact = std::fs::read(&config).unwrap();
    std::fs::remove_file(&config).unwrap();
    let out = f.env.run(&["init"]);
    assert_eq!(out.status.code(), Some(16), "{}", stderr(&out));
    assert!(stderr(&out).contains("repair config"), "{}", stderr(&out));
    let (code, report) = f.check(&[]);
    assert_eq!(code, 17, "{report:#}");
    assert_eq!(kinds(&report), ["config_damaged"]);
    f.env.ok(&["repair", "config"]);
    // The creation time too: the repository's first key was made with it.
    assert_eq!(std::fs::read(&config).unwrap(), intact);
    f.assert_clean(&[]);
    f.assert_all_restore();
}

/// Key files that record different repository ids do not pick one for a damaged config
/// (helper-51: the first listed won, and hostile storage can choose which is first).
#[test]
fn key_files_that_disagree_do_not_stand_in_for_a_damaged_config() {
    let f = Fixture::new();
    let other = Env::new();
    other.init();
    for key in std::fs::read_dir(other.repo.join("keys")).unwrap() {
        let key = key.unwrap().path();
        std::fs::copy(&key, f.env.repo.join("keys").join(key.file_name().unwrap())).unwrap();
    }
    // Intact, the config is trusted whatever else the key files say.
    f.env.ok(&["snapshots"]);
    flip_bit(&f.env.repo.join("config"), 5);
    let out = f.env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(17), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("2 different repository ids"),
        "{}",
        stderr(&out)
    );
}

/// Regression: damage `check --read-data` found was known only to the machine that ran it;
/// a backup from another machine kept deduplicating against the damaged blob, so its data
/// was never stored again. `repair index` now salvages the pack: the damaged blob leaves the
/// index everywhere, and the next backup from anywhere heals every snapshot.
#[test]
fn damage_found_by_read_data_is_healed_by_a_backup_from_another_machine_after_repair_index() {
    let mut f = Fixture::new();
    let pack = f.damage_a_blob_found_by_read_data();
    let out = f.env.run(&["repair", "index"]);
    assert_eq!(out.status.code(), Some(17), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("check --read-data found 1 damaged blob(s)"),
        "{said}"
    );
    assert!(
        said.contains(", 1 lost; the damaged pack was deleted"),
        "{said}"
    );
    assert!(!pack.exists());
    f.become_another_machine();
    f.backup_heals();
}

/// Regression (helper-44): `repair index` salvaged a pack by authenticating its blobs only,
/// so a blob that was wrong when written (it authenticates, but its content does not match
/// its id) was copied into a new pack and taken as stored; the damage record went with the
/// old pack, and backups deduplicated against the bad copy for good.
#[test]
fn repair_index_does_not_salvage_a_blob_whose_content_does_not_match_its_id() {
    let f = Fixture::new();
    let repo = f.open_repo();
    let id = repo.keys().blob_id(b"what the writer meant to store");
    write_pack(&repo, BlobType::Data, &[(id, b"what it stored")], true);
    let out = f.env.run(&["check", "--read-data"]);
    assert!(stderr(&out).contains("does not match"), "{}", stderr(&out));
    let out = f.env.run(&["repair", "index"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(", 1 lost;"), "{said}\n{}", stderr(&out));
    let out = f.env.run(&["check", "--read-data"]);
    assert!(
        !stderr(&out).contains("does not match"),
        "copied again: {}",
        stderr(&out)
    );
}

/// Regression: a pack salvaged for damaged blobs was deleted last, after the old segments;
/// interrupted between the two, it was left in no segment, with a readable header, and the
/// next `repair index` (on a machine that had not run the check) indexed it again, damaged
/// blob and all.
#[test]
fn an_interrupted_repair_index_leaves_no_damaged_pack_to_be_indexed_again() {
    let mut f = Fixture::new();
    let pack = f.damage_a_blob_found_by_read_data();
    run_until(&f, "repair-index-segment-written", &["repair", "index"]);
    assert!(
        !pack.exists(),
        "the damaged pack outlived the new segments' first write"
    );
    f.become_another_machine();
    // 17 if an old segment still listing the pack is left (the one deleted first is any).
    let out = f.env.run(&["repair", "index"]);
    assert!(
        matches!(out.status.code(), Some(0 | 17)),
        "{}",
        stderr(&out)
    );
    f.backup_heals();
}

/// Regression (helper-44): with every index segment gone, a pack whose header cannot be
/// read was left alone and `repair index` ended with exit 0 ("the index was all that was
/// wrong"), though the blobs in it, needed by snapshots, were no longer indexed anywhere.
#[test]
fn a_pack_no_header_or_index_describes_is_possible_loss() {
    let f = Fixture::new();
    let pack = f.data_pack(1);
    let len = std::fs::metadata(&pack).unwrap().len() as usize;
    flip_bit(&pack, len - 20 - 10);
    for s in files_below(&f.env.repo.join("index")) {
        std::fs::remove_file(s).unwrap();
    }
    let out = f.env.run(&["repair", "index"]);
    assert_eq!(out.status.code(), Some(17), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("left alone"), "{said}");
    assert!(pack.exists(), "a pack no one can describe is not deleted");
}

#[test]
fn flipped_bit_in_a_pack_header_is_salvaged_by_repair_index() {
    let f = Fixture::new();
    let pack = f.data_pack(1);
    let len = std::fs::metadata(&pack).unwrap().len() as usize;
    flip_bit(&pack, len - 20 - 10);
    let (code, report) = f.check(&[]);
    assert_eq!(code, 17);
    assert!(has_problem(
        &report,
        "pack_header_damaged",
        "pack",
        &file_name(&pack)
    ));
    assert!(
        report["affected"].as_array().unwrap().is_empty(),
        "the index still locates every blob"
    );
    f.assert_all_restore();

    let out = f.env.ok(&["repair", "index"]);
    assert!(out.contains(", 0 lost"), "{out}");
    f.assert_clean(&["--read-data"]);
    f.assert_all_restore();
}

/// Regression (helper-44): one flipped bit in the version field of a pack's footer read as a
/// pack written by a newer cairn: check and `repair index` stopped for the whole repository
/// with exit 14. A pack whose bytes do not match its name is damaged, whatever it claims.
#[test]
fn a_flipped_bit_in_a_pack_footer_version_is_damage_not_a_newer_format() {
    let f = Fixture::new();
    let pack = f.data_pack(1);
    let len = std::fs::metadata(&pack).unwrap().len() as usize;
    // The footer is kind (4) | version (4, LE) | magic (8): this is the version's top byte.
    flip_bit(&pack, len - 9);
    for extra in [&[][..], &["--read-data"][..]] {
        let (code, report) = f.check(extra);
        assert_eq!(code, 17, "{extra:?}: {report}");
        assert!(
            has_problem(&report, "pack_header_damaged", "pack", &file_name(&pack)),
            "{extra:?}: {report}"
        );
    }
    let out = f.env.ok(&["repair", "index"]);
    assert!(out.contains(", 0 lost"), "{out}");
    f.assert_clean(&["--read-data"]);
    f.assert_all_restore();

    // A pack whose bytes do match its name is one a newer cairn wrote: `repair index` still
    // stops with exit 14, and leaves it alone.
    let pack = f.data_pack(0);
    let mut bytes = std::fs::read(&pack).unwrap();
    let len = bytes.len();
    bytes[len - 12] = 2;
    let name = blake3::hash(&bytes).to_hex().to_string();
    std::fs::remove_file(&pack).unwrap();
    let newer = f.env.repo.join("packs").join(&name[..2]).join(&name);
    std::fs::create_dir_all(newer.parent().unwrap()).unwrap();
    std::fs::write(&newer, bytes).unwrap();
    let out = f.env.run(&["repair", "index"]);
    assert_eq!(out.status.code(), Some(14), "{}", stderr(&out));
    assert!(newer.exists());
}

#[test]
fn flipped_bit_in_an_index_segment_is_repaired_by_repair_index() {
    let f = Fixture::new();
    let segment = f.segment(1);
    flip_bit(&segment, 40);
    let (code, report) = f.check(&[]);
    assert_eq!(code, 17);
    assert!(has_problem(
        &report,
        "index_segment_damaged",
        "segment",
        &file_name(&segment)
    ));
    // Snapshot 2's own listings were indexed by that segment: it is lost as a whole; snapshot
    // 3 loses b/, whose listing it shares with snapshot 2.
    let entries = affected(&report, &f);
    assert!(
        entries.contains(&(f.snapshots[1].clone(), "/".into())),
        "{entries:?}"
    );
    assert!(
        entries.contains(&(f.snapshots[2].clone(), "/b".into())),
        "{entries:?}"
    );
    assert!(entries.iter().all(|(s, _)| *s != f.snapshots[0]));
    f.assert_restores(0, "a");
    f.assert_restores(2, "a");

    f.env.ok(&["repair", "index"]);
    f.assert_clean(&["--read-data"]);
    f.assert_all_restore();
}

/// Regression: a pack header that could not be read for another reason than damage (here:
/// permission denied; on object storage, a timeout) counted as damaged. With every index
/// segment gone, the pack was left out of the rebuilt index, for the next prune to delete
/// with all its blobs. Now the repair stops and changes nothing.
#[test]
fn repair_index_stops_at_a_pack_it_cannot_read_and_deletes_nothing() {
    if !running_as_root() {
        return;
    }
    let f = Fixture::new();
    for segment in files_below(&f.env.repo.join("index")) {
        std::fs::remove_file(segment).unwrap();
    }
    let pack = f.data_pack(0);
    let files = || files_below(f.env.dir.path());
    f.env.give_to_nobody();
    std::fs::set_permissions(&pack, std::fs::Permissions::from_mode(0o000)).unwrap();
    let before = files();
    let out = f.env.run_as_nobody(&["repair", "index"]);
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("ermission denied"),
        "{}",
        stderr(&out)
    );
    std::fs::set_permissions(&pack, std::fs::Permissions::from_mode(0o644)).unwrap();
    let after: Vec<PathBuf> = files()
        .into_iter()
        .filter(|p| !p.starts_with(&f.env.cache) && !p.starts_with(f.env.repo.join("locks")))
        .collect();
    let before: Vec<PathBuf> = before
        .into_iter()
        .filter(|p| !p.starts_with(&f.env.cache) && !p.starts_with(f.env.repo.join("locks")))
        .collect();
    assert_eq!(before, after, "the repository is as it was");
    f.env.ok(&["repair", "index"]);
    f.assert_clean(&["--read-data"]);
    f.assert_all_restore();
}

#[test]
fn missing_index_segments_are_rebuilt_from_pack_headers() {
    let f = Fixture::new();
    std::fs::remove_file(f.segment(1)).unwrap();
    let (code, report) = f.check(&[]);
    assert_eq!(code, 17);
    assert!(
        kinds(&report).iter().all(|k| k == "blob_missing"),
        "{report:#}"
    );
    assert!(has_warning(&report, "pack_not_indexed"));
    // Backup 2's segment listed its trees and b/: snapshot 1 is untouched and restores.
    let snaps: HashSet<String> = affected(&report, &f).into_iter().map(|(s, _)| s).collect();
    assert!(snaps.contains(&f.snapshots[1]), "{report:#}");
    assert!(!snaps.contains(&f.snapshots[0]), "{report:#}");
    f.assert_restores(0, "a");
    f.env.ok(&["repair", "index"]);
    f.assert_clean(&[]);

    for s in files_below(&f.env.repo.join("index")) {
        std::fs::remove_file(s).unwrap();
    }
    let (code, report) = f.check(&[]);
    assert_eq!(code, 17);
    assert!(
        kinds(&report).iter().all(|k| k == "blob_missing"),
        "{report:#}"
    );
    // Nothing is indexed: every snapshot's root listing is lost.
    let roots: HashSet<(String, String)> = affected(&report, &f).into_iter().collect();
    for s in &f.snapshots {
        assert!(roots.contains(&(s.clone(), "/".to_string())), "{report:#}");
    }
    let dry = f.env.ok(&["repair", "index", "--dry-run"]);
    assert!(dry.contains("would be added"), "{dry}");
    assert!(
        files_below(&f.env.repo.join("index")).is_empty(),
        "a dry run writes nothing"
    );
    f.env.ok(&["repair", "index"]);
    f.assert_clean(&["--read-data"]);
    f.assert_all_restore();
    let again = f.env.ok(&["repair", "index"]);
    assert!(again.contains("nothing to do"), "{again}");
}

#[test]
fn flipped_bit_in_a_snapshot_affects_only_that_snapshot() {
    let f = Fixture::new();
    let snapshot = f.added_in(1, "snapshots").pop().unwrap();
    flip_bit(&snapshot, 30);
    let (code, report) = f.check(&[]);
    assert_eq!(code, 17);
    assert!(has_problem(
        &report,
        "snapshot_damaged",
        "snapshot",
        &file_name(&snapshot)
    ));
    assert_eq!(report["stats"]["snapshots"], 2);
    // A machine whose cache never saw the snapshot lists the others and says why.
    let fresh = f.env.path("fresh-cache");
    let listed = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["--json", "snapshots", "--repo"])
        .arg(&f.env.repo)
        .arg("--cache-dir")
        .arg(&fresh)
        .env("CAIRN_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(stderr(&listed).contains("left out"), "{}", stderr(&listed));
    let ids: Vec<Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(ids.len(), 2);
    f.assert_restores(2, "b");
    f.assert_restores(0, "a");
}

#[test]
fn flipped_bit_in_a_tree_is_reported_as_folders_and_repaired() {
    let f = Fixture::new();
    let pack = f.tree_pack(1);
    flip_bit(&pack, 100);
    let (code, report) = f.check(&[]);
    assert_eq!(code, 17);
    assert!(
        kinds(&report).contains(&"tree_damaged".to_string()),
        "{report:#}"
    );
    let entries = affected(&report, &f);
    assert!(!entries.is_empty());
    assert!(
        entries.iter().all(|(s, _)| *s != f.snapshots[0]),
        "{entries:?}"
    );
    f.assert_restores(0, "a");
    f.assert_restores(2, "a");

    f.env.ok(&["repair", "snapshots", "--forget"]);
    f.assert_clean(&["--read-data"]);
}

/// Regression: a restore whose starting folder could not be listed (its tree damaged)
/// restored nothing and called that "partial" (exit 3) instead of damage (17).
#[test]
fn a_restore_that_cannot_list_where_it_starts_is_damage() {
    let f = Fixture::new();
    let pack = f.tree_pack(0);
    let mut bytes = std::fs::read(&pack).unwrap();
    // Every tree in the pack, the root among them, fails authentication.
    for offset in (0..bytes.len() - 100).step_by(64) {
        bytes[offset] ^= 0x10;
    }
    std::fs::write(&pack, bytes).unwrap();
    let target = f.env.path("restored-nothing");
    let out = f.env.run(&[
        "restore",
        &f.snapshots[0],
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(17), "{}", stderr(&out));
    assert!(stderr(&out).contains("damaged"), "{}", stderr(&out));
}

#[test]
fn damaged_local_index_is_rebuilt_not_reported() {
    let f = Fixture::new();
    let db = f.env.cache.join(
        std::fs::read_dir(&f.env.cache)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .file_name(),
    );
    let db = db.join("index.sqlite");
    std::fs::remove_file(&db).unwrap();
    let report = f.assert_clean(&[]);
    assert_eq!(report["stats"]["snapshots"], 3);

    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 3 * 4096);
    bytes[2 * 4096..3 * 4096].copy_from_slice(&noise(9, 4096));
    std::fs::write(&db, bytes).unwrap();
    let out = f.env.run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rebuilt the local index"),
        "{}",
        stderr(&out)
    );
}

/// Regression (helper-49): a blob opened in place where it was read is wiped when it fails
/// authentication (aws-lc clears what it could not open). A damaged index entry that takes in
/// the next blob's bytes then destroyed that blob too, and its file failed with it.
#[test]
fn a_bad_index_entry_spanning_the_next_blob_fails_only_its_own_file() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a"), &noise(21, 5000));
    write(&src.join("b"), &noise(22, 5000));
    env.init();
    env.backup_json(&[&src]);
    let folder = std::fs::read_dir(&env.cache)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let db = rusqlite::Connection::open(folder.path().join("index.sqlite")).unwrap();
    let data_blobs = "SELECT pack, offset, stored_len FROM blobs WHERE type = 0 AND raw_len = 5000
                      ORDER BY pack, offset";
    let rows: Vec<(i64, i64, i64)> = db
        .prepare(data_blobs)
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let [(pack, first, _), (same_pack, second, second_len)] = rows[..] else {
        panic!("two data blobs expected: {rows:?}");
    };
    assert_eq!(pack, same_pack);
    let spanning = second + second_len - first;
    db.execute(
        "UPDATE blobs SET stored_len = ?1 WHERE pack = ?2 AND offset = ?3",
        rusqlite::params![spanning, pack, first],
    )
    .unwrap();
    drop(db);
    let target = env.path("out");
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let back = restored(&target, &src);
    let intact = ["a", "b"]
        .iter()
        .filter(|name| std::fs::read(back.join(name)).ok() == std::fs::read(src.join(name)).ok())
        .count();
    assert_eq!(intact, 1, "{}", stderr(&out));
}

/// Writes one pack holding `data` as a data blob; with `indexed`, also a segment listing it.
fn store_pack(repo: &Repository, data: &[u8], indexed: bool) -> (PackId, BlobId) {
    let id = repo.keys().blob_id(data);
    (write_pack(repo, BlobType::Data, &[(id, data)], indexed), id)
}

/// Writes a pack of `blobs` (listed in a segment of its own if `indexed`).
fn write_pack(
    repo: &Repository,
    blob_type: BlobType,
    blobs: &[(BlobId, &[u8])],
    indexed: bool,
) -> PackId {
    let mut writer = PackWriter::new(blob_type);
    for (id, data) in blobs {
        writer.add(seal_blob(repo.keys(), repo.id(), blob_type, *id, data, 3));
    }
    let pack = writer.finish(repo.keys(), repo.id());
    repo.storage()
        .write(&object_path(FileKind::Pack, &pack.id.0), pack.bytes.clone())
        .unwrap();
    if indexed {
        let segment = IndexSegment {
            packs: vec![PackRecord {
                id: pack.id,
                size: pack.bytes.len() as u64,
                entries: pack.entries,
            }],
        };
        repo.save_file(FileKind::Index, &segment.encode()).unwrap();
    }
    pack.id
}

#[test]
fn pack_in_no_index_segment_is_a_warning_until_repair_index_adds_it() {
    let f = Fixture::new();
    let repo = f.open_repo();
    let (pack, _) = store_pack(&repo, b"a blob no snapshot needs", false);
    let report = f.assert_clean(&[]);
    assert!(
        report["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["kind"] == "pack_not_indexed" && w["pack"] == pack.to_hex()),
        "{report:#}"
    );
    f.env.ok(&["repair", "index"]);
    let report = f.assert_clean(&["--read-data"]);
    assert!(!has_warning(&report, "pack_not_indexed"));
    assert!(has_warning(&report, "pack_unused"), "{report:#}");
}

/// An index segment whose record of a pack differs from the pack's own header.
#[test]
fn a_pack_header_that_disagrees_with_the_index_is_reported_and_repaired() {
    let f = Fixture::new();
    let repo = f.open_repo();
    let (pack, _) = store_pack(&repo, b"an extra blob", false);
    let path = f.env.repo.join(object_path(FileKind::Pack, &pack.0));
    let size = std::fs::metadata(path).unwrap().len();
    let mut entries = cairn::pack::read_header(&repo, &pack, size).unwrap();
    entries[0].raw_len += 1;
    let segment = IndexSegment {
        packs: vec![PackRecord {
            id: pack,
            size,
            entries,
        }],
    };
    repo.save_file(FileKind::Index, &segment.encode()).unwrap();
    let (code, report) = f.check(&[]);
    assert_eq!(code, 17, "{report:#}");
    assert!(has_problem(
        &report,
        "pack_header_disagrees",
        "pack",
        &pack.to_hex()
    ));
    f.assert_all_restore();
    f.env.ok(&["repair", "index"]);
    f.assert_clean(&["--read-data"]);
}

/// Data only a forgotten snapshot needed is reported as unused (prune's business), not as
/// damage.
#[test]
fn unused_blobs_and_packs_are_warnings() {
    let f = Fixture::new();
    f.env.ok(&["forget", &f.snapshots[2][..8]]);
    let report = f.assert_clean(&[]);
    let unused = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["kind"] == "blobs_unused")
        .unwrap_or_else(|| panic!("no unused blobs reported: {report:#}"));
    assert!(unused["count"].as_u64().unwrap() >= 1);
    assert!(has_warning(&report, "pack_unused"), "{report:#}");
}

#[test]
fn blob_stored_in_two_packs_is_a_warning_naming_both() {
    let f = Fixture::new();
    let repo = f.open_repo();
    let content = std::fs::read(f.src.join("a/small0.txt")).unwrap();
    let (pack, blob) = store_pack(&repo, &content, true);
    let report = f.assert_clean(&["--read-data"]);
    let dup = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["kind"] == "blob_duplicated")
        .unwrap_or_else(|| panic!("no duplicate reported: {report:#}"));
    assert_eq!(dup["blob"], blob.to_hex());
    let packs = dup["packs"].as_array().unwrap();
    assert_eq!(packs.len(), 2);
    assert!(packs.iter().any(|p| *p == pack.to_hex()));
    assert!(packs.iter().any(|p| *p == file_name(&f.data_pack(0))));
    f.assert_all_restore();
}

/// Runs cairn with a failpoint armed and asserts that it died there.
fn run_until(f: &Fixture, failpoint: &str, args: &[&str]) {
    let out = f
        .env
        .cmd(args)
        .env("CAIRN_FAILPOINT", failpoint)
        .output()
        .unwrap();
    assert!(
        out.status.code().is_none(),
        "cairn {args:?} should have died at {failpoint}: {:?}\n{}",
        out.status,
        stderr(&out)
    );
}

#[test]
fn interrupted_repair_index_loses_nothing_and_runs_again() {
    for failpoint in [
        "repair-index-salvaged",
        "repair-index-segment-written",
        "repair-index-segment-deleted:2",
        "repair-index-pack-deleted",
    ] {
        let f = Fixture::new();
        let pack = f.data_pack(1);
        let len = std::fs::metadata(&pack).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&pack).unwrap();
        file.set_len(len / 2).unwrap();
        run_until(&f, failpoint, &["repair", "index"]);

        let (code, report) = f.check(&[]);
        assert_eq!(code, 17, "after dying at {failpoint}: {report:#}");
        assert_only_b_affected(&report, &f);
        f.assert_restores(2, "a");
        f.assert_restores(2, "c");

        // 17 if this run still finds the lost blobs to drop, 0 if the first run got that far.
        let again = f.env.run(&["repair", "index"]);
        let code = again.status.code();
        assert!(matches!(code, Some(0 | 17)), "{code:?}: {}", stderr(&again));
        let (code, report) = f.check(&["--read-data"]);
        assert_eq!(code, 17);
        assert!(
            kinds(&report).iter().all(|k| k == "blob_missing"),
            "after dying at {failpoint} and repairing again: {report:#}"
        );
        assert_only_b_affected(&report, &f);
    }
}

#[test]
fn interrupted_repair_snapshots_runs_again_without_duplicates() {
    let f = Fixture::new();
    flip_bit(&f.data_pack(1), 100);
    let (code, _) = f.check(&["--read-data"]);
    assert_eq!(code, 17);
    run_until(
        &f,
        "repair-snapshots-written",
        &["repair", "snapshots", "--forget"],
    );
    assert_eq!(
        f.env.snapshots().len(),
        4,
        "one repaired, its original kept"
    );
    let out = f.env.ok(&["repair", "snapshots", "--forget"]);
    assert!(out.contains("was repaired before"), "{out}");
    let snapshots = f.env.snapshots();
    assert_eq!(snapshots.len(), 3, "{out}");
    assert_eq!(
        snapshots
            .iter()
            .filter(|s| s["tags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == "repaired"))
            .count(),
        2
    );
    f.assert_clean(&["--read-data"]);
    f.assert_restores(0, "a");
}

/// Regression: a blob stored in two packs whose first copy turned out damaged failed its
/// files, although the index listed an intact copy; restore and dump now read the other copy.
#[test]
fn restore_reads_another_copy_of_a_damaged_blob() {
    let f = Fixture::new();
    let repo = f.open_repo();
    let content = std::fs::read(f.src.join("a/small0.txt")).unwrap();
    let (copy, blob) = store_pack(&repo, &content, true);
    let inventory = cairn::index::Inventory::load(&repo).unwrap();
    let (original, entry) = inventory
        .locations(&blob)
        .find(|(p, _)| p.id != copy)
        .unwrap();
    let original = f.env.repo.join(object_path(FileKind::Pack, &original.id.0));
    flip_bit(&original, entry.offset as usize + 40);
    let target = f.env.path("out");
    let out = f.env.run(&[
        "restore",
        &format!("{}:{}", f.snapshots[0], f.src.join("a").display()),
        "--target",
        target.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(target.join("small0.txt")).unwrap(), content);
    assert!(
        stderr(&out).contains("read the copy in pack"),
        "{}",
        stderr(&out)
    );
    let path = f.src.join("a/small0.txt");
    let dump = f
        .env
        .run(&["dump", &f.snapshots[0], path.to_str().unwrap()]);
    assert!(dump.status.success(), "{}", stderr(&dump));
    assert_eq!(dump.stdout, content);
}

/// Trees too: with every tree of the first backup damaged where it was first stored but
/// intact in a second pack, every snapshot still lists and restores.
#[test]
fn trees_are_read_from_another_copy_when_the_first_is_damaged() {
    let f = Fixture::new();
    let repo = f.open_repo();
    let original = f.tree_pack(0);
    let inventory = cairn::index::Inventory::load(&repo).unwrap();
    let pack = inventory
        .pack(&PackId::from_hex(&file_name(&original)).unwrap())
        .unwrap();
    let bytes = std::fs::read(&original).unwrap();
    let trees: Vec<(BlobId, Vec<u8>)> = pack
        .entries
        .iter()
        .map(|e| {
            let sealed = &bytes[e.offset as usize..e.end() as usize];
            let plain = cairn::pack::open_blob(repo.keys(), repo.id(), &pack.id, e, sealed);
            (e.id, plain.unwrap())
        })
        .collect();
    let trees: Vec<(BlobId, &[u8])> = trees.iter().map(|(id, t)| (*id, &t[..])).collect();
    write_pack(&repo, BlobType::Tree, &trees, true);
    for e in &pack.entries {
        flip_bit(&original, e.offset as usize + 40);
    }
    let ls = f.env.run(&["ls", &f.snapshots[0], "--recursive"]);
    assert!(ls.status.success(), "{}", stderr(&ls));
    assert!(
        stderr(&ls).contains("read the copy in pack"),
        "{}",
        stderr(&ls)
    );
    assert!(String::from_utf8_lossy(&ls.stdout).contains("small0.txt"));
    f.assert_all_restore();
}

/// Regression: a dump of a folder that met a damaged blob still ended its tar archive
/// properly, so `cairn dump … | tar x` (without pipefail) unpacked a partial tree as if it
/// were whole; and the damage was reported as an error writing standard output (exit 1).
#[test]
fn a_dump_that_meets_damage_fails_and_leaves_its_archive_cut_short() {
    let f = Fixture::new();
    flip_bit(&f.data_pack(0), 100);
    let folder = f
        .env
        .run(&["dump", &f.snapshots[0], f.src.to_str().unwrap()]);
    assert_eq!(folder.status.code(), Some(17), "{}", stderr(&folder));
    assert!(stderr(&folder).contains("damaged"), "{}", stderr(&folder));
    let mut tar = std::process::Command::new("tar")
        .arg("-t")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    let _ = tar.stdin.take().unwrap().write_all(&folder.stdout);
    assert!(!tar.wait().unwrap().success(), "the archive reads as whole");
    let files: Vec<i32> = (0..4)
        .map(|i| format!("a/small{i}.txt"))
        .chain(["a/big.bin".to_string()])
        .map(|p| {
            let path = f.src.join(p);
            let out = f
                .env
                .run(&["dump", &f.snapshots[0], path.to_str().unwrap()]);
            out.status.code().unwrap()
        })
        .collect();
    assert!(files.contains(&17), "{files:?}");
    assert!(files.iter().all(|&c| c == 0 || c == 17), "{files:?}");
}

/// Regression (helper-44): a backup that committed while `check` ran, after the index
/// segments were loaded and before the snapshots were listed, was reported as damage (exit
/// 17): its new snapshot's blobs were in no segment the check had loaded. Its packs were
/// then warned of as in no index segment (run `repair index`), and the local index it had
/// added to was rebuilt as stale.
#[test]
fn a_backup_committing_while_check_runs_is_not_damage() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("a"), b"first");
    env.backup_json(&[&src]);
    let more = env.path("more");
    write(&more.join("b"), &noise(5, 100_000));
    let backup = format!(
        "check-index-loaded:{} --repo {} --cache-dir {} backup {}",
        env!("CARGO_BIN_EXE_cairn"),
        env.repo.display(),
        env.cache.display(),
        more.display()
    );
    let out = env.run_hooked(&["check"], &backup);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Nor is what it wrote "in no index segment", or the local index it added to stale.
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    assert_eq!(env.snapshots().len(), 2, "the backup ran");
    env.ok(&["check"]);
}

/// An affected file whose name is not UTF-8 is named exactly in the JSON report (`path_hex`)
/// and escaped in the text one, by `check` and by `repair snapshots` (regression: both gave
/// its name lossily, and the text reports wrote control characters from the snapshot to the
/// terminal as they were).
#[test]
fn an_affected_name_that_is_not_utf8_is_given_exactly() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let name = b"caf\xe9\x1b[31m.bin";
    write(&src.join(os(name)), &noise(3, 300_000));
    env.backup_json(&[&src]);
    let mut packs = files_below(&env.repo.join("packs"));
    packs.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    std::fs::remove_file(packs.pop().unwrap()).unwrap(); // the data pack: the largest
    let out = env.run(&["--json", "check"]);
    assert_eq!(out.status.code(), Some(17), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let affected = report["affected"].as_array().unwrap();
    assert_eq!(affected.len(), 1, "{report:#}");
    let path = [src.as_os_str().as_bytes(), b"/", name].concat();
    let hex = hex(&path);
    assert_eq!(affected[0]["path_hex"], hex.as_str(), "{report:#}");
    assert_eq!(affected[0]["node"], "file");
    let text = env.run(&["check"]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.contains("caf\\xe9"), "{stdout}");
    assert!(!stdout.contains('\x1b'), "{stdout}");
    // So are the changes `repair snapshots` would make.
    let out = env.ok(&["--json", "repair", "snapshots", "--dry-run"]);
    let report: Value = serde_json::from_str(&out).unwrap();
    let change = &report["snapshots"][0]["changes"][0];
    assert_eq!(change["path_hex"], hex.as_str(), "{report:#}");
    assert_eq!(change["action"], "removed");
    let text = env.ok(&["repair", "snapshots", "--dry-run"]);
    assert!(
        text.contains("removed ") && text.contains("caf\\xe9"),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "{text}");
}
