//! `cairn diff SNAP1 SNAP2 [PATH]` and `cairn diff SNAP --live PATH`: what was added,
//! removed or modified — between two snapshots, or between a snapshot and the disk now (what
//! a restore would change).

use cairn::blobs::{BlobReader, find_node};
use cairn::error::{Error, Result};
use cairn::ids::TreeId;
use cairn::index::LocalIndex;
use cairn::repo::Repository;
use cairn::snapshot::{self, Snapshot};
use cairn::tree::diff::{Change, DiffEntry, Differ, Unreadable};
use cairn::tree::{Node, NodeKind};

use super::{Context, Outcome, Printer, for_terminal_bytes, human_bytes, path_in_snapshot};
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
    let mut report = Report::new(ctx.json);
    let mut print = |entry| report.add(entry);
    let mut differ = Differ {
        reader: &reader,
        metadata: args.metadata,
        out: &mut print,
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
    let unreadable = differ.unreadable;
    report.finish(&unreadable)?;
    for u in &unreadable {
        let (path, reason) = (for_terminal_bytes(&u.path.bytes), &u.reason);
        eprintln!("warning: {path}: {reason}; left out of the comparison");
    }
    Ok(if unreadable.is_empty() {
        Outcome::Success
    } else {
        Outcome::Partial
    })
}

/// What the differences add up to.
#[derive(Default, serde::Serialize)]
struct Totals {
    added: u64,
    removed: u64,
    modified: u64,
    metadata: u64,
    bytes_added: u64,
    bytes_removed: u64,
    bytes_modified_before: u64,
    bytes_modified_after: u64,
}

/// Prints each difference as the comparison finds it (a line of text, or an element of the
/// JSON `entries` array) and adds it to the totals, printed last.
struct Report {
    json: bool,
    out: Printer,
    entries: u64,
    totals: Totals,
}

impl Report {
    fn new(json: bool) -> Self {
        Report {
            json,
            out: Printer::new(),
            entries: 0,
            totals: Totals::default(),
        }
    }

    fn add(&mut self, e: DiffEntry) {
        let t = &mut self.totals;
        match e.change {
            Change::Added => {
                t.added += 1;
                t.bytes_added += e.new_size;
            }
            Change::Removed => {
                t.removed += 1;
                t.bytes_removed += e.old_size;
            }
            Change::Modified => {
                t.modified += 1;
                t.bytes_modified_before += e.old_size;
                t.bytes_modified_after += e.new_size;
            }
            Change::Metadata => t.metadata += 1,
        }
        match (self.json, self.entries) {
            (false, _) => self.out.write(&text_line(&e)),
            (true, 0) => self.out.json("{\n  \"entries\": [\n    ", &e),
            (true, _) => self.out.json(",\n    ", &e),
        }
        self.entries += 1;
    }

    /// Prints the totals (and in JSON the entries that could not be read).
    fn finish(mut self, unreadable: &[Unreadable]) -> Result<()> {
        let t = &self.totals;
        let last = match self.json {
            true => {
                #[derive(serde::Serialize)]
                struct Rest<'a> {
                    #[serde(flatten)]
                    totals: &'a Totals,
                    unreadable: &'a [Unreadable],
                }
                let rest = serde_json::to_string_pretty(&Rest {
                    totals: t,
                    unreadable,
                })
                .map_err(|e| Error::Invalid(format!("cannot encode JSON: {e}")))?;
                let fields = rest.strip_prefix('{').unwrap_or(&rest);
                match self.entries {
                    0 => format!("{{\n  \"entries\": [],{fields}\n"),
                    _ => format!("\n  ],{fields}\n"),
                }
            }
            false => format!(
                "{} added ({}), {} removed ({}), {} modified ({} -> {}), {} metadata only\n",
                t.added,
                human_bytes(t.bytes_added),
                t.removed,
                human_bytes(t.bytes_removed),
                t.modified,
                human_bytes(t.bytes_modified_before),
                human_bytes(t.bytes_modified_after),
                t.metadata
            ),
        };
        self.out.write(&last);
        self.out.finish()
    }
}

/// A difference as a line of text: a mark, the size (before and after for a modified file
/// whose size changed) and the path.
fn text_line(e: &DiffEntry) -> String {
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
    format!(
        "{mark}  {size:>10}  {}\n",
        for_terminal_bytes(&e.path.bytes)
    )
}
