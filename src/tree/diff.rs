//! Differences between two trees, or between a tree and the files on disk now.
//!
//! Guarantees: subtrees with equal ids are skipped without being read; file content is
//! compared by blob ids, never by reading data from the repository. On disk, a file whose
//! size and mtime match is taken as unchanged, one whose size differs as modified; otherwise
//! it is read in pieces of its blobs' lengths (from the index), each hashed and compared with
//! its blob id, as a restore decides what to keep: so a file stored sparse, or cut by another
//! chunker (a copy from another repository, another chunk profile), is not taken as modified.
//! Symlinks compare by target, device nodes by device number; owners, modes, times and
//! extended attributes count as metadata. Nothing on disk is followed through a symlink: a
//! folder below the starting one is listed only if it is still the folder its parent's
//! listing saw. An entry that cannot be read is left out with a warning, never reported as
//! changed. Trees nested deeper than `walk::MAX_DEPTH` are refused, not followed.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{JsonPath, Node, NodeKind};
use crate::blobs::BlobReader;
use crate::crypto::Keys;
use crate::error::Result;
use crate::ids::TreeId;
use crate::walk::{self, FolderId};

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
    #[serde(flatten)]
    pub path: JsonPath,
    pub change: Change,
    pub old_size: u64,
    pub new_size: u64,
}

/// An entry on disk that could not be looked at (or read), and why.
#[derive(Clone, Debug, Serialize)]
pub struct Unreadable {
    #[serde(flatten)]
    pub path: JsonPath,
    pub reason: String,
}

pub struct Differ<'r, 'a, 'o> {
    pub reader: &'r BlobReader<'a>,
    pub metadata: bool,
    /// Gets each difference as it is found, in path order (nothing is held back, so memory
    /// does not grow with the number of differences).
    pub out: &'o mut dyn FnMut(DiffEntry),
    /// Folders and entries on disk that could not be looked at: left out of the comparison
    /// rather than reported as removed or changed.
    pub unreadable: Vec<Unreadable>,
}

