//! Reading blobs back: index lookup, a range read, then decryption and verification against
//! the blob id (see `pack::open_blob`). Nothing unverified leaves this module. A copy that
//! cannot be read or fails verification gives way to another copy the index lists, if any.
//!
//! `BlobReader` is the shareable form: it can be used from many threads, and it keeps the
//! last few tree packs whole in memory, because trees are read many at a time and sit
//! together in a few packs.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::ids::{BlobId, BlobType, PackId, TreeId};
use crate::index::LocalIndex;
use crate::pack::{BlobEntry, open_blob};
use crate::repo::Repository;
use crate::tree::{Node, Tree};

/// How many whole tree packs a `BlobReader` keeps (each at most about 16 MiB).
const CACHED_TREE_PACKS: usize = 2;

pub fn load_blob(repo: &Repository, index: &LocalIndex, id: &BlobId) -> Result<Vec<u8>> {
    let (pack, entry) = index.lookup(id)?.ok_or(Error::BlobNotFound { blob: *id })?;
    repo.read_pack_range(&pack, entry.offset..entry.end())
        .and_then(|sealed| open_blob(repo.keys(), repo.id(), &pack, &entry, &sealed))
        .or_else(|e| other_copy(repo, index.locations(id), &pack, e))
}

/// Whether `source` holds exactly the content `node` lists: every blob-sized piece (lengths
/// from the index, no data read from the repository) hashes to its blob id, and nothing
/// follows. Whatever the chunker that cut it, sparse or not. The outer error is the index's,
/// the inner one the source's.
pub fn holds_content(
    keys: &Keys,
    blobs: &BlobReader,
    source: &mut impl std::io::Read,
    node: &Node,
) -> Result<std::io::Result<bool>> {
    let mut buf = Vec::new();
    let mut left = node.size;
    for id in &node.content {
        let len = blobs.raw_len(id)?;
        // More than the file holds (an index that says so): not the same, and not read.
        if u64::from(len) > left {
            return Ok(Ok(false));
        }
        left -= u64::from(len);
        buf.resize(len as usize, 0);
        match source.read_exact(&mut buf) {
            // Shorter than the snapshot's file: not the same.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Ok(false)),
            Err(e) => return Ok(Err(e)),
            Ok(()) if keys.blob_id(&buf) != *id => return Ok(Ok(false)),
            Ok(()) => {}
        }
    }
    Ok(source.read(&mut [0u8; 1]).map(|n| n == 0))
}

pub fn load_tree(repo: &Repository, index: &LocalIndex, id: &TreeId) -> Result<Tree> {
    Tree::decode(id, &load_blob(repo, index, id)?)
}

/// Locks a mutex, carrying on if another thread panicked while holding it (the panic itself
/// propagates through rayon or the thread join).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct BlobReader<'a> {
    repo: &'a Repository,
    index: Mutex<LocalIndex>,
    tree_packs: Mutex<VecDeque<(PackId, Arc<Vec<u8>>)>>,
}

impl<'a> BlobReader<'a> {
    pub fn new(repo: &'a Repository, index: LocalIndex) -> Self {
        BlobReader {
            repo,
            index: Mutex::new(index),
            tree_packs: Mutex::new(VecDeque::new()),
        }
    }

    fn locate(&self, id: &BlobId) -> Result<(PackId, BlobEntry)> {
        lock(&self.index)
            .lookup(id)?
            .ok_or(Error::BlobNotFound { blob: *id })
    }

    /// The plaintext length of a stored blob, from the index.
    pub fn raw_len(&self, id: &BlobId) -> Result<u32> {
        self.locate(id).map(|(_, e)| e.raw_len)
    }

