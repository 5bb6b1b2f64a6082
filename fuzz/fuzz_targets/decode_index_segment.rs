#![no_main]
use cairn::ids::IndexId;
use cairn::index::IndexSegment;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(seg) = IndexSegment::decode(&IndexId::default(), data) {
        assert_eq!(seg.encode(), data);
    }
});
