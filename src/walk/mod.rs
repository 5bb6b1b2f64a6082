//! Walking sources: normalizing the paths a user names, listing directories in a stable order
//! and turning file-system metadata into tree nodes.
//!
//! Guarantees: directory entries come back sorted by their raw name bytes; names are kept as
//! bytes (not necessarily UTF-8); symlinks are never followed.

use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

pub mod ahead;
pub mod long_path;

use crate::error::{Error, Result};
use crate::host;
use crate::tree::{Node, NodeKind};

/// Makes a source path absolute and removes `.` and `..` lexically (without following
/// symlinks, so a source that is a symlink is stored as one).
pub fn normalize(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

/// Normalizes, checks existence, sorts, and drops sources inside other sources (the walk of
/// the outer one reaches them: `backup::check_options` refuses one it would not).
pub fn prepare_sources(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    Ok(roots_of(&named_sources(paths)?))
}

/// Of the sources `named_sources` returns, those inside no other.
pub fn roots_of(named: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = named.to_vec();
    out.retain(|p| !named.iter().any(|q| q != p && p.starts_with(q)));
    out
}

/// Every source named: normalized, checked to exist, sorted, without duplicates.
pub fn named_sources(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let n = normalize(p)?;
        match long_path::symlink_metadata(&n) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::SourceNotFound { path: p.clone() });
            }
            Err(e) => {
                return Err(Error::SourceUnreadable {
                    path: p.clone(),
                    source: e,
                });
            }
        }
        out.push(n);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Folders nested deeper than this are neither backed up nor restored (nor dumped): every
/// level of a walk takes stack (the command and worker threads have `STACK_SIZE`), and no
/// real tree comes near it, while a hostile one could be nested without end.
pub const MAX_DEPTH: usize = 4_096;

/// Stack of the threads that walk trees: a level of a backup takes about 12 KiB, so
/// `MAX_DEPTH` levels about 50 MiB (only what is used is ever backed by memory).
pub const STACK_SIZE: usize = 128 << 20;

/// Builds a rayon pool of `threads` workers (`build` is `build` or `build_global`) with
/// `STACK_SIZE` stacks, or with the usual stacks where those cannot be reserved
/// (`vm.overcommit_memory=2`, `ulimit -v`): only trees thousands of levels deep need more.
pub fn worker_pool<T>(
    threads: usize,
    build: impl Fn(rayon::ThreadPoolBuilder) -> Result<T, rayon::ThreadPoolBuildError>,
) -> Result<T, rayon::ThreadPoolBuildError> {
    let builder = || rayon::ThreadPoolBuilder::new().num_threads(threads.max(1));
    build(builder().stack_size(STACK_SIZE)).or_else(|_| build(builder()))
}

/// A glob for absolute paths: one that starts at the root (`/`) or with `**` is taken as it
/// is; any other (a name, or a relative path like `uploads/*.pdf`) matches wherever it ends a
/// path, as a relative path would (taken as it is, it could match no absolute path at all).
pub fn path_glob(pattern: &str) -> String {
    if pattern.starts_with('/') || pattern.starts_with("**") {
        pattern.to_string()
    } else {
        format!("**/{pattern}")
    }
}

/// How deep a path is: its number of separators.
pub fn depth(path: &[u8]) -> usize {
    path.iter().filter(|&&b| b == b'/').count()
}

/// Refuses a path in a snapshot nested deeper than `MAX_DEPTH` (a hostile tree could nest
/// until the stack of whatever follows it runs out).
pub fn check_depth(path: &[u8]) -> crate::error::Result<()> {
    if depth(path) > MAX_DEPTH {
        let path = String::from_utf8_lossy(path);
        return Err(crate::error::Error::Invalid(format!(
            "{path}: nested deeper than {MAX_DEPTH} folders"
        )));
    }
    Ok(())
}

/// One directory entry: its name, path and metadata (not following symlinks).
pub struct DirEntry {
    pub name: Vec<u8>,
    pub path: PathBuf,
    /// Read relative to the open directory (`fstatat`), which spares the kernel walking the
    /// whole path again for every entry.
    pub metadata: std::io::Result<Metadata>,
}

/// A folder's device and inode.
pub type FolderId = (u64, u64);

pub fn folder_id(meta: &Metadata) -> FolderId {
    (meta.dev(), meta.ino())
}

/// How a folder is listed. `check`: its id as its parent's listing saw it, where someone
/// else could have swapped it since (`read_dir_sorted_up_to`); `None` where only we (or
/// root) could have, which spares the checks. `open_inside`: whether someone else can
/// change the entries inside it, so that its subfolders need the check.
#[derive(Clone, Copy, Debug)]
pub struct ListingGuard {
    pub check: Option<FolderId>,
    pub open_inside: bool,
}

