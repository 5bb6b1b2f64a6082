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
    /// Whether it was read with a checksum that matches (one written by `encode` has one).
    pub checksummed: bool,
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
            checksummed: Self::checksum_state(bytes) == Checksum::Matches,
        })
    }

    /// A config written before the checksum, as it is (its fields, unknown ones included, and
    /// its footer) with the checksum field added; None if it has one.
    pub fn with_checksum(bytes: &[u8]) -> Option<Vec<u8>> {
        if Self::checksum_state(bytes) != Checksum::Absent || bytes.len() < FOOTER_LEN {
            return None;
        }
        let (body, footer) = bytes.split_at(bytes.len() - FOOTER_LEN);
        let mut w = FieldWriter::new();
        w.bytes(CHECKSUM_TAG, &checksum(body, footer));
        Some([body, &w.finish(), footer].concat())
    }

    /// Whether a config's bytes hold a checksum, and whether it matches. Read before the
    /// footer is trusted: a version that only damage made newer is damage. The checksum is
    /// the last of the fields parsed from the start, so an older config's bytes are never
    /// taken for one.
    pub fn checksum_state(bytes: &[u8]) -> Checksum {
        let Some(body_len) = bytes.len().checked_sub(FOOTER_LEN) else {
            return Checksum::Absent;
        };
        let (body, footer) = bytes.split_at(body_len);
        let last = codec::fields(body).and_then(|f| f.last().map(|f| (f.tag, f.value.len())));
        if last != Some((CHECKSUM_TAG, 32)) || body.len() < CHECKSUM_FIELD_LEN {
            return Checksum::Absent;
        }
        let (before, field) = body.split_at(body.len() - CHECKSUM_FIELD_LEN);
        if field[..2] != [CHECKSUM_TAG as u8, 32] {
            return Checksum::Absent; // not as we write it
        }
        match field[2..] == checksum(before, footer) {
            true => Checksum::Matches,
            false => Checksum::Differs,
        }
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
            checksummed: true,
        };
        assert_eq!(Config::decode(&c.encode()).unwrap(), c);
        assert_eq!(Config::checksum_state(&c.encode()), Checksum::Matches);
    }

    /// A flipped bit anywhere is damage (the checksum differs, or the fields no longer
    /// parse), or leaves the config as it was (a flip in the checksum field's own tag or
    /// length): never a newer version nor another id. A config from before the checksum has
    /// none, even when its id holds the checksum field's first two bytes.
    #[test]
    fn the_checksum_sees_every_flipped_bit() {
        let c = Config {
            id: RepositoryId([3; 32]),
            created_ns: 1_700_000_000_000_000_000,
            version: file::FORMAT_VERSION,
            checksummed: true,
        };
        let bytes = c.encode();
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            let seen = match Config::checksum_state(&damaged) {
                Checksum::Differs => true,
                Checksum::Matches => false,
                Checksum::Absent => match Config::decode(&damaged) {
                    // As it was, but for its checksum.
                    Ok(d) => {
                        Config {
                            checksummed: true,
                            ..d
                        } == c
                    }
                    Err(e) => !matches!(e, Error::NewerFormat { .. }),
                },
            };
            assert!(seen, "bit {bit}");
        }
        let mut id = [3; 32];
        id[9..11].copy_from_slice(&[CHECKSUM_TAG as u8, 32]);
        let c = Config {
            id: RepositoryId(id),
            checksummed: false,
            ..c
        };
        let mut w = FieldWriter::new();
        w.bytes(1, &c.id.0).int(2, c.created_ns);
        let mut old = w.finish();
        old.extend_from_slice(&file::footer(FileKind::Config));
        assert_eq!(
            old.len() - FOOTER_LEN - CHECKSUM_FIELD_LEN,
            11,
            "the test's premise"
        );
        assert_eq!(Config::checksum_state(&old), Checksum::Absent);
        assert_eq!(Config::decode(&old).unwrap(), c);
        // Given one, it is the config `encode` writes, and keeps what it did not know.
        let with = Config::with_checksum(&old).unwrap();
        let checksummed = Config {
            checksummed: true,
            ..c.clone()
        };
        assert_eq!(with, checksummed.encode());
        let mut unknown = FieldWriter::new();
        unknown
            .bytes(1, &c.id.0)
            .int(2, c.created_ns)
            .bytes(50, b"new");
        let newer = [unknown.finish(), file::footer(FileKind::Config).to_vec()].concat();
        let with = Config::with_checksum(&newer).unwrap();
        assert_eq!(
            &with[..newer.len() - FOOTER_LEN],
            &newer[..newer.len() - FOOTER_LEN]
        );
        assert_eq!(Config::checksum_state(&with), Checksum::Matches);
        assert!(Config::with_checksum(&with).is_none());
    }
}
