//! Temporary names: every entry a restore writes is built under a name beside its final one
//! and renamed into place, so a partly written entry never carries the final name. The names
//! are a fixed prefix, 16 hex digits (`TempNames`) and `.tmp`, so what an interrupted restore
//! left can be told apart and removed.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::walk::long_path;

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

/// The name beside `path` for building an entry before renaming it into place; `suffix`
/// comes from `TempNames::next`.
pub fn name(path: &Path, suffix: u64) -> PathBuf {
    path.with_file_name(format!("{PREFIX}{suffix:016x}{SUFFIX}"))
}

/// Removes what an interrupted restore left under temporary names in a folder restored into
/// again (only names `name` makes: a dot, the prefix, 16 hex digits, `.tmp`; and only
/// entries unchanged since `started`: the ctime, since a temporary file's mtime may already
/// be the snapshot's). Two restores into one folder at once are not supported.
pub fn remove_stale(dir: &Path, started: SystemTime) {
    let Ok(entries) = long_path::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let digits = name
            .as_bytes()
            .strip_prefix(PREFIX.as_bytes())
            .and_then(|n| n.strip_suffix(SUFFIX.as_bytes()));
        let ours = digits.is_some_and(|d| d.len() == 16 && d.iter().all(u8::is_ascii_hexdigit));
        let old = || {
            let changed = |m: std::fs::Metadata| {
                let secs = u64::try_from(m.ctime()).unwrap_or(0);
                let nanos = u32::try_from(m.ctime_nsec()).unwrap_or(0);
                UNIX_EPOCH + Duration::new(secs, nanos)
            };
            entry.metadata().map(changed).is_ok_and(|t| t < started)
        };
        // Joined to `dir`: the listing's own path may name a descriptor closed since.
        if ours && old() {
            let _ = long_path::remove_file(&dir.join(&name));
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
        let mut dir = root.path().to_path_buf();
        for _ in 0..24 {
            dir.push("d".repeat(200));
            long_path::create_dir(&dir).unwrap();
        }
        assert!(dir.as_os_str().len() > 4096);
        let stale = name(&dir.join("f"), 7);
        let options = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .clone();
        long_path::open(&options, &stale).unwrap();
        let keep = dir.join("kept");
        long_path::open(&options, &keep).unwrap();
        remove_stale(&dir, SystemTime::now() + Duration::from_secs(1));
        assert!(long_path::symlink_metadata(&stale).is_err(), "left behind");
        assert!(long_path::symlink_metadata(&keep).is_ok());
    }
}
