//! `cairn unlock`: removes stale locks (or all with --remove-all).

use cairn::error::Result;
use cairn::repo::lock;

use super::{Context, Outcome, for_terminal};
use crate::cli::UnlockArgs;

pub fn run(ctx: &Context, args: &UnlockArgs) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let done = lock::unlock(&repo, args.remove_all)?;
    for r in &done.removed {
        println!("removed {}", for_terminal(r));
    }
    for k in &done.kept {
        println!("kept {}: it is live", for_terminal(k));
    }
    ctx.note(&format!("{} lock(s) removed", done.removed.len()));
    if !done.kept.is_empty() {
        ctx.note(
            "a live lock goes stale once it is not refreshed for 30 minutes (or, on its own host, \
             once its process is gone); `cairn unlock --remove-all` removes it now, which is \
             safe only when no cairn is running on the repository",
        );
    }
    Ok(Outcome::Success)
}
