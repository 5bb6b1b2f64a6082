//! `prune`: frees the space of data no snapshot needs.
//!
//! Under an exclusive lock: every blob reachable from the snapshots is marked; packs with no
//! needed blob are deleted; packs whose unneeded share exceeds `max_unused` are repacked (their
//! needed blobs verified and copied into new packs first); packs no index lists (left by
//! interrupted backups) are deleted.
//!
//! Order (the commit protocol): new packs; new index segments listing every pack kept or
//! written; the generation raised (every client's local index starts over); the old segments
//! deleted; last the packs. Killed at any point, the repository is as before or as after, plus
//! packs no segment lists, which the next prune deletes. It refuses to delete anything when a
//! snapshot, tree or index segment cannot be read.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::failpoint;
use crate::ids::{BlobId, IdSet, PackId, SnapshotId};
use crate::index::{IndexSegment, IndexedPack, Inventory, PackRecord};
use crate::repack::Repacker;
use crate::repo::lock::RepositoryLock;
use crate::repo::{FileKind, Repository, object_path};

/// Threads that read and decode trees while marking.
const MARK_THREADS: usize = 8;

pub struct PruneOptions {
    /// Repack a pack when more than this share of its bytes is unneeded (0.05 = 5%).
    pub max_unused: f64,
    pub dry_run: bool,
    /// Blob locations found damaged (by the last `check --read-data` on this machine). A
    /// damaged copy of a blob that is also stored intact elsewhere counts as unneeded, so the
    /// intact copy is the one kept.
    pub damaged: HashSet<(BlobId, PackId)>,
    /// Snapshots to count as removed (a dry run of `forget --prune`).
    pub without: Vec<SnapshotId>,
}

#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    pub snapshots: usize,
    pub packs_before: usize,
    pub bytes_before: u64,
    pub packs_deleted: usize,
    pub bytes_deleted: u64,
    pub packs_repacked: usize,
    pub bytes_repacked: u64,
    pub packs_written: usize,
    pub bytes_written: u64,
    /// Packs on storage that no index segment listed.
    pub packs_unindexed_deleted: usize,
    pub blobs_removed: usize,
    /// Files that failed writes left behind (local disk: in `tmp/`).
    pub leftovers_removed: usize,
    pub duration_ns: u64,
    pub dry_run: bool,
}

/// Leftovers of failed writes younger than this are left alone.
const LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// What happens to one pack.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fate {
    Keep,
    Repack,
    Delete,
}

/// Assigns every needed blob to one pack (the first that holds it, packs with the most needed
/// data first, missing packs last), so duplicates count as unneeded; returns each pack's fate.
/// A missing pack whose needed blobs are all stored again elsewhere is dropped from the index.
fn plan(
    inventory: &Inventory,
    stored: &HashMap<PackId, u64>,
    used: &IdSet<BlobId>,
    opts: &PruneOptions,
) -> Result<Vec<(usize, Fate, Vec<usize>)>> {
    // A pack cut short counts as missing: blobs past its end are gone.
    let present = |pack: &IndexedPack| stored.get(&pack.id) == Some(&pack.size);
    let intact = |blob: &BlobId, pack: &IndexedPack| {
        present(pack) && !opts.damaged.contains(&(*blob, pack.id))
    };
    let replaced_copy = |blob: &BlobId, pack: &PackId| {
        opts.damaged.contains(&(*blob, *pack))
            && inventory.locations(blob).any(|(p, _)| intact(blob, p))
    };
    let mut order: Vec<usize> = (0..inventory.packs.len()).collect();
    let used_bytes = |p: &IndexedPack| -> u64 {
        p.entries
            .iter()
            .filter(|e| used.contains(&e.id))
            .map(|e| u64::from(e.stored_len))
            .sum()
    };
    order.sort_by_key(|&i| {
        let pack = &inventory.packs[i];
        (!present(pack), std::cmp::Reverse(used_bytes(pack)))
    });
    let mut claimed: IdSet<BlobId> = IdSet::default();
    let mut fates = Vec::new();
    for i in order {
        let pack = &inventory.packs[i];
        let keep: Vec<usize> = pack
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                used.contains(&e.id) && !claimed.contains(&e.id) && !replaced_copy(&e.id, &pack.id)
            })
            .map(|(n, _)| n)
            .collect();
        if !present(pack) {
            if !keep.is_empty() {
                return Err(Error::Invalid(format!(
                    "pack {} is missing or cut short but holds data snapshots need; nothing was deleted. Run `cairn check`, then `cairn repair index`",
                    pack.id
                )));
            }
            fates.push((i, Fate::Delete, keep));
            continue;
        }
        for &n in &keep {
            claimed.insert(pack.entries[n].id);
        }
        let kept_bytes: u64 = keep
            .iter()
            .map(|&n| u64::from(pack.entries[n].stored_len))
            .sum();
        let blob_bytes: u64 = pack.entries.iter().map(|e| u64::from(e.stored_len)).sum();
        // A needed blob whose only copy is this damaged one cannot be copied (it fails
        // authentication): the pack stays as it is until no snapshot needs the blob.
        let uncopyable = keep
            .iter()
            .any(|&n| opts.damaged.contains(&(pack.entries[n].id, pack.id)));
        let fate = if keep.is_empty() {
            Fate::Delete
        } else if uncopyable {
            Fate::Keep
        } else if (blob_bytes - kept_bytes) as f64 > opts.max_unused * pack.size as f64
            || pack.entries.iter().any(|e| replaced_copy(&e.id, &pack.id))
        {
            Fate::Repack
        } else {
            Fate::Keep
        };
        fates.push((i, fate, keep));
    }
    Ok(fates)
}

