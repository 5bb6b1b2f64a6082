//! Snapshots and the trees they reach: every snapshot must decrypt and decode, every reachable
//! tree must load, every blob a tree names must be indexed. The tree graph kept from the walk
//! lets the report trace lost blobs back to the snapshots and paths that need them.

use std::collections::HashMap;

use rayon::prelude::*;

use super::{Affected, CheckProgress, CheckReport, Damage, Problem};
use crate::error::{Error, Result};
use crate::ids::{BlobId, IdMap, IdSet, PackId, SnapshotId, TreeId};
use crate::index::Inventory;
use crate::pack::{BlobEntry, open_blob};
use crate::repo::{FileKind, Repository};
use crate::snapshot::Snapshot;
use crate::tree::{JsonPath, NodeKind, Tree};

/// What a tree points at, kept for tracing damage back to paths.
#[derive(Default)]
pub struct TreeEdges {
    subtrees: Vec<TreeId>,
    blobs: Vec<BlobId>,
}

/// A file whose indexed blobs do not add up to its size, which restore refuses: its name, its
/// size, and the bytes its blobs hold.
type WrongSize = (Vec<u8>, u64, u64);

impl TreeEdges {
    /// The links of a fully decoded tree: `check` decodes every tree whole, so damage
    /// anywhere in it is found, and checks each file's size against its blobs' lengths.
    fn decoded(id: &TreeId, plain: &[u8], inventory: &Inventory) -> Result<(Self, Vec<WrongSize>)> {
        let (mut edges, mut wrong_sizes) = (TreeEdges::default(), Vec::new());
        for node in Tree::decode(id, plain)?.nodes {
            // A blob in no index segment is reported as missing, not here.
            if node.kind == NodeKind::File
                && let Some(held) = blobs_hold(inventory, &node.content)
                && held != node.size
            {
                wrong_sizes.push((node.name, node.size, held));
            }
            edges.subtrees.extend(node.subtree);
            edges.blobs.extend(node.content);
        }
        Ok((edges, wrong_sizes))
    }

    /// Only the links (prune's marking needs no more, and skips decoding the rest).
    fn links(id: &TreeId, plain: &[u8]) -> Result<(Self, Vec<WrongSize>)> {
        let (subtrees, blobs) = Tree::links(id, plain)?;
        Ok((TreeEdges { subtrees, blobs }, Vec::new()))
    }
}

/// The bytes a file's blobs hold, as indexed; None if one is in no index segment.
fn blobs_hold(inventory: &Inventory, content: &[BlobId]) -> Option<u64> {
    content
        .iter()
        .map(|blob| {
            inventory
                .locations(blob)
                .next()
                .map(|(_, e)| u64::from(e.raw_len))
        })
        .sum()
}

/// Turns a tree's plaintext into what a walk keeps of it.
type Decoder<'d, T> = &'d (dyn Fn(&TreeId, &[u8]) -> Result<T> + Sync);

#[derive(Default)]
pub struct TreeGraph {
    pub edges: IdMap<TreeId, TreeEdges>,
    /// Every blob (data and tree) some snapshot needs.
    pub referenced: IdSet<BlobId>,
}

/// Every snapshot on storage that decrypts and decodes, oldest first; the others are reported.
/// Also the ids of those listed but gone when read (forgotten meanwhile).
pub fn load_snapshots(
    repo: &Repository,
    report: &mut CheckReport,
) -> Result<(crate::snapshot::Listed, Vec<SnapshotId>)> {
    let ids = repo.list_ids(FileKind::Snapshot)?;
    let loaded: Vec<(SnapshotId, Result<Snapshot>)> = ids
        .into_par_iter()
        .map(|id| {
            let id = SnapshotId(id);
            let snapshot = repo
                .load_file(FileKind::Snapshot, &id.0)
                .and_then(|body| Snapshot::decode(&id, &body));
            (id, snapshot)
        })
        .collect();
    let (mut good, mut vanished) = (Vec::new(), Vec::new());
    for (id, snapshot) in loaded {
        match snapshot {
            Ok(s) => good.push((id, s)),
            Err(Error::Storage {
                not_found: true, ..
            }) => vanished.push(id),
            Err(e) if e.is_integrity() => report.problems.push(Problem::SnapshotDamaged {
                snapshot: id,
                reason: e.to_string(),
            }),
            Err(e) => return Err(e),
        }
    }
    good.sort_by_key(|(id, s)| (s.time_ns, *id));
    report.stats.snapshots = good.len();
    Ok((good, vanished))
}

/// Trees of one pack closer than this to each other are read in one range read.
const READ_GAP: u64 = 256 * 1024;

