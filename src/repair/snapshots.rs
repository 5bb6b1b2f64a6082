//! `repair snapshots`: for every snapshot that needs lost data, writes a new snapshot in which
//! files with lost content are removed (or, with `truncate`, cut before the first lost blob) and
//! folders whose listing is lost are emptied. The new snapshot carries the tag `repaired`, the
//! original's id and a note of what changed; the original is deleted only with `forget`, and
//! only after the new one is stored.
//!
//! A blob counts as lost when the index does not list it, when its pack is gone from storage
//! or too short to hold it, or when the last `check --read-data` on this machine found it
//! damaged (recorded in the local index). A tree is lost too when reading it shows damage
//! or its blob gone; any other error reading one (a storage that failed to answer) stops the
//! repair before anything is written, so a folder is never emptied for a passing failure.

use std::collections::HashMap;

use serde::Serialize;

use crate::blobs::load_tree;
use crate::error::Result;
use crate::failpoint;
use crate::ids::{BlobId, BlobType, PackId, SnapshotId, TreeId};
use crate::index::LocalIndex;
use crate::packer::Packer;
use crate::repo::lock::RepositoryLock;
use crate::repo::{FileKind, Repository, object_path};
use crate::snapshot::{self, Snapshot};
use crate::tree::{JsonPath, NodeKind, Tree};

pub const REPAIRED_TAG: &str = "repaired";

pub struct RepairSnapshotsOptions {
    /// Keep the readable start of damaged files instead of removing them.
    pub truncate: bool,
    /// Delete each original once its repaired version is stored.
    pub forget: bool,
    pub dry_run: bool,
    /// Only these snapshots (all when empty).
    pub snapshots: Vec<SnapshotId>,
    pub zstd_level: i32,
}

#[derive(Clone, Debug, Serialize)]
pub struct Change {
    /// Path inside the snapshot, `/`-separated.
    #[serde(flatten)]
    pub path: JsonPath,
    /// `removed`, `truncated` or `emptied` (a folder whose listing is lost).
    pub action: &'static str,
    pub reason: String,
}

/// A change found below a tree, its path relative to that tree.
#[derive(Clone)]
struct Found {
    path: Vec<u8>,
    action: &'static str,
    reason: String,
}

impl Found {
    fn new(name: &[u8], action: &'static str, reason: String) -> Self {
        let path = name.to_vec();
        Found {
            path,
            action,
            reason,
        }
    }

    /// The same change, seen from the folder above: at `name/` its path.
    fn below(mut self, name: &[u8]) -> Self {
        self.path = [name, b"/", &self.path].concat();
        self
    }

    /// The change as reported: its path from the snapshot's root.
    fn change(self) -> Change {
        Change {
            path: JsonPath::new(&[b"/", &self.path[..]].concat()),
            action: self.action,
            reason: self.reason,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RepairedSnapshot {
    pub original: SnapshotId,
    /// The new snapshot (`None` in a dry run, or when the snapshot cannot be repaired).
    pub repaired: Option<SnapshotId>,
    pub changes: Vec<Change>,
    /// Why the snapshot cannot be repaired (its root listing is lost).
    pub unrepairable: Option<String>,
    pub forgotten: bool,
    /// The repaired version was written by an earlier (perhaps interrupted) run.
    pub earlier: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct RepairSnapshotsReport {
    pub snapshots: Vec<RepairedSnapshot>,
    pub unchanged: usize,
}

/// Why a blob cannot be read, if it cannot.
struct LostBlobs<'a> {
    index: &'a LocalIndex,
    stored: HashMap<PackId, u64>,
    /// Damaged locations, as the last `check --read-data` found them.
    damaged: HashMap<(BlobId, PackId), String>,
}

impl LostBlobs<'_> {
    fn why(&self, blob: &BlobId) -> Result<Option<String>> {
        let Some((pack, entry)) = self.index.lookup(blob)? else {
            return Ok(Some(format!(
                "blob {} is in no index segment",
                blob.short()
            )));
        };
        let why = match self.stored.get(&pack) {
            None => format!(
                "blob {} is in pack {}, which is missing",
                blob.short(),
                pack.short()
            ),
            Some(&size) if entry.end() > size => format!(
                "blob {} lies beyond the end of pack {}, which was cut short",
                blob.short(),
                pack.short()
            ),
            Some(_) => match self.damaged.get(&(*blob, pack)) {
                Some(reason) => format!("blob {} in pack {} {reason}", blob.short(), pack.short()),
                None => return Ok(None),
            },
        };
        Ok(Some(why))
    }
}

/// The rewritten trees: memoized per original tree, since snapshots share most of them.
struct TreeFixer<'a> {
    repo: &'a Repository,
    lost: LostBlobs<'a>,
    truncate: bool,
    /// original tree → `None` if unchanged, else the new tree and the changes below it.
    memo: HashMap<TreeId, Option<(TreeId, Vec<Found>)>>,
    /// Encoded new trees to store.
    new_trees: Vec<Vec<u8>>,
    empty_tree: Option<TreeId>,
}

impl TreeFixer<'_> {
    fn store(&mut self, tree: &Tree) -> TreeId {
        let bytes = tree.encode();
        let id = self.repo.keys().blob_id(&bytes);
        self.new_trees.push(bytes);
        id
    }

