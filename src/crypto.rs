//! Keys and authenticated encryption.
//!
//! The repository has one random 32-byte master key. Separate subkeys are derived from it with
//! BLAKE3's key derivation for: encryption (XChaCha20-Poly1305), blob ids (keyed BLAKE3) and the
//! chunker's gear table. A sealed message is `nonce (24 bytes) || ciphertext || tag (16 bytes)`,
//! with a fresh random nonce per message; the caller's associated data binds the message to its
//! place (object type, repository, blob id), so bytes moved elsewhere fail authentication.
//!
//! XChaCha20-Poly1305 is built as draft-irtf-cfrg-xchacha specifies it: HChaCha20 (the
//! `chacha20` crate) turns the key and the nonce's first 16 bytes into a subkey, under which
//! ChaCha20-Poly1305 (RFC 8439, from aws-lc-rs, which TLS to object storage links in anyway)
//! runs with four zero bytes and the nonce's last 8 as its nonce. aws-lc's assembly opens the
//! small blobs a source tree is made of about three times as fast as RustCrypto's
//! `chacha20poly1305`, whose AVX2 Poly1305 leaves its intrinsics as calls (restore profile,
//! 2026-11-24); the bytes are the same, which `known_answers` checks.

use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

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
    cipher: XChaCha,
    blob_id_key: [u8; 32],
    chunker_key: [u8; 32],
}

impl Keys {
    pub fn from_master(master: [u8; 32]) -> Self {
        let enc = blake3::derive_key(ENCRYPTION_CONTEXT, &master);
        Keys {
            master,
            cipher: XChaCha(enc),
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
        self.cipher.seal(associated_data, plaintext)
    }

    pub fn open(&self, associated_data: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        self.cipher.open(associated_data, sealed)
    }

    /// Like `open`, but decrypts inside `sealed` and returns the plaintext part of it.
    /// `sealed` is garbage afterwards, and cleared if it fails to open.
    pub fn open_in_place<'a>(
        &self,
        associated_data: &[u8],
        sealed: &'a mut [u8],
    ) -> Option<&'a [u8]> {
        self.cipher.open_in_place(associated_data, sealed)
    }
}

/// An XChaCha20-Poly1305 key (see the module comment).
#[derive(Clone)]
struct XChaCha([u8; 32]);

impl XChaCha {
    /// The ChaCha20-Poly1305 key and nonce that a 24-byte nonce stands for.
    fn ietf(&self, nonce: &[u8; NONCE_LEN]) -> (LessSafeKey, Nonce) {
        let (head, tail) = nonce.split_at(16);
        let head: &[u8; 16] = head.try_into().expect("16 of 24 bytes");
        let subkey = chacha20::hchacha::<chacha20::R20>(&self.0.into(), head.into());
        let key = UnboundKey::new(&CHACHA20_POLY1305, &subkey).expect("a 32-byte key");
        let mut short = [0u8; 12];
        short[4..].copy_from_slice(tail);
        (LessSafeKey::new(key), Nonce::assume_unique_for_key(short))
    }

    fn seal(&self, ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.seal_with_nonce(random_bytes(), ad, plaintext)
    }

    fn seal_with_nonce(&self, nonce: [u8; NONCE_LEN], ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let (key, short) = self.ietf(&nonce);
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = key
            .seal_in_place_separate_tag(short, Aad::from(ad), &mut out[NONCE_LEN..])
            .expect("ChaCha20-Poly1305 seals any message under 256 GiB");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Authenticates and decrypts `sealed` where it is; returns the plaintext part of it.
    fn open_in_place<'a>(&self, ad: &[u8], sealed: &'a mut [u8]) -> Option<&'a [u8]> {
        if sealed.len() < SEAL_OVERHEAD {
            return None;
        }
        let (nonce, body_and_tag) = sealed.split_at_mut(NONCE_LEN);
        let (key, short) = self.ietf((&*nonce).try_into().ok()?);
        let plain = key.open_in_place(short, Aad::from(ad), body_and_tag).ok()?;
        Some(plain)
    }

    fn open(&self, ad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let mut copy = sealed.to_vec();
        let len = self.open_in_place(ad, &mut copy)?.len();
        copy.drain(..NONCE_LEN);
        copy.truncate(len);
        Some(copy)
    }
}

/// Encrypts with a cipher built from a raw 32-byte key (used to wrap the master key).
pub fn seal_with_key(key: &[u8; 32], associated_data: &[u8], plaintext: &[u8]) -> Vec<u8> {
    XChaCha(*key).seal(associated_data, plaintext)
}

pub fn open_with_key(key: &[u8; 32], associated_data: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    XChaCha(*key).open(associated_data, sealed)
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

    /// Against answers from other implementations: the vector of draft-irtf-cfrg-xchacha-03
    /// (A.3.1), and a message long enough for the widest backends (16 blocks at a time),
    /// whose tag and ends came from OpenSSL's ChaCha20-Poly1305 under an HChaCha20 subkey.
    #[test]
    fn known_answers() {
        let key = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
        let cipher = XChaCha(key.as_slice().try_into().unwrap());
        let nonce: [u8; NONCE_LEN] = hex("404142434445464748494a4b4c4d4e4f5051525354555657")
            .try_into()
            .unwrap();
        let ad = hex("50515253c0c1c2c3c4c5c6c7");
        let seal = |plain: &[u8]| {
            let sealed = cipher.seal_with_nonce(nonce, &ad, plain);
            assert_eq!(sealed[..NONCE_LEN], nonce);
            let (body, tag) = sealed[NONCE_LEN..].split_at(plain.len());
            (body.to_vec(), tag.to_vec())
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
        assert_eq!(cipher.open(&ad, &sealed).as_deref(), Some(&long[..]));
        sealed[3000] ^= 1;
        assert!(cipher.open(&ad, &sealed).is_none());
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
