//! What went wrong during a restore, gathered from the walk, the workers and the finisher.
//!
//! Guarantees: each failure is kept with the path it concerns, for the caller to report.
//! Once writing a file's data, or making an entry, fails for want of room (a full disk or
//! quota) or because the target turned read-only, the restore stops: that failure is kept apart, the failures that
//! follow from stopping are not kept, and every part of the restore can ask whether to go
//! on. Every path that failed, the stopping one included, is known (`paths`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::blobs::lock;
use crate::error::Error;

/// A failure and the path it concerns.
pub type Failure = (PathBuf, Error);

#[derive(Default)]
pub struct Failures {
    list: Mutex<Vec<Failure>>,
    stopped: AtomicBool,
    /// The failure that stopped the restore.
    stop: Mutex<Option<Failure>>,
    /// Files not put in place because something appeared at their path meanwhile, which
    /// `--overwrite never` keeps: no failure, but nothing to link to either.
    kept_instead: Mutex<HashSet<PathBuf>>,
}

impl Failures {
    pub fn record(&self, path: &Path, err: Error) {
        if !self.stopped() {
            lock(&self.list).push((path.to_path_buf(), err));
        }
    }

    /// Records a failure found in what was done before any stop (a file read back that
    /// differs): kept even after a stop.
    pub fn record_found(&self, path: &Path, err: Error) {
        lock(&self.list).push((path.to_path_buf(), err));
    }

    /// Records a failure to write a file's data or to make an entry; one for want of room
    /// stops the restore. (Metadata failures go to `record`: one owner over quota is no
    /// reason to stop.)
    pub fn record_write(&self, path: &Path, err: Error) {
        if !stops_the_restore(&err) {
            return self.record(path, err);
        }
        let mut stop = lock(&self.stop);
        if stop.is_none() {
            *stop = Some((path.to_path_buf(), err));
            self.stopped.store(true, Ordering::Release);
        }
    }

    /// True once the target can take no more: nothing more is to be written.
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// The paths that failed so far (those that failed because the restore had stopped
    /// excepted: after a stop, nothing more is to be done).
    pub fn paths(&self) -> HashSet<PathBuf> {
        let stop = lock(&self.stop);
        let list = lock(&self.list);
        list.iter()
            .chain(stop.iter())
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Notes a file left unwritten because what appeared at its path is kept.
    pub fn keep_instead(&self, path: &Path) {
        lock(&self.kept_instead).insert(path.to_path_buf());
    }

    /// Whether a file was left unwritten for what appeared at its path (`keep_instead`).
    pub fn was_kept_instead(&self, path: &Path) -> bool {
        lock(&self.kept_instead).contains(path)
    }

    /// The failures kept, and the one that stopped the restore, if it stopped.
    pub fn into_inner(self) -> (Vec<Failure>, Option<Failure>) {
        let list = self.list.into_inner().unwrap_or_else(|e| e.into_inner());
        let stop = self.stop.into_inner().unwrap_or_else(|e| e.into_inner());
        (list, stop)
    }
}

/// A write into the target that no other file will get past either.
fn stops_the_restore(err: &Error) -> bool {
    match err {
        Error::Io { source, .. } => matches!(
            source.raw_os_error(),
            Some(libc::ENOSPC | libc::EDQUOT | libc::EROFS)
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_target_stops_the_restore_and_only_its_first_failure_is_kept() {
        let failures = Failures::default();
        let io = |code| Error::io("/t/x", std::io::Error::from_raw_os_error(code));
        failures.record_write(Path::new("/t/a"), io(libc::EACCES));
        // A metadata call over quota is no reason to stop.
        failures.record(Path::new("/t/owner"), io(libc::EDQUOT));
        assert!(!failures.stopped());
        failures.record_write(Path::new("/t/b"), io(libc::ENOSPC));
        assert!(failures.stopped());
        assert!(failures.paths().contains(Path::new("/t/b")));
        failures.record_write(Path::new("/t/c"), io(libc::ENOSPC));
        failures.record(Path::new("/t/d"), Error::Invalid("stopped".into()));
        let (list, stop) = failures.into_inner();
        let paths: Vec<&Path> = list.iter().map(|(p, _)| p.as_path()).collect();
        assert_eq!(paths, [Path::new("/t/a"), Path::new("/t/owner")]);
        assert_eq!(stop.unwrap().0, Path::new("/t/b"));
    }
}
