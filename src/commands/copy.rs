//! `cairn copy --from-repo SRC`: copies snapshots from SRC into the repository, each under a
//! shared lock of its repository (see `cairn::copy` for what is guaranteed).

use cairn::copy::{self, Destination};
use cairn::error::Result;
use cairn::repo::Repository;
use cairn::repo::lock::RepositoryLock;
use cairn::snapshot;
use cairn::storage;

use super::{Context, Outcome, human_bytes};
use crate::cli::CopyArgs;

pub fn run(ctx: &Context, args: &CopyArgs) -> Result<Outcome> {
    let source = Repository::open(storage::open_location(&args.from_repo, false)?, || {
        ctx.source_password(args.from_password_file.as_deref())
    })?;
    let _source_lock = RepositoryLock::acquire(&source, false, ctx.retry_lock)?;
    let source_index = ctx.open_index_for_reading(&source)?;
    let source_all = snapshot::list(&source_index)?;
    let chosen = if args.snapshots.is_empty() {
        let filter = args.filter.filter();
        source_all
            .iter()
            .filter(|(_, s)| filter.matches(s))
            .cloned()
            .collect()
    } else {
        args.snapshots
            .iter()
            .map(|name| snapshot::find(&source_index, name))
            .collect::<Result<Vec<_>>>()?
    };
    let reader = cairn::blobs::BlobReader::new(&source, source_index);

    let (repo, lock, mut index) = ctx.open_locked(false)?;
    let dest_snapshots = snapshot::list(&index)?;
    let dest = Destination {
        repo: &repo,
        index: &mut index,
        lock: &lock,
        zstd_level: 3,
    };
    let report = copy::copy(
        &reader,
        chosen,
        &source_all,
        dest,
        dest_snapshots,
        args.dry_run,
    )?;
    if ctx.json {
        super::print_json(&report)?;
        return Ok(Outcome::Success);
    }
    for c in &report.copied {
        match c.copy {
            Some(copy) => println!("copied snapshot {} as {}", c.source.short(), copy.short()),
            None => println!("would copy snapshot {}", c.source.short()),
        }
    }
    ctx.note(&format!(
        "{} snapshot(s) copied, {} already there; read {} in {} blobs from {}, stored {} in {} blobs",
        report.copied.len(),
        report.already_there,
        human_bytes(report.bytes_read),
        report.blobs_read,
        source.location(),
        human_bytes(report.bytes_added),
        report.blobs_added,
    ));
    Ok(Outcome::Success)
}
