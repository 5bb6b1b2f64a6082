#![no_main]
use cairn::crypto::Keys;
use cairn::ids::{PackId, RepositoryId};
use cairn::pack::{decode_entries, read_header_from_tail};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_entries(data);
    let keys = Keys::from_master([1; 32]);
    let _ = read_header_from_tail(&keys, &RepositoryId::default(), &PackId::default(), data, 0);
});
