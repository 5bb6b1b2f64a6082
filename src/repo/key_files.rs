//! The set of key files: listing them, adding one for a new password, removing one, and
//! replacing the one in use (a password change). Every key file wraps the same master key, so
//! none of this touches data.
//!
//! Guarantees:
//! - A new key file is read back from storage and opened with its password before success is
//!   reported or anything is removed: a password reported as added does open the repository.
//! - The key file that opened the repository is removed only by `replace`, once its
//!   replacement passed that read-back: whoever runs a key command keeps a password that works.
//! - Removal needs the exclusive lock and first checks that the key file that opened the
//!   repository is still there, so two removals cannot each take the other's key and leave
//!   none.

use super::lock::RepositoryLock;
use super::{FileKind, KdfParams, KeyFile, Repository, object_path, read_key_file, try_key};
use crate::error::{Error, Result};
use crate::ids::to_hex;

/// One key file as listed.
#[derive(Debug)]
pub struct KeyEntry {
    pub id: [u8; 32],
    /// Whether this key file opened the repository.
    pub current: bool,
    /// The decoded key file, or why it could not be read.
    pub file: std::result::Result<KeyFile, String>,
}

/// Who a new key file says made it (shown by `key list`).
pub struct KeyOwner {
    pub hostname: String,
    pub username: String,
}

/// Every key file, in id order; a damaged one is listed with what is wrong with it.
pub fn list(repo: &Repository) -> Result<Vec<KeyEntry>> {
    let mut out = Vec::new();
    for id in repo.list_ids(FileKind::Key)? {
        let file = match read_key_file(repo.storage(), &object_path(FileKind::Key, &id)) {
            Ok((_, key)) => Ok(key),
            Err(e @ Error::Storage { not_found, .. }) if !not_found => return Err(e),
            Err(e) => Err(e.to_string()),
        };
        let current = id == *repo.key_id();
        out.push(KeyEntry { id, current, file });
    }
    Ok(out)
}

/// The one listed key file whose hex id starts with `prefix`.
pub fn find(entries: &[KeyEntry], prefix: &str) -> Result<[u8; 32]> {
    let prefix = prefix.to_ascii_lowercase();
    let mut matching = entries
        .iter()
        .filter(|e| to_hex(&e.id).starts_with(&prefix));
    match (matching.next(), matching.next()) {
        (Some(e), None) if !prefix.is_empty() => Ok(e.id),
        (None, _) => Err(Error::KeyNotFound(prefix)),
        _ => Err(Error::AmbiguousKey {
            count: entries
                .iter()
                .filter(|e| to_hex(&e.id).starts_with(&prefix))
                .count(),
            prefix,
        }),
    }
}

/// Writes a key file that wraps the repository's master key under `password`, reads it back
/// and opens it; returns its id.
pub fn add(
    repo: &Repository,
    password: &[u8],
    params: KdfParams,
    owner: KeyOwner,
) -> Result<[u8; 32]> {
    let key = KeyFile::create(
        repo.keys(),
        repo.id(),
        password,
        params,
        crate::host::now_ns(),
        owner.hostname,
        owner.username,
    )?;
    let id = repo.write_content_addressed(FileKind::Key, key.encode())?;
    let path = object_path(FileKind::Key, &id);
    match try_key(repo.storage(), &path, repo.id(), password)? {
        Some((_, keys)) if keys.master() == repo.keys().master() => Ok(id),
        _ => Err(Error::corrupt(
            "key",
            &path,
            "the new key file does not open with its password when read back",
        )),
    }
}

/// Removes key file `id`, which must not be the one that opened the repository. The caller
/// holds `lock`, which must be exclusive.
pub fn remove(repo: &Repository, lock: &RepositoryLock, id: &[u8; 32]) -> Result<()> {
    let hex = |id: &[u8; 32]| to_hex(&id[..4]);
    if id == repo.key_id() {
        return Err(Error::KeyInUse { id: hex(id) });
    }
    if !repo
        .storage()
        .exists(&object_path(FileKind::Key, repo.key_id()))?
    {
        return Err(Error::KeyGone {
            id: hex(repo.key_id()),
        });
    }
    lock.check()?;
    repo.storage().delete(&object_path(FileKind::Key, id))
}

