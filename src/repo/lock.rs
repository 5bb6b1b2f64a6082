//! Repository locks: how backups, checks and prunes from many processes and hosts share one
//! repository safely.
//!
//! A lock is an encrypted file `locks/<id>` saying who holds it, whether it is exclusive, and
//! when it was last refreshed. To take a lock a process writes its lock file first, then lists
//! the others; if any live lock conflicts (an exclusive one, or any one when it wants exclusive),
//! it deletes its own and waits or gives up. Because every process writes before it looks, two
//! conflicting processes can never both proceed.
//!
//! Backups, checks and restores take shared locks; prune, forget, tag and repairs exclusive
//! ones. A holder refreshes its lock every `REFRESH` (a new file, then the old one deleted). A
//! lock is stale, and ignored and removed by others, when it was not refreshed for `STALE`, or
//! when it was taken in this boot and process-id namespace by a process that no longer exists
//! (a host name alone is not enough: containers and cloned machines share them). "Not
//! refreshed for `STALE`" is judged by the storage's clock where it stamps files (local disk,
//! NFS, object storage): the lock file's time against the time it gave the lock file just
//! written by whoever is looking (`unlock` too writes one for that), so hosts whose clocks
//! disagree never take each other's live locks for stale. Only on storage without times is
//! the time in the lock compared with this host's clock. A lock that
//! vanishes while the others are read may be a refresh whose new file the listing missed, so
//! the listing is taken again; an unreadable lock counts as a conflict until the storage says
//! it was written longer than `STALE` ago. A holder whose refresh
//! failed, whose lock file was removed, or which could not refresh for too long (suspended,
//! disconnected), is told so by `check`, and must stop before it commits or deletes anything.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{FileKind, Repository};
use crate::blobs::lock as lock_mutex;
use crate::codec::{self, FieldWriter};
use crate::error::{Error, Result};
use crate::host;

/// How often a holder rewrites its lock.
const REFRESH: Duration = Duration::from_secs(5 * 60);
/// A lock not refreshed for this long is stale.
const STALE_NS: i64 = 30 * 60 * 1_000_000_000;
/// A holder stops trusting its own lock this long before others would call it stale.
const MARGIN_NS: i64 = 5 * 60 * 1_000_000_000;

/// What a lock file says (encoding: `1 exclusive`, `2 host`, `3 user`, `4 pid`, `5 created ns`,
/// `6 refreshed ns`, `7 process namespace`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockInfo {
    pub exclusive: bool,
    pub hostname: String,
    pub username: String,
    pub pid: u32,
    pub created_ns: i64,
    pub refreshed_ns: i64,
    /// `host::process_namespace` of the holder; empty in locks of older versions.
    pub process_namespace: String,
}

impl LockInfo {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = FieldWriter::new();
        w.uint(1, self.exclusive.into())
            .bytes(2, self.hostname.as_bytes())
            .bytes(3, self.username.as_bytes())
            .uint(4, self.pid.into())
            .int(5, self.created_ns)
            .int(6, self.refreshed_ns)
            .bytes(7, self.process_namespace.as_bytes());
        w.finish()
    }

    /// The record from a lock file's plaintext; `None` if malformed.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut l = LockInfo {
            exclusive: false,
            hostname: String::new(),
            username: String::new(),
            pid: 0,
            created_ns: 0,
            refreshed_ns: 0,
            process_namespace: String::new(),
        };
        for f in codec::fields(bytes)? {
            match f.tag {
                1 => l.exclusive = f.uint()? != 0,
                2 => l.hostname = f.string()?,
                3 => l.username = f.string()?,
                4 => l.pid = u32::try_from(f.uint()?).ok()?,
                5 => l.created_ns = f.int()?,
                6 => l.refreshed_ns = f.int()?,
                7 => l.process_namespace = f.string()?,
                _ => {}
            }
        }
        Some(l)
    }

    /// Why this lock no longer counts, if it does not. `age_on_storage`: how long ago its
    /// file was written, by the storage's clock, where known; else the time it says it was
    /// refreshed is compared with `now_ns`.
    pub fn stale(&self, now_ns: i64, age_on_storage: Option<Duration>) -> Option<String> {
        let silent_ns = match age_on_storage {
            Some(age) => i64::try_from(age.as_nanos()).unwrap_or(i64::MAX),
            None => now_ns - self.refreshed_ns,
        };
        if silent_ns > STALE_NS {
            return Some("not refreshed for over 30 minutes".into());
        }
        let same_namespace = !self.process_namespace.is_empty()
            && self.hostname == host::hostname()
            && self.process_namespace == host::process_namespace();
        if same_namespace && !process_alive(self.pid) {
            return Some(format!("process {} on this host is gone", self.pid));
        }
        None
    }

    pub fn describe(&self) -> String {
        format!(
            "{} lock of {}@{} (pid {}) since {}",
            if self.exclusive {
                "an exclusive"
            } else {
                "a shared"
            },
            self.username,
            self.hostname,
            self.pid,
            host::format_time(self.created_ns, host::local_offset_s(self.created_ns))
        )
    }
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only asks whether the process exists; nothing is sent.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The lock files of one listing.
pub struct LockListing {
    /// Each lock file with what it says (`None`: unreadable).
    pub locks: Vec<(String, Option<LockInfo>)>,
    /// A listed lock was gone when read: released, or replaced by a refresh whose new file
    /// the listing may have missed.
    pub vanished: bool,
}

