//! `cairn diff SNAP1 SNAP2 [PATH]` and `cairn diff SNAP --live PATH`: what was added,
//! removed or modified — between two snapshots, or between a snapshot and the disk now (what
//! a restore would change).

use cairn::blobs::{BlobReader, find_node};
use cairn::error::{Error, Result};
use cairn::ids::TreeId;
use cairn::index::LocalIndex;
use cairn::repo::Repository;
use cairn::snapshot::{self, Snapshot};
use cairn::tree::diff::{Change, DiffEntry, Differ};
use cairn::tree::{Node, NodeKind};

use super::{Context, Outcome, for_terminal_bytes, human_bytes, path_in_snapshot};
use crate::cli::DiffArgs;

/// What a snapshot holds at a path.
enum Found {
    /// The snapshot's root folder.
    Root(TreeId),
    Entry(Box<Node>),
    Absent,
}

fn found_at(repo: &Repository, index: &LocalIndex, snap: &Snapshot, path: &[u8]) -> Result<Found> {
    match find_node(repo, index, &snap.tree, path) {
        Ok(None) => Ok(Found::Root(snap.tree)),
        Ok(Some(node)) => Ok(Found::Entry(Box::new(node))),
        Err(Error::PathNotInSnapshot { .. }) => Ok(Found::Absent),
        Err(e) => Err(e),
    }
}

pub fn run(ctx: &Context, args: &DiffArgs) -> Result<Outcome> {
    let (repo, index) = ctx.open()?;
    let (first_id, first) = snapshot::find(&index, &args.first)?;
    let reader = BlobReader::new(&repo, index.snapshot_reader()?);
    let mut differ = Differ {
        reader: &reader,
        metadata: args.metadata,
        out: Vec::new(),
        unreadable: Vec::new(),
    };
    match (&args.live, &args.second) {
        (Some(live), None) => {
            let live = cairn::walk::normalize(live)?;
            let at = path_in_snapshot(live.as_os_str());
            let tree = match found_at(&repo, &index, &first, at)? {
                Found::Root(tree) => Some(tree),
                Found::Entry(node) if node.kind == NodeKind::Dir => node.subtree,
                Found::Entry(_) => {
                    return Err(Error::Usage(format!(
                        "{}: --live compares a folder, and this is not one in the snapshot",
                        live.display()
                    )));
                }
                Found::Absent => None,
            };
            differ.live(tree, &live, None, at, repo.keys())?;
        }
        (None, Some(second)) => {
            let (second_id, second) = snapshot::find(&index, second)?;
            // As restore takes it: from the snapshot's root whether or not it starts with `/`.
            let path = path_in_snapshot(args.path.as_deref().unwrap_or_default());
            let path = match path.first() {
                Some(b'/') | None => path.to_vec(),
                Some(_) => [&b"/"[..], path].concat(),
            };
            let old = found_at(&repo, &index, &first, &path)?;
            let new = found_at(&repo, &index, &second, &path)?;
            match (old, new) {
                (Found::Absent, Found::Absent) => {
                    return Err(Error::PathNotInSnapshot {
                        snapshot: format!("{} nor in {}", first_id.short(), second_id.short()),
                        path: String::from_utf8_lossy(&path).into_owned(),
                    });
                }
                (Found::Root(old), Found::Root(new)) => {
                    differ.trees(Some(old), Some(new), &path)?
                }
                (old, new) => {
                    let node = |f: Found| match f {
                        Found::Entry(node) => Some(*node),
                        _ => None,
                    };
                    differ.pair(node(old).as_ref(), node(new).as_ref(), &path)?
                }
            }
        }
        _ => {
            return Err(Error::Usage(
                "give two snapshots, or one snapshot and --live PATH".into(),
            ));
        }
    }
    let count = |c: Change| differ.out.iter().filter(|e| e.change == c).count();
    let total = |c: Change, size: fn(&DiffEntry) -> u64| -> u64 {
        differ.out.iter().filter(|e| e.change == c).map(size).sum()
    };
    let added_bytes = total(Change::Added, |e| e.new_size);
    let removed_bytes = total(Change::Removed, |e| e.old_size);
    let (modified_before, modified_after) = (
        total(Change::Modified, |e| e.old_size),
        total(Change::Modified, |e| e.new_size),
    );
    if ctx.json {
        super::print_json(&serde_json::json!({
            "entries": differ.out,
            "added": count(Change::Added),
            "removed": count(Change::Removed),
            "modified": count(Change::Modified),
            "metadata": count(Change::Metadata),
            "bytes_added": added_bytes,
            "bytes_removed": removed_bytes,
            "bytes_modified_before": modified_before,
            "bytes_modified_after": modified_after,
            "unreadable": differ.unreadable,
        }))?;
    } else {
        for e in &differ.out {
            let (mark, size) = match e.change {
                Change::Added => ("+", human_bytes(e.new_size)),
                Change::Removed => ("-", human_bytes(e.old_size)),
                Change::Modified if e.old_size != e.new_size => (
                    "M",
                    format!("{} -> {}", human_bytes(e.old_size), human_bytes(e.new_size)),
                ),
                Change::Modified => ("M", human_bytes(e.new_size)),
                Change::Metadata => ("U", human_bytes(e.new_size)),
            };
            println!("{mark}  {size:>10}  {}", for_terminal_bytes(&e.path.bytes));
        }
        println!(
            "{} added ({}), {} removed ({}), {} modified ({} -> {}), {} metadata only",
            count(Change::Added),
            human_bytes(added_bytes),
            count(Change::Removed),
            human_bytes(removed_bytes),
            count(Change::Modified),
            human_bytes(modified_before),
            human_bytes(modified_after),
            count(Change::Metadata)
        );
    }
    for u in &differ.unreadable {
        let (path, reason) = (for_terminal_bytes(&u.path.bytes), &u.reason);
        eprintln!("warning: {path}: {reason}; left out of the comparison");
    }
    Ok(if differ.unreadable.is_empty() {
        Outcome::Success
    } else {
        Outcome::Partial
    })
}
