//! Differences between two trees, or between a tree and the files on disk now.
//!
//! Guarantees: subtrees with equal ids are skipped without being read; file content is
//! compared by blob ids, never by reading data from the repository. On disk, a file whose
//! size and mtime match is taken as unchanged, one whose size differs as modified; otherwise
//! it is chunked and hashed locally with the snapshot's chunker parameters and compared blob
//! id by blob id. Symlinks compare by target, device nodes by device number; extended
//! attributes count as metadata. Nothing on disk is followed through a symlink.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Node, NodeKind};
use crate::blobs::BlobReader;
use crate::chunk::Chunker;
use crate::crypto::Keys;
use crate::error::Result;
use crate::ids::{BlobId, TreeId};
use crate::walk;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Removed,
    /// Content (or type, or link target) differs.
    Modified,
    /// Only metadata (mode, owner, mtime, extended attributes) differs; reported with
    /// `metadata`.
    Metadata,
}

#[derive(Clone, Debug, Serialize)]
pub struct DiffEntry {
    pub path: String,
    /// The path's bytes, when they are not UTF-8 (`path` then shows them lossily).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
    pub change: Change,
    pub old_size: u64,
    pub new_size: u64,
}

pub struct Differ<'r, 'a> {
    pub reader: &'r BlobReader<'a>,
    pub metadata: bool,
    pub out: Vec<DiffEntry>,
    /// Folders and entries on disk that could not be looked at: left out of the comparison
    /// rather than reported as removed.
    pub unreadable: Vec<String>,
}

fn same_metadata(a: &Node, b: &Node) -> bool {
    a.mode == b.mode
        && a.uid == b.uid
        && a.gid == b.gid
        && a.mtime_ns == b.mtime_ns
        && a.xattrs == b.xattrs
}

fn same_content(a: &Node, b: &Node) -> bool {
    a.kind == b.kind
        && a.size == b.size
        && a.content == b.content
        && a.link_target == b.link_target
        && a.rdev == b.rdev
}

impl Differ<'_, '_> {
    fn tree(&self, id: Option<TreeId>) -> Result<Vec<Node>> {
        match id {
            Some(id) => Ok(self.reader.tree(&id)?.nodes),
            None => Ok(Vec::new()),
        }
    }

    fn push(&mut self, path: &[u8], change: Change, old: Option<&Node>, new: Option<&Node>) {
        self.out.push(DiffEntry {
            path: String::from_utf8_lossy(path).into_owned(),
            path_hex: super::hex_unless_utf8(path),
            change,
            old_size: old.map_or(0, |n| n.size),
            new_size: new.map_or(0, |n| n.size),
        });
    }

    /// Compares two trees (either may be absent: everything on the other side is then added
    /// or removed).
    pub fn trees(&mut self, old: Option<TreeId>, new: Option<TreeId>, at: &[u8]) -> Result<()> {
        if old == new {
            return Ok(());
        }
        let (a, b) = (self.tree(old)?, self.tree(new)?);
        for (x, y) in pairs(&a, &b, |n| &n.name) {
            let name = x.or(y).map_or(&[][..], |n| &n.name[..]);
            self.pair(x, y, &[at, b"/", name].concat())?;
        }
        Ok(())
    }

    fn pair(&mut self, x: Option<&Node>, y: Option<&Node>, path: &[u8]) -> Result<()> {
        let dir_of = |n: Option<&Node>| {
            n.filter(|n| n.kind == NodeKind::Dir)
                .and_then(|n| n.subtree)
        };
        match (x, y) {
            (Some(x), None) => self.push(path, Change::Removed, Some(x), None),
            (None, Some(y)) => self.push(path, Change::Added, None, Some(y)),
            (Some(x), Some(y)) => {
                if x.kind == NodeKind::Dir && y.kind == NodeKind::Dir {
                    if self.metadata && !same_metadata(x, y) {
                        self.push(path, Change::Metadata, Some(x), Some(y));
                    }
                } else if !same_content(x, y) {
                    self.push(path, Change::Modified, Some(x), Some(y));
                } else if self.metadata && !same_metadata(x, y) {
                    self.push(path, Change::Metadata, Some(x), Some(y));
                }
            }
            (None, None) => {}
        }
        let (old, new) = (dir_of(x), dir_of(y));
        if old.is_some() || new.is_some() {
            self.trees(old, new, path)?;
        }
        Ok(())
    }

