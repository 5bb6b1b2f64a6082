//! Reading blobs back: index lookup, one range read, then decryption and verification against
//! the blob id (see `pack::open_blob`). Nothing unverified leaves this module.

use crate::error::{Error, Result};
use crate::ids::{BlobId, TreeId};
use crate::index::LocalIndex;
use crate::pack::open_blob;
use crate::repo::Repository;
use crate::tree::Tree;

pub fn load_blob(repo: &Repository, index: &LocalIndex, id: &BlobId) -> Result<Vec<u8>> {
    let (pack, entry) = index.lookup(id)?.ok_or(Error::BlobNotFound { blob: *id })?;
    let sealed = repo.read_pack_range(&pack, entry.offset..entry.end())?;
    open_blob(repo.keys(), repo.id(), &pack, &entry, &sealed)
}

pub fn load_tree(repo: &Repository, index: &LocalIndex, id: &TreeId) -> Result<Tree> {
    Tree::decode(id, &load_blob(repo, index, id)?)
}

/// The node at `path` (components separated by `/`) below the root tree, or `None` for the
/// root itself. Errors if a component is missing or an intermediate one is not a directory.
pub fn find_node(
    repo: &Repository,
    index: &LocalIndex,
    root: &TreeId,
    path: &[u8],
) -> Result<Option<crate::tree::Node>> {
    let not_found = || Error::PathNotInSnapshot {
        snapshot: String::new(),
        path: String::from_utf8_lossy(path).into_owned(),
    };
    let mut current: Option<crate::tree::Node> = None;
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
