//! Packfiles: many encrypted blobs in one storage object, with an encrypted header listing them.
//!
//! Layout: `blob_0 | … | blob_n-1 | sealed header | header_len: u32 LE | footer (kind PACK)`.
//! Each blob is `sealed(payload)` where the payload is the blob's bytes, zstd-compressed when
//! that makes them smaller; its associated data is
//! `"cairn-blob" | repository id | type u8 | compression u8 | blob id`, so a blob cannot be
//! passed off as another blob, type or repository's. The header plaintext is
//! `count: u32 LE | count × entry` (see `BlobEntry::encode`), sealed with associated data
//! `"cairn-pack-header" | version u32 LE | repository id`. The pack is named by the BLAKE3 of all
//! its bytes.
//!
//! Guarantees: a blob read back is decrypted, decompressed to no more than its recorded length,
//! and checked against its id before anyone sees it.

use crate::crypto::{Keys, SEAL_OVERHEAD};
use crate::error::{Error, Result};
use crate::ids::{BlobId, BlobType, PackId, RepositoryId};
use crate::repo::Repository;
use crate::repo::file::{self, FORMAT_VERSION, FileKind};

/// Packs are closed once they reach this size.
pub const PACK_TARGET_SIZE: usize = 16 * 1024 * 1024;
/// The trailer after the sealed header: its length (u32) and the footer.
pub const TRAILER_LEN: usize = 4 + file::FOOTER_LEN;
/// No blob's plaintext may claim more than this.
pub const MAX_BLOB_LEN: u32 = 1 << 30;

pub const COMPRESSION_NONE: u8 = 0;
pub const COMPRESSION_ZSTD: u8 = 1;

/// Where one blob sits in a pack, as listed by the pack header and by index segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobEntry {
    pub id: BlobId,
    pub blob_type: BlobType,
    pub compression: u8,
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
}

impl BlobEntry {
    /// `type u8 | compression u8 | id 32 | offset u64 LE | stored_len u32 LE | raw_len u32 LE`.
    pub const ENCODED_LEN: usize = 50;

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.blob_type.code());
        out.push(self.compression);
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.stored_len.to_le_bytes());
        out.extend_from_slice(&self.raw_len.to_le_bytes());
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != Self::ENCODED_LEN {
            return None;
        }
        let entry = BlobEntry {
            blob_type: BlobType::from_code(b[0])?,
            compression: b[1],
            id: BlobId::from_slice(&b[2..34])?,
            offset: u64::from_le_bytes(b[34..42].try_into().ok()?),
            stored_len: u32::from_le_bytes(b[42..46].try_into().ok()?),
            raw_len: u32::from_le_bytes(b[46..50].try_into().ok()?),
        };
        let plausible = entry.compression <= COMPRESSION_ZSTD
            && entry.raw_len <= MAX_BLOB_LEN
            && entry.stored_len as usize >= SEAL_OVERHEAD
            && entry.offset.checked_add(entry.stored_len.into()).is_some();
        plausible.then_some(entry)
    }

    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.stored_len)
    }
}

/// The entries sorted by offset (then id), for comparing two listings of one pack.
pub fn by_offset(entries: &[BlobEntry]) -> Vec<BlobEntry> {
    let mut v = entries.to_vec();
    v.sort_by_key(|e| (e.offset, e.id));
    v
}

pub fn encode_entries(entries: &[BlobEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + entries.len() * BlobEntry::ENCODED_LEN);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        e.encode(&mut out);
    }
    out
}

/// Decodes `count | entries` from the front of `input`; returns the entries and the rest.
pub fn decode_entries(input: &[u8]) -> Option<(Vec<BlobEntry>, &[u8])> {
    let count = u32::from_le_bytes(input.get(..4)?.try_into().ok()?) as usize;
    let bytes = count.checked_mul(BlobEntry::ENCODED_LEN)?;
    let body = input.get(4..4 + bytes)?;
    let entries = body
        .chunks_exact(BlobEntry::ENCODED_LEN)
        .map(BlobEntry::decode)
        .collect::<Option<Vec<_>>>()?;
    Some((entries, &input[4 + bytes..]))
}

fn blob_ad(repo: &RepositoryId, t: BlobType, compression: u8, id: &BlobId) -> Vec<u8> {
    let mut ad = Vec::with_capacity(76);
    ad.extend_from_slice(b"cairn-blob");
    ad.extend_from_slice(&repo.0);
    ad.push(t.code());
    ad.push(compression);
    ad.extend_from_slice(&id.0);
    ad
}

