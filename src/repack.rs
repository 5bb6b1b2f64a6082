//! Copying verified blobs into new packs, as they are: the sealed bytes move, nothing is
//! re-encrypted. Used by `prune` (packs with too much unused data) and by `repair index`
//! (salvaging packs whose header is damaged).
//!
//! Guarantees: only blobs that authenticate (exactly the bytes written for that id, type and
//! repository) are copied; every new pack is written
//! (durably, see `Storage::write`) before `finish` returns its record, and full packs are
//! written as they fill, so memory stays at about two packs.

use crate::error::Result;
use crate::ids::BlobType;
use crate::ids::PackId;
use crate::index::PackRecord;
use crate::pack::{BlobEntry, PackWriter, SealedBlob, authenticate_blob};
use crate::repo::{FileKind, Repository, object_path};

pub struct Repacker<'a> {
    repo: &'a Repository,
    /// Data and tree blobs go to separate packs, as in a backup.
    writers: [PackWriter; 2],
    records: Vec<PackRecord>,
    dry_run: bool,
}

impl<'a> Repacker<'a> {
    /// A repacker; with `dry_run` it builds packs but writes none.
    pub fn new(repo: &'a Repository, dry_run: bool) -> Self {
        Repacker {
            repo,
            writers: [
                PackWriter::new(BlobType::Data),
                PackWriter::new(BlobType::Tree),
            ],
            records: Vec::new(),
            dry_run,
        }
    }

    /// Authenticates the blob `entry` describes in `sealed` (read from `pack`) and copies it.
    pub fn add(&mut self, pack: &PackId, entry: &BlobEntry, sealed: &[u8]) -> Result<()> {
        authenticate_blob(self.repo.keys(), self.repo.id(), pack, entry, sealed)?;
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

    fn write(&mut self, writer: PackWriter) -> Result<()> {
        let finished = writer.finish(self.repo.keys(), self.repo.id());
        let record = PackRecord {
            id: finished.id,
            size: finished.bytes.len() as u64,
            entries: finished.entries,
        };
        if !self.dry_run {
            self.repo
                .storage()
                .write(&object_path(FileKind::Pack, &finished.id.0), finished.bytes)?;
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
        Ok(self.records)
    }
}
