//! `repair index`: rebuilds the index segments from the headers of the packs on storage. It
//! works with every segment gone.
//!
//! A pack whose header cannot be read (damaged, or the pack was cut short) is salvaged: the
//! blobs the old segments place inside it are read, each verified against its id, and the good
//! ones copied into a new pack; the damaged pack is then deleted. A damaged header therefore
//! never costs a blob that is still readable. A pack neither readable nor indexed is reported
//! and left alone. A pack in which the last `check --read-data` on this machine found damaged
//! blobs is salvaged the same way (the blobs its header lists): the damaged blobs then leave
//! the index, so no backup on any machine deduplicates against them any more, and the next
//! backup of their data stores it again, which heals every snapshot that needs it. A header that cannot be read for another reason than damage (a storage
//! error) stops the repair before anything is written.
//!
//! Order: the salvage packs are written first; then the packs salvaged for damaged blobs are
//! deleted (their headers are readable: still on storage after an interruption, the next
//! repair, on a machine that never ran the check, would index them again); then the new
//! segments are written, the old segments (all those listed at the start) deleted, and last
//! the packs salvaged for their headers. Salvage packs left in no segment by an interruption
//! are found and indexed by the next repair. Segments written
//! meanwhile by a concurrent backup are kept. The exclusive lock is checked before every
//! segment written and every file deleted: a repair that lost its lock (suspended for long,
//! and a prune elsewhere called it stale) stops before it changes what others rely on.

use std::collections::HashMap;

use rayon::prelude::*;
use serde::Serialize;

use crate::error::Result;
use crate::failpoint;
use crate::ids::{BlobId, IndexId, PackId};
use crate::index::{IndexSegment, IndexedPack, Inventory, PackRecord};
use crate::pack::{self, BlobEntry};
use crate::repack::Repacker;
use crate::repo::lock::RepositoryLock;
use crate::repo::{FileKind, Repository, object_path};