fn header_ad(version: u32, repo: &RepositoryId) -> Vec<u8> {
    [&b"cairn-pack-header"[..], &version.to_le_bytes(), &repo.0].concat()
}

/// A blob ready to be appended to a pack: compressed (or not) and encrypted.
pub struct SealedBlob {
    pub id: BlobId,
    pub blob_type: BlobType,
    pub compression: u8,
    pub raw_len: u32,
    pub bytes: Vec<u8>,
}

/// Refuses a blob too large for the format (`raw_len` is read back only up to
/// `MAX_BLOB_LEN`). Only a tree can be: it lists 32 bytes per chunk of each file in it.
pub fn check_blob_len(blob_type: BlobType, len: usize) -> Result<()> {
    if len > MAX_BLOB_LEN as usize {
        return Err(Error::BlobTooLarge { blob_type, len });
    }
    Ok(())
}

/// Compresses (when that helps) and encrypts one blob (`check_blob_len` first). Pure: safe
/// to run on any thread.
pub fn seal_blob(
    keys: &Keys,
    repo: &RepositoryId,
    blob_type: BlobType,
    id: BlobId,
    data: &[u8],
    zstd_level: i32,
) -> SealedBlob {
    let compressed = crate::compress::compress_if_smaller(data, zstd_level);
    let (compression, payload) = match &compressed {
        Some(c) => (COMPRESSION_ZSTD, c.as_slice()),
        None => (COMPRESSION_NONE, data),
    };
    SealedBlob {
        id,
        blob_type,
        compression,
        raw_len: data.len() as u32,
        bytes: keys.seal(&blob_ad(repo, blob_type, compression, &id), payload),
    }
}

/// Decrypts, decompresses and verifies one blob read from `pack` at `entry`.
pub fn open_blob(
    keys: &Keys,
    repo: &RepositoryId,
    pack: &PackId,
    entry: &BlobEntry,
    sealed: &[u8],
) -> Result<Vec<u8>> {
    // Allocated for the caller (not through this thread's buffers, which would keep the
    // size of the largest tree ever opened for the thread's life).
    let ad = blob_ad(repo, entry.blob_type, entry.compression, &entry.id);
    let payload = keys
        .open(&ad, sealed)
        .ok_or_else(|| blob_failure(pack, entry, "fails authentication"))?;
    let mut plain = Vec::new();
    verified(keys, pack, entry, &payload, &mut plain)?;
    Ok(match entry.compression {
        COMPRESSION_NONE => payload,
        _ => plain,
    })
}

thread_local! {
    /// Per-thread buffers for opening blobs: the sealed copy and the plaintext.
    static VERIFY_BUFFERS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Decrypts a copy of `sealed` in this thread's buffer and hands the payload (and the
/// plaintext buffer) to `then`; no allocation per blob.
fn with_payload<T>(
    keys: &Keys,
    repo: &RepositoryId,
    pack: &PackId,
    entry: &BlobEntry,
    sealed: &[u8],
    then: impl FnOnce(&[u8], &mut Vec<u8>) -> Result<T>,
) -> Result<T> {
    VERIFY_BUFFERS.with(|cell| {
        let (copy, plain) = &mut *cell.borrow_mut();
        copy.clear();
        copy.extend_from_slice(sealed);
        let payload = open_payload(keys, repo, pack, entry, copy)?;
        then(payload, plain)
    })
}

/// Authenticates and decrypts `sealed` where it is; returns the payload part of it.
fn open_payload<'s>(
    keys: &Keys,
    repo: &RepositoryId,
    pack: &PackId,
    entry: &BlobEntry,
    sealed: &'s mut [u8],
) -> Result<&'s [u8]> {
    let ad = blob_ad(repo, entry.blob_type, entry.compression, &entry.id);
    keys.open_in_place(&ad, sealed)
        .ok_or_else(|| blob_failure(pack, entry, "fails authentication"))
}

/// Decompresses a payload into `plain` if need be and checks it against the blob's length
/// and id: returns the verified plaintext.
fn verified<'a>(
    keys: &Keys,
    pack: &PackId,
    entry: &BlobEntry,
    payload: &'a [u8],
    plain: &'a mut Vec<u8>,
) -> Result<&'a [u8]> {
    let plain: &[u8] = match entry.compression {
        COMPRESSION_NONE => payload,
        COMPRESSION_ZSTD => {
            crate::compress::decompress_into(payload, entry.raw_len as usize, plain)
                .map_err(|e| blob_failure(pack, entry, &format!("zstd: {e}")))?;
            plain
        }
        _ => return Err(blob_failure(pack, entry, "unknown compression")),
    };
    check_plain(keys, pack, entry, plain)?;
    Ok(plain)
}

