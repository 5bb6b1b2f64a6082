//! `check`: proves that every snapshot can be read back, or says exactly what cannot.
//!
//! Order of work: the index segments (read from storage, not from the local cache), the packs
//! on storage against them (existence, size, header), every snapshot, every tree reachable from
//! a snapshot and the blobs they name, then optionally the pack contents (`--read-data`). At the
//! end every damaged or missing blob is traced to the snapshots and paths that need it.
//!
//! Guarantees: check never writes to the repository. It changes only the local cache: a local
//! index that disagrees with the segments is rebuilt (reported as a warning, not as damage),
//! and the damaged blobs found by reading data are recorded there for `repair snapshots`.
//! Unreferenced packs and blobs are warnings (prune's business), never errors.

mod data;
mod packs;
mod trees;

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::ids::{BlobId, IdMap, IdSet, IndexId, PackId, SnapshotId, TreeId};
use crate::index::{IndexSegment, Inventory, LocalIndex};
use crate::repo::{FileKind, Repository};
use crate::tree::JsonPath;

pub use data::DataSubset;

pub struct CheckOptions {
    pub read_data: Option<DataSubset>,
    pub threads: usize,
}

/// Progress of the long phases, for a progress bar. Called from worker threads.
pub trait CheckProgress: Sync {
    fn phase(&self, name: &str, total: u64);
    fn advance(&self, n: u64);
}

pub struct NoProgress;

impl CheckProgress for NoProgress {
    fn phase(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
}

/// Damage: something a restore needs is missing or does not verify.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    IndexSegmentDamaged {
        segment: IndexId,
        reason: String,
    },
    SnapshotDamaged {
        snapshot: SnapshotId,
        reason: String,
    },
    PackMissing {
        pack: PackId,
        blobs: usize,
    },
    PackSizeDiffers {
        pack: PackId,
        indexed: u64,
        stored: u64,
    },
    PackHeaderDamaged {
        pack: PackId,
        reason: String,
    },
    PackHeaderDisagrees {
        pack: PackId,
        reason: String,
    },
    PackContentDiffers {
        pack: PackId,
    },
    BlobDamaged {
        blob: BlobId,
        pack: PackId,
        reason: String,
    },
    BlobMissing {
        blob: BlobId,
    },
    TreeDamaged {
        tree: TreeId,
        reason: String,
    },
    /// A file whose blobs hold another number of bytes than its entry says: restore
    /// refuses it (the rest of its folder restores).
    FileSizeWrong {
        tree: TreeId,
        /// Lossy where it is not UTF-8; `name_hex` then gives its bytes.
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        name_hex: Option<String>,
        size: u64,
        blobs_hold: u64,
    },
    /// A removal record left by an interrupted `forget` cannot be read: the snapshots it
    /// names are visible again.
    RemovalRecordDamaged {
        reason: String,
    },
    /// The config could not be read, or named another repository id than the key files do;
    /// the repository was read with theirs (`repair config` writes it again).
    ConfigDamaged {
        reason: String,
    },
}

impl Problem {
    /// The pack a problem is about, if it is about one pack.
    fn pack(&self) -> Option<PackId> {
        match self {
            Problem::PackMissing { pack, .. }
            | Problem::PackSizeDiffers { pack, .. }
            | Problem::PackHeaderDamaged { pack, .. }
            | Problem::PackHeaderDisagrees { pack, .. }
            | Problem::PackContentDiffers { pack }
            | Problem::BlobDamaged { pack, .. } => Some(*pack),
            _ => None,
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::IndexSegmentDamaged { segment, reason } => {
                write!(f, "index segment {segment} cannot be read: {reason}")
            }
            Problem::ConfigDamaged { reason } => write!(
                f,
                "the config cannot be used ({reason}); the repository was read with the id its \
                 key files record; `cairn repair config` writes it again"
            ),
            Problem::SnapshotDamaged { snapshot, reason } => {
                write!(f, "snapshot {snapshot} cannot be read: {reason}")
            }
            Problem::PackMissing { pack, blobs } => {
                write!(f, "pack {pack} is missing ({blobs} blobs listed in it)")
            }
            Problem::PackSizeDiffers {
                pack,
                indexed,
                stored,
            } => write!(
                f,
                "pack {pack} has {stored} bytes, the index says {indexed}{}",
                if stored < indexed { " (truncated)" } else { "" }
            ),
            Problem::PackHeaderDamaged { pack, reason } => {
                write!(f, "the header of pack {pack} cannot be read: {reason}")
            }
            Problem::PackHeaderDisagrees { pack, reason } => {
                write!(
                    f,
                    "the header of pack {pack} disagrees with the index: {reason}"
                )
            }
            Problem::PackContentDiffers { pack } => {
                write!(f, "pack {pack} does not match its name (its bytes changed)")
            }
            Problem::BlobDamaged { blob, pack, reason } => {
                write!(f, "blob {blob} in pack {pack} {reason}")
            }
            Problem::BlobMissing { blob } => {
                write!(f, "blob {blob} is referenced but in no index segment")
            }
            Problem::TreeDamaged { tree, reason } => {
                write!(f, "tree {tree} cannot be read: {reason}")
            }
            Problem::FileSizeWrong {
                tree,
                name,
                size,
                blobs_hold,
                ..
            } => write!(
                f,
                "tree {tree} lists file {name:?} as {size} bytes, but its blobs hold {blobs_hold}: restore refuses that file"
            ),
            Problem::RemovalRecordDamaged { reason } => write!(
                f,
                "{reason}; the snapshots an interrupted forget was removing are visible again: the next forget or prune deletes the record, then run that forget again"
            ),
        }
    }
}