    fn empty_tree(&mut self) -> TreeId {
        if let Some(id) = self.empty_tree {
            return id;
        }
        let id = self.store(&Tree { nodes: Vec::new() });
        self.empty_tree = Some(id);
        id
    }

    /// Why a tree cannot be loaded, or the tree. An error that says nothing of the tree
    /// (a storage that failed to answer) stops the repair: the folder may well be whole.
    fn load(&self, id: &TreeId) -> Result<std::result::Result<Tree, String>> {
        if let Some(why) = self.lost.why(id)? {
            return Ok(Err(why));
        }
        match load_tree(self.repo, self.lost.index, id) {
            Ok(tree) => Ok(Ok(tree)),
            // Only damage or absence counts a tree lost: after one storage timeout, a whole
            // folder would be emptied in the repaired snapshot (and `--forget` would then
            // delete the intact original).
            Err(e) if e.is_damage() => Ok(Err(e.to_string())),
            Err(e) => Err(e),
        }
    }

    fn fix(&mut self, id: &TreeId, tree: Tree) -> Result<Option<(TreeId, Vec<Found>)>> {
        if let Some(known) = self.memo.get(id) {
            return Ok(known.clone());
        }
        let mut changes = Vec::new();
        let mut nodes = Vec::with_capacity(tree.nodes.len());
        for mut node in tree.nodes {
            if let Some(sub) = node.subtree {
                match self.load(&sub)? {
                    Err(reason) => {
                        node.subtree = Some(self.empty_tree());
                        let why = format!("its listing is lost: {reason}");
                        changes.push(Found::new(&node.name, "emptied", why));
                    }
                    Ok(subtree) => {
                        if let Some((new, below)) = self.fix(&sub, subtree)? {
                            node.subtree = Some(new);
                            changes.extend(below.into_iter().map(|c| c.below(&node.name)));
                        }
                    }
                }
            } else if node.kind == NodeKind::File {
                let mut first_lost = None;
                for (i, blob) in node.content.iter().enumerate() {
                    if let Some(why) = self.lost.why(blob)? {
                        first_lost = Some((i, why));
                        break;
                    }
                }
                if let Some((i, reason)) = first_lost {
                    if !self.truncate {
                        changes.push(Found::new(&node.name, "removed", reason));
                        continue;
                    }
                    let mut kept = 0u64;
                    for blob in &node.content[..i] {
                        kept += self
                            .lost
                            .index
                            .lookup(blob)?
                            .map_or(0, |(_, e)| e.raw_len.into());
                    }
                    let why = format!("kept the first {kept} of {} bytes; {reason}", node.size);
                    changes.push(Found::new(&node.name, "truncated", why));
                    node.content.truncate(i);
                    node.size = kept;
                }
            }
            nodes.push(node);
        }
        let fixed = if changes.is_empty() {
            None
        } else {
            Some((self.store(&Tree { nodes }), changes))
        };
        self.memo.insert(*id, fixed.clone());
        Ok(fixed)
    }
}

