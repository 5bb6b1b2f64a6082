//! The repository config: the one file readable without a password. It says "this is a cairn
//! repository of format version N" and carries the repository id, which every encrypted file
//! binds into its associated data.
//!
//! Layout: fields (see `codec`) `1: repository id (32 bytes)`, `2: created, ns since the Unix
//! epoch (signed)`, `127: checksum` (from 2026-11-24: the BLAKE3 of every byte before it and of
//! the footer, so that damage anywhere, the footer's version included, is told from a newer
//! format), then the footer with kind `CONF`.

use super::file::{self, FOOTER_LEN, FileKind};
use crate::codec::{self, FieldWriter};
use crate::error::{Error, Result};
use crate::ids::RepositoryId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub id: RepositoryId,
    pub created_ns: i64,
    pub version: u32,
}

impl Config {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = FieldWriter::new();
        w.bytes(1, &self.id.0).int(2, self.created_ns);
        let mut out = w.finish();
        let footer = file::footer(FileKind::Config);
        let sum = checksum(&out, &footer);
        let mut w = FieldWriter::new();
        w.bytes(CHECKSUM_TAG, &sum);
        out.extend_from_slice(&w.finish());
        out.extend_from_slice(&footer);
        out
    }

    /// Whether a config's bytes hold a checksum, and whether it matches. Read before the
    /// footer is trusted: a version that only damage made newer is damage.
    pub fn checksum_state(bytes: &[u8]) -> Checksum {
        let Some(field_at) = bytes.len().checked_sub(FOOTER_LEN + CHECKSUM_FIELD_LEN) else {
            return Checksum::Absent;
        };
        let (before, rest) = bytes.split_at(field_at);
        let (field, footer) = rest.split_at(CHECKSUM_FIELD_LEN);
        if field[..2] != [CHECKSUM_TAG as u8, 32] {
            return Checksum::Absent;
        }
        match field[2..] == checksum(before, footer) {
            true => Checksum::Matches,
            false => Checksum::Differs,
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (body, version) = file::split_footer(FileKind::Config, "config", bytes)?;
        let bad = |why: &str| Error::corrupt("config", "config", why);
        let mut id = None;
        let mut created_ns = 0;
        for f in codec::fields(body).ok_or_else(|| bad("malformed fields"))? {
            match f.tag {
                1 => id = f.id().map(RepositoryId),
                2 => created_ns = f.int().ok_or_else(|| bad("bad creation time"))?,
                _ => {}
            }
        }
        Ok(Config {
            id: id.ok_or_else(|| bad("no repository id"))?,
            created_ns,
            version,
        })
    }
}

/// The last field of a config written from 2026-11-24 on.
const CHECKSUM_TAG: u64 = 127;
/// Tag, length (one byte each) and 32 bytes.
const CHECKSUM_FIELD_LEN: usize = 34;

/// What a config's checksum says.
#[derive(Debug, PartialEq, Eq)]
pub enum Checksum {
    /// Written before configs had one.
    Absent,
    Matches,
    Differs,
}

fn checksum(fields: &[u8], footer: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(fields).update(footer);
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trip() {
        let c = Config {
            id: RepositoryId([3; 32]),
            created_ns: 1_700_000_000_000_000_000,
            version: file::FORMAT_VERSION,
        };
        assert_eq!(Config::decode(&c.encode()).unwrap(), c);
        assert_eq!(Config::checksum_state(&c.encode()), Checksum::Matches);
    }

    /// Every flipped bit is seen, in the footer's version too; a config from before the
    /// checksum has none.
    #[test]
    fn the_checksum_sees_every_flipped_bit() {
        let c = Config {
            id: RepositoryId([3; 32]),
            created_ns: 1,
            version: file::FORMAT_VERSION,
        };
        let bytes = c.encode();
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            let state = Config::checksum_state(&damaged);
            // A flip in the checksum field's tag or length makes it look absent.
            let field_at = bytes.len() - FOOTER_LEN - CHECKSUM_FIELD_LEN;
            if (field_at..field_at + 2).contains(&(bit / 8)) {
                assert_eq!(state, Checksum::Absent, "bit {bit}");
            } else {
                assert_eq!(state, Checksum::Differs, "bit {bit}");
            }
        }
        let mut w = FieldWriter::new();
        w.bytes(1, &c.id.0).int(2, c.created_ns);
        let mut old = w.finish();
        old.extend_from_slice(&file::footer(FileKind::Config));
        assert_eq!(Config::checksum_state(&old), Checksum::Absent);
        assert_eq!(Config::decode(&old).unwrap(), c);
    }
}
