//! Restore: recreate a snapshot's tree under a target directory.
//!
//! Guarantees:
//! - nothing is written outside the target: every entry name is checked (no `/`, NUL, `.`,
//!   `..` or empty name), directories are created by us or must already be real directories
//!   (a symlink in the way is refused), and files are created under a fresh temporary name and
//!   renamed into place, which replaces a symlink rather than following it;
//! - every byte written was verified against its blob id first (`blobs::load_blob`);
//! - a damaged or missing blob fails only the files that need it: the error names the file
//!   and the pack, and the rest of the restore goes on;
//! - directory metadata is applied after the directory's contents.

mod metadata;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::blobs::{load_blob, load_tree};
use crate::error::{Error, Result};
use crate::ids::TreeId;
use crate::index::LocalIndex;
use crate::repo::Repository;
use crate::tree::{Node, NodeKind};
use crate::walk::os_string;

pub struct RestoreOptions {
    pub target: PathBuf,
    /// Use numeric uid/gid even where the names resolve on this machine.
    pub numeric_owner: bool,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct RestoreStats {
    pub files: u64,
    pub dirs: u64,
    pub other_entries: u64,
    pub bytes: u64,
    pub errors: u64,
}

/// Checks that a name from a snapshot is a single, harmless path component.
pub fn check_name(parent: &Path, name: &[u8]) -> Result<()> {
    let bad = name.is_empty()
        || name == b"."
        || name == b".."
        || name.contains(&b'/')
        || name.contains(&0);
    if bad {
        return Err(Error::UnsafeName {
            parent: parent.display().to_string(),
            name: String::from_utf8_lossy(name).into_owned(),
        });
    }
    Ok(())
}

struct Restorer<'a, 'e> {
    repo: &'a Repository,
    index: &'a LocalIndex,
    opts: &'a RestoreOptions,
    stats: RestoreStats,
    is_root: bool,
    on_error: &'e mut dyn FnMut(&Path, &Error),
}

/// Restores the tree `root` into `opts.target`. Per-entry problems are passed to `on_error`
/// and counted; the returned error is for problems that stop the whole restore.
pub fn run(
    repo: &Repository,
    index: &LocalIndex,
    root: &TreeId,
    opts: &RestoreOptions,
    on_error: &mut dyn FnMut(&Path, &Error),
) -> Result<RestoreStats> {
    fs::create_dir_all(&opts.target).map_err(|e| Error::io(&opts.target, e))?;
    let mut r = Restorer {
        repo,
        index,
        opts,
        stats: RestoreStats::default(),
        is_root: crate::host::is_root(),
        on_error,
    };
    let target = opts.target.clone();
    r.dir_contents(root, &target);
    Ok(r.stats)
}

impl Restorer<'_, '_> {
    fn fail(&mut self, path: &Path, err: Error) {
        self.stats.errors += 1;
        (self.on_error)(path, &err);
    }

    fn dir_contents(&mut self, tree: &TreeId, dir: &Path) {
        let tree = match load_tree(self.repo, self.index, tree) {
            Ok(t) => t,
            Err(e) => return self.fail(dir, e),
        };
        for node in &tree.nodes {
            if let Err(e) = check_name(dir, &node.name) {
                self.fail(dir, e);
                continue;
            }
            let path = dir.join(os_string(&node.name));
            if let Err(e) = self.entry(node, &path) {
                self.fail(&path, e);
            }
        }
    }

    fn entry(&mut self, node: &Node, path: &Path) -> Result<()> {
        match node.kind {
            NodeKind::Dir => {
                make_dir(path)?;
                if let Some(sub) = &node.subtree {
                    self.dir_contents(sub, path);
                }
                self.stats.dirs += 1;
                metadata::apply(path, node, self.is_root, self.opts.numeric_owner)
            }
            NodeKind::File => self.file(node, path),
            NodeKind::Symlink => {
                let target = node.link_target.as_deref().unwrap_or_default();
                let tmp = temp_name(path);
                std::os::unix::fs::symlink(os_string(target), &tmp)
                    .map_err(|e| Error::io(path, e))?;
                metadata::apply(&tmp, node, self.is_root, self.opts.numeric_owner)?;
                fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
                self.stats.other_entries += 1;
                Ok(())
            }
            NodeKind::Socket => Ok(()),
            NodeKind::Fifo | NodeKind::CharDevice | NodeKind::BlockDevice => {
                if node.kind != NodeKind::Fifo && !self.is_root {
                    return Ok(());
                }
                let tmp = temp_name(path);
                metadata::make_special(&tmp, node)?;
                metadata::apply(&tmp, node, self.is_root, self.opts.numeric_owner)?;
                fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
                self.stats.other_entries += 1;
                Ok(())
            }
        }
    }

    fn file(&mut self, node: &Node, path: &Path) -> Result<()> {
        let tmp = temp_name(path);
        let result = self.write_file(node, &tmp).and_then(|()| {
            metadata::apply(&tmp, node, self.is_root, self.opts.numeric_owner)?;
            fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
        });
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        self.stats.files += 1;
        Ok(())
    }

    fn write_file(&mut self, node: &Node, tmp: &Path) -> Result<()> {
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .map_err(|e| Error::io(tmp, e))?;
        for id in &node.content {
            let data = load_blob(self.repo, self.index, id)?;
            out.write_all(&data).map_err(|e| Error::io(tmp, e))?;
            self.stats.bytes += data.len() as u64;
        }
        Ok(())
    }
}

/// A fresh name beside `path` for building an entry before renaming it into place.
fn temp_name(path: &Path) -> PathBuf {
    let suffix = crate::ids::to_hex(&crate::crypto::random_bytes::<8>());
    path.with_file_name(format!(".cairn-restore-{suffix}.tmp"))
}

/// Creates a directory, or accepts an existing real one; refuses anything else in the way.
fn make_dir(path: &Path) -> Result<()> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
            if meta.is_dir() {
                Ok(())
            } else {
                Err(Error::io(
                    path,
                    std::io::Error::other(
                        "exists and is not a directory; refusing to write through it",
                    ),
                ))
            }
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_names_are_refused() {
        let p = Path::new("/t");
        for bad in [&b""[..], b".", b"..", b"a/b", b"/etc", b"a\0b"] {
            assert!(check_name(p, bad).is_err(), "{bad:?} accepted");
        }
        for good in [&b"a"[..], b"..a", b"a b\n", &[0xff, 0xfe]] {
            assert!(check_name(p, good).is_ok(), "{good:?} refused");
        }
    }
}
