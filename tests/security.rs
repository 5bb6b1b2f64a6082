//! Encryption at rest and integrity: no plaintext in the repository, damage is detected and
//! named, and a hostile repository cannot make restore write outside its target.

mod common;

use common::*;

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
