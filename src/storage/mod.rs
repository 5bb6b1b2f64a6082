//! Where repository files live. Everything above this module sees only the `Storage` trait:
//! whole-object reads, range reads, whole-object writes, listing and deletion — the operations
//! any object store offers (design rule 5).
//!
//! Durability contract of every implementation:
//! - `write` is atomic and durable: when it returns `Ok`, the object is complete and survives a
//!   crash; after a crash during `write`, the name holds either nothing or the whole object
//!   (local disk: temporary file, fsync, rename; object storage: a single PUT).
//! - Objects are never modified in place; a name is written once (content-addressed) except
//!   for `config`, which `init` writes and `repair config` replaces whole, and `generation`,
//!   which prune replaces whole.

#[cfg(test)]
pub mod instrumented;
mod opendal_storage;
mod s3;

use std::ops::Range;

use std::path::Path;

use crate::error::{Error, Result};

pub use opendal_storage::OpendalStorage;
pub use s3::S3Config;

/// An entry from `list`: a path relative to the repository root, and its size when the backend
/// reports it cheaply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedObject {
    pub path: String,
    pub size: Option<u64>,
}

pub trait Storage: Send + Sync {
    /// A human-readable location, for messages.
    fn location(&self) -> &str;
    /// Reads a whole object. A missing object is an error with `not_found` set.
    fn read(&self, path: &str) -> Result<Vec<u8>>;
    /// Reads `range` of an object; fails if the object is shorter.
    fn read_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>>;
    /// Writes a whole object atomically and durably (see the module contract).
    fn write(&self, path: &str, bytes: Vec<u8>) -> Result<()>;
    /// Lists the objects below `dir` (`""` for the root), recursively or only its direct
    /// children. A missing directory lists as empty.
    fn list(&self, dir: &str, recursive: bool) -> Result<Vec<ListedObject>>;
    /// True if the object exists.
    fn exists(&self, path: &str) -> Result<bool>;
    /// The size of an object in bytes. A missing object is an error with `not_found` set.
    fn size(&self, path: &str) -> Result<u64>;
    /// Removes an object; removing a missing object is not an error.
    fn delete(&self, path: &str) -> Result<()>;
    /// When the object was last written, by the storage's clock, where the storage says.
    fn modified(&self, path: &str) -> Result<Option<std::time::SystemTime>> {
        let _ = path;
        Ok(None)
    }
    /// How many requests (reads, deletions, pack uploads) a caller should keep in flight to keep this
    /// storage busy: 1 where one costs little more than its bytes (local disk), more where
    /// each waits for an answer from afar (object storage).
    fn requests_in_flight(&self) -> usize {
        1
    }
    /// Removes what writes that failed left behind and no write in progress can still need
    /// (on local disk: temporary files older than `age`); returns how many. Object stores
    /// leave nothing behind a failed PUT.
    fn remove_leftovers(&self, age: std::time::Duration) -> Result<usize> {
        let _ = age;
        Ok(0)
    }
}

/// Opens the storage a repository location names: a local path, `file://PATH` or `fs://PATH`,
/// or `s3://BUCKET[/PREFIX]` (see `S3Config`). Unless `create` is set, a local
/// location must already hold a repository: opening one never creates folders (opendal's fs
/// service creates its root and temporary folder when built).
pub fn open_location(location: &str, create: bool) -> Result<Box<dyn Storage>> {
    let path = match location.split_once("://") {
        Some(("file" | "fs", path)) => path,
        Some(("s3", rest)) => {
            return Ok(Box::new(OpendalStorage::s3(&S3Config::from_location(
                rest,
            )?)?));
        }
        Some((other, _)) => {
            return Err(Error::Usage(format!(
                "repository location {location:?}: storage scheme {other:?} is not supported (supported: a local path, file://PATH, s3://BUCKET/PREFIX)"
            )));
        }
        None => location,
    };
    if !create {
        check_local_repository(Path::new(path))?;
    }
    Ok(Box::new(OpendalStorage::local(path)?))
}

/// Whether `dir` holds a file named as key files are (64 hex digits).
fn has_key_files(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let name = e.file_name();
        name.len() == 64 && name.as_encoded_bytes().iter().all(u8::is_ascii_hexdigit)
    })
}

fn check_local_repository(root: &Path) -> Result<()> {
    let location = root.display().to_string();
    // Without a config, key files may still say which repository this is (`Repository::open`).
    if root.join("config").exists() || has_key_files(&root.join("keys")) {
        return Ok(());
    }
    let empty = match std::fs::read_dir(root) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(Error::io(root, e)),
    };
    Err(if empty {
        Error::RepositoryNotFound { location }
    } else {
        Error::NotARepository {
            location,
            reason: "it has no config file".into(),
        }
    })
}
