//! `cairn backup`: store a new snapshot of paths or of a stream, with a progress bar on a
//! terminal and a summary (or one JSON object) at the end.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use cairn::backup::{
    self, BackupOptions, ExcludeOptions, FileStatus, ParentChoice, Reporter, Source, StreamSource,
    Warning, exclude,
};
use cairn::blobs::lock;
use cairn::chunk::ChunkerParams;
use cairn::error::{Error, Result};
use cairn::repo::Repository;
use cairn::terminal;
use indicatif::{ProgressBar, ProgressStyle};

use super::{Context, Outcome, human_bytes, path_json};
use crate::cli::BackupArgs;

struct CliReporter {
    warnings: Mutex<Vec<Warning>>,
    bar: Option<ProgressBar>,
    list_files: bool,
    /// Set once the listing could not be written: the backup stops. (Read before every
    /// entry, so a lock-free read.)
    output_failed: std::sync::OnceLock<String>,
}

impl Reporter for CliReporter {
    fn warning(&self, w: Warning) {
        let line = format!("warning: {}: {}", terminal::path(&w.path), w.message);
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
        lock(&self.warnings).push(w);
    }

    fn file_started(&self, path: &Path) {
        if let Some(bar) = &self.bar {
            bar.set_message(terminal::path(path));
        }
    }

    fn bytes_read(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    fn file_done(&self, path: &Path, status: FileStatus, size: u64) {
        if let Some(bar) = &self.bar
            && status == FileStatus::Unchanged
        {
            bar.inc(size);
        }
        if self.list_files && status != FileStatus::Unchanged {
            let what = if status == FileStatus::New {
                "new"
            } else {
                "changed"
            };
            let line = format!("{what:<8} {} ({})", terminal::path(path), human_bytes(size));
            use std::io::Write;
            if let Err(e) = writeln!(std::io::stdout().lock(), "{line}") {
                let _ = self.output_failed.set(format!(
                    "cannot write to standard output ({e}); the listing is incomplete"
                ));
            }
        }
    }

    fn stop(&self) -> Option<String> {
        self.output_failed.get().cloned()
    }
}

fn options(args: &BackupArgs) -> Result<BackupOptions> {
    if args.stdin && std::io::stdin().is_terminal() {
        return Err(Error::Usage(
            "--stdin reads standard input, which is a terminal here: pipe the stream in \
             (pg_dump mydb | cairn backup --stdin), or use --stdin-from-command"
                .into(),
        ));
    }
    let source = if args.stdin {
        Source::Stream {
            source: StreamSource::Stdin,
            name: args.stdin_name.clone(),
        }
    } else if args.stdin_from_command {
        Source::Stream {
            source: StreamSource::Command(
                args.paths
                    .iter()
                    .map(|p| p.clone().into_os_string())
                    .collect(),
            ),
            name: args.stdin_name.clone(),
        }
    } else {
        Source::Paths(args.paths.clone())
    };
    let mut patterns = args.excludes.clone();
    for f in &args.exclude_files {
        patterns.extend(exclude::read_pattern_file(f)?);
    }
    Ok(BackupOptions {
        source,
        tags: args.tags.clone(),
        hostname: args.host.clone().unwrap_or_else(cairn::host::hostname),
        zstd_level: args.compression,
        chunker: args.chunk_profile.as_deref().map(|p| match p {
            "small" => ChunkerParams::SMALL,
            _ => ChunkerParams::FILES,
        }),
        excludes: ExcludeOptions {
            patterns,
            if_present: args.exclude_if_present.clone(),
            larger_than: args
                .exclude_larger_than
                .as_deref()
                .map(exclude::parse_size)
                .transpose()?,
            one_file_system: args.one_file_system,
        },
        parent: match (&args.parent, args.force) {
            (Some(p), _) => ParentChoice::Named(p.clone()),
            (None, true) => ParentChoice::None,
            (None, false) => ParentChoice::Auto,
        },
        dry_run: args.dry_run,
        time_ns: args.time.as_deref().map(parse_time).transpose()?,
    })
}

/// RFC 3339, or `YYYY-MM-DD HH:MM[:SS]` in local time.
fn parse_time(text: &str) -> Result<i64> {
    use chrono::{DateTime, Local, NaiveDateTime, TimeZone};
    let parsed = DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_nanos_opt())
        .ok()
        .flatten();
    let local = || {
        ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
            .and_then(|n| Local.from_local_datetime(&n).earliest())
            .and_then(|t| t.timestamp_nanos_opt())
    };
    parsed.or_else(local).ok_or_else(|| {
        Error::Usage(format!(
            "--time {text:?}: use RFC 3339 or \"YYYY-MM-DD HH:MM:SS\""
        ))
    })
}

