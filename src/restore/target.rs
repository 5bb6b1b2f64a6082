//! The restore target, and every folder below it, reached through open descriptors.
//!
//! Every entry a restore makes, replaces, reads back or sets metadata on is named by an open
//! descriptor of its folder and one name (`At`), never by a path the kernel would walk again.
//! Each folder is opened from the one above it, one name at a time and never through a
//! symlink, starting from the target's own descriptor. Someone who can write into the target
//! while it is being restored may still move folders about, but no symlink of theirs can take
//! a write, a rename, a link or a change of owner or mode outside the target.
//!
//! Descriptors of recently used folders are kept (at most `OPEN_FOLDERS`), so an entry costs a
//! lookup of its own name, not of its whole path, and paths of any length work alike.
//!
//! Guarantee: every folder operated in was reached from the target, without following a
//! symlink, when it was opened (it may have been moved since, along with what is in it).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;

use crate::blobs::lock;
use crate::host::proc_mounted;

/// Folder descriptors kept open at most (well below the usual limit of 1,024 descriptors).
const OPEN_FOLDERS: usize = 128;

type Folder = Arc<OwnedFd>;

/// The target folder of a restore, opened once.
pub struct Target {
    path: PathBuf,
    /// None where the target does not exist (a dry run): nothing below it does either.
    root: Option<Folder>,
    open: Mutex<OpenFolders>,
}

/// Recently used folders, by their path below the target, with when each was last used.
#[derive(Default)]
struct OpenFolders {
    by_path: HashMap<Vec<u8>, (Folder, u64)>,
    uses: u64,
}

impl OpenFolders {
    fn get(&mut self, below: &[u8]) -> Option<Folder> {
        let (dir, used) = self.by_path.get_mut(below)?;
        self.uses += 1;
        *used = self.uses;
        Some(dir.clone())
    }

    /// Keeps `dir`; past the limit, the less recently used half is closed.
    fn keep(&mut self, below: &[u8], dir: &Folder) {
        if self.by_path.len() >= OPEN_FOLDERS {
            let recent = self.uses.saturating_sub(OPEN_FOLDERS as u64 / 2);
            self.by_path.retain(|_, (_, used)| *used > recent);
        }
        self.uses += 1;
        self.by_path
            .insert(below.to_vec(), (dir.clone(), self.uses));
    }
}

fn replaced_by_symlink() -> io::Error {
    io::Error::other("was replaced by a symlink; not followed")
}

fn nix_io(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

const FOLDER_FLAGS: OFlag = OFlag::O_PATH
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

impl Target {
    /// Opens the target (a symlink in its own path is followed: that path is the user's).
    pub fn open(path: &Path) -> io::Result<Target> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let root = match nix::fcntl::open(path, flags, Mode::empty()) {
            Ok(fd) => Some(Arc::new(fd)),
            Err(nix::Error::ENOENT) => None,
            Err(e) => return Err(nix_io(e)),
        };
        Ok(Target {
            path: path.to_path_buf(),
            root,
            open: Mutex::new(OpenFolders::default()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entry at `path`, which must lie below the target.
    pub fn at<'p>(&self, path: &'p Path) -> io::Result<At<'p>> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        Ok(At {
            dir: self.folder(parent)?,
            name,
        })
    }

    /// Opens the folder at `path` (the target or below it) from the nearest folder above it
    /// that is open, one name at a time, never through a symlink.
    fn folder(&self, path: &Path) -> io::Result<Folder> {
        let below = path
            .strip_prefix(&self.path)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let root = self
            .root
            .clone()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        let below = below.as_os_str().as_bytes();
        if below.is_empty() {
            return Ok(root);
        }
        // The nearest open folder: this one, or one above.
        let mut open = lock(&self.open);
        let mut start = below.len();
        let mut dir = loop {
            if let Some(dir) = open.get(&below[..start]) {
                break dir;
            }
            match below[..start].iter().rposition(|&b| b == b'/') {
                Some(slash) => start = slash,
                None => {
                    start = 0;
                    break root;
                }
            }
        };
        drop(open);
        while start < below.len() {
            let end = below[start + 1..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(below.len(), |i| start + 1 + i);
            let from = if start == 0 { 0 } else { start + 1 };
            let name = Path::new(OsStr::from_bytes(&below[from..end]));
            if !matches!(name.components().next(), Some(Component::Normal(_)))
                || name.components().count() != 1
            {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            dir = Arc::new(
                nix::fcntl::openat(&*dir, name, FOLDER_FLAGS, Mode::empty()).map_err(nix_io)?,
            );
            lock(&self.open).keep(&below[..end], &dir);
            start = end;
        }
        Ok(dir)
    }

    /// Forgets the folder at `path` (removed): a new one of that name is opened anew.
    pub fn forget(&self, path: &Path) {
        if let Ok(below) = path.strip_prefix(&self.path) {
            lock(&self.open)
                .by_path
                .remove(below.as_os_str().as_bytes());
        }
    }

    /// Closes every folder kept open: each is reached from the target again, so one swapped
    /// for a symlink since it was opened is refused rather than still written in.
    pub fn forget_all(&self) {
        lock(&self.open).by_path.clear();
    }

    /// The names in the folder at `path` (the target or below it), without `.` and `..`.
    pub fn list(&self, path: &Path) -> io::Result<Vec<std::ffi::OsString>> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let dir = nix::fcntl::openat(&*self.folder(path)?, ".", flags, Mode::empty());
        let mut listing = nix::dir::Dir::from_fd(dir.map_err(nix_io)?).map_err(nix_io)?;
        let mut names = Vec::new();
        for entry in listing.iter() {
            let name = entry.map_err(nix_io)?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                names.push(std::os::unix::ffi::OsStringExt::from_vec(name));
            }
        }
        Ok(names)
    }
}