fn same_metadata(a: &Node, b: &Node) -> bool {
    a.mode == b.mode
        && a.uid == b.uid
        && a.gid == b.gid
        && a.user == b.user
        && a.group == b.group
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

impl Differ<'_, '_, '_> {
    fn tree(&self, id: Option<TreeId>) -> Result<Vec<Node>> {
        match id {
            Some(id) => Ok(self.reader.tree(&id)?.nodes),
            None => Ok(Vec::new()),
        }
    }

    fn push(&mut self, path: &[u8], change: Change, old: Option<&Node>, new: Option<&Node>) {
        (self.out)(DiffEntry {
            path: JsonPath::new(path),
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
        walk::check_depth(at)?;
        let (a, b) = (self.tree(old)?, self.tree(new)?);
        for (x, y) in pairs(&a, &b, |n| &n.name) {
            let name = x.or(y).map_or(&[][..], |n| &n.name[..]);
            self.pair(x, y, &[at, b"/", name].concat())?;
        }
        Ok(())
    }

    /// Compares two entries at `path` (either may be absent), and what is below them.
    pub fn pair(&mut self, x: Option<&Node>, y: Option<&Node>, path: &[u8]) -> Result<()> {
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

    fn unreadable(&mut self, path: &Path, reason: String) {
        self.unreadable.push(Unreadable {
            path: JsonPath::new(path.as_os_str().as_bytes()),
            reason,
        });
    }

    /// A folder's entries on disk as nodes (symlink targets read, extended attributes too
    /// with `metadata`), and the names of those that could not be looked at; `None` if the
    /// folder cannot be listed (or, with `expected`, is no longer the folder its parent's
    /// listing saw). A folder that is gone has no entries.
    fn disk_entries(&mut self, dir: &Path, expected: Option<FolderId>) -> Option<DiskListing> {
        let entries = match walk::read_dir_sorted(dir, expected) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                self.unreadable(dir, format!("cannot list: {e}"));
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
                    self.unreadable(&e.path, format!("cannot read metadata: {err}"));
                    unlooked.push(e.name);
                    continue;
                }
            };
            let mut node = walk::node_from_metadata(e.name, &meta);
            if node.kind == NodeKind::Symlink {
                match walk::long_path::read_link(&e.path) {
                    Ok(t) => node.link_target = Some(walk::name_bytes(t.as_os_str())),
                    Err(err) => {
                        self.unreadable(&e.path, format!("cannot read the link: {err}"));
                        unlooked.push(node.name);
                        continue;
                    }
                }
            }
            if self.metadata {
                match walk::read_xattrs(&e.path) {
                    Ok(xattrs) => node.xattrs = xattrs,
                    Err(err) => {
                        let reason = format!("cannot read extended attributes: {err}");
                        self.unreadable(&e.path, reason);
                        xattrs_unread.push(node.name.clone());
                    }
                }
            }
            let folder = meta.is_dir().then(|| walk::folder_id(&meta));
            disk.push(DiskEntry {
                node,
                path: e.path,
                folder,
            });
        }
        Some(DiskListing {
            entries: disk,
            unlooked,
            xattrs_unread,
        })
    }

    /// Whether the file at `path` holds `node`'s content; `None`, with a warning, if it
    /// cannot be read.
    fn holds_content(&mut self, keys: &Keys, path: &Path, node: &Node) -> Result<Option<bool>> {
        let mut file = match crate::backup::source_file::open(path, false, true) {
            Ok(Some(file)) => file,
            // A symlink, FIFO or device now: not the file (and not opened, see `open`).
            Ok(None) => return Ok(Some(false)),
            Err(e) => {
                self.unreadable(path, format!("cannot read: {e}"));
                return Ok(None);
            }
        };
        // Anything but a regular file now (a FIFO, a device) is not the file, and not read.
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return Ok(Some(false));
        }
        match crate::blobs::holds_content(keys, self.reader, &mut file, node) {
            Ok(Ok(same)) => Ok(Some(same)),
            Ok(Err(e)) => {
                self.unreadable(path, format!("cannot read: {e}"));
                Ok(None)
            }
            // The index lost one of its blobs (a pack gone): no length to compare by.
            Err(e @ crate::error::Error::BlobNotFound { .. }) => {
                self.unreadable(path, format!("cannot compare: {e}"));
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Compares a tree with a folder on disk (`expected`: see `disk_entries`).
    pub fn live(
        &mut self,
        tree: Option<TreeId>,
        dir: &Path,
        expected: Option<FolderId>,
        at: &[u8],
        keys: &Keys,
    ) -> Result<()> {
        walk::check_depth(at)?;
        let old = self.tree(tree)?;
        let Some(DiskListing {
            entries: disk,
            unlooked,
            xattrs_unread,
        }) = self.disk_entries(dir, expected)
        else {
            return Ok(());
        };
        for (x, y) in pairs(&old, &disk, |d| &d.node.name) {
            let name = x
                .map(|n| &n.name[..])
                .or_else(|| y.map(|d| &d.node.name[..]))
                .unwrap_or_default();
            let path = [at, b"/", name].concat();
            match (x, y) {
                (Some(x), None) if unlooked.contains(&x.name) => continue,
                (Some(x), None) => self.push(&path, Change::Removed, Some(x), None),
                (None, Some(d)) => self.push(&path, Change::Added, None, Some(&d.node)),
                (Some(x), Some(d)) => {
                    let y = &d.node;
                    let mut unchanged = x.kind == y.kind
                        && x.link_target == y.link_target
                        && x.rdev == y.rdev
                        && (x.kind != NodeKind::File || x.size == y.size);
                    if unchanged && x.kind == NodeKind::File && x.mtime_ns != y.mtime_ns {
                        match self.holds_content(keys, &d.path, x)? {
                            Some(same) => unchanged = same,
                            None => continue,
                        }
                    }
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
            match (old_dir, y.filter(|d| d.node.kind == NodeKind::Dir)) {
                (old, Some(d)) => self.live(old, &d.path, d.folder, &path, keys)?,
                (Some(old), None) => self.trees(Some(old), None, &path)?,
                (None, None) => {}
            }
        }
        Ok(())
    }
}

/// An entry on disk: as a node, its path, and for a folder its id (to list it only if it is
/// still that folder).
struct DiskEntry {
    node: Node,
    path: PathBuf,
    folder: Option<FolderId>,
}

/// A folder's entries on disk, the names of those that could not be looked at, and of those
/// whose extended attributes could not be read.
struct DiskListing {
    entries: Vec<DiskEntry>,
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
