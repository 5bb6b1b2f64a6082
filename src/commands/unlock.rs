//! `cairn unlock`: removes stale locks (or all with --remove-all).

use cairn::error::Result;
use cairn::repo::lock;

use super::{Context, Outcome};
use crate::cli::UnlockArgs;

pub fn run(ctx: &Context, args: &UnlockArgs) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let removed = lock::unlock(&repo, args.remove_all)?;
    for r in &removed {
        println!("removed {r}");
    }
    ctx.note(&format!("{} lock(s) removed", removed.len()));
    Ok(Outcome::Success)
}
