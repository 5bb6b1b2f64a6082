//! Directory trees: one tree per directory, listing its entries sorted by name (as bytes).
//! A tree is stored as a tree blob, so its id is the keyed BLAKE3 of its encoding, and equal
//! directories encode to equal bytes and are stored once.
//!
//! Encoding (see `codec`): a tree is a record of fields with tag 1, each holding one encoded
//! node, in name order. A node is a record with the fields listed at `Node`'s tags below.
//! Unknown tags are skipped, so later versions can add fields.

pub mod diff;

use crate::codec::{self, FieldWriter};
use crate::error::{Error, Result};
use crate::ids::{BlobId, TreeId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl NodeKind {
    fn code(self) -> u64 {
        match self {
            NodeKind::File => 1,
            NodeKind::Dir => 2,
            NodeKind::Symlink => 3,
            NodeKind::Fifo => 4,
            NodeKind::Socket => 5,
            NodeKind::CharDevice => 6,
            NodeKind::BlockDevice => 7,
        }
    }

    /// The short name used in listings and JSON output.
    pub fn name(self) -> &'static str {
        match self {
            NodeKind::File => "file",
            NodeKind::Dir => "dir",
            NodeKind::Symlink => "symlink",
            NodeKind::Fifo => "fifo",
            NodeKind::Socket => "socket",
            NodeKind::CharDevice => "chardev",
            NodeKind::BlockDevice => "blockdev",
        }
    }

    fn from_code(c: u64) -> Option<Self> {
        Some(match c {
            1 => NodeKind::File,
            2 => NodeKind::Dir,
            3 => NodeKind::Symlink,
            4 => NodeKind::Fifo,
            5 => NodeKind::Socket,
            6 => NodeKind::CharDevice,
            7 => NodeKind::BlockDevice,
            _ => return None,
        })
    }
}

/// One directory entry and its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// tag 1: the name as raw bytes (not necessarily UTF-8; never contains `/` or NUL).
    pub name: Vec<u8>,
    /// tag 2: 1 file, 2 directory, 3 symlink, 4 FIFO, 5 socket, 6 char device, 7 block device.
    pub kind: NodeKind,
    /// tag 3: permission bits including setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// tags 4, 5: numeric owner and group.
    pub uid: u32,
    pub gid: u32,
    /// tags 6, 7: owner and group names, when they resolved at backup time.
    pub user: Option<String>,
    pub group: Option<String>,
    /// tags 8, 9, 10: modification, access and status-change times, ns since the epoch.
    pub mtime_ns: i64,
    pub atime_ns: i64,
    pub ctime_ns: i64,
    /// tag 11: size in bytes (files: content length).
    pub size: u64,
    /// tag 12: files: the data blob ids of the content, concatenated (32 bytes each).
    pub content: Vec<BlobId>,
    /// tag 13: directories: the tree id of the contents.
    pub subtree: Option<TreeId>,
    /// tag 14: symlinks: the target as raw bytes.
    pub link_target: Option<Vec<u8>>,
    /// tags 15, 16, 17, 18: inode, device, link count and device number (for special files).
    pub inode: u64,
    pub device: u64,
    pub nlink: u64,
    pub rdev: u64,
    /// tag 19 (repeated): an extended attribute, a record of `1: name`, `2: value`, in name
    /// order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// tag 20: files: the file had holes and was read by data region, so its all-zero blobs
    /// are holes (in a snapshot that marks sparse files: `Snapshot::marks_sparse`).
    pub sparse: bool,
}

impl Node {
    pub fn new(name: Vec<u8>, kind: NodeKind) -> Self {
        Node {
            name,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            user: None,
            group: None,
            mtime_ns: 0,
            atime_ns: 0,
            ctime_ns: 0,
            size: 0,
            content: Vec::new(),
            subtree: None,
            link_target: None,
            inode: 0,
            device: 0,
            nlink: 0,
            rdev: 0,
            xattrs: Vec::new(),
            sparse: false,
        }
    }