fn progress_bar(ctx: &Context, opts: &BackupOptions) -> Option<ProgressBar> {
    if ctx.quiet || ctx.json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} ETA {eta:<4} {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    if let Source::Paths(paths) = &opts.source {
        spawn_prescan(bar.clone(), paths, &opts.excludes);
    }
    Some(bar)
}

/// Counts the bytes to read alongside the backup, so the bar can show an ETA.
fn spawn_prescan(bar: ProgressBar, paths: &[PathBuf], excludes: &ExcludeOptions) {
    let (Ok(sources), Ok(excludes)) = (
        cairn::walk::prepare_sources(paths),
        backup::Excludes::new(excludes),
    ) else {
        return;
    };
    std::thread::spawn(move || backup::prescan(&sources, &excludes, |n| bar.inc_length(n)));
}

pub fn run(ctx: &Context, args: &BackupArgs) -> Result<Outcome> {
    let opts = options(args)?;
    super::set_worker_threads(args.threads)?;
    // Check the options and sources before touching (or creating) the repository.
    backup::check_options(&opts)?;
    let ahead = backup::list_ahead(&opts)?;
    let preparing = ctx.prepare_index();
    let repo = open_or_init(ctx, args)?;
    let lock = ctx.lock(&repo, false)?;
    let mut index = ctx.open_prepared_index(&repo, preparing)?;
    let reporter = CliReporter {
        warnings: Mutex::new(Vec::new()),
        bar: progress_bar(ctx, &opts),
        list_files: opts.dry_run && !ctx.json,
        output_failed: std::sync::OnceLock::new(),
    };
    let result = backup::run(
        &repo,
        &mut index,
        &opts,
        &reporter,
        Some(&lock),
        ahead.as_ref(),
    );
    if let Some(bar) = &reporter.bar {
        bar.finish_and_clear();
    }
    let outcome = result?;
    ctx.warn_lost_packs(
        &outcome.lost_packs,
        "what this backup needed of them was stored again",
    );
    let warnings = reporter.warnings.into_inner().unwrap_or_default();
    print_summary(ctx, &outcome, &warnings)?;
    Ok(if outcome.snapshot.partial {
        Outcome::Partial
    } else {
        Outcome::Success
    })
}

fn print_summary(
    ctx: &Context,
    outcome: &backup::BackupOutcome,
    warnings: &[Warning],
) -> Result<()> {
    let s = &outcome.snapshot.summary;
    // The snapshot's file bytes for each byte it added (before compression); none when it
    // added nothing (an unchanged backup).
    let dedup_ratio =
        (s.bytes_added_raw > 0).then(|| s.total_file_bytes as f64 / s.bytes_added_raw as f64);
    if ctx.json {
        return super::print_json(&serde_json::json!({
            "snapshot_id": outcome.id.map(|i| i.to_hex()),
            "short_id": outcome.id.map(|i| i.short()),
            "parent": outcome.parent.map(|i| i.to_hex()),
            "dry_run": outcome.id.is_none(),
            "partial": outcome.snapshot.partial,
            "summary": s,
            "dedup_ratio": dedup_ratio,
            "lost_packs": outcome.lost_packs.iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
            "warnings": warnings.iter().map(|w| {
                let mut warning = path_json(&w.path);
                warning["message"] = w.message.clone().into();
                warning
            }).collect::<Vec<_>>(),
        }));
    }
    if ctx.quiet {
        return Ok(());
    }
    match outcome.id {
        Some(id) => println!(
            "snapshot {} saved{}{}",
            id.short(),
            outcome
                .parent
                .map(|p| format!(" (parent {})", p.short()))
                .unwrap_or_default(),
            if outcome.snapshot.partial {
                "; PARTIAL: some entries could not be read (see warnings)"
            } else {
                ""
            }
        ),
        None => println!("dry run: nothing was written"),
    }
    println!(
        "files: {} new, {} changed, {} unchanged; {} dirs, {} other, {} skipped",
        s.files_new, s.files_changed, s.files_unchanged, s.dirs, s.other_entries, s.skipped
    );
    println!(
        "read {}, added {} ({} before compression), {}, in {:.2} s",
        human_bytes(s.bytes_read),
        human_bytes(s.bytes_added_stored),
        human_bytes(s.bytes_added_raw),
        dedup_ratio.map_or_else(
            || "nothing new".to_string(),
            |r| format!("dedup ratio {r:.1}")
        ),
        s.duration_ns as f64 / 1e9
    );
    Ok(())
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
