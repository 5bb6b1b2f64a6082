//! `cairn restore SNAPSHOT[:PATH] --target DIR`: restore a snapshot, a folder or one file.

use std::cell::{Cell, RefCell};
use std::path::Path;

use cairn::blobs::find_node;
use cairn::error::{Error, Result};
use cairn::restore::{self, Overwrite, RestoreOptions, RestoreStats, Selection, Start, WouldWrite};
use cairn::snapshot;
use cairn::terminal;
use cairn::tree::NodeKind;

use super::{
    Context, Outcome, Printer, human_bytes, message_for_terminal, path_in_snapshot, path_json,
};
use crate::cli::RestoreArgs;

pub fn run(ctx: &Context, args: &RestoreArgs) -> Result<Outcome> {
    // More workers than CPUs: a worker waiting for the disk or for a folder's lock in the
    // file system leaves its CPU to another (about 4% faster on 2 CPUs than one per CPU).
    super::set_worker_threads(args.threads.map(usize::from))?;
    let mut opts = RestoreOptions {
        target: args.target.clone(),
        numeric_owner: args.numeric_owner,
        selection: Selection::new(&args.includes, &args.excludes)?,
        overwrite: match args.overwrite.as_str() {
            "always" => Overwrite::Always,
            "never" => Overwrite::Never,
            _ => Overwrite::IfChanged,
        },
        dry_run: args.dry_run,
        verify: args.verify,
        batch_files: args.batch_files as usize,
        holes_marked: false, // the snapshot's, once it is found
    };
    let arg = path_in_snapshot(&args.snapshot);
    let (name, path) = match arg.iter().position(|&b| b == b':') {
        Some(colon) => (&arg[..colon], &arg[colon + 1..]),
        None => (arg, &b""[..]),
    };
    let name = std::str::from_utf8(name).map_err(|_| {
        Error::Usage(format!(
            "{}: a snapshot is named by an id prefix or `latest`",
            String::from_utf8_lossy(name)
        ))
    })?;
    let preparing = ctx.prepare_index_for_reading();
    let repo = ctx.open_repo()?;
    let _lock = ctx.lock(&repo, false)?;
    let index = ctx.open_prepared_index_for_reading(&repo, preparing)?;
    let (id, snap) = snapshot::find(&index, name)?;
    opts.holes_marked = snap.marks_sparse;
    let at = if path.is_empty() || path.starts_with(b"/") {
        path.to_vec()
    } else {
        [&b"/"[..], path].concat()
    };
    let start = match find_node(&repo, &index, &snap.tree, &at) {
        Ok(None) => Start::Tree(snap.tree, Vec::new()),
        Ok(Some(node)) => match (node.kind, node.subtree) {
            (NodeKind::Dir, Some(sub)) => Start::Tree(sub, at),
            _ => Start::Entry(Box::new(node), at),
        },
        Err(Error::PathNotInSnapshot { path, .. }) => {
            return Err(Error::PathNotInSnapshot {
                snapshot: id.short(),
                path,
            });
        }
        Err(e) => return Err(e),
    };
    let listing = Listing {
        out: RefCell::new(Printer::new()),
        json: ctx.json,
        listed: Cell::new(false),
        failures: RefCell::new(Vec::new()),
        removals: RefCell::new(Vec::new()),
    };
    let listing_json = ctx.json && args.dry_run;
    if listing_json {
        // The entries are listed as the walk comes to them, in `stats.would_write`.
        let mut out = listing.out.borrow_mut();
        out.json("{\"snapshot_id\":", &id.to_hex());
        out.write(",\"dry_run\":true,\"stats\":{\"would_write\":[");
    }
    let stats = restore::run(&repo, &index, start, &opts, &listing);
    let failures = serde_json::Value::Array(listing.failures.into_inner());
    let removals = serde_json::Value::Array(listing.removals.into_inner());
    let mut out = listing.out.into_inner();
    if listing_json {
        close_json_listing(&mut out, &removals, stats.as_ref().ok(), &failures);
    }
    // The restore's own error first: it says what was kept.
    let printed = out.finish();
    let stats = stats?;
    printed?;
    if ctx.json && !args.dry_run {
        super::print_json(&serde_json::json!({
            "snapshot_id": id.to_hex(),
            "dry_run": false,
            "stats": stats,
            "failures": failures,
        }))?;
    } else if !ctx.json {
        ctx.note(&format!(
            "{} snapshot {} to {}: {} files, {} dirs, {} other, {}; {} existing entries left alone{}",
            if args.dry_run { "would restore" } else { "restored" },
            id.short(),
            args.target.display(),
            stats.files,
            stats.dirs,
            stats.other_entries,
            human_bytes(stats.bytes),
            stats.skipped,
            if stats.errors > 0 {
                format!("; {} entries FAILED (see above)", stats.errors)
            } else {
                String::new()
            }
        ));
    }
    if stats.devices_not_made > 0 {
        eprintln!(
            "note: {} device nodes not restored: making them needs root",
            stats.devices_not_made
        );
    }
    Ok(if stats.errors > 0 {
        Outcome::Partial
    } else {
        Outcome::Success
    })
}