pub fn run(repo: &Repository, lock: &RepositoryLock, opts: &PruneOptions) -> Result<PruneReport> {
    let started = Instant::now();
    // Snapshots an interrupted forget committed to removing are removed first (or, in a dry
    // run, counted as removed).
    let mut without = opts.without.clone();
    if opts.dry_run {
        let pending = crate::snapshot::removal::pending(repo, &mut |_, _| {})?;
        without.extend(pending.into_iter().flat_map(|(_, ids)| ids));
    } else {
        lock.check()?;
        // Gone now, and perhaps still listed where listings lag behind deletions.
        without.extend(crate::retention::forget::finish_pending(repo)?);
    }
    // Under the exclusive lock only writes of processes waiting for a lock can be under way:
    // seconds, not hours.
    let leftovers_removed = match opts.dry_run {
        true => 0,
        false => repo.storage().remove_leftovers(LEFTOVER_AGE)?,
    };
    let inventory = Inventory::load(repo)?;
    if let Some((id, e)) = inventory.damaged_segments.first() {
        return Err(Error::Invalid(format!(
            "index segment {id} cannot be read ({e}); nothing was deleted. Run `cairn repair index` first"
        )));
    }
    // Under prune's exclusive lock no one deletes segments; one gone means the lock was not
    // respected (clocks far apart make a live lock look stale), and the packs it listed would
    // count as listed by none and be deleted.
    if let Some(id) = inventory.vanished_segments.first() {
        return Err(Error::Invalid(format!(
            "index segment {id} vanished while prune read the index: another process changes the repository despite the lock; nothing was deleted. Make sure no other prune or repair runs (and that clocks agree), then run prune again"
        )));
    }
    let stored = repo.stored_packs()?;
    tracing::debug!(
        packs = stored.len(),
        "prune: index segments read, packs listed"
    );
    // Marking reads trees level by level; more reads in flight than cores keeps a cold disk
    // (or a remote store) busy.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(MARK_THREADS)
        .build()
        .map_err(|e| Error::Invalid(format!("cannot start worker threads: {e}")))?;
    let (snapshots, used) =
        pool.install(|| crate::check::used_blobs(repo, &inventory, &without))?;
    tracing::debug!(blobs = used.len(), "prune: needed blobs marked");
    let fates = plan(&inventory, &stored, &used, opts)?;
    let mut report = PruneReport {
        snapshots,
        packs_before: stored.len(),
        bytes_before: stored.values().sum(),
        leftovers_removed,
        dry_run: opts.dry_run,
        ..PruneReport::default()
    };
    let mut doomed: Vec<PackId> = stored
        .keys()
        .filter(|id| inventory.pack(id).is_none())
        .copied()
        .collect();
    report.packs_unindexed_deleted = doomed.len();
    report.bytes_deleted = doomed.iter().map(|id| stored[id]).sum();
    let mut kept: Vec<PackRecord> = Vec::new();
    let mut repacker = Repacker::new(repo, opts.dry_run)?;
    let mut to_repack = Vec::new();
    for (i, fate, keep) in &fates {
        let pack = &inventory.packs[*i];
        let size = stored.get(&pack.id).copied().unwrap_or(0);
        match fate {
            Fate::Keep => kept.push(PackRecord {
                id: pack.id,
                size: pack.size,
                entries: pack.entries.clone(),
            }),
            Fate::Delete => {
                report.packs_deleted += usize::from(size > 0);
                report.bytes_deleted += size;
                report.blobs_removed += pack.entries.len();
                doomed.push(pack.id);
            }
            Fate::Repack => {
                let needed: Vec<_> = keep.iter().map(|&n| pack.entries[n]).collect();
                to_repack.push((pack.id, needed));
                report.packs_repacked += 1;
                report.bytes_repacked += size;
                report.blobs_removed += pack.entries.len() - keep.len();
                doomed.push(pack.id);
            }
        }
    }
    repacker.copy_from(&to_repack)?;
    let written = repacker.finish()?;
    tracing::debug!("prune: repacked");
    failpoint::hit("prune-packs-written");
    report.packs_written = written.len();
    report.bytes_written = written.iter().map(|r| r.size).sum();
    if opts.dry_run || (doomed.is_empty() && written.is_empty()) {
        report.duration_ns = started.elapsed().as_nanos() as u64;
        return Ok(report);
    }
    kept.extend(written);
    for segment in IndexSegment::split(kept) {
        lock.check()?;
        repo.save_file(FileKind::Index, &segment.encode())?;
        failpoint::hit("prune-segment-written");
    }
    repo.raise_generation(|| lock.check())?;
    failpoint::hit("prune-generation-raised");
    tracing::debug!("prune: new index written, generation raised");
    let segments = inventory.segments.iter().map(|id| (FileKind::Index, &id.0));
    delete_all(repo, lock, segments, "prune-segment-deleted")?;
    let packs = doomed.iter().map(|id| (FileKind::Pack, &id.0));
    delete_all(repo, lock, packs, "prune-pack-deleted")?;
    tracing::debug!("prune: deleted");
    report.duration_ns = started.elapsed().as_nanos() as u64;
    Ok(report)
}

