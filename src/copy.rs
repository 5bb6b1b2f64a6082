//! Copying snapshots into another repository: the second copy of 3-2-1, on other storage.
//!
//! Two repositories have different keys, so the same content has different blob ids (keyed
//! BLAKE3) in each. A copy therefore rewrites every tree with the destination's ids, and each
//! data blob the destination may lack is read from the source (decrypted and authenticated
//! there), then named, compressed and encrypted anew by the destination's packer.
//!
//! Guarantees:
//! - The destination follows the commit protocol for each snapshot: its packs and index
//!   segments (`Packer::finish`), then the snapshot, written after a check of the
//!   destination's lock. Interrupted, a copy leaves the snapshots copied so far complete and
//!   no trace of the others but unreferenced packs; running it again finishes the job.
//! - A copy has its original's time, host, user, paths, tags, summary, and every entry's
//!   metadata and bytes (fields this version does not know are not carried over). It records
//!   the source repository and snapshot (snapshot tag 16), so a snapshot is never copied
//!   twice into the same repository.
//! - Data blobs are read, decrypted, named, compressed and encrypted in parallel, in batches
//!   of `PREFETCH_BYTES`, and stored in the order a walk of the trees meets them.
//! - Data is read from the source only where it must be. Before each snapshot, the newest copy
//!   made from the same source (of the same host, and of the same paths if there is one) is
//!   walked beside its original, which maps source blob ids to the destination's: a nightly
//!   copy reads the trees and the data that changed. The pair is known by the recorded origin,
//!   not guessed, and a mapped blob is used only while the destination's index lists it (the
//!   caller checks that index against the stored packs first), so lost data is stored again.
//! - A source snapshot that turns out damaged is skipped and reported; the others are copied.
//! - The source is read under its shared lock (a lock file is its only write), so its prune
//!   cannot delete what is being copied.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;
use serde::Serialize;

use crate::blobs::BlobReader;
use crate::error::{Error, Result};
use crate::ids::{BlobId, BlobType, RepositoryId, SnapshotId, TreeId};
use crate::index::LocalIndex;
use crate::pack::seal_blob;
use crate::packer::Packer;
use crate::repo::Repository;
use crate::repo::lock::RepositoryLock;
use crate::snapshot::{CopiedFrom, Snapshot};
use crate::tree::Node;

/// The destination of a copy, locked, its index checked against its packs.
pub struct Destination<'a> {
    pub repo: &'a Repository,
    pub index: &'a mut LocalIndex,
    pub lock: &'a RepositoryLock,
    pub zstd_level: i32,
}

/// The source of a copy: its id, a reader of its blobs, and all its snapshots.
pub struct Source<'a> {
    pub id: RepositoryId,
    pub reader: &'a BlobReader<'a>,
    pub snapshots: &'a [(SnapshotId, Snapshot)],
    /// Held on the source: while it holds, no prune there removes what is read.
    pub lock: &'a RepositoryLock,
}

#[derive(Debug, Serialize)]
pub struct CopiedSnapshot {
    pub source: SnapshotId,
    /// The new snapshot in the destination (`None` in a dry run).
    pub copy: Option<SnapshotId>,
}

#[derive(Debug, Serialize)]
pub struct FailedCopy {
    pub source: SnapshotId,
    pub error: String,
}

#[derive(Debug, Default, Serialize)]
pub struct CopyReport {
    pub copied: Vec<CopiedSnapshot>,
    /// Chosen snapshots already copied into the destination.
    pub already_there: usize,
    /// Snapshots that could not be copied because the source is damaged.
    pub failed: Vec<FailedCopy>,
    /// Earlier copies that could not be used to save reading (the copy went on without).
    pub warnings: Vec<String>,
    /// Data blobs read from the source, and their bytes (plaintext).
    pub blobs_read: u64,
    pub bytes_read: u64,
    /// Blobs and bytes (after compression) stored in the destination.
    pub blobs_added: u64,
    pub bytes_added: u64,
}

