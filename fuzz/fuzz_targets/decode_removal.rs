#![no_main]
use cairn::snapshot::removal;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ids) = removal::decode(&[0; 32], data) {
        assert_eq!(removal::encode(&ids), data);
    }
});