/// Not damage, but worth knowing; none of these changes the exit code.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Warning {
    /// A pack on storage that no index segment lists: `repair index` adds it.
    PackNotIndexed { pack: PackId, size: u64 },
    /// A pack none of whose blobs any snapshot needs: `prune` removes it.
    PackUnused { pack: PackId, size: u64 },
    /// Blobs no snapshot needs: `prune` removes them.
    BlobsUnused { count: u64, stored_bytes: u64 },
    /// A blob stored in more than one pack (harmless; `prune` keeps one).
    BlobDuplicated { blob: BlobId, packs: Vec<PackId> },
    /// A damaged blob that no snapshot needs.
    UnusedBlobDamaged {
        blob: BlobId,
        pack: PackId,
        reason: String,
    },
    /// A damaged blob that is also stored intact in another pack.
    DamagedCopy {
        blob: BlobId,
        pack: PackId,
        reason: String,
    },
    /// A pack whose bytes changed, but only inside blobs no snapshot needs or that are
    /// stored intact elsewhere.
    PackContentDiffers { pack: PackId },
    /// The local index cache disagreed with the repository and was rebuilt.
    LocalIndexRebuilt { reason: String },
    /// An indexed pack is missing, cut short or damaged, but every blob in it is stored in
    /// another pack as well: `prune` or `repair index` drops it.
    PackReplaced { pack: PackId },
    /// Snapshots an interrupted `forget` committed to removing, whose files are still there.
    RemovalPending { snapshots: usize },
    /// Key files made before key files recorded the repository id: a damaged or lost config
    /// cannot be recovered through them.
    KeysWithoutRepositoryId { keys: usize },
    /// A config written before configs had a checksum: `repair config` gives it one.
    ConfigWithoutChecksum,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::PackNotIndexed { pack, size } => write!(
                f,
                "pack {pack} ({size} bytes) is in no index segment; `cairn repair index` adds it"
            ),
            Warning::PackUnused { pack, size } => write!(
                f,
                "pack {pack} ({size} bytes) holds nothing any snapshot needs; prune removes it"
            ),
            Warning::BlobsUnused {
                count,
                stored_bytes,
            } => write!(
                f,
                "{count} blobs ({stored_bytes} bytes) are needed by no snapshot; prune removes them"
            ),
            Warning::BlobDuplicated { blob, packs } => {
                write!(f, "blob {blob} is stored in {} packs:", packs.len())?;
                for p in packs {
                    write!(f, " {}", p.short())?;
                }
                Ok(())
            }
            Warning::UnusedBlobDamaged { blob, pack, reason } => write!(
                f,
                "blob {blob} in pack {pack} {reason}, but no snapshot needs it; prune removes it"
            ),
            Warning::DamagedCopy { blob, pack, reason } => write!(
                f,
                "blob {blob} in pack {pack} {reason}, but it is stored intact in another pack; prune removes the damaged copy"
            ),
            Warning::PackContentDiffers { pack } => write!(
                f,
                "pack {pack} does not match its name, but its damaged blobs are needed by no snapshot or stored intact elsewhere"
            ),
            Warning::LocalIndexRebuilt { reason } => {
                write!(f, "the local index cache was rebuilt: {reason}")
            }
            Warning::RemovalPending { snapshots } => write!(
                f,
                "an interrupted forget left {snapshots} snapshot file(s) to delete; the next forget or prune deletes them"
            ),
            Warning::ConfigWithoutChecksum => write!(
                f,
                "the config has no checksum (written before cairn of 2026-11-24), so damage to its format version would read as a newer format; `cairn repair config` adds one"
            ),
            Warning::KeysWithoutRepositoryId { keys } => write!(
                f,
                "{keys} key file(s) do not record the repository id (made before cairn of 2026-11-24), so a damaged or lost config could not be recovered through them; `cairn key add` (then `cairn key remove` of the old key) gives the repository a key that does"
            ),
            Warning::PackReplaced { pack } => write!(
                f,
                "pack {pack} is missing, cut short or damaged, but every blob in it is stored again in another pack; `cairn prune` or `cairn repair index` drops it"
            ),
        }
    }
}