impl ListingGuard {
    /// A source: always checked (the folders above it are not looked at).
    pub fn source(meta: &Metadata) -> Self {
        ListingGuard {
            check: Some(folder_id(meta)),
            open_inside: others_can_change(meta),
        }
    }

    /// A folder `meta` describes, found in the listing of a folder guarded by `parent`.
    /// Listings go by path, so a folder anywhere above that someone else can change makes
    /// every folder below it open to a swap.
    pub fn below(parent: ListingGuard, meta: &Metadata) -> Self {
        ListingGuard {
            check: parent.open_inside.then(|| folder_id(meta)),
            open_inside: parent.open_inside || others_can_change(meta),
        }
    }
}

/// Whether someone other than this process's user (root aside) can add, remove or rename
/// entries in the folder `meta` describes.
fn others_can_change(meta: &Metadata) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    (meta.uid() != me && meta.uid() != 0) || meta.mode() & 0o022 != 0
}

/// The entries of a directory, sorted by name bytes; with `expected`, only if the folder at
/// `dir` is still that one (see `read_dir_sorted_up_to`).
pub fn read_dir_sorted(dir: &Path, expected: Option<FolderId>) -> std::io::Result<Vec<DirEntry>> {
    read_dir_sorted_up_to(dir, usize::MAX, expected).map(Option::unwrap_or_default)
}

