//! Directory listings read ahead of a walk, on threads of their own.
//!
//! Listing a folder and reading its entries' metadata mostly waits for the disk when the
//! cache is cold, and a walk that does it on its workers waits one folder at a time on each.
//! `ListingAhead` lists the folders below the roots ahead of the walk, depth first in name
//! order as the walk goes, several at once, from the moment it is started (a backup starts
//! it before deriving its key). The walk takes each listing once (`take`).
//!
//! Guarantees: a listing taken is what `read_dir_sorted` returned for that folder, at most
//! `MAX_HELD_ENTRIES` entries earlier than the walk would have read it, so memory is bounded
//! whatever the tree; a folder not listed (yet) is listed by the caller of `take` as before;
//! a listing that failed is not handed out (the caller lists again and sees the error
//! itself); symlinks are never followed. The threads stop when the `ListingAhead` is dropped.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::{DirEntry, read_dir_sorted};

/// Threads listing at once: enough to keep a disk or a network file system busy.
const THREADS: usize = 8;
/// Entries held in listings not yet taken, at most (a few hundred bytes each).
const MAX_HELD_ENTRIES: usize = 8 * 1024;
/// Folders waiting to be listed, at most; those beyond are left to the walk.
const MAX_QUEUED: usize = 16 * 1024;

/// Whether a subfolder is worth listing: the walk will descend into it. Given the entry and
/// the device of the root it is under.
pub type Descends = dyn Fn(&DirEntry, u64) -> bool + Send + Sync;

pub struct ListingAhead {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// A listing was finished.
    listed: Condvar,
    /// There is work (a folder queued, or room freed) or a stop.
    work: Condvar,
    descends: Box<Descends>,
    /// `MAX_HELD_ENTRIES`, but for tests.
    max_held: usize,
}

#[derive(Default)]
struct State {
    /// Folders to list, the next on top, with their root's device.
    queue: Vec<(PathBuf, u64)>,
    slots: HashMap<PathBuf, Slot>,
    held_entries: usize,
    /// Callers of `take` waiting for a listing under way.
    waiting: usize,
    stopped: bool,
}

enum Slot {
    Queued,
    Listing,
    Listed(Vec<DirEntry>),
}

impl ListingAhead {
    /// Starts listing below `roots` (each must be a folder the walk descends into, and is
    /// checked with `descends` like the folders below it).
    pub fn start(roots: &[PathBuf], descends: Box<Descends>) -> Self {
        Self::holding(roots, descends, MAX_HELD_ENTRIES)
    }

    fn holding(roots: &[PathBuf], descends: Box<Descends>, max_held: usize) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            listed: Condvar::new(),
            work: Condvar::new(),
            descends,
            max_held,
        });
        // Queued before returning, so the walk cannot list a root before it is queued (and
        // then have it listed again).
        let mut state = shared.lock();
        for root in roots.iter().rev() {
            let entry = DirEntry {
                name: root.file_name().map(super::name_bytes).unwrap_or_default(),
                path: root.clone(),
                metadata: super::long_path::symlink_metadata(root),
            };
            if let Ok(meta) = &entry.metadata {
                let device = std::os::unix::fs::MetadataExt::dev(meta);
                if (shared.descends)(&entry, device) {
                    state.queue(entry.path, device);
                }
            }
        }
        drop(state);
        for _ in 0..THREADS {
            let worker = Arc::clone(&shared);
            std::thread::spawn(move || worker.run());
        }
        ListingAhead { shared }
    }

    /// The listing of `dir`, a folder on the device `device` of its root: the one read ahead
    /// if there is one (waiting for it if it is being read), else read now, and its
    /// subfolders are then listed ahead.
    pub fn take(&self, dir: &Path, device: u64) -> io::Result<Vec<DirEntry>> {
        let mut state = self.shared.lock();
        loop {
            match state.slots.get(dir) {
                Some(Slot::Listing) => {
                    state.waiting += 1;
                    state = self
                        .shared
                        .listed
                        .wait(state)
                        .unwrap_or_else(|e| e.into_inner());
                    state.waiting -= 1;
                }
                Some(Slot::Listed(_)) => {
                    let Some(Slot::Listed(entries)) = state.slots.remove(dir) else {
                        unreachable!("just matched");
                    };
                    let was_full = state.held_entries >= self.shared.max_held;
                    state.held_entries -= entries.len();
                    drop(state);
                    if was_full {
                        self.shared.work.notify_one();
                    }
                    return Ok(entries);
                }
                // The walk caught up, or the folder was not queued (the queue was full) or
                // its listing failed: it is listed now (any error seen here), and what is
                // below it is listed ahead again.
                Some(Slot::Queued) | None => {
                    state.slots.insert(dir.to_path_buf(), Slot::Listing);
                    drop(state);
                    let listed = read_dir_sorted(dir);
                    self.shared.listed_here(dir, &listed, device);
                    return listed;
                }
            }
        }
    }
}