/// Checks a blob's plaintext against its recorded length and its id.
fn check_plain(keys: &Keys, pack: &PackId, entry: &BlobEntry, plain: &[u8]) -> Result<()> {
    if plain.len() != entry.raw_len as usize {
        return Err(blob_failure(
            pack,
            entry,
            "length differs from the recorded one",
        ));
    }
    if keys.blob_id(plain) != entry.id {
        return Err(blob_failure(pack, entry, "content does not match its id"));
    }
    Ok(())
}

/// `open_blob` for a blob read into a buffer of the caller's, decrypted where it is (so
/// `sealed` is garbage afterwards) and decompressed into this thread's buffer: `then` gets
/// the verified plaintext, with no allocation or copy per blob (for restore). `then` must
/// not open blobs itself.
pub fn with_blob_in_place<T>(
    keys: &Keys,
    repo: &RepositoryId,
    pack: &PackId,
    entry: &BlobEntry,
    sealed: &mut [u8],
    then: impl FnOnce(&[u8]) -> T,
) -> Result<T> {
    let payload = open_payload(keys, repo, pack, entry, sealed)?;
    VERIFY_BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffers) => verified(keys, pack, entry, payload, &mut buffers.1).map(then),
        // Opened again from within `then` after all: slower, not a panic.
        Err(_) => verified(keys, pack, entry, payload, &mut Vec::new()).map(then),
    })
}

fn blob_failure(pack: &PackId, entry: &BlobEntry, reason: &str) -> Error {
    Error::BlobIntegrity {
        blob: entry.id,
        pack: *pack,
        reason: reason.to_string(),
    }
}

/// Checks one blob exactly as `open_blob` does, without allocating per blob (for
/// `check --read-data`, which verifies every stored byte).
pub fn verify_blob(
    keys: &Keys,
    repo: &RepositoryId,
    pack: &PackId,
    entry: &BlobEntry,
    sealed: &[u8],
) -> Result<()> {
    with_payload(keys, repo, pack, entry, sealed, |payload, plain| {
        verified(keys, pack, entry, payload, plain).map(|_| ())
    })
}

/// Checks that a sealed blob is exactly what was written for `entry` (authentication only:
/// no decompression, no hashing). Enough to copy it elsewhere as it is: whatever it held when
/// written, it still holds.
pub fn authenticate_blob(
    keys: &Keys,
    repo: &RepositoryId,
    pack: &PackId,
    entry: &BlobEntry,
    sealed: &[u8],
) -> Result<()> {
    with_payload(keys, repo, pack, entry, sealed, |_, _| Ok(()))
}

/// Accumulates sealed blobs of one type into a pack.
pub struct PackWriter {
    blob_type: BlobType,
    bytes: Vec<u8>,
    entries: Vec<BlobEntry>,
}

/// A finished pack: its bytes and what it holds.
pub struct FinishedPack {
    pub id: PackId,
    pub bytes: Vec<u8>,
    pub entries: Vec<BlobEntry>,
}

impl PackWriter {
    pub fn new(blob_type: BlobType) -> Self {
        PackWriter {
            blob_type,
            bytes: Vec::new(),
            entries: Vec::new(),
        }
    }

    pub fn blob_type(&self) -> BlobType {
        self.blob_type
    }

    pub fn add(&mut self, blob: SealedBlob) {
        debug_assert_eq!(blob.blob_type, self.blob_type);
        self.entries.push(BlobEntry {
            id: blob.id,
            blob_type: blob.blob_type,
            compression: blob.compression,
            offset: self.bytes.len() as u64,
            stored_len: blob.bytes.len() as u32,
            raw_len: blob.raw_len,
        });
        self.bytes.extend_from_slice(&blob.bytes);
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Moves `other`'s blobs to the end of this pack (a sealed blob does not depend on where
    /// it sits).
    pub fn append(&mut self, other: PackWriter) {
        debug_assert_eq!(other.blob_type, self.blob_type);
        let shift = self.bytes.len() as u64;
        self.bytes.extend_from_slice(&other.bytes);
        let moved = other.entries.into_iter().map(|e| BlobEntry {
            offset: e.offset + shift,
            ..e
        });
        self.entries.extend(moved);
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.bytes.len() >= PACK_TARGET_SIZE
    }

    /// Appends the sealed header and trailer; names the pack.
    pub fn finish(self, keys: &Keys, repo: &RepositoryId) -> FinishedPack {
        let mut bytes = self.bytes;
        let header = keys.seal(
            &header_ad(FORMAT_VERSION, repo),
            &encode_entries(&self.entries),
        );
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&file::footer(FileKind::Pack));
        FinishedPack {
            id: PackId(*blake3::hash(&bytes).as_bytes()),
            bytes,
            entries: self.entries,
        }
    }
}

