//! Snapshots and the trees they reach: every snapshot must decrypt and decode, every reachable
//! tree must load, every blob a tree names must be indexed. The tree graph kept from the walk
//! lets the report trace lost blobs back to the snapshots and paths that need them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use super::{Affected, CheckProgress, CheckReport, Damage, Problem};
use crate::blobs::lock;
use crate::error::{Error, Result};
use crate::ids::{BlobId, IdMap, IdSet, PackId, SnapshotId, TreeId};
use crate::index::Inventory;
use crate::pack::{BlobEntry, open_blob};
use crate::repo::{FileKind, Repository};
use crate::snapshot::Snapshot;
use crate::tree::{NodeKind, Tree};

/// What a tree points at, kept for tracing damage back to paths.
#[derive(Default)]
pub struct TreeEdges {
    subtrees: Vec<TreeId>,
    blobs: Vec<BlobId>,
}

#[derive(Default)]
pub struct TreeGraph {
    pub edges: IdMap<TreeId, TreeEdges>,
    /// Every blob (data and tree) some snapshot needs.
    pub referenced: IdSet<BlobId>,
}

/// Every snapshot on storage that decrypts and decodes, oldest first; the others are reported.
pub fn load_snapshots(
    repo: &Repository,
    report: &mut CheckReport,
) -> Result<Vec<(SnapshotId, Snapshot)>> {
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
    let mut good = Vec::new();
    for (id, snapshot) in loaded {
        match snapshot {
            Ok(s) => good.push((id, s)),
            Err(Error::Storage {
                not_found: true, ..
            }) => {} // forgotten since listed
            Err(e) if e.is_integrity() => report.problems.push(Problem::SnapshotDamaged {
                snapshot: id,
                reason: e.to_string(),
            }),
            Err(e) => return Err(e),
        }
    }
    good.sort_by_key(|(id, s)| (s.time_ns, *id));
    report.stats.snapshots = good.len();
    Ok(good)
}

/// Tree packs kept whole in memory while walking, at most this many bytes: a walk goes level
/// by level and needs each tree pack at every level.
const TREE_PACK_BUDGET: usize = 512 << 20;

/// Loads trees through the in-memory inventory, reading each tree pack once (within budget).
pub struct TreeLoader<'a> {
    repo: &'a Repository,
    inventory: &'a Inventory,
    packs: Mutex<CachedPacks>,
}

#[derive(Default)]
struct CachedPacks {
    bytes: HashMap<PackId, Arc<Vec<u8>>>,
    total: usize,
}

impl<'a> TreeLoader<'a> {
    pub fn new(repo: &'a Repository, inventory: &'a Inventory) -> Self {
        TreeLoader {
            repo,
            inventory,
            packs: Mutex::new(CachedPacks::default()),
        }
    }

    /// The bytes `start..end` of a pack, from the cache or storage.
    fn span(&self, pack: &PackId, start: u64, end: u64) -> Result<(Arc<Vec<u8>>, u64)> {
        if let Some(bytes) = lock(&self.packs).bytes.get(pack) {
            return Ok((Arc::clone(bytes), 0));
        }
        let size = self.inventory.pack(pack).map_or(0, |p| p.size);
        if lock(&self.packs).total + size as usize <= TREE_PACK_BUDGET {
            let bytes = Arc::new(self.repo.read_pack(pack)?);
            let mut cache = lock(&self.packs);
            cache.total += bytes.len();
            cache.bytes.insert(*pack, Arc::clone(&bytes));
            return Ok((bytes, 0));
        }
        Ok((
            Arc::new(self.repo.read_pack_range(pack, start..end)?),
            start,
        ))
    }