/// One entry of one snapshot that cannot be restored (whole), and why.
#[derive(Clone, Debug, Serialize)]
pub struct Affected {
    pub snapshot: SnapshotId,
    /// Path inside the snapshot, `/`-separated.
    #[serde(flatten)]
    pub path: JsonPath,
    /// `file`, or `dir` when the folder's own listing is damaged.
    pub node: &'static str,
    pub reason: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckStats {
    pub index_segments: usize,
    pub packs: usize,
    pub blobs: usize,
    pub snapshots: usize,
    pub trees: usize,
    pub packs_read: usize,
    pub bytes_read: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    pub problems: Vec<Problem>,
    pub warnings: Vec<Warning>,
    pub affected: Vec<Affected>,
    pub stats: CheckStats,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Blob locations found bad, and why; a blob is lost only if every location is bad.
#[derive(Default)]
struct Damage {
    locations: IdMap<BlobId, Vec<(PackId, String)>>,
    /// Blobs lost for a reason that is not a location: in no index segment, or an unreadable
    /// tree.
    lost: IdMap<BlobId, String>,
}

impl Damage {
    fn location(&mut self, blob: BlobId, pack: PackId, reason: String) {
        let bad = self.locations.entry(blob).or_default();
        if !bad.iter().any(|(p, _)| *p == pack) {
            bad.push((pack, reason));
        }
    }

    /// Every blob with no good copy left, and the reason to show.
    fn lost_blobs(&self, inventory: &Inventory) -> IdMap<BlobId, String> {
        let mut lost = self.lost.clone();
        for (blob, bad) in &self.locations {
            if bad.len() >= inventory.locations(blob).count() {
                let (pack, why) = &bad[0];
                lost.entry(*blob).or_insert_with(|| {
                    format!("blob {} in pack {} {why}", blob.short(), pack.short())
                });
            }
        }
        lost
    }
}

/// Every blob (tree and data) the snapshots on storage need, but those in `without` (as if
/// removed already), and how many snapshots that is. Errors when a snapshot or tree cannot be read or a needed blob is not indexed: what is
/// needed is then unknown, and `prune` must not delete anything.
pub fn used_blobs(
    repo: &Repository,
    inventory: &Inventory,
    without: &[SnapshotId],
) -> Result<(usize, IdSet<BlobId>)> {
    let mut report = CheckReport::default();
    let mut damage = Damage::default();
    let (mut snapshots, vanished) = trees::load_snapshots(repo, &mut report)?;
    // Under prune's exclusive lock no one else removes snapshots, and one that replaced a
    // vanished one (`tag` writes the new one first) may be missing from the listing, its data
    // unmarked. Those this process removed (`without`) may still be listed for a while.
    if let Some(id) = vanished.iter().find(|id| !without.contains(id)) {
        return Err(Error::Invalid(format!(
            "snapshot {id} vanished while prune read the snapshots: another process changes the repository despite the lock; nothing was deleted. Make sure no other cairn ignores the lock (and that clocks agree), then run prune again"
        )));
    }
    snapshots.retain(|(id, _)| !without.contains(id));
    tracing::debug!(snapshots = snapshots.len(), "snapshots read");
    let loader = trees::TreeLoader::new(repo, inventory);
    let graph = trees::walk(
        &loader,
        &snapshots,
        &mut report,
        &mut damage,
        &NoProgress,
        false,
    );
    let first = report
        .problems
        .first()
        .map(ToString::to_string)
        .or_else(|| damage.lost.values().next().cloned());
    if let Some(problem) = first {
        return Err(Error::Invalid(format!(
            "{problem}: the repository is damaged, so what the snapshots need cannot be known; nothing was deleted. Run `cairn check`, then `cairn repair index` / `cairn repair snapshots`"
        )));
    }
    Ok((snapshots.len(), graph.referenced))
}

/// Runs the check. `local` is the synced local index; it is rebuilt if it disagrees with the
/// repository, and it receives the damaged blobs that reading data found.
pub fn run(
    repo: &Repository,
    local: &mut LocalIndex,
    opts: &CheckOptions,
    progress: &dyn CheckProgress,
) -> Result<CheckReport> {
    let pool = crate::walk::worker_pool(opts.threads, |b| b.build())
        .map_err(|e| Error::Invalid(format!("cannot start worker threads: {e}")))?;
    pool.install(|| run_in_pool(repo, local, opts, progress))
}

/// What the structure checks found, with what the data check and the report need next.
struct Structure {
    report: CheckReport,
    damage: Damage,
    snapshots: Vec<(SnapshotId, crate::snapshot::Snapshot)>,
    graph: trees::TreeGraph,
}

struct Scope<'a> {
    repo: &'a Repository,
    /// Listed before the index segments were: every segment a listed snapshot needs is
    /// written before it, so a backup committing meanwhile does not look like damage.
    snapshots: crate::snapshot::Listed,
    inventory: &'a Inventory,
    stored: &'a std::collections::HashMap<PackId, u64>,
    to_read: &'a HashSet<PackId>,
}

impl Scope<'_> {
    /// Local index, packs, snapshots and trees (everything but reading data).
    fn structure(
        self,
        local: &mut LocalIndex,
        loader: &trees::TreeLoader,
        progress: &dyn CheckProgress,
    ) -> Result<Structure> {
        let mut report = CheckReport::default();
        let mut damage = Damage::default();
        compare_local_index(self.repo, local, self.inventory, &mut report)?;
        packs::check_packs(
            self.repo,
            self.inventory,
            self.stored,
            self.to_read,
            &mut report,
            &mut damage,
            progress,
        )?;
        let snapshots = self.snapshots;
        let graph = trees::walk(loader, &snapshots, &mut report, &mut damage, progress, true);
        tracing::debug!("check: structure checked");
        Ok(Structure {
            report,
            damage,
            snapshots,
            graph,
        })
    }
}