    /// A folder's entries on disk as nodes (symlink targets read, extended attributes too
    /// with `metadata`), and the names of those that could not be looked at; `None` if the
    /// folder cannot be listed. A folder that is gone has no entries.
    fn disk_entries(&mut self, dir: &Path) -> Option<DiskListing> {
        let entries = match walk::read_dir_sorted(dir, None) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                self.unreadable
                    .push(format!("{}: cannot list: {e}", dir.display()));
                return None;
            }
        };
        let (mut disk, mut unlooked, mut xattrs_unread) = (Vec::new(), Vec::new(), Vec::new());
        for e in entries {
            let meta = match e.metadata {
                Ok(meta) => meta,
                // Gone since the listing: as if it had not been listed.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => {
                    let path = e.path.display();
                    self.unreadable
                        .push(format!("{path}: cannot read metadata: {err}"));
                    unlooked.push(e.name);
                    continue;
                }
            };
            let mut node = walk::node_from_metadata(e.name, &meta);
            if node.kind == NodeKind::Symlink {
                node.link_target = walk::long_path::read_link(&e.path)
                    .ok()
                    .map(|t| walk::name_bytes(t.as_os_str()));
            }
            if self.metadata {
                match walk::read_xattrs(&e.path) {
                    Ok(xattrs) => node.xattrs = xattrs,
                    Err(err) => {
                        let path = e.path.display();
                        self.unreadable
                            .push(format!("{path}: cannot read extended attributes: {err}"));
                        xattrs_unread.push(node.name.clone());
                    }
                }
            }
            disk.push((node, e.path));
        }
        Some(DiskListing {
            entries: disk,
            unlooked,
            xattrs_unread,
        })
    }

    /// Compares a tree with a folder on disk.
    pub fn live(
        &mut self,
        tree: Option<TreeId>,
        dir: &Path,
        at: &[u8],
        hasher: &LiveHasher,
    ) -> Result<()> {
        let old = self.tree(tree)?;
        let Some(DiskListing {
            entries: disk,
            unlooked,
            xattrs_unread,
        }) = self.disk_entries(dir)
        else {
            return Ok(());
        };
        for (x, y) in pairs(&old, &disk, |(n, _)| &n.name) {
            let name = x
                .map(|n| &n.name[..])
                .or_else(|| y.map(|(n, _)| &n.name[..]))
                .unwrap_or_default();
            let path = [at, b"/", name].concat();
            match (x, y) {
                (Some(x), None) if unlooked.contains(&x.name) => continue,
                (Some(x), None) => self.push(&path, Change::Removed, Some(x), None),
                (None, Some((y, _))) => self.push(&path, Change::Added, None, Some(y)),
                (Some(x), Some((y, p))) => {
                    let unchanged = x.kind == y.kind
                        && x.link_target == y.link_target
                        && x.rdev == y.rdev
                        && (x.kind != NodeKind::File
                            || (x.size == y.size && x.mtime_ns == y.mtime_ns)
                            || (x.size == y.size
                                && hasher.content(p).as_deref() == Some(&x.content[..])));
                    // Attributes that could not be read are left out of the comparison.
                    let known;
                    let y = match xattrs_unread.contains(&y.name) {
                        true => {
                            known = Node {
                                xattrs: x.xattrs.clone(),
                                ..y.clone()
                            };
                            &known
                        }
                        false => y,
                    };
                    if !unchanged {
                        self.push(&path, Change::Modified, Some(x), Some(y));
                    } else if self.metadata && !same_metadata(x, y) {
                        self.push(&path, Change::Metadata, Some(x), Some(y));
                    }
                }
                (None, None) => {}
            }
            let old_dir = x
                .filter(|n| n.kind == NodeKind::Dir)
                .and_then(|n| n.subtree);
            let live_dir = y
                .filter(|(n, _)| n.kind == NodeKind::Dir)
                .map(|(_, p)| p.clone());
            match (old_dir, live_dir) {
                (old, Some(p)) => self.live(old, &p, &path, hasher)?,
                (Some(old), None) => self.trees(Some(old), None, &path)?,
                (None, None) => {}
            }
        }
        Ok(())
    }
}

/// A folder's entries on disk, the names of those that could not be looked at, and of those
/// whose extended attributes could not be read.
struct DiskListing {
    entries: Vec<(Node, PathBuf)>,
    unlooked: Vec<Vec<u8>>,
    xattrs_unread: Vec<Vec<u8>>,
}

/// Pairs the entries of two name-sorted lists by name: `(old, new)`, either side absent when
/// the name is only on the other.
fn pairs<'x, B>(
    a: &'x [Node],
    b: &'x [B],
    name_of: impl Fn(&B) -> &[u8],
) -> Vec<(Option<&'x Node>, Option<&'x B>)> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    while i < a.len() || j < b.len() {
        let order = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.name.as_slice().cmp(name_of(y)),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        let x = (order != std::cmp::Ordering::Greater).then(|| &a[i]);
        let y = (order != std::cmp::Ordering::Less).then(|| &b[j]);
        i += usize::from(x.is_some());
        j += usize::from(y.is_some());
        out.push((x, y));
    }
    out
}

/// Computes the blob ids a file on disk would have, locally.
pub struct LiveHasher<'k> {
    pub keys: &'k Keys,
    pub chunker: Chunker,
}

impl LiveHasher<'_> {
    fn content(&self, path: &Path) -> Option<Vec<BlobId>> {
        let file = crate::backup::source_file::open(path, false).ok()?;
        self.chunker
            .reader(file)
            .map(|c| c.ok().map(|c| self.keys.blob_id(&c)))
            .collect()
    }
}
