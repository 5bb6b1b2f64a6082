#![no_main]
use cairn::ids::BlobId;
use cairn::tree::Tree;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = Tree::decode(&BlobId::default(), data) {
        // Whatever decodes must re-encode and decode to the same tree.
        let again = Tree::decode(&BlobId::default(), &tree.encode()).expect("re-decode");
        let mut sorted = tree.clone();
        sorted.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(again.nodes.len(), sorted.nodes.len());
    }
});
