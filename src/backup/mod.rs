//! The backup pipeline: walk the sources, chunk each file, store new blobs through the packer,
//! store one tree per directory, then — after the packer has uploaded every pack and the index
//! segment that lists them — write the snapshot, the commit point.
//!
//! Guarantees: problems with source entries (vanished, unreadable) skip that entry with a
//! warning and mark the snapshot partial; problems with the repository abort the backup before
//! the snapshot is written, leaving at most unreferenced packs for prune.
//!
//! Snapshot layout: the root tree mirrors the absolute paths of the sources, so backing up
//! `/srv/uploads` yields the tree `/` → `srv` → `uploads`; directories above a source carry
//! their own metadata but only the entries leading to sources.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::chunk::{Chunker, ChunkerParams};
use crate::error::Result;
use crate::host::{self, NameCache};
use crate::ids::{BlobId, BlobType, SnapshotId, TreeId};
use crate::index::LocalIndex;
use crate::packer::Packer;
use crate::repo::{FileKind, Repository};
use crate::snapshot::{Snapshot, Summary};
use crate::tree::{Node, NodeKind, Tree};
use crate::walk;

pub struct BackupOptions {
    pub sources: Vec<PathBuf>,
    pub tags: Vec<String>,
    pub hostname: String,
    pub zstd_level: i32,
    pub chunker: ChunkerParams,
}

/// A source entry that was skipped or stored imperfectly.
#[derive(Clone, Debug)]
pub struct Warning {
    pub path: PathBuf,
    pub message: String,
}

pub struct BackupOutcome {
    pub id: SnapshotId,
    pub snapshot: Snapshot,
}

/// The directories leading to the sources: each name maps to a child; `is_source` marks a
/// source itself, stored whole.
#[derive(Default)]
struct SourceTrie {
    children: BTreeMap<Vec<u8>, SourceTrie>,
    is_source: bool,
}

impl SourceTrie {
    fn build(sources: &[PathBuf]) -> Self {
        let mut root = SourceTrie::default();
        for s in sources {
            let mut node = &mut root;
            for c in s.components().skip(1) {
                node = node
                    .children
                    .entry(walk::name_bytes(c.as_os_str()))
                    .or_default();
            }
            node.is_source = true;
        }
        root
    }
}

struct Walker<'a, 'w> {
    packer: Packer<'a>,
    chunker: Chunker,
    names: NameCache,
    summary: Summary,
    warn: &'w mut dyn FnMut(Warning),
}

/// Runs a backup and commits its snapshot.
pub fn run(
    repo: &Repository,
    index: &mut LocalIndex,
    opts: &BackupOptions,
    warn: &mut dyn FnMut(Warning),
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let time_ns = host::now_ns();
    let sources = walk::prepare_sources(&opts.sources)?;
    let mut walker = Walker {
        packer: Packer::new(repo, index, opts.zstd_level),
        chunker: Chunker::new(repo.keys().chunker_key(), opts.chunker),
        names: NameCache::default(),
        summary: Summary::default(),
        warn,
    };
    let trie = SourceTrie::build(&sources);
    let root = if trie.is_source {
        walker.dir_tree(Path::new("/"))?
    } else {
        Some(walker.virtual_dir(Path::new("/"), &trie)?)
    };
    let root = match root {
        Some(r) => r,
        None => walker.store_tree(&Tree::default())?,
    };
    let Walker {
        packer,
        mut summary,
        ..
    } = walker;
    let stats = packer.finish()?;
    summary.data_blobs_added = stats.data_blobs;
    summary.tree_blobs_added = stats.tree_blobs;
    summary.bytes_added_raw = stats.raw_bytes;
    summary.bytes_added_stored = stats.stored_bytes;
    summary.duration_ns = started.elapsed().as_nanos() as u64;
    let snapshot = Snapshot {
        time_ns,
        utc_offset_s: host::local_offset_s(time_ns),
        hostname: opts.hostname.clone(),
        username: host::username(),
        paths: sources
            .iter()
            .map(|p| walk::name_bytes(p.as_os_str()))
            .collect(),
        tags: opts.tags.clone(),
        tree: root,
        partial: summary.skipped > 0,
        summary,
        chunker: opts.chunker,
        program_version: format!("cairn {}", env!("CARGO_PKG_VERSION")),
    };
    let body = snapshot.encode();
    let id = SnapshotId(repo.save_file(FileKind::Snapshot, &body)?);
    index.add_snapshot(&id, snapshot.time_ns, &body)?;
    Ok(BackupOutcome { id, snapshot })
}