/// What a restore reports as it comes: failures on stderr, a dry run's entries on standard
/// output (with `json`, its files, as the elements of an array).
struct Listing {
    out: RefCell<Printer>,
    json: bool,
    /// Whether an element was listed yet.
    listed: Cell<bool>,
    /// With `json`: the failures, as `{path, path_hex, reason}`, for the output's end.
    failures: RefCell<Vec<serde_json::Value>>,
    /// With `json`: a dry run's stale temporary files, as `{path, path_hex}` (few: they are
    /// listed after the files).
    removals: RefCell<Vec<serde_json::Value>>,
}

impl restore::Report for Listing {
    fn failed(&self, path: &Path, err: &Error) {
        // An I/O error names its path already.
        let reason = match err {
            Error::Io { path: p, source } if p == path => source.to_string(),
            other => other.to_string(),
        };
        eprintln!(
            "error: {}: {}",
            terminal::path(path),
            message_for_terminal(&reason)
        );
        if self.json {
            let mut failure = path_json(path);
            failure["reason"] = reason.into();
            self.failures.borrow_mut().push(failure);
        }
    }

    fn would_write(&self, path: &Path, what: WouldWrite<'_>) {
        let mut out = self.out.borrow_mut();
        if self.json {
            // `would_write` has always meant files (a later path of a link included).
            if what == WouldWrite::Removal {
                self.removals.borrow_mut().push(path_json(path));
            } else if matches!(what, WouldWrite::File(_) | WouldWrite::Link(_)) {
                let before = if self.listed.replace(true) {
                    ",\n"
                } else {
                    "\n"
                };
                out.json(before, &entry_json(path, &what));
            }
            return;
        }
        let path = terminal::path(path);
        out.write(&match what {
            WouldWrite::File(size) => {
                format!("would restore file {path} ({})\n", human_bytes(size))
            }
            WouldWrite::Link(first) => {
                format!(
                    "would restore link {path} (hard link to {})\n",
                    terminal::path(first)
                )
            }
            WouldWrite::Dir => format!("would restore dir {path}\n"),
            WouldWrite::Other(kind) => format!("would restore {} {path}\n", kind.name()),
            WouldWrite::Metadata => format!("would set the metadata of {path}\n"),
            WouldWrite::Removal => {
                format!("would remove {path} (left by an interrupted restore)\n")
            }
        });
    }
}

/// A file of a JSON dry run: `kind` (`file`, with `size`, or `link`, with `link_to`),
/// `path` (and `path_hex`).
fn entry_json(path: &Path, what: &WouldWrite<'_>) -> serde_json::Value {
    let mut entry = path_json(path);
    match what {
        WouldWrite::Link(first) => {
            entry["kind"] = "link".into();
            entry["link_to"] = path_json(first);
        }
        WouldWrite::File(size) => {
            entry["kind"] = "file".into();
            entry["size"] = (*size).into();
        }
        _ => {}
    }
    entry
}

/// Ends a JSON dry run's listing: the stale temporary files it would remove, the rest of
/// `stats` (none if the restore stopped), the failures, and the objects the listing is in.
fn close_json_listing(
    out: &mut Printer,
    removals: &serde_json::Value,
    stats: Option<&RestoreStats>,
    failures: &serde_json::Value,
) {
    out.json("\n],\"would_remove\":", removals);
    let fields = stats.and_then(|s| serde_json::to_value(s).ok());
    for (name, value) in fields.iter().filter_map(|f| f.as_object()).flatten() {
        out.json(",", &serde_json::json!(name));
        out.write(&format!(":{value}"));
    }
    out.json("},\"failures\":", failures);
    out.write("}\n");
}
