//! The tree walk of a backup: every directory becomes a tree, every file a list of blobs.
//!
//! Entries of a directory are handled in parallel (rayon), and directories below them too,
//! so the walk keeps both cores busy on trees of small files; results are put back in name
//! order, so trees are deterministic. Memory is bounded by the threads' stacks of open
//! directories, not by the size of the tree.
//!
//! With a parent snapshot, a file whose size, mtime, ctime, inode and device equal the
//! parent's entry reuses the parent's blob list without being opened — but only if every one
//! of those blobs is in the index, so a backup after data loss stores the lost blobs again.
//! (Looked up one by one, unless the index vouches for the parent's whole tree.) Nor if the
//! parent's entry was changed less than `RACY_NS` before the parent backup started, or after:
//! timestamps move in ticks (milliseconds, more on some file systems), so a file written again
//! in the tick after it was read keeps the timestamps that were read with the old content.
//! A symlink whose ctime, inode and device equal the parent's takes the parent's target (a
//! link's target never changes in place).

use std::collections::HashSet;
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use super::content::ContentWriter;
use super::exclude::Excludes;
use super::source_file;
use super::{FileStatus, Reporter, Warning};
use crate::blobs::BlobReader;
use crate::error::{Error, Result};
use crate::ids::{BlobType, TreeId};
use crate::snapshot::Summary;
use crate::tree::{Node, NodeKind, Tree};
use crate::walk;
use crate::walk::ahead::ListingAhead;

/// How long before a parent backup started a file must have last changed for its entry to be
/// trusted: covers the timestamp tick of local file systems (FAT's is 2 s). Not the clock of
/// a file server that is behind this machine's by more.
const RACY_NS: i64 = 2_000_000_000;

/// The warning for an entry that disappeared between being listed and being read.
const VANISHED: &str = "vanished before it could be read; skipped";
/// The warning for a file replaced by a symlink, FIFO or the like after it was listed.
const REPLACED: &str = "was replaced by something that is not a regular file; skipped";

#[derive(Default)]
pub struct Counters {
    files: AtomicU64,
    dirs: AtomicU64,
    other: AtomicU64,
    skipped: AtomicU64,
    new: AtomicU64,
    changed: AtomicU64,
    unchanged: AtomicU64,
    file_bytes: AtomicU64,
}

impl Counters {
    fn bump(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn fill(&self, s: &mut Summary) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        s.files = get(&self.files);
        s.dirs = get(&self.dirs);
        s.other_entries = get(&self.other);
        s.skipped = get(&self.skipped);
        s.files_new = get(&self.new);
        s.files_changed = get(&self.changed);
        s.files_unchanged = get(&self.unchanged);
        s.total_file_bytes = get(&self.file_bytes);
    }
}

pub struct Walker<'w, 'p, 'a> {
    pub content: &'w ContentWriter<'p, 'a>,
    pub parent: Option<&'w BlobReader<'a>>,
    /// Every blob below the parent's tree is known to be in the index
    /// (`LocalIndex::is_complete`), so reused files need no lookups.
    pub parent_complete: bool,
    /// When the parent backup started (`Snapshot::started_ns`).
    pub parent_started_ns: i64,
    /// The parent marks its sparse files (`Snapshot::marks_sparse`): a reused file's mark is
    /// the parent's, which goes with the blobs reused.
    pub parent_marks_sparse: bool,
    pub excludes: &'w Excludes,
    pub reporter: &'w dyn Reporter,
    pub counters: Counters,
    /// Each source as walked and with the symlinks on its way resolved
    /// (see `source_file::open_listed`).
    pub resolved_sources: Vec<(PathBuf, PathBuf)>,
    /// Folder listings read ahead (`walk::ahead`), if started.
    pub ahead: Option<&'w ListingAhead>,
    /// Every source the user named, those inside another too (`walk::named_sources`): each
    /// is saved whatever the excludes, exclude markers and --one-file-system say (those
    /// apply below it, from its own device).
    pub named: HashSet<PathBuf>,
}

/// Files larger than this are not prefetched (their own sequential readahead suffices).
const PREFETCH_BELOW: u64 = 64 * 1024 * 1024;

