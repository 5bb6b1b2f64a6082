//! Key files: the master key wrapped under one password. A repository has one key file per
//! password; any of them opens it.
//!
//! Layout: fields `1: kdf name ("argon2id")`, `2: memory KiB`, `3: iterations`,
//! `4: parallelism`, `5: salt (16 bytes)`, `6: wrapped master key (sealed, 72 bytes)`,
//! `7: created ns`, `8: hostname`, `9: username`, `10: repository id` (from 2026-11-24; what
//! recovers a damaged or lost config); then the footer with kind `KEY_`. The wrapping
//! key is Argon2id(password, salt) with the stored parameters; the associated data of the
//! wrapped key is `"cairn-key" | repository id`.

use super::file::{self, FileKind};
use crate::codec::{self, FieldWriter};
use crate::crypto::{self, Keys};
use crate::error::{Error, Result};
use crate::ids::RepositoryId;

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl KdfParams {
    /// Cheap settings for tests, where key derivation is not what is tested.
    #[cfg(test)]
    pub const FAST: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 2,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFile {
    pub params: KdfParams,
    pub salt: Vec<u8>,
    pub wrapped: Vec<u8>,
    pub created_ns: i64,
    pub hostname: String,
    pub username: String,
    /// The repository it was made for; key files written before this field lack it.
    pub repository: Option<RepositoryId>,
}

fn wrapping_key(password: &[u8], salt: &[u8], p: KdfParams) -> Result<[u8; 32]> {
    let params = argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, Some(32))
        .map_err(|e| Error::corrupt("key", "params", e))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    let hashed = match ArgonMemory::new(argon.params().block_count()) {
        Some(mut memory) => {
            argon.hash_password_into_with_memory(password, salt, &mut out, memory.blocks())
        }
        None => argon.hash_password_into(password, salt, &mut out),
    };
    hashed.map_err(|e| Error::corrupt("key", "argon2", e))?;
    Ok(out)
}

/// Argon2's working memory (64 MiB by default) in an anonymous mapping that the kernel may
/// back with huge pages: a few dozen page faults instead of 16,384 (about 20 ms of system
/// time on every command that opens the repository).
struct ArgonMemory {
    map: memmap2::MmapMut,
    blocks: usize,
}

impl ArgonMemory {
    /// None if the mapping cannot be made; the caller then lets argon2 allocate.
    fn new(blocks: usize) -> Option<Self> {
        let map = memmap2::MmapMut::map_anon(blocks.checked_mul(argon2::Block::SIZE)?).ok()?;
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        Some(ArgonMemory { map, blocks })
    }

    fn blocks(&mut self) -> &mut [argon2::Block] {
        let start = self.map.as_mut_ptr().cast::<argon2::Block>();
        // SAFETY: the mapping is page-aligned (more than a Block's 64-byte alignment), holds
        // `blocks` Blocks' bytes, is zero-filled (a Block is plain u64s, all-zero valid) and
        // is borrowed mutably for the slice's lifetime.
        unsafe { std::slice::from_raw_parts_mut(start, self.blocks) }
    }
}

fn wrap_ad(repo: &RepositoryId) -> Vec<u8> {
    [&b"cairn-key"[..], &repo.0].concat()
}

impl KeyFile {
    pub fn create(
        keys: &Keys,
        repo: &RepositoryId,
        password: &[u8],
        params: KdfParams,
        created_ns: i64,
        hostname: String,
        username: String,
    ) -> Result<Self> {
        let salt = crypto::random_bytes::<16>().to_vec();
        let kek = wrapping_key(password, &salt, params)?;
        let wrapped = crypto::seal_with_key(&kek, &wrap_ad(repo), keys.master());
        Ok(KeyFile {
            params,
            salt,
            wrapped,
            created_ns,
            hostname,
            username,
            repository: Some(*repo),
        })
    }