/// Reads the header length from a pack's last `TRAILER_LEN` bytes.
pub fn header_len_from_trailer(pack: &PackId, trailer: &[u8]) -> Result<(u32, u32)> {
    let name = pack.to_hex();
    if trailer.len() != TRAILER_LEN {
        return Err(Error::corrupt("pack", &name, "truncated trailer"));
    }
    let (_, version) = file::split_footer(FileKind::Pack, &name, trailer)?;
    let len = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes"));
    Ok((len, version))
}

/// Decrypts and decodes a pack header; checks that every blob lies before the header.
pub fn open_header(
    keys: &Keys,
    repo: &RepositoryId,
    pack: &PackId,
    version: u32,
    sealed: &[u8],
    header_offset: u64,
) -> Result<Vec<BlobEntry>> {
    let name = pack.to_hex();
    let plain = keys
        .open(&header_ad(version, repo), sealed)
        .ok_or_else(|| Error::corrupt("pack header", &name, "fails authentication"))?;
    let (entries, rest) =
        decode_entries(&plain).ok_or_else(|| Error::corrupt("pack header", &name, "malformed"))?;
    if !rest.is_empty() || entries.iter().any(|e| e.end() > header_offset) {
        return Err(Error::corrupt(
            "pack header",
            &name,
            "entries out of bounds",
        ));
    }
    Ok(entries)
}

/// How much of a pack's end one read fetches, hoping to get trailer and header at once.
const TAIL_GUESS: u64 = 64 * 1024;

/// Reads and opens the header of a stored pack of `size` bytes with one or two range reads.
pub fn read_header(repo: &Repository, pack: &PackId, size: u64) -> Result<Vec<BlobEntry>> {
    let name = pack.to_hex();
    if size < TRAILER_LEN as u64 {
        return Err(Error::corrupt("pack", &name, "shorter than its trailer"));
    }
    let tail_start = size.saturating_sub(TAIL_GUESS);
    let mut tail = repo.read_pack_range(pack, tail_start..size)?;
    let trailer = &tail[tail.len() - TRAILER_LEN..];
    let (len, version) = match header_len_from_trailer(pack, trailer) {
        Err(e @ Error::NewerFormat { .. }) => return Err(newer_or_damaged(repo, pack, e)),
        other => other?,
    };
    let header_end = size - TRAILER_LEN as u64;
    let header_start = header_end
        .checked_sub(len.into())
        .ok_or_else(|| Error::corrupt("pack", &name, "header longer than the pack"))?;
    if header_start < tail_start {
        tail = repo.read_pack_range(pack, header_start..header_end)?;
    } else {
        tail.truncate((header_end - tail_start) as usize);
        tail.drain(..(header_start - tail_start) as usize);
    }
    open_header(repo.keys(), repo.id(), pack, version, &tail, header_start)
}

/// A pack whose footer claims a newer format version than this cairn knows: it is damaged
/// rather than newer if its bytes do not match its name (one flipped bit in the version field
/// must not stop `repair index` for the whole repository as if a newer cairn had written it).
fn newer_or_damaged(repo: &Repository, pack: &PackId, newer: Error) -> Error {
    let Error::NewerFormat { found, .. } = newer else {
        return newer;
    };
    match repo.read_pack(pack) {
        Ok(bytes) if blake3::hash(&bytes).as_bytes() != &pack.0 => Error::corrupt(
            "pack",
            pack.to_hex(),
            format!(
                "its footer claims format version {found}, but its bytes do not match its name"
            ),
        ),
        Ok(_) => newer,
        Err(e) => e,
    }
}