/// Loads trees through the in-memory inventory: per pack, the wanted trees sorted by offset
/// and read in a few coalesced range reads, so a walk reads each tree's bytes about once.
pub struct TreeLoader<'a> {
    repo: &'a Repository,
    inventory: &'a Inventory,
}

impl<'a> TreeLoader<'a> {
    pub fn new(repo: &'a Repository, inventory: &'a Inventory) -> Self {
        TreeLoader { repo, inventory }
    }

    fn load(&self, ids: &[TreeId]) -> Vec<(TreeId, Result<Tree>)> {
        self.load_with(ids, &Tree::decode)
    }

    /// Loads trees and turns each into a `T` on the worker that decrypted it, so a level of
    /// decoded trees is never held at once.
    fn load_with<T: Send>(&self, ids: &[TreeId], f: Decoder<T>) -> Vec<(TreeId, Result<T>)> {
        let mut runs: Vec<(PackId, Vec<(TreeId, BlobEntry)>)> = Vec::new();
        let mut by_pack: HashMap<PackId, Vec<(TreeId, BlobEntry)>> = HashMap::new();
        let mut out = Vec::new();
        for id in ids {
            match self.inventory.locations(id).next() {
                Some((pack, entry)) => by_pack.entry(pack.id).or_default().push((*id, *entry)),
                None => out.push((*id, Err(Error::BlobNotFound { blob: *id }))),
            }
        }
        for (pack, mut wanted) in by_pack {
            wanted.sort_by_key(|(_, e)| e.offset);
            let mut run: Vec<(TreeId, BlobEntry)> = Vec::new();
            for w in wanted {
                let far = run
                    .last()
                    .is_some_and(|(_, last)| w.1.offset > last.end() + READ_GAP);
                if far {
                    runs.push((pack, std::mem::take(&mut run)));
                }
                run.push(w);
            }
            runs.push((pack, run));
        }
        let loaded: Vec<Vec<(TreeId, Result<T>)>> = runs
            .into_par_iter()
            .map(|(pack, run)| self.load_run(pack, run, f))
            .collect();
        out.extend(loaded.into_iter().flatten());
        out
    }

    /// Trees lying close together in one pack, read with one range read.
    fn load_run<T: Send>(
        &self,
        pack: PackId,
        run: Vec<(TreeId, BlobEntry)>,
        f: Decoder<T>,
    ) -> Vec<(TreeId, Result<T>)> {
        let start = run.iter().map(|(_, e)| e.offset).min().unwrap_or(0);
        let end = run.iter().map(|(_, e)| e.end()).max().unwrap_or(0);
        let span = self.repo.read_pack_range(&pack, start..end);
        run.into_par_iter()
            .map(|(id, entry)| {
                let first = match &span {
                    Ok(bytes) => {
                        let sealed =
                            &bytes[(entry.offset - start) as usize..(entry.end() - start) as usize];
                        open_blob(self.repo.keys(), self.repo.id(), &pack, &entry, sealed)
                            .and_then(|plain| f(&id, &plain))
                    }
                    Err(e) => Err(clone_error(e)),
                };
                let tree =
                    first.or_else(|e| other_copies(self.repo, self.inventory, &id, &pack, e, f));
                (id, tree)
            })
            .collect()
    }
}

/// A tree whose first copy failed: tries the copies in other packs.
fn other_copies<T>(
    repo: &Repository,
    inventory: &Inventory,
    id: &TreeId,
    failed: &PackId,
    first_error: Error,
    f: Decoder<T>,
) -> Result<T> {
    let copies = inventory
        .locations(id)
        .map(|(pack, entry)| (&pack.id, entry));
    match crate::blobs::first_good_copy(repo, copies, failed) {
        Some((_, plain)) => f(id, &plain),
        None => Err(first_error),
    }
}

fn clone_error(e: &Error) -> Error {
    match e {
        Error::Storage {
            op,
            path,
            message,
            not_found,
        } => Error::Storage {
            op,
            path: path.clone(),
            message: message.clone(),
            not_found: *not_found,
        },
        other => Error::Invalid(other.to_string()),
    }
}