#[derive(Debug, Serialize)]
pub struct Salvaged {
    pub pack: PackId,
    /// Why it was salvaged: its header cannot be read, or blobs in it were found damaged.
    pub reason: String,
    /// Blobs copied into new packs (verified).
    pub blobs_saved: usize,
    /// Blobs the old index placed in it that are damaged or lie beyond its end.
    pub blobs_lost: usize,
    /// Whether the damaged pack was deleted (not in a dry run; not if nothing indexed it).
    pub deleted: bool,
    /// Neither its header nor any index says what it holds: it may hold blobs snapshots
    /// need, lost with it.
    pub contents_unknown: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct RepairIndexReport {
    pub packs_indexed: usize,
    /// Packs on storage that no readable segment listed.
    pub packs_added: Vec<PackId>,
    /// Packs the segments listed that are gone from storage.
    pub packs_dropped: Vec<PackId>,
    /// Blobs of the dropped packs that no pack on storage holds: lost with them (none if a
    /// backup since stored them again).
    pub blobs_lost_with_dropped: usize,
    /// Packs whose header cannot be read or that hold blobs found damaged, and what salvage
    /// made of them.
    pub salvaged: Vec<Salvaged>,
    /// Packs whose header lists other blobs than the old index did.
    pub packs_corrected: Vec<PackId>,
    pub segments_unreadable: usize,
    pub segments_written: usize,
    pub segments_removed: usize,
    /// False when the index was already right and nothing was written.
    pub changed: bool,
}

/// `found_damaged`: packs in which the last `check --read-data` found damaged blobs, with
/// how many.
pub fn run(
    repo: &Repository,
    lock: &RepositoryLock,
    found_damaged: &HashMap<PackId, usize>,
    dry_run: bool,
) -> Result<RepairIndexReport> {
    let old = Inventory::load(repo)?;
    let stored = repo.stored_packs()?;
    let mut report = RepairIndexReport {
        segments_unreadable: old.damaged_segments.len(),
        ..RepairIndexReport::default()
    };
    let mut ids: Vec<(PackId, u64)> = stored.into_iter().collect();
    ids.sort_unstable();
    let headers: Vec<(PackId, u64, Result<Vec<BlobEntry>>)> = ids
        .par_iter()
        .map(|&(id, size)| (id, size, pack::read_header(repo, &id, size)))
        .collect();
    let mut records = Vec::new();
    let mut to_salvage = Vec::new();
    for (id, size, header) in headers {
        let previous = old.pack(&id);
        let entries = match header {
            Ok(entries) if let Some(&damaged) = found_damaged.get(&id) => {
                let pack = IndexedPack { id, size, entries };
                let why = format!("check --read-data found {damaged} damaged blob(s) in it");
                to_salvage.push((pack, size, why, true));
                continue;
            }
            Ok(entries) => {
                match previous {
                    None => report.packs_added.push(id),
                    Some(p) if !same_entries(&p.entries, &entries) || p.size != size => {
                        report.packs_corrected.push(id)
                    }
                    Some(_) => {}
                }
                entries
            }
            // Only damage is repaired: a pack that could not be read for another reason (a
            // storage that failed to answer) may be whole, so nothing is changed.
            Err(e) if !e.is_integrity() => return Err(e),
            Err(e) => {
                if let Some(previous) = previous {
                    let why = format!("its header cannot be read ({e})");
                    to_salvage.push((previous.clone(), size, why, false));
                } else {
                    report.salvaged.push(Salvaged {
                        pack: id,
                        reason: format!("{e}; no index lists its blobs, so it was left alone"),
                        blobs_saved: 0,
                        blobs_lost: 0,
                        deleted: false,
                        contents_unknown: true,
                    });
                }
                continue;
            }
        };
        records.push(PackRecord { id, size, entries });
    }
    let on_storage: HashMap<PackId, ()> = ids.iter().map(|&(id, _)| (id, ())).collect();
    report.packs_dropped = old
        .packs
        .iter()
        .filter(|p| !on_storage.contains_key(&p.id))
        .map(|p| p.id)
        .collect();
    report.changed = !report.packs_added.is_empty()
        || !report.packs_dropped.is_empty()
        || !report.packs_corrected.is_empty()
        || !to_salvage.is_empty()
        || report.segments_unreadable > 0;
    if !report.changed {
        return Ok(report);
    }
    // (pack, whether its header is readable)
    let mut salvaged_packs = Vec::new();
    for (pack, size, reason, readable) in to_salvage {
        let (saved, lost, new_packs) = salvage(repo, &pack, size, dry_run)?;
        report.salvaged.push(Salvaged {
            pack: pack.id,
            reason,
            blobs_saved: saved,
            blobs_lost: lost,
            deleted: !dry_run,
            contents_unknown: false,
        });
        records.extend(new_packs);
        salvaged_packs.push((pack.id, readable));
        failpoint::hit("repair-index-salvaged");
    }
    let held: std::collections::HashSet<BlobId> = (records.iter())
        .flat_map(|r| r.entries.iter().map(|e| e.id))
        .collect();
    let dropped = old
        .packs
        .iter()
        .filter(|p| report.packs_dropped.contains(&p.id));
    report.blobs_lost_with_dropped = (dropped.flat_map(|p| &p.entries))
        .filter(|e| !held.contains(&e.id))
        .map(|e| e.id)
        .collect::<std::collections::HashSet<_>>()
        .len();
    report.packs_indexed = records.len();
    if dry_run {
        return Ok(report);
    }
    let (readable, unreadable): (Vec<_>, Vec<_>) = salvaged_packs.into_iter().partition(|p| p.1);
    let delete_packs = |packs: Vec<(PackId, bool)>| -> Result<()> {
        for (id, _) in packs {
            lock.check()?;
            repo.storage().delete(&object_path(FileKind::Pack, &id.0))?;
            failpoint::hit("repair-index-pack-deleted");
        }
        Ok(())
    };
    delete_packs(readable)?;
    for segment in IndexSegment::split(records) {
        lock.check()?;
        repo.save_file(FileKind::Index, &segment.encode())?;
        report.segments_written += 1;
        failpoint::hit("repair-index-segment-written");
    }
    let old_ids = old
        .segments
        .iter()
        .chain(old.damaged_segments.iter().map(|(id, _)| id));
    for id in old_ids {
        lock.check()?;
        delete_segment(repo, id)?;
        report.segments_removed += 1;
        failpoint::hit("repair-index-segment-deleted");
    }
    delete_packs(unreadable)?;
    Ok(report)
}

/// Copies the blobs of a damaged pack that verify whole into new packs (written unless
/// `dry_run`). Returns the blobs saved, the blobs lost, and the new packs.
fn salvage(
    repo: &Repository,
    pack: &IndexedPack,
    size: u64,
    dry_run: bool,
) -> Result<(usize, usize, Vec<PackRecord>)> {
    let bytes = repo.read_pack_range(&pack.id, 0..size)?;
    let mut repacker = Repacker::new(repo, dry_run)?;
    let mut lost = 0;
    for e in &pack.entries {
        let sealed = usize::try_from(e.offset)
            .ok()
            .zip(usize::try_from(e.end()).ok())
            .and_then(|(a, b)| bytes.get(a..b));
        // Verified whole (decompressed and hashed), not only authenticated: a blob that was
        // wrong when written (memory that flipped a bit before it was sealed) authenticates,
        // and copied it would be taken as stored again.
        let copied = match sealed {
            Some(sealed) => pack::verify_blob(repo.keys(), repo.id(), &pack.id, e, sealed)
                .and_then(|()| repacker.add(&pack.id, e, sealed)),
            None => Err(crate::error::Error::BlobNotFound { blob: e.id }),
        };
        match copied {
            Ok(()) => {}
            Err(err)
                if err.is_integrity()
                    || matches!(err, crate::error::Error::BlobNotFound { .. }) =>
            {
                lost += 1
            }
            Err(err) => return Err(err),
        }
    }
    Ok((pack.entries.len() - lost, lost, repacker.finish()?))
}

fn same_entries(a: &[BlobEntry], b: &[BlobEntry]) -> bool {
    pack::by_offset(a) == pack::by_offset(b)
}

fn delete_segment(repo: &Repository, id: &IndexId) -> Result<()> {
    repo.storage().delete(&object_path(FileKind::Index, &id.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    /// Packs in no segment are what `repair index` adds: with its lock lost (another process
    /// removed it as stale) it writes and deletes nothing; with its lock it adds them.
    #[test]
    fn a_repair_that_lost_its_lock_changes_nothing() {
        let repo = crate::repo::memory_repository();
        crate::repack::tests::repack_noise(&repo, 1).unwrap();
        let segments = || repo.storage().list("index", true).unwrap().len();
        assert_eq!(segments(), 0);
        let lock = RepositoryLock::acquire(&repo, true, std::time::Duration::ZERO).unwrap();
        for listed in repo.storage().list("locks", true).unwrap() {
            repo.storage().delete(&listed.path).unwrap();
        }
        let err = run(&repo, &lock, &HashMap::new(), false).unwrap_err();
        assert!(matches!(err, Error::LockLost { .. }), "{err}");
        assert_eq!(segments(), 0);
        drop(lock);

        let lock = RepositoryLock::acquire(&repo, true, std::time::Duration::ZERO).unwrap();
        let report = run(&repo, &lock, &HashMap::new(), false).unwrap();
        assert_eq!(report.packs_added.len(), 2);
        assert_eq!(segments(), report.segments_written);
        assert!(report.segments_written > 0);
    }
}
