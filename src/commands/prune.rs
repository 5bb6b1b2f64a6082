//! `cairn prune`: frees the space of data no snapshot needs (see `cairn::prune`).

use cairn::error::{Error, Result};
use cairn::index::LocalIndex;
use cairn::prune::{self, PruneOptions, PruneReport};

use super::{Context, Outcome, human_bytes};
use crate::cli::PruneArgs;

/// Parses `5%` (or `0.05`) into a share.
pub fn parse_share(text: &str) -> Result<f64> {
    let bad = || {
        Error::Usage(format!(
            "--max-unused {text:?}: use a percentage such as 5%"
        ))
    };
    let share = match text.trim().strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
        None => text.trim().parse::<f64>().map_err(|_| bad())?,
    };
    if !(0.0..=1.0).contains(&share) {
        return Err(bad());
    }
    Ok(share)
}

/// Prune's options; the damaged blob locations come from the last `check --read-data` on this
/// machine, as the local index recorded them.
pub fn options(index: &LocalIndex, max_unused: f64, dry_run: bool) -> Result<PruneOptions> {
    Ok(PruneOptions {
        max_unused,
        dry_run,
        damaged: index
            .damaged_blobs()?
            .into_iter()
            .map(|(blob, pack, _)| (blob, pack))
            .collect(),
        without: Vec::new(),
    })
}

pub fn run(ctx: &Context, args: &PruneArgs) -> Result<Outcome> {
    let max_unused = parse_share(&args.max_unused)?;
    // A dry run writes nothing, so it needs no more than backups do: it blocks none of them.
    let (repo, lock, index) = ctx.open_locked(!args.dry_run)?;
    let opts = options(&index, max_unused, args.dry_run)?;
    // The generation changes: this machine's local index starts over at its next use.
    let report = prune::run(&repo, &lock, &opts)?;
    if ctx.json {
        super::print_json(&report)?;
    } else {
        print_report(&report);
    }
    Ok(Outcome::Success)
}

pub fn print_report(r: &PruneReport) {
    let would = if r.dry_run { "would be " } else { "" };
    println!(
        "{} snapshots; {} packs ({}) before",
        r.snapshots,
        r.packs_before,
        human_bytes(r.bytes_before)
    );
    println!(
        "{} packs ({}) {would}deleted, {} of them in no index; {} packs ({}) {would}repacked into {} new ({}); {} unused blobs {would}removed",
        r.packs_deleted + r.packs_unindexed_deleted,
        human_bytes(r.bytes_deleted),
        r.packs_unindexed_deleted,
        r.packs_repacked,
        human_bytes(r.bytes_repacked),
        r.packs_written,
        human_bytes(r.bytes_written),
        r.blobs_removed
    );
    let after = r.bytes_before - r.bytes_deleted - r.bytes_repacked + r.bytes_written;
    if r.leftovers_removed > 0 {
        println!(
            "{} temporary files of failed writes removed",
            r.leftovers_removed
        );
    }
    println!(
        "{}{} freed in {:.1} s",
        if r.dry_run { "dry run: " } else { "" },
        human_bytes(r.bytes_before.saturating_sub(after)),
        r.duration_ns as f64 / 1e9
    );
}
