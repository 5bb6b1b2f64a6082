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

/// Every key file, in id order; a damaged one is listed with what is wrong with it, and one
/// removed since the listing is left out.
pub fn list(repo: &Repository) -> Result<Vec<KeyEntry>> {
    let mut out = Vec::new();
    for id in repo.list_ids(FileKind::Key)? {
        let file = match read_key_file(repo.storage(), &object_path(FileKind::Key, &id)) {
            Ok((_, key)) => Ok(key),
            Err(Error::Storage {
                not_found: true, ..
            }) => continue,
            Err(e @ Error::Storage { .. }) => return Err(e),
            Err(e) => Err(e.to_string()),
        };
        let current = id == *repo.key_id();
        out.push(KeyEntry { id, current, file });
    }
    Ok(out)
}

/// The one listed key file whose hex id starts with `prefix` (not empty).
pub fn find(entries: &[KeyEntry], prefix: &str) -> Result<[u8; 32]> {
    let wanted = prefix.to_ascii_lowercase();
    let matches: Vec<_> = entries
        .iter()
        .filter(|e| !wanted.is_empty() && to_hex(&e.id).starts_with(&wanted))
        .collect();
    match matches[..] {
        [] => Err(Error::KeyNotFound(prefix.into())),
        [one] => Ok(one.id),
        _ => Err(Error::AmbiguousKey {
            prefix: prefix.into(),
            count: matches.len(),
        }),
    }
}

fn short(id: &[u8; 32]) -> String {
    to_hex(&id[..4])
}

/// Refuses a lock that does not keep other key removals out.
fn require_exclusive(lock: &RepositoryLock) -> Result<()> {
    if lock.is_exclusive() {
        Ok(())
    } else {
        Err(Error::Invalid(
            "removing a key file needs the exclusive lock".into(),
        ))
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
    let reason = match try_key(repo.storage(), &path, repo.id(), password) {
        Ok(Some((_, keys))) if keys.master() == repo.keys().master() => return Ok(id),
        Ok(_) => "it does not open with the new password".to_string(),
        Err(e) => e.to_string(),
    };
    let removed = repo.storage().delete(&path).is_ok();
    Err(Error::KeyNotVerified {
        id: short(&id),
        reason,
        removed,
    })
}

/// Removes key file `id`, which must not be the one that opened the repository, under
/// `lock`, which must be exclusive.
pub fn remove(repo: &Repository, lock: &RepositoryLock, id: &[u8; 32]) -> Result<()> {
    require_exclusive(lock)?;
    if id == repo.key_id() {
        return Err(Error::KeyInUse { id: short(id) });
    }
    let own = object_path(FileKind::Key, repo.key_id());
    if !repo.storage().exists(&own)? {
        return Err(Error::KeyGone {
            id: short(repo.key_id()),
        });
    }
    lock.check()?;
    repo.storage().delete(&object_path(FileKind::Key, id))
}

/// Adds a key file for `password`, then removes the one that opened the repository, under
/// `lock`, which must be exclusive; returns the new key file's id.
pub fn replace(
    repo: &Repository,
    lock: &RepositoryLock,
    password: &[u8],
    params: KdfParams,
    owner: KeyOwner,
) -> Result<[u8; 32]> {
    require_exclusive(lock)?;
    let new = add(repo, password, params, owner)?;
    crate::failpoint::hit("key-replacement-written");
    let old = object_path(FileKind::Key, repo.key_id());
    lock.check()
        .and_then(|()| repo.storage().delete(&old))
        .map_err(|e| Error::PasswordChangeIncomplete {
            added: short(&new),
            old: short(repo.key_id()),
            reason: e.to_string(),
        })?;
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::repository_on;
    use crate::storage::instrumented::Instrumented;
    use crate::storage::{OpendalStorage, Storage};

    const FAST: KdfParams = KdfParams::FAST;

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

    /// Storage on `origin` on which `vanishing` is deleted just before it is read, and key
    /// files are written damaged if `damage`.
    fn unsteady(origin: &OpendalStorage, vanishing: Option<String>, damage: bool) -> Instrumented {
        let mut storage = Instrumented::new(origin.another_handle().unwrap());
        storage.before_read = Box::new(move |inner, path| {
            if vanishing.as_deref() == Some(path) {
                inner.delete(path).unwrap();
            }
        });
        if damage {
            storage.before_write = Box::new(|path, bytes| {
                if path.starts_with("keys/") {
                    bytes[0] ^= 1;
                }
                Ok(())
            });
        }
        storage
    }

    /// Regression: a key file removed by another process between the listing and its read
    /// made every open fail, whichever key the password opens.
    #[test]
    fn a_key_file_removed_while_opening_is_skipped() {
        let (repo, origin) = repository();
        add(&repo, b"second", FAST, owner()).unwrap();
        let first = object_path(FileKind::Key, repo.key_id());
        let storage = unsteady(&origin, Some(first.clone()), false);
        let opened = Repository::open(Box::new(storage), || Ok(b"second".to_vec())).unwrap();
        assert_eq!(
            list(&opened).unwrap().len(),
            1,
            "the vanished file is not listed"
        );
        let storage = unsteady(&origin, None, false);
        match Repository::open(Box::new(storage), || Ok(b"pw".to_vec())) {
            Err(Error::WrongPassword {
                keys: 1,
                damaged: 0,
            }) => {}
            other => panic!("{:?}", other.map(|r| r.key_id)),
        }
    }

    #[test]
    fn a_key_file_that_does_not_read_back_is_not_added_and_is_removed() {
        let (repo, origin) = repository();
        let damaging = repository_on_storage(unsteady(&origin, None, true));
        let lock = RepositoryLock::acquire(&damaging, true, std::time::Duration::ZERO).unwrap();
        match replace(&damaging, &lock, b"new", FAST, owner()) {
            Err(Error::KeyNotVerified { removed: true, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(
            list(&repo).unwrap().len(),
            1,
            "only the first key file is left"
        );
        assert!(
            reopen(&origin, b"pw").is_ok(),
            "the old password still opens"
        );
        drop(lock);
        let shared = RepositoryLock::acquire(&repo, false, std::time::Duration::ZERO).unwrap();
        assert!(matches!(
            replace(&repo, &shared, b"new", FAST, owner()),
            Err(Error::Invalid(_))
        ));
    }

    /// The repository of `origin` opened with "pw" through `storage`.
    fn repository_on_storage(storage: Instrumented) -> Repository {
        Repository::open(Box::new(storage), || Ok(b"pw".to_vec())).unwrap()
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
        assert!(matches!(find(&entries, ""), Err(Error::KeyNotFound(_))));
        assert!(matches!(find(&entries, "ff"), Err(Error::KeyNotFound(_))));
    }
}