    pub fn blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        let (pack, entry) = self.locate(id)?;
        self.blob_at(&pack, &entry).or_else(|first_error| {
            let copies = lock(&self.index).locations(id);
            other_copy(self.repo, copies, &pack, first_error)
        })
    }

    fn blob_at(&self, pack: &PackId, entry: &BlobEntry) -> Result<Vec<u8>> {
        let (id, pack) = (&entry.id, *pack);
        if entry.blob_type == BlobType::Tree {
            let bytes = self.tree_pack(&pack)?;
            let sealed = usize::try_from(entry.offset)
                .ok()
                .zip(usize::try_from(entry.end()).ok())
                .and_then(|(a, b)| bytes.get(a..b))
                .ok_or_else(|| Error::BlobIntegrity {
                    blob: *id,
                    pack,
                    reason: "lies outside the pack".into(),
                })?;
            return open_blob(self.repo.keys(), self.repo.id(), &pack, entry, sealed);
        }
        let sealed = self
            .repo
            .read_pack_range(&pack, entry.offset..entry.end())?;
        open_blob(self.repo.keys(), self.repo.id(), &pack, entry, &sealed)
    }

    pub fn tree(&self, id: &TreeId) -> Result<Tree> {
        Tree::decode(id, &self.blob(id)?)
    }

    fn tree_pack(&self, pack: &PackId) -> Result<Arc<Vec<u8>>> {
        if let Some((_, bytes)) = lock(&self.tree_packs).iter().find(|(p, _)| p == pack) {
            return Ok(Arc::clone(bytes));
        }
        let bytes = Arc::new(self.repo.read_pack(pack)?);
        let mut cache = lock(&self.tree_packs);
        if cache.len() >= CACHED_TREE_PACKS {
            cache.pop_front();
        }
        cache.push_back((*pack, Arc::clone(&bytes)));
        Ok(bytes)
    }
}

/// A blob whose copy in `failed` could not be used, read from another of `copies` (its
/// locations in the index); `first_error` if none serves.
pub fn other_copy(
    repo: &Repository,
    copies: Result<Vec<(PackId, BlobEntry)>>,
    failed: &PackId,
    first_error: Error,
) -> Result<Vec<u8>> {
    let Ok(copies) = copies else {
        return Err(first_error);
    };
    match first_good_copy(repo, copies.iter().map(|(p, e)| (p, e)), failed) {
        Some((pack, blob)) => {
            tracing::warn!("{first_error}; read the copy in pack {pack} instead");
            Ok(blob)
        }
        None => Err(first_error),
    }
}

/// The first of `copies` outside `failed` that reads and verifies, with its pack. (Any that
/// verifies has the same plaintext: the blob id is its keyed hash.)
pub fn first_good_copy<'c>(
    repo: &Repository,
    copies: impl IntoIterator<Item = (&'c PackId, &'c BlobEntry)>,
    failed: &PackId,
) -> Option<(PackId, Vec<u8>)> {
    copies
        .into_iter()
        .filter(|(pack, _)| *pack != failed)
        .find_map(|(pack, entry)| {
            let sealed = repo.read_pack_range(pack, entry.offset..entry.end()).ok()?;
            let blob = open_blob(repo.keys(), repo.id(), pack, entry, &sealed).ok()?;
            Some((*pack, blob))
        })
}

/// The node at `path` (components separated by `/`) below the root tree, or `None` for the
/// root itself. Errors if a component is missing or an intermediate one is not a directory.
pub fn find_node(
    repo: &Repository,
    index: &LocalIndex,
    root: &TreeId,
    path: &[u8],
) -> Result<Option<Node>> {
    let not_found = || Error::PathNotInSnapshot {
        snapshot: String::new(),
        path: String::from_utf8_lossy(path).into_owned(),
    };
    let mut current: Option<Node> = None;
    for part in path.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
        let tree_id = match &current {
            None => *root,
            Some(node) => node.subtree.ok_or_else(not_found)?,
        };
        let tree = load_tree(repo, index, &tree_id)?;
        current = Some(tree.find(part).cloned().ok_or_else(not_found)?);
    }
    Ok(current)
}