/// Every lock file in the repository with what it says.
pub fn list(repo: &Repository) -> Result<LockListing> {
    let mut out = LockListing {
        locks: Vec::new(),
        vanished: false,
    };
    for listed in repo.storage().list("locks", true)? {
        let info = match repo.storage().read(&listed.path) {
            Ok(bytes) => {
                let named = super::named_by_content(FileKind::Lock, &listed.path, &bytes);
                let opened = super::file::open_file(
                    repo.keys(),
                    repo.id(),
                    FileKind::Lock,
                    &listed.path,
                    &bytes,
                );
                opened
                    .ok()
                    .filter(|_| named)
                    .and_then(|plain| LockInfo::decode(&plain))
            }
            Err(Error::Storage {
                not_found: true, ..
            }) => {
                out.vanished = true;
                continue;
            }
            Err(e) => return Err(e),
        };
        out.locks.push((listed.path, info));
    }
    Ok(out)
}

/// A held lock. Dropping it stops the refresher and deletes the lock file.
pub struct RepositoryLock {
    inner: Arc<Held>,
    refresher: Option<JoinHandle<()>>,
    /// Dropping this wakes the refresher to stop.
    stop: Option<std::sync::mpsc::Sender<()>>,
}

struct Held {
    storage: Arc<dyn crate::storage::Storage>,
    keys: crate::crypto::Keys,
    repo_id: crate::ids::RepositoryId,
    info: Mutex<LockInfo>,
    path: Mutex<String>,
    last_refresh_ns: AtomicI64,
    lost: Mutex<Option<String>>,
}

/// Writes a lock file; returns its path.
fn write_lock_file(
    storage: &dyn crate::storage::Storage,
    keys: &crate::crypto::Keys,
    repo_id: &crate::ids::RepositoryId,
    info: &LockInfo,
) -> Result<String> {
    let sealed = super::file::seal_file(keys, repo_id, FileKind::Lock, &info.encode());
    let path = super::object_path(FileKind::Lock, blake3::hash(&sealed).as_bytes());
    storage.write(&path, sealed)?;
    Ok(path)
}

impl Held {
    fn write(&self, info: &LockInfo) -> Result<String> {
        write_lock_file(&*self.storage, &self.keys, &self.repo_id, info)
    }