fn note(changes: &[Change]) -> String {
    let count = |action| changes.iter().filter(|c| c.action == action).count();
    format!(
        "repaired: {} files removed, {} truncated, {} folders emptied because their data was lost",
        count("removed"),
        count("truncated"),
        count("emptied")
    )
}

/// Repairs under `lock`, which keeps prune out until each new snapshot is committed.
pub fn run(
    repo: &Repository,
    index: &mut LocalIndex,
    lock: Option<&RepositoryLock>,
    opts: &RepairSnapshotsOptions,
) -> Result<RepairSnapshotsReport> {
    let mut report = RepairSnapshotsReport::default();
    let all = snapshot::list(index)?;
    let repaired_before: HashMap<SnapshotId, SnapshotId> = all
        .iter()
        .filter_map(|(id, s)| s.original.map(|original| (original, *id)))
        .collect();
    let chosen: Vec<(SnapshotId, Snapshot)> = all
        .into_iter()
        .filter(|(id, _)| opts.snapshots.is_empty() || opts.snapshots.contains(id))
        .collect();
    let mut fixer = TreeFixer {
        repo,
        lost: LostBlobs {
            index,
            stored: repo.stored_packs()?,
            damaged: index
                .damaged_blobs()?
                .into_iter()
                .map(|(blob, pack, reason)| ((blob, pack), reason))
                .collect(),
        },
        truncate: opts.truncate,
        memo: HashMap::new(),
        new_trees: Vec::new(),
        empty_tree: None,
    };
    let mut new_snapshots = Vec::new();
    for (id, s) in chosen {
        if let Some(repaired) = repaired_before.get(&id) {
            let forget = opts.forget && !opts.dry_run;
            if forget {
                repo.storage()
                    .delete(&object_path(FileKind::Snapshot, &id.0))?;
            }
            report.snapshots.push(RepairedSnapshot {
                original: id,
                repaired: Some(*repaired),
                changes: Vec::new(),
                unrepairable: None,
                forgotten: forget,
                earlier: true,
            });
            continue;
        }
        let fixed = match fixer.load(&s.tree)? {
            Err(reason) => {
                report.snapshots.push(RepairedSnapshot {
                    original: id,
                    repaired: None,
                    changes: Vec::new(),
                    unrepairable: Some(format!("its root listing is lost: {reason}")),
                    forgotten: false,
                    earlier: false,
                });
                continue;
            }
            Ok(root) => fixer.fix(&s.tree, root)?,
        };
        let Some((tree, changes)) = fixed else {
            report.unchanged += 1;
            continue;
        };
        let changes: Vec<Change> = changes.into_iter().map(Found::change).collect();
        let mut repaired = s.clone();
        repaired.tree = tree;
        repaired.original = Some(id);
        repaired.repair_note = Some(note(&changes));
        if !repaired.tags.iter().any(|t| t == REPAIRED_TAG) {
            repaired.tags.push(REPAIRED_TAG.into());
        }
        new_snapshots.push((report.snapshots.len(), repaired));
        report.snapshots.push(RepairedSnapshot {
            original: id,
            repaired: None,
            changes,
            unrepairable: None,
            forgotten: false,
            earlier: false,
        });
    }
    if opts.dry_run || new_snapshots.is_empty() {
        return Ok(report);
    }
    let new_trees = std::mem::take(&mut fixer.new_trees);
    drop(fixer);
    let mut packer = Packer::new(repo, index, opts.zstd_level)?.guarded_by(lock);
    for bytes in &new_trees {
        packer.add(BlobType::Tree, bytes)?;
    }
    packer.finish()?;
    for (pos, snapshot) in new_snapshots {
        let id = snapshot::commit(repo, index, lock, &snapshot)?;
        let entry = &mut report.snapshots[pos];
        entry.repaired = Some(id);
        failpoint::hit("repair-snapshots-written");
        if opts.forget {
            repo.storage()
                .delete(&object_path(FileKind::Snapshot, &entry.original.0))?;
            entry.forgotten = true;
        }
    }
    Ok(report)
}