fn run_in_pool(
    repo: &Repository,
    local: &mut LocalIndex,
    opts: &CheckOptions,
    progress: &dyn CheckProgress,
) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    if let Some(reason) = repo.config_damage() {
        let reason = reason.to_string();
        report.problems.push(Problem::ConfigDamaged { reason });
    } else if !repo.config_has_checksum() {
        report.warnings.push(Warning::ConfigWithoutChecksum);
    }
    let keys = crate::repo::key_files::list(repo)?;
    let unrecorded = keys
        .iter()
        .filter(|k| k.file.as_ref().is_ok_and(|f| f.repository.is_none()));
    if unrecorded.clone().next().is_some() {
        let keys = unrecorded.count();
        report
            .warnings
            .push(Warning::KeysWithoutRepositoryId { keys });
    }
    progress.phase("index", 0);
    let (snapshots, _forgotten_meanwhile) = trees::load_snapshots(repo, &mut report)?;
    let inventory = Inventory::load(repo)?;
    crate::failpoint::hook("check-index-loaded", std::path::Path::new(""));
    for (segment, e) in &inventory.damaged_segments {
        report.problems.push(Problem::IndexSegmentDamaged {
            segment: *segment,
            reason: e.to_string(),
        });
    }
    let pending = crate::snapshot::removal::pending(repo, &mut |_, e| {
        report.problems.push(Problem::RemovalRecordDamaged {
            reason: e.to_string(),
        })
    })?;
    let pending: usize = pending.iter().map(|(_, ids)| ids.len()).sum();
    if pending > 0 {
        report
            .warnings
            .push(Warning::RemovalPending { snapshots: pending });
    }
    report.stats.index_segments = inventory.segments.len() + inventory.damaged_segments.len();
    report.stats.packs = inventory.packs.len();
    report.stats.blobs = inventory.blob_count();
    let stored = repo.stored_packs()?;
    let to_read: HashSet<PackId> = match &opts.read_data {
        Some(subset) => subset.select(&inventory, &stored),
        None => HashSet::new(),
    };
    // The structure checks and the data reads run side by side: one is mostly latency, the
    // other mostly throughput. The progress bar follows the data reads when there are any.
    let structure_progress: &dyn CheckProgress = match opts.read_data {
        Some(_) => &NoProgress,
        None => progress,
    };
    let loader = trees::TreeLoader::new(repo, &inventory);
    let scope = Scope {
        repo,
        snapshots,
        inventory: &inventory,
        stored: &stored,
        to_read: &to_read,
    };
    let (structure, verified) = rayon::join(
        || scope.structure(local, &loader, structure_progress),
        || {
            opts.read_data
                .as_ref()
                .map(|_| data::read_packs(repo, &inventory, &to_read, &stored, progress))
        },
    );
    let Structure {
        report: part,
        damage,
        snapshots,
        graph,
    } = structure?;
    report.problems.extend(part.problems);
    report.warnings.extend(part.warnings);
    report.stats.trees = part.stats.trees;
    tracing::debug!("check: trees walked, data read");
    unused(&inventory, &stored, &graph.referenced, &mut report);
    drop_packs_indexed_meanwhile(repo, &inventory, &mut report)?;

    let mut damage = damage;
    let mut verified_problems = None;
    if let Some(verified) = verified {
        verified_problems = Some(verified.problems);
        report.stats.packs_read = verified.packs.len();
        report.stats.bytes_read = verified.bytes;
        for (blob, pack, reason) in &verified.damaged {
            damage.location(*blob, *pack, reason.clone());
        }
        local.record_verified_packs(&verified.packs, &verified.damaged)?;
        // What was read is recorded; a pack that could not be was not checked.
        if let Some((pack, e)) = verified.unread.into_iter().next() {
            return Err(packs::unread(&pack, e));
        }
    }
    let lost = damage.lost_blobs(&inventory);
    if let Some(verified) = verified_problems {
        sort_data_findings(verified, &graph.referenced, &lost, &mut report);
    }
    demote_replaced_packs(&inventory, &lost, &mut report);
    if !lost.is_empty() {
        report.affected = trees::affected(&loader, &snapshots, &graph, &lost);
    }
    Ok(report)
}