    /// Returns the keys if `password` opens this key file, `None` if it does not.
    pub fn unwrap_keys(&self, repo: &RepositoryId, password: &[u8]) -> Result<Option<Keys>> {
        let kek = wrapping_key(password, &self.salt, self.params)?;
        Ok(crypto::open_with_key(&kek, &wrap_ad(repo), &self.wrapped)
            .and_then(|m| <[u8; 32]>::try_from(m.as_slice()).ok())
            .map(Keys::from_master))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = FieldWriter::new();
        w.bytes(1, b"argon2id")
            .uint(2, self.params.memory_kib.into())
            .uint(3, self.params.iterations.into())
            .uint(4, self.params.parallelism.into())
            .bytes(5, &self.salt)
            .bytes(6, &self.wrapped)
            .int(7, self.created_ns)
            .bytes(8, self.hostname.as_bytes())
            .bytes(9, self.username.as_bytes());
        if let Some(repo) = &self.repository {
            w.bytes(10, &repo.0);
        }
        let mut out = w.finish();
        out.extend_from_slice(&file::footer(FileKind::Key));
        out
    }

    pub fn decode(name: &str, bytes: &[u8]) -> Result<Self> {
        let (body, _) = file::split_footer(FileKind::Key, name, bytes)?;
        let bad = |why: &str| Error::corrupt("key", name, why);
        let mut k = KeyFile {
            params: KdfParams {
                memory_kib: 0,
                iterations: 0,
                parallelism: 0,
            },
            salt: Vec::new(),
            wrapped: Vec::new(),
            created_ns: 0,
            hostname: String::new(),
            username: String::new(),
            repository: None,
        };
        let small = |v: Option<u64>| v.and_then(|n| u32::try_from(n).ok());
        for f in codec::fields(body).ok_or_else(|| bad("malformed fields"))? {
            match f.tag {
                1 if f.value != b"argon2id" => return Err(bad("unknown key derivation")),
                2 => k.params.memory_kib = small(f.uint()).ok_or_else(|| bad("memory"))?,
                3 => k.params.iterations = small(f.uint()).ok_or_else(|| bad("iterations"))?,
                4 => k.params.parallelism = small(f.uint()).ok_or_else(|| bad("parallelism"))?,
                5 => k.salt = f.value.to_vec(),
                6 => k.wrapped = f.value.to_vec(),
                7 => k.created_ns = f.int().unwrap_or(0),
                8 => k.hostname = String::from_utf8_lossy(f.value).into_owned(),
                9 => k.username = String::from_utf8_lossy(f.value).into_owned(),
                10 => k.repository = Some(RepositoryId(f.id().ok_or_else(|| bad("repository"))?)),
                _ => {}
            }
        }
        // Refuse parameters that would make opening the key a denial of service.
        if k.params.memory_kib > 4 * 1024 * 1024 || k.params.iterations > 100 || k.salt.len() < 8 {
            return Err(bad("implausible key derivation parameters"));
        }
        Ok(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams::FAST;

    #[test]
    fn wrap_unwrap_and_wrong_password() {
        let keys = Keys::generate();
        let repo = RepositoryId([1; 32]);
        let kf = KeyFile::create(&keys, &repo, b"pw", FAST, 5, "h".into(), "u".into()).unwrap();
        let decoded = KeyFile::decode("k", &kf.encode()).unwrap();
        assert_eq!(decoded, kf);
        assert_eq!(decoded.repository, Some(repo));
        // Key files from before the field: without it, and otherwise the same.
        let old = KeyFile {
            repository: None,
            ..kf.clone()
        };
        assert_eq!(KeyFile::decode("k", &old.encode()).unwrap(), old);
        let opened = decoded.unwrap_keys(&repo, b"pw").unwrap().unwrap();
        assert_eq!(opened.master(), keys.master());
        assert!(decoded.unwrap_keys(&repo, b"wrong").unwrap().is_none());
        assert!(
            decoded
                .unwrap_keys(&RepositoryId([2; 32]), b"pw")
                .unwrap()
                .is_none()
        );
    }

    /// The key derived in our own mapping is the one argon2 derives in memory it allocates.
    #[test]
    fn argon_memory_derives_the_same_key() {
        let p = KdfParams {
            memory_kib: 4096,
            iterations: 2,
            parallelism: 2,
        };
        let params = argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, Some(32));
        let argon = argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            params.unwrap(),
        );
        let mut expected = [0u8; 32];
        argon
            .hash_password_into(b"pw", b"saltsaltsalt", &mut expected)
            .unwrap();
        assert!(
            ArgonMemory::new(4096).is_some(),
            "the mapping is what is tested"
        );
        let derived = wrapping_key(b"pw", b"saltsaltsalt", p).unwrap();
        assert_eq!(derived, expected);
        assert_ne!(wrapping_key(b"pw2", b"saltsaltsalt", p).unwrap(), expected);
    }
}