/// Source ids mapped to destination ids, for one snapshot at a time (so memory follows the
/// largest snapshot, not the whole run).
struct IdMap<'a> {
    source: &'a BlobReader<'a>,
    trees: HashMap<TreeId, TreeId>,
    /// Learnt from an earlier copy: used only once the destination's index lists the blob.
    blobs: HashMap<BlobId, BlobId>,
    /// Blobs the destination holds: checked in its index, or stored by this copy.
    present: HashMap<BlobId, BlobId>,
    /// Source trees already walked beside their copies.
    seeded: HashSet<TreeId>,
    blobs_read: u64,
    bytes_read: u64,
}

impl IdMap<'_> {
    fn clear(&mut self) {
        self.trees.clear();
        self.blobs.clear();
        self.present.clear();
        self.seeded.clear();
    }

    /// Maps the blobs of the files below source tree `source` to those below `copy`, its
    /// copy in the destination. Entries are paired by name; a file's blobs are mapped only
    /// if its two entries agree in everything but ids.
    fn seed(&mut self, dest: &BlobReader, source: &TreeId, copy: &TreeId) -> Result<()> {
        if !self.seeded.insert(*source) {
            return Ok(());
        }
        let (original, copied) = (self.source.tree(source)?, dest.tree(copy)?);
        let by_name: HashMap<&[u8], &Node> = copied
            .nodes
            .iter()
            .map(|n| (n.name.as_slice(), n))
            .collect();
        for a in &original.nodes {
            let Some(b) = by_name.get(a.name.as_slice()) else {
                continue;
            };
            if let (Some(x), Some(y)) = (a.subtree, b.subtree) {
                self.seed(dest, &x, &y)?;
            } else if same_but_ids(a, b) {
                for (x, y) in a.content.iter().zip(&b.content) {
                    self.blobs.insert(*x, *y);
                }
            }
        }
        Ok(())
    }

    /// Reads the data blobs below source tree `root` that the destination lacks, and stores
    /// them, in batches of about `PREFETCH_BYTES` read, decrypted, named, compressed and
    /// encrypted in parallel: afterwards `data` finds each one mapped.
    fn prefetch(&mut self, packer: &mut Packer, dest: &Repository, root: &TreeId) -> Result<()> {
        let mut wanted = Vec::new();
        let mut seen = (HashSet::new(), HashSet::new());
        self.collect(packer, root, &mut seen, &mut wanted)?;
        let (source, stored) = (self.source, packer.stored_blobs());
        let level = packer.zstd_level();
        for batch in batches(source, &wanted)? {
            let sealed: Vec<Result<_>> = batch
                .par_iter()
                .map(|blob| {
                    let plaintext = source.blob(blob)?;
                    let id = dest.keys().blob_id(&plaintext);
                    let sealed = match stored.contains(&id)? {
                        true => None,
                        false => Some(seal_blob(
                            dest.keys(),
                            dest.id(),
                            BlobType::Data,
                            id,
                            &plaintext,
                            level,
                        )),
                    };
                    Ok((*blob, id, plaintext.len() as u64, sealed))
                })
                .collect();
            for result in sealed {
                let (blob, id, len, sealed) = result?;
                self.blobs_read += 1;
                self.bytes_read += len;
                if let Some(sealed) = sealed {
                    packer.add_sealed(sealed)?;
                }
                self.present.insert(blob, id);
            }
        }
        Ok(())
    }

    /// The data blobs below source tree `id` that the destination lacks, in order; those it
    /// holds go to `present`. `seen` holds the trees and blobs already looked at: a tree that
    /// occurs many times (or a hostile source's trees that share subtrees) is walked once.
    fn collect(
        &mut self,
        packer: &Packer,
        id: &TreeId,
        seen: &mut (HashSet<TreeId>, HashSet<BlobId>),
        wanted: &mut Vec<BlobId>,
    ) -> Result<()> {
        if !seen.0.insert(*id) {
            return Ok(());
        }
        for node in self.source.tree(id)?.nodes {
            for blob in node.content {
                if !seen.1.insert(blob) {
                    continue;
                }
                match self.blobs.get(&blob) {
                    Some(known) if packer.has(known)? => {
                        self.present.insert(blob, *known);
                    }
                    _ => wanted.push(blob),
                }
            }
            if let Some(sub) = node.subtree {
                self.collect(packer, &sub, seen, wanted)?;
            }
        }
        Ok(())
    }

    /// The destination's id of source tree `id`, storing it and everything below it.
    fn tree(&mut self, packer: &mut Packer, id: &TreeId) -> Result<TreeId> {
        if let Some(done) = self.trees.get(id) {
            return Ok(*done);
        }
        let mut tree = self.source.tree(id)?;
        for node in &mut tree.nodes {
            for blob in &mut node.content {
                *blob = self.data(blob)?;
            }
            if let Some(sub) = node.subtree {
                node.subtree = Some(self.tree(packer, &sub)?);
            }
        }
        let copy = packer.add(BlobType::Tree, &tree.encode())?;
        self.trees.insert(*id, copy);
        Ok(copy)
    }

    /// The destination's id of source data blob `id`, which `prefetch` found or stored.
    fn data(&self, id: &BlobId) -> Result<BlobId> {
        self.present
            .get(id)
            .copied()
            .ok_or_else(|| Error::Invalid(format!("copy: blob {} was not prefetched", id.short())))
    }
}

