//! What went wrong during a restore, gathered from the walk, the workers and the finisher.
//!
//! Guarantees: each failure is kept with the path it concerns, for the caller to report.
//! Once writing into the target fails for want of room (a full disk or quota) or because the
//! target turned read-only, the restore stops: that first failure is kept, the failures that
//! follow from stopping are not, and every part of the restore can ask whether to go on.

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
}

impl Failures {
    pub fn record(&self, path: &Path, err: Error) {
        if self.stopped() {
            return;
        }
        if stops_the_restore(&err) {
            let mut stop = lock(&self.stop);
            if stop.is_none() {
                *stop = Some((path.to_path_buf(), err));
                self.stopped.store(true, Ordering::Release);
            }
            return;
        }
        lock(&self.list).push((path.to_path_buf(), err));
    }

    /// True once the target can take no more: nothing more is to be written.
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// The paths that failed so far.
    pub fn paths(&self) -> std::collections::HashSet<PathBuf> {
        lock(&self.list).iter().map(|(p, _)| p.clone()).collect()
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
        failures.record(Path::new("/t/a"), io(libc::EACCES));
        assert!(!failures.stopped());
        failures.record(Path::new("/t/b"), io(libc::ENOSPC));
        assert!(failures.stopped());
        failures.record(Path::new("/t/c"), io(libc::ENOSPC));
        failures.record(Path::new("/t/d"), Error::Invalid("stopped".into()));
        let (list, stop) = failures.into_inner();
        let paths: Vec<&Path> = list.iter().map(|(p, _)| p.as_path()).collect();
        assert_eq!(paths, [Path::new("/t/a")]);
        assert_eq!(stop.unwrap().0, Path::new("/t/b"));
    }
}
