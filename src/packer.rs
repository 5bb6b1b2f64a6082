//! The packer: turns blobs into packs on storage and index segments that list them.
//!
//! Guarantees (design rule 3): a blob is reported as stored only if it is in the local index
//! or was added in this run; a pack is uploaded before any index segment lists it; a data pack
//! is always uploaded before the tree pack that follows it, so an indexed tree never points at
//! data that is not stored; `finish` uploads every open pack and a segment for every uploaded
//! pack, and only then may a snapshot refer to them.

use std::collections::HashSet;

use crate::error::Result;
use crate::ids::{BlobId, BlobType, IndexId};
use crate::index::{IndexSegment, LocalIndex, PackRecord};
use crate::pack::{PackWriter, SealedBlob, seal_blob};
use crate::repo::{FileKind, Repository};

/// After this many packs without a segment, a segment is written, so an interrupted backup
/// leaves its uploaded packs indexed and the next run does not upload them again.
const PACKS_PER_SEGMENT: usize = 32;

#[derive(Clone, Debug, Default)]
pub struct PackerStats {
    pub data_blobs: u64,
    pub tree_blobs: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub packs: u64,
    pub segments: u64,
}

pub struct Packer<'a> {
    repo: &'a Repository,
    index: &'a mut LocalIndex,
    zstd_level: i32,
    data: PackWriter,
    tree: PackWriter,
    added: HashSet<BlobId>,
    unindexed: Vec<PackRecord>,
    stats: PackerStats,
}

impl<'a> Packer<'a> {
    pub fn new(repo: &'a Repository, index: &'a mut LocalIndex, zstd_level: i32) -> Self {
        Packer {
            repo,
            index,
            zstd_level,
            data: PackWriter::new(BlobType::Data),
            tree: PackWriter::new(BlobType::Tree),
            added: HashSet::new(),
            unindexed: Vec::new(),
            stats: PackerStats::default(),
        }
    }

    pub fn index(&self) -> &LocalIndex {
        self.index
    }

    /// True if the blob is already stored (indexed) or added in this run.
    pub fn has(&self, id: &BlobId) -> Result<bool> {
        Ok(self.added.contains(id) || self.index.contains(id)?)
    }

    /// Stores a blob unless it is already stored; returns its id.
    pub fn add(&mut self, blob_type: BlobType, plaintext: &[u8]) -> Result<BlobId> {
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

    /// Appends a blob that was sealed elsewhere (e.g. on a worker thread). The caller has
    /// checked `has`; a duplicate is dropped here anyway.
    pub fn add_sealed(&mut self, blob: SealedBlob) -> Result<()> {
        if !self.added.insert(blob.id) {
            return Ok(());
        }
        match blob.blob_type {
            BlobType::Data => self.stats.data_blobs += 1,
            BlobType::Tree => self.stats.tree_blobs += 1,
        }
        self.stats.raw_bytes += u64::from(blob.raw_len);
        self.stats.stored_bytes += blob.bytes.len() as u64;
        let blob_type = blob.blob_type;
        self.writer(blob_type).add(blob);
        if self.writer(blob_type).is_full() {
            self.flush(blob_type)?;
        }
        Ok(())
    }

    fn writer(&mut self, t: BlobType) -> &mut PackWriter {
        match t {
            BlobType::Data => &mut self.data,
            BlobType::Tree => &mut self.tree,
        }
    }

    fn flush(&mut self, blob_type: BlobType) -> Result<()> {
        if blob_type == BlobType::Tree {
            self.flush(BlobType::Data)?;
        }
        if self.writer(blob_type).is_empty() {
            return Ok(());
        }
        let writer = std::mem::replace(self.writer(blob_type), PackWriter::new(blob_type));
        let pack = writer.finish(self.repo.keys(), self.repo.id());
        let size = pack.bytes.len() as u64;
        let id = self.repo.write_pack(pack.bytes)?;
        debug_assert_eq!(id, pack.id);
        self.stats.packs += 1;
        self.unindexed.push(PackRecord {
            id,
            size,
            entries: pack.entries,
        });
        if self.unindexed.len() >= PACKS_PER_SEGMENT {
            self.write_segment()?;
        }
        Ok(())
    }

    fn write_segment(&mut self) -> Result<()> {
        if self.unindexed.is_empty() {
            return Ok(());
        }
        let segment = IndexSegment {
            packs: std::mem::take(&mut self.unindexed),
        };
        let id = IndexId(self.repo.save_file(FileKind::Index, &segment.encode())?);
        self.index.add_segment(&id, &segment)?;
        self.stats.segments += 1;
        Ok(())
    }

    /// Uploads every open pack, then a segment listing all packs not yet in one.
    pub fn finish(mut self) -> Result<PackerStats> {
        self.flush(BlobType::Tree)?;
        self.flush(BlobType::Data)?;
        self.write_segment()?;
        Ok(self.stats)
    }
}
