//! `cairn restore SNAPSHOT[:PATH] --target DIR`: restore a snapshot, a folder or one file.

use std::os::unix::ffi::OsStrExt;

use cairn::blobs::find_node;
use cairn::error::{Error, Result};
use cairn::restore::{self, Overwrite, RestoreOptions, Selection, Start};
use cairn::snapshot;
use cairn::tree::NodeKind;

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
    let stats = restore::run(&repo, &index, start, &opts, &|path, err| {
        // An I/O error names its path already.
        let reason = match err {
            Error::Io { path: p, source } if p == path => source.to_string(),
            other => other.to_string(),
        };
        eprintln!(
            "error: {}: {reason}",
            for_terminal_bytes(path.as_os_str().as_bytes())
        );
    })?;
    if ctx.json {
        super::print_json(
            &serde_json::json!({ "snapshot_id": id.to_hex(), "dry_run": args.dry_run, "stats": stats }),
        )?;
    } else {
        for p in &stats.would_write {
            println!(
                "would restore {}",
                for_terminal_bytes(p.as_os_str().as_bytes())
            );
        }
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