    fn load(&self, ids: &[TreeId]) -> Vec<(TreeId, Result<Tree>)> {
        let mut by_pack: HashMap<PackId, Vec<(TreeId, BlobEntry)>> = HashMap::new();
        let mut out = Vec::new();
        for id in ids {
            match self.inventory.locations(id).next() {
                Some((pack, entry)) => by_pack.entry(pack.id).or_default().push((*id, *entry)),
                None => out.push((*id, Err(Error::BlobNotFound { blob: *id }))),
            }
        }
        let groups: Vec<_> = by_pack.into_iter().collect();
        let loaded: Vec<Vec<(TreeId, Result<Tree>)>> = groups
            .into_par_iter()
            .map(|(pack, wanted)| {
                let start = wanted.iter().map(|(_, e)| e.offset).min().unwrap_or(0);
                let end = wanted.iter().map(|(_, e)| e.end()).max().unwrap_or(0);
                let span = self.span(&pack, start, end);
                wanted
                    .into_par_iter()
                    .map(|(id, entry)| {
                        let first = match &span {
                            Ok((bytes, base)) => {
                                let sealed = usize::try_from(entry.offset - base)
                                    .ok()
                                    .zip(usize::try_from(entry.end() - base).ok())
                                    .and_then(|(a, b)| bytes.get(a..b))
                                    .ok_or_else(|| Error::BlobIntegrity {
                                        blob: id,
                                        pack,
                                        reason: "lies outside the pack".into(),
                                    });
                                sealed
                                    .and_then(|s| {
                                        open_blob(
                                            self.repo.keys(),
                                            self.repo.id(),
                                            &pack,
                                            &entry,
                                            s,
                                        )
                                    })
                                    .and_then(|plain| Tree::decode(&id, &plain))
                            }
                            Err(e) => Err(clone_error(e)),
                        };
                        let tree = first
                            .or_else(|e| other_copies(self.repo, self.inventory, &id, &pack, e));
                        (id, tree)
                    })
                    .collect()
            })
            .collect();
        out.extend(loaded.into_iter().flatten());
        out
    }
}

/// A tree whose first copy failed: tries the copies in other packs.
fn other_copies(
    repo: &Repository,
    inventory: &Inventory,
    id: &TreeId,
    failed: &PackId,
    first_error: Error,
) -> Result<Tree> {
    for (pack, entry) in inventory.locations(id).filter(|(p, _)| p.id != *failed) {
        let tree = repo
            .read_pack_range(&pack.id, entry.offset..entry.end())
            .and_then(|sealed| open_blob(repo.keys(), repo.id(), &pack.id, entry, &sealed))
            .and_then(|plain| Tree::decode(id, &plain));
        if tree.is_ok() {
            return tree;
        }
    }
    Err(first_error)
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

/// Walks every tree reachable from the snapshots, level by level, each tree once.
pub fn walk(
    loader: &TreeLoader,
    snapshots: &[(SnapshotId, Snapshot)],
    report: &mut CheckReport,
    damage: &mut Damage,
    progress: &dyn CheckProgress,
) -> TreeGraph {
    let inventory = loader.inventory;
    progress.phase("trees", 0);
    let mut graph = TreeGraph::default();
    let mut level: Vec<TreeId> = Vec::new();
    for (_, s) in snapshots {
        if graph.referenced.insert(s.tree) {
            level.push(s.tree);
        }
    }
    while !level.is_empty() {
        let mut next = Vec::new();
        for (id, tree) in loader.load(&level) {
            progress.advance(1);
            let tree = match tree {
                Ok(tree) => tree,
                Err(e) => {
                    tree_failed(inventory, id, e, report, damage);
                    continue;
                }
            };
            let mut edges = TreeEdges::default();
            for node in tree.nodes {
                if let Some(sub) = node.subtree {
                    edges.subtrees.push(sub);
                    if graph.referenced.insert(sub) {
                        next.push(sub);
                    }
                }
                for blob in node.content {
                    if graph.referenced.insert(blob) && !inventory.contains(&blob) {
                        report.problems.push(Problem::BlobMissing { blob });
                        damage
                            .lost
                            .insert(blob, format!("blob {blob} is in no index segment"));
                    }
                    edges.blobs.push(blob);
                }
            }
            graph.edges.insert(id, edges);
        }
        level = next;
    }
    report.stats.trees = graph.edges.len();
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
    } else if matches!(e, Error::Storage { .. }) {
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
                path: "/".into(),
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
            walk.tree(&s.tree, "");
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
    fn tree(&mut self, id: &TreeId, prefix: &str) {
        let Some((_, Ok(tree))) = self.loader.load(&[*id]).pop() else {
            return;
        };
        for node in &tree.nodes {
            let path = format!("{prefix}/{}", String::from_utf8_lossy(&node.name));
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

    fn push(&mut self, path: String, node: &'static str, reason: &str) {
        self.out.push(Affected {
            snapshot: self.snapshot,
            path,
            node,
            reason: reason.to_string(),
        });
    }
}