/// Asks the kernel to start reading, in the background, the files of a folder that will
/// probably be read (no parent entry with the same size and mtime): on a cold cache the disk
/// then works on many files at once while the workers hash and compress.
fn prefetch(entries: &[walk::DirEntry], parent: Option<&Tree>, pinned: bool) {
    use std::os::unix::io::AsRawFd;
    for e in entries {
        let Ok(meta) = &e.metadata else { continue };
        if !meta.is_file() || meta.len() == 0 || meta.len() >= PREFETCH_BELOW {
            continue;
        }
        let mtime_ns = walk::nanos(meta.mtime(), meta.mtime_nsec());
        let unchanged = parent
            .and_then(|t| t.find(&e.name))
            .is_some_and(|p| p.size == meta.len() && p.mtime_ns == mtime_ns);
        if unchanged {
            continue;
        }
        if let Ok(Some(f)) = source_file::open(&e.path, false, pinned) {
            // SAFETY: the descriptor is open for the duration of the call.
            unsafe {
                libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED);
            }
        }
    }
}

/// A file with fewer bytes allocated than its size has holes worth skipping.
fn is_sparse(meta: &Metadata) -> bool {
    meta.len() >= 1024 * 1024 && meta.blocks().saturating_mul(512) < meta.len()
}

fn same_file(a: &Node, b: &Node) -> bool {
    a.kind == NodeKind::File
        && b.kind == NodeKind::File
        && a.size == b.size
        && a.mtime_ns == b.mtime_ns
        && a.ctime_ns == b.ctime_ns
        // 0: recorded when the entry's attributes could not be read (FORMAT.md)
        && b.ctime_ns != 0
        && a.inode == b.inode
        && a.device == b.device
}

