#![no_main]
use cairn::ids::BlobId;
use cairn::tree::Tree;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = BlobId::default();
    let links = Tree::links(&id, data);
    if let Ok(tree) = Tree::decode(&id, data) {
        // Prune marks through `links`: it must yield every link `decode` finds (it may yield
        // more: `decode` keeps the last of repeated fields, `links` all of them).
        let (subtrees, blobs) = links.expect("a tree that decodes yields its links");
        for n in &tree.nodes {
            assert!(n.subtree.is_none_or(|s| subtrees.contains(&s)));
            assert!(n.content.iter().all(|b| blobs.contains(b)));
        }
        // Whatever decodes must re-encode and decode to the same tree.
        let again = Tree::decode(&id, &tree.encode()).expect("re-decode");
        let mut sorted = tree.clone();
        sorted.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(again.nodes.len(), sorted.nodes.len());
    }
});