/// Walks every tree reachable from the snapshots, level by level, each tree once. With
/// `keep_edges` (check) every tree is decoded whole and its links are kept for tracing damage
/// to paths; without (prune's marking) only the links are read.
pub fn walk(
    loader: &TreeLoader,
    snapshots: &[(SnapshotId, Snapshot)],
    report: &mut CheckReport,
    damage: &mut Damage,
    progress: &dyn CheckProgress,
    keep_edges: bool,
) -> TreeGraph {
    let inventory = loader.inventory;
    progress.phase("trees", 0);
    let mut graph = TreeGraph::default();
    let mut level: Vec<TreeId> = Vec::new();
    let mut trees = 0;
    for (_, s) in snapshots {
        if graph.referenced.insert(s.tree) {
            level.push(s.tree);
        }
    }
    while !level.is_empty() {
        let mut next = Vec::new();
        let decoded = |id: &TreeId, plain: &[u8]| TreeEdges::decoded(id, plain, inventory);
        let decoder: Decoder<(TreeEdges, Vec<WrongSize>)> = if keep_edges {
            &decoded
        } else {
            &TreeEdges::links
        };
        for (id, edges) in loader.load_with(&level, decoder) {
            progress.advance(1);
            let (edges, wrong_sizes) = match edges {
                Ok(decoded) => decoded,
                Err(e) => {
                    tree_failed(inventory, id, e, report, damage);
                    continue;
                }
            };
            trees += 1;
            for (name, size, blobs_hold) in wrong_sizes {
                report.problems.push(Problem::FileSizeWrong {
                    tree: id,
                    name: String::from_utf8_lossy(&name).into_owned(),
                    name_hex: crate::tree::hex_unless_utf8(&name),
                    size,
                    blobs_hold,
                });
            }
            for sub in &edges.subtrees {
                if graph.referenced.insert(*sub) {
                    next.push(*sub);
                }
            }
            graph.referenced.extend(edges.blobs.iter().copied());
            if keep_edges {
                graph.edges.insert(id, edges);
            }
        }
        level = next;
    }
    // Trees that are not indexed were reported as they failed to load; the rest is found
    // with one merge against the index instead of a lookup per blob.
    let mut referenced: Vec<BlobId> = graph.referenced.iter().copied().collect();
    referenced.sort_unstable();
    for blob in inventory.unindexed(&referenced) {
        if let std::collections::hash_map::Entry::Vacant(lost) = damage.lost.entry(blob) {
            report.problems.push(Problem::BlobMissing { blob });
            lost.insert(format!("blob {blob} is in no index segment"));
        }
    }
    report.stats.trees = trees;
    graph
}

fn tree_failed(
    inventory: &Inventory,
    id: TreeId,
    e: Error,
    report: &mut CheckReport,
    damage: &mut Damage,
) {
    let reason = if !inventory.contains(&id) {
        report.problems.push(Problem::BlobMissing { blob: id });
        format!("its listing (tree {}) is in no index segment", id.short())
    } else if matches!(e, Error::Storage { .. })
        && inventory
            .locations(&id)
            .all(|(pack, _)| pack_reported(report, &pack.id))
    {
        // A missing or short pack, reported by the pack check already.
        format!("its listing (tree {}) cannot be read: {e}", id.short())
    } else {
        report.problems.push(Problem::TreeDamaged {
            tree: id,
            reason: e.to_string(),
        });
        format!("its listing (tree {}) is damaged", id.short())
    };
    damage.lost.insert(id, reason);
}

/// True if the pack check found the pack missing or of the wrong size.
fn pack_reported(report: &CheckReport, pack: &PackId) -> bool {
    report.problems.iter().any(|p| match p {
        Problem::PackMissing { pack: p, .. } | Problem::PackSizeDiffers { pack: p, .. } => {
            p == pack
        }
        _ => false,
    })
}

/// Every entry of every snapshot that needs a lost blob: files whose content is lost, folders
/// whose listing is lost.
pub fn affected(
    loader: &TreeLoader,
    snapshots: &[(SnapshotId, Snapshot)],
    graph: &TreeGraph,
    lost: &IdMap<BlobId, String>,
) -> Vec<Affected> {
    let mut memo: IdMap<TreeId, bool> = IdMap::default();
    let mut out = Vec::new();
    for (sid, s) in snapshots {
        if let Some(reason) = lost.get(&s.tree) {
            out.push(Affected {
                snapshot: *sid,
                path: JsonPath::new(b"/"),
                node: "dir",
                reason: reason.clone(),
            });
        } else if leads_to_loss(&s.tree, graph, lost, &mut memo) {
            let mut walk = AffectedWalk {
                loader,
                graph,
                lost,
                memo: &mut memo,
                snapshot: *sid,
                out: &mut out,
            };
            walk.tree(&s.tree, b"");
        }
    }
    out
}

fn leads_to_loss(
    id: &TreeId,
    graph: &TreeGraph,
    lost: &IdMap<BlobId, String>,
    memo: &mut IdMap<TreeId, bool>,
) -> bool {
    if let Some(&known) = memo.get(id) {
        return known;
    }
    let bad = lost.contains_key(id)
        || graph.edges.get(id).is_some_and(|e| {
            e.blobs.iter().any(|b| lost.contains_key(b))
                || e.subtrees
                    .iter()
                    .any(|t| leads_to_loss(t, graph, lost, memo))
        });
    memo.insert(*id, bad);
    bad
}