/// One entry: its folder's descriptor and its name. Nothing here follows a symlink at the
/// entry's name.
pub struct At<'p> {
    dir: Folder,
    name: &'p OsStr,
}

/// The status of an entry (not of what a symlink points at).
pub struct Stat(libc::stat);

impl Stat {
    fn kind(&self) -> libc::mode_t {
        self.0.st_mode & libc::S_IFMT
    }
    pub fn is_dir(&self) -> bool {
        self.kind() == libc::S_IFDIR
    }
    pub fn is_file(&self) -> bool {
        self.kind() == libc::S_IFREG
    }
    pub fn is_symlink(&self) -> bool {
        self.kind() == libc::S_IFLNK
    }
    /// True if this is the kind of entry `kind` is, and for a device node the same device.
    pub fn is_same_special(&self, kind: crate::tree::NodeKind, rdev: u64) -> bool {
        use crate::tree::NodeKind;
        match kind {
            NodeKind::Fifo => self.kind() == libc::S_IFIFO,
            NodeKind::Socket => self.kind() == libc::S_IFSOCK,
            NodeKind::CharDevice => {
                self.kind() == libc::S_IFCHR && self.0.st_rdev == rdev as libc::dev_t
            }
            NodeKind::BlockDevice => {
                self.kind() == libc::S_IFBLK && self.0.st_rdev == rdev as libc::dev_t
            }
            _ => false,
        }
    }
    /// True if both are the same inode (hard links of one file, or one name seen twice).
    pub fn is_same_inode(&self, other: &Stat) -> bool {
        (self.0.st_dev, self.0.st_ino) == (other.0.st_dev, other.0.st_ino)
    }
    pub fn uid(&self) -> u32 {
        self.0.st_uid
    }
    pub fn gid(&self) -> u32 {
        self.0.st_gid
    }
    pub fn mode(&self) -> u32 {
        self.0.st_mode
    }
    pub fn len(&self) -> u64 {
        self.0.st_size as u64
    }
    pub fn atime_ns(&self) -> i64 {
        crate::walk::nanos(self.0.st_atime, self.0.st_atime_nsec)
    }
    pub fn mtime_ns(&self) -> i64 {
        crate::walk::nanos(self.0.st_mtime, self.0.st_mtime_nsec)
    }
    pub fn ctime(&self) -> std::time::SystemTime {
        let secs = u64::try_from(self.0.st_ctime).unwrap_or(0);
        let nanos = u32::try_from(self.0.st_ctime_nsec).unwrap_or(0);
        std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos)
    }
}

