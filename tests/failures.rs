//! Bad input gets a clear message and its own exit code, and loses nothing: wrong password,
//! missing or foreign repository, newer format, missing source, unreadable source, damage.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;

use common::*;

fn code(out: &std::process::Output) -> i32 {
    out.status.code().expect("exit code")
}

#[test]
fn wrong_password_is_refused_cleanly() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a"), b"data");
    env.init();
    env.backup_json(&[&src]);
    let before = files_below(&env.repo).len();
    let out = env
        .cmd(&["snapshots"])
        .env("CAIRN_PASSWORD", "not it")
        .output()
        .unwrap();
    assert_eq!(code(&out), 12, "{}", stderr(&out));
    assert!(stderr(&out).contains("wrong password"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the password was taken from CAIRN_PASSWORD"),
        "{}",
        stderr(&out)
    );
    let out = env
        .cmd(&["backup", src.to_str().unwrap()])
        .env("CAIRN_PASSWORD", "not it")
        .output()
        .unwrap();
    assert_eq!(code(&out), 12);
    assert_eq!(
        files_below(&env.repo).len(),
        before,
        "a failed open wrote to the repository"
    );
}

#[test]
fn password_sources_are_tried_in_order() {
    let env = Env::new();
    env.init();
    let file = env.path("pw");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    // The file wins over a wrong CAIRN_PASSWORD.
    let out = env
        .cmd(&["snapshots"])
        .env("CAIRN_PASSWORD", "wrong")
        .env("CAIRN_PASSWORD_FILE", &file)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // The command wins over a wrong CAIRN_PASSWORD.
    let out = env
        .cmd(&["snapshots"])
        .env("CAIRN_PASSWORD", "wrong")
        .env("CAIRN_PASSWORD_COMMAND", format!("echo '{PASSWORD}'"))
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // No password at all and no terminal: a clear error.
    let out = env
        .cmd(&["snapshots"])
        .env_remove("CAIRN_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("no password given"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn missing_repository_has_its_own_code() {
    let env = Env::new();
    let out = env.run(&["snapshots"]);
    assert_eq!(code(&out), 10, "{}", stderr(&out));
    assert!(stderr(&out).contains("no repository"));
}

#[test]
fn foreign_folder_is_not_a_repository() {
    let env = Env::new();
    write(&env.repo.join("holiday.jpg"), b"not a repository");
    let out = env.run(&["snapshots"]);
    assert_eq!(code(&out), 13, "{}", stderr(&out));
    write(&env.repo.join("config"), b"garbage");
    assert_eq!(code(&env.run(&["snapshots"])), 13);
}

#[test]
fn newer_format_is_refused_before_asking_for_a_password() {
    let env = Env::new();
    env.init();
    let config = env.repo.join("config");
    let mut bytes = std::fs::read(&config).unwrap();
    let n = bytes.len();
    bytes[n - 12..n - 8].copy_from_slice(&2u32.to_le_bytes());
    // As a newer cairn would write it: the checksum (the last field) over the new footer.
    let (fields, footer) = (&bytes[..n - 16 - 34], &bytes[n - 16..]);
    let sum = *blake3::Hasher::new()
        .update(fields)
        .update(footer)
        .finalize()
        .as_bytes();
    bytes[n - 16 - 32..n - 16].copy_from_slice(&sum);
    std::fs::write(&config, bytes).unwrap();
    let out = env
        .cmd(&["snapshots"])
        .env_remove("CAIRN_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(code(&out), 14, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("format version 2"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn init_refuses_an_existing_repository() {
    let env = Env::new();
    env.init();
    let config = std::fs::read(env.repo.join("config")).unwrap();
    let out = env.run(&["init"]);
    assert_eq!(code(&out), 16, "{}", stderr(&out));
    assert_eq!(std::fs::read(env.repo.join("config")).unwrap(), config);
}

#[test]
fn missing_source_saves_nothing() {
    let env = Env::new();
    env.init();
    let out = env.run(&["backup", env.path("nope").to_str().unwrap()]);
    assert_eq!(code(&out), 15, "{}", stderr(&out));
    assert!(stderr(&out).contains("nope"));
    assert!(env.snapshots().is_empty());
    // --init does not create a repository for a backup that cannot run.
    let fresh = Env::new();
    let out = fresh.run(&["backup", "--init", fresh.path("nope").to_str().unwrap()]);
    assert_eq!(code(&out), 15);
    assert!(!fresh.repo.exists());
}

/// Regression: exclude patterns and the stream name were checked only once the repository
/// was open, so `backup --init` with a bad pattern created the repository, then exited 2.
#[test]
fn backup_init_refused_for_its_flags_creates_nothing() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a"), b"a");
    for args in [
        &["backup", "--init", "--exclude", "[", src.to_str().unwrap()][..],
        &["backup", "--init", "--stdin", "--stdin-name", "a/b"],
    ] {
        let out = env.run(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(!env.repo.exists(), "{args:?} created the repository");
    }
}

/// Regression: a source path that could not be looked at (a folder above it not searchable)
/// was reported as "does not exist".
#[test]
fn a_source_that_cannot_be_looked_at_is_not_called_missing() {
    if !running_as_root() {
        return;
    }
    let env = Env::new();
    let closed = env.path("closed");
    write(&closed.join("inside.txt"), b"x");
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    env.init();
    std::fs::create_dir_all(&env.cache).unwrap();
    env.give_to_nobody();
    let inside = closed.join("inside.txt");
    let out = env.run_as_nobody(&["backup", inside.to_str().unwrap()]);
    assert_eq!(code(&out), 15, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("cannot look at") && err.contains("ermission denied"),
        "{err}"
    );
    assert!(!err.contains("does not exist"), "{err}");
}

#[test]
fn backup_init_creates_the_repository_on_first_use() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a"), b"hello");
    env.ok(&[
        "backup",
        "--init",
        "--kdf-memory",
        "8",
        src.to_str().unwrap(),
    ]);
    env.ok(&["backup", "--init", src.to_str().unwrap()]);
    assert_eq!(env.snapshots().len(), 2);
}

/// Runs cairn as an unprivileged user when the tests run as root, so that a file with mode 000
/// really is unreadable.
#[test]
fn unreadable_file_is_skipped_and_snapshot_marked_partial() {
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("readable"), b"fine");
    // Not UTF-8: the JSON warning gives its bytes exactly (regression: it gave them lossily).
    let secret = src.join(std::ffi::OsStr::from_bytes(b"secret\xff"));
    write(&secret, b"no access");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let as_user = |args: &[&str]| {
        let mut c = env.cmd(args);
        if nix::unistd::geteuid().is_root() {
            c.uid(65534).gid(65534).env("HOME", env.dir.path());
        }
        c.output().unwrap()
    };
    let out = as_user(&["init", "--kdf-memory", "8"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = as_user(&["backup", "--json", src.to_str().unwrap()]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("secret"), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["partial"], true);
    assert_eq!(json["summary"]["files"], 1);
    let warning = &json["warnings"][0];
    let hex = hex(secret.as_os_str().as_bytes());
    assert_eq!(warning["path_hex"], hex.as_str(), "{warning}");
    assert!(
        warning["message"].as_str().unwrap().contains("denied"),
        "{warning}"
    );
    let out = as_user(&["snapshots", "--json"]);
    let snaps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(snaps[0]["partial"], true);
}

/// A tmpfs mounted for the life of the guard (needs root).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &std::path::Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(status.success(), "mount a tmpfs at {}", at.display());
        SmallDisk(at.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Regression: a full repository disk gave opendal's description of the error ("Unexpected
/// (temporary) at write, context: …"), which said neither what was kept nor what to do.
#[test]
fn a_full_repository_disk_is_said_so_and_keeps_what_was_there() {
    if !running_as_root() {
        return;
    }
    let mut env = Env::new();
    let disk = SmallDisk::mount(&env.path("small-disk"), "3m");
    env.repo = disk.0.join("repo");
    let src = env.path("src");
    write(&src.join("small.txt"), b"kept");
    env.init();
    env.backup_json(&[&src]);
    write(&src.join("big.bin"), &noise(3, 8 << 20));
    let out = env.run(&["backup", src.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("storage is full"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("temporary"), "{}", stderr(&out));
    // The failed write took its partial file away, or the disk would stay full of it.
    assert!(files_below(&env.repo.join("tmp")).is_empty());
    assert_eq!(env.snapshots().len(), 1);
    env.ok(&["check", "--read-data"]);
    std::fs::remove_file(src.join("big.bin")).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
}

/// Regression: a restore onto a full disk went on reading every pack and failing every file
/// left, one error each, and ended as "partial" (exit 3). It now stops at the first file
/// that finds no room, says so (exit 1) and leaves no temporary file; run again with room,
/// it completes.
#[test]
fn a_restore_onto_a_full_disk_stops_and_resumes_once_there_is_room() {
    if !running_as_root() {
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    for i in 0..40 {
        write(
            &src.join(format!("d{}/f{i}.bin", i % 4)),
            &noise(i, 200_000),
        );
    }
    env.init();
    env.backup_json(&[&src]);
    let disk = SmallDisk::mount(&env.path("small-disk"), "2m");
    let out = env.run(&["restore", "latest", "--target", disk.0.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("the restore stopped"), "{err}");
    assert!(err.matches("No space left").count() == 1, "{err}");
    let names: Vec<String> = files_below(&disk.0)
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.contains(".cairn-restore-")),
        "{names:?}"
    );
    let grown = std::process::Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&disk.0)
        .status()
        .unwrap();
    assert!(grown.success());
    env.ok(&["restore", "latest", "--target", disk.0.to_str().unwrap()]);
    assert_eq!(describe(&restored(&disk.0, &src)), describe(&src));
}

/// Regression: output that could not be written (standard output to a full disk) panicked
/// with exit code 101; a first fix exited from the panic hook, which left the lock behind.
#[test]
fn unwritable_output_is_an_error_not_a_panic() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a"), b"a");
    env.init();
    env.backup_json(&[&src]);
    let diff = ["--json", "diff", "latest", "latest"];
    for (args, expected) in [
        (&["ls", "-l", "latest"][..], 1),
        (&diff, 1),
        (&["check"], 18),
    ] {
        let full = std::fs::File::create("/dev/full").unwrap();
        let out = env.cmd(args).stdout(full).output().unwrap();
        assert_eq!(code(&out), expected, "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("cannot write to standard output"),
            "{}",
            stderr(&out)
        );
        // It unwinds, so the command's lock is released on the way out.
        assert!(files_below(&env.repo.join("locks")).is_empty(), "{args:?}");
    }
}

/// Regression: a repository whose only key file was damaged said "wrong password" (exit 12).
#[test]
fn a_damaged_only_key_is_damage_not_a_wrong_password() {
    let env = Env::new();
    env.init();
    let key = files_below(&env.repo.join("keys")).pop().unwrap();
    let mut bytes = std::fs::read(&key).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&key, bytes).unwrap();
    let out = env.run(&["snapshots"]);
    assert_eq!(code(&out), 17, "{}", stderr(&out));
    assert!(stderr(&out).contains("keys/ back"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("wrong password"), "{}", stderr(&out));
}

/// Regression: a dry run whose listing could not be written (standard output on a full disk)
/// panicked in a worker, and the other workers went on reading the whole source before the
/// backup failed. It now stops at the next entry, through the normal error path.
#[test]
fn a_backup_whose_listing_cannot_be_written_stops() {
    let env = Env::new();
    let src = env.path("src");
    for i in 0..40 {
        write(&src.join(format!("d{}/f{i}", i % 4)), &noise(i, 1000));
    }
    env.init();
    let full = std::fs::File::create("/dev/full").unwrap();
    let out = env
        .cmd(&["backup", "--dry-run", src.to_str().unwrap()])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("the backup stopped"), "{err}");
    assert!(err.contains("cannot write to standard output"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(files_below(&env.repo.join("locks")).is_empty());
    // A single file given as the source (no folder walk to look in between), quietly: the
    // failure is still caught before the backup ends.
    let full = std::fs::File::create("/dev/full").unwrap();
    let one = src.join("d0/f0");
    let out = env
        .cmd(&["-q", "backup", "--dry-run", one.to_str().unwrap()])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
}

/// Regression: only file writes stopped a restore on a full target. Out of inodes, with only
/// folders at the top, every folder failed on its own and the restore ended "partial".
#[test]
fn a_restore_that_cannot_make_folders_for_want_of_room_stops() {
    if !running_as_root() {
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    for i in 0..20 {
        write(&src.join(format!("d{i}/f")), b"x");
    }
    env.init();
    env.backup_json(&[&src]);
    let disk = SmallDisk::mount(&env.path("few-inodes"), "8m,nr_inodes=8");
    let out = env.run(&["restore", "latest", "--target", disk.0.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("the restore stopped"), "{err}");
    // Stopped at the first folder it could not make, not after failing each of them.
    assert!(!err.lines().any(|l| l.starts_with("error: ")), "{err}");
}

/// Regression: `--exclude-if-present ""` (an unset variable in a cron line) left every
/// folder out, the sources included, and the backup of nothing ended with exit 0.
#[test]
fn a_marker_that_is_not_a_file_name_is_refused() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("a"), b"a");
    for marker in ["", ".", "..", "/etc/hostname", "sub/CACHEDIR.TAG"] {
        let out = env.run(&[
            "backup",
            "--exclude-if-present",
            marker,
            src.to_str().unwrap(),
        ]);
        assert_eq!(code(&out), 2, "{marker:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("file name"), "{}", stderr(&out));
    }
    assert!(env.snapshots().is_empty());
}

/// Regression (helper-45): `init` created a repository under an empty password (an empty
/// password file, `CAIRN_PASSWORD` set to nothing), which anyone who can read the storage
/// could open.
#[test]
fn init_refuses_an_empty_password() {
    let env = Env::new();
    let empty = env.path("empty-password");
    write(&empty, b"");
    let file = ["init", "--password-file", empty.to_str().unwrap()];
    for out in [
        env.cmd(&file).output().unwrap(),
        env.cmd(&["init"])
            .env("CAIRN_PASSWORD", "")
            .output()
            .unwrap(),
    ] {
        assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("password is empty"),
            "{}",
            stderr(&out)
        );
    }
    assert!(!env.repo.join("config").exists());
}
