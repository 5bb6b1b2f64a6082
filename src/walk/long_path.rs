//! Paths longer than the kernel takes in one call (`PATH_MAX`, 4,096 bytes), for backup,
//! `diff --live` and the tests (restore reaches every entry through its folder's descriptor
//! instead: `restore::target`).
//!
//! A long path is reached in steps: its folder is opened piece by piece (each piece well under
//! `PATH_MAX`, relative to the folder opened before), and the path handed back is
//! `/proc/self/fd/<that folder>/<name>`, which every path-taking call accepts. Short paths, the
//! usual case, are handed back as they are, at the cost of a length check.
//!
//! Guarantees: the path handed back names the same entry as the long one, resolved as the
//! kernel would resolve it (symlinks in the folders leading to it are followed, as they are
//! in any path; the last name is never resolved here); the folder stays open while the
//! returned value lives.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Paths at least this long are reached in steps (some room below `PATH_MAX` for the
/// `/proc/self/fd/N/` prefix and the terminating NUL).
const LONG: usize = 3_800;

/// A path the kernel accepts in one call, naming the same entry as the one it was made from.
pub struct Reachable {
    path: PathBuf,
    /// The folder a long path was reached through; kept open while the path is used.
    _dir: Option<File>,
}

impl std::ops::Deref for Reachable {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for Reachable {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

/// `path` itself when it is short enough, else the same entry reached through its open folder.
pub fn reachable(path: &Path) -> io::Result<Reachable> {
    if path.as_os_str().len() < LONG {
        return Ok(Reachable {
            path: path.to_path_buf(),
            _dir: None,
        });
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    };
    let dir = open_folder(parent)?;
    let mut short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    short.push(name);
    Ok(Reachable {
        path: short,
        _dir: Some(dir),
    })
}

// The file-system calls backup and restore make, for paths of any length.

pub fn symlink_metadata(path: &Path) -> io::Result<std::fs::Metadata> {
    std::fs::symlink_metadata(&*reachable(path)?)
}

pub fn read_link(path: &Path) -> io::Result<PathBuf> {
    std::fs::read_link(&*reachable(path)?)
}

/// The listing holds its own descriptor of the folder; its entries' `path()` must not be
/// used (it may name the folder through a descriptor closed since): join names to `path`.
pub fn read_dir(path: &Path) -> io::Result<std::fs::ReadDir> {
    std::fs::read_dir(&*reachable(path)?)
}

pub fn open(options: &std::fs::OpenOptions, path: &Path) -> io::Result<File> {
    options.open(&*reachable(path)?)
}

pub fn create_dir(path: &Path) -> io::Result<()> {
    std::fs::create_dir(&*reachable(path)?)
}

pub fn symlink(target: &OsStr, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, &*reachable(link)?)
}

/// Opens a folder of any path length: the path is cut, at separators, into pieces shorter
/// than `LONG`, and each piece is opened relative to the folder the pieces before it lead to.
fn open_folder(path: &Path) -> io::Result<File> {
    let bytes = path.as_os_str().as_bytes();
    let mut dir: Option<File> = None;
    let mut start = 0;
    while start < bytes.len() {
        let mut end = bytes.len().min(start + LONG);
        if end < bytes.len() {
            end = start
                + bytes[start..end]
                    .iter()
                    .rposition(|&b| b == b'/')
                    .filter(|&i| i > 0)
                    .ok_or_else(|| io::Error::from_raw_os_error(libc::ENAMETOOLONG))?;
        }
        let piece = OsStr::from_bytes(&bytes[start..end]);
        let piece = match &dir {
            None => PathBuf::from(piece),
            Some(d) => {
                let rel = piece
                    .as_bytes()
                    .strip_prefix(b"/")
                    .unwrap_or(piece.as_bytes());
                PathBuf::from(format!("/proc/self/fd/{}", d.as_raw_fd()))
                    .join(OsStr::from_bytes(rel))
            }
        };
        dir = Some(
            File::options()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
                .open(&piece)?,
        );
        start = end;
    }
    dir.ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Makes `depth` nested folders of 200-byte names below `root`, the way a test must: each
    /// one through the open folder above it.
    fn deep(root: &Path, depth: usize) -> PathBuf {
        let mut path = root.to_path_buf();
        for i in 0..depth {
            path.push(format!("{i:03}{}", "d".repeat(197)));
            std::fs::create_dir(&*reachable(&path).unwrap()).unwrap();
        }
        path
    }

    #[test]
    fn long_paths_are_reached_and_short_ones_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let short = root.path().join("a");
        assert_eq!(&*reachable(&short).unwrap(), short.as_path());

        let dir = deep(root.path(), 30);
        assert!(dir.as_os_str().len() > 6_000);
        let file = dir.join("file");
        assert!(
            std::fs::write(&file, b"x").is_err(),
            "the kernel refuses it"
        );
        std::fs::write(&*reachable(&file).unwrap(), b"deep").unwrap();
        assert_eq!(std::fs::read(&*reachable(&file).unwrap()).unwrap(), b"deep");
        let meta = std::fs::symlink_metadata(&*reachable(&file).unwrap()).unwrap();
        assert_eq!(meta.len(), 4);
    }

    #[test]
    fn the_last_name_is_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let dir = deep(root.path(), 25);
        let link = dir.join("link");
        std::os::unix::fs::symlink("/nonexistent", &*reachable(&link).unwrap()).unwrap();
        let meta = std::fs::symlink_metadata(&*reachable(&link).unwrap()).unwrap();
        assert!(meta.file_type().is_symlink());
        assert_eq!(
            std::fs::read_link(&*reachable(&link).unwrap()).unwrap(),
            Path::new("/nonexistent")
        );
    }
}
