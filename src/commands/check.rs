//! `cairn check`: structure always, pack contents with `--read-data`. Prints every problem, then
//! every snapshot entry it makes unrestorable; exits 17 when damage was found.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use cairn::check::{self, CheckOptions, CheckProgress, CheckReport, DataSubset};
use cairn::error::Result;
use indicatif::{ProgressBar, ProgressStyle};

use super::{Context, Outcome, human_bytes};
use crate::cli::CheckArgs;

/// How many affected entries per snapshot the text report prints (JSON has them all).
const AFFECTED_SHOWN: usize = 20;

struct Bar(Option<ProgressBar>);

impl CheckProgress for Bar {
    fn phase(&self, name: &str, total: u64) {
        if let Some(bar) = &self.0 {
            let template = if name == "read data" {
                "{elapsed_precise} {msg:<12} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} ETA {eta}"
            } else {
                "{elapsed_precise} {msg:<12} {pos:>8}/{len:<8}"
            };
            bar.set_style(
                ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message(name.to_string());
            bar.set_length(total);
            bar.set_position(0);
        }
    }

    fn advance(&self, n: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(n);
        }
    }
}

pub fn run(ctx: &Context, args: &CheckArgs) -> Result<Outcome> {
    let opts = CheckOptions {
        read_data: match &args.read_data_subset {
            Some(text) => Some(DataSubset::parse(text)?),
            None => args.read_data.then_some(DataSubset::All),
        },
        threads: args.threads.unwrap_or_else(super::default_threads),
    };
    let started = Instant::now();
    let (repo, _lock, mut index) = ctx.open_locked(false)?;
    let bar = (!ctx.quiet && !ctx.json && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(0);
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let progress = Bar(bar);
    let report = check::run(&repo, &mut index, &opts, &progress);
    if let Some(bar) = &progress.0 {
        bar.finish_and_clear();
    }
    let report = report?;
    if ctx.json {
        super::print_json(&report)?;
    } else {
        print_text(ctx, &report, started.elapsed());
    }
    Ok(if report.is_clean() {
        Outcome::Success
    } else {
        Outcome::Damaged
    })
}

fn print_text(ctx: &Context, report: &CheckReport, elapsed: Duration) {
    let s = &report.stats;
    let mut line = format!(
        "checked {} snapshots, {} trees, {} blobs in {} packs ({} index segments)",
        s.snapshots, s.trees, s.blobs, s.packs, s.index_segments
    );
    if s.packs_read > 0 {
        line += &format!(
            "; read {} in {} packs",
            human_bytes(s.bytes_read),
            s.packs_read
        );
    }
    ctx.note(&format!("{line} in {:.1} s", elapsed.as_secs_f64()));
    for w in &report.warnings {
        ctx.note(&format!("warning: {w}"));
    }
    if report.is_clean() {
        println!("no damage found");
        return;
    }
    println!("damage found: {} problem(s)", report.problems.len());
    for p in &report.problems {
        println!("  {p}");
    }
    let snapshots: BTreeSet<_> = report.affected.iter().map(|a| a.snapshot).collect();
    for sid in &snapshots {
        let entries: Vec<_> = report
            .affected
            .iter()
            .filter(|a| a.snapshot == *sid)
            .collect();
        for a in entries.iter().take(AFFECTED_SHOWN) {
            let what = if a.node == "dir" { "folder" } else { "file" };
            println!(
                "snapshot {} {what} {} cannot be restored: {}",
                sid.short(),
                super::for_terminal_bytes(&a.path.bytes),
                a.reason
            );
        }
        if entries.len() > AFFECTED_SHOWN {
            println!(
                "snapshot {} … and {} more entries (--json lists them all)",
                sid.short(),
                entries.len() - AFFECTED_SHOWN
            );
        }
    }
    println!(
        "{} entries in {} snapshot(s) are affected; everything else restores. Keep a copy of the repository as it is; \
         `cairn repair index` rebuilds the index from the packs, `cairn repair snapshots` removes the damaged files from \
         snapshots, and the next backup stores again whatever data is still on the source.",
        report.affected.len(),
        snapshots.len()
    );
}