    #[cfg(test)]
    fn encode(&self) -> Vec<u8> {
        self.encode_into(Vec::new())
    }

    /// The bytes this node takes in its folder's encoded tree.
    pub fn encoded_len(&self) -> usize {
        let node = self.encode_into(Vec::new()).len();
        let mut field = Vec::new();
        codec::put_varint(&mut field, 1);
        codec::put_varint(&mut field, node as u64);
        field.len() + node
    }

    /// Encodes into `buf` (cleared first, its allocation reused).
    fn encode_into(&self, buf: Vec<u8>) -> Vec<u8> {
        let mut w = FieldWriter::reusing(buf);
        w.bytes(1, &self.name)
            .uint(2, self.kind.code())
            .uint(3, self.mode.into())
            .uint(4, self.uid.into())
            .uint(5, self.gid.into());
        if let Some(u) = &self.user {
            w.bytes(6, u.as_bytes());
        }
        if let Some(g) = &self.group {
            w.bytes(7, g.as_bytes());
        }
        w.int(8, self.mtime_ns)
            .int(9, self.atime_ns)
            .int(10, self.ctime_ns)
            .uint(11, self.size);
        if !self.content.is_empty() {
            w.parts(12, self.content.iter().map(|id| &id.0[..]));
        }
        if let Some(t) = &self.subtree {
            w.bytes(13, &t.0);
        }
        if let Some(l) = &self.link_target {
            w.bytes(14, l);
        }
        w.uint(15, self.inode)
            .uint(16, self.device)
            .uint(17, self.nlink)
            .uint(18, self.rdev);
        let mut xattrs: Vec<&(Vec<u8>, Vec<u8>)> = self.xattrs.iter().collect();
        xattrs.sort();
        for (name, value) in xattrs {
            let mut x = FieldWriter::new();
            x.bytes(1, name).bytes(2, value);
            w.bytes(19, &x.finish());
        }
        if self.sparse {
            w.uint(20, 1);
        }
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let mut node = Node::new(Vec::new(), NodeKind::File);
        let mut kind = None;
        let small = |v: Option<u64>| v.and_then(|n| u32::try_from(n).ok());
        for f in codec::fields(bytes)? {
            match f.tag {
                1 => node.name = f.value.to_vec(),
                2 => kind = Some(NodeKind::from_code(f.uint()?)?),
                3 => node.mode = small(f.uint())?,
                4 => node.uid = small(f.uint())?,
                5 => node.gid = small(f.uint())?,
                6 => node.user = Some(f.string()?),
                7 => node.group = Some(f.string()?),
                8 => node.mtime_ns = f.int()?,
                9 => node.atime_ns = f.int()?,
                10 => node.ctime_ns = f.int()?,
                11 => node.size = f.uint()?,
                12 => {
                    if f.value.len() % 32 != 0 {
                        return None;
                    }
                    node.content = f
                        .value
                        .chunks_exact(32)
                        .filter_map(BlobId::from_slice)
                        .collect();
                }
                13 => node.subtree = Some(BlobId(f.id()?)),
                14 => node.link_target = Some(f.value.to_vec()),
                15 => node.inode = f.uint()?,
                16 => node.device = f.uint()?,
                17 => node.nlink = f.uint()?,
                18 => node.rdev = f.uint()?,
                19 => {
                    let (mut name, mut value) = (Vec::new(), Vec::new());
                    for x in codec::fields(f.value)? {
                        match x.tag {
                            1 => name = x.value.to_vec(),
                            2 => value = x.value.to_vec(),
                            _ => {}
                        }
                    }
                    node.xattrs.push((name, value));
                }
                20 => node.sparse = f.uint()? != 0,
                _ => {}
            }
        }
        node.kind = kind?;
        Some(node)
    }
}

/// The entries of one directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