struct AffectedWalk<'a> {
    loader: &'a TreeLoader<'a>,
    graph: &'a TreeGraph,
    lost: &'a IdMap<BlobId, String>,
    memo: &'a mut IdMap<TreeId, bool>,
    snapshot: SnapshotId,
    out: &'a mut Vec<Affected>,
}

impl AffectedWalk<'_> {
    fn tree(&mut self, id: &TreeId, prefix: &[u8]) {
        let Some((_, Ok(tree))) = self.loader.load(&[*id]).pop() else {
            return;
        };
        for node in &tree.nodes {
            let path = [prefix, b"/", &node.name].concat();
            if let Some(sub) = node.subtree {
                if let Some(reason) = self.lost.get(&sub) {
                    self.push(path, "dir", reason);
                } else if leads_to_loss(&sub, self.graph, self.lost, self.memo) {
                    self.tree(&sub, &path);
                }
            } else if node.kind == NodeKind::File
                && let Some(reason) = node.content.iter().find_map(|b| self.lost.get(b))
            {
                self.push(path, "file", reason);
            }
        }
    }

    fn push(&mut self, path: Vec<u8>, node: &'static str, reason: &str) {
        self.out.push(Affected {
            snapshot: self.snapshot,
            path: JsonPath::new(&path),
            node,
            reason: reason.to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::BlobType;
    use crate::index::inventory::IndexedPack;

    /// Regression: a snapshot listed but gone when read was taken for one forgotten meanwhile,
    /// also by prune, under whose exclusive lock that means another process ignores the lock
    /// (one that replaced it, as `tag` does, may be missing from the listing): prune stops.
    #[test]
    fn prune_stops_when_a_listed_snapshot_vanishes() {
        use crate::repo::object_path;
        use crate::storage::{OpendalStorage, Storage, instrumented::Instrumented};
        let origin = OpendalStorage::memory_as_remote().unwrap();
        let snapshot = object_path(FileKind::Snapshot, &[5; 32]);
        origin.write(&snapshot, b"listed".to_vec()).unwrap();
        let mut storage = Instrumented::new(origin.another_handle().unwrap());
        storage.before_read = Box::new(|inner, path| {
            if path.starts_with("snapshots/") {
                inner.delete(path).unwrap();
            }
        });
        let repo = crate::repo::repository_on(Box::new(storage));
        let (found, vanished) = load_snapshots(&repo, &mut CheckReport::default()).unwrap();
        assert!(found.is_empty());
        assert_eq!(vanished, [SnapshotId([5; 32])]);
        origin.write(&snapshot, b"listed".to_vec()).unwrap();
        let err = crate::check::used_blobs(&repo, &Inventory::default(), &[]).unwrap_err();
        assert!(err.to_string().contains("vanished"), "{err}");
        // One this process removed itself (`forget --prune`) may still be listed: no error.
        origin.write(&snapshot, b"listed".to_vec()).unwrap();
        let removed = [SnapshotId([5; 32])];
        let (count, _) = crate::check::used_blobs(&repo, &Inventory::default(), &removed).unwrap();
        assert_eq!(count, 0);
    }

    /// Regression: a tree that could not be read for a reason other than a missing or short
    /// pack (an I/O error in the middle of the pack, a failing object store) was counted as
    /// lost but not as a problem, so `check` said "no damage found".
    #[test]
    fn an_unreadable_tree_is_a_problem_unless_its_pack_was_reported() {
        let tree = BlobId([7; 32]);
        let pack = PackId([9; 32]);
        let mut inventory = Inventory::default();
        inventory.set_packs(vec![IndexedPack {
            id: pack,
            size: 1000,
            entries: vec![BlobEntry {
                id: tree,
                blob_type: BlobType::Tree,
                compression: 0,
                offset: 0,
                stored_len: 100,
                raw_len: 60,
            }],
        }]);
        let io_error = || Error::Storage {
            op: "read",
            path: format!("packs/{pack}"),
            message: "Input/output error".into(),
            not_found: false,
        };
        let mut report = CheckReport::default();
        let mut damage = Damage::default();
        tree_failed(&inventory, tree, io_error(), &mut report, &mut damage);
        assert!(!report.is_clean());
        assert!(damage.lost.contains_key(&tree));

        let mut report = CheckReport::default();
        report
            .problems
            .push(Problem::PackMissing { pack, blobs: 1 });
        tree_failed(&inventory, tree, io_error(), &mut report, &mut damage);
        assert_eq!(report.problems.len(), 1, "the missing pack says it all");
    }
}
