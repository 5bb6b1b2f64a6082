//! `cairn backup PATH...`: store a new snapshot.

use cairn::backup::{self, BackupOptions, Warning};
use cairn::chunk::ChunkerParams;
use cairn::error::{Error, Result};
use cairn::repo::Repository;

use super::{Context, Outcome, human_bytes};
use crate::cli::BackupArgs;

pub fn run(ctx: &Context, args: &BackupArgs) -> Result<Outcome> {
    let opts = BackupOptions {
        sources: args.paths.clone(),
        tags: args.tags.clone(),
        hostname: args.host.clone().unwrap_or_else(cairn::host::hostname),
        zstd_level: args.compression,
        chunker: ChunkerParams::FILES,
    };
    // Check the sources before touching (or creating) the repository.
    cairn::walk::prepare_sources(&opts.sources)?;
    let repo = open_or_init(ctx, args)?;
    let mut index = ctx.open_index(&repo)?;
    let mut warnings: Vec<Warning> = Vec::new();
    let outcome = backup::run(&repo, &mut index, &opts, &mut |w: Warning| {
        eprintln!("warning: {}: {}", w.path.display(), w.message);
        warnings.push(w);
    })?;
    let s = &outcome.snapshot.summary;
    if ctx.json {
        super::print_json(&serde_json::json!({
            "snapshot_id": outcome.id.to_hex(),
            "short_id": outcome.id.short(),
            "partial": outcome.snapshot.partial,
            "summary": s,
            "warnings": warnings.iter().map(|w| serde_json::json!({
                "path": w.path.to_string_lossy(),
                "message": w.message,
            })).collect::<Vec<_>>(),
        }))?;
    } else if !ctx.quiet {
        println!(
            "snapshot {} saved{}",
            outcome.id.short(),
            if outcome.snapshot.partial {
                " (partial: some entries could not be read)"
            } else {
                ""
            }
        );
        println!(
            "files: {}, dirs: {}, other: {}, skipped: {}",
            s.files, s.dirs, s.other_entries, s.skipped
        );
        println!(
            "read {}, added {} to the repository ({} before compression), in {:.2} s",
            human_bytes(s.bytes_read),
            human_bytes(s.bytes_added_stored),
            human_bytes(s.bytes_added_raw),
            s.duration_ns as f64 / 1e9
        );
    }
    Ok(if outcome.snapshot.partial {
        Outcome::Partial
    } else {
        Outcome::Success
    })
}

fn open_or_init(ctx: &Context, args: &BackupArgs) -> Result<Repository> {
    let opened = ctx
        .storage(false)
        .and_then(|storage| Repository::open(storage, || ctx.password(false)));
    match opened {
        Err(Error::RepositoryNotFound { .. }) if args.init => {
            let repo = ctx.init(&args.kdf)?;
            ctx.note(&format!(
                "created cairn repository {} at {}",
                repo.id().short(),
                repo.location()
            ));
            Ok(repo)
        }
        other => other,
    }
}