/// Plaintext bytes read in one parallel batch by `prefetch`.
const PREFETCH_BYTES: u64 = 16 << 20;

/// `blobs` cut into batches of about `PREFETCH_BYTES` (by the source index's lengths).
fn batches<'b>(source: &BlobReader, blobs: &'b [BlobId]) -> Result<Vec<&'b [BlobId]>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, blob) in blobs.iter().enumerate() {
        bytes += u64::from(source.raw_len(blob)?);
        if bytes >= PREFETCH_BYTES || i + 1 == blobs.len() {
            out.push(&blobs[start..=i]);
            (start, bytes) = (i + 1, 0);
        }
    }
    Ok(out)
}

fn same_but_ids(a: &Node, b: &Node) -> bool {
    let strip = |n: &Node| Node {
        content: Vec::new(),
        subtree: None,
        ..n.clone()
    };
    a.content.len() == b.content.len() && a.subtree.is_none() && strip(a) == strip(b)
}

/// Copies the `chosen` source snapshots (oldest first) that were not copied into `dest` yet.
/// `dest_snapshots` lists the destination's snapshots.
pub fn copy(
    source: Source,
    mut chosen: Vec<(SnapshotId, Snapshot)>,
    dest: Destination,
    dest_snapshots: &[(SnapshotId, Snapshot)],
    dry_run: bool,
) -> Result<CopyReport> {
    let mut report = CopyReport::default();
    // Source snapshot → the tree of its copy in the destination.
    let mut copies: HashMap<SnapshotId, TreeId> = dest_snapshots
        .iter()
        .filter_map(|(_, s)| {
            let from = s.copied_from.filter(|f| f.repository == source.id)?;
            Some((from.snapshot, s.tree))
        })
        .collect();
    chosen.sort_by_key(|(id, s)| (s.time_ns, *id));
    chosen.dedup_by_key(|(id, _)| *id);
    // A snapshot copied from the destination, whose original is still there, is there
    // already: copied back, two repositories copying to each other would echo every
    // snapshot between them each night.
    let dest_ids: HashSet<SnapshotId> = dest_snapshots.iter().map(|(id, _)| *id).collect();
    let from_dest = |s: &Snapshot| {
        s.copied_from
            .is_some_and(|f| f.repository == *dest.repo.id() && dest_ids.contains(&f.snapshot))
    };
    chosen.retain(|(id, s)| {
        let there = copies.contains_key(id) || from_dest(s);
        report.already_there += usize::from(there);
        !there
    });
    if dry_run {
        report.copied = chosen
            .iter()
            .map(|(id, _)| CopiedSnapshot {
                source: *id,
                copy: None,
            })
            .collect();
        return Ok(report);
    }
    let dest_reader = BlobReader::new(dest.repo, dest.index.another_connection()?);
    let mut ids = IdMap {
        source: source.reader,
        trees: HashMap::new(),
        blobs: HashMap::new(),
        present: HashMap::new(),
        seeded: HashSet::new(),
        blobs_read: 0,
        bytes_read: 0,
    };
    for (id, snapshot) in &chosen {
        crate::failpoint::hook("copy-snapshot", std::path::Path::new(""));
        ids.clear();
        if let Some((previous, copy)) = newest_copy(source.snapshots, &copies, snapshot)
            && let Err(e) = ids.seed(&dest_reader, &previous, &copy)
        {
            report.warnings.push(format!(
                "the copy of {} could not be compared with its original ({e}); data it holds is read again",
                previous.short()
            ));
        }
        let mut packer =
            Packer::new(dest.repo, &mut *dest.index, dest.zstd_level)?.guarded_by(Some(dest.lock));
        let rewritten = ids
            .prefetch(&mut packer, dest.repo, &snapshot.tree)
            .and_then(|()| ids.tree(&mut packer, &snapshot.tree));
        // Any other error (the destination's storage, its lock) ends the copy at once. So does
        // damage seen after the source's lock was lost: a prune there may have removed what
        // was being read, and that is no damage.
        if let Err(e) = &rewritten
            && !e.is_damage()
        {
            return Err(rewritten.unwrap_err());
        }
        if rewritten.is_err() {
            source.lock.check()?;
        }
        // Damage in the source stopped this snapshot; what was stored of it is sound, and
        // committing it keeps the next snapshot from reading it again.
        let stats = packer.finish()?;
        crate::failpoint::hit("copy-packs-written");
        report.blobs_added += stats.data_blobs + stats.tree_blobs;
        report.bytes_added += stats.stored_bytes;
        let tree = match rewritten {
            Ok(tree) => tree,
            Err(e) => {
                report.failed.push(FailedCopy {
                    source: *id,
                    error: e.to_string(),
                });
                continue;
            }
        };
        let copied = Snapshot {
            tree,
            original: None,
            supersedes: None,
            copied_from: Some(CopiedFrom {
                repository: source.id,
                snapshot: *id,
            }),
            ..snapshot.clone()
        };
        let new = crate::snapshot::commit(dest.repo, dest.index, Some(dest.lock), &copied)?;
        crate::failpoint::hit("copy-snapshot-written");
        copies.insert(*id, tree);
        report.copied.push(CopiedSnapshot {
            source: *id,
            copy: Some(new),
        });
    }
    report.blobs_read = ids.blobs_read;
    report.bytes_read = ids.bytes_read;
    Ok(report)
}

