//! `cairn find PATTERN`: in which snapshots does a matching path exist, with what size and
//! mtime — "when did contract.pdf last change?". Reads only trees, and each distinct tree
//! once however many snapshots share it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use cairn::blobs::BlobReader;
use cairn::error::{Error, Result};
use cairn::host::format_time;
use cairn::ids::TreeId;
use cairn::snapshot;
use cairn::tree::{Node, NodeKind};
use globset::{GlobBuilder, GlobMatcher};

use super::{Context, Outcome, add_hex, for_terminal_bytes};
use crate::cli::FindArgs;

/// A match below some tree: its path relative to that tree, and its node.
type Matches = Rc<Vec<(Vec<u8>, Rc<Node>)>>;

struct Finder<'a> {
    reader: BlobReader<'a>,
    pattern: GlobMatcher,
    by_path: bool,
    /// By tree, and for path patterns by the path it is at too (an unchanged folder is the
    /// same tree at the same path in every snapshot).
    memo: HashMap<(TreeId, Vec<u8>), Matches>,
}

impl Finder<'_> {
    /// Matches below `tree`; `at` is the tree's path, needed only for path patterns.
    fn search(&mut self, tree: &TreeId, at: &[u8]) -> Result<Matches> {
        cairn::walk::check_depth(at)?;
        let key = (
            *tree,
            if self.by_path {
                at.to_vec()
            } else {
                Vec::new()
            },
        );
        if let Some(m) = self.memo.get(&key) {
            return Ok(Rc::clone(m));
        }
        let nodes = self.reader.tree(tree)?.nodes;
        let mut found = Vec::new();
        for node in nodes {
            let mut path = at.to_vec();
            path.push(b'/');
            path.extend_from_slice(&node.name);
            let subject = if self.by_path {
                &path[..]
            } else {
                &node.name[..]
            };
            let subtree = node.subtree.filter(|_| node.kind == NodeKind::Dir);
            if self.pattern.is_match(Path::new(OsStr::from_bytes(subject))) {
                found.push((path[at.len()..].to_vec(), Rc::new(node)));
            }
            if let Some(sub) = subtree {
                for (rel, n) in self.search(&sub, &path)?.iter() {
                    found.push(([&path[at.len()..], &rel[..]].concat(), Rc::clone(n)));
                }
            }
        }
        let found = Rc::new(found);
        self.memo.insert(key, Rc::clone(&found));
        Ok(found)
    }
}

pub fn run(ctx: &Context, args: &FindArgs) -> Result<Outcome> {
    let (repo, index) = ctx.open()?;
    let by_path = args.pattern.contains('/');
    // A path pattern that does not start at the root matches wherever it ends a path
    // (`uploads/*.pdf` finds /srv/uploads/a.pdf), as a relative path would.
    let glob = match by_path {
        true => cairn::walk::path_glob(&args.pattern),
        false => args.pattern.clone(),
    };
    let pattern = GlobBuilder::new(&glob)
        .literal_separator(by_path)
        .build()
        .map_err(|e| Error::Usage(format!("pattern {:?}: {e}", args.pattern)))?
        .compile_matcher();
    let filter = args.filter.filter();
    let snapshots: Vec<_> = snapshot::list(&index)?
        .into_iter()
        .filter(|(_, s)| filter.matches(s))
        .collect();
    let mut finder = Finder {
        reader: BlobReader::new(&repo, index.snapshot_reader()?),
        pattern,
        by_path,
        memo: HashMap::new(),
    };
    let mut json = Vec::new();
    let mut total = 0;
    for (id, snap) in &snapshots {
        let found = finder.search(&snap.tree, b"")?;
        if found.is_empty() {
            continue;
        }
        total += found.len();
        let time = format_time(snap.time_ns, snap.utc_offset_s);
        if ctx.json {
            json.push(serde_json::json!({
                "snapshot": id.to_hex(),
                "short_id": id.short(),
                "time": time,
                "hostname": snap.hostname,
                "matches": found.iter().map(|(p, n)| {
                    let mut found = serde_json::json!({
                        "path": String::from_utf8_lossy(p),
                        "type": n.kind.name(),
                        "size": n.size,
                        "mtime": format_time(n.mtime_ns, snap.utc_offset_s),
                    });
                    add_hex(&mut found, "path_hex", p);
                    found
                }).collect::<Vec<_>>(),
            }));
            continue;
        }
        let host = super::for_terminal(&snap.hostname);
        println!("snapshot {} of {time} ({host}):", id.short());
        for (p, n) in found.iter() {
            println!(
                "  {:>12}  {}  {}",
                n.size,
                format_time(
                    n.mtime_ns
                        .div_euclid(1_000_000_000)
                        .saturating_mul(1_000_000_000),
                    snap.utc_offset_s
                ),
                for_terminal_bytes(p)
            );
        }
    }
    if ctx.json {
        super::print_json(&json)?;
    } else {
        ctx.note(&format!(
            "{total} matches in {} snapshots searched",
            snapshots.len()
        ));
    }
    Ok(Outcome::Success)
}