/// A path as JSON output gives it: lossily as text, with its bytes in hex when they are not
/// UTF-8 (`path_hex`), so that every path can be told exactly.
#[derive(Clone, Debug, serde::Serialize)]
pub struct JsonPath {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
    /// The path's bytes, for text output.
    #[serde(skip)]
    pub bytes: Vec<u8>,
}

impl JsonPath {
    pub fn new(bytes: &[u8]) -> Self {
        JsonPath {
            path: String::from_utf8_lossy(bytes).into_owned(),
            path_hex: hex_unless_utf8(bytes),
            bytes: bytes.to_vec(),
        }
    }
}

/// A name or path that is not UTF-8, as hex, for output where names are strings (JSON):
/// `None` for UTF-8, which the string itself gives exactly.
pub fn hex_unless_utf8(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes)
        .is_err()
        .then(|| crate::ids::to_hex(bytes))
}

/// Every path in hex, where one of them is not UTF-8 (`paths_hex` beside a lossy `paths`).
pub fn all_hex_unless_utf8(paths: &[Vec<u8>]) -> Option<Vec<String>> {
    let exact = paths.iter().all(|p| std::str::from_utf8(p).is_ok());
    (!exact).then(|| paths.iter().map(|p| crate::ids::to_hex(p)).collect())
}

