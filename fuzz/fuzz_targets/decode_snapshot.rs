#![no_main]
use cairn::ids::SnapshotId;
use cairn::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = Snapshot::decode(&SnapshotId::default(), data) {
        assert_eq!(
            Snapshot::decode(&SnapshotId::default(), &s.encode()).ok(),
            Some(s)
        );
    }
});
