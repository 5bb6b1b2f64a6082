//! The packer: turns blobs into packs on storage and index segments that list them.
//!
//! Guarantees (design rule 3): a blob is reported as stored only if it is in the local index
//! or was added in this run; a pack is completely written before any index segment lists it
//! (segments wait for every upload in flight, and once one upload failed no segment is
//! written and no further pack uploaded); a tree pack is written only after the data packs
//! before it, so that `repair index`, which indexes every pack it finds, never indexes a tree
//! whose data is missing; `finish` uploads every open pack and a segment for every uploaded
//! pack, and only then may a snapshot refer to them.
//!
//! Packs are written in the background (`upload::Uploader`) so that sealing goes on while
//! packs are written. Besides the open data and tree packs, the packer holds the packs being
//! uploaded, one waiting for an uploader, and one being handed over.
//!
//! Each worker thread fills a data pack of its own (up to `MAX_OPEN_DATA_PACKS`), so a pack
//! holds blobs in the order one thread met them in the walk. With one pack for all threads,
//! the blobs of the distant parts of the tree that the threads were in alternated in every
//! pack, and a restore, which goes through the tree in order a part at a time, read each pack
//! about once per thread (the gaps it reads through held the other parts' blobs).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};

use thread_local::ThreadLocal;

use crate::blobs::lock;
use crate::error::Result;
use crate::ids::{BlobId, BlobType, IndexId};
use crate::index::{IndexSegment, LocalIndex, PackRecord, SEGMENT_BLOBS};
use crate::pack::{PACK_TARGET_SIZE, PackWriter, SealedBlob, seal_blob};
use crate::repo::lock::RepositoryLock;
use crate::repo::{FileKind, Repository, object_path};
use crate::upload::Uploader;

/// After this many packs (or `SEGMENT_BLOBS` blobs) without a segment, a segment is written,
/// so an interrupted backup leaves its uploaded packs indexed and the next run does not upload
/// them again; and a segment stays small enough to be written soon after the lock check.
const PACKS_PER_SEGMENT: usize = 32;

/// Data packs open at once, at most.
const MAX_OPEN_DATA_PACKS: usize = 4;
/// What the open data packs hold together, at most (plus a blob each): with more than two
/// open, each is closed smaller than `PACK_TARGET_SIZE`.
const OPEN_DATA_BYTES: usize = 2 * PACK_TARGET_SIZE;

#[derive(Clone, Debug, Default)]
pub struct PackerStats {
    pub data_blobs: u64,
    pub tree_blobs: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub packs: u64,
    pub segments: u64,
}

/// Which blobs are stored: those in the local index when the backup started, plus those
/// added since. Shared by all worker threads without taking the packer's lock: each thread
/// keeps its own read connection (with one read transaction open, see
/// `LocalIndex::worker_reader`), dropped with this set.
pub struct StoredBlobs {
    added: RwLock<HashSet<BlobId>>,
    readers: ThreadLocal<LocalIndex>,
    template: Mutex<LocalIndex>,
}

impl StoredBlobs {
    fn new(index: &LocalIndex) -> Result<Self> {
        Ok(StoredBlobs {
            added: RwLock::new(HashSet::new()),
            readers: ThreadLocal::new(),
            template: Mutex::new(index.another_connection()?),
        })
    }

    /// True if the blob is already stored (indexed) or was added in this run.
    pub fn contains(&self, id: &BlobId) -> Result<bool> {
        if self
            .added
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
        {
            return Ok(true);
        }
        let reader = self
            .readers
            .get_or_try(|| lock(&self.template).worker_reader())?;
        reader.contains(id)
    }

    /// Records an added blob; false if it was added before.
    fn insert(&self, id: BlobId) -> bool {
        self.added
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id)
    }
}

pub struct Packer<'a> {
    repo: &'a Repository,
    index: &'a mut LocalIndex,
    zstd_level: i32,
    /// One per worker thread (see the module comment).
    data: Vec<PackWriter>,
    /// The size at which a data pack is closed.
    data_pack_size: usize,
    tree: PackWriter,
    stored: Arc<StoredBlobs>,
    /// `None` in a dry run: packs are counted, not written.
    uploader: Option<Uploader>,
    unindexed: Vec<PackRecord>,
    stats: PackerStats,
    /// Checked before each index segment is written (see `guarded_by`).
    lock: Option<&'a RepositoryLock>,
}