/// Deletes the files, as many at once as the storage wants requests in flight, and checks
/// the lock before each batch: each deletion gives up within the storage's deadline for it,
/// so a batch ends within the lock's margin.
fn delete_all<'i>(
    repo: &Repository,
    lock: &RepositoryLock,
    files: impl Iterator<Item = (FileKind, &'i [u8; 32])>,
    failpoint_name: &str,
) -> Result<()> {
    let paths: Vec<String> = files.map(|(kind, id)| object_path(kind, id)).collect();
    for batch in paths.chunks(repo.requests_in_flight().max(1)) {
        lock.check()?;
        let delete = |path: &String| {
            repo.storage().delete(path)?;
            failpoint::hit(failpoint_name);
            Ok(())
        };
        if let [path] = batch {
            delete(path)?;
            continue;
        }
        std::thread::scope(|scope| {
            let running: Vec<_> = batch
                .iter()
                .map(|p| scope.spawn(move || delete(p)))
                .collect();
            let results: Vec<Result<()>> = running
                .into_iter()
                .map(|r| {
                    r.join()
                        .unwrap_or_else(|_| Err(Error::Invalid("a deletion panicked".into())))
                })
                .collect();
            results.into_iter().collect::<Result<()>>()
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::BlobEntry;
    use crate::storage::OpendalStorage;

    /// Deleting in batches on threads deletes every file and nothing else, and stops at the
    /// first batch once the lock is lost.
    #[test]
    fn batched_deletion_deletes_every_file_and_stops_without_the_lock() {
        let storage = OpendalStorage::memory_as_remote().unwrap();
        let repo = crate::repo::repository_on(Box::new(storage));
        let ids: Vec<[u8; 32]> = (0..20u8).map(|i| [i; 32]).collect();
        for id in &ids {
            repo.storage()
                .write(&object_path(FileKind::Pack, id), vec![1])
                .unwrap();
        }
        let keep = object_path(FileKind::Pack, &[99; 32]);
        repo.storage().write(&keep, vec![1]).unwrap();
        let lock = RepositoryLock::acquire(&repo, true, std::time::Duration::ZERO).unwrap();
        let doomed = ids.iter().map(|id| (FileKind::Pack, id));
        delete_all(&repo, &lock, doomed, "test-deleted").unwrap();
        let left = repo.storage().list("packs", true).unwrap();
        assert_eq!(left.into_iter().map(|o| o.path).collect::<Vec<_>>(), [keep]);

        for id in &ids {
            repo.storage()
                .write(&object_path(FileKind::Pack, id), vec![1])
                .unwrap();
        }
        for listed in repo.storage().list("locks", true).unwrap() {
            repo.storage().delete(&listed.path).unwrap();
        }
        let doomed = ids.iter().map(|id| (FileKind::Pack, id));
        let err = delete_all(&repo, &lock, doomed, "test-deleted").unwrap_err();
        assert!(matches!(err, Error::LockLost { .. }), "{err}");
        assert_eq!(repo.storage().list("packs", true).unwrap().len(), 21);
    }

    fn entry(id: u8, offset: u64) -> BlobEntry {
        BlobEntry {
            id: BlobId([id; 32]),
            blob_type: crate::ids::BlobType::Data,
            compression: 0,
            offset,
            stored_len: 100,
            raw_len: 100,
        }
    }

    /// Regression: a pack holding the only copy of a needed blob, found damaged, was chosen
    /// for repacking (for its unneeded space); copying that blob failed authentication, so
    /// every prune failed until the snapshots stopped needing it.
    #[test]
    fn a_pack_whose_needed_blob_is_damaged_everywhere_is_kept_not_repacked() {
        let pack = PackId([9; 32]);
        let mut inventory = Inventory::default();
        inventory.set_packs(vec![IndexedPack {
            id: pack,
            size: 300,
            entries: vec![entry(1, 0), entry(2, 100), entry(3, 200)],
        }]);
        let stored = HashMap::from([(pack, 300)]);
        let used: IdSet<BlobId> = [BlobId([1; 32])].into_iter().collect();
        let mut opts = PruneOptions {
            max_unused: 0.05,
            dry_run: false,
            damaged: HashSet::new(),
            without: Vec::new(),
        };
        let fate = |opts: &PruneOptions| plan(&inventory, &stored, &used, opts).unwrap()[0].1;
        assert_eq!(fate(&opts), Fate::Repack, "two thirds of it are unneeded");
        opts.damaged.insert((BlobId([1; 32]), pack));
        assert_eq!(fate(&opts), Fate::Keep);
    }
}
