//! Applying saved metadata to restored entries: owner (when root), permission bits and times,
//! never following symlinks: each entry is reached through its folder's descriptor
//! (`target::At`), or is a file or folder open already.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::target::At;
use crate::error::{Error, Result};
use crate::tree::{Node, NodeKind};

/// Whose ownership a restore may set: all (as root) or none, by name or by number.
#[derive(Clone, Copy)]
pub struct Owners {
    pub is_root: bool,
    pub numeric: bool,
}

fn owner_ids(node: &Node, numeric: bool) -> (u32, u32) {
    if numeric {
        return (node.uid, node.gid);
    }
    let uid = node
        .user
        .as_deref()
        .and_then(crate::host::cached_uid)
        .unwrap_or(node.uid);
    let gid = node
        .group
        .as_deref()
        .and_then(crate::host::cached_gid)
        .unwrap_or(node.gid);
    (uid, gid)
}

fn timespec(ns: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: ns.div_euclid(1_000_000_000) as libc::time_t,
        tv_nsec: ns.rem_euclid(1_000_000_000) as libc::c_long,
    }
}

/// Which inode an entry is, and the owner and mode it already has (read from the descriptor
/// that created it).
#[derive(Clone, Copy, Debug)]
pub struct Current {
    pub device: u64,
    pub inode: u64,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl Current {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Current {
            device: meta.dev(),
            inode: meta.ino(),
            uid: meta.uid(),
            gid: meta.gid(),
            mode: meta.mode(),
        }
    }
}

/// Owner (only as root), extended attributes (a symlink's too: `trusted.*` or `security.*`
/// ones, set on the link itself), mode (not for symlinks), then atime and mtime, on the entry
/// `at` (`path` names it in errors).
pub fn apply(at: &At, path: &Path, node: &Node, owners: Owners) -> Result<()> {
    let io = |e| Error::io(path, e);
    if owners.is_root {
        let (uid, gid) = owner_ids(node, owners.numeric);
        at.chown(uid, gid).map_err(io)?;
    }
    // Extended attributes before the mode: a read-only mode would forbid them.
    for (name, value) in &node.xattrs {
        let name = std::ffi::OsStr::from_bytes(name);
        // One it has already is left (a kept read-only file refuses a user.* change).
        if at.get_xattr(name).ok().flatten().as_ref() != Some(value) {
            let set = with_write_access(at, owners, || at.set_xattr(name, value));
            xattr_set(path, name, set)?;
        }
    }
    if node.kind != NodeKind::Symlink {
        // Best effort: an immutable file refuses, and that is no reason to fail a re-run
        // every time.
        for name in extra_user_xattrs(at, node) {
            if let Err(e) = with_write_access(at, owners, || at.remove_xattr(&name)) {
                tracing::info!("{}: extended attribute {name:?} left: {e}", path.display());
            }
        }
        at.chmod(node.mode & 0o7777).map_err(io)?;
    }
    at.set_times(&times(node)).map_err(io)
}

/// Sets the node's times again on an entry kept as it was, as best it can: reading a
/// symlink to compare it moved its atime.
pub fn put_back_times(at: &At, path: &Path, node: &Node) {
    if let Err(e) = at.set_times(&times(node)) {
        tracing::info!("{}: times not set back: {e}", path.display());
    }
}

/// Runs `op` (a change of `user.*` attributes, which needs write permission); if it is
/// refused and the entry is ours but not writable (a kept file or folder a re-run found
/// read-only), once more with the owner given write permission for it.
fn with_write_access(
    at: &At,
    owners: Owners,
    op: impl Fn() -> std::io::Result<()>,
) -> std::io::Result<()> {
    let result = op();
    let refused = result
        .as_ref()
        .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied);
    if !refused || owners.is_root {
        return result;
    }
    match at.with_owner_bits(0o200, op) {
        Ok(Some(again)) => again,
        Ok(None) | Err(_) => result,
    }
}

/// A node's access and modification times; a folder's access time is not recorded.
fn times(node: &Node) -> [libc::timespec; 2] {
    let mut atime = timespec(node.atime_ns);
    if node.kind == NodeKind::Dir && node.atime_ns == 0 {
        atime.tv_nsec = libc::UTIME_OMIT;
    }
    [atime, timespec(node.mtime_ns)]
}

/// True if the entry at `at` lacks some of the node's metadata that `apply` would set, or
/// has `user.*` extended attributes the node does not.
pub fn differs(at: &At, node: &Node, owners: Owners) -> bool {
    let Ok(meta) = at.stat() else {
        return true;
    };
    let owner_differs =
        owners.is_root && owner_ids(node, owners.numeric) != (meta.uid(), meta.gid());
    let mode_differs = node.kind != NodeKind::Symlink && meta.mode() & 0o7777 != node.mode & 0o7777;
    let atime_differs = node.atime_ns != 0 && meta.atime_ns() != node.atime_ns;
    owner_differs
        || mode_differs
        || atime_differs
        || meta.mtime_ns() != node.mtime_ns
        || xattrs_differ(at, node)
}