impl<'a> Packer<'a> {
    /// Writes no index segment once `lock` can no longer be trusted: a prune may have deleted
    /// the packs it would list meanwhile (they were in no segment yet).
    pub fn guarded_by(mut self, lock: Option<&'a RepositoryLock>) -> Self {
        self.lock = lock;
        self
    }

    pub fn new(repo: &'a Repository, index: &'a mut LocalIndex, zstd_level: i32) -> Result<Self> {
        Self::with_mode(repo, index, zstd_level, false)
    }

    /// A packer that writes nothing (for `backup --dry-run`).
    pub fn dry_run(
        repo: &'a Repository,
        index: &'a mut LocalIndex,
        zstd_level: i32,
    ) -> Result<Self> {
        Self::with_mode(repo, index, zstd_level, true)
    }

    fn with_mode(
        repo: &'a Repository,
        index: &'a mut LocalIndex,
        zstd_level: i32,
        dry_run: bool,
    ) -> Result<Self> {
        let stored = Arc::new(StoredBlobs::new(index)?);
        let open = rayon::current_num_threads().clamp(1, MAX_OPEN_DATA_PACKS);
        Ok(Packer {
            repo,
            index,
            zstd_level,
            data: (0..open).map(|_| PackWriter::new(BlobType::Data)).collect(),
            data_pack_size: (OPEN_DATA_BYTES / open).min(PACK_TARGET_SIZE),
            tree: PackWriter::new(BlobType::Tree),
            stored,
            uploader: if dry_run {
                None
            } else {
                Some(Uploader::start(repo)?)
            },
            unindexed: Vec::new(),
            stats: PackerStats::default(),
            lock: None,
        })
    }

    pub fn zstd_level(&self) -> i32 {
        self.zstd_level
    }

    /// True if the blob is already stored (indexed) or added in this run.
    pub fn has(&self, id: &BlobId) -> Result<bool> {
        self.stored.contains(id)
    }

    /// The set of stored blobs, for worker threads that check before sealing.
    pub fn stored_blobs(&self) -> Arc<StoredBlobs> {
        Arc::clone(&self.stored)
    }

    /// Stores a blob unless it is already stored; returns its id.
    pub fn add(&mut self, blob_type: BlobType, plaintext: &[u8]) -> Result<BlobId> {
        crate::pack::check_blob_len(blob_type, plaintext.len())?;
        let id = self.repo.keys().blob_id(plaintext);
        if !self.has(&id)? {
            let sealed = seal_blob(
                self.repo.keys(),
                self.repo.id(),
                blob_type,
                id,
                plaintext,
                self.zstd_level,
            );
            self.add_sealed(sealed)?;
        }
        Ok(id)
    }

    /// Appends a blob that was sealed elsewhere (e.g. on a worker thread). A blob already
    /// added in this run is dropped.
    pub fn add_sealed(&mut self, blob: SealedBlob) -> Result<()> {
        if !self.stored.insert(blob.id) {
            return Ok(());
        }
        match blob.blob_type {
            BlobType::Data => self.stats.data_blobs += 1,
            BlobType::Tree => self.stats.tree_blobs += 1,
        }
        self.stats.raw_bytes += u64::from(blob.raw_len);
        self.stats.stored_bytes += blob.bytes.len() as u64;
        // A thread outside the pool (`copy` adds from one thread) fills the first pack alone,
        // up to the full size.
        let worker = rayon::current_thread_index();
        let data_pack_size = worker.map_or(PACK_TARGET_SIZE, |_| self.data_pack_size);
        let writer = match blob.blob_type {
            BlobType::Data => {
                let open = self.data.len();
                &mut self.data[worker.unwrap_or(0) % open]
            }
            BlobType::Tree => &mut self.tree,
        };
        writer.add(blob);
        match writer.blob_type() {
            BlobType::Data if writer.len() < data_pack_size => Ok(()),
            BlobType::Tree if !writer.is_full() => Ok(()),
            BlobType::Data => {
                let full = std::mem::replace(writer, PackWriter::new(BlobType::Data));
                self.upload(full)
            }
            BlobType::Tree => self.flush_all(),
        }
    }

