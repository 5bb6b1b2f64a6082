//! Which entries of a snapshot a restore writes: `--include` / `--exclude` globs matched
//! against the entry's path in the snapshot, and what to do about files already there.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::target::Target;
use crate::blobs::BlobReader;
use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::tree::Node;

/// What to do when the target already holds an entry of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overwrite {
    /// Always write the entry anew.
    Always,
    /// Leave an existing file alone if its content is identical (checked against the blob
    /// ids), so an interrupted restore can simply be run again.
    IfChanged,
    /// Never replace anything that exists.
    Never,
}

/// Glob filters on snapshot paths (`/srv/uploads/a.pdf`). A pattern without `/` matches the
/// name; with `/`, the whole path if it starts with `/` (or `**`), else the path's end. With includes, only matching entries (and everything
/// below a matching folder) are restored, plus the folders leading to them.
#[derive(Default)]
pub struct Selection {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

fn build(patterns: &[String]) -> Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let pattern = crate::walk::path_glob(p);
        b.add(
            GlobBuilder::new(&pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| Error::Usage(format!("pattern {p:?}: {e}")))?,
        );
    }
    b.build()
        .map(Some)
        .map_err(|e| Error::Usage(format!("patterns: {e}")))
}

impl Selection {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self> {
        Ok(Selection {
            include: build(include)?,
            exclude: build(exclude)?,
        })
    }

    pub fn excluded(&self, snapshot_path: &[u8]) -> bool {
        self.exclude
            .as_ref()
            .is_some_and(|g| g.is_match(Path::new(OsStr::from_bytes(snapshot_path))))
    }

    /// True if the entry is wanted by itself (no includes, or one matches).
    pub fn included(&self, snapshot_path: &[u8]) -> bool {
        self.include
            .as_ref()
            .is_none_or(|g| g.is_match(Path::new(OsStr::from_bytes(snapshot_path))))
    }

    pub fn has_includes(&self) -> bool {
        self.include.is_some()
    }

    /// For the entry a restore starts from (`SNAPSHOT:PATH`), matched as it and the folders
    /// above it would be in a whole restore: whether one of them is excluded, and whether
    /// one is included (so everything below is wanted).
    pub fn at_start(&self, at: &[u8]) -> (bool, bool) {
        let ancestors = at.iter().enumerate().filter(|&(i, &b)| b == b'/' && i > 0);
        let mut paths: Vec<&[u8]> = ancestors.map(|(i, _)| &at[..i]).collect();
        if !at.is_empty() {
            paths.push(at);
        }
        let excluded = paths.iter().any(|p| self.excluded(p));
        let included = self.has_includes() && paths.iter().any(|p| self.included(p));
        (excluded, included)
    }
}

/// True if the file at `path` holds exactly the content `node` lists: same size, and every
/// blob-sized piece hashes to its blob id.
pub fn same_content(
    repo: &Repository,
    blobs: &BlobReader,
    target: &Target,
    path: &Path,
    node: &Node,
) -> Result<bool> {
    let at = target.at(path).map_err(|e| Error::io(path, e))?;
    let Ok(meta) = at.stat() else {
        return Ok(false);
    };
    if !meta.is_file() || meta.len() != node.size {
        return Ok(false);
    }
    // Never through a symlink, never waiting on a FIFO, both of which may have been
    // swapped in since the look above.
    let mut file = match at.open_read() {
        Ok(file) => file,
        // A symlink now: not the file, so it is replaced (by a rename, never followed).
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(false),
        Err(e) => return Err(Error::io(path, e)),
    };
    crate::blobs::holds_content(repo.keys(), blobs, &mut file, node)?
        .map_err(|e| Error::io(path, e))
}
