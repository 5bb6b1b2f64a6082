//! Opening source files for reading, as they were listed: what was listed as a file may have
//! been replaced meanwhile by a symlink (to a file its owner may not read), a FIFO (which
//! would block the open forever), or reached through a folder swapped for a symlink.
//!
//! Guarantees: no symlink is followed at the file itself; an open never waits for a FIFO; a
//! file whose inode differs from the listing is returned only if the kernel names it by its
//! path (it was renamed over, not reached another way); a file under a lease is waited for
//! at most `LEASE_WAIT`. Where someone else could have swapped a folder on the way for a
//! symlink (`pinned`), nothing but a regular file is opened at all: a device node reached so
//! (`/dev/watchdog`, a tape) would have its driver run by the open.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::walk;

/// Opens a source file without updating its access time where the kernel allows it (we own
/// the file or are root), so reading does not change what the next backup sees. Never
/// follows a symlink, and does not wait for a FIFO. `wait_for_lease`: see `LEASE_WAIT`.
/// `pinned`: the entry is first opened without being opened for reading (`O_PATH`), and only
/// a regular file is then opened, through that descriptor (`/proc`); `None` if what is at the
/// path is something else. Without `pinned`, or without `/proc`, anything but a symlink at
/// the path is opened (and the caller looks at what it got).
pub fn open(path: &Path, wait_for_lease: bool, pinned: bool) -> io::Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    let path = walk::long_path::reachable(path)?;
    let pin = match pinned && crate::host::proc_mounted() {
        true => {
            let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
            let pin = File::options()
                .read(true)
                .custom_flags(flags)
                .open(&*path)?;
            if !pin.metadata()?.is_file() {
                return Ok(None);
            }
            Some(pin)
        }
        false => None,
    };
    // The descriptor's own link in /proc leads to its inode, whatever its path leads to now.
    let (at, nofollow) = match &pin {
        Some(pin) => (
            PathBuf::from(format!("/proc/self/fd/{}", pin.as_raw_fd())),
            0,
        ),
        None => (path.to_path_buf(), libc::O_NOFOLLOW),
    };
    let open = |flags| {
        File::options()
            .read(true)
            .custom_flags(flags | nofollow)
            .open(&at)
    };
    let open_noatime = |flags| match open(flags | libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(flags),
        other => other,
    };
    // Only a file under a lease (an NFS delegation, a Samba oplock) refuses a non-blocking
    // open; the refusal asks its holder to let go, so ask again until the kernel's lease break
    // time is over. (A blocking open would let the holder swap a FIFO in and hang us.)
    let wait = if wait_for_lease {
        LEASE_WAIT
    } else {
        Duration::ZERO
    };
    let deadline = Instant::now() + wait;
    loop {
        match open_noatime(libc::O_NONBLOCK) {
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(None),
            other => return other.map(Some),
        }
    }
}

/// How long to wait for the holder of a lease on a source file: longer than the kernel's
/// default lease break time (45 s), after which it breaks the lease itself.
const LEASE_WAIT: Duration = Duration::from_secs(60);

/// Opens a listed source file; `None` if a symlink or anything else than a regular file is
/// now at its path, or another file reached through a folder swapped for a symlink (the file
/// listed is gone either way). `resolved` gives the path with the symlinks above the source
/// resolved, as the kernel names the file (asked only when the inode differs).
pub fn open_listed(
    path: &Path,
    resolved: impl FnOnce() -> PathBuf,
    listed: &Metadata,
    pinned: bool,
) -> io::Result<Option<File>> {
    let Some(file) = open(path, true, pinned)? else {
        return Ok(None);
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(None);
    }
    // Another inode is a file renamed over the listed one (stored, with a warning), unless
    // it was reached by another way than the path (a folder on it is now a symlink).
    let same = (meta.dev(), meta.ino()) == (listed.dev(), listed.ino());
    if !same && !opened_at(&file, &resolved()) {
        return Ok(None);
    }
    Ok(Some(file))
}

/// True if the kernel names `file` by `path` (no symlink was followed to reach it).
fn opened_at(file: &File, path: &Path) -> bool {
    use std::os::unix::io::AsRawFd;
    let link = format!("/proc/self/fd/{}", file.as_raw_fd());
    std::fs::read_link(link).is_ok_and(|named| named == path)
}
