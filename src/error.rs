//! The library's error type. Every variant names the object, path or pack involved, so the
//! binary can print what happened and map it to a documented exit code without guessing.

use std::path::PathBuf;

use crate::ids::{BlobId, PackId};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no repository at {location}; nothing was changed. Check the location (--repo or CAIRN_REPOSITORY) and that the disk or bucket holding it is there; to create a new one, run `cairn init`"
    )]
    RepositoryNotFound { location: String },

    #[error("{location} is not a cairn repository: {reason}")]
    NotARepository { location: String, reason: String },

    #[error("a repository already exists at {location}; refusing to overwrite it")]
    RepositoryExists { location: String },

    #[error(
        "{location} holds the key files of a repository but no config (an init that was interrupted, or a config that was lost): `cairn repair config` writes it again; nothing was changed"
    )]
    ConfigLost { location: String },

    #[error(
        "the repository uses format version {found}, but this cairn reads only up to version {supported}: upgrade cairn; nothing was changed"
    )]
    NewerFormat { found: u32, supported: u32 },

    #[error(
        "wrong password: none of the repository's {keys} key(s) opens with it{}; nothing was changed",
        damaged_keys(*damaged)
    )]
    WrongPassword { keys: usize, damaged: usize },

    #[error("password: {0}")]
    Password(String),

    #[error(
        "source path {} does not exist; nothing was saved",
        crate::terminal::path(path)
    )]
    SourceNotFound { path: PathBuf },

    #[error(
        "cannot look at source path {}: {source}; nothing was saved",
        crate::terminal::path(path)
    )]
    SourceUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "the repository's storage is full ({op} {path}: {message}). The command stopped at that write; what it wrote before follows the commit order, so the repository is consistent (a backup saved no snapshot), and files nothing refers to yet are removed by `cairn prune`. Free space there (`cairn forget` and `cairn prune` free some) and run the command again"
    )]
    StorageFull {
        op: &'static str,
        path: String,
        message: String,
    },

    #[error(
        "the restore stopped: the target can take no more ({reason}). {files} files were restored before it stopped. Make room (or make the target writable) and run the same restore again: it leaves the files already in place alone and removes the temporary files (.cairn-restore-*) this run could not"
    )]
    RestoreStopped {
        path: PathBuf,
        reason: String,
        files: u64,
    },

    #[error("the backup stopped (nothing was saved): {0}")]
    Stopped(String),

    /// A flag or argument that is not valid (exit code 2, like the parser's own errors).
    #[error("{0}")]
    Usage(String),

    #[error("storage: {op} {path}: {message}")]
    Storage {
        op: &'static str,
        path: String,
        message: String,
        not_found: bool,
    },

    #[error("{kind} {name} is damaged: {reason}")]
    Corrupt {
        kind: &'static str,
        name: String,
        reason: String,
    },

    #[error("blob {blob} in pack {pack} is damaged: {reason}")]
    BlobIntegrity {
        blob: BlobId,
        pack: PackId,
        reason: String,
    },

    #[error("blob {blob} is not in the repository index")]
    BlobNotFound { blob: BlobId },

    #[error("no snapshot matches {0:?}")]
    SnapshotNotFound(String),

    #[error("snapshot prefix {prefix:?} is ambiguous: it matches {count} snapshots")]
    AmbiguousSnapshot { prefix: String, count: usize },

    #[error("no key file matches {0:?}; nothing was changed. `cairn key list` shows their ids")]
    KeyNotFound(String),

    #[error(
        "key id prefix {prefix:?} is ambiguous: it matches {count} key files; nothing was changed"
    )]
    AmbiguousKey { prefix: String, count: usize },

    #[error(
        "key {id} is the one this command opened the repository with, so it was not removed. Run the command with another key's password to remove it, or `cairn key passwd` to replace it"
    )]
    KeyInUse { id: String },

    #[error(
        "key {id}, which this command opened the repository with, was removed meanwhile, so no key was removed (that could leave none you can open). Run the command again with a password that still opens the repository"
    )]
    KeyGone { id: String },

    #[error(
        "the new key file {id} could not be verified ({reason}), so no password was added; {}. The existing passwords are unaffected",
        if *removed { "it was removed again" } else { "remove it with `cairn key remove` before trying again" }
    )]
    KeyNotVerified {
        id: String,
        reason: String,
        removed: bool,
    },

    #[error(
        "the password change is incomplete: the new password already opens the repository (key file {added}), but the old key file {old} was not removed ({reason}). Remove it with `cairn key remove {old}`, using the new password"
    )]
    PasswordChangeIncomplete {
        added: String,
        old: String,
        reason: String,
    },

    #[error("path {path:?} is not in snapshot {snapshot}")]
    PathNotInSnapshot { snapshot: String, path: String },

    #[error("local index {}: {message}", crate::terminal::path(path))]
    Index { path: PathBuf, message: String },

    #[error("{}: {source}", crate::terminal::path(path))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "refusing unsafe entry name {name:?} under {parent:?}: it would write outside the target"
    )]
    UnsafeName { parent: String, name: String },

    #[error(
        "the command `{command}` failed ({status}); no snapshot was saved{}",
        if stderr_tail.is_empty() { String::new() } else { format!(". The end of its error output:\n{stderr_tail}") }
    )]
    CommandFailed {
        command: String,
        status: String,
        stderr_tail: String,
    },

    #[error(
        "the repository is locked by {holder}; nothing was changed. Try again later or wait longer with --retry-lock. The lock goes stale 30 minutes after its last refresh (at once, on its own host, when its process is gone); if you know that no cairn is running on the repository, `cairn unlock --remove-all` removes it now"
    )]
    Locked { holder: String },

    #[error(
        "the repository lock was lost ({reason}); stopped before changing anything further. Run the command again"
    )]
    LockLost { reason: String },

    #[error(
        "a {blob_type:?} blob of {len} bytes is over the 1 GiB a blob may hold; nothing was committed. A folder's listing holds 32 bytes per chunk of each file in it, so a file of more than about 33 million chunks (512 GiB with the small chunk profile of streams) cannot be stored: back it up with --chunk-profile files"
    )]
    BlobTooLarge {
        blob_type: crate::ids::BlobType,
        len: usize,
    },

    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn corrupt(kind: &'static str, name: impl ToString, reason: impl ToString) -> Self {
        Error::Corrupt {
            kind,
            name: name.to_string(),
            reason: reason.to_string(),
        }
    }

    /// True for a storage that could not be read for a reason that says nothing of what it
    /// holds: a timeout, a refused or failed request, a read cut short. Not a missing object.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::Storage {
                not_found: false,
                ..
            } | Error::Io { .. }
        )
    }

    /// True for errors that mean stored bytes are damaged (as opposed to unavailable).
    pub fn is_integrity(&self) -> bool {
        matches!(self, Error::Corrupt { .. } | Error::BlobIntegrity { .. })
    }

    /// True for errors that mean stored data is damaged or gone for good: an integrity
    /// failure, a blob the index does not hold, or a pack missing from storage when read
    /// (a write that finds no bucket is about where the repository is, not what it holds).
    pub fn is_damage(&self) -> bool {
        self.is_integrity()
            || match self {
                Error::BlobNotFound { .. } => true,
                Error::Storage {
                    op,
                    not_found,
                    path,
                    ..
                } => *not_found && matches!(*op, "read" | "stat") && path.starts_with("packs/"),
                _ => false,
            }
    }
}