    /// Renews the lock file, unless the lock may already have been lost: a holder that was
    /// silent for so long that others may have called it stale (suspended, disconnected), or
    /// whose lock file was removed by someone else, must not renew it as if nothing happened,
    /// since a prune may have run meanwhile.
    fn refresh(&self) {
        let now = host::now_ns();
        let silent = now - self.last_refresh_ns.load(Ordering::SeqCst);
        if silent > STALE_NS - MARGIN_NS {
            self.mark_lost(format!(
                "it could not be refreshed for {} s",
                silent / 1_000_000_000
            ));
            return;
        }
        let mut info = lock_mutex(&self.info).clone();
        info.refreshed_ns = now;
        let renewed = match self.write(&info) {
            Ok(renewed) => renewed,
            Err(e) => return self.mark_lost(format!("refreshing the lock failed: {e}")),
        };
        // Whether the old file is still there is asked only once the new one is written: a
        // removal before then is seen here, and one after finds the new file in its way. (A
        // prune that listed the locks between the two files would otherwise find none.)
        let current = lock_mutex(&self.path).clone();
        let lost = match self.storage.exists(&current) {
            Ok(true) => None,
            Ok(false) => Some("its lock file was removed by another process".to_string()),
            Err(e) => Some(format!("refreshing the lock failed: {e}")),
        };
        if let Some(why) = lost {
            let _ = self.storage.delete(&renewed);
            return self.mark_lost(why);
        }
        *lock_mutex(&self.path) = renewed;
        let _ = self.storage.delete(&current);
        *lock_mutex(&self.info) = info.clone();
        self.last_refresh_ns
            .store(info.refreshed_ns, Ordering::SeqCst);
    }

    fn mark_lost(&self, why: String) {
        lock_mutex(&self.lost).get_or_insert(why);
    }
}

impl LockInfo {
    /// This process's lock, taken now.
    fn ours(exclusive: bool, now: i64) -> Self {
        LockInfo {
            exclusive,
            hostname: host::hostname(),
            username: host::username(),
            pid: std::process::id(),
            created_ns: now,
            refreshed_ns: now,
            process_namespace: host::process_namespace(),
        }
    }
}

impl RepositoryLock {
    /// Takes a lock, retrying for up to `wait` while a conflicting live lock exists.
    pub fn acquire(repo: &Repository, exclusive: bool, wait: Duration) -> Result<Self> {
        let now = host::now_ns();
        let info = LockInfo::ours(exclusive, now);
        let held = Arc::new(Held {
            storage: repo.shared_storage(),
            keys: repo.keys().clone(),
            repo_id: *repo.id(),
            info: Mutex::new(info.clone()),
            path: Mutex::new(String::new()),
            last_refresh_ns: AtomicI64::new(now),
            lost: Mutex::new(None),
        });
        // A wait too long to count an end for is a wait without end.
        let deadline = std::time::Instant::now().checked_add(wait);
        let mut pause = Duration::from_millis(50);
        let mut info = info;
        loop {
            // Each attempt writes a fresh time: a long wait must not leave a lock that is
            // nearly stale when it is finally taken.
            info.refreshed_ns = host::now_ns();
            *lock_mutex(&held.info) = info.clone();
            held.last_refresh_ns
                .store(info.refreshed_ns, Ordering::SeqCst);
            let mine = held.write(&info)?;
            crate::failpoint::hit("lock-written");
            let conflict = match conflicting(repo, &mine, exclusive) {
                Ok(c) => c,
                Err(e) => {
                    let _ = repo.storage().delete(&mine);
                    return Err(e);
                }
            };
            let Some(conflict) = conflict else {
                *lock_mutex(&held.path) = mine;
                break;
            };
            repo.storage().delete(&mine)?;
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Err(Error::Locked { holder: conflict });
            }
            // Random jitter, so two processes that collided do not collide again.
            let jitter = Duration::from_millis(u64::from(crate::crypto::random_bytes::<1>()[0]));
            std::thread::sleep(pause + jitter);
            pause = (pause * 2).min(Duration::from_secs(2));
        }
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let refreshed = Arc::clone(&held);
        let refresher = std::thread::Builder::new()
            .name("cairn-lock".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(REFRESH) {
                    refreshed.refresh();
                }
            })
            .map_err(|e| {
                let _ = repo.storage().delete(&lock_mutex(&held.path));
                Error::io("lock refresh thread", e)
            })?;
        Ok(RepositoryLock {
            inner: held,
            refresher: Some(refresher),
            stop: Some(stop),
        })
    }

    pub fn is_exclusive(&self) -> bool {
        lock_mutex(&self.inner.info).exclusive
    }

    /// Errors if the lock can no longer be trusted: a refresh failed, it was not refreshed
    /// for so long that others may have called it stale, or its file is gone (another process
    /// called it stale). Call before committing or deleting.
    pub fn check(&self) -> Result<()> {
        if let Some(why) = lock_mutex(&self.inner.lost).clone() {
            return Err(Error::LockLost { reason: why });
        }
        // The refresher may replace the file between our reading its name and looking for it.
        let mut path = lock_mutex(&self.inner.path).clone();
        while !self.inner.storage.exists(&path)? {
            let now = lock_mutex(&self.inner.path).clone();
            if now == path {
                let why = "its lock file was removed by another process".to_string();
                self.inner.mark_lost(why.clone());
                return Err(Error::LockLost { reason: why });
            }
            path = now;
        }
        // After looking (which may take a while on object storage), so the whole margin is
        // left for the write that follows.
        let age = host::now_ns() - self.inner.last_refresh_ns.load(Ordering::SeqCst);
        if age > STALE_NS - MARGIN_NS {
            return Err(Error::LockLost {
                reason: format!("it was not refreshed for {} s", age / 1_000_000_000),
            });
        }
        Ok(())
    }
}