/// The newest source snapshot of the same host (and of the same paths, if there is one) that
/// the destination holds a copy of: its tree and the copy's. Which one is chosen decides only
/// how much data is read again, never what is stored: a copy's blobs are its original's.
fn newest_copy(
    source_snapshots: &[(SnapshotId, Snapshot)],
    copies: &HashMap<SnapshotId, TreeId>,
    snapshot: &Snapshot,
) -> Option<(TreeId, TreeId)> {
    source_snapshots
        .iter()
        .filter(|(_, s)| s.hostname == snapshot.hostname)
        .filter_map(|(id, s)| {
            let copy = copies.get(id)?;
            Some(((s.paths == snapshot.paths, s.time_ns, *id), s.tree, *copy))
        })
        .max_by_key(|(rank, ..)| *rank)
        .map(|(_, tree, copy)| (tree, copy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::NodeKind;

    #[test]
    fn only_files_equal_but_for_their_ids_are_paired() {
        let mut a = Node::new(b"f".to_vec(), NodeKind::File);
        a.content = vec![BlobId([1; 32]), BlobId([2; 32])];
        let mut b = a.clone();
        b.content = vec![BlobId([3; 32]), BlobId([4; 32])];
        assert!(same_but_ids(&a, &b));
        let mut longer = b.clone();
        longer.content.push(BlobId([5; 32]));
        assert!(!same_but_ids(&a, &longer));
        let mut touched = b.clone();
        touched.mtime_ns += 1;
        assert!(!same_but_ids(&a, &touched));
    }
}
