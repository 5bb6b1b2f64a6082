//! The repository config: the one file readable without a password. It says "this is a cairn
//! repository of format version N" and carries the repository id, which every encrypted file
//! binds into its associated data.
//!
//! Layout: fields (see `codec`) `1: repository id (32 bytes)`, `2: created, ns since the Unix
//! epoch (signed)`, then the footer with kind `CONF`.

use super::file::{self, FileKind};
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
        out.extend_from_slice(&file::footer(FileKind::Config));
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
        })
    }
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
    }
}
