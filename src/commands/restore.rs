//! `cairn restore SNAPSHOT[:PATH] --target DIR`: restore a snapshot, a folder or one file.

use std::cell::Cell;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use cairn::blobs::find_node;
use cairn::error::{Error, Result};
use cairn::restore::{self, Overwrite, RestoreOptions, RestoreStats, Selection, Start, WouldWrite};
use cairn::snapshot;
use cairn::tree::{JsonPath, NodeKind};

use super::{Context, Outcome, for_terminal_bytes, human_bytes, path_in_snapshot};
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
    let listing_json = ctx.json && args.dry_run;
    if listing_json {
        // The entries are listed as the walk comes to them, in `stats.would_write`.
        let head = serde_json::json!(id.to_hex());
        println!("{{\"snapshot_id\":{head},\"dry_run\":true,\"stats\":{{\"would_write\":[");
    }
    let printer = Printer {
        json: ctx.json,
        listed: Cell::new(false),
    };
    let stats = restore::run(&repo, &index, start, &opts, &printer);
    if listing_json {
        close_json_listing(stats.as_ref().ok())?;
    }
    let stats = stats?;
    if ctx.json && !args.dry_run {
        super::print_json(
            &serde_json::json!({ "snapshot_id": id.to_hex(), "dry_run": false, "stats": stats }),
        )?;
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

/// Prints what a restore reports as it comes: failures on stderr, a dry run's entries on
/// stdout (with `json`, as the elements of an array).
struct Printer {
    json: bool,
    /// Whether an element was printed yet.
    listed: Cell<bool>,
}

impl restore::Report for Printer {
    fn failed(&self, path: &Path, err: &Error) {
        // An I/O error names its path already.
        let reason = match err {
            Error::Io { path: p, source } if p == path => source.to_string(),
            other => other.to_string(),
        };
        eprintln!("error: {}: {reason}", shown(path));
    }

    fn would_write(&self, path: &Path, what: WouldWrite<'_>) {
        if self.json {
            let comma = if self.listed.replace(true) { "," } else { "" };
            println!("{comma}{}", entry_json(path, &what));
            return;
        }
        let path = shown(path);
        match what {
            WouldWrite::File(size) => println!("would restore file {path} ({})", human_bytes(size)),
            WouldWrite::Link(first) => {
                println!("would restore link {path} (hard link to {})", shown(first))
            }
            WouldWrite::Dir => println!("would restore dir {path}"),
            WouldWrite::Other(kind) => println!("would restore {} {path}", kind.name()),
            WouldWrite::Metadata => println!("would set the metadata of {path}"),
        }
    }
}

fn shown(path: &Path) -> String {
    for_terminal_bytes(path.as_os_str().as_bytes())
}

/// One entry of a JSON dry run: `kind`, `path` (and `path_hex`), with `size` for a file and
/// `link_to` for a hard link.
fn entry_json(path: &Path, what: &WouldWrite<'_>) -> serde_json::Value {
    let json_path = |p: &Path| JsonPath::new(p.as_os_str().as_bytes());
    let JsonPath { path, path_hex, .. } = json_path(path);
    let kind = match what {
        WouldWrite::File(_) => "file",
        WouldWrite::Link(_) => "link",
        WouldWrite::Dir => "dir",
        WouldWrite::Other(kind) => kind.name(),
        WouldWrite::Metadata => "metadata",
    };
    let mut entry = serde_json::json!({ "kind": kind, "path": path });
    if let Some(hex) = path_hex {
        entry["path_hex"] = hex.into();
    }
    match what {
        WouldWrite::File(size) => entry["size"] = (*size).into(),
        WouldWrite::Link(first) => entry["link_to"] = serde_json::json!(json_path(first)),
        _ => {}
    }
    entry
}

/// Ends a JSON dry run's listing: the rest of `stats` (none if the restore stopped), and
/// the objects the listing is in.
fn close_json_listing(stats: Option<&RestoreStats>) -> Result<()> {
    let mut tail = String::from("]");
    if let Some(stats) = stats {
        let fields = serde_json::to_value(stats)
            .map_err(|e| Error::Invalid(format!("cannot encode JSON: {e}")))?;
        for (name, value) in fields.as_object().into_iter().flatten() {
            tail += &format!(",{}:{value}", serde_json::Value::from(name.as_str()));
        }
    }
    println!("{tail}}}}}");
    Ok(())
}