impl Walker<'_, '_> {
    fn skip(&mut self, path: &Path, message: String) {
        self.summary.skipped += 1;
        (self.warn)(Warning {
            path: path.to_path_buf(),
            message,
        });
    }

    fn store_tree(&mut self, tree: &Tree) -> Result<TreeId> {
        self.packer.add(BlobType::Tree, &tree.encode())
    }

    /// A directory above the sources: its own metadata, but only the entries leading on.
    fn virtual_dir(&mut self, real: &Path, trie: &SourceTrie) -> Result<TreeId> {
        let mut tree = Tree::default();
        for (name, child) in &trie.children {
            let path = real.join(walk::os_string(name));
            if child.is_source {
                if let Some(node) = self.entry(name.clone(), &path)? {
                    tree.nodes.push(node);
                }
                continue;
            }
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    self.skip(&path, format!("cannot read metadata: {e}"));
                    continue;
                }
            };
            let mut node = walk::node_from_metadata(name.clone(), &meta, &mut self.names);
            node.kind = NodeKind::Dir;
            node.subtree = Some(self.virtual_dir(&path, child)?);
            tree.nodes.push(node);
        }
        self.summary.dirs += 1;
        self.store_tree(&tree)
    }

    /// One entry and everything below it; `None` if it had to be skipped.
    fn entry(&mut self, name: Vec<u8>, path: &Path) -> Result<Option<Node>> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.skip(path, "vanished before it could be read".into());
                return Ok(None);
            }
            Err(e) => {
                self.skip(path, format!("cannot read metadata: {e}"));
                return Ok(None);
            }
        };
        let mut node = walk::node_from_metadata(name, &meta, &mut self.names);
        match node.kind {
            NodeKind::Dir => match self.dir_tree(path)? {
                Some(id) => node.subtree = Some(id),
                None => return Ok(None),
            },
            NodeKind::File => match self.file_content(path)? {
                Ok((content, size)) => {
                    node.content = content;
                    node.size = size;
                    self.summary.files += 1;
                    self.summary.total_file_bytes += size;
                }
                Err(e) => {
                    self.skip(path, format!("cannot read: {e}"));
                    return Ok(None);
                }
            },
            NodeKind::Symlink => match std::fs::read_link(path) {
                Ok(target) => {
                    node.link_target = Some(walk::name_bytes(target.as_os_str()));
                    self.summary.other_entries += 1;
                }
                Err(e) => {
                    self.skip(path, format!("cannot read link: {e}"));
                    return Ok(None);
                }
            },
            _ => self.summary.other_entries += 1,
        }
        Ok(Some(node))
    }

    /// A whole directory as a stored tree; `None` if it cannot be listed.
    fn dir_tree(&mut self, path: &Path) -> Result<Option<TreeId>> {
        let entries = match walk::read_dir_sorted(path) {
            Ok(e) => e,
            Err(e) => {
                self.skip(path, format!("cannot list directory: {e}"));
                return Ok(None);
            }
        };
        let mut tree = Tree::default();
        for (name, child) in entries {
            if let Some(node) = self.entry(name, &child)? {
                tree.nodes.push(node);
            }
        }
        self.summary.dirs += 1;
        self.store_tree(&tree).map(Some)
    }

    /// Chunks and stores a file. The outer error is the repository's; the inner one the
    /// source file's (which skips the file).
    fn file_content(&mut self, path: &Path) -> Result<io::Result<(Vec<BlobId>, u64)>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) => return Ok(Err(e)),
        };
        let mut content = Vec::new();
        let mut size = 0u64;
        for chunk in self.chunker.reader(file) {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => return Ok(Err(e)),
            };
            size += chunk.len() as u64;
            self.summary.bytes_read += chunk.len() as u64;
            content.push(self.packer.add(BlobType::Data, &chunk)?);
        }
        Ok(Ok((content, size)))
    }
}
