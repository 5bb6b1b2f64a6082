//! `cairn diff SNAP1 SNAP2 [PATH]` and `cairn diff SNAP --live PATH`: what was added,
//! removed or modified — between two snapshots, or between a snapshot and the disk now (what
//! a restore would change).

use cairn::blobs::{BlobReader, find_node};
use cairn::chunk::Chunker;
use cairn::error::{Error, Result};
use cairn::ids::TreeId;
use cairn::index::LocalIndex;
use cairn::repo::Repository;
use cairn::snapshot::{self, Snapshot};
use cairn::tree::NodeKind;
use cairn::tree::diff::{Change, Differ, LiveHasher};

use super::{Context, Outcome, for_terminal, human_bytes, path_in_snapshot};
use crate::cli::DiffArgs;

/// The tree at `path` in a snapshot (`None` if the path is absent there).
fn tree_at(
    repo: &Repository,
    index: &LocalIndex,
    snap: &Snapshot,
    path: &[u8],
) -> Result<Option<TreeId>> {
    match find_node(repo, index, &snap.tree, path) {
        Ok(None) => Ok(Some(snap.tree)),
        Ok(Some(n)) if n.kind == NodeKind::Dir => Ok(n.subtree),
        Ok(Some(_)) => Err(Error::Invalid(format!(
            "{} is not a folder in the snapshot",
            String::from_utf8_lossy(path)
        ))),
        Err(Error::PathNotInSnapshot { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn run(ctx: &Context, args: &DiffArgs) -> Result<Outcome> {
    let (repo, index) = ctx.open()?;
    let (_, first) = snapshot::find(&index, &args.first)?;
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
            let tree = tree_at(&repo, &index, &first, at)?;
            let hasher = LiveHasher {
                keys: repo.keys(),
                chunker: Chunker::new(repo.keys().chunker_key(), first.chunker),
            };
            differ.live(tree, &live, at, &hasher)?;
        }
        (None, Some(second)) => {
            let (_, second) = snapshot::find(&index, second)?;
            let path = path_in_snapshot(args.path.as_deref().unwrap_or_default());
            let old = tree_at(&repo, &index, &first, path)?;
            let new = tree_at(&repo, &index, &second, path)?;
            differ.trees(old, new, path)?;
        }
        _ => {
            return Err(Error::Usage(
                "give two snapshots, or one snapshot and --live PATH".into(),
            ));
        }
    }
    let count = |c: Change| differ.out.iter().filter(|e| e.change == c).count();
    let added_bytes: u64 = differ
        .out
        .iter()
        .filter(|e| e.change == Change::Added)
        .map(|e| e.new_size)
        .sum();
    let removed_bytes: u64 = differ
        .out
        .iter()
        .filter(|e| e.change == Change::Removed)
        .map(|e| e.old_size)
        .sum();
    if ctx.json {
        super::print_json(&serde_json::json!({
            "entries": differ.out,
            "added": count(Change::Added),
            "removed": count(Change::Removed),
            "modified": count(Change::Modified),
            "metadata": count(Change::Metadata),
            "bytes_added": added_bytes,
            "bytes_removed": removed_bytes,
            "unreadable": differ.unreadable,
        }))?;
    } else {
        for e in &differ.out {
            let mark = match e.change {
                Change::Added => "+",
                Change::Removed => "-",
                Change::Modified => "M",
                Change::Metadata => "U",
            };
            println!("{mark}  {}", for_terminal(&e.path));
        }
        println!(
            "{} added ({}), {} removed ({}), {} modified, {} metadata only",
            count(Change::Added),
            human_bytes(added_bytes),
            count(Change::Removed),
            human_bytes(removed_bytes),
            count(Change::Modified),
            count(Change::Metadata)
        );
    }
    for warning in &differ.unreadable {
        eprintln!("warning: {warning}; left out of the comparison");
    }
    Ok(if differ.unreadable.is_empty() {
        Outcome::Success
    } else {
        Outcome::Partial
    })
}
