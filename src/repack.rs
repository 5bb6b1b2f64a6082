//! Copying verified blobs into new packs, as they are: the sealed bytes move, nothing is
//! re-encrypted. Used by `prune` (packs with too much unused data) and by `repair index`
//! (salvaging packs whose header is damaged).
//!
//! Guarantees: only blobs that authenticate (exactly the bytes written for that id, type and
//! repository) are copied; every new pack is written (durably, see `Storage::write`) before
//! `finish` returns, and after a failed write no more are (`upload::Uploader`); full packs
//! are written in the background as they fill (several at once on object storage), and the
//! next source pack is read while the current one is copied, so memory stays at about six
//! packs on local disk (two being filled, one being written, one queued, one waiting to be
//! queued, and the needed blobs of two sources) and about twelve (some 190 MiB) on object
//! storage, where up to six are written at once.

use rayon::prelude::*;

use crate::error::Result;
use crate::ids::BlobType;
use crate::ids::PackId;
use crate::index::PackRecord;
use crate::pack::{BlobEntry, PackWriter, SealedBlob, authenticate_blob};
use crate::repo::{FileKind, Repository, object_path};
use crate::upload::Uploader;

/// Blobs of one pack closer than this are read in one range read.
const READ_GAP: u64 = 256 * 1024;

pub struct Repacker<'a> {
    repo: &'a Repository,
    /// Data and tree blobs go to separate packs, as in a backup.
    writers: [PackWriter; 2],
    records: Vec<PackRecord>,
    /// Writes full packs while the next ones are read and filled (`None` in a dry run).
    uploader: Option<Uploader>,
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
            uploader: if dry_run {
                None
            } else {
                Some(Uploader::start(repo)?)
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
        if let Some(uploader) = &mut self.uploader {
            uploader.send(object_path(FileKind::Pack, &finished.id.0), finished.bytes)?;
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
        if let Some(uploader) = &mut self.uploader {
            uploader.wait()?;
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::error::Error;
    use crate::ids::BlobId;
    use crate::pack::{PACK_TARGET_SIZE, seal_blob};
    use crate::storage::OpendalStorage;
    use crate::storage::instrumented::Instrumented;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Copies `packs` packs' worth of 1 MiB incompressible blobs; returns what `finish` gave.
    pub(crate) fn repack_noise(repo: &Repository, packs: usize) -> Result<Vec<PackRecord>> {
        let mut repacker = Repacker::new(repo, false)?;
        let blobs = packs * PACK_TARGET_SIZE / (1 << 20) + 1;
        for i in 0..blobs {
            let data: Vec<u8> = crate::chunk::tests::seeded_bytes(i as u64, 1 << 20);
            let id: BlobId = repo.keys().blob_id(&data);
            let sealed = seal_blob(repo.keys(), repo.id(), BlobType::Data, id, &data, 1);
            let entry = BlobEntry {
                id,
                blob_type: BlobType::Data,
                compression: sealed.compression,
                offset: 0,
                stored_len: sealed.bytes.len() as u32,
                raw_len: sealed.raw_len,
            };
            repacker.add(&PackId::default(), &entry, &sealed.bytes)?;
        }
        repacker.finish()
    }

    /// Prune and repair write through the packer's uploader: several packs at once on
    /// object storage, and after a failed write, an error and nothing more written.
    #[test]
    fn repacked_packs_are_all_written_or_the_repack_fails() {
        let origin = OpendalStorage::memory_as_remote().unwrap();
        let repo = crate::repo::repository_on(Box::new(origin.another_handle().unwrap()));
        let records = repack_noise(&repo, 3).unwrap();
        assert_eq!(records.len(), 4);
        let written = repo.storage().list("packs", true).unwrap().len();
        assert_eq!(written, 4, "every pack finish reported is on storage");

        let origin = OpendalStorage::memory_as_remote().unwrap();
        let mut storage = Instrumented::new(origin.another_handle().unwrap());
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        storage.before_write = Box::new(move |path, _| match path.starts_with("packs/") {
            true if count.fetch_add(1, Ordering::SeqCst) == 1 => {
                Err(Error::Invalid("refused".into()))
            }
            _ => Ok(()),
        });
        let failing = crate::repo::repository_on(Box::new(storage));
        assert!(repack_noise(&failing, 12).is_err());
        let attempted = seen.load(Ordering::SeqCst);
        assert!(
            attempted <= 2 + crate::upload::MAX_UPLOADS + 2,
            "{attempted} pack writes after the failure"
        );
    }
}
