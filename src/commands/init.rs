//! `cairn init`: create a repository.

use cairn::error::Result;

use super::{Context, Outcome};
use crate::cli::InitArgs;

pub fn run(ctx: &Context, args: &InitArgs) -> Result<Outcome> {
    let repo = ctx.init(&args.kdf)?;
    if ctx.json {
        super::print_json(&serde_json::json!({
            "repository_id": repo.id().to_hex(),
            "location": repo.location(),
        }))?;
    } else {
        ctx.note(&format!(
            "created cairn repository {} at {}\nKeep the password safe: without it the data cannot be read.",
            repo.id().short(),
            repo.location()
        ));
    }
    Ok(Outcome::Success)
}
