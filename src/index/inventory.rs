//! The repository's index as its segments state it, read straight from storage into memory,
//! without the local SQLite cache: what `check` compares everything against and what
//! `repair index` starts from.
//!
//! Guarantees: every readable segment is merged; a segment that cannot be read or decoded is
//! listed in `damaged_segments` and contributes nothing; a blob listed in several packs keeps
//! every location.

use rayon::prelude::*;

use super::segment::IndexSegment;
use crate::error::{Error, Result};
use crate::ids::{BlobId, IdMap, IndexId, PackId};
use crate::pack::BlobEntry;
use crate::repo::{FileKind, Repository};

/// A pack as the index segments describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexedPack {
    pub id: PackId,
    pub size: u64,
    pub entries: Vec<BlobEntry>,
}

#[derive(Default)]
pub struct Inventory {
    pub segments: Vec<IndexId>,
    pub damaged_segments: Vec<(IndexId, Error)>,
    pub packs: Vec<IndexedPack>,
    pack_pos: IdMap<PackId, usize>,
    /// blob → (position in `packs`, position in its entries); every location.
    blobs: IdMap<BlobId, Vec<(u32, u32)>>,
}

impl Inventory {
    /// Reads and merges every index segment in the repository.
    pub fn load(repo: &Repository) -> Result<Self> {
        let ids = repo.list_ids(FileKind::Index)?;
        let loaded: Vec<(IndexId, Result<IndexSegment>)> = ids
            .into_par_iter()
            .map(|id| {
                let id = IndexId(id);
                let segment = repo
                    .load_file(FileKind::Index, &id.0)
                    .and_then(|bytes| IndexSegment::decode(&id, &bytes));
                (id, segment)
            })
            .collect();
        let mut inventory = Inventory::default();
        for (id, segment) in loaded {
            match segment {
                Ok(segment) => {
                    inventory.segments.push(id);
                    for p in segment.packs {
                        inventory.add_pack(IndexedPack {
                            id: p.id,
                            size: p.size,
                            entries: p.entries,
                        });
                    }
                }
                // Deleted since listed, by a concurrent repair or prune.
                Err(Error::Storage {
                    not_found: true, ..
                }) => {}
                Err(e) if e.is_integrity() => inventory.damaged_segments.push((id, e)),
                Err(e) => return Err(e),
            }
        }
        Ok(inventory)
    }

    /// Adds a pack; a pack already present (listed by two segments) keeps its first record.
    pub fn add_pack(&mut self, pack: IndexedPack) {
        if self.pack_pos.contains_key(&pack.id) {
            return;
        }
        let pos = self.packs.len();
        for (i, e) in pack.entries.iter().enumerate() {
            self.blobs
                .entry(e.id)
                .or_default()
                .push((pos as u32, i as u32));
        }
        self.pack_pos.insert(pack.id, pos);
        self.packs.push(pack);
    }

    pub fn pack(&self, id: &PackId) -> Option<&IndexedPack> {
        self.pack_pos.get(id).map(|&i| &self.packs[i])
    }

    /// Every place a blob is stored.
    pub fn locations(&self, id: &BlobId) -> impl Iterator<Item = (&IndexedPack, &BlobEntry)> {
        self.blobs.get(id).into_iter().flatten().map(|&(p, e)| {
            let pack = &self.packs[p as usize];
            (pack, &pack.entries[e as usize])
        })
    }

    pub fn contains(&self, id: &BlobId) -> bool {
        self.blobs.contains_key(id)
    }

    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    /// Every blob with its locations.
    pub fn blobs(&self) -> impl Iterator<Item = (&BlobId, usize)> {
        self.blobs.iter().map(|(id, locs)| (id, locs.len()))
    }
}