    /// Uploads every open pack, the tree pack last: the trees in it may refer to blobs in any
    /// of the data packs. Partly filled data packs are put together up to `PACK_TARGET_SIZE`
    /// rather than written small: a backup that stores little writes one data pack, not one
    /// per worker.
    fn flush_all(&mut self) -> Result<()> {
        let mut merged = PackWriter::new(BlobType::Data);
        for i in 0..self.data.len() {
            let writer = std::mem::replace(&mut self.data[i], PackWriter::new(BlobType::Data));
            if merged.len() + writer.len() > PACK_TARGET_SIZE {
                let full = std::mem::replace(&mut merged, writer);
                self.upload(full)?;
            } else {
                merged.append(writer);
            }
        }
        self.upload(merged)?;
        let writer = std::mem::replace(&mut self.tree, PackWriter::new(BlobType::Tree));
        self.upload(writer)
    }

    /// Seals and hands over a pack unless it is empty; writes a segment when enough packs wait
    /// for one.
    fn upload(&mut self, writer: PackWriter) -> Result<()> {
        if writer.is_empty() {
            return Ok(());
        }
        let blob_type = writer.blob_type();
        let pack = writer.finish(self.repo.keys(), self.repo.id());
        self.stats.packs += 1;
        let Some(uploader) = self.uploader.as_mut() else {
            return Ok(());
        };
        // Uploads in parallel may end in any order: a tree pack waits for the data before it.
        if blob_type == BlobType::Tree && uploader.parallel() {
            uploader.wait()?;
        }
        let record = PackRecord {
            id: pack.id,
            size: pack.bytes.len() as u64,
            entries: pack.entries,
        };
        uploader.send(object_path(FileKind::Pack, &pack.id.0), pack.bytes)?;
        self.unindexed.push(record);
        let blobs: usize = self.unindexed.iter().map(|r| r.entries.len()).sum();
        if self.unindexed.len() >= PACKS_PER_SEGMENT || blobs >= SEGMENT_BLOBS {
            self.write_segment()?;
        }
        Ok(())
    }

    fn write_segment(&mut self) -> Result<()> {
        let Some(uploader) = self.uploader.as_mut() else {
            return Ok(());
        };
        uploader.wait()?;
        if self.unindexed.is_empty() {
            return Ok(());
        }
        if let Some(lock) = self.lock {
            lock.check()?;
        }
        let segment = IndexSegment {
            packs: std::mem::take(&mut self.unindexed),
        };
        let id = IndexId(self.repo.save_file(FileKind::Index, &segment.encode())?);
        self.index.add_segment(&id, &segment)?;
        self.stats.segments += 1;
        Ok(())
    }

