#![no_main]
use cairn::repo::lock::LockInfo;
use libfuzzer_sys::fuzz_target;

// A lock file's plaintext (after decryption): decoding never panics, and what decodes
// encodes to a record that decodes to the same lock.
fuzz_target!(|data: &[u8]| {
    if let Some(lock) = LockInfo::decode(data) {
        assert_eq!(LockInfo::decode(&lock.encode()), Some(lock));
    }
});
