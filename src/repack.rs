//! Copying verified blobs into new packs, as they are: the sealed bytes move, nothing is
//! re-encrypted. Used by `prune` (packs with too much unused data) and by `repair index`
//! (salvaging packs whose header is damaged).
//!
//! Guarantees: only blobs that authenticate (exactly the bytes written for that id, type and
//! repository) are copied; every new pack is written (durably, see `Storage::write`) before
//! `finish` returns; full packs are written by a background thread as they fill, and the
//! next source pack is read while the current one is copied, so memory stays at about six
//! packs (two being filled, one being written, one queued, one waiting to be queued, and
//! the needed blobs of two sources).

use rayon::prelude::*;

use crate::error::Result;
use crate::ids::BlobType;
use crate::ids::PackId;
use crate::index::PackRecord;
use crate::pack::{BlobEntry, PackWriter, SealedBlob, authenticate_blob};
use crate::repo::{FileKind, Repository, object_path};

/// Blobs of one pack closer than this are read in one range read.
const READ_GAP: u64 = 256 * 1024;

pub struct Repacker<'a> {
    repo: &'a Repository,
    /// Data and tree blobs go to separate packs, as in a backup.
    writers: [PackWriter; 2],
    records: Vec<PackRecord>,
    /// Writes full packs while the next ones are read and filled (`None` in a dry run).
    upload: Option<Upload>,
}

/// A thread that writes finished packs, one at a time, while the caller goes on.
struct Upload {
    jobs: Option<std::sync::mpsc::SyncSender<(String, Vec<u8>)>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Upload {
    fn start(repo: &Repository) -> Result<Self> {
        let storage = repo.shared_storage();
        let (jobs, queue) = std::sync::mpsc::sync_channel::<(String, Vec<u8>)>(1);
        let thread = std::thread::Builder::new()
            .name("cairn-repack".into())
            .spawn(move || {
                for (path, bytes) in queue {
                    storage.write(&path, bytes)?;
                }
                Ok(())
            })
            .map_err(|e| crate::error::Error::io("repack upload thread", e))?;
        Ok(Upload {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    fn send(&mut self, path: String, bytes: Vec<u8>) -> Result<()> {
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|j| j.send((path, bytes)).is_ok());
        if sent { Ok(()) } else { self.finish() }
    }

    /// Waits for every write; the first error, if any.
    fn finish(&mut self) -> Result<()> {
        self.jobs.take();
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(crate::error::Error::Invalid(
                "the repack upload thread failed".into(),
            )),
            None => Ok(()),
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

impl<'a> Repacker<'a> {
    /// A repacker; with `dry_run` it builds packs but writes none.
    pub fn new(repo: &'a Repository, dry_run: bool) -> Result<Self> {
        Ok(Repacker {
            repo,
            writers: [
                PackWriter::new(BlobType::Data),
                PackWriter::new(BlobType::Tree),
            ],
            records: Vec::new(),
            upload: if dry_run {
                None
            } else {
                Some(Upload::start(repo)?)
            },
        })
    }

    /// Authenticates the blob `entry` describes in `sealed` (read from `pack`) and copies it.
    pub fn add(&mut self, pack: &PackId, entry: &BlobEntry, sealed: &[u8]) -> Result<()> {
        authenticate_blob(self.repo.keys(), self.repo.id(), pack, entry, sealed)?;
        self.add_authenticated(entry, sealed)
    }

    fn add_authenticated(&mut self, entry: &BlobEntry, sealed: &[u8]) -> Result<()> {
        let slot = usize::from(entry.blob_type == BlobType::Tree);
        self.writers[slot].add(SealedBlob {
            id: entry.id,
            blob_type: entry.blob_type,
            compression: entry.compression,
            raw_len: entry.raw_len,
            bytes: sealed.to_vec(),
        });
        if self.writers[slot].is_full() {
            let blob_type = self.writers[slot].blob_type();
            let full = std::mem::replace(&mut self.writers[slot], PackWriter::new(blob_type));
            self.write(full)?;
        }
        Ok(())
    }

    /// Copies, for each `(pack, entries)`, those blobs of that pack, reading only their bytes
    /// (neighbours closer than `READ_GAP` in one read). The next pack is read and
    /// authenticated while the current one is copied, so at most two packs' worth of needed
    /// blobs are held. Stops at the first blob that does not authenticate.
    pub fn copy_from(&mut self, jobs: &[(PackId, Vec<BlobEntry>)]) -> Result<()> {
        let repo = self.repo;
        let mut fetched = jobs.first().map(|job| fetch(repo, job));
        for (i, job) in jobs.iter().enumerate() {
            let current = fetched.take().unwrap_or_else(|| fetch(repo, job))?;
            let (copied, next) = rayon::join(
                || self.copy_fetched(&current),
                || jobs.get(i + 1).map(|next| fetch(repo, next)),
            );
            copied?;
            fetched = next;
        }
        Ok(())
    }

    fn copy_fetched(&mut self, runs: &[FetchedRun]) -> Result<()> {
        for run in runs {
            for e in &run.entries {
                self.add_authenticated(e, run.sealed(e))?;
            }
        }
        Ok(())
    }

    fn write(&mut self, writer: PackWriter) -> Result<()> {
        let finished = writer.finish(self.repo.keys(), self.repo.id());
        let record = PackRecord {
            id: finished.id,
            size: finished.bytes.len() as u64,
            entries: finished.entries,
        };
        if let Some(upload) = &mut self.upload {
            upload.send(object_path(FileKind::Pack, &finished.id.0), finished.bytes)?;
        }
        self.records.push(record);
        Ok(())
    }

    /// Writes the packs still open; returns every pack written.
    pub fn finish(mut self) -> Result<Vec<PackRecord>> {
        let writers = std::mem::replace(
            &mut self.writers,
            [
                PackWriter::new(BlobType::Data),
                PackWriter::new(BlobType::Tree),
            ],
        );
        for w in writers.into_iter().filter(|w| !w.is_empty()) {
            self.write(w)?;
        }
        if let Some(upload) = &mut self.upload {
            upload.finish()?;
        }
        Ok(std::mem::take(&mut self.records))
    }
}

/// Needed blobs of one pack read in one range: the bytes from the first one's offset.
struct FetchedRun {
    base: u64,
    bytes: Vec<u8>,
    entries: Vec<BlobEntry>,
}

impl FetchedRun {
    fn sealed(&self, e: &BlobEntry) -> &[u8] {
        &self.bytes[(e.offset - self.base) as usize..(e.end() - self.base) as usize]
    }
}

/// Reads the needed blobs of a pack in a few range reads and authenticates them all (on all
/// cores: that is most of the work).
fn fetch(repo: &Repository, (pack, entries): &(PackId, Vec<BlobEntry>)) -> Result<Vec<FetchedRun>> {
    let mut sorted = entries.clone();
    sorted.sort_by_key(|e| e.offset);
    let mut runs = Vec::new();
    let mut start = 0;
    while start < sorted.len() {
        let mut end = start + 1;
        while end < sorted.len() && sorted[end].offset <= sorted[end - 1].end() + READ_GAP {
            end += 1;
        }
        let entries = sorted[start..end].to_vec();
        let base = entries[0].offset;
        let last = entries.iter().map(BlobEntry::end).max().unwrap_or(base);
        let run = FetchedRun {
            base,
            bytes: repo.read_pack_range(pack, base..last)?,
            entries,
        };
        run.entries
            .par_iter()
            .try_for_each(|e| authenticate_blob(repo.keys(), repo.id(), pack, e, run.sealed(e)))?;
        runs.push(run);
        start = end;
    }
    Ok(runs)
}
