//! Encryption at rest and integrity: no plaintext in the repository, damage is detected and
//! named, and a hostile repository cannot make restore write outside its target.

mod common;

use common::*;
use std::process::Output;

#[test]
fn repository_holds_no_plaintext() {
    let env = Env::new();
    let src = env.path("src");
    let marker = b"CAIRN-SECRET-MARKER-7f3a";
    // In incompressible data (stored raw, so only encryption hides it), in compressible data,
    // and in a file name (stored in a tree).
    let mut raw = noise(3, 3 * 1024 * 1024);
    raw[1_000_000..1_000_000 + marker.len()].copy_from_slice(marker);
    write(&src.join("random.bin"), &raw);
    write(&src.join("text.txt"), &marker.repeat(1000));
    write(&src.join(std::str::from_utf8(marker).unwrap()), b"x");
    env.init();
    env.backup_json(&[&src]);
    for file in files_below(&env.repo) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker),
            "{} contains the marker",
            file.display()
        );
    }
}

#[test]
fn flipped_byte_in_a_pack_fails_restore_naming_the_pack() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("victim.bin"), &noise(4, 2 * 1024 * 1024));
    write(&src.join("other/ok.txt"), b"this file is in another blob");
    env.init();
    env.backup_json(&[&src]);
    // The data pack is the larger one; flip a byte early in it (inside the first blob).
    let data_pack = flip_in_largest_pack(&env.repo, 100);
    let pack_name = data_pack.file_name().unwrap().to_str().unwrap().to_string();
    let target = env.path("out");
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&pack_name),
        "error does not name the pack: {err}"
    );
    assert!(
        err.contains("victim.bin"),
        "error does not name the file: {err}"
    );
    assert!(err.contains("fails authentication"), "{err}");
    // The damaged file is not left behind half-written; others are restored.
    let base = restored(&target, &src);
    assert!(!base.join("victim.bin").exists());
    assert_eq!(
        std::fs::read(base.join("other/ok.txt")).unwrap(),
        b"this file is in another blob"
    );
    assert!(
        files_below(&base)
            .iter()
            .all(|p| !p.to_string_lossy().contains(".cairn-restore-"))
    );
}

/// Regression: a temporary file is made by the first blob written to it, so damage found
/// after that must still remove it.
#[test]
fn damage_late_in_a_large_file_leaves_no_temporary_file() {
    let env = Env::new();
    let src = env.path("src");
    let content = noise(5, 24 * 1024 * 1024); // several blobs, two packs
    write(&src.join("big.bin"), &content);
    write(&src.join("small.txt"), b"kept");
    env.init();
    env.backup_json(&[&src]);
    // Blobs are at most 8 MiB, so this byte is in one that follows another blob of big.bin.
    flip_in_largest_pack(&env.repo, 12 * 1024 * 1024);
    let target = env.path("out");
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("big.bin"), "{}", stderr(&out));
    let base = restored(&target, &src);
    assert!(!base.join("big.bin").exists());
    assert_eq!(std::fs::read(base.join("small.txt")).unwrap(), b"kept");
    let left: Vec<_> = files_below(&base);
    assert!(
        left.iter()
            .all(|p| !p.to_string_lossy().contains(".cairn-restore-")),
        "{left:?}"
    );
}

/// Runs `cairn ARGS` with `password` in place of the usual one, and `new` as the new password.
fn with_passwords(env: &Env, password: &str, new: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = env.cmd(args);
    cmd.env("CAIRN_PASSWORD", password)
        .env_remove("CAIRN_NEW_PASSWORD")
        .env_remove("CAIRN_NEW_PASSWORD_FILE");
    if let Some(new) = new {
        cmd.env("CAIRN_NEW_PASSWORD", new);
    }
    cmd.output().expect("run cairn")
}

