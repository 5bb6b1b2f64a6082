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
    /// Segments deleted between listing and reading (by a repair or prune running beside).
    pub vanished_segments: Vec<IndexId>,
    pub packs: Vec<IndexedPack>,
    pack_pos: IdMap<PackId, usize>,
    /// Every location as (blob, position in `packs`, position in its entries), sorted by
    /// blob: a sorted vector takes a third of the memory of a hash map of this size.
    blobs: Vec<(BlobId, u32, u32)>,
    distinct: usize,
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
        let mut packs = Vec::new();
        let mut inventory = Inventory::default();
        for (id, segment) in loaded {
            match segment {
                Ok(segment) => {
                    inventory.segments.push(id);
                    packs.extend(segment.packs.into_iter().map(|p| IndexedPack {
                        id: p.id,
                        size: p.size,
                        entries: p.entries,
                    }));
                }
                Err(Error::Storage {
                    not_found: true, ..
                }) => inventory.vanished_segments.push(id),
                Err(e) if e.is_integrity() => inventory.damaged_segments.push((id, e)),
                Err(e) => return Err(e),
            }
        }
        inventory.set_packs(packs);
        Ok(inventory)
    }

    /// Sets the packs (a pack listed twice keeps its first record) and indexes their blobs.
    pub fn set_packs(&mut self, packs: Vec<IndexedPack>) {
        self.packs.clear();
        self.pack_pos.clear();
        for pack in packs {
            if !self.pack_pos.contains_key(&pack.id) {
                self.pack_pos.insert(pack.id, self.packs.len());
                self.packs.push(pack);
            }
        }
        let count = self.packs.iter().map(|p| p.entries.len()).sum();
        let mut blobs = Vec::with_capacity(count);
        for (p, pack) in self.packs.iter().enumerate() {
            for (e, entry) in pack.entries.iter().enumerate() {
                blobs.push((entry.id, p as u32, e as u32));
            }
        }
        blobs.sort_unstable_by_key(|(id, _, _)| *id);
        self.distinct = blobs.chunk_by(|a, b| a.0 == b.0).count();
        self.blobs = blobs;
    }

    /// The positions in `blobs` of a blob's locations.
    fn span(&self, id: &BlobId) -> &[(BlobId, u32, u32)] {
        let start = self.blobs.partition_point(|(b, _, _)| b < id);
        let end = start + self.blobs[start..].partition_point(|(b, _, _)| b == id);
        &self.blobs[start..end]
    }

    pub fn pack(&self, id: &PackId) -> Option<&IndexedPack> {
        self.pack_pos.get(id).map(|&i| &self.packs[i])
    }

    /// Every place a blob is stored.
    pub fn locations(&self, id: &BlobId) -> impl Iterator<Item = (&IndexedPack, &BlobEntry)> {
        self.span(id).iter().map(|&(_, p, e)| {
            let pack = &self.packs[p as usize];
            (pack, &pack.entries[e as usize])
        })
    }

    pub fn contains(&self, id: &BlobId) -> bool {
        !self.span(id).is_empty()
    }

    /// The ids of `sorted` (ascending) that no segment lists, in one merge pass: far cheaper
    /// than a binary search each when there are many.
    pub fn unindexed(&self, sorted: &[BlobId]) -> Vec<BlobId> {
        let mut out = Vec::new();
        let mut listed = self.blobs.iter().map(|(id, _, _)| id).peekable();
        for id in sorted {
            while listed.next_if(|l| *l < id).is_some() {}
            if listed.peek() != Some(&id) {
                out.push(*id);
            }
        }
        out
    }

    /// The number of distinct blobs.
    pub fn blob_count(&self) -> usize {
        self.distinct
    }

    /// Every distinct blob with its number of locations.
    pub fn blobs(&self) -> impl Iterator<Item = (&BlobId, usize)> {
        self.blobs
            .chunk_by(|a, b| a.0 == b.0)
            .map(|group| (&group[0].0, group.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::BlobType;
    use crate::storage::{ListedObject, OpendalStorage, Storage};
    use proptest::prelude::*;

    /// A storage that lists one index segment more than it holds, as when the segment is
    /// deleted between the listing and the reading.
    struct Ghost(OpendalStorage);

    const GHOST: &str = "index/1111111111111111111111111111111111111111111111111111111111111111";

    impl Storage for Ghost {
        fn location(&self) -> &str {
            self.0.location()
        }
        fn read(&self, path: &str) -> Result<Vec<u8>> {
            self.0.read(path)
        }
        fn read_range(&self, path: &str, range: std::ops::Range<u64>) -> Result<Vec<u8>> {
            self.0.read_range(path, range)
        }
        fn write(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
            self.0.write(path, bytes)
        }
        fn list(&self, dir: &str, recursive: bool) -> Result<Vec<ListedObject>> {
            let mut listed = self.0.list(dir, recursive)?;
            if dir.starts_with("index") {
                listed.push(ListedObject {
                    path: GHOST.into(),
                    size: Some(1),
                });
            }
            Ok(listed)
        }
        fn exists(&self, path: &str) -> Result<bool> {
            self.0.exists(path)
        }
        fn size(&self, path: &str) -> Result<u64> {
            self.0.size(path)
        }
        fn delete(&self, path: &str) -> Result<()> {
            self.0.delete(path)
        }
    }

    /// Regression: a segment that vanished between listing and reading was skipped without a
    /// word, so prune counted its packs as listed by none and deleted them. It is now
    /// reported, and prune refuses to go on.
    #[test]
    fn a_segment_gone_between_listing_and_reading_is_reported() {
        let storage = Ghost(OpendalStorage::memory().unwrap());
        let repo = crate::repo::repository_on(Box::new(storage));
        let inventory = Inventory::load(&repo).unwrap();
        let ghost = GHOST.rsplit('/').next().unwrap();
        let vanished: Vec<String> = inventory
            .vanished_segments
            .iter()
            .map(|id| id.to_hex())
            .collect();
        assert_eq!(vanished, [ghost]);
    }

    fn entry(id: BlobId) -> BlobEntry {
        BlobEntry {
            id,
            blob_type: BlobType::Data,
            compression: 0,
            offset: 0,
            stored_len: 1,
            raw_len: 1,
        }
    }

    proptest! {
        /// The merge finds exactly what a lookup per id finds.
        #[test]
        fn unindexed_agrees_with_contains(
            indexed in proptest::collection::vec(any::<[u8; 2]>(), 0..60),
            asked in proptest::collection::btree_set(any::<[u8; 2]>(), 0..60),
        ) {
            let id = |b: [u8; 2]| {
                let mut full = [0u8; 32];
                full[..2].copy_from_slice(&b);
                BlobId(full)
            };
            let mut inventory = Inventory::default();
            inventory.set_packs(vec![IndexedPack {
                id: PackId([7; 32]),
                size: 0,
                entries: indexed.iter().map(|&b| entry(id(b))).collect(),
            }]);
            let asked: Vec<BlobId> = asked.into_iter().map(id).collect();
            let expected: Vec<BlobId> =
                asked.iter().filter(|b| !inventory.contains(b)).copied().collect();
            prop_assert_eq!(inventory.unindexed(&asked), expected);
        }
    }
}
