//! Typed 32-byte identifiers for everything the repository names.
//!
//! Guarantees: an id is exactly 32 bytes; its text form is 64 lowercase hex digits; ids of
//! different object types are different Rust types, so a `PackId` can never be used where a
//! `BlobId` is meant.

use std::fmt;

/// Parses 64 lowercase hex digits into 32 bytes (the one text form of an id, so that a name
/// parsed from storage is the name the id is stored under).
pub fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? * 16 + digit(pair[1])?;
    }
    Some(out)
}

/// Lowercase hex of any byte string.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Hashes an id by its first eight bytes. Ids are uniformly random (BLAKE3 outputs), so this
/// spreads as well as SipHash at a fraction of the cost; maps keyed by ids use it.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Ids hash as one 32-byte write; anything else still hashes deterministically.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
            if bytes.len() == 32 {
                return;
            }
        }
    }
}

pub type BuildIdHasher = std::hash::BuildHasherDefault<IdHasher>;
/// A hash map keyed by ids.
pub type IdMap<K, V> = std::collections::HashMap<K, V, BuildIdHasher>;
/// A hash set of ids.
pub type IdSet<K> = std::collections::HashSet<K, BuildIdHasher>;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Full 64-digit hex form.
            pub fn to_hex(&self) -> String {
                to_hex(&self.0)
            }
            /// The first 8 hex digits, for display.
            pub fn short(&self) -> String {
                to_hex(&self.0[..4])
            }
            /// Parses the full 64-digit hex form.
            pub fn from_hex(text: &str) -> Option<Self> {
                parse_hex32(text).map(Self)
            }
            /// Reads an id from a slice that must be exactly 32 bytes long.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                <[u8; 32]>::try_from(bytes).ok().map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }
    };
}

id_type!(
    /// Keyed BLAKE3 of a blob's plaintext (file chunk or encoded tree).
    BlobId
);
id_type!(
    /// BLAKE3 of a pack file's bytes.
    PackId
);
id_type!(
    /// BLAKE3 of an index segment file's bytes.
    IndexId
);
id_type!(
    /// BLAKE3 of a snapshot file's bytes.
    SnapshotId
);
id_type!(
    /// BLAKE3 of a key file's bytes.
    KeyId
);
id_type!(
    /// Random identity of a repository, chosen at `init`.
    RepositoryId
);

/// A tree is stored as a blob; its id is that blob's id.
pub type TreeId = BlobId;

/// The two kinds of blob. Data and tree blobs never share a pack.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum BlobType {
    Data,
    Tree,
}

impl BlobType {
    pub fn code(self) -> u8 {
        match self {
            BlobType::Data => 0,
            BlobType::Tree => 1,
        }
    }
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            BlobType::Data => "data",
            BlobType::Tree => "tree",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = BlobId([0xab; 32]);
        assert_eq!(BlobId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(id.short(), "abababab");
        assert!(BlobId::from_hex("zz").is_none());
        assert!(BlobId::from_hex(&"g".repeat(64)).is_none());
        // Regression: uppercase names were listed as ids, but read and deleted under the
        // lowercase name, so prune could never remove them.
        assert!(BlobId::from_hex(&id.to_hex().to_uppercase()).is_none());
    }
}
