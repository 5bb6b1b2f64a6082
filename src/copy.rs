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
//! - A copy is the same snapshot: time, host, user, paths, tags, summary, every entry's
//!   metadata and every file's bytes. A source snapshot counts as copied when the destination
//!   holds one with the same time (to the nanosecond), host, user and paths, so nothing is
//!   copied twice, and a retagged source snapshot is not copied again.
//! - Data is read from the source only where it must be. Trees are rewritten once per run.
//!   Before a snapshot is copied, the newest copy of the same host (of the same paths if
//!   there is one) is walked side by side with its original, which maps the source's blob
//!   ids to the destination's: a nightly copy reads the trees and the data that changed, not
//!   the whole snapshot. A mapped blob is used only while the destination's index lists it, so data the
//!   destination lost is read and stored again.
//! - The source is only read, under its shared lock, so its prune cannot delete what is being
//!   copied.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::blobs::BlobReader;
use crate::error::Result;
use crate::ids::{BlobId, BlobType, SnapshotId, TreeId};
use crate::index::LocalIndex;
use crate::packer::Packer;
use crate::repo::lock::RepositoryLock;
use crate::repo::{FileKind, Repository};
use crate::snapshot::Snapshot;
use crate::tree::Node;

/// The destination of a copy, locked.
pub struct Destination<'a> {
    pub repo: &'a Repository,
    pub index: &'a mut LocalIndex,
    pub lock: &'a RepositoryLock,
    pub zstd_level: i32,
}

#[derive(Debug, Serialize)]
pub struct CopiedSnapshot {
    pub source: SnapshotId,
    /// The new snapshot in the destination (`None` in a dry run).
    pub copy: Option<SnapshotId>,
}

#[derive(Debug, Default, Serialize)]
pub struct CopyReport {
    pub copied: Vec<CopiedSnapshot>,
    /// Chosen snapshots the destination already held.
    pub already_there: usize,
    /// Data blobs read from the source, and their bytes (plaintext).
    pub blobs_read: u64,
    pub bytes_read: u64,
    /// Blobs and bytes (after compression) stored in the destination.
    pub blobs_added: u64,
    pub bytes_added: u64,
}

/// What makes two snapshots the same one, in any repository: time, host, user and paths.
type Identity<'s> = (i64, &'s str, &'s str, &'s [Vec<u8>]);

fn identity(s: &Snapshot) -> Identity<'_> {
    (s.time_ns, &s.hostname, &s.username, &s.paths)
}

/// Source ids mapped to destination ids.
struct IdMap<'a> {
    source: &'a BlobReader<'a>,
    /// Trees rewritten in this run.
    trees: HashMap<TreeId, TreeId>,
    /// Data blobs read or matched so far; used only while the destination lists them.
    blobs: HashMap<BlobId, BlobId>,
    /// Source trees already walked beside their copies.
    seeded: HashSet<TreeId>,
    blobs_read: u64,
    bytes_read: u64,
}

impl IdMap<'_> {
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

    /// The destination's id of source tree `id`, storing it and everything below it.
    fn tree(&mut self, packer: &mut Packer, id: &TreeId) -> Result<TreeId> {
        if let Some(done) = self.trees.get(id) {
            return Ok(*done);
        }
        let mut tree = self.source.tree(id)?;
        for node in &mut tree.nodes {
            for blob in &mut node.content {
                *blob = self.data(packer, blob)?;
            }
            if let Some(sub) = node.subtree {
                node.subtree = Some(self.tree(packer, &sub)?);
            }
        }
        let copy = packer.add(BlobType::Tree, &tree.encode())?;
        self.trees.insert(*id, copy);
        Ok(copy)
    }

    fn data(&mut self, packer: &mut Packer, id: &BlobId) -> Result<BlobId> {
        if let Some(known) = self.blobs.get(id)
            && packer.has(known)?
        {
            return Ok(*known);
        }
        let plaintext = self.source.blob(id)?;
        self.blobs_read += 1;
        self.bytes_read += plaintext.len() as u64;
        let copy = packer.add(BlobType::Data, &plaintext)?;
        self.blobs.insert(*id, copy);
        Ok(copy)
    }
}