impl Tree {
    /// Encodes with nodes sorted by name, so equal directories give equal bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut nodes: Vec<&Node> = self.nodes.iter().collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let mut w = FieldWriter::new();
        let mut node = Vec::new();
        for n in nodes {
            node = n.encode_into(node);
            w.bytes(1, &node);
        }
        w.finish()
    }

    pub fn decode(id: &TreeId, bytes: &[u8]) -> Result<Self> {
        let bad = || Error::corrupt("tree", id, "malformed encoding");
        let mut nodes: Vec<Node> = Vec::new();
        for f in codec::fields(bytes).ok_or_else(bad)? {
            if f.tag == 1 {
                let node = Node::decode(f.value).ok_or_else(bad)?;
                // `find` searches by halves, so nodes out of order would be missed silently. A
                // name twice is accepted: a listing can return one twice while a file is
                // renamed over, and a snapshot saved so must stay readable.
                if nodes.last().is_some_and(|last| last.name > node.name) {
                    return Err(Error::corrupt("tree", id, "names not in ascending order"));
                }
                nodes.push(node);
            }
        }
        Ok(Tree { nodes })
    }

    /// Only what a tree links to, without decoding the rest of its nodes: the subtrees and the
    /// content blobs, in node order. The framing is checked as strictly as by `decode`, so a
    /// tree that yields links yields all of them; prune's marking reads trees this way.
    pub fn links(id: &TreeId, bytes: &[u8]) -> Result<(Vec<TreeId>, Vec<BlobId>)> {
        let bad = || Error::corrupt("tree", id, "malformed encoding");
        let (mut subtrees, mut blobs) = (Vec::new(), Vec::new());
        for f in codec::fields(bytes).ok_or_else(bad)? {
            if f.tag != 1 {
                continue;
            }
            for g in codec::fields(f.value).ok_or_else(bad)? {
                match g.tag {
                    12 if g.value.len() % 32 == 0 => {
                        blobs.extend(g.value.chunks_exact(32).filter_map(BlobId::from_slice))
                    }
                    13 => subtrees.push(BlobId(g.id().ok_or_else(bad)?)),
                    12 => return Err(bad()),
                    _ => {}
                }
            }
        }
        Ok((subtrees, blobs))
    }

    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_kind() -> impl Strategy<Value = NodeKind> {
        (1u64..=7).prop_map(|c| NodeKind::from_code(c).unwrap())
    }

    prop_compose! {
        fn arb_node()(
            name in proptest::collection::vec(1u8..=255, 1..40),
            kind in arb_kind(),
            mode in 0u32..0o10000, uid: u32, gid: u32,
            user in proptest::option::of("[a-z]{1,8}"), group in proptest::option::of("[a-z]{1,8}"),
            times: (i64, i64, i64), size: u64,
            content in proptest::collection::vec(any::<[u8; 32]>(), 0..4),
            subtree in proptest::option::of(any::<[u8; 32]>()),
            link_target in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            ids: (u64, u64, u64, u64),
            xattrs in proptest::collection::btree_map(proptest::collection::vec(1u8..=255, 1..20), proptest::collection::vec(any::<u8>(), 0..40), 0..3),
            sparse: bool,
        ) -> Node {
            Node {
                name, kind, mode, uid, gid, user, group,
                mtime_ns: times.0, atime_ns: times.1, ctime_ns: times.2, size,
                content: content.into_iter().map(BlobId).collect(),
                subtree: subtree.map(BlobId),
                link_target,
                inode: ids.0, device: ids.1, nlink: ids.2, rdev: ids.3,
                xattrs: xattrs.into_iter().collect(),
                sparse,
            }
        }
    }

    proptest! {
        #[test]
        fn links_are_the_subtrees_and_content_of_the_decoded_tree(
            nodes in proptest::collection::vec(arb_node(), 0..20)
        ) {
            let tree = Tree { nodes };
            let id = BlobId::default();
            let (subtrees, blobs) = Tree::links(&id, &tree.encode()).unwrap();
            let decoded = Tree::decode(&id, &tree.encode()).unwrap();
            let want_subtrees: Vec<BlobId> = decoded.nodes.iter().filter_map(|n| n.subtree).collect();
            let want_blobs: Vec<BlobId> =
                decoded.nodes.iter().flat_map(|n| n.content.iter().copied()).collect();
            prop_assert_eq!(subtrees, want_subtrees);
            prop_assert_eq!(blobs, want_blobs);
        }

        #[test]
        fn trees_round_trip(nodes in proptest::collection::vec(arb_node(), 0..20)) {
            let mut nodes = nodes;
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            nodes.dedup_by(|a, b| a.name == b.name);
            let tree = Tree { nodes };
            let bytes = tree.encode();
            let decoded = Tree::decode(&BlobId::default(), &bytes).unwrap();
            prop_assert_eq!(&decoded, &tree);
            // Deterministic: re-encoding gives the same bytes, whatever the input order.
            let mut reversed = tree.clone();
            reversed.nodes.reverse();
            prop_assert_eq!(reversed.encode(), bytes);
        }

        #[test]
        fn decoding_never_panics(bytes: Vec<u8>) {
            let _ = Tree::decode(&BlobId::default(), &bytes);
        }
    }

    #[test]
    fn unknown_node_fields_are_ignored() {
        let node = Node::new(b"a".to_vec(), NodeKind::Dir);
        let mut enc = node.encode();
        let mut extra = FieldWriter::new();
        extra.bytes(200, b"from the future");
        enc.extend(extra.finish());
        let mut w = FieldWriter::new();
        w.bytes(1, &enc).bytes(77, b"tree-level extension");
        let tree = Tree::decode(&BlobId::default(), &w.finish()).unwrap();
        assert_eq!(tree.nodes, vec![node]);
    }

    /// Regression: a tree whose nodes were out of order was accepted, and lookups by name
    /// (`find`: parent reuse, paths in restore, dump, ls) then missed entries without a
    /// word; `check` said nothing either. A name twice stays readable.
    #[test]
    fn nodes_out_of_order_are_damage_but_a_name_twice_is_not() {
        let [a, b] = [b"a", b"b"].map(|n| Node::new(n.to_vec(), NodeKind::File).encode());
        let tree = |first: &[u8], second: &[u8]| {
            let mut w = FieldWriter::new();
            w.bytes(1, first).bytes(1, second);
            Tree::decode(&BlobId::default(), &w.finish())
        };
        let err = tree(&b, &a).unwrap_err();
        assert!(err.to_string().contains("ascending order"), "{err}");
        assert_eq!(tree(&a, &a).unwrap().nodes.len(), 2);
    }
}
