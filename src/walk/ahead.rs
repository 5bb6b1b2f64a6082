//! Directory listings read ahead of a walk, on threads of their own.
//!
//! Listing a folder and reading its entries' metadata mostly waits for the disk when the
//! cache is cold, and a walk that does it on its workers waits one folder at a time on each.
//! `ListingAhead` lists the folders below the roots ahead of the walk, depth first in name
//! order as the walk goes, several at once, from the moment it is started (a backup starts
//! it before deriving its key). The walk takes each listing once (`take`).
//!
//! Guarantees: a listing taken is what `read_dir_sorted` returned for that folder at most
//! `MAX_AGE` earlier; memory is bounded whatever the tree (listings not yet taken hold at
//! most twice `MAX_HELD_ENTRIES` entries: a folder of more than its share is left to the
//! walk); a folder not listed (yet), listed too long ago, or whose listing failed is listed by
//! the caller of `take` as before, and sees any error itself; symlinks are never followed.
//! The threads stop when the `ListingAhead` is dropped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{DirEntry, ListingGuard, read_dir_sorted, read_dir_sorted_up_to};

/// Threads listing at once: enough to keep a disk or a network file system busy.
const THREADS: usize = 8;
/// Entries held in listings not yet taken, before no more listings start (a few hundred
/// bytes each). A listing holds at most a `THREADS`th of it.
const MAX_HELD_ENTRIES: usize = 8 * 1024;
/// Folders waiting to be listed, at most; those beyond are left to the walk.
const MAX_QUEUED: usize = 4 * 1024;
/// A listing older than this is not handed out but read again: the walk may have waited
/// long (for a password, a lock) and should see folders as they are when it gets there.
const MAX_AGE: Duration = Duration::from_secs(2);

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
    /// `MAX_HELD_ENTRIES` and `MAX_AGE`, but for tests.
    max_held: usize,
    max_age: Duration,
}

#[derive(Default)]
struct State {
    /// Folders to list, the next at the back, with their root's device.
    queue: VecDeque<(PathBuf, u64)>,
    /// Folders the walk declined while they were being listed: their listing is dropped.
    forgotten: HashSet<PathBuf>,
    slots: HashMap<PathBuf, Slot>,
    held_entries: usize,
    /// Callers of `take` waiting for a listing under way.
    waiting: usize,
    stopped: bool,
}

enum Slot {
    /// With how to list it, as the listing of its parent found it.
    Queued(ListingGuard),
    Listing,
    Listed(Vec<DirEntry>, Instant),
}

impl ListingAhead {
    /// Starts listing below `roots` (each must be a folder the walk descends into, and is
    /// checked with `descends` like the folders below it).
    pub fn start(roots: &[PathBuf], descends: Box<Descends>) -> Self {
        Self::with_limits(roots, descends, MAX_HELD_ENTRIES, MAX_AGE)
    }

