//! Keys and authenticated encryption.
//!
//! The repository has one random 32-byte master key. Separate subkeys are derived from it with
//! BLAKE3's key derivation for: encryption (XChaCha20-Poly1305), blob ids (keyed BLAKE3) and the
//! chunker's gear table. A sealed message is `nonce (24 bytes) || ciphertext || tag (16 bytes)`,
//! with a fresh random nonce per message; the caller's associated data binds the message to its
//! place (object type, repository, blob id), so bytes moved elsewhere fail authentication.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};

use crate::ids::BlobId;

pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
/// Bytes a sealed message adds to its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

const ENCRYPTION_CONTEXT: &str = "cairn 2026-11-22 encryption key";
const BLOB_ID_CONTEXT: &str = "cairn 2026-11-22 blob id key";
const CHUNKER_CONTEXT: &str = "cairn 2026-11-22 chunker gear table";

/// Fills a buffer from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::fill(&mut out[..]);
    out
}

/// The repository's secrets, derived from the master key.
#[derive(Clone)]
pub struct Keys {
    master: [u8; 32],
    cipher: XChaCha20Poly1305,
    blob_id_key: [u8; 32],
    chunker_key: [u8; 32],
}

impl Keys {
    pub fn from_master(master: [u8; 32]) -> Self {
        let enc = blake3::derive_key(ENCRYPTION_CONTEXT, &master);
        Keys {
            master,
            cipher: XChaCha20Poly1305::new(&enc.into()),
            blob_id_key: blake3::derive_key(BLOB_ID_CONTEXT, &master),
            chunker_key: blake3::derive_key(CHUNKER_CONTEXT, &master),
        }
    }

    pub fn generate() -> Self {
        Self::from_master(random_bytes())
    }

    pub fn master(&self) -> &[u8; 32] {
        &self.master
    }

    /// The id of a blob: BLAKE3 keyed with the repository's blob-id key, so ids reveal nothing
    /// about content to someone without the key.
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.blob_id_key, plaintext).as_bytes())
    }

    /// The secret from which the chunker's gear table is drawn.
    pub fn chunker_key(&self) -> &[u8; 32] {
        &self.chunker_key
    }

    pub fn seal(&self, associated_data: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal_with(&self.cipher, associated_data, plaintext)
    }

    pub fn open(&self, associated_data: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        open_with(&self.cipher, associated_data, sealed)
    }

    /// Like `open`, but decrypts inside `sealed` and returns the plaintext part of it.
    pub fn open_in_place<'a>(
        &self,
        associated_data: &[u8],
        sealed: &'a mut [u8],
    ) -> Option<&'a [u8]> {
        if sealed.len() < SEAL_OVERHEAD {
            return None;
        }
        let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
        let (body, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        let nonce = XNonce::try_from(&*nonce).ok()?;
        let tag = Tag::try_from(&*tag).ok()?;
        self.cipher
            .decrypt_inout_detached(&nonce, associated_data, (&mut *body).into(), &tag)
            .ok()?;
        Some(body)
    }
}

/// Encrypts with a cipher built from a raw 32-byte key (used to wrap the master key).
pub fn seal_with_key(key: &[u8; 32], associated_data: &[u8], plaintext: &[u8]) -> Vec<u8> {
    seal_with(
        &XChaCha20Poly1305::new(&(*key).into()),
        associated_data,
        plaintext,
    )
}

pub fn open_with_key(key: &[u8; 32], associated_data: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    open_with(
        &XChaCha20Poly1305::new(&(*key).into()),
        associated_data,
        sealed,
    )
}

fn seal_with(cipher: &XChaCha20Poly1305, ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let nonce_bytes: [u8; NONCE_LEN] = random_bytes();
    let nonce = XNonce::from(nonce_bytes);
    let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
    out.extend_from_slice(&nonce_bytes);
    out.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_inout_detached(&nonce, ad, (&mut out[NONCE_LEN..]).into())
        .expect("XChaCha20-Poly1305 encrypts any message under 256 GiB");
    out.extend_from_slice(&tag);
    out
}

fn open_with(cipher: &XChaCha20Poly1305, ad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < SEAL_OVERHEAD {
        return None;
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
    let nonce = XNonce::try_from(nonce).ok()?;
    let tag = Tag::try_from(tag).ok()?;
    let mut plain = body.to_vec();
    cipher
        .decrypt_inout_detached(&nonce, ad, plain.as_mut_slice().into(), &tag)
        .ok()?;
    Some(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_binding() {
        let keys = Keys::generate();
        let sealed = keys.seal(b"ad", b"hello");
        assert_eq!(sealed.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(keys.open(b"ad", &sealed).as_deref(), Some(&b"hello"[..]));
        assert!(keys.open(b"other", &sealed).is_none());
        let mut flipped = sealed.clone();
        flipped[30] ^= 1;
        assert!(keys.open(b"ad", &flipped).is_none());
        assert!(Keys::generate().open(b"ad", &sealed).is_none());
        assert!(keys.open(b"ad", &sealed[..10]).is_none());
    }

    #[test]
    fn nonces_differ() {
        let keys = Keys::generate();
        assert_ne!(keys.seal(b"", b"x")[..24], keys.seal(b"", b"x")[..24]);
    }

    #[test]
    fn blob_ids_are_keyed() {
        let a = Keys::from_master([1; 32]);
        let b = Keys::from_master([2; 32]);
        assert_eq!(a.blob_id(b"x"), a.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x").0, *blake3::hash(b"x").as_bytes());
    }
}
