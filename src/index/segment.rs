//! Index segments: encrypted files that list which blobs each pack holds. They are the
//! repository's own index; the local SQLite index is only a cache of their union.
//!
//! Plaintext layout: `pack_count: u32 LE`, then per pack `pack id: 32 bytes | pack size: u64 LE |
//! blob_count: u32 LE | blob_count × entry` (entries as in the pack header, see `pack`).

use crate::error::{Error, Result};
use crate::ids::{IndexId, PackId};
use crate::pack::{BlobEntry, decode_entries, encode_entries};

/// Segments written in one go (`repair index`, `prune`) hold at most this many blob entries
/// each (about 2.5 MB).
pub const SEGMENT_BLOBS: usize = 50_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackRecord {
    pub id: PackId,
    pub size: u64,
    pub entries: Vec<BlobEntry>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexSegment {
    pub packs: Vec<PackRecord>,
}

impl IndexSegment {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for p in &self.packs {
            out.extend_from_slice(&p.id.0);
            out.extend_from_slice(&p.size.to_le_bytes());
            out.extend_from_slice(&encode_entries(&p.entries));
        }
        out
    }

    pub fn decode(id: &IndexId, bytes: &[u8]) -> Result<Self> {
        Self::decode_inner(bytes).ok_or_else(|| Error::corrupt("index segment", id, "malformed"))
    }

    fn decode_inner(bytes: &[u8]) -> Option<Self> {
        let count = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let mut rest = &bytes[4..];
        // Each pack record takes at least 44 bytes; refuse counts the input cannot hold.
        if count > rest.len() / 44 {
            return None;
        }
        let mut packs = Vec::with_capacity(count);
        for _ in 0..count {
            let id = PackId::from_slice(rest.get(..32)?)?;
            let size = u64::from_le_bytes(rest.get(32..40)?.try_into().ok()?);
            let (entries, after) = decode_entries(rest.get(40..)?)?;
            if entries.iter().any(|e| e.end() > size) {
                return None;
            }
            packs.push(PackRecord { id, size, entries });
            rest = after;
        }
        rest.is_empty().then_some(IndexSegment { packs })
    }

    /// Groups pack records into segments of at most `SEGMENT_BLOBS` entries each (a pack is
    /// never split).
    pub fn split(records: Vec<PackRecord>) -> Vec<IndexSegment> {
        let mut out = vec![IndexSegment::default()];
        for r in records {
            let current = out.last_mut().expect("never empty");
            if !current.packs.is_empty() && current.blob_count() + r.entries.len() > SEGMENT_BLOBS {
                out.push(IndexSegment::default());
            }
            out.last_mut().expect("never empty").packs.push(r);
        }
        out
    }

    pub fn blob_count(&self) -> usize {
        self.packs.iter().map(|p| p.entries.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{BlobId, BlobType};
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let seg = IndexSegment {
            packs: vec![PackRecord {
                id: PackId([1; 32]),
                size: 1000,
                entries: vec![BlobEntry {
                    id: BlobId([2; 32]),
                    blob_type: BlobType::Data,
                    compression: 1,
                    offset: 0,
                    stored_len: 100,
                    raw_len: 200,
                }],
            }],
        };
        let id = IndexId([0; 32]);
        assert_eq!(IndexSegment::decode(&id, &seg.encode()).unwrap(), seg);
        let mut bad = seg.clone();
        bad.packs[0].size = 50;
        assert!(IndexSegment::decode(&id, &bad.encode()).is_err());
    }

    proptest! {
        #[test]
        fn decoding_never_panics(bytes: Vec<u8>) {
            let _ = IndexSegment::decode(&IndexId([0; 32]), &bytes);
        }
    }
}
