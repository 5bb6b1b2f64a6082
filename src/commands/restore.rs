//! `cairn restore SNAPSHOT --target DIR`: restore a whole snapshot.

use cairn::error::Result;
use cairn::restore::{self, RestoreOptions};
use cairn::snapshot;

use super::{Context, Outcome, human_bytes};
use crate::cli::RestoreArgs;

pub fn run(ctx: &Context, args: &RestoreArgs) -> Result<Outcome> {
    let (repo, index) = ctx.open()?;
    let (id, snap) = snapshot::find(&index, &args.snapshot)?;
    let opts = RestoreOptions {
        target: args.target.clone(),
        numeric_owner: args.numeric_owner,
    };
    let stats = restore::run(&repo, &index, &snap.tree, &opts, &|path, err| {
        eprintln!("error: {}: {err}", path.display());
    })?;
    if ctx.json {
        super::print_json(&serde_json::json!({ "snapshot_id": id.to_hex(), "stats": stats }))?;
    } else {
        ctx.note(&format!(
            "restored snapshot {} to {}: {} files, {} dirs, {} other, {}{}",
            id.short(),
            args.target.display(),
            stats.files,
            stats.dirs,
            stats.other_entries,
            human_bytes(stats.bytes),
            if stats.errors > 0 {
                format!("; {} entries FAILED (see above)", stats.errors)
            } else {
                String::new()
            }
        ));
    }
    Ok(if stats.errors > 0 {
        Outcome::Partial
    } else {
        Outcome::Success
    })
}