impl Drop for ListingAhead {
    fn drop(&mut self) {
        self.shared.lock().stopped = true;
        self.shared.work.notify_all();
    }
}

impl State {
    fn queue(&mut self, dir: PathBuf, device: u64) {
        if self.queue.len() < MAX_QUEUED && !self.slots.contains_key(&dir) {
            self.slots.insert(dir.clone(), Slot::Queued);
            self.queue.push((dir, device));
        }
    }

    /// Queues the subfolders of one folder, last to first, so that the walk's next folder is
    /// listed next.
    fn queue_all(&mut self, subdirs: &mut Vec<PathBuf>, device: u64) {
        while let Some(sub) = subdirs.pop() {
            self.queue(sub, device);
        }
    }

    /// The next folder still wanted, once there is room for its listing.
    fn next(&mut self, max_held: usize) -> Option<(PathBuf, u64)> {
        if self.held_entries >= max_held {
            return None;
        }
        while let Some((dir, device)) = self.queue.pop() {
            if let Some(slot @ Slot::Queued) = self.slots.get_mut(&dir) {
                *slot = Slot::Listing;
                return Some((dir, device));
            }
        }
        None
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self) {
        let mut state = self.lock();
        loop {
            if state.stopped {
                return;
            }
            let Some((dir, device)) = state.next(self.max_held) else {
                state = self.work.wait(state).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            drop(state);
            let listed = read_dir_sorted(&dir);
            let mut subdirs = self.subdirs(&listed, device);
            state = self.lock();
            match listed {
                Ok(entries) => {
                    state.held_entries += entries.len();
                    state.slots.insert(dir, Slot::Listed(entries));
                }
                // Failed: the walk lists it again and reports what it finds.
                Err(_) => {
                    state.slots.remove(&dir);
                }
            }
            self.queued(state, &mut subdirs, device);
            state = self.lock();
        }
    }

    /// Queues a folder's subfolders, then wakes a worker for each and whoever waits for a
    /// listing (wakes no more threads than there is work for: they are many).
    fn queued(&self, mut state: MutexGuard<'_, State>, subdirs: &mut Vec<PathBuf>, device: u64) {
        let jobs = subdirs.len().min(THREADS);
        state.queue_all(subdirs, device);
        let waiting = state.waiting > 0;
        drop(state);
        if waiting {
            self.listed.notify_all();
        }
        for _ in 0..jobs {
            self.work.notify_one();
        }
    }

    /// After the walk listed a folder that was queued itself: what is below is queued.
    fn listed_here(&self, dir: &Path, listed: &io::Result<Vec<DirEntry>>, device: u64) {
        let mut subdirs = self.subdirs(listed, device);
        let mut state = self.lock();
        state.slots.remove(dir);
        self.queued(state, &mut subdirs, device);
    }

    fn subdirs(&self, listed: &io::Result<Vec<DirEntry>>, device: u64) -> Vec<PathBuf> {
        let Ok(entries) = listed else {
            return Vec::new();
        };
        entries
            .iter()
            .filter(|e| (self.descends)(e, device))
            .map(|e| e.path.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn tree(root: &Path, dirs: usize, files: usize) {
        for d in 0..dirs {
            let dir = root.join(format!("d{d}")).join("inner");
            std::fs::create_dir_all(&dir).unwrap();
            for f in 0..files {
                std::fs::write(dir.join(format!("f{f}")), [f as u8]).unwrap();
            }
        }
    }

    fn all_dirs(e: &DirEntry, _device: u64) -> bool {
        e.metadata.as_ref().is_ok_and(|m| m.is_dir())
    }

    /// Walks `dir` through `ahead`, depth first, checking each listing against a fresh one.
    fn walk(ahead: &ListingAhead, dir: &Path) -> usize {
        let taken = ahead.take(dir, 0).unwrap();
        let fresh = read_dir_sorted(dir).unwrap();
        let names = |l: &[DirEntry]| l.iter().map(|e| e.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&taken), names(&fresh), "{}", dir.display());
        for (t, f) in taken.iter().zip(&fresh) {
            let (t, f) = (t.metadata.as_ref().unwrap(), f.metadata.as_ref().unwrap());
            assert_eq!(
                (t.ino(), t.size(), t.mtime()),
                (f.ino(), f.size(), f.mtime())
            );
        }
        let below: usize = taken
            .iter()
            .filter(|e| e.metadata.as_ref().is_ok_and(|m| m.is_dir()))
            .map(|e| walk(ahead, &e.path))
            .sum();
        taken.len() + below
    }

    #[test]
    fn listings_taken_are_the_folders_listings() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path(), 40, 30);
        let ahead = ListingAhead::start(&[dir.path().to_path_buf()], Box::new(all_dirs));
        assert_eq!(walk(&ahead, dir.path()), 40 * 2 + 40 * 30);
        let state = ahead.shared.lock();
        assert_eq!(state.held_entries, 0, "everything listed was taken");
    }

