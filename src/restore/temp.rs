//! Temporary names: every entry a restore writes is built under a name beside its final one
//! and renamed into place, so a partly written entry never carries the final name. The names
//! are a fixed prefix, 16 hex digits (`TempNames`) and `.tmp`, so what an interrupted restore
//! left can be told apart and removed.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use super::target::Target;

const PREFIX: &str = ".cairn-restore-";
const SUFFIX: &str = ".tmp";

/// Suffixes for temporary names, for one restore: the keyed hash of a count, so no random
/// draw (and, for planned files, no stored name) per entry, and no name seen tells another.
pub struct TempNames {
    key: [u8; 32],
    count: AtomicU64,
}

impl TempNames {
    pub fn new() -> Self {
        TempNames {
            key: crate::crypto::random_bytes::<32>(),
            count: AtomicU64::new(0),
        }
    }

    pub fn next(&self) -> u64 {
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        let hash = blake3::keyed_hash(&self.key, &n.to_le_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        u64::from_le_bytes(first)
    }
}

/// The name to build an entry under, beside its final one, before renaming it into place;
/// `suffix` comes from `TempNames::next`.
pub fn file_name(suffix: u64) -> OsString {
    format!("{PREFIX}{suffix:016x}{SUFFIX}").into()
}

/// What an interrupted restore left under temporary names in a folder restored into again:
/// only names `file_name` makes (a dot, the prefix, 16 hex digits, `.tmp`), and only entries
/// unchanged since `started` (the ctime, since a temporary file's mtime may already be the
/// snapshot's). Two restores into one folder at once are not supported.
pub fn stale(target: &Target, dir: &Path, started: SystemTime) -> Vec<PathBuf> {
    let Ok(names) = target.list(dir) else {
        return Vec::new();
    };
    names
        .into_iter()
        .filter(|name| {
            let digits = name
                .as_bytes()
                .strip_prefix(PREFIX.as_bytes())
                .and_then(|n| n.strip_suffix(SUFFIX.as_bytes()));
            digits.is_some_and(|d| d.len() == 16 && d.iter().all(u8::is_ascii_hexdigit))
        })
        .map(|name| dir.join(name))
        .filter(|path| {
            target
                .at(path)
                .is_ok_and(|at| at.stat().is_ok_and(|m| !m.is_dir() && m.ctime() < started))
        })
        .collect()
}

/// Removes what `stale` finds (best effort: what cannot be removed stays, harmless).
pub fn remove_stale(target: &Target, dir: &Path, started: SystemTime) {
    for path in stale(target, dir, started) {
        if let Ok(at) = target.at(&path) {
            let _ = at.remove_file();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: in a folder whose path is too long for one call, what an interrupted
    /// restore left was looked for through the listing's own path, whose descriptor was
    /// closed by then, and stayed.
    #[test]
    fn stale_temporary_files_go_from_folders_with_long_paths() {
        let root = tempfile::tempdir().unwrap();
        let target = Target::open(root.path()).unwrap();
        let mut dir = root.path().to_path_buf();
        for _ in 0..24 {
            dir.push("d".repeat(200));
            target.at(&dir).unwrap().create_dir().unwrap();
        }
        assert!(dir.as_os_str().len() > 4096);
        let (stale, keep) = (dir.join(file_name(7)), dir.join("kept"));
        for path in [&stale, &keep] {
            target.at(path).unwrap().create_file(0o600).unwrap();
        }
        let later = SystemTime::now() + std::time::Duration::from_secs(1);
        remove_stale(&target, &dir, later);
        assert!(target.at(&stale).unwrap().stat().is_err(), "left behind");
        assert!(target.at(&keep).unwrap().stat().is_ok());
    }
}
