#![no_main]
use cairn::repo::{Config, KeyFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Config::decode(data);
    let _ = Config::checksum_state(data);
    let _ = KeyFile::decode("fuzz", data);
    let _ = cairn::codec::fields(data);
});
