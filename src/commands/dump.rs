//! `cairn dump SNAPSHOT PATH`: write one file of a snapshot to standard output, verified blob
//! by blob, so `cairn dump latest db.sql | psql mydb` restores a database.

use std::io::Write;

use cairn::blobs::{BlobReader, find_node};
use cairn::error::{Error, Result};
use cairn::snapshot;
use cairn::tree::NodeKind;

use super::{Context, Outcome};
use crate::cli::DumpArgs;

pub fn run(ctx: &Context, args: &DumpArgs) -> Result<Outcome> {
    let (repo, index) = ctx.open()?;
    let (id, snap) = snapshot::find(&index, &args.snapshot)?;
    let not_found = || Error::PathNotInSnapshot {
        snapshot: id.short(),
        path: args.path.clone(),
    };
    let node = find_node(&repo, &index, &snap.tree, args.path.as_bytes())
        .map_err(|e| match e {
            Error::PathNotInSnapshot { .. } => not_found(),
            other => other,
        })?
        .ok_or_else(not_found)?;
    if node.kind != NodeKind::File {
        return Err(Error::Invalid(format!(
            "{} in snapshot {} is not a file; use `cairn restore` for folders",
            args.path,
            id.short()
        )));
    }
    let reader = BlobReader::new(&repo, index);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    for blob in &node.content {
        let data = reader.blob(blob)?;
        out.write_all(&data)
            .map_err(|e| Error::io("standard output", e))?;
    }
    out.flush().map_err(|e| Error::io("standard output", e))?;
    Ok(Outcome::Success)
}