    /// Uploads every open pack, waits for the uploads, then writes a segment listing all packs
    /// not yet in one.
    pub fn finish(mut self) -> Result<PackerStats> {
        self.flush_all()?;
        self.write_segment()?;
        Ok(self.stats.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::pack::MAX_BLOB_LEN;
    use crate::upload::MAX_UPLOADS;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Regression: a tree over the 1 GiB a blob may hold (a folder with a file of more than
    /// about 33 million chunks) was stored, with its length wrapped past 4 GiB, in a pack
    /// whose header no reader accepts, so the backup succeeded but could not be restored.
    #[test]
    fn a_blob_over_the_limit_is_refused_before_anything_is_written() {
        let repo = crate::repo::memory_repository();
        let cache = tempfile::tempdir().unwrap();
        let (mut index, _) = LocalIndex::open(cache.path(), &repo).unwrap();
        let mut packer = Packer::new(&repo, &mut index, 3).unwrap();
        // Zeroed pages from calloc are not touched: the check comes before any hashing.
        let huge = vec![0u8; MAX_BLOB_LEN as usize + 1];
        let err = packer.add(BlobType::Tree, &huge).unwrap_err();
        assert!(matches!(err, Error::BlobTooLarge { .. }), "{err}");
        drop(huge);
        packer.add(BlobType::Tree, b"small").unwrap();
        packer.finish().unwrap();
    }

    /// On storage that wants requests in flight, packs upload side by side, and a tree pack
    /// starts only once every data pack before it is written.
    #[test]
    fn packs_upload_in_parallel_and_tree_packs_after_their_data() {
        use crate::storage::OpendalStorage;
        use crate::storage::instrumented::Instrumented;
        use std::sync::atomic::{AtomicUsize, Ordering};

        let origin = OpendalStorage::memory_as_remote().unwrap();
        let mut storage = Instrumented::new(origin.another_handle().unwrap());
        let in_flight = Arc::new(AtomicUsize::new(0));
        // (path, uploads in flight when it started, packs written before it started)
        let starts = Arc::new(Mutex::new(Vec::new()));
        let written = Arc::new(Mutex::new(Vec::new()));
        let (f, st, w) = (in_flight.clone(), starts.clone(), written.clone());
        storage.before_write = Box::new(move |path, _| {
            if path.starts_with("packs/") {
                let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                lock(&st).push((path.to_string(), now, lock(&w).clone()));
                // The first upload waits (a while at most) for a second to start.
                let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
                while lock(&st).len() == 1 && std::time::Instant::now() < until {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                std::thread::sleep(std::time::Duration::from_millis(30));
            }
            Ok(())
        });
        let (f, w) = (in_flight.clone(), written.clone());
        storage.after_write = Box::new(move |_, path| {
            if path.starts_with("packs/") {
                f.fetch_sub(1, Ordering::SeqCst);
                lock(&w).push(path.to_string());
            }
        });
        let repo = crate::repo::repository_on(Box::new(storage));
        let cache = tempfile::tempdir().unwrap();
        let (mut index, _) = LocalIndex::open(cache.path(), &repo).unwrap();
        let mut packer = Packer::new(&repo, &mut index, 1).unwrap();
        add_noise(&mut packer, 100).unwrap();
        packer.add(BlobType::Tree, b"a tree").unwrap();
        let stats = packer.finish().unwrap();
        let starts = lock(&starts).clone();
        assert_eq!(starts.len() as u64, stats.packs);
        assert!(
            starts.iter().any(|(_, n, _)| *n > 1),
            "no two uploads overlapped"
        );
        assert!(starts.iter().all(|(_, n, _)| *n <= MAX_UPLOADS));
        let tree_packs: Vec<String> = index
            .blob_locations()
            .unwrap()
            .into_iter()
            .filter(|(blob, _)| *blob == repo.keys().blob_id(b"a tree"))
            .map(|(_, pack)| object_path(FileKind::Pack, &pack.0))
            .collect();
        assert_eq!(tree_packs.len(), 1);
        let (_, _, before_tree) = starts.iter().find(|(p, ..)| *p == tree_packs[0]).unwrap();
        assert_eq!(
            before_tree.len(),
            starts.len() - 1,
            "the tree pack started early"
        );
    }

    /// Each worker thread's blobs go to a pack of their own, so that a pack holds parts of the
    /// walk in order (a restore, going through the tree a part at a time, then reads each
    /// range once instead of once per thread); packs partly filled at the end are put
    /// together, so a small backup still writes one data pack.
    #[test]
    fn each_worker_thread_fills_a_pack_of_its_own() {
        let repo = crate::repo::memory_repository();
        let cache = tempfile::tempdir().unwrap();
        let (mut index, _) = LocalIndex::open(cache.path(), &repo).unwrap();
        let pool = worker_pool(2);
        let packer = Mutex::new(pool.install(|| Packer::new(&repo, &mut index, 1)).unwrap());
        let blob = |thread: usize, k: usize| format!("thread {thread} blob {k}").into_bytes();
        // The two threads take turns, so one packer for both would alternate their blobs.
        let turn = AtomicUsize::new(0);
        pool.broadcast(|ctx| {
            for k in 0..20 {
                while turn.load(Ordering::SeqCst) % 2 != ctx.index() {
                    std::thread::yield_now();
                }
                lock(&packer)
                    .add(BlobType::Data, &blob(ctx.index(), k))
                    .unwrap();
                turn.fetch_add(1, Ordering::SeqCst);
            }
        });
        packer.into_inner().unwrap().finish().unwrap();
        let mut placed = Vec::new();
        for t in 0..2 {
            for k in 0..20 {
                let (pack, entry) = index
                    .lookup(&repo.keys().blob_id(&blob(t, k)))
                    .unwrap()
                    .unwrap();
                placed.push((pack, entry.offset, t));
            }
        }
        placed.sort();
        assert!(
            placed.iter().all(|(pack, ..)| *pack == placed[0].0),
            "one data pack"
        );
        let runs = 1 + placed.windows(2).filter(|w| w[0].2 != w[1].2).count();
        assert_eq!(runs, 2, "each thread's blobs in one run");
    }

    /// Regression: blobs added from outside the worker pool (`copy`) went to packs closed at
    /// a worker's share of the open bytes (8 MiB with four workers) instead of full ones.
    #[test]
    fn a_thread_outside_the_pool_fills_full_packs() {
        let repo = crate::repo::memory_repository();
        let cache = tempfile::tempdir().unwrap();
        let (mut index, _) = LocalIndex::open(cache.path(), &repo).unwrap();
        let pool = worker_pool(4);
        let mut packer = pool.install(|| Packer::new(&repo, &mut index, 1)).unwrap();
        add_noise(&mut packer, 12).unwrap();
        assert_eq!(packer.finish().unwrap().packs, 1);
    }

    fn worker_pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    /// Adds `n` incompressible blobs of 1 MiB (a pack every 16) to `packer`; stops at the
    /// first error.
    fn add_noise(packer: &mut Packer, n: u64) -> Result<()> {
        for i in 0..n {
            let mut blob = vec![0u8; 1 << 20];
            let mut x = i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            for b in blob.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            packer.add(BlobType::Data, &blob)?;
        }
        Ok(())
    }

    /// Regression: after a failed upload, later packs were still uploaded and a segment could
    /// list both the failed pack and one never handed over. And an upload that panicked left
    /// the packer waiting for its result forever.
    #[test]
    fn after_a_failed_or_panicking_upload_nothing_more_is_written_or_indexed() {
        use crate::storage::OpendalStorage;
        use crate::storage::instrumented::Instrumented;
        use std::sync::atomic::AtomicUsize;

        for panics in [false, true] {
            let origin = OpendalStorage::memory_as_remote().unwrap();
            let mut storage = Instrumented::new(origin.another_handle().unwrap());
            let packs = Arc::new(AtomicUsize::new(0));
            let seen = packs.clone();
            storage.before_write = Box::new(move |path, _| {
                if !path.starts_with("packs/") {
                    return Ok(());
                }
                match seen.fetch_add(1, Ordering::SeqCst) {
                    0 if panics => panic!("upload hook"),
                    0 => Err(Error::Invalid("refused".into())),
                    _ => Ok(()),
                }
            });
            let repo = crate::repo::repository_on(Box::new(storage));
            let cache = tempfile::tempdir().unwrap();
            let (mut index, _) = LocalIndex::open(cache.path(), &repo).unwrap();
            let mut packer = Packer::new(&repo, &mut index, 1).unwrap();
            // As `copy` did: finish after an error, which must fail too.
            let _ = add_noise(&mut packer, 600);
            assert!(packer.finish().is_err(), "panics: {panics}");
            assert!(repo.storage().list("index", true).unwrap().is_empty());
            // Uploads already in flight may finish; nothing is handed over after the error.
            let written = repo.storage().list("packs", true).unwrap().len();
            assert!(
                written <= MAX_UPLOADS + 2,
                "{written} packs written after the failure"
            );
        }
    }

    /// Regression: a backup suspended past the lock's stale time, whose unindexed packs a
    /// prune deleted meanwhile, still wrote an index segment listing them.
    #[test]
    fn no_segment_is_written_once_the_lock_is_lost() {
        let repo = crate::repo::memory_repository();
        let cache = tempfile::tempdir().unwrap();
        let (mut index, _) = LocalIndex::open(cache.path(), &repo).unwrap();
        let held = RepositoryLock::acquire(&repo, false, std::time::Duration::ZERO).unwrap();
        crate::repo::lock::unlock(&repo, true).unwrap();
        let mut packer = Packer::new(&repo, &mut index, 3)
            .unwrap()
            .guarded_by(Some(&held));
        packer.add(BlobType::Data, b"data").unwrap();
        let err = packer.finish().unwrap_err();
        assert!(matches!(err, Error::LockLost { .. }), "{err}");
        assert!(repo.storage().list("index", true).unwrap().is_empty());
    }
}
