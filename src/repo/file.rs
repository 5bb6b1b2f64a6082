//! The envelope every repository file shares: a 16-byte footer with kind, format version and
//! magic, and — for everything but the config — an encrypted, compressed body.
//!
//! Footer: `kind: 4 ASCII bytes | version: u32 LE | magic: "CAIRNREP"`.
//! Encrypted body: `sealed(flags: u8 | raw_len: u64 LE | payload)`, where flags bit 0 means the
//! payload is zstd-compressed, and the associated data is
//! `"cairn-file" | kind | version u32 LE | repository id`. Decompression is capped at `raw_len`,
//! which is itself capped at `MAX_FILE_PLAINTEXT`.

use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::ids::RepositoryId;

pub const FORMAT_VERSION: u32 = 1;
pub const MAGIC: &[u8; 8] = b"CAIRNREP";
pub const FOOTER_LEN: usize = 16;
/// No index segment or snapshot may claim a larger plaintext than this.
pub const MAX_FILE_PLAINTEXT: u64 = 1 << 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Config,
    Key,
    Pack,
    Index,
    Snapshot,
    Lock,
    Generation,
    /// The snapshots one `forget` removes, written before it deletes any of them.
    Removal,
}

impl FileKind {
    pub fn code(self) -> &'static [u8; 4] {
        match self {
            FileKind::Config => b"CONF",
            FileKind::Key => b"KEY_",
            FileKind::Pack => b"PACK",
            FileKind::Index => b"INDX",
            FileKind::Snapshot => b"SNAP",
            FileKind::Lock => b"LOCK",
            FileKind::Generation => b"GENR",
            FileKind::Removal => b"RMVL",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FileKind::Config => "config",
            FileKind::Key => "key",
            FileKind::Pack => "pack",
            FileKind::Index => "index segment",
            FileKind::Snapshot => "snapshot",
            FileKind::Lock => "lock",
            FileKind::Generation => "generation",
            FileKind::Removal => "removal record",
        }
    }
}

pub fn footer(kind: FileKind) -> [u8; FOOTER_LEN] {
    let mut f = [0u8; FOOTER_LEN];
    f[..4].copy_from_slice(kind.code());
    f[4..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    f[8..].copy_from_slice(MAGIC);
    f
}

/// Checks the footer and returns the body before it and the file's format version.
pub fn split_footer<'a>(kind: FileKind, name: &str, bytes: &'a [u8]) -> Result<(&'a [u8], u32)> {
    if bytes.len() < FOOTER_LEN {
        return Err(Error::corrupt(kind.name(), name, "shorter than its footer"));
    }
    let (body, f) = bytes.split_at(bytes.len() - FOOTER_LEN);
    if &f[8..] != MAGIC {
        return Err(Error::corrupt(kind.name(), name, "footer magic is wrong"));
    }
    if &f[..4] != kind.code() {
        return Err(Error::corrupt(
            kind.name(),
            name,
            "footer names another kind of file",
        ));
    }
    let version = u32::from_le_bytes([f[4], f[5], f[6], f[7]]);
    if version > FORMAT_VERSION {
        return Err(Error::NewerFormat {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if version == 0 {
        return Err(Error::corrupt(kind.name(), name, "format version 0"));
    }
    Ok((body, version))
}

fn associated_data(kind: FileKind, version: u32, repo: &RepositoryId) -> Vec<u8> {
    let mut ad = Vec::with_capacity(50);
    ad.extend_from_slice(b"cairn-file");
    ad.extend_from_slice(kind.code());
    ad.extend_from_slice(&version.to_le_bytes());
    ad.extend_from_slice(&repo.0);
    ad
}

/// Compresses, encrypts and adds the footer.
pub fn seal_file(keys: &Keys, repo: &RepositoryId, kind: FileKind, plaintext: &[u8]) -> Vec<u8> {
    let compressed = crate::compress::compress_if_smaller(plaintext, 3);
    let mut inner = Vec::with_capacity(plaintext.len() + 9);
    match compressed {
        Some(c) => {
            inner.push(1);
            inner.extend_from_slice(&(plaintext.len() as u64).to_le_bytes());
            inner.extend_from_slice(&c);
        }
        _ => {
            inner.push(0);
            inner.extend_from_slice(&(plaintext.len() as u64).to_le_bytes());
            inner.extend_from_slice(plaintext);
        }
    }
    let mut out = keys.seal(&associated_data(kind, FORMAT_VERSION, repo), &inner);
    out.extend_from_slice(&footer(kind));
    out
}

/// Checks the footer, authenticates, decrypts and decompresses. `name` is for messages.
pub fn open_file(
    keys: &Keys,
    repo: &RepositoryId,
    kind: FileKind,
    name: &str,
    bytes: &[u8],
) -> Result<Vec<u8>> {
    let (body, version) = split_footer(kind, name, bytes)?;
    let inner = keys
        .open(&associated_data(kind, version, repo), body)
        .ok_or_else(|| Error::corrupt(kind.name(), name, "fails authentication"))?;
    if inner.len() < 9 {
        return Err(Error::corrupt(kind.name(), name, "body too short"));
    }
    let flags = inner[0];
    let raw_len = u64::from_le_bytes(inner[1..9].try_into().expect("8 bytes"));
    if raw_len > MAX_FILE_PLAINTEXT {
        return Err(Error::corrupt(
            kind.name(),
            name,
            "claims an oversized body",
        ));
    }
    let payload = &inner[9..];
    let plain = match flags {
        0 => payload.to_vec(),
        1 => crate::compress::decompress(payload, raw_len as usize)
            .map_err(|e| Error::corrupt(kind.name(), name, format!("zstd: {e}")))?,
        _ => return Err(Error::corrupt(kind.name(), name, "unknown flags")),
    };
    if plain.len() as u64 != raw_len {
        return Err(Error::corrupt(
            kind.name(),
            name,
            "length differs from the recorded one",
        ));
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_files_round_trip_and_are_bound_to_kind_and_repo() {
        let keys = Keys::generate();
        let repo = RepositoryId([7; 32]);
        let data = b"snapshot body ".repeat(100);
        let sealed = seal_file(&keys, &repo, FileKind::Snapshot, &data);
        assert_eq!(
            open_file(&keys, &repo, FileKind::Snapshot, "s", &sealed).unwrap(),
            data
        );
        assert!(open_file(&keys, &repo, FileKind::Index, "s", &sealed).is_err());
        assert!(
            open_file(
                &keys,
                &RepositoryId([8; 32]),
                FileKind::Snapshot,
                "s",
                &sealed
            )
            .is_err()
        );
        let mut newer = sealed.clone();
        let n = newer.len();
        newer[n - 12] = 9;
        assert!(matches!(
            open_file(&keys, &repo, FileKind::Snapshot, "s", &newer),
            Err(Error::NewerFormat { found: 9, .. })
        ));
    }
}
