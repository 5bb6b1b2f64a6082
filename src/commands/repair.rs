//! `cairn repair index`, `cairn repair snapshots` and `cairn repair config`.

use std::collections::HashMap;

use cairn::error::Result;
use cairn::ids::PackId;
use cairn::repair::index as repair_index;
use cairn::repair::snapshots::{self as repair_snapshots, RepairSnapshotsOptions};
use cairn::repo::Repository;
use cairn::snapshot;

use super::{Context, Outcome};
use crate::cli::{RepairCommand, RepairConfigArgs, RepairIndexArgs, RepairSnapshotsArgs};

pub fn run(ctx: &Context, command: &RepairCommand) -> Result<Outcome> {
    match command {
        RepairCommand::Index(a) => index(ctx, a),
        RepairCommand::Snapshots(a) => snapshots(ctx, a),
        RepairCommand::Config(a) => config(ctx, a),
    }
}

/// Writes a damaged or lost config again from what opening the repository recovered (the
/// repository id a key file records), or an intact one written before configs had a
/// checksum, with one; an intact one with a checksum is left alone.
fn config(ctx: &Context, args: &RepairConfigArgs) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let why = match repo.config_damage() {
        Some(damage) => format!("it is damaged: {damage}"),
        None if !repo.config_has_checksum() => {
            "it has no checksum, which configs written from 2026-11-24 on have".to_string()
        }
        None => {
            ctx.note("the config is intact; nothing to do");
            return Ok(Outcome::Success);
        }
    };
    let id = repo.id().to_hex();
    if args.dry_run {
        ctx.note(&format!(
            "would write the config again with repository id {id} ({why})"
        ));
        return Ok(Outcome::Success);
    }
    let _lock = ctx.lock(&repo, true)?;
    repo.rewrite_config()?;
    ctx.note(&format!(
        "wrote the config again with repository id {id} ({why})"
    ));
    Ok(Outcome::Success)
}

fn index(ctx: &Context, args: &RepairIndexArgs) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let lock = ctx.lock(&repo, true)?;
    let found_damaged = recorded_damage(ctx, &repo);
    let report = repair_index::run(&repo, &lock, &found_damaged, args.dry_run)?;
    if !args.dry_run && report.changed {
        // The old segments are gone, so the local index rebuilds itself from the new ones;
        // what the last check found damaged in packs now gone (deleted now, or by a repair
        // that was interrupted) is moot.
        let mut index = ctx.open_index(&repo)?;
        let deleted = report.salvaged.iter().filter(|s| s.deleted).map(|s| s.pack);
        let gone: Vec<PackId> = deleted
            .chain(report.packs_dropped.iter().copied())
            .collect();
        index.record_verified_packs(&gone, &[])?;
    }
    // The index is right now, but data it listed is gone (or may be, in a pack no one can
    // say the content of): that is still damage (exit 17).
    let lost = report.blobs_lost_with_dropped > 0
        || (report.salvaged.iter()).any(|s| s.blobs_lost > 0 || s.contents_unknown);
    let outcome = if lost {
        Outcome::Damaged
    } else {
        Outcome::Success
    };
    if ctx.json {
        super::print_json(&report)?;
        return Ok(outcome);
    }
    let would = if args.dry_run { "would be " } else { "" };
    for p in &report.packs_added {
        println!("pack {p}: in no index segment; {would}added");
    }
    for p in &report.packs_dropped {
        println!("pack {p}: missing from storage; {would}dropped from the index");
    }
    for s in &report.salvaged {
        println!(
            "pack {}: {}; {} blobs {}copied into a new pack, {} lost{}",
            s.pack,
            s.reason,
            s.blobs_saved,
            would,
            s.blobs_lost,
            if s.deleted {
                "; the damaged pack was deleted"
            } else {
                ""
            }
        );
    }
    for p in &report.packs_corrected {
        println!("pack {p}: the index {would}corrected from the pack header");
    }
    if report.segments_unreadable > 0 {
        println!(
            "{} unreadable index segment(s) {would}replaced",
            report.segments_unreadable
        );
    }
    if !report.changed {
        println!(
            "the index already matches the {} packs on storage; nothing to do",
            report.packs_indexed
        );
    } else if args.dry_run {
        println!(
            "dry run: {} packs would be indexed; nothing was written",
            report.packs_indexed
        );
    } else {
        println!(
            "indexed {} packs in {} new segment(s); removed {} old segment(s)",
            report.packs_indexed, report.segments_written, report.segments_removed
        );
    }
    if lost {
        ctx.note(
            "data the index listed is lost: run the next backup (it stores again what is still on \
             the source), then `cairn repair snapshots` for the snapshots still affected",
        );
    }
    Ok(outcome)
}

/// Packs in which the last `check --read-data` on this machine found damaged blobs, with how
/// many. A local index that cannot be opened only costs that (the repair needs none).
fn recorded_damage(ctx: &Context, repo: &Repository) -> HashMap<PackId, usize> {
    let mut packs = HashMap::new();
    match ctx.open_index(repo).and_then(|index| index.damaged_blobs()) {
        Ok(blobs) => {
            for (_, pack, _) in blobs {
                *packs.entry(pack).or_default() += 1;
            }
        }
        Err(e) => eprintln!(
            "cairn: warning: the local index could not be read ({e}); packs the last \
             `check --read-data` found damaged are not salvaged"
        ),
    }
    packs
}

fn snapshots(ctx: &Context, args: &RepairSnapshotsArgs) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let lock = ctx.lock(&repo, true)?;
    // Lookups then prefer a copy stored again over one in a lost pack.
    let mut index = ctx.open_index_for_reading(&repo)?;
    let chosen = args
        .snapshots
        .iter()
        .map(|name| snapshot::find(&index, name).map(|(id, _)| id))
        .collect::<Result<Vec<_>>>()?;
    let opts = RepairSnapshotsOptions {
        truncate: args.truncate,
        forget: args.forget,
        dry_run: args.dry_run,
        snapshots: chosen,
        zstd_level: 3,
    };
    let report = repair_snapshots::run(&repo, &mut index, Some(&lock), &opts)?;
    if ctx.json {
        super::print_json(&report)?;
    } else {
        print_snapshots(&report, args.dry_run);
    }
    Ok(
        if report.snapshots.iter().any(|s| s.unrepairable.is_some()) {
            Outcome::Partial
        } else {
            Outcome::Success
        },
    )
}

fn print_snapshots(report: &repair_snapshots::RepairSnapshotsReport, dry_run: bool) {
    for s in &report.snapshots {
        let original = s.original.short();
        if let Some(why) = &s.unrepairable {
            println!("snapshot {original} cannot be repaired: {why}; it was left as it is");
            continue;
        }
        if s.earlier {
            let new = s.repaired.map(|id| id.short()).unwrap_or_default();
            let forgotten = if s.forgotten {
                "; the original was forgotten now"
            } else {
                ""
            };
            println!("snapshot {original} was repaired before, as {new}{forgotten}");
            continue;
        }
        for c in &s.changes {
            let path = super::for_terminal_bytes(&c.path.bytes);
            println!("snapshot {original} {} {path}: {}", c.action, c.reason);
        }
        match (&s.repaired, dry_run) {
            (Some(new), _) => println!(
                "snapshot {original} repaired as {}{}",
                new.short(),
                if s.forgotten {
                    "; the original was forgotten"
                } else {
                    "; the original is kept"
                }
            ),
            (None, _) => println!("snapshot {original} would be repaired (dry run)"),
        }
    }
    println!("{} snapshot(s) needed no repair", report.unchanged);
}
