#![no_main]
use cairn::ids::BlobId;
use cairn::tree::Tree;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = BlobId::default();
    let links = Tree::links(&id, data);
    if let Ok(tree) = Tree::decode(&id, data) {
        // Prune marks through `links`: whatever decodes must yield exactly its links.
        let (mut subtrees, mut blobs) = links.expect("a tree that decodes yields its links");
        let mut want_subtrees: Vec<BlobId> = tree.nodes.iter().filter_map(|n| n.subtree).collect();
        let mut want_blobs: Vec<BlobId> = tree
            .nodes
            .iter()
            .flat_map(|n| n.content.iter().copied())
            .collect();
        for v in [
            &mut subtrees,
            &mut want_subtrees,
            &mut blobs,
            &mut want_blobs,
        ] {
            v.sort();
        }
        assert_eq!(subtrees, want_subtrees);
        assert_eq!(blobs, want_blobs);
        // Whatever decodes must re-encode and decode to the same tree.
        let again = Tree::decode(&id, &tree.encode()).expect("re-decode");
        let mut sorted = tree.clone();
        sorted.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(again.nodes.len(), sorted.nodes.len());
    }
});
