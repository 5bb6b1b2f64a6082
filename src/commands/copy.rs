//! `cairn copy --from-repo SRC`: copies snapshots from SRC into the repository, each under a
//! shared lock of its repository (see `cairn::copy` for what is guaranteed).

use cairn::blobs::BlobReader;
use cairn::copy::{self, CopyReport, Destination, Source};
use cairn::error::{Error, Result};
use cairn::repo::Repository;
use cairn::repo::lock::RepositoryLock;
use cairn::snapshot::{self, Snapshot};
use cairn::storage;

use super::{Context, Outcome, human_bytes};
use crate::cli::CopyArgs;

pub fn run(ctx: &Context, args: &CopyArgs) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let source = Repository::open(storage::open_location(&args.from_repo, false)?, || {
        ctx.source_password(args.from_password_file.as_deref())
    })?;
    if source.id() == repo.id() {
        return Err(Error::Usage(format!(
            "{} and {} are the same repository (id {}): copy between repositories made by separate `cairn init`s; to mirror one, copy its files (rsync, rclone)",
            source.location(),
            repo.location(),
            repo.id().short()
        )));
    }
    let source_lock = RepositoryLock::acquire(&source, false, ctx.retry_lock)?;
    let source_index = ctx.open_index_for_reading(&source)?;
    let source_snapshots = snapshot::list(&source_index)?;
    let chosen = choose(args, &source_index, &source_snapshots)?;
    let reader = BlobReader::new(&source, source_index);

    let lock = ctx.lock(&repo, false)?;
    let mut index = ctx.open_index(&repo)?;
    // Blobs in lost packs must not count as stored: they are copied again.
    let lost = index.validate_packs(&repo)?;
    ctx.warn_lost_packs(&lost, "data the copy needs from them is stored again");
    let dest_snapshots = snapshot::list(&index)?;
    let report = copy::copy(
        Source {
            id: *source.id(),
            reader: &reader,
            snapshots: &source_snapshots,
            lock: &source_lock,
        },
        chosen,
        Destination {
            repo: &repo,
            index: &mut index,
            lock: &lock,
            zstd_level: args.compression,
        },
        &dest_snapshots,
        args.dry_run,
    )?;
    print(ctx, &report, &source)?;
    Ok(if report.failed.is_empty() {
        Outcome::Success
    } else {
        Outcome::Partial
    })
}

fn choose(
    args: &CopyArgs,
    source_index: &cairn::index::LocalIndex,
    all: &[(cairn::ids::SnapshotId, Snapshot)],
) -> Result<Vec<(cairn::ids::SnapshotId, Snapshot)>> {
    let filter = args.filter.filter();
    if args.snapshots.is_empty() {
        Ok(all
            .iter()
            .filter(|(_, s)| filter.matches(s))
            .cloned()
            .collect())
    } else {
        args.snapshots
            .iter()
            .map(|name| snapshot::find_matching(source_index, name, &filter))
            .collect()
    }
}

fn print(ctx: &Context, report: &CopyReport, source: &Repository) -> Result<()> {
    for warning in &report.warnings {
        eprintln!("cairn: warning: {warning}");
    }
    for failed in &report.failed {
        eprintln!(
            "cairn: snapshot {} was not copied: {}",
            failed.source.short(),
            failed.error
        );
    }
    if ctx.json {
        return super::print_json(report);
    }
    let mut would = false;
    for c in &report.copied {
        match c.copy {
            Some(copy) => println!("copied snapshot {} as {}", c.source.short(), copy.short()),
            None => {
                would = true;
                println!("would copy snapshot {}", c.source.short());
            }
        }
    }
    let verb = if would { "to copy" } else { "copied" };
    ctx.note(&format!(
        "{} snapshot(s) {verb}, {} already there, {} failed; read {} in {} blobs from {}, stored {} in {} blobs",
        report.copied.len(),
        report.already_there,
        report.failed.len(),
        human_bytes(report.bytes_read),
        report.blobs_read,
        source.location(),
        human_bytes(report.bytes_added),
        report.blobs_added,
    ));
    Ok(())
}
