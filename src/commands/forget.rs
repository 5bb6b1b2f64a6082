//! `cairn forget`: removes snapshots by retention policy (see `cairn::retention`) or by id,
//! then optionally prunes.

use cairn::error::{Error, Result};
use cairn::host::format_time;
use cairn::retention::forget::{self, ForgetOptions, GroupPlan, Removed};
use cairn::retention::{CalendarSpan, GroupBy, Policy};
use cairn::snapshot;

use super::{Context, Outcome, for_terminal, for_terminal_bytes};
use crate::cli::ForgetArgs;

fn options(args: &ForgetArgs) -> Result<ForgetOptions> {
    let policy = Policy {
        last: args.keep_last,
        hourly: args.keep_hourly,
        daily: args.keep_daily,
        weekly: args.keep_weekly,
        monthly: args.keep_monthly,
        yearly: args.keep_yearly,
        within: args
            .keep_within
            .as_deref()
            .map(CalendarSpan::parse)
            .transpose()?,
        tags: args.keep_tag.clone(),
    };
    if !args.snapshots.is_empty() && !policy.is_empty() {
        return Err(Error::Usage(
            "name snapshots to forget or give a policy (--keep-…), not both".into(),
        ));
    }
    Ok(ForgetOptions {
        policy,
        group_by: GroupBy::parse(&args.group_by)?,
        filter: args.filter.filter(),
        allow_remove_all: args.allow_remove_all,
    })
}

pub fn run(ctx: &Context, args: &ForgetArgs) -> Result<Outcome> {
    let opts = options(args)?;
    let max_unused = super::prune::parse_share(&args.max_unused)?;
    // A dry run changes nothing, so it does not keep backups out.
    let (repo, lock, index) = ctx.open_locked(!args.dry_run)?;
    if !args.dry_run {
        let finished = forget::finish_pending(&repo)?.len();
        if finished > 0 {
            ctx.note(&format!(
                "finished an interrupted forget: {finished} snapshot file(s) deleted"
            ));
        }
    }
    let mut prune = super::prune::options(&index, max_unused, args.dry_run)?;
    let (all, superseded) = snapshot::list_with_superseded(&index)?;
    let plans = if args.snapshots.is_empty() {
        forget::plan(&all, &opts)?
    } else {
        named(&index, &args.snapshots, &opts.filter)?
    };
    // Superseded snapshots (left by an interrupted `tag`) are hidden already; they go too.
    let mut doomed: Vec<_> = plans
        .iter()
        .flat_map(|p| p.remove.iter().map(|r| r.id))
        .collect();
    doomed.extend(superseded);
    // Gone (or, in a dry run, as good as gone) for the prune that follows, also where
    // listings lag behind deletions.
    prune.without = doomed.clone();
    if args.dry_run {
        if !ctx.json {
            print_plans(&plans, &all, true);
        }
    } else {
        lock.check()?;
        forget::remove(&repo, &doomed)?;
        // Only now: "removed" is printed for what is gone.
        if !ctx.json {
            print_plans(&plans, &all, false);
        }
        ctx.note(&format!("{} snapshot(s) removed", doomed.len()));
    }
    let pruned = if args.prune {
        Some(cairn::prune::run(&repo, &lock, &prune)?)
    } else {
        None
    };
    match (&pruned, ctx.json) {
        (None, true) => super::print_json(&plans)?,
        (Some(report), true) => {
            super::print_json(&serde_json::json!({ "forget": plans, "prune": report }))?
        }
        (Some(report), false) => super::prune::print_report(report),
        (None, false) => {}
    }
    Ok(Outcome::Success)
}

/// `forget ID...`: one pseudo-group of the named snapshots (among those the filters match).
fn named(
    index: &cairn::index::LocalIndex,
    names: &[String],
    filter: &snapshot::Filter,
) -> Result<Vec<GroupPlan>> {
    let mut remove = Vec::new();
    for name in names {
        let (id, s) = snapshot::find_matching(index, name, filter)?;
        if !remove.iter().any(|r: &Removed| r.id == id) {
            remove.push(Removed {
                id,
                time_ns: s.time_ns,
            });
        }
    }
    Ok(vec![GroupPlan {
        group: cairn::retention::GroupKey::default(),
        keep: Vec::new(),
        remove,
    }])
}

fn print_plans(
    plans: &[GroupPlan],
    all: &[(cairn::ids::SnapshotId, snapshot::Snapshot)],
    dry_run: bool,
) {
    let time = |id: &cairn::ids::SnapshotId, ns: i64| {
        let offset = all
            .iter()
            .find(|(i, _)| i == id)
            .map_or(0, |(_, s)| s.utc_offset_s);
        format_time(ns - ns % 1_000_000_000, offset)
    };
    for plan in plans {
        let g = &plan.group;
        if !(g.host.is_empty() && g.paths.is_empty() && g.tags.is_empty()) {
            let paths: Vec<_> = g.raw_paths.iter().map(|p| for_terminal_bytes(p)).collect();
            println!(
                "host {:?}, paths [{}], tags [{}]:",
                g.host,
                paths.join(", "),
                for_terminal(&g.tags.join(", "))
            );
        }
        for k in &plan.keep {
            println!(
                "  keep    {}  {}  {}",
                k.id.short(),
                time(&k.id, k.time_ns),
                k.reasons.join(", ")
            );
        }
        for r in &plan.remove {
            println!(
                "  {}  {}  {}",
                if dry_run { "remove" } else { "removed" },
                r.id.short(),
                time(&r.id, r.time_ns)
            );
        }
    }
}