/// Adds a key file for `password`, then removes the one that opened the repository; returns
/// the new key file's id. The caller holds `lock`, which must be exclusive.
pub fn replace(
    repo: &Repository,
    lock: &RepositoryLock,
    password: &[u8],
    params: KdfParams,
    owner: KeyOwner,
) -> Result<[u8; 32]> {
    let new = add(repo, password, params, owner)?;
    crate::failpoint::hit("key-replacement-written");
    lock.check()?;
    repo.storage()
        .delete(&object_path(FileKind::Key, repo.key_id()))?;
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::repository_on;
    use crate::storage::OpendalStorage;

    const FAST: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    fn owner() -> KeyOwner {
        KeyOwner {
            hostname: "h".into(),
            username: "u".into(),
        }
    }

    /// A repository with the password "pw", and a handle on its storage for opening it again
    /// as another process would.
    fn repository() -> (Repository, OpendalStorage) {
        let storage = OpendalStorage::memory().unwrap();
        let origin = storage.another_handle().unwrap();
        (repository_on(Box::new(storage)), origin)
    }

    fn reopen(origin: &OpendalStorage, password: &[u8]) -> Result<Repository> {
        let storage = origin.another_handle()?;
        Repository::open(Box::new(storage), || Ok(password.to_vec()))
    }

    #[test]
    fn an_added_key_opens_the_repository_and_is_listed_with_its_owner() {
        let (repo, origin) = repository();
        let new = add(&repo, b"second", FAST, owner()).unwrap();
        let reopened = reopen(&origin, b"second").unwrap();
        assert_eq!(reopened.key_id(), &new);
        assert_eq!(reopened.keys().master(), repo.keys().master());
        assert!(
            reopen(&origin, b"pw").is_ok(),
            "the first password still works"
        );
        let listed = list(&reopened).unwrap();
        assert_eq!(listed.len(), 2);
        let entry = listed.iter().find(|e| e.id == new).unwrap();
        assert!(entry.current);
        assert_eq!(entry.file.as_ref().unwrap().username, "u");
        assert_eq!(listed.iter().filter(|e| e.current).count(), 1);
    }

    #[test]
    fn the_key_in_use_is_never_removed_and_others_are() {
        let (repo, origin) = repository();
        let lock = RepositoryLock::acquire(&repo, true, std::time::Duration::ZERO).unwrap();
        let other = add(&repo, b"second", FAST, owner()).unwrap();
        assert!(matches!(
            remove(&repo, &lock, repo.key_id()),
            Err(Error::KeyInUse { .. })
        ));
        remove(&repo, &lock, &other).unwrap();
        assert!(matches!(
            reopen(&origin, b"second"),
            Err(Error::WrongPassword { .. })
        ));
        assert_eq!(list(&repo).unwrap().len(), 1);
    }

    /// Two removals, each opened with the key the other removes, must not leave no key.
    #[test]
    fn a_removal_whose_own_key_is_gone_refuses() {
        let (first, origin) = repository();
        add(&first, b"second", FAST, owner()).unwrap();
        let second = reopen(&origin, b"second").unwrap();
        let lock = RepositoryLock::acquire(&first, true, std::time::Duration::ZERO).unwrap();
        remove(&first, &lock, second.key_id()).unwrap();
        assert!(matches!(
            remove(&second, &lock, first.key_id()),
            Err(Error::KeyGone { .. })
        ));
        assert!(reopen(&origin, b"pw").is_ok());
    }

    #[test]
    fn replace_leaves_only_the_new_password() {
        let (repo, origin) = repository();
        let lock = RepositoryLock::acquire(&repo, true, std::time::Duration::ZERO).unwrap();
        let new = replace(&repo, &lock, b"new", FAST, owner()).unwrap();
        assert!(matches!(
            reopen(&origin, b"pw"),
            Err(Error::WrongPassword { .. })
        ));
        assert_eq!(reopen(&origin, b"new").unwrap().key_id(), &new);
        assert_eq!(list(&repo).unwrap().len(), 1);
    }

    #[test]
    fn prefixes_must_name_exactly_one_key() {
        let entries: Vec<KeyEntry> = [[0xab; 32], [0xac; 32]]
            .into_iter()
            .map(|id| KeyEntry {
                id,
                current: false,
                file: Err("x".into()),
            })
            .collect();
        assert_eq!(find(&entries, "AB").unwrap(), [0xab; 32]);
        assert!(matches!(
            find(&entries, "a"),
            Err(Error::AmbiguousKey { count: 2, .. })
        ));
        assert!(matches!(
            find(&entries, ""),
            Err(Error::AmbiguousKey { .. })
        ));
        assert!(matches!(find(&entries, "ff"), Err(Error::KeyNotFound(_))));
    }
}