/// True if the entry lacks one of the node's extended attributes (or has another value), or
/// has `user.*` attributes the node does not.
fn xattrs_differ(at: &At, node: &Node) -> bool {
    let lacks = |(name, value): &(Vec<u8>, Vec<u8>)| {
        at.get_xattr(std::ffi::OsStr::from_bytes(name))
            .ok()
            .flatten()
            .as_ref()
            != Some(value)
    };
    node.xattrs.iter().any(lacks) || !extra_user_xattrs(at, node).is_empty()
}

/// The `user.*` extended attributes an existing entry has and the node does not (others are
/// left alone: an SELinux label, say, is the system's, not the snapshot's). None for a
/// symlink, which cannot have any.
fn extra_user_xattrs(at: &At, node: &Node) -> Vec<std::ffi::OsString> {
    if node.kind == NodeKind::Symlink {
        return Vec::new();
    }
    let names = at.xattr_names().unwrap_or_default();
    names
        .into_iter()
        .filter(|n| n.as_bytes().starts_with(b"user."))
        .filter(|n| !node.xattrs.iter().any(|(k, _)| k[..] == *n.as_bytes()))
        .collect()
}

/// `apply` for a regular file or a folder, through a descriptor open on it (no path is
/// looked up); an owner or mode it already has (`current`, read when it was made) is not set
/// again.
pub fn apply_to_file(
    file: &std::fs::File,
    path: &Path,
    node: &Node,
    owners: Owners,
    current: Option<Current>,
) -> Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::PermissionsExt;
    use xattr::FileExt;
    if owners.is_root {
        let (uid, gid) = owner_ids(node, owners.numeric);
        if current.is_none_or(|c| (c.uid, c.gid) != (uid, gid)) {
            std::os::unix::fs::fchown(file, Some(uid), Some(gid))
                .map_err(|e| Error::io(path, e))?;
        }
    }
    for (name, value) in &node.xattrs {
        let name = std::ffi::OsStr::from_bytes(name);
        xattr_set(path, name, file.set_xattr(name, value))?;
    }
    if current.is_none_or(|c| c.mode & 0o7777 != node.mode & 0o7777) {
        file.set_permissions(std::fs::Permissions::from_mode(node.mode))
            .map_err(|e| Error::io(path, e))?;
    }
    let times = times(node);
    // SAFETY: the descriptor is open for the call and `times` points at two timespecs.
    if unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) } != 0 {
        return Err(Error::io(path, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The outcome of setting one extended attribute: `user.*` must succeed unless the file
/// system has none at all; others are skipped when not permitted.
fn xattr_set(path: &Path, name: &std::ffi::OsStr, result: std::io::Result<()>) -> Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Ok(()),
        Err(e) if name.as_bytes().starts_with(b"user.") => Err(Error::io(
            path,
            std::io::Error::new(e.kind(), format!("extended attribute {name:?}: {e}")),
        )),
        Err(_) => Ok(()),
    }
}

/// Creates a FIFO or device node.
pub fn make_special(at: &At, path: &Path, node: &Node) -> Result<()> {
    let kind = match node.kind {
        NodeKind::Fifo => libc::S_IFIFO,
        NodeKind::Socket => libc::S_IFSOCK,
        NodeKind::CharDevice => libc::S_IFCHR,
        NodeKind::BlockDevice => libc::S_IFBLK,
        _ => return Ok(()),
    };
    at.make_node(kind, node.mode & 0o7777, node.rdev)
        .map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Regression: folder and special-file modes were set with a chmod that follows symlinks,
    /// so a symlink put in a restored folder's place passed the mode on to its target.
    #[test]
    fn a_symlink_in_an_entrys_place_does_not_get_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"x").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let swapped = dir.path().join("restored-folder");
        std::os::unix::fs::symlink(&secret, &swapped).unwrap();
        let mut node = Node::new(b"restored-folder".to_vec(), NodeKind::Dir);
        node.mode = 0o777;
        let owners = Owners {
            is_root: false,
            numeric: false,
        };
        let target = super::super::target::Target::open(dir.path()).unwrap();
        let at = |path| target.at(path).unwrap();
        assert!(apply(&at(&swapped), &swapped, &node, owners).is_err());
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        node.mode = 0o750;
        apply(&at(&real), &real, &node, owners).unwrap();
        let mode = std::fs::metadata(&real).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o750);
    }
}