fn same_but_ids(a: &Node, b: &Node) -> bool {
    let strip = |n: &Node| Node {
        content: Vec::new(),
        subtree: None,
        ..n.clone()
    };
    a.content.len() == b.content.len()
        && a.subtree.is_some() == b.subtree.is_some()
        && strip(a) == strip(b)
}

/// Copies `chosen` source snapshots (oldest first) that `dest` does not hold yet.
/// `dest_snapshots` lists the destination's snapshots.
pub fn copy(
    source: &BlobReader,
    mut chosen: Vec<(SnapshotId, Snapshot)>,
    source_all: &[(SnapshotId, Snapshot)],
    dest: Destination,
    dest_snapshots: Vec<(SnapshotId, Snapshot)>,
    dry_run: bool,
) -> Result<CopyReport> {
    let mut report = CopyReport::default();
    // Copies in the destination, by the identity of their original.
    let mut copies: HashMap<_, TreeId> = dest_snapshots
        .iter()
        .map(|(_, s)| (identity(s), s.tree))
        .collect();
    chosen.sort_by_key(|(_, s)| s.time_ns);
    chosen.retain(|(_, s)| {
        let there = copies.contains_key(&identity(s));
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
        source,
        trees: HashMap::new(),
        blobs: HashMap::new(),
        seeded: HashSet::new(),
        blobs_read: 0,
        bytes_read: 0,
    };
    for (id, snapshot) in &chosen {
        // A copy made in this run has its ids mapped already.
        if let Some((previous, copy)) = newest_copy(source_all, &copies, snapshot)
            && !ids.trees.contains_key(&previous)
        {
            ids.seed(&dest_reader, &previous, &copy)?;
        }
        let mut packer =
            Packer::new(dest.repo, &mut *dest.index, dest.zstd_level)?.guarded_by(Some(dest.lock));
        let tree = ids.tree(&mut packer, &snapshot.tree)?;
        let stats = packer.finish()?;
        report.blobs_added += stats.data_blobs + stats.tree_blobs;
        report.bytes_added += stats.stored_bytes;
        let copied = Snapshot {
            tree,
            original: None,
            supersedes: None,
            ..snapshot.clone()
        };
        let body = copied.encode();
        dest.lock.check()?;
        let new = SnapshotId(dest.repo.save_file(FileKind::Snapshot, &body)?);
        dest.index.add_snapshot(&new, copied.time_ns, &body)?;
        crate::failpoint::hit("copy-snapshot-written");
        copies.insert(identity(snapshot), tree);
        report.copied.push(CopiedSnapshot {
            source: *id,
            copy: Some(new),
        });
    }
    report.blobs_read = ids.blobs_read;
    report.bytes_read = ids.bytes_read;
    Ok(report)
}

/// The newest source snapshot of the same host (and the same paths, if there is one) that
/// the destination holds a copy of: its tree and the copy's. Which one is chosen decides only
/// how much data is read again, never what is stored: a copy's blobs are its original's.
fn newest_copy(
    source_all: &[(SnapshotId, Snapshot)],
    copies: &HashMap<Identity, TreeId>,
    snapshot: &Snapshot,
) -> Option<(TreeId, TreeId)> {
    source_all
        .iter()
        .filter(|(_, s)| s.hostname == snapshot.hostname)
        .filter_map(|(_, s)| {
            let copy = copies.get(&identity(s))?;
            Some(((s.paths == snapshot.paths, s.time_ns), s.tree, *copy))
        })
        .max_by_key(|(rank, ..)| *rank)
        .map(|(_, tree, copy)| (tree, copy))
}