/// Parses the header of a pack from its last bytes, `tail`, which start at `tail_start` in the
/// pack (0 for a whole pack); `check --read-data` streams packs and keeps only their end.
pub fn read_header_from_tail(
    keys: &Keys,
    repo: &RepositoryId,
    pack: &PackId,
    tail: &[u8],
    tail_start: u64,
) -> Result<Vec<BlobEntry>> {
    let name = pack.to_hex();
    if tail.len() < TRAILER_LEN {
        return Err(Error::corrupt("pack", &name, "shorter than its trailer"));
    }
    let (len, version) = header_len_from_trailer(pack, &tail[tail.len() - TRAILER_LEN..])?;
    let header_end = tail.len() - TRAILER_LEN;
    let header_start = header_end.checked_sub(len as usize).ok_or_else(|| {
        Error::corrupt(
            "pack",
            &name,
            "header longer than the pack or overlapping its blobs",
        )
    })?;
    open_header(
        keys,
        repo,
        pack,
        version,
        &tail[header_start..header_end],
        tail_start + header_start as u64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_entry() -> impl Strategy<Value = BlobEntry> {
        (
            any::<[u8; 32]>(),
            any::<bool>(),
            0u8..2,
            0u64..1 << 40,
            40u32..,
            0..MAX_BLOB_LEN,
        )
            .prop_map(
                |(id, tree, compression, offset, stored_len, raw_len)| BlobEntry {
                    id: BlobId(id),
                    blob_type: if tree { BlobType::Tree } else { BlobType::Data },
                    compression,
                    offset,
                    stored_len,
                    raw_len,
                },
            )
    }

    proptest! {
        #[test]
        fn header_entries_round_trip(entries in proptest::collection::vec(arb_entry(), 0..50)) {
            let encoded = encode_entries(&entries);
            let (decoded, rest) = decode_entries(&encoded).unwrap();
            prop_assert_eq!(decoded, entries);
            prop_assert!(rest.is_empty());
        }

        #[test]
        fn header_decoding_never_panics(bytes: Vec<u8>) {
            let _ = decode_entries(&bytes);
        }
    }

    #[test]
    fn pack_round_trip_and_tamper_detection() {
        let keys = Keys::generate();
        let repo = RepositoryId([9; 32]);
        let mut w = PackWriter::new(BlobType::Data);
        let blobs: Vec<Vec<u8>> = vec![b"a".repeat(1000), (0..=255u8).collect(), Vec::new()];
        for b in &blobs {
            w.add(seal_blob(
                &keys,
                &repo,
                BlobType::Data,
                keys.blob_id(b),
                b,
                3,
            ));
        }
        let pack = w.finish(&keys, &repo);
        assert_eq!(pack.entries[0].compression, COMPRESSION_ZSTD);
        assert_eq!(pack.entries[1].compression, COMPRESSION_NONE);
        let entries = read_header_from_tail(&keys, &repo, &pack.id, &pack.bytes, 0).unwrap();
        assert_eq!(entries, pack.entries);
        for (e, b) in entries.iter().zip(&blobs) {
            let sealed = &pack.bytes[e.offset as usize..e.end() as usize];
            assert_eq!(&open_blob(&keys, &repo, &pack.id, e, sealed).unwrap(), b);
            verify_blob(&keys, &repo, &pack.id, e, sealed).unwrap();
        }
        // One flipped bit inside a blob fails that blob, naming the pack.
        let e = entries[0];
        let mut sealed = pack.bytes[e.offset as usize..e.end() as usize].to_vec();
        sealed[30] ^= 4;
        match open_blob(&keys, &repo, &pack.id, &e, &sealed) {
            Err(Error::BlobIntegrity { pack: p, .. }) => assert_eq!(p, pack.id),
            other => panic!("expected integrity error, got {other:?}"),
        }
        assert!(verify_blob(&keys, &repo, &pack.id, &e, &sealed).is_err());
        // The wrong type in the index fails authentication too.
        let wrong = BlobEntry {
            blob_type: BlobType::Tree,
            ..e
        };
        let sealed = &pack.bytes[e.offset as usize..e.end() as usize];
        assert!(open_blob(&keys, &repo, &pack.id, &wrong, sealed).is_err());
        // A flipped bit in the header is caught.
        let mut bytes = pack.bytes.clone();
        let n = bytes.len();
        bytes[n - TRAILER_LEN - 5] ^= 1;
        assert!(read_header_from_tail(&keys, &repo, &pack.id, &bytes, 0).is_err());
    }
}
