#![no_main]
use cairn::crypto::Keys;
use cairn::ids::RepositoryId;
use cairn::repo::FileKind;
use cairn::repo::file::open_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = Keys::from_master([1; 32]);
    for kind in [FileKind::Index, FileKind::Snapshot] {
        let _ = open_file(&keys, &RepositoryId::default(), kind, "fuzz", data);
    }
});
