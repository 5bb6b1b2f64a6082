//! Applying saved metadata to restored entries: owner (when root), permission bits and times,
//! never following symlinks.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::tree::{Node, NodeKind};
use crate::walk::long_path;

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::io(path, std::io::Error::other("path contains NUL")))
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

/// The owner and mode an entry already has (read from the descriptor that created it).
#[derive(Clone, Copy, Debug)]
pub struct Current {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl Current {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Current {
            uid: meta.uid(),
            gid: meta.gid(),
            mode: meta.mode(),
        }
    }
}

/// Owner (only as root), mode (not for symlinks), then atime and mtime.
pub fn apply(path: &Path, node: &Node, is_root: bool, numeric_owner: bool) -> Result<()> {
    apply_over(path, node, is_root, numeric_owner, None)
}

/// `apply` on an entry whose owner and mode are known: those already right are not set again.
pub fn apply_over(
    path: &Path,
    node: &Node,
    is_root: bool,
    numeric_owner: bool,
    current: Option<Current>,
) -> Result<()> {
    let reached = long_path::reachable(path).map_err(|e| Error::io(path, e))?;
    let at: &Path = &reached;
    if is_root {
        let (uid, gid) = owner_ids(node, numeric_owner);
        if current.is_none_or(|c| (c.uid, c.gid) != (uid, gid)) {
            std::os::unix::fs::lchown(at, Some(uid), Some(gid)).map_err(|e| Error::io(path, e))?;
        }
    }
    set_xattrs(at, path, node)?;
    let mode_is_set = current.is_some_and(|c| c.mode & 0o7777 == node.mode & 0o7777);
    if node.kind != NodeKind::Symlink && !mode_is_set {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(at, std::fs::Permissions::from_mode(node.mode))
            .map_err(|e| Error::io(path, e))?;
    }
    let mut atime = timespec(node.atime_ns);
    if node.kind == NodeKind::Dir && node.atime_ns == 0 {
        atime.tv_nsec = libc::UTIME_OMIT; // not recorded for folders
    }
    let times = [atime, timespec(node.mtime_ns)];
    let c = c_path(at)?;
    // SAFETY: `c` is a valid NUL-terminated path and `times` points at two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(Error::io(path, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Extended attributes, before the mode is set (a read-only mode would forbid them): `user.*`
/// must succeed unless the file system has no extended attributes at all; other namespaces
/// (`security.*`, `trusted.*`) are set when permitted and skipped otherwise.
fn set_xattrs(at: &Path, path: &Path, node: &Node) -> Result<()> {
    if node.kind == NodeKind::Symlink {
        return Ok(());
    }
    for (name, value) in &node.xattrs {
        let name = std::ffi::OsStr::from_bytes(name);
        match xattr::set(at, name, value) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
            Err(e) if name.as_bytes().starts_with(b"user.") => {
                return Err(Error::io(
                    path,
                    std::io::Error::new(e.kind(), format!("extended attribute {name:?}: {e}")),
                ));
            }
            Err(_) => {}
        }
    }
    Ok(())
}

/// Creates a FIFO or device node.
pub fn make_special(path: &Path, node: &Node) -> Result<()> {
    let kind = match node.kind {
        NodeKind::Fifo => libc::S_IFIFO,
        NodeKind::CharDevice => libc::S_IFCHR,
        NodeKind::BlockDevice => libc::S_IFBLK,
        _ => return Ok(()),
    };
    let reached = long_path::reachable(path).map_err(|e| Error::io(path, e))?;
    let c = c_path(&reached)?;
    // SAFETY: `c` is a valid NUL-terminated path.
    let rc = unsafe {
        libc::mknod(
            c.as_ptr(),
            kind | (node.mode & 0o7777),
            node.rdev as libc::dev_t,
        )
    };
    if rc != 0 {
        return Err(Error::io(path, std::io::Error::last_os_error()));
    }
    Ok(())
}