impl Drop for RepositoryLock {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let path = lock_mutex(&self.inner.path).clone();
        if !path.is_empty() {
            let _ = self.inner.storage.delete(&path);
        }
    }
}

/// How often the locks are listed again when one vanished while they were read.
const LIST_ATTEMPTS: usize = 5;

/// The first live lock other than `mine` that conflicts with the wanted mode; stale ones are
/// removed on the way.
fn conflicting(repo: &Repository, mine: &str, exclusive: bool) -> Result<Option<String>> {
    for _ in 0..LIST_ATTEMPTS {
        let listing = list(repo)?;
        match first_conflict(repo, listing.locks, mine, exclusive) {
            Seen::Conflict(conflict) => return Ok(Some(conflict)),
            Seen::Clear if !listing.vanished => return Ok(None),
            Seen::Clear | Seen::Vanished => {}
        }
    }
    Ok(Some("locks that kept changing while they were read".into()))
}

/// What a listing of the locks shows.
enum Seen {
    Conflict(String),
    Clear,
    /// A lock vanished while it was looked at (a refresh, whose new file the listing may
    /// have missed): list again.
    Vanished,
}

fn first_conflict(
    repo: &Repository,
    locks: Vec<(String, Option<LockInfo>)>,
    mine: &str,
    exclusive: bool,
) -> Seen {
    let now = host::now_ns();
    let storage_now = repo.storage().modified(mine).ok().flatten();
    for (path, info) in locks {
        if path == mine {
            continue;
        }
        let age = match age_on_storage(repo, &path, storage_now) {
            Err(()) => return Seen::Vanished,
            Ok(age) => age,
        };
        // Not knowing what it guards, it is assumed to guard everything while it is young.
        let Some(info) = info else {
            if unreadable_is_stale(repo, &path, age) {
                tracing::info!("removing stale lock {path}: unreadable and over 30 minutes old");
                let _ = repo.storage().delete(&path);
                continue;
            }
            return Seen::Conflict(format!("an unreadable lock file {path}"));
        };
        if let Some(why) = info.stale(now, age) {
            tracing::info!("removing stale lock {path}: {why}");
            let _ = repo.storage().delete(&path);
            continue;
        }
        if exclusive || info.exclusive {
            return Seen::Conflict(info.describe());
        }
    }
    Seen::Clear
}

/// How long ago the lock file at `path` was written, by the storage's clock: against
/// `storage_now`, the time the storage gave a file just written. `Ok(None)` where it keeps no
/// times (or this one's cannot be had: this host's clock is then the judge); `Err` if the
/// file is gone (a refresh replaced it since the listing).
fn age_on_storage(
    repo: &Repository,
    path: &str,
    storage_now: Option<std::time::SystemTime>,
) -> std::result::Result<Option<Duration>, ()> {
    let Some(now) = storage_now else {
        return Ok(None);
    };
    match repo.storage().modified(path) {
        Ok(Some(written)) => Ok(Some(now.duration_since(written).unwrap_or(Duration::ZERO))),
        Err(Error::Storage {
            not_found: true, ..
        }) => Err(()),
        _ => Ok(None),
    }
}

/// True if the storage says an (unreadable) lock file was written more than `STALE` ago: by
/// its own clock where `age` is known, else by this host's.
fn unreadable_is_stale(repo: &Repository, path: &str, age: Option<Duration>) -> bool {
    let stale = Duration::from_nanos(STALE_NS as u64);
    let age = age.or_else(|| {
        let written = repo.storage().modified(path).ok().flatten()?;
        written.elapsed().ok()
    });
    age.is_some_and(|age| age > stale)
}