fn json_of(out: &Output) -> serde_json::Value {
    assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn keys(env: &Env, password: &str) -> Vec<serde_json::Value> {
    let out = with_passwords(env, password, None, &["key", "list", "--json"]);
    json_of(&out).as_array().expect("a list").clone()
}

const FAST_KDF: [&str; 4] = ["--kdf-memory", "8", "--kdf-iterations", "1"];

/// Several passwords, removal, a password change, and one interrupted between its two steps.
#[test]
fn passwords_can_be_added_removed_and_changed() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("a.txt"), &noise(1, 100_000));
    env.backup_json(&[&src]);
    let first_id = keys(&env, PASSWORD)[0]["id"].as_str().unwrap().to_string();

    let add = [
        &[
            "key", "add", "--json", "--host", "laptop", "--user", "alice",
        ][..],
        &FAST_KDF,
    ]
    .concat();
    let added = json_of(&with_passwords(&env, PASSWORD, Some("second"), &add));
    let second_id = added["added"].as_str().unwrap().to_string();
    let listed = keys(&env, "second");
    assert_eq!(listed.len(), 2);
    let current: Vec<_> = listed.iter().filter(|k| k["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], second_id.as_str());
    assert_eq!(current[0]["hostname"], "laptop");
    assert_eq!(current[0]["username"], "alice");
    assert_eq!(current[0]["kdf"]["memory_kib"], 8 * 1024);

    // The new password reads the data.
    let target = env.path("target");
    let out = with_passwords(
        &env,
        "second",
        None,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(describe(&src), describe(&restored(&target, &src)));

    // The key in use is not removed; an unknown id is an error; both change nothing.
    let out = with_passwords(&env, PASSWORD, None, &["key", "remove", &first_id[..6]]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("so it was not removed"),
        "{}",
        stderr(&out)
    );
    let out = with_passwords(&env, PASSWORD, None, &["key", "remove", "ffffffffffff"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no key file matches"),
        "{}",
        stderr(&out)
    );
    assert_eq!(keys(&env, PASSWORD).len(), 2);

    let out = with_passwords(&env, "second", None, &["key", "remove", &first_id[..6]]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = with_passwords(&env, PASSWORD, None, &["snapshots"]);
    assert_eq!(
        out.status.code(),
        Some(12),
        "the removed password must no longer open"
    );

    // A change of password killed after the new key is written: both passwords open.
    let passwd = [&["key", "passwd", "--json"][..], &FAST_KDF].concat();
    let mut interrupted = env.cmd(&passwd);
    interrupted
        .env("CAIRN_PASSWORD", "second")
        .env("CAIRN_NEW_PASSWORD", "third")
        .env("CAIRN_FAILPOINT", "key-replacement-written");
    let out = interrupted.output().unwrap();
    assert_aborted_at(&out, "key-replacement-written");
    assert_eq!(keys(&env, "second").len(), 2);
    assert_eq!(keys(&env, "third").len(), 2);

    // Run to the end, only the newest password opens.
    let changed = json_of(&with_passwords(&env, "second", Some("fourth"), &passwd));
    assert_eq!(changed["removed"], second_id.as_str());
    assert_eq!(
        with_passwords(&env, "second", None, &["snapshots"])
            .status
            .code(),
        Some(12)
    );
    let left = keys(&env, "fourth");
    assert_eq!(
        left.len(),
        2,
        "the interrupted change's key remains: {left:?}"
    );
    assert!(
        left.iter()
            .any(|k| k["id"] == changed["added"] && k["current"] == true)
    );
}

#[test]
fn a_new_password_must_be_given_and_not_empty() {
    let env = Env::new();
    env.init();
    let out = with_passwords(&env, PASSWORD, None, &["key", "add"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no new password given"),
        "{}",
        stderr(&out)
    );
    let out = with_passwords(&env, PASSWORD, Some(""), &["key", "passwd"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("empty"), "{}", stderr(&out));
    let file = env.path("new-password");
    write(&file, b"from a file\n");
    let args = [
        &["key", "add", "--new-password-file", file.to_str().unwrap()][..],
        &FAST_KDF,
    ]
    .concat();
    let out = with_passwords(&env, PASSWORD, None, &args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(keys(&env, "from a file").len(), 2);
}