fn damaged_keys(n: usize) -> String {
    match n {
        0 => String::new(),
        n => format!(" ({n} more key file(s) are damaged and could not be tried)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{BlobId, PackId};

    /// Regression: any error reading a tree counted as its listing lost, so one storage
    /// timeout emptied a whole folder in the repaired snapshot (and `--forget` then deleted
    /// the intact original).
    #[test]
    fn only_damage_or_absence_counts_as_damage() {
        let storage = |not_found| Error::Storage {
            op: "read",
            path: "packs/ab/abcd".into(),
            message: "timed out".into(),
            not_found,
        };
        assert!(!storage(false).is_damage());
        assert!(storage(true).is_damage());
        let snapshot_gone = Error::Storage {
            op: "read",
            path: "snapshots/abcd".into(),
            message: "not found".into(),
            not_found: true,
        };
        assert!(!snapshot_gone.is_damage());
        // Regression (helper-43): a pack upload that found no bucket (S3 answers 404) was
        // reported as a damaged repository (exit 17).
        let no_bucket = Error::Storage {
            op: "write",
            path: "packs/ab/abcd".into(),
            message: "NoSuchBucket".into(),
            not_found: true,
        };
        assert!(!no_bucket.is_damage());
        assert!(
            Error::BlobNotFound {
                blob: BlobId([1; 32])
            }
            .is_damage()
        );
        assert!(
            Error::BlobIntegrity {
                blob: BlobId([1; 32]),
                pack: PackId([2; 32]),
                reason: "fails authentication".into(),
            }
            .is_damage()
        );
        assert!(
            Error::Corrupt {
                kind: "tree",
                name: "abcd".into(),
                reason: "bad field".into(),
            }
            .is_damage()
        );
    }
}