/// A missing, cut short or damaged pack every blob of which is stored in another pack too —
/// a backup stored them again — loses nothing: its problems become one warning.
fn demote_replaced_packs(
    inventory: &Inventory,
    lost: &IdMap<BlobId, String>,
    report: &mut CheckReport,
) {
    let replaced = |pack: &PackId| {
        inventory.pack(pack).is_some_and(|p| {
            p.entries
                .iter()
                .all(|e| !lost.contains_key(&e.id) && inventory.locations(&e.id).count() > 1)
        })
    };
    let mut demoted: Vec<PackId> = Vec::new();
    report.problems.retain(|p| match p.pack() {
        Some(pack) if replaced(&pack) => {
            if !demoted.contains(&pack) {
                demoted.push(pack);
            }
            false
        }
        _ => true,
    });
    for pack in demoted {
        report.warnings.push(Warning::PackReplaced { pack });
    }
}

/// Damage found by reading data is a problem only where a snapshot needs it: a damaged blob
/// nothing references, and a pack whose only damage is in such blobs, are warnings (prune
/// removes them).
fn sort_data_findings(
    found: Vec<Problem>,
    referenced: &IdSet<BlobId>,
    lost: &IdMap<BlobId, String>,
    report: &mut CheckReport,
) {
    let serious: HashSet<PackId> = found
        .iter()
        .filter_map(|p| match p {
            Problem::BlobDamaged { blob, pack, .. }
                if referenced.contains(blob) && lost.contains_key(blob) =>
            {
                Some(*pack)
            }
            Problem::PackHeaderDamaged { pack, .. } | Problem::PackHeaderDisagrees { pack, .. } => {
                Some(*pack)
            }
            _ => None,
        })
        .collect();
    for p in found {
        match p {
            Problem::BlobDamaged { blob, pack, reason } if !referenced.contains(&blob) => report
                .warnings
                .push(Warning::UnusedBlobDamaged { blob, pack, reason }),
            Problem::BlobDamaged { blob, pack, reason } if !lost.contains_key(&blob) => report
                .warnings
                .push(Warning::DamagedCopy { blob, pack, reason }),
            Problem::PackContentDiffers { pack } if !serious.contains(&pack) => {
                report.warnings.push(Warning::PackContentDiffers { pack })
            }
            other => report.problems.push(other),
        }
    }
}