impl Walker<'_, '_, '_> {
    /// Warns and counts an entry left out of the snapshot that was there (the snapshot is
    /// then partial).
    pub fn skip(&self, path: &Path, message: String) {
        Counters::bump(&self.counters.skipped, 1);
        self.warn(path, message);
    }

    fn warn(&self, path: &Path, message: String) {
        self.reporter.warning(Warning {
            path: path.to_path_buf(),
            message,
        });
    }

    /// An entry gone between being listed and being read: the snapshot shows its folder as
    /// it is now, with a warning; but a source the user named that is gone (a log rotated
    /// away, an unmounted share) leaves a partial snapshot, never one that looks complete.
    fn vanished(&self, path: &Path) {
        match self.named.contains(path) {
            true => self.skip(path, VANISHED.into()),
            false => self.warn(path, VANISHED.into()),
        }
    }

    pub fn store_tree(&self, tree: &Tree) -> Result<TreeId> {
        self.content.store_blob(BlobType::Tree, &tree.encode())
    }

    /// Stores the tree of the folder at `dir`. Files whose blob lists together would make it
    /// larger than a tree can be (several huge sparse files) are skipped, the files with the
    /// most blobs first, so the rest of the folder and the backup go on.
    pub fn store_folder_tree(&self, dir: &Path, mut tree: Tree) -> Result<TreeId> {
        let mut encoded = tree.encode();
        let limit = crate::pack::MAX_BLOB_LEN as usize;
        if encoded.len() > limit {
            for name in fit(&mut tree, encoded.len(), limit) {
                let why = "skipped: with the other files in its folder, it would take more \
                           blobs than a folder's tree can list";
                self.skip(&dir.join(walk::os_string(&name)), why.into());
            }
            encoded = tree.encode();
        }
        self.content.store_blob(BlobType::Tree, &encoded)
    }

    pub fn parent_tree(&self, id: Option<TreeId>) -> Option<Tree> {
        let (reader, id) = self.parent.zip(id)?;
        match reader.tree(&id) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::info!("parent tree {id} unusable, reading everything below: {e}");
                None
            }
        }
    }

    /// One entry and everything below it; `None` if it is excluded or had to be skipped.
    /// `device` is the device of the source it belongs to (for --one-file-system); `meta` is
    /// the entry's metadata if the caller has it already; `listed_in`: how the folder that
    /// listed it was listed (`None` for a source).
    pub fn entry(
        &self,
        name: Vec<u8>,
        path: &Path,
        meta: Option<io::Result<Metadata>>,
        parent: Option<&Node>,
        device: Option<u64>,
        listed_in: Option<walk::ListingGuard>,
    ) -> Result<Option<Node>> {
        let meta = match meta.unwrap_or_else(|| walk::long_path::symlink_metadata(path)) {
            Ok(m) => m,
            // Gone between listing and looking: the snapshot shows the folder as it is now,
            // so this is not a partial snapshot.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.vanished(path);
                return Ok(None);
            }
            Err(e) => {
                self.skip(path, format!("cannot read metadata: {e}; skipped"));
                return Ok(None);
            }
        };
        let file_size = meta.is_file().then_some(meta.len());
        let named = self.named.contains(path);
        if !named && self.excludes.excludes(path, &name, file_size) {
            self.not_descended(&meta, path);
            return Ok(None);
        }
        let mut node = walk::node_from_metadata(name, &meta);
        // Changing an extended attribute changes the ctime: an entry whose ctime, inode and
        // device match the parent's has the parent's attributes, without a listxattr. Not
        // if the parent read them within a timestamp tick of that ctime (a change right
        // after can keep it), nor where the file system gives no ctime.
        node.xattrs = match parent {
            Some(p)
                if p.kind == node.kind
                    && p.ctime_ns == node.ctime_ns
                    && p.ctime_ns != 0
                    && p.inode == node.inode
                    && p.device == node.device
                    && !self.racy(p) =>
            {
                p.xattrs.clone()
            }
            _ => match walk::read_xattrs(path) {
                Ok(xattrs) => xattrs,
                Err(e) => self.without_xattrs(path, e, &mut node),
            },
        };
        match node.kind {
            NodeKind::Dir => {
                if !named && self.excludes.has_marker(path) {
                    self.not_descended(&meta, path);
                    return Ok(None);
                }
                let device = device.filter(|_| !named).unwrap_or(meta.dev());
                let subtree = if self.excludes.one_file_system && meta.dev() != device {
                    self.not_descended(&meta, path);
                    Counters::bump(&self.counters.dirs, 1);
                    Some(self.store_tree(&Tree::default())?)
                } else {
                    let parent_sub = parent
                        .filter(|p| p.kind == NodeKind::Dir)
                        .and_then(|p| p.subtree);
                    if walk::depth(path.as_os_str().as_encoded_bytes()) > walk::MAX_DEPTH {
                        let why =
                            format!("nested deeper than {} folders; skipped", walk::MAX_DEPTH);
                        self.not_descended(&meta, path);
                        self.skip(path, why);
                        return Ok(None);
                    }
                    let guard = match listed_in {
                        Some(parent) => walk::ListingGuard::below(parent, &meta),
                        None => walk::ListingGuard::source(&meta),
                    };
                    self.dir_tree(path, parent_sub, device, guard)?
                };
                match subtree {
                    Some(id) => node.subtree = Some(id),
                    None => return Ok(None),
                }
            }
            NodeKind::File => {
                // Someone else could have swapped a folder on the way since it was listed.
                let pinned = listed_in.is_none_or(|g| g.check.is_some());
                if !self.file(&mut node, path, &meta, parent, pinned)? {
                    return Ok(None);
                }
            }
            NodeKind::Symlink => match self.link_target(path, &node, &meta, parent) {
                Ok(target) => {
                    node.link_target = Some(target);
                    Counters::bump(&self.counters.other, 1);
                }
                // Gone since it was listed: as for any entry that vanished.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.vanished(path);
                    return Ok(None);
                }
                Err(e) => {
                    self.skip(path, format!("cannot read link: {e}; skipped"));
                    return Ok(None);
                }
            },
            _ => Counters::bump(&self.counters.other, 1),
        }
        Ok(Some(node))
    }

    /// A symlink's target. Never changed in place, so one whose ctime, inode and device match
    /// the parent's entry has the parent's target, without a `readlink`: that sets the
    /// link's access time (daily, under `relatime`), so its entry, and every tree above it,
    /// would differ from the night before's every night.
    /// (Not a link replaced within the timestamp tick of the parent's reading, which could
    /// have the same inode and ctime: `racy`; and its length, the link's size, must match.)
    fn link_target(
        &self,
        path: &Path,
        node: &Node,
        meta: &Metadata,
        parent: Option<&Node>,
    ) -> io::Result<Vec<u8>> {
        let known = parent.filter(|p| {
            p.kind == NodeKind::Symlink
                && p.ctime_ns == node.ctime_ns
                && p.ctime_ns != 0
                && p.mtime_ns == node.mtime_ns
                && p.inode == node.inode
                && p.device == node.device
                && !self.racy(p)
        });
        let target = known.and_then(|p| p.link_target.clone());
        if let Some(target) = target.filter(|t| t.len() as u64 == meta.len()) {
            return Ok(target);
        }
        crate::failpoint::hook("backup-read-link", path);
        let target = walk::long_path::read_link(path)?;
        Ok(walk::name_bytes(target.as_os_str()))
    }

    /// A folder the walk does not go into after all: what was listed below it is dropped.
    fn not_descended(&self, meta: &Metadata, path: &Path) {
        if let (true, Some(ahead)) = (meta.is_dir(), self.ahead) {
            ahead.forget(path);
        }
    }

    /// A whole directory as a stored tree; `None` if it cannot be listed. `guard`: how to
    /// list it (a folder someone else may have replaced since its parent was listed is
    /// listed only if it is still the same).
    pub fn dir_tree(
        &self,
        path: &Path,
        parent: Option<TreeId>,
        device: u64,
        guard: walk::ListingGuard,
    ) -> Result<Option<TreeId>> {
        let listed = match self.ahead {
            Some(ahead) => ahead.take(path, device, guard),
            None => walk::read_dir_sorted(path, guard.check),
        };
        let entries = match listed {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.vanished(path);
                return Ok(None);
            }
            Err(e) => {
                self.skip(path, format!("cannot list directory: {e}; skipped"));
                return Ok(None);
            }
        };
        // A source named inside this folder, gone from its listing: not a complete snapshot.
        let gone = self.named.iter().filter(|n| n.parent() == Some(path));
        for source in gone.filter(|n| !entries.iter().any(|e| e.path == **n)) {
            self.skip(source, VANISHED.into());
        }
        let parent_id = parent;
        let parent = self.parent_tree(parent_id);
        prefetch(&entries, parent.as_ref(), guard.check.is_some());
        let nodes: Vec<Option<Node>> = entries
            .into_par_iter()
            .map(|e| {
                if let Some(reason) = self.reporter.stop() {
                    return Err(Error::Stopped(reason));
                }
                let p = parent.as_ref().and_then(|t| t.find(&e.name));
                self.entry(
                    e.name,
                    &e.path,
                    Some(e.metadata),
                    p,
                    Some(device),
                    Some(guard),
                )
            })
            .collect::<Result<_>>()?;
        let tree = Tree {
            nodes: nodes.into_iter().flatten().collect(),
        };
        Counters::bump(&self.counters.dirs, 1);
        // An unchanged folder is the parent's tree again, which the index holds when the
        // parent is complete: nothing to encode, hash or look up. (Its bytes are the parent
        // backup's encoding, which this version's may differ from only in a tree written by
        // another version; either decodes to the same nodes.)
        if let (true, Some(id), Some(parent)) = (self.parent_complete, parent_id, &parent)
            && parent.nodes == tree.nodes
        {
            return Ok(Some(id));
        }
        self.store_folder_tree(path, tree).map(Some)
    }

    /// Fills a file node's content, from the parent when unchanged. Returns false if the file
    /// had to be skipped.
    fn file(
        &self,
        node: &mut Node,
        path: &Path,
        meta: &Metadata,
        parent: Option<&Node>,
        pinned: bool,
    ) -> Result<bool> {
        // As it is read: by data region if it has holes.
        node.sparse = is_sparse(meta);
        if let Some(p) = parent.filter(|p| same_file(p, node) && !self.racy(p))
            && self.all_stored(p)?
        {
            node.content = p.content.clone();
            // How the blobs were made (allocation can change without the ctime: ZFS reports
            // blocks late); from a parent that does not say, the same choice as then.
            if self.parent_marks_sparse {
                node.sparse = p.sparse;
            }
            self.count_file(node.size, FileStatus::Unchanged, path);
            return Ok(true);
        }
        let status = if parent.is_some_and(|p| p.kind == NodeKind::File) {
            FileStatus::Changed
        } else {
            FileStatus::New
        };
        self.reporter.file_started(path);
        crate::failpoint::hook("file-listed", path);
        let on_bytes = |n| self.reporter.bytes_read(n);
        let read = match source_file::open_listed(path, || self.resolved(path), meta, pinned) {
            // To the end of the file opened, as for any other (one renamed over since it was
            // listed may be longer).
            Ok(Some(f)) if is_sparse(meta) => {
                let len = f.metadata().map_or(meta.len(), |now| now.len());
                let stored = self.content.store_sparse(&f, len, &on_bytes)?;
                stored.map(|s| (s, f))
            }
            Ok(Some(f)) => self
                .content
                .store(&f, meta.len(), &on_bytes)?
                .map(|s| (s, f)),
            // Something is at the path, but not what was listed, nor stored: partial.
            Ok(None) => {
                self.skip(path, REPLACED.into());
                return Ok(false);
            }
            Err(e) => Err(e),
        };
        crate::failpoint::hook("file-read", path);
        let (stored, file) = match read {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.vanished(path);
                return Ok(false);
            }
            Err(e) => {
                self.skip(path, format!("cannot read: {e}; skipped"));
                return Ok(false);
            }
        };
        // Through the descriptor read from, so no path lookup. A file renamed over while it
        // was read shows a new ctime (its link count dropped); another inode means it was
        // replaced between being listed and being opened: its content is the new file's, so
        // are its owner, mode and extended attributes, but the times and inode stay the
        // listed ones, so that the next backup reads it again.
        let after = file.metadata();
        if let Ok(after) = &after
            && after.ino() != meta.ino()
        {
            node.mode = after.mode() & 0o7777;
            (node.uid, node.gid) = (after.uid(), after.gid());
            node.user = crate::host::cached_user_name(after.uid());
            node.group = crate::host::cached_group_name(after.gid());
            node.xattrs = match walk::read_file_xattrs(&file) {
                Ok(xattrs) => xattrs,
                Err(e) => self.without_xattrs(path, e, node),
            };
        }
        if let Ok(after) = after
            && (after.ino() != meta.ino()
                || after.len() != meta.len()
                || after.mtime_nsec() != meta.mtime_nsec()
                || after.mtime() != meta.mtime()
                || after.ctime() != meta.ctime()
                || after.ctime_nsec() != meta.ctime_nsec())
        {
            self.warn(path, "changed while it was read; stored as read".into());
        }
        node.content = stored.blobs;
        node.size = stored.size;
        self.count_file(stored.size, status, path);
        Ok(true)
    }

    /// An entry whose extended attributes cannot be read is stored without them, and the
    /// snapshot is partial.
    fn without_xattrs(&self, path: &Path, e: io::Error, node: &mut Node) -> walk::Xattrs {
        self.skip(
            path,
            format!("cannot read its extended attributes ({e}); stored without them"),
        );
        // Never the ctime of a real change: the next backup does not take this node's
        // (incomplete) attributes, or content, as still current.
        node.ctime_ns = 0;
        Vec::new()
    }

    /// True if the parent's entry may not match what was read: it changed too close to the
    /// parent backup's start, or later. The ctime, which only the kernel sets (an mtime in
    /// the future, say from an archive, would make a file be read every night).
    fn racy(&self, parent: &Node) -> bool {
        parent.ctime_ns >= self.parent_started_ns.saturating_sub(RACY_NS)
    }

    /// `path` below the source it belongs to, as the kernel names it.
    fn resolved(&self, path: &Path) -> PathBuf {
        self.resolved_sources
            .iter()
            .find_map(|(source, resolved)| {
                let below = path.strip_prefix(source).ok()?;
                Some(resolved.join(below))
            })
            .unwrap_or_else(|| path.to_path_buf())
    }

    fn all_stored(&self, parent: &Node) -> Result<bool> {
        if self.parent_complete {
            return Ok(true);
        }
        for id in &parent.content {
            if !self.content.stored.contains(id)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    pub fn count_file(&self, size: u64, status: FileStatus, path: &Path) {
        Counters::bump(&self.counters.files, 1);
        Counters::bump(&self.counters.file_bytes, size);
        Counters::bump(
            match status {
                FileStatus::New => &self.counters.new,
                FileStatus::Changed => &self.counters.changed,
                FileStatus::Unchanged => &self.counters.unchanged,
            },
            1,
        );
        self.reporter.file_done(path, status, size);
    }
}

/// Removes the files with the most blobs until the tree's encoding fits in `limit` bytes
/// (`encoded` is its size now); returns their names. Only files holding blobs go; a folder
/// too large without them (millions of empty files, links or folders) is left as it is, for
/// the store to refuse.
fn fit(tree: &mut Tree, encoded: usize, limit: usize) -> Vec<Vec<u8>> {
    let mut size = encoded;
    let mut largest: Vec<usize> = (0..tree.nodes.len())
        .filter(|&i| tree.nodes[i].kind == NodeKind::File && !tree.nodes[i].content.is_empty())
        .collect();
    largest.sort_by_key(|&i| std::cmp::Reverse(tree.nodes[i].content.len()));
    let mut dropped = vec![false; tree.nodes.len()];
    for i in largest {
        if size <= limit {
            break;
        }
        size = size.saturating_sub(tree.nodes[i].encoded_len());
        dropped[i] = true;
    }
    let mut names = Vec::new();
    let mut dropped = dropped.into_iter();
    tree.nodes.retain(|node| match dropped.next() {
        Some(true) => {
            names.push(node.name.clone());
            false
        }
        _ => true,
    });
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a node recorded with ctime 0 (its attributes could not be read) matched
    /// one recorded the same way the next night, so its content was carried forward unread.
    #[test]
    fn a_node_recorded_with_ctime_0_is_never_the_same_file() {
        let mut node = Node::new(b"f".to_vec(), NodeKind::File);
        (
            node.size,
            node.mtime_ns,
            node.ctime_ns,
            node.inode,
            node.device,
        ) = (1, 5, 7, 3, 2);
        assert!(same_file(&node, &node.clone()));
        node.ctime_ns = 0;
        assert!(!same_file(&node, &node.clone()));
    }

    /// Regression: files each within the limit of one tree but over it together (huge
    /// sparse files in one folder) failed the whole backup, every night. The files with the
    /// most blobs go until the encoding fits; folders and files without blobs never do.
    #[test]
    fn a_folder_too_large_for_its_tree_loses_its_largest_files() {
        let file = |name: &str, blobs: usize| {
            let mut node = Node::new(name.as_bytes().to_vec(), NodeKind::File);
            node.content = vec![crate::ids::BlobId([7; 32]); blobs];
            node.user = Some("someone".into());
            node.xattrs = vec![(b"user.a".to_vec(), vec![1; 40])];
            node
        };
        let folder = Node::new(b"e".to_vec(), NodeKind::Dir);
        let mut tree = Tree {
            nodes: vec![
                file("a", 300),
                file("b", 900),
                file("c", 10),
                folder,
                file("d", 600),
            ],
        };
        let sizes: usize = tree.nodes.iter().map(Node::encoded_len).sum();
        let encoded = tree.encode().len();
        assert_eq!(sizes, encoded);
        assert!(fit(&mut tree.clone(), encoded, encoded).is_empty());
        assert_eq!(fit(&mut tree, encoded, encoded - 1), [b"b".to_vec()]);
        let encoded = tree.encode().len();
        assert_eq!(fit(&mut tree, encoded, 32 * 500), [b"d".to_vec()]);
        let left: Vec<_> = tree.nodes.iter().map(|n| n.name.clone()).collect();
        assert_eq!(left, [b"a".to_vec(), b"c".to_vec(), b"e".to_vec()]);
        assert!(tree.encode().len() <= 32 * 500);
        // What cannot fit even without its files is left for the store to refuse.
        assert_eq!(fit(&mut tree, 32 * 500, 10).len(), 2);
        assert_eq!(tree.nodes.len(), 1);
    }
}