/// What `unlock` did: the locks it removed and the live ones it left.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Unlocked {
    pub removed: Vec<String>,
    pub kept: Vec<String>,
}

/// Removes stale locks (all locks with `all`), judged as when acquiring: by the storage's
/// clock where it stamps files, learnt from a shared lock file of our own written for the
/// purpose (by this host's clock, a host whose clock is behind would have its live lock
/// removed). An unreadable lock is stale only once the storage says it is over 30 minutes
/// old: it may be the live lock of a newer version.
pub fn unlock(repo: &Repository, all: bool) -> Result<Unlocked> {
    let now = host::now_ns();
    let info = LockInfo::ours(false, now);
    let mine = write_lock_file(repo.storage(), repo.keys(), repo.id(), &info)?;
    let removed = remove_stale(repo, all, &mine, now);
    let _ = repo.storage().delete(&mine);
    removed
}

fn remove_stale(repo: &Repository, all: bool, mine: &str, now: i64) -> Result<Unlocked> {
    let storage_now = repo.storage().modified(mine).ok().flatten();
    let mut done = Unlocked::default();
    for (path, info) in list(repo)?.locks {
        if path == mine {
            continue;
        }
        let Ok(age) = age_on_storage(repo, &path, storage_now) else {
            continue; // gone since the listing
        };
        let stale = match &info {
            None => unreadable_is_stale(repo, &path, age),
            Some(info) => info.stale(now, age).is_some(),
        };
        let described = match info {
            Some(i) => i.describe(),
            None => format!("an unreadable lock file {path}"),
        };
        if all || stale {
            repo.storage().delete(&path)?;
            done.removed.push(described);
        } else {
            done.kept.push(described);
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::memory_repository;

    #[test]
    fn a_refresh_renews_a_live_lock() {
        let repo = memory_repository();
        let lock = RepositoryLock::acquire(&repo, false, Duration::ZERO).unwrap();
        let before = lock_mutex(&lock.inner.path).clone();
        lock.inner.refresh();
        lock.check().unwrap();
        let after = lock_mutex(&lock.inner.path).clone();
        assert_ne!(before, after);
        let paths: Vec<String> = list(&repo)
            .unwrap()
            .locks
            .into_iter()
            .map(|l| l.0)
            .collect();
        assert_eq!(paths, vec![after], "the old lock file is replaced");
    }

    /// Regression: a holder suspended for longer than the stale time renewed its lock on
    /// waking and went on to commit, although a prune may have run meanwhile.
    #[test]
    fn a_holder_silent_for_too_long_loses_its_lock_instead_of_renewing_it() {
        let repo = memory_repository();
        let lock = RepositoryLock::acquire(&repo, false, Duration::ZERO).unwrap();
        lock.inner
            .last_refresh_ns
            .fetch_sub(STALE_NS, Ordering::SeqCst);
        lock.inner.refresh();
        assert!(matches!(lock.check(), Err(Error::LockLost { .. })));
        let last = lock.inner.last_refresh_ns.load(Ordering::SeqCst);
        assert!(host::now_ns() - last >= STALE_NS, "the lock was renewed");
    }

    #[test]
    fn a_holder_whose_lock_file_was_removed_loses_its_lock() {
        let repo = memory_repository();
        let lock = RepositoryLock::acquire(&repo, true, Duration::ZERO).unwrap();
        assert_eq!(unlock(&repo, true).unwrap().removed.len(), 1);
        let err = lock.check().unwrap_err().to_string();
        assert!(err.contains("removed by another process"), "{err}");
        lock.inner.refresh();
        let err = lock.check().unwrap_err().to_string();
        assert!(err.contains("removed by another process"), "{err}");
        assert!(
            list(&repo).unwrap().locks.is_empty(),
            "a lost lock is not written again"
        );
    }

    /// Regression (helper-42): a lock file removed between a refresh's check that it was
    /// still there and the write of the new one went unnoticed, since every later check
    /// looked at the new file; a prune listing the locks in between found none.
    #[test]
    fn a_lock_file_removed_while_it_is_refreshed_is_noticed() {
        use crate::storage::{OpendalStorage, Storage, instrumented::Instrumented};
        use std::sync::atomic::AtomicBool;
        let storage = OpendalStorage::memory().unwrap();
        let remover = storage.another_handle().unwrap();
        let armed = Arc::new(AtomicBool::new(false));
        let mut instrumented = Instrumented::new(storage.another_handle().unwrap());
        let armed_in_hook = Arc::clone(&armed);
        instrumented.before_write = Box::new(move |path, _| {
            if path.starts_with("locks/") && armed_in_hook.swap(false, Ordering::SeqCst) {
                for old in remover.list("locks", false).unwrap() {
                    remover.delete(&old.path).unwrap();
                }
            }
            Ok(())
        });
        let repo = crate::repo::repository_on(Box::new(instrumented));
        let lock = RepositoryLock::acquire(&repo, false, Duration::ZERO).unwrap();
        armed.store(true, Ordering::SeqCst);
        lock.inner.refresh();
        let err = lock.check().unwrap_err().to_string();
        assert!(err.contains("removed by another process"), "{err}");
        assert!(
            list(&repo).unwrap().locks.is_empty(),
            "the renewed lock file is taken back"
        );
    }

    #[test]
    fn lock_info_round_trips_and_goes_stale() {
        let now = host::now_ns();
        let info = LockInfo {
            exclusive: true,
            hostname: "elsewhere".into(),
            username: "backup".into(),
            pid: 1,
            created_ns: now,
            refreshed_ns: now,
            process_namespace: host::process_namespace(),
        };
        assert_eq!(LockInfo::decode(&info.encode()), Some(info.clone()));
        assert!(
            info.stale(now, None).is_none(),
            "another host's fresh lock is live"
        );
        assert!(info.stale(now + STALE_NS + 1, None).is_some());
        let here = LockInfo {
            hostname: host::hostname(),
            pid: std::process::id(),
            ..info.clone()
        };
        assert!(here.stale(now, None).is_none(), "this process is alive");
        let dead = LockInfo {
            hostname: host::hostname(),
            pid: u32::MAX - 1,
            ..info
        };
        // Where the process namespace is unknown, no pid is judged by it.
        assert_eq!(
            dead.stale(now, None).is_some(),
            !host::process_namespace().is_empty()
        );
        // Regression: a lock of another container (same host name, its own process ids) was
        // removed as stale whenever its pid did not exist here.
        let other_container = LockInfo {
            process_namespace: "another boot or container".into(),
            ..dead.clone()
        };
        assert!(other_container.stale(now, None).is_none());
        let older_version = LockInfo {
            process_namespace: String::new(),
            ..dead
        };
        assert!(older_version.stale(now, None).is_none());
    }

    /// What the test storage does besides storing: a hook run before reading a lock file,
    /// and failing to list.
    #[derive(Default)]
    struct Hooks {
        before_lock_read: Mutex<Option<Box<dyn FnOnce() + Send>>>,
        before_exists: Mutex<Option<Box<dyn FnOnce() + Send>>>,
        fail_list: std::sync::atomic::AtomicBool,
    }

    struct Hooked {
        inner: crate::storage::OpendalStorage,
        hooks: Arc<Hooks>,
    }

    impl crate::storage::Storage for Hooked {
        fn location(&self) -> &str {
            self.inner.location()
        }
        fn read(&self, path: &str) -> Result<Vec<u8>> {
            let hook = lock_mutex(&self.hooks.before_lock_read).take();
            match hook {
                Some(hook) if path.starts_with("locks/") => hook(),
                // Not yet: put it back for the lock file it waits for.
                Some(hook) => *lock_mutex(&self.hooks.before_lock_read) = Some(hook),
                None => {}
            }
            self.inner.read(path)
        }
        fn read_range(&self, path: &str, range: std::ops::Range<u64>) -> Result<Vec<u8>> {
            self.inner.read_range(path, range)
        }
        fn write(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
            self.inner.write(path, bytes)
        }
        fn list(&self, dir: &str, recursive: bool) -> Result<Vec<crate::storage::ListedObject>> {
            if self.hooks.fail_list.load(Ordering::SeqCst) {
                return Err(Error::Invalid("listing failed".into()));
            }
            self.inner.list(dir, recursive)
        }
        fn exists(&self, path: &str) -> Result<bool> {
            let hook = lock_mutex(&self.hooks.before_exists).take();
            if let Some(hook) = hook {
                hook();
            }
            self.inner.exists(path)
        }
        fn size(&self, path: &str) -> Result<u64> {
            self.inner.size(path)
        }
        fn delete(&self, path: &str) -> Result<()> {
            self.inner.delete(path)
        }
    }

    fn hooked_repository() -> (Repository, Arc<Hooks>) {
        let hooks = Arc::new(Hooks::default());
        let storage = Hooked {
            inner: crate::storage::OpendalStorage::memory().unwrap(),
            hooks: hooks.clone(),
        };
        let repo = crate::repo::repository_on(Box::new(storage));
        (repo, hooks)
    }

    /// Regression: a lock refreshed between the listing and the reading of the locks (its old
    /// file deleted, its new one not listed) went unseen, so a backup could start beside a
    /// prune, or two prunes run at once.
    #[test]
    fn a_lock_refreshed_while_the_locks_are_read_still_conflicts() {
        let (repo, hooked) = hooked_repository();
        let prune = RepositoryLock::acquire(&repo, true, Duration::ZERO).unwrap();
        let held = Arc::clone(&prune.inner);
        *lock_mutex(&hooked.before_lock_read) = Some(Box::new(move || held.refresh()));
        let backup = RepositoryLock::acquire(&repo, false, Duration::ZERO);
        assert!(
            matches!(backup, Err(Error::Locked { .. })),
            "the prune went unseen"
        );
        assert!(
            lock_mutex(&hooked.before_lock_read).is_none(),
            "no refresh ran"
        );
        prune.check().unwrap();
    }

    /// Regression: `check` read its lock file's name, the refresher then replaced the file,
    /// and `check` found the old name gone and declared the lock lost for good.
    #[test]
    fn a_refresh_during_check_is_not_a_lost_lock() {
        let (repo, hooks) = hooked_repository();
        let lock = RepositoryLock::acquire(&repo, true, Duration::ZERO).unwrap();
        let held = Arc::clone(&lock.inner);
        *lock_mutex(&hooks.before_exists) = Some(Box::new(move || held.refresh()));
        lock.check().unwrap();
        assert!(lock_mutex(&hooks.before_exists).is_none(), "no refresh ran");
        lock.check().unwrap();
    }

    /// An unreadable lock guards everything while young, and is stale once the storage says
    /// it is older than a lock that nobody refreshed.
    #[test]
    fn an_old_unreadable_lock_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let storage = crate::storage::OpendalStorage::local(dir.path().to_str().unwrap()).unwrap();
        let repo = crate::repo::repository_on(Box::new(storage));
        repo.storage()
            .write("locks/0123", b"garbage".to_vec())
            .unwrap();
        assert!(RepositoryLock::acquire(&repo, true, Duration::ZERO).is_err());
        let file = std::fs::File::options()
            .write(true)
            .open(dir.path().join("locks/0123"))
            .unwrap();
        let hour = Duration::from_secs(3600);
        file.set_modified(std::time::SystemTime::now() - hour)
            .unwrap();
        RepositoryLock::acquire(&repo, true, Duration::ZERO).unwrap();
        assert!(!dir.path().join("locks/0123").exists());
    }

    /// Regression: staleness compared the time in a lock with this host's clock, so a host
    /// whose clock was behind had its live lock removed by the others (and a prune could
    /// then delete what its backup was writing); one whose clock was ahead kept a dead lock
    /// alive. Where the storage stamps files, its own clock decides.
    #[test]
    fn the_storages_clock_decides_whether_a_lock_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let storage = crate::storage::OpendalStorage::local(dir.path().to_str().unwrap()).unwrap();
        let repo = crate::repo::repository_on(Box::new(storage));
        let foreign = |refreshed_ns: i64| {
            let info = LockInfo {
                exclusive: true,
                hostname: "elsewhere".into(),
                username: "backup".into(),
                pid: 1,
                created_ns: refreshed_ns,
                refreshed_ns,
                process_namespace: "another machine".into(),
            };
            let sealed = super::super::file::seal_file(
                repo.keys(),
                repo.id(),
                FileKind::Lock,
                &info.encode(),
            );
            let path = super::super::object_path(FileKind::Lock, blake3::hash(&sealed).as_bytes());
            repo.storage().write(&path, sealed).unwrap();
            dir.path().join(path)
        };
        let hours = |n: u64| Duration::from_secs(3600 * n);
        // Its clock two hours behind ours, its lock just written: live.
        let behind = foreign(host::now_ns() - 2 * 3_600_000_000_000);
        assert!(RepositoryLock::acquire(&repo, true, Duration::ZERO).is_err());
        assert!(behind.exists(), "a live lock was removed");
        std::fs::remove_file(&behind).unwrap();
        // Its clock two hours ahead, its lock written an hour ago: stale.
        let ahead = foreign(host::now_ns() + 2 * 3_600_000_000_000);
        let file = std::fs::File::options().write(true).open(&ahead).unwrap();
        file.set_modified(std::time::SystemTime::now() - hours(1))
            .unwrap();
        RepositoryLock::acquire(&repo, true, Duration::ZERO).unwrap();
        assert!(!ahead.exists(), "a dead lock was kept");
        // Regression (helper-42): `unlock` judged by this host's clock, and removed the
        // live lock of a host whose clock is behind. It now judges as `acquire` does, and
        // leaves no file of its own.
        let behind = foreign(host::now_ns() - 2 * 3_600_000_000_000);
        let unlocked = unlock(&repo, false).unwrap();
        assert!(behind.exists(), "unlock removed a live lock");
        assert_eq!((unlocked.removed.len(), unlocked.kept.len()), (0, 1));
        let ahead = foreign(host::now_ns() + 2 * 3_600_000_000_000);
        let file = std::fs::File::options().write(true).open(&ahead).unwrap();
        file.set_modified(std::time::SystemTime::now() - hours(1))
            .unwrap();
        assert_eq!(unlock(&repo, false).unwrap().removed.len(), 1);
        assert!(!ahead.exists(), "unlock kept a dead lock");
        assert_eq!(
            list(&repo).unwrap().locks.len(),
            1,
            "only the live lock is left"
        );
        std::fs::remove_file(&behind).unwrap();
        // Regression: one whose file was gone when its time was asked (replaced by a refresh
        // since the listing) was judged by this host's clock after all: the locks are listed
        // again instead.
        let behind = foreign(host::now_ns() - 2 * 3_600_000_000_000);
        let info = list(&repo).unwrap().locks.remove(0).1;
        std::fs::remove_file(&behind).unwrap();
        repo.storage().write("locks/mine", b"x".to_vec()).unwrap();
        let refreshed = vec![("locks/gone".to_string(), info)];
        let seen = first_conflict(&repo, refreshed, "locks/mine", true);
        assert!(matches!(seen, Seen::Vanished));
    }

    /// Regression: `unlock` removed every unreadable lock, also a young one, which may be
    /// the live lock of a prune run by a newer version.
    #[test]
    fn an_unreadable_lock_conflicts_until_unlock_remove_all_removes_it() {
        let repo = memory_repository();
        repo.storage()
            .write("locks/0123", b"garbage".to_vec())
            .unwrap();
        let err = RepositoryLock::acquire(&repo, false, Duration::ZERO)
            .err()
            .unwrap();
        assert!(err.to_string().contains("unreadable"), "{err}");
        let described = "an unreadable lock file locks/0123".to_string();
        let kept = Unlocked {
            removed: vec![],
            kept: vec![described.clone()],
        };
        assert_eq!(unlock(&repo, false).unwrap(), kept);
        assert!(RepositoryLock::acquire(&repo, false, Duration::ZERO).is_err());
        let removed = Unlocked {
            removed: vec![described],
            kept: vec![],
        };
        assert_eq!(unlock(&repo, true).unwrap(), removed);
        RepositoryLock::acquire(&repo, false, Duration::ZERO).unwrap();
    }

    /// Regression: a failure while looking for conflicts left the new lock file behind, where
    /// it blocked everyone else for up to 30 minutes.
    #[test]
    fn a_failed_acquire_leaves_no_lock_file() {
        let (repo, hooked) = hooked_repository();
        hooked.fail_list.store(true, Ordering::SeqCst);
        assert!(RepositoryLock::acquire(&repo, true, Duration::ZERO).is_err());
        hooked.fail_list.store(false, Ordering::SeqCst);
        assert!(list(&repo).unwrap().locks.is_empty());
    }
}
