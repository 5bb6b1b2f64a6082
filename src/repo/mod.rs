//! The repository: its files on storage, its config and keys, and typed access to the objects
//! it holds. Every file except `config` is encrypted and named by the BLAKE3 of its bytes, and
//! every read checks the bytes against the name before use (design rule 2).
//!
//! Layout on storage:
//! `config`, `keys/<id>`, `packs/<first two hex digits>/<id>`, `index/<id>`, `snapshots/<id>`,
//! and `tmp/` (partial writes on local disk; never read).

pub mod config;
pub mod file;
pub mod key_files;
pub mod keyfile;
pub mod lock;

use std::sync::Arc;

use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::host;
use crate::ids::{PackId, RepositoryId, to_hex};
use crate::storage::Storage;
pub use config::Config;
pub use file::{FORMAT_VERSION, FileKind};
pub use keyfile::{KdfParams, KeyFile};

/// The one file besides `config` that is rewritten in place (atomically).
pub const GENERATION_PATH: &str = "generation";

pub struct Repository {
    storage: Arc<dyn Storage>,
    config: Config,
    keys: Keys,
    /// The id of the key file that opened the repository (or that `init` wrote).
    key_id: [u8; 32],
    /// What was wrong with the config, when the repository id came from a key file instead.
    config_damage: Option<String>,
}

fn dir_of(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Config => "",
        FileKind::Key => "keys",
        FileKind::Pack => "packs",
        FileKind::Index => "index",
        FileKind::Snapshot => "snapshots",
        FileKind::Lock => "locks",
        FileKind::Generation => "",
        FileKind::Removal => "removals",
    }
}

/// Every pack on `storage` with its size in bytes (needs no key).
pub fn stored_packs(storage: &dyn Storage) -> Result<std::collections::HashMap<PackId, u64>> {
    use rayon::prelude::*;
    let listed = storage.list(dir_of(FileKind::Pack), true)?;
    listed
        .into_par_iter()
        .filter_map(|o| {
            let id = PackId(id_at(FileKind::Pack, &o.path)?);
            Some((id, o))
        })
        .map(|(id, o)| match o.size {
            Some(size) => Ok((id, size)),
            None => storage.size(&o.path).map(|size| (id, size)),
        })
        .collect()
}

/// The storage path of a content-addressed file.
pub fn object_path(kind: FileKind, id: &[u8; 32]) -> String {
    let hex = to_hex(id);
    match kind {
        FileKind::Pack => format!("packs/{}/{hex}", &hex[..2]),
        _ => format!("{}/{hex}", dir_of(kind)),
    }
}

/// The key file at `path`, checked against its name; returns its id with it.
fn read_key_file(storage: &dyn Storage, path: &str) -> Result<([u8; 32], KeyFile)> {
    let bytes = storage.read(path)?;
    match id_at(FileKind::Key, path) {
        Some(id) if named_by_content(FileKind::Key, path, &bytes) => {
            Ok((id, KeyFile::decode(path, &bytes)?))
        }
        _ => Err(Error::corrupt(
            "key",
            path,
            "content does not match its name",
        )),
    }
}

/// The id of the key file at `path` and the keys it unwraps with `password`; `None` if it does
/// not open with it. A file that does not match its name, or cannot be decoded, is damage.
fn try_key(
    storage: &dyn Storage,
    path: &str,
    repo: &RepositoryId,
    password: &[u8],
) -> Result<Option<([u8; 32], Keys)>> {
    let (id, key) = read_key_file(storage, path)?;
    Ok(key.unwrap_keys(repo, password)?.map(|keys| (id, keys)))
}

/// Whether the file of `kind` at `path` is named by the BLAKE3 of `bytes`, its content.
fn named_by_content(kind: FileKind, path: &str, bytes: &[u8]) -> bool {
    id_at(kind, path) == Some(*blake3::hash(bytes).as_bytes())
}

/// The id of the file of `kind` at `path`, if that is where the file of that id is stored
/// (a stray elsewhere, or under another spelling, could be neither read nor deleted by id).
fn id_at(kind: FileKind, path: &str) -> Option<[u8; 32]> {
    let id = crate::ids::parse_hex32(path.rsplit('/').next()?)?;
    (object_path(kind, &id) == path).then_some(id)
}