/// `read_dir_sorted`, or `None` (read no further) if the directory has more than `limit`
/// entries. With `expected` (the folder's id as its parent's listing saw it), the folder is
/// opened without following a symlink and listed through that descriptor only if it is
/// still that folder: one swapped for a symlink, or another folder, since its parent was
/// listed (say, by a user whose folder a root backup reads) is not listed in its place.
pub fn read_dir_sorted_up_to(
    dir: &Path,
    limit: usize,
    expected: Option<FolderId>,
) -> std::io::Result<Option<Vec<DirEntry>>> {
    let listing = match expected {
        None => long_path::read_dir(dir)?,
        Some(id) => read_dir_if_same(dir, id)?,
    };
    let mut entries = Vec::new();
    for e in listing {
        if entries.len() == limit {
            return Ok(None);
        }
        let e = e?;
        let name = e.file_name().into_vec();
        entries.push(DirEntry {
            path: dir.join(OsStr::from_bytes(&name)),
            metadata: e.metadata(),
            name,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    // Some file systems list a name twice while a file is renamed over it; one folder can
    // hold a name only once, and a tree must not repeat it.
    entries.dedup_by(|later, first| later.name == first.name);
    Ok(Some(entries))
}

fn read_dir_if_same(dir: &Path, id: FolderId) -> std::io::Result<std::fs::ReadDir> {
    use std::os::unix::fs::OpenOptionsExt;
    let replaced = || std::io::Error::other("it was replaced since its parent folder was listed");
    let options = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .clone();
    let folder = match long_path::open(&options, dir) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
            return Err(replaced());
        }
        opened => opened?,
    };
    if folder_id(&folder.metadata()?) != id {
        return Err(replaced());
    }
    // Listed through the descriptor (its own reopening of the same folder), not the path;
    // without /proc (a chroot), by path just after the check, as before the check existed.
    use std::os::fd::AsRawFd;
    std::fs::read_dir(format!("/proc/self/fd/{}", folder.as_raw_fd()))
        .or_else(|_| long_path::read_dir(dir))
}

pub fn kind_of(meta: &Metadata) -> NodeKind {
    let t = meta.file_type();
    if t.is_dir() {
        NodeKind::Dir
    } else if t.is_symlink() {
        NodeKind::Symlink
    } else if t.is_fifo() {
        NodeKind::Fifo
    } else if t.is_socket() {
        NodeKind::Socket
    } else if t.is_char_device() {
        NodeKind::CharDevice
    } else if t.is_block_device() {
        NodeKind::BlockDevice
    } else {
        NodeKind::File
    }
}

/// A time in nanoseconds since 1970 from seconds and nanoseconds, as stored in trees. Times
/// beyond what that holds (before 1677 or after 2262) are clamped, not wrapped around.
pub fn nanos(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// A node carrying everything `meta` says; content, subtree and link target are filled later.
pub fn node_from_metadata(name: Vec<u8>, meta: &Metadata) -> Node {
    let mut node = Node::new(name, kind_of(meta));
    node.mode = meta.mode() & 0o7777;
    node.uid = meta.uid();
    node.gid = meta.gid();
    node.user = host::cached_user_name(meta.uid());
    node.group = host::cached_group_name(meta.gid());
    node.mtime_ns = nanos(meta.mtime(), meta.mtime_nsec());
    // Listing a folder updates its atime, so recording it would make every backup store
    // new trees for unchanged folders; folders get atime 0 ("not recorded").
    if node.kind != NodeKind::Dir {
        node.atime_ns = nanos(meta.atime(), meta.atime_nsec());
    }
    node.ctime_ns = nanos(meta.ctime(), meta.ctime_nsec());
    node.size = if node.kind == NodeKind::File {
        meta.size()
    } else {
        0
    };
    node.inode = meta.ino();
    node.device = meta.dev();
    node.nlink = meta.nlink();
    node.rdev = meta.rdev();
    node
}

/// Extended attributes: (name, value), sorted by name.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// The extended attributes of an entry (not following symlinks), sorted by name. A file
/// system without them gives none, and an attribute (or the entry) that vanishes meanwhile is
/// left out (reading the entry then tells); any other failure is an error, never taken for
/// "none".
pub fn read_xattrs(path: &Path) -> std::io::Result<Xattrs> {
    let path = long_path::reachable(path)?;
    let path: &Path = &path;
    xattrs_with(|| xattr::list(path), |name| xattr::get(path, name))
}

/// `read_xattrs` of the file open as `file`.
pub fn read_file_xattrs(file: &std::fs::File) -> std::io::Result<Xattrs> {
    use xattr::FileExt;
    xattrs_with(|| file.list_xattr(), |name| file.get_xattr(name))
}

fn xattrs_with(
    list: impl FnOnce() -> std::io::Result<xattr::XAttrs>,
    get: impl Fn(&std::ffi::OsStr) -> std::io::Result<Option<Vec<u8>>>,
) -> std::io::Result<Xattrs> {
    let unsupported =
        |e: &std::io::Error| matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOENT));
    let names = match list() {
        Ok(names) => names,
        Err(e) if unsupported(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names {
        match get(&name) {
            Ok(Some(value)) => out.push((name.into_vec(), value)),
            Ok(None) => {}
            Err(e) if unsupported(&e) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

pub fn name_bytes(name: &std::ffi::OsStr) -> Vec<u8> {
    name.as_bytes().to_vec()
}

pub fn os_string(bytes: &[u8]) -> OsString {
    OsString::from_vec(bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder is checked where its parent, or any folder above (listings go by path), is
    /// open to others; not where only we can change the folders above it.
    #[test]
    fn folders_below_one_others_can_change_are_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("ours");
        let open = dir.path().join("open");
        std::fs::create_dir(&ours).unwrap();
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&ours, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let (ours, open) = (
            std::fs::metadata(&ours).unwrap(),
            std::fs::metadata(&open).unwrap(),
        );
        let closed = ListingGuard::source(&ours);
        assert!(!closed.open_inside);
        let below = ListingGuard::below(closed, &ours);
        assert!(below.check.is_none() && !below.open_inside);
        let below_open = ListingGuard::below(closed, &open);
        assert!(below_open.check.is_none() && below_open.open_inside);
        let deeper = ListingGuard::below(below_open, &ours);
        assert_eq!(deeper.check, Some(folder_id(&ours)));
        assert!(deeper.open_inside, "open above means open below");
    }

    /// Regression: any failure to read extended attributes gave "none", which the next
    /// backups then carried forward as the entry's attributes.
    #[test]
    fn extended_attributes_that_cannot_be_read_are_an_error_not_none() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        if xattr::set(&file, "user.k", b"v").is_err() {
            return; // a file system without user attributes
        }
        assert_eq!(
            read_xattrs(&file).unwrap(),
            vec![(b"user.k".to_vec(), b"v".to_vec())]
        );
        assert!(read_xattrs(&dir.path().join("gone")).unwrap().is_empty());
        let err = read_xattrs(&file.join("below-a-file")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR));
    }

    /// Regression: times past 2262 (or before 1677) wrapped around to the other end of time.
    #[test]
    fn far_times_are_clamped_not_wrapped() {
        assert_eq!(nanos(1_700_000_000, 5), 1_700_000_000_000_000_005);
        assert_eq!(nanos(-1, 999_999_999), -1);
        assert_eq!(nanos(20_000_000_000, 0), i64::MAX);
        assert_eq!(nanos(-20_000_000_000, 0), i64::MIN);
    }

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(
            normalize(Path::new("/a/./b/../c")).unwrap(),
            PathBuf::from("/a/c")
        );
        assert_eq!(normalize(Path::new("/..")).unwrap(), PathBuf::from("/"));
    }

    #[test]
    fn nested_sources_collapse() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("x");
        std::fs::create_dir(&sub).unwrap();
        let got = prepare_sources(&[sub.clone(), dir.path().to_path_buf()]).unwrap();
        assert_eq!(got, vec![dir.path().to_path_buf()]);
        assert!(matches!(
            prepare_sources(&[dir.path().join("missing")]),
            Err(Error::SourceNotFound { .. })
        ));
    }
}
