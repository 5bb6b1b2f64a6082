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

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The cipher as built (chacha20 picks an SSE2, AVX2 or AVX-512 backend by the CPU, see
    /// `.cargo/config.toml`) against answers from another implementation: the vector of
    /// draft-irtf-cfrg-xchacha-03 (A.3.1), and a message long enough for the widest backend
    /// (16 blocks at a time), whose tag and ends came from OpenSSL's ChaCha20-Poly1305 under
    /// an HChaCha20 subkey.
    #[test]
    fn known_answers() {
        let cipher = XChaCha20Poly1305::new(
            &hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
                .as_slice()
                .try_into()
                .unwrap(),
        );
        let nonce =
            XNonce::try_from(hex("404142434445464748494a4b4c4d4e4f5051525354555657").as_slice())
                .unwrap();
        let ad = hex("50515253c0c1c2c3c4c5c6c7");
        let seal = |plain: &[u8]| {
            let mut body = plain.to_vec();
            let tag = cipher
                .encrypt_inout_detached(&nonce, &ad, body.as_mut_slice().into())
                .unwrap();
            (body, tag.to_vec())
        };
        let (body, tag) = seal(b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.");
        assert_eq!(
            body,
            hex(
                "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff921f9664c97637da9768812f615c68b13b52e"
            )
        );
        assert_eq!(tag, hex("c0875924c1c7987947deafd8780acf49"));
        let long: Vec<u8> = (0..5000u32).map(|i| ((i * 7 + 3) % 251) as u8).collect();
        let (body, tag) = seal(&long);
        assert_eq!(body[..16], hex("f20662ec44d6d96ec0503e83a1f0f839"));
        assert_eq!(
            body[body.len() - 16..],
            hex("d010f4f62f1d8198d2b215ea1de019d8")
        );
        assert_eq!(tag, hex("6c911d92d2358bb191c5fa6244ea00ae"));
        let mut sealed = [&nonce[..], &body, &tag].concat();
        let opened = open_with(&cipher, &ad, &sealed);
        assert_eq!(opened.as_deref(), Some(&long[..]));
        sealed[3000] ^= 1;
        assert!(open_with(&cipher, &ad, &sealed).is_none());
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