impl At<'_> {
    /// Another entry in the same folder.
    pub fn sibling<'n>(&self, name: &'n OsStr) -> At<'n> {
        At {
            dir: self.dir.clone(),
            name,
        }
    }

    pub fn stat(&self) -> io::Result<Stat> {
        nix::sys::stat::fstatat(&*self.dir, self.name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map(Stat)
            .map_err(nix_io)
    }

    fn open(&self, flags: OFlag, mode: u32) -> io::Result<File> {
        let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        nix::fcntl::openat(&*self.dir, self.name, flags, Mode::from_bits_truncate(mode))
            .map(File::from)
            .map_err(nix_io)
    }

    /// Creates a new file (never one that exists, never through a symlink).
    pub fn create_file(&self, mode: u32) -> io::Result<File> {
        self.open(OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL, mode)
    }

    /// Opens for writing; a FIFO swapped in is not waited on.
    pub fn open_write(&self) -> io::Result<File> {
        self.open(OFlag::O_WRONLY | OFlag::O_NONBLOCK, 0)
    }

    /// Opens for reading as a backup opens a source: never waiting on a FIFO swapped in, and
    /// without touching the access time where permitted.
    pub fn open_read(&self) -> io::Result<File> {
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK;
        match self.open(flags | OFlag::O_NOATIME, 0) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => self.open(flags, 0),
            other => other,
        }
    }

    /// Creates a folder only its owner can enter: restore gives it the snapshot's mode once
    /// its contents are in place, and no one else sees or adds to them meanwhile.
    pub fn create_dir(&self) -> io::Result<()> {
        nix::sys::stat::mkdirat(&*self.dir, self.name, Mode::from_bits_truncate(0o700))
            .map_err(nix_io)
    }

    pub fn remove_dir(&self) -> io::Result<()> {
        use nix::unistd::UnlinkatFlags::RemoveDir;
        nix::unistd::unlinkat(&*self.dir, self.name, RemoveDir).map_err(nix_io)
    }

    pub fn remove_file(&self) -> io::Result<()> {
        use nix::unistd::UnlinkatFlags::NoRemoveDir;
        nix::unistd::unlinkat(&*self.dir, self.name, NoRemoveDir).map_err(nix_io)
    }

    /// Renames this entry to `to`, replacing what is there (a symlink is replaced, not
    /// followed).
    pub fn rename_to(&self, to: &At) -> io::Result<()> {
        nix::fcntl::renameat(&*self.dir, self.name, &*to.dir, to.name).map_err(nix_io)
    }

    /// `rename_to`, or with `replace` false, renames only if nothing is at `to` (checked by
    /// the rename itself where the file system can, else just before); false if something
    /// is, and this entry is then left as it is.
    pub fn rename_into_place(&self, to: &At, replace: bool) -> io::Result<bool> {
        if replace {
            return self.rename_to(to).map(|()| true);
        }
        use nix::fcntl::RenameFlags;
        let flags = RenameFlags::RENAME_NOREPLACE;
        match nix::fcntl::renameat2(&*self.dir, self.name, &*to.dir, to.name, flags) {
            Ok(()) => Ok(true),
            Err(nix::Error::EEXIST) => Ok(false),
            Err(nix::Error::EINVAL | nix::Error::ENOSYS) if to.stat().is_err() => {
                self.rename_to(to).map(|()| true)
            }
            Err(nix::Error::EINVAL | nix::Error::ENOSYS) => Ok(false),
            Err(e) => Err(nix_io(e)),
        }
    }

    /// Makes `link` a hard link of this entry (of a symlink itself, were it one).
    pub fn hard_link_to(&self, link: &At) -> io::Result<()> {
        let flags = AtFlags::empty();
        nix::unistd::linkat(&*self.dir, self.name, &*link.dir, link.name, flags).map_err(nix_io)
    }

    pub fn symlink(&self, target: &OsStr) -> io::Result<()> {
        nix::unistd::symlinkat(target, &*self.dir, self.name).map_err(nix_io)
    }

    pub fn read_link(&self) -> io::Result<std::ffi::OsString> {
        nix::fcntl::readlinkat(&*self.dir, self.name).map_err(nix_io)
    }

    /// Creates a FIFO or device node (`kind` is `S_IFIFO`, `S_IFCHR` or `S_IFBLK`).
    pub fn make_node(&self, kind: libc::mode_t, mode: u32, rdev: u64) -> io::Result<()> {
        let kind = nix::sys::stat::SFlag::from_bits_truncate(kind);
        let mode = Mode::from_bits_truncate(mode);
        nix::sys::stat::mknodat(&*self.dir, self.name, kind, mode, rdev as libc::dev_t)
            .map_err(nix_io)
    }

    pub fn chown(&self, uid: u32, gid: u32) -> io::Result<()> {
        use nix::unistd::{Gid, Uid};
        let (uid, gid) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        let flags = AtFlags::AT_SYMLINK_NOFOLLOW;
        nix::unistd::fchownat(&*self.dir, self.name, uid, gid, flags).map_err(nix_io)
    }

    /// Sets the mode of anything but a symlink (which has none to set, and whose target must
    /// not get it).
    pub fn chmod(&self, mode: u32) -> io::Result<()> {
        use nix::sys::stat::FchmodatFlags::NoFollowSymlink;
        let bits = Mode::from_bits_truncate(mode);
        match nix::sys::stat::fchmodat(&*self.dir, self.name, bits, NoFollowSymlink) {
            Ok(()) => Ok(()),
            // A symlink; or a glibc without fchmodat2 (before 2.32: always).
            Err(nix::Error::EOPNOTSUPP) => self.chmod_by_descriptor(mode),
            Err(e) => Err(nix_io(e)),
        }
    }

    /// Runs `op` with the owner permission `bits` (read `0o400`, write `0o200`) added to the
    /// entry's mode and then the mode it had set again, when the entry is ours and lacks them
    /// (a user's restore found or made it so); `None` if it is not ours or has them already.
    /// Both changes of mode reach the inode looked at, held open: an entry swapped in
    /// meanwhile (a hard link to another file of ours) is not given this one's mode.
    pub fn with_owner_bits<T>(&self, bits: u32, op: impl FnOnce() -> T) -> io::Result<Option<T>> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let (held, through_proc) = match proc_mounted() {
            true => self.pinned().map(|(file, path)| (file, Some(path)))?,
            false => (self.open_without_proc()?, None),
        };
        let looked = held.metadata()?;
        if looked.uid() != nix::unistd::geteuid().as_raw() || looked.mode() & bits == bits {
            return Ok(None);
        }
        let set_mode = |mode: u32| match &through_proc {
            Some(path) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)),
            None => held.set_permissions(std::fs::Permissions::from_mode(mode)),
        };
        let mode = looked.mode() & 0o7777;
        set_mode(mode | bits)?;
        let out = op();
        set_mode(mode)?;
        Ok(Some(out))
    }

    /// `chmod` where fchmodat cannot leave a symlink alone: through /proc on a descriptor
    /// that opens nothing, or without /proc through the entry opened for reading. A mode the
    /// entry already has is not set again (a device node cannot be opened for it).
    fn chmod_by_descriptor(&self, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let looked = self.stat()?;
        if looked.is_symlink() {
            return Err(replaced_by_symlink());
        }
        if looked.mode() & 0o7777 == mode & 0o7777 {
            return Ok(());
        }
        let mode = std::fs::Permissions::from_mode(mode);
        if !proc_mounted() {
            return self.open_without_proc()?.set_permissions(mode);
        }
        let (_pinned, path) = self.pinned()?;
        std::fs::set_permissions(path, mode)
    }

    /// The entry itself, held by a descriptor that opens nothing (`O_PATH`: no driver of a
    /// device node acts, no permission is needed), with the path that names exactly it
    /// through /proc. Refused if the entry is a symlink.
    fn pinned(&self) -> io::Result<(File, PathBuf)> {
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let entry = nix::fcntl::openat(&*self.dir, self.name, flags, Mode::empty());
        let entry = File::from(entry.map_err(nix_io)?);
        if entry.metadata()?.file_type().is_symlink() {
            return Err(replaced_by_symlink());
        }
        let path = PathBuf::from(format!("/proc/self/fd/{}", entry.as_raw_fd()));
        Ok((entry, path))
    }

    /// Where /proc is missing: the entry opened for reading, to change it through the
    /// descriptor; only a regular file, folder or FIFO (opening a device node would make its
    /// driver act), never a symlink, never waiting on a FIFO.
    fn open_without_proc(&self) -> io::Result<File> {
        use std::os::unix::fs::MetadataExt;
        let looked = self.stat()?;
        if looked.is_symlink() {
            return Err(replaced_by_symlink());
        }
        let fifo = looked.mode() & libc::S_IFMT == libc::S_IFIFO;
        if !looked.is_file() && !looked.is_dir() && !fifo {
            return Err(io::Error::other("cannot be changed here without /proc"));
        }
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let opened = self.open(flags, 0).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => replaced_by_symlink(),
            _ => e,
        })?;
        let meta = opened.metadata()?;
        if (meta.dev(), meta.ino()) != (looked.0.st_dev, looked.0.st_ino) {
            return Err(io::Error::other("was replaced while being restored"));
        }
        Ok(opened)
    }

    /// Sets access and modification times (`UTIME_OMIT` in one leaves it).
    pub fn set_times(&self, times: &[libc::timespec; 2]) -> io::Result<()> {
        let name = std::ffi::CString::new(self.name.as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: the descriptor is open, `name` is NUL-terminated, `times` holds two.
        let rc = unsafe {
            libc::utimensat(
                self.dir.as_raw_fd(),
                name.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        match rc {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// Sets an extended attribute on the entry itself. There is no call relative to a
    /// folder's descriptor: the folder is named through /proc or, where /proc is missing,
    /// the entry is opened.
    pub fn set_xattr(&self, name: &OsStr, value: &[u8]) -> io::Result<()> {
        if !proc_mounted() {
            use xattr::FileExt;
            return self.open_without_proc()?.set_xattr(name, value);
        }
        xattr::set(self.through_proc(), name, value)
    }

    /// The value of one of the entry's extended attributes, if it has it.
    pub fn get_xattr(&self, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
        if !proc_mounted() {
            use xattr::FileExt;
            return self.open_without_proc()?.get_xattr(name);
        }
        xattr::get(self.through_proc(), name)
    }

    /// The names of the entry's extended attributes.
    pub fn xattr_names(&self) -> io::Result<Vec<std::ffi::OsString>> {
        if !proc_mounted() {
            use xattr::FileExt;
            return Ok(self.open_without_proc()?.list_xattr()?.collect());
        }
        Ok(xattr::list(self.through_proc())?.collect())
    }

    pub fn remove_xattr(&self, name: &OsStr) -> io::Result<()> {
        if !proc_mounted() {
            use xattr::FileExt;
            return self.open_without_proc()?.remove_xattr(name);
        }
        xattr::remove(self.through_proc(), name)
    }

    /// The entry named through its folder's descriptor, for calls that take only a path (the
    /// entry itself is not followed if it is a symlink).
    fn through_proc(&self) -> PathBuf {
        let mut path = PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd()));
        path.push(self.name);
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_on_the_way_is_never_followed() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("real")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        let target = Target::open(root.path()).unwrap();
        let through = root.path().join("link/f");
        let err = target
            .at(&through)
            .err()
            .expect("reached through a symlink");
        assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR));
        let deeper = root.path().join("real/link/x/f");
        std::os::unix::fs::symlink(outside.path(), root.path().join("real/link")).unwrap();
        assert!(target.at(&deeper).is_err());
        assert!(
            target.at(Path::new("/etc/passwd")).is_err(),
            "not below the target"
        );
        let f = root.path().join("real/f");
        target.at(&f).unwrap().create_file(0o600).unwrap();
        assert!(f.exists());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    /// The fallbacks where fchmodat cannot leave symlinks alone (a glibc before 2.32) or
    /// /proc is missing: a FIFO is changed without being opened (a device node's driver would
    /// act), and a symlink is never changed.
    #[test]
    fn entries_are_changed_without_opening_them_or_following_symlinks() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let target = Target::open(root.path()).unwrap();
        let fifo = root.path().join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o644)).unwrap();
        let at = target.at(&fifo).unwrap();
        at.chmod_by_descriptor(0o600).unwrap();
        let mode = std::fs::symlink_metadata(&fifo)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            at.open_without_proc().is_ok(),
            "a FIFO opened for reading waits on nothing"
        );
        let file = root.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(target.at(&file).unwrap().open_without_proc().is_ok());
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let at = target.at(&link).unwrap();
        assert!(at.chmod_by_descriptor(0o600).is_err());
        assert!(at.pinned().is_err());
        assert!(at.open_without_proc().is_err());
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_ne!(mode & 0o777, 0o600, "the mode went through the symlink");
    }

    /// However many folders are used, no more than `OPEN_FOLDERS` stay open, and a folder
    /// closed is opened again when needed.
    #[test]
    fn open_folders_are_bounded() {
        let root = tempfile::tempdir().unwrap();
        let target = Target::open(root.path()).unwrap();
        for i in 0..OPEN_FOLDERS * 3 {
            let dir = root.path().join(format!("d{i}"));
            target.at(&dir).unwrap().create_dir().unwrap();
            target
                .at(&dir.join("f"))
                .unwrap()
                .create_file(0o600)
                .unwrap();
            assert!(lock(&target.open).by_path.len() <= OPEN_FOLDERS);
        }
        let first = root.path().join("d0/f");
        assert!(target.at(&first).unwrap().stat().unwrap().is_file());
    }
}
