//! Hard links: which entries of a snapshot are links of one file, and the path each such file
//! was first restored at, for the later ones to be linked to.
//!
//! Guarantees: entries are linked only if they share device and inode and also size, mtime
//! and blob list, since inode numbers alone can mislead (reused while a long backup ran, or
//! unstable on some network file systems); such an entry is restored on its own. Only the
//! first path of each file with several links is kept, to the end of the restore.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::tree::Node;

/// The first path restored for each file with several links, and whether the file found
/// there was kept as it was (not written anew).
#[derive(Default)]
pub struct FirstPaths(HashMap<LinkedFile, (PathBuf, bool)>);

impl FirstPaths {
    /// The path an entry is to be a hard link to, if an earlier entry was the same file.
    pub fn get(&self, node: &Node) -> Option<PathBuf> {
        if node.nlink < 2 {
            return None;
        }
        self.0
            .get(&LinkedFile::of(node))
            .map(|(path, _)| path.clone())
    }

    /// Whether the entry's first path was kept as found: only then may a later path found to
    /// be the same inode be kept too (else it is a link of what is being replaced).
    pub fn first_kept(&self, node: &Node) -> bool {
        node.nlink > 1
            && self
                .0
                .get(&LinkedFile::of(node))
                .is_some_and(|&(_, kept)| kept)
    }

    /// Makes `path`, written anew, the one later links of this file are made to, unless one
    /// is known.
    pub fn remember(&mut self, node: &Node, path: &Path) {
        self.remember_as(node, path, false);
    }

    /// `remember` for a path whose file was kept as found.
    pub fn remember_kept(&mut self, node: &Node, path: &Path) {
        self.remember_as(node, path, true);
    }

    fn remember_as(&mut self, node: &Node, path: &Path, kept: bool) {
        if node.nlink > 1 {
            self.0
                .entry(LinkedFile::of(node))
                .or_insert_with(|| (path.to_path_buf(), kept));
        }
    }
}

/// What entries must share to be restored as links of one file.
#[derive(PartialEq, Eq, Hash)]
struct LinkedFile {
    device: u64,
    inode: u64,
    size: u64,
    mtime_ns: i64,
    /// A hash of the blob list.
    blobs: [u8; 32],
}

impl LinkedFile {
    fn of(node: &Node) -> Self {
        let mut hasher = blake3::Hasher::new();
        for id in &node.content {
            hasher.update(&id.0);
        }
        LinkedFile {
            device: node.device,
            inode: node.inode,
            size: node.size,
            mtime_ns: node.mtime_ns,
            blobs: *hasher.finalize().as_bytes(),
        }
    }
}
