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

/// Owner (only as root), extended attributes and mode (not for symlinks), then atime and
/// mtime, all by path.
pub fn apply(path: &Path, node: &Node, owners: Owners) -> Result<()> {
    let reached = long_path::reachable(path).map_err(|e| Error::io(path, e))?;
    let at: &Path = &reached;
    if owners.is_root {
        let (uid, gid) = owner_ids(node, owners.numeric);
        std::os::unix::fs::lchown(at, Some(uid), Some(gid)).map_err(|e| Error::io(path, e))?;
    }
    set_xattrs(at, path, node)?;
    if node.kind != NodeKind::Symlink {
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

/// `apply` for a regular file, through a descriptor open on it (no path is looked up); an
/// owner or mode it already has (`current`, read when it was made) is not set again.
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
    let times = [timespec(node.atime_ns), timespec(node.mtime_ns)];
    // SAFETY: the descriptor is open for the call and `times` points at two timespecs.
    if unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) } != 0 {
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
        xattr_set(path, name, xattr::set(at, name, value))?;
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
