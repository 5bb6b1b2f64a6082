//! `cairn tag`: changes the tags of snapshots. Each changed snapshot is written anew with the
//! new tags and a pointer to the one it replaces (which is hidden from then on), then the old
//! file is deleted: at every instant exactly one version is visible.

use cairn::error::{Error, Result};
use cairn::repo::{FileKind, object_path};
use cairn::snapshot::{self, Snapshot};

use super::{Context, Outcome};
use crate::cli::TagArgs;

fn retag(s: &Snapshot, args: &TagArgs) -> Vec<String> {
    let mut tags: Vec<String> = if args.set.is_empty() {
        s.tags.clone()
    } else {
        args.set.iter().filter(|t| !t.is_empty()).cloned().collect()
    };
    for t in &args.add {
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    tags.retain(|t| !args.remove.contains(t));
    tags
}

pub fn run(ctx: &Context, args: &TagArgs) -> Result<Outcome> {
    if args.add.is_empty() && args.remove.is_empty() && args.set.is_empty() {
        return Err(Error::Usage(
            "nothing to do: give --add, --remove or --set".into(),
        ));
    }
    let (repo, lock, index) = ctx.open_locked(true)?;
    let filter = args.filter.filter();
    let chosen: Vec<_> = if args.snapshots.is_empty() {
        snapshot::list(&index)?
            .into_iter()
            .filter(|(_, s)| filter.matches(s))
            .collect()
    } else {
        args.snapshots
            .iter()
            .map(|name| snapshot::find_matching(&index, name, &filter))
            .collect::<Result<_>>()?
    };
    let mut changed = 0;
    for (id, s) in chosen {
        let tags = retag(&s, args);
        if tags == s.tags {
            continue;
        }
        let replacement = Snapshot {
            tags,
            supersedes: Some(id),
            ..s
        };
        let new = snapshot::commit(&repo, &index, Some(&lock), &replacement)?;
        cairn::failpoint::hit("tag-written");
        repo.storage()
            .delete(&object_path(FileKind::Snapshot, &id.0))?;
        println!(
            "snapshot {} is now {} with tags [{}]",
            id.short(),
            new.short(),
            super::for_terminal(&replacement.tags.join(", "))
        );
        changed += 1;
    }
    ctx.note(&format!("{changed} snapshot(s) changed"));
    Ok(Outcome::Success)
}