/// The repository id the key files not opened with the config's id record, when the config
/// is not to be trusted for it: it could not be read, or every key file records an id and
/// none the config's (a key file from before ids were recorded may be this repository's, so
/// the config's id is then kept). None when they cannot say; an error when they disagree.
fn recorded_id(
    config: &Result<Config>,
    unopened: &[([u8; 32], KeyFile)],
) -> Result<Option<RepositoryId>> {
    let ids: std::collections::BTreeSet<[u8; 32]> = unopened
        .iter()
        .filter_map(|(_, k)| k.repository.map(|r| r.0))
        .collect();
    let suspect = match config {
        Err(_) => true,
        Ok(c) => unopened.iter().all(|(_, k)| k.repository.is_some()) && !ids.contains(&c.id.0),
    };
    match ids.len() {
        _ if !suspect => Ok(None),
        0 | 1 => Ok(ids.into_iter().next().map(RepositoryId)),
        n => Err(Error::corrupt(
            "config",
            "config",
            format!("it cannot be trusted, and the key files record {n} different repository ids"),
        )),
    }
}

/// The first key among `unopened` that `password` opens with repository id `id` (one made
/// before ids were recorded included): its id and keys.
fn open_with(
    id: RepositoryId,
    unopened: &[([u8; 32], KeyFile)],
    password: &[u8],
) -> Option<([u8; 32], Keys)> {
    unopened.iter().find_map(|(key_id, key)| {
        let keys = key.unwrap_keys(&id, password).ok()??;
        Some((*key_id, keys))
    })
}

/// Reads the config, telling apart "nothing here", "something else here", "damaged" and "too
/// new" (a checksum that does not match makes any version damage).
pub fn read_config(storage: &dyn Storage) -> Result<Config> {
    let damaged = |reason: String| Error::NotARepository {
        location: storage.location().to_string(),
        reason,
    };
    match storage.read("config") {
        Ok(bytes) => match (Config::checksum_state(&bytes), Config::decode(&bytes)) {
            (config::Checksum::Differs, _) => Err(damaged(
                "its config is damaged: its checksum does not match".into(),
            )),
            (_, Err(e @ Error::NewerFormat { .. })) => Err(e),
            (_, decoded) => decoded.map_err(|e| damaged(e.to_string())),
        },
        Err(Error::Storage {
            not_found: true, ..
        }) => {
            let anything = storage.list("", false)?;
            if anything.is_empty() {
                Err(Error::RepositoryNotFound {
                    location: storage.location().to_string(),
                })
            } else {
                Err(Error::NotARepository {
                    location: storage.location().to_string(),
                    reason: "it has no config file".into(),
                })
            }
        }
        Err(e) => Err(e),
    }
}

impl Repository {
    /// Creates a new repository with one key for `password`. Refuses if a config exists.
    pub fn init(storage: Box<dyn Storage>, password: &[u8], params: KdfParams) -> Result<Self> {
        // An empty password file or variable is a mistake, and would let anyone who can read
        // the storage open the repository.
        if password.is_empty() {
            return Err(Error::Password(
                "the password is empty: no repository is created with one".into(),
            ));
        }
        Self::refuse_init_over(storage.as_ref())?;
        let config = Config {
            id: RepositoryId(crate::crypto::random_bytes()),
            created_ns: host::now_ns(),
            version: FORMAT_VERSION,
            checksummed: true,
        };
        let keys = Keys::generate();
        let key = KeyFile::create(
            &keys,
            &config.id,
            password,
            params,
            config.created_ns,
            host::hostname(),
            host::username(),
        )?;
        let mut repo = Repository {
            storage: storage.into(),
            config,
            keys,
            key_id: [0; 32],
            config_damage: None,
        };
        // The key goes first: a config without a key is an unusable repository, while a key
        // without a config is one that `repair config` completes (a second `init` refuses it).
        repo.key_id = repo.write_content_addressed(FileKind::Key, key.encode())?;
        repo.storage.write("config", repo.config.encode())?;
        Ok(repo)
    }

    /// An error if `init` would put a repository over one: a config, or key files without
    /// one (an interrupted init, or a lost config: a new repository would take its place).
    pub fn refuse_init_over(storage: &dyn Storage) -> Result<()> {
        let location = storage.location().to_string();
        if storage.exists("config")? {
            return Err(Error::RepositoryExists { location });
        }
        if !storage.list("keys", true)?.is_empty() {
            return Err(Error::ConfigLost { location });
        }
        Ok(())
    }