/// The local index must list exactly the blob locations the segments list.
fn compare_local_index(
    repo: &Repository,
    local: &mut LocalIndex,
    inventory: &Inventory,
    report: &mut CheckReport,
) -> Result<()> {
    let listed = local.blob_locations()?;
    let distinct: IdSet<BlobId> = listed.iter().map(|(b, _)| *b).collect();
    let in_inventory =
        |(b, p): &(BlobId, PackId)| inventory.locations(b).any(|(pack, _)| pack.id == *p);
    let agrees = distinct.len() == inventory.blob_count() && listed.iter().all(in_inventory);
    // A backup running beside the check adds to the local index what segments written
    // since the index was loaded hold: more, but nothing wrong.
    let written_since = || -> Result<bool> {
        let since: HashSet<(BlobId, PackId)> = (segments_since(repo, inventory)?.into_iter())
            .flat_map(|s| s.packs)
            .flat_map(|p| p.entries.into_iter().map(move |e| (e.id, p.id)))
            .collect();
        let known = distinct.iter().filter(|b| inventory.contains(b)).count();
        Ok(known == inventory.blob_count()
            && listed.iter().all(|l| in_inventory(l) || since.contains(l)))
    };
    if !agrees && !written_since()? {
        let reason = format!(
            "it listed {} blobs where the repository's index segments list {}",
            distinct.len(),
            inventory.blob_count()
        );
        local.rebuild(repo, reason.clone())?;
        report.warnings.push(Warning::LocalIndexRebuilt { reason });
    }
    Ok(())
}

/// The index segments that a backup running beside the check wrote after the index was
/// loaded (those that can be read).
fn segments_since(repo: &Repository, inventory: &Inventory) -> Result<Vec<IndexSegment>> {
    let known: HashSet<IndexId> = (inventory.segments.iter().copied())
        .chain(inventory.damaged_segments.iter().map(|(id, _)| *id))
        .chain(inventory.vanished_segments.iter().copied())
        .collect();
    let ids = repo.list_ids(FileKind::Index)?.into_iter().map(IndexId);
    Ok(ids
        .filter(|id| !known.contains(id))
        .filter_map(|id| {
            let bytes = repo.load_file(FileKind::Index, &id.0).ok()?;
            IndexSegment::decode(&id, &bytes).ok()
        })
        .collect())
}

/// Packs a backup running beside the check wrote after the index was loaded are listed by
/// a segment written since, not "in no index segment": those warnings (and their advice to
/// run `repair index`) are dropped.
fn drop_packs_indexed_meanwhile(
    repo: &Repository,
    inventory: &Inventory,
    report: &mut CheckReport,
) -> Result<()> {
    let unindexed = |w: &Warning| matches!(w, Warning::PackNotIndexed { .. });
    if !report.warnings.iter().any(unindexed) {
        return Ok(());
    }
    let indexed_since: HashSet<PackId> = (segments_since(repo, inventory)?.into_iter())
        .flat_map(|s| s.packs.into_iter().map(|p| p.id))
        .collect();
    report.warnings.retain(|w| match w {
        Warning::PackNotIndexed { pack, .. } => !indexed_since.contains(pack),
        _ => true,
    });
    Ok(())
}

fn unused(
    inventory: &Inventory,
    stored: &HashMap<PackId, u64>,
    referenced: &IdSet<BlobId>,
    report: &mut CheckReport,
) {
    let (mut count, mut bytes) = (0u64, 0u64);
    for pack in &inventory.packs {
        let mut used = false;
        for e in &pack.entries {
            if referenced.contains(&e.id) {
                used = true;
            } else {
                count += 1;
                bytes += u64::from(e.stored_len);
            }
        }
        if !used && stored.contains_key(&pack.id) {
            report.warnings.push(Warning::PackUnused {
                pack: pack.id,
                size: pack.size,
            });
        }
    }
    if count > 0 {
        report.warnings.push(Warning::BlobsUnused {
            count,
            stored_bytes: bytes,
        });
    }
    let mut duplicated: Vec<(BlobId, Vec<PackId>)> = inventory
        .blobs()
        .filter(|(_, n)| *n > 1)
        .map(|(b, _)| (*b, inventory.locations(b).map(|(p, _)| p.id).collect()))
        .collect();
    duplicated.sort();
    for (blob, packs) in duplicated {
        report
            .warnings
            .push(Warning::BlobDuplicated { blob, packs });
    }
}