    fn with_limits(
        roots: &[PathBuf],
        descends: Box<Descends>,
        max_held: usize,
        max_age: Duration,
    ) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            listed: Condvar::new(),
            work: Condvar::new(),
            descends,
            max_held,
            max_age,
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
                    let guard = ListingGuard::source(meta);
                    state.queue_all(&mut vec![(entry.path, guard)], device);
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
    pub fn take(&self, dir: &Path, device: u64, guard: ListingGuard) -> io::Result<Vec<DirEntry>> {
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
                Some(Slot::Listed(_, at)) if at.elapsed() <= self.shared.max_age => {
                    return Ok(self.shared.release(&mut state, dir));
                }
                // The walk caught up, or the folder was not queued (the queue was full), its
                // listing failed or is too old: it is listed now (any error seen here), and
                // what is below it is listed ahead again.
                Some(Slot::Queued(_) | Slot::Listed(..)) | None => {
                    self.shared.release(&mut state, dir);
                    state.slots.insert(dir.to_path_buf(), Slot::Listing);
                    drop(state);
                    let listed = read_dir_sorted(dir, guard.check);
                    self.shared.listed_here(dir, &listed, device, guard);
                    return listed;
                }
            }
        }
    }

    /// Drops what was listed or queued ahead in and below a folder the walk does not descend
    /// into after all (rare: only when the folder changed meanwhile, say an exclude marker
    /// appeared), so that it does not take up room for good.
    pub fn forget(&self, dir: &Path) {
        let mut state = self.shared.lock();
        let below: Vec<PathBuf> = state
            .slots
            .keys()
            .filter(|p| p.starts_with(dir))
            .cloned()
            .collect();
        for path in below {
            if let Some(Slot::Listing) = state.slots.get(&path) {
                state.forgotten.insert(path);
            } else {
                self.shared.release(&mut state, &path);
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
    /// Queues the subfolders of one folder, last to first, so that the walk's next folder is
    /// listed next. Beyond `MAX_QUEUED`, the folders the walk will reach last are dropped
    /// (it lists them itself).
    fn queue_all(&mut self, subdirs: &mut Vec<(PathBuf, ListingGuard)>, device: u64) {
        if self.queue.len() + subdirs.len() > MAX_QUEUED {
            // Folders the walk has taken meanwhile are not waiting any more.
            let slots = &self.slots;
            self.queue
                .retain(|(d, _)| matches!(slots.get(d), Some(Slot::Queued(_))));
        }
        while let Some((sub, guard)) = subdirs.pop() {
            if !self.slots.contains_key(&sub) {
                self.slots.insert(sub.clone(), Slot::Queued(guard));
                self.queue.push_back((sub, device));
            }
        }
        while self.queue.len() > MAX_QUEUED {
            if let Some((dropped, _)) = self.queue.pop_front()
                && let Some(Slot::Queued(_)) = self.slots.get(&dropped)
            {
                self.slots.remove(&dropped);
            }
        }
    }

    /// The next folder still wanted, once there is room for its listing.
    fn next(&mut self, max_held: usize) -> Option<(PathBuf, u64, ListingGuard)> {
        if self.held_entries >= max_held {
            return None;
        }
        while let Some((dir, device)) = self.queue.pop_back() {
            if let Some(slot @ Slot::Queued(_)) = self.slots.get_mut(&dir) {
                let Slot::Queued(guard) = std::mem::replace(slot, Slot::Listing) else {
                    unreachable!("matched as queued")
                };
                return Some((dir, device, guard));
            }
        }
        None
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes a folder's slot (the caller makes sure it is not being listed) and returns the
    /// listing it held; wakes the workers if that made room.
    fn release(&self, state: &mut State, dir: &Path) -> Vec<DirEntry> {
        let Some(Slot::Listed(entries, _)) = state.slots.remove(dir) else {
            return Vec::new();
        };
        let was_full = state.held_entries >= self.max_held;
        state.held_entries -= entries.len();
        if was_full && state.held_entries < self.max_held {
            self.work.notify_all();
        }
        entries
    }

    fn run(&self) {
        let mut state = self.lock();
        loop {
            if state.stopped {
                return;
            }
            let Some((dir, device, guard)) = state.next(self.max_held) else {
                state = self.work.wait(state).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            drop(state);
            let started = Instant::now();
            // A panic here must not leave the folder `Listing`: the walk would wait for ever.
            let listed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let listed = read_dir_sorted_up_to(&dir, self.max_held / THREADS, guard.check);
                let subdirs = match &listed {
                    Ok(Some(entries)) => self.subdirs(entries, device, guard),
                    _ => Vec::new(),
                };
                (listed, subdirs)
            }));
            state = self.lock();
            let forgotten = state.forgotten.remove(&dir);
            let mut subdirs = match listed {
                Ok((Ok(Some(entries)), subdirs)) if !forgotten => {
                    state.held_entries += entries.len();
                    state.slots.insert(dir, Slot::Listed(entries, started));
                    subdirs
                }
                // Failed, too large or panicked: the walk lists it and sees what happens. Or
                // declined by the walk meanwhile.
                _ => {
                    state.slots.remove(&dir);
                    Vec::new()
                }
            };
            self.queued(state, &mut subdirs, device);
            state = self.lock();
        }
    }

    /// Queues a folder's subfolders, then wakes whoever waits for a listing and a worker for
    /// each new folder (no more threads than there is work for: they are many).
    fn queued(
        &self,
        mut state: MutexGuard<'_, State>,
        subdirs: &mut Vec<(PathBuf, ListingGuard)>,
        device: u64,
    ) {
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

    /// After the walk listed a folder itself: what is below is queued.
    fn listed_here(
        &self,
        dir: &Path,
        listed: &io::Result<Vec<DirEntry>>,
        device: u64,
        guard: ListingGuard,
    ) {
        let mut subdirs = match listed {
            Ok(entries) => self.subdirs(entries, device, guard),
            Err(_) => Vec::new(),
        };
        let mut state = self.lock();
        state.slots.remove(dir);
        self.queued(state, &mut subdirs, device);
    }

    /// The subfolders to list ahead of a folder listed with `guard`, with how to list each.
    fn subdirs(
        &self,
        entries: &[DirEntry],
        device: u64,
        guard: ListingGuard,
    ) -> Vec<(PathBuf, ListingGuard)> {
        entries
            .iter()
            .filter(|e| (self.descends)(e, device))
            .filter_map(|e| {
                let meta = e.metadata.as_ref().ok()?;
                Some((e.path.clone(), ListingGuard::below(guard, meta)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const UNCHECKED: ListingGuard = ListingGuard {
        check: None,
        open_inside: false,
    };

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
        let taken = ahead.take(dir, 0, UNCHECKED).unwrap();
        let fresh = read_dir_sorted(dir, None).unwrap();
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
        let ahead = ListingAhead::with_limits(
            &[dir.path().to_path_buf()],
            Box::new(all_dirs),
            held,
            MAX_AGE,
        );
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
        let root = ahead.take(dir.path(), 0, UNCHECKED).unwrap();
        assert_eq!(root.len(), 3);
        for d in ["d0", "d2"] {
            ahead.take(&dir.path().join(d), 0, UNCHECKED).unwrap();
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
        ahead.take(dir.path(), 0, UNCHECKED).unwrap();
        std::fs::remove_dir_all(dir.path().join("d0")).unwrap();
        // Listed ahead before it vanished (the walk then sees a folder as it was a moment
        // ago), or listed now, when it is gone: either way no stale error.
        match ahead.take(&dir.path().join("d0"), 0, UNCHECKED) {
            // (Perhaps while it was being removed.)
            Ok(entries) => assert!(entries.len() <= 1),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::NotFound),
        }
        assert_eq!(
            ahead
                .take(&dir.path().join("d1"), 0, UNCHECKED)
                .unwrap()
                .len(),
            1
        );
    }

    /// Waits until `done` holds of the state (or fails after 20 s).
    fn wait_for(ahead: &ListingAhead, what: &str, done: impl Fn(&State) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(&ahead.shared.lock()) {
            assert!(Instant::now() < deadline, "timed out waiting: {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn is_listed(state: &State, dir: &Path) -> bool {
        matches!(state.slots.get(dir), Some(Slot::Listed(..)))
    }

    #[test]
    fn folders_are_listed_before_the_walk_asks_and_handed_out_once() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path(), 3, 2);
        let ahead = ListingAhead::start(&[dir.path().to_path_buf()], Box::new(all_dirs));
        let inner = dir.path().join("d2/inner");
        // The root's 3 entries, one in each d*, two in each d*/inner.
        let everything = 3 + 3 + 3 * 2;
        wait_for(&ahead, "all listed ahead", |s| s.held_entries == everything);
        assert!(is_listed(&ahead.shared.lock(), &inner));
        assert_eq!(ahead.take(&inner, 0, UNCHECKED).unwrap().len(), 2);
        let state = ahead.shared.lock();
        assert!(!state.slots.contains_key(&inner), "handed out, not held");
        assert_eq!(state.held_entries, everything - 2, "the rest is still held");
    }

    #[test]
    fn a_listing_older_than_the_limit_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path(), 1, 1);
        let fresh = Duration::from_secs(3600);
        for (max_age, expected) in [(fresh, 1), (Duration::ZERO, 2)] {
            let inner = dir.path().join("d0/inner");
            let ahead = ListingAhead::with_limits(
                &[dir.path().to_path_buf()],
                Box::new(all_dirs),
                MAX_HELD_ENTRIES,
                max_age,
            );
            wait_for(&ahead, "listed ahead", |s| is_listed(s, &inner));
            std::fs::write(inner.join(format!("new{max_age:?}")), b"x").unwrap();
            assert_eq!(
                ahead.take(&inner, 0, UNCHECKED).unwrap().len(),
                expected,
                "{max_age:?}"
            );
            std::fs::remove_file(inner.join(format!("new{max_age:?}"))).unwrap();
        }
    }

    #[test]
    fn a_folder_larger_than_a_listings_share_is_left_to_the_walk() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path(), 2, 1);
        let big = dir.path().join("d1/inner");
        for f in 1..40 {
            std::fs::write(big.join(format!("g{f}")), b"x").unwrap();
        }
        // A share of 32 / THREADS = 4 entries: `big` (40) is too large, the others fit.
        let ahead =
            ListingAhead::with_limits(&[dir.path().to_path_buf()], Box::new(all_dirs), 32, MAX_AGE);
        let small = dir.path().join("d0/inner");
        let settled =
            |s: &State| s.queue.is_empty() && !s.slots.values().any(|v| matches!(v, Slot::Listing));
        wait_for(&ahead, "everything listed or given up", |s| {
            is_listed(s, &small) && settled(s)
        });
        {
            let state = ahead.shared.lock();
            assert!(
                !state.slots.contains_key(&big),
                "the large folder is not held"
            );
            assert_eq!(
                state.held_entries,
                2 + 1 + 1 + 1,
                "the root, d0, d1, d0/inner"
            );
        }
        assert_eq!(
            ahead.take(&big, 0, UNCHECKED).unwrap().len(),
            40,
            "listed by the walk"
        );
    }

    #[test]
    fn a_folder_the_walk_declines_frees_what_was_listed_in_and_below_it() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path(), 2, 2);
        let ahead = ListingAhead::start(&[dir.path().to_path_buf()], Box::new(all_dirs));
        // The root's 2 entries, one in each d*, two in each d*/inner.
        wait_for(&ahead, "all listed ahead", |s| {
            s.held_entries == 2 + 2 + 2 * 2
        });
        ahead.forget(&dir.path().join("d0"));
        let state = ahead.shared.lock();
        assert!(
            !state
                .slots
                .keys()
                .any(|p| p.starts_with(dir.path().join("d0")))
        );
        assert_eq!(
            state.held_entries,
            2 + 1 + 2,
            "the root, d1 and d1/inner are held"
        );
    }
}
