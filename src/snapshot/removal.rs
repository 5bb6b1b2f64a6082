//! Removal records (`removals/`): the snapshots one `forget` removes, written before any of
//! them is deleted. A snapshot a record names counts as removed even while its file is still
//! there, so an interrupted `forget` shows the state after it; the next `forget` or `prune`
//! deletes the rest and then the record.
//!
//! Plaintext: the snapshot ids, 32 bytes each, ascending (at least one).

use crate::error::{Error, Result};
use crate::ids::SnapshotId;
use crate::repo::{FileKind, Repository};

/// Every snapshot that a removal record names: removed, even while its file is still there.
/// A record that cannot be read is reported through `skipped` (with its id) and ignored: the
/// snapshots it names stay visible.
pub fn pending(
    repo: &Repository,
    skipped: &mut dyn FnMut([u8; 32], Error),
) -> Result<Vec<([u8; 32], Vec<SnapshotId>)>> {
    let mut out = Vec::new();
    for record in repo.list_ids(FileKind::Removal)? {
        match repo
            .load_file(FileKind::Removal, &record)
            .and_then(|bytes| decode(&record, &bytes))
        {
            Ok(ids) => out.push((record, ids)),
            Err(Error::Storage {
                not_found: true, ..
            }) => {} // finished meanwhile
            Err(e) if e.is_integrity() => skipped(record, e),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// A removal record: the snapshot ids, 32 bytes each, ascending.
pub fn encode(ids: &[SnapshotId]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.0).collect()
}

pub fn decode(record: &[u8; 32], bytes: &[u8]) -> Result<Vec<SnapshotId>> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(32) {
        return Err(Error::corrupt(
            "removal record",
            crate::ids::to_hex(record),
            format!("{} bytes are not a list of snapshot ids", bytes.len()),
        ));
    }
    Ok(bytes
        .chunks_exact(32)
        .filter_map(|c| <[u8; 32]>::try_from(c).ok().map(SnapshotId))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_records_round_trip_and_refuse_garbage() {
        let ids = vec![SnapshotId([1; 32]), SnapshotId([9; 32])];
        let r = [0; 32];
        assert_eq!(decode(&r, &encode(&ids)).unwrap(), ids);
        assert!(decode(&r, &[]).unwrap_err().is_integrity());
        assert!(decode(&r, &[0; 33]).unwrap_err().is_integrity());
    }
}