    /// Opens a repository. The password is asked for only once the config has been read, so
    /// a missing or too-new repository fails before any prompt. A config that cannot be read,
    /// or whose repository id opens no key, is recovered from a key file that records the
    /// repository it was made for (`config_damage` then says what was wrong).
    pub fn open(
        storage: Box<dyn Storage>,
        password: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Self> {
        let config = match read_config(storage.as_ref()) {
            // Perhaps only the config is damaged or lost: the key files may tell.
            Err(e @ Error::NotARepository { .. }) => Err(e),
            other => Ok(other?),
        };
        let key_names = storage.list("keys", true)?;
        if key_names.is_empty() {
            return Err(config.err().unwrap_or_else(|| Error::NotARepository {
                location: storage.location().to_string(),
                reason: "it has no key files".into(),
            }));
        }
        let password = password()?;
        let config_id = config.as_ref().ok().map(|c| c.id);
        let (mut unopened, mut damaged) = (Vec::new(), Vec::new());
        let mut paths: Vec<String> = key_names.into_iter().map(|o| o.path).collect();
        let mut seen: std::collections::HashSet<String> = paths.iter().cloned().collect();
        // A key file removed (`key remove`, `key passwd`) between the listing and its read
        // is skipped; then the keys added meanwhile are listed and tried, once.
        for round in 0..2 {
            let mut vanished = false;
            for path in &paths {
                let opened = read_key_file(storage.as_ref(), path).and_then(|(key_id, key)| {
                    let keys = match config_id {
                        Some(id) => key.unwrap_keys(&id, &password)?,
                        None => None,
                    };
                    Ok((key_id, key, keys))
                });
                match opened {
                    Ok((key_id, _, Some(keys))) => {
                        return Ok(Repository {
                            storage: storage.into(),
                            config: config?,
                            keys,
                            key_id,
                            config_damage: None,
                        });
                    }
                    Ok((key_id, key, None)) => unopened.push((key_id, key)),
                    Err(Error::Storage {
                        not_found: true, ..
                    }) => vanished = true,
                    Err(e @ (Error::NewerFormat { .. } | Error::Storage { .. })) => return Err(e),
                    Err(e) => {
                        tracing::warn!("skipping a damaged key file: {e}");
                        damaged.push(e);
                    }
                }
            }
            if !vanished || round == 1 {
                break;
            }
            paths = storage
                .list("keys", true)?
                .into_iter()
                .map(|o| o.path)
                .collect();
            paths.retain(|p| seen.insert(p.clone()));
        }
        let recorded = recorded_id(&config, &unopened)?;
        if let Some(id) = recorded
            && let Some((key_id, keys)) = open_with(id, &unopened, &password)
        {
            let key = &to_hex(&key_id)[..8];
            let damage = match &config {
                Ok(_) => "its repository id is not the one the key files record".to_string(),
                Err(Error::NotARepository { reason, .. }) => reason.clone(),
                Err(e) => e.to_string(),
            };
            tracing::warn!(
                "the repository's config cannot be used ({damage}); it was opened with the \
                 repository id key file {key} records. Run `cairn repair config` to write the \
                 config again"
            );
            // The first key of a repository is made with it, at its creation time.
            let made = |k: &&([u8; 32], KeyFile)| k.1.repository == Some(id);
            let oldest_key = unopened
                .iter()
                .filter(made)
                .map(|(_, k)| k.created_ns)
                .min();
            let created_ns = match &config {
                Ok(c) => c.created_ns,
                Err(_) => oldest_key.unwrap_or_default(),
            };
            return Ok(Repository {
                storage: storage.into(),
                config: Config {
                    id,
                    created_ns,
                    version: FORMAT_VERSION,
                    checksummed: false,
                },
                keys,
                key_id,
                config_damage: Some(damage),
            });
        }
        match (config, recorded) {
            // No key can say which repository this is.
            (Err(e), None) => return Err(e),
            (Err(e), Some(_)) => tracing::warn!(
                "the repository's config may be damaged ({e}): with a right password it is read \
                 with the repository id its key files record"
            ),
            (Ok(_), Some(_)) => tracing::warn!(
                "the config's repository id is not the one the key files record: the config may \
                 be damaged"
            ),
            (Ok(_), None) => {}
        }
        let (tried, damaged_keys) = (unopened.len(), damaged.len());
        match damaged.into_iter().next() {
            // Not one key could be tried: that is damage, not a wrong password.
            Some(e) if tried == 0 => Err(e),
            Some(_) | None => Err(Error::WrongPassword {
                keys: tried,
                damaged: damaged_keys,
            }),
        }
    }

    /// What was wrong with the config if it was recovered from a key file when opened.
    pub fn config_damage(&self) -> Option<&str> {
        self.config_damage.as_deref()
    }

    /// Whether the config was read with a checksum (written from 2026-11-24 on).
    pub fn config_has_checksum(&self) -> bool {
        self.config.checksummed
    }

    /// Writes the config again (`repair config`), atomically replacing what is there: a
    /// damaged one as this version writes it, one without a checksum as it is with one added
    /// (its footer and any field this version does not know kept).
    pub fn rewrite_config(&self) -> Result<()> {
        let bytes = match self.config_damage {
            Some(_) => self.config.encode(),
            None => {
                let stored = self.storage.read("config")?;
                match Config::with_checksum(&stored) {
                    Some(bytes) => bytes,
                    None => return Ok(()), // it has one
                }
            }
        };
        self.storage.write("config", bytes)
    }

    pub fn id(&self) -> &RepositoryId {
        &self.config.id
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The id of the key file this repository was opened with.
    pub fn key_id(&self) -> &[u8; 32] {
        &self.key_id
    }

    pub fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    /// A handle on the storage for a background writer thread.
    pub fn shared_storage(&self) -> Arc<dyn Storage> {
        Arc::clone(&self.storage)
    }

    pub fn location(&self) -> &str {
        self.storage.location()
    }

    fn write_content_addressed(&self, kind: FileKind, bytes: Vec<u8>) -> Result<[u8; 32]> {
        let id = *blake3::hash(&bytes).as_bytes();
        self.storage.write(&object_path(kind, &id), bytes)?;
        Ok(id)
    }

    /// Encrypts and stores an index segment or snapshot; returns its id.
    pub fn save_file(&self, kind: FileKind, plaintext: &[u8]) -> Result<[u8; 32]> {
        let sealed = file::seal_file(&self.keys, &self.config.id, kind, plaintext);
        self.write_content_addressed(kind, sealed)
    }

    /// Loads, verifies against its name, and decrypts an index segment or snapshot.
    pub fn load_file(&self, kind: FileKind, id: &[u8; 32]) -> Result<Vec<u8>> {
        let name = to_hex(id);
        let bytes = self.storage.read(&object_path(kind, id))?;
        if blake3::hash(&bytes).as_bytes() != id {
            return Err(Error::corrupt(
                kind.name(),
                &name,
                "content does not match its name",
            ));
        }
        file::open_file(&self.keys, &self.config.id, kind, &name, &bytes)
    }

    /// The ids of all files of a kind; names that are not ids (strays) are ignored.
    pub fn list_ids(&self, kind: FileKind) -> Result<Vec<[u8; 32]>> {
        let mut ids: Vec<[u8; 32]> = self
            .storage
            .list(dir_of(kind), true)?
            .into_iter()
            .filter_map(|o| id_at(kind, &o.path))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Encrypts and stores a file of `kind` under its content hash; returns its storage path.
    pub fn save_named(&self, kind: FileKind, plaintext: &[u8]) -> Result<String> {
        let id = self.save_file(kind, plaintext)?;
        Ok(object_path(kind, &id))
    }

    /// The repository's generation: a counter that `prune` raises before it deletes anything,
    /// so every client knows to rebuild its local index. 0 if never raised.
    pub fn generation(&self) -> Result<u64> {
        let bytes = match self.storage.read(GENERATION_PATH) {
            Ok(bytes) => bytes,
            Err(Error::Storage {
                not_found: true, ..
            }) => return Ok(0),
            Err(e) => return Err(e),
        };
        let plain = file::open_file(
            &self.keys,
            &self.config.id,
            FileKind::Generation,
            GENERATION_PATH,
            &bytes,
        )?;
        plain
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| Error::corrupt("generation", GENERATION_PATH, "malformed"))
    }

    /// Raises the generation by one (atomically replacing the file) and returns it;
    /// `before_write` runs between the read and the write (a lock check, right before the
    /// commit).
    pub fn raise_generation(&self, before_write: impl FnOnce() -> Result<()>) -> Result<u64> {
        let next = self.generation()? + 1;
        before_write()?;
        let sealed = file::seal_file(
            &self.keys,
            &self.config.id,
            FileKind::Generation,
            &next.to_le_bytes(),
        );
        self.storage.write(GENERATION_PATH, sealed)?;
        Ok(next)
    }

    /// Every pack on storage with its size in bytes.
    pub fn stored_packs(&self) -> Result<std::collections::HashMap<PackId, u64>> {
        stored_packs(self.storage.as_ref())
    }

    pub fn read_pack_range(&self, pack: &PackId, range: std::ops::Range<u64>) -> Result<Vec<u8>> {
        self.storage
            .read_range(&object_path(FileKind::Pack, &pack.0), range)
    }

    /// See `Storage::requests_in_flight`.
    pub fn requests_in_flight(&self) -> usize {
        self.storage.requests_in_flight()
    }

    pub fn read_pack(&self, pack: &PackId) -> Result<Vec<u8>> {
        self.storage.read(&object_path(FileKind::Pack, &pack.0))
    }
}

/// A repository in memory with a fast key derivation, for unit tests.
#[cfg(test)]
pub fn memory_repository() -> Repository {
    let storage = crate::storage::OpendalStorage::memory().expect("memory storage");
    repository_on(Box::new(storage))
}

/// A new repository on `storage` with a fast key derivation, for unit tests.
#[cfg(test)]
pub fn repository_on(storage: Box<dyn Storage>) -> Repository {
    let fast = KdfParams::FAST;
    Repository::init(storage, b"pw", fast).expect("repository")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::keyfile::KeyFile;

    /// Regression: names in another spelling or folder were listed as stored files, which
    /// could then be neither read nor deleted by id.
    #[test]
    fn only_files_where_their_id_puts_them_are_listed() {
        let repo = memory_repository();
        let id = [0xab; 32];
        let hex = to_hex(&id);
        for path in [
            format!("packs/00/{hex}"),
            format!("packs/ab/{}", hex.to_uppercase()),
            format!("packs/{hex}"),
            format!("snapshots/x/{hex}"),
        ] {
            repo.storage().write(&path, b"stray".to_vec()).unwrap();
        }
        assert!(repo.stored_packs().unwrap().is_empty());
        assert!(repo.list_ids(FileKind::Snapshot).unwrap().is_empty());
        repo.storage()
            .write(&object_path(FileKind::Pack, &id), b"pack".to_vec())
            .unwrap();
        assert_eq!(repo.list_ids(FileKind::Pack).unwrap(), vec![id]);
        assert_eq!(repo.stored_packs().unwrap()[&PackId(id)], 4);
    }

    /// Regression: a damaged key file was counted as a key the password did not open, so a
    /// repository whose only key was damaged reported "wrong password"; a key file with
    /// impossible derivation settings stopped the open before the other keys were tried.
    #[test]
    fn damaged_key_files_are_damage_not_a_wrong_password() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        let storage = || Box::new(crate::storage::OpendalStorage::local(root).unwrap());
        let fast = KdfParams::FAST;
        Repository::init(storage(), b"pw", fast).unwrap();
        let open = |pw: &'static [u8]| Repository::open(storage(), || Ok(pw.to_vec()));
        let keys = dir.path().join("keys");
        let good = std::fs::read_dir(&keys)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut bytes = std::fs::read(&good).unwrap();
        // A second key file whose settings cannot be used (memory 0), named after its bytes.
        let zero_memory = KeyFile::decode("k", &bytes).map(|mut k| {
            k.params.memory_kib = 0;
            k.encode()
        });
        let zero_memory = zero_memory.unwrap();
        let name = to_hex(blake3::hash(&zero_memory).as_bytes());
        std::fs::write(keys.join(name), &zero_memory).unwrap();
        assert!(open(b"pw").is_ok());
        let err = open(b"not it").err().unwrap();
        assert!(
            matches!(
                err,
                Error::WrongPassword {
                    keys: 1,
                    damaged: 1
                }
            ),
            "{err}"
        );
        bytes[3] ^= 1;
        std::fs::write(&good, &bytes).unwrap();
        let err = open(b"pw").err().unwrap();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }
}