    #[test]
    fn listings_held_stay_under_the_cap_and_the_rest_is_listed_by_the_walk() {
        let dir = tempfile::tempdir().unwrap();
        // More entries than may be held: the lister must stop and wait for the walk.
        let held = 512;
        tree(dir.path(), 40, 32);
        let ahead = ListingAhead::holding(&[dir.path().to_path_buf()], Box::new(all_dirs), held);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let state = ahead.shared.lock();
            let idle = !state.slots.values().any(|s| matches!(s, Slot::Listing));
            if idle && state.held_entries >= held || std::time::Instant::now() > deadline {
                break;
            }
            drop(state);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        {
            let state = ahead.shared.lock();
            assert!(state.held_entries >= held, "listed ahead up to the cap");
            // Listings already under way when the cap was reached may end past it.
            assert!(
                state.held_entries <= held + THREADS * (32 + 1),
                "no listing started once the cap was reached: {}",
                state.held_entries
            );
        }
        assert_eq!(walk(&ahead, dir.path()), 40 * 2 + 40 * 32);
    }

    #[test]
    fn folders_the_walk_skips_are_not_listed_ahead() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path(), 3, 2);
        let skip = |e: &DirEntry, _: u64| all_dirs(e, 0) && e.name != b"d1";
        let ahead = ListingAhead::start(&[dir.path().to_path_buf()], Box::new(skip));
        let root = ahead.take(dir.path(), 0).unwrap();
        assert_eq!(root.len(), 3);
        for d in ["d0", "d2"] {
            ahead.take(&dir.path().join(d), 0).unwrap();
        }
        let state = ahead.shared.lock();
        assert!(
            !state
                .slots
                .keys()
                .any(|p| p.starts_with(dir.path().join("d1"))),
            "a skipped folder and what is below it are never listed"
        );
    }

    #[test]
    fn a_folder_that_vanished_is_listed_again_by_the_walk() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path(), 2, 1);
        let ahead = ListingAhead::start(&[dir.path().to_path_buf()], Box::new(all_dirs));
        ahead.take(dir.path(), 0).unwrap();
        std::fs::remove_dir_all(dir.path().join("d0")).unwrap();
        // Listed ahead before it vanished (the walk then sees a folder as it was a moment
        // ago), or listed now, when it is gone: either way no stale error.
        match ahead.take(&dir.path().join("d0"), 0) {
            // (Perhaps while it was being removed.)
            Ok(entries) => assert!(entries.len() <= 1),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::NotFound),
        }
        assert_eq!(ahead.take(&dir.path().join("d1"), 0).unwrap().len(), 1);
    }
}
