//! `cairn key list|add|remove|passwd`: the repository's passwords. Adding needs no lock (a
//! new key file changes nothing another process reads); removing and replacing take the
//! exclusive lock (see `repo::key_files`).

use cairn::error::Result;
use cairn::host::{self, format_time};
use cairn::ids::to_hex;
use cairn::repo::key_files::{self, KeyEntry, KeyOwner};

use super::{Context, Outcome, for_terminal};
use crate::cli::{KeyAddArgs, KeyCommand, KeyRemoveArgs};

pub fn run(ctx: &Context, command: &KeyCommand) -> Result<Outcome> {
    match command {
        KeyCommand::List => list(ctx),
        KeyCommand::Add(a) => add(ctx, a),
        KeyCommand::Remove(a) => remove(ctx, a),
        KeyCommand::Passwd(a) => passwd(ctx, a),
    }
}

fn short(id: &[u8; 32]) -> String {
    to_hex(&id[..4])
}

fn owner(args: &KeyAddArgs) -> KeyOwner {
    KeyOwner {
        hostname: args.host.clone().unwrap_or_else(host::hostname),
        username: args.user.clone().unwrap_or_else(host::username),
    }
}

fn list(ctx: &Context) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let mut entries = key_files::list(&repo)?;
    entries.sort_by_key(|e| e.file.as_ref().map_or(i64::MAX, |k| k.created_ns));
    if ctx.json {
        let items: Vec<_> = entries.iter().map(entry_json).collect();
        return super::print_json(&items).map(|()| Outcome::Success);
    }
    println!(
        "   {:<8}  {:<25}  {:<15}  {:<10}  key derivation",
        "id", "created", "host", "user"
    );
    for e in &entries {
        let mark = if e.current { "*" } else { " " };
        match &e.file {
            Ok(k) => println!(
                "{mark}  {:<8}  {:<25}  {:<15}  {:<10}  argon2id, {}, {} iterations",
                short(&e.id),
                created(k.created_ns),
                for_terminal(&k.hostname),
                for_terminal(&k.username),
                memory(k.params.memory_kib),
                k.params.iterations
            ),
            Err(why) => println!(
                "{mark}  {:<8}  damaged: {}",
                short(&e.id),
                for_terminal(why)
            ),
        }
    }
    ctx.note("* marks the key file the given password opens");
    Ok(Outcome::Success)
}

fn memory(kib: u32) -> String {
    match kib % 1024 {
        0 => format!("{} MiB", kib / 1024),
        _ => format!("{kib} KiB"),
    }
}

/// A key file's creation time, to the second, in local time.
fn created(ns: i64) -> String {
    format_time(ns - ns.rem_euclid(1_000_000_000), host::local_offset_s(ns))
}

fn entry_json(e: &KeyEntry) -> serde_json::Value {
    let mut item = serde_json::json!({
        "id": to_hex(&e.id),
        "short_id": short(&e.id),
        "current": e.current,
    });
    match &e.file {
        Ok(k) => {
            item["created"] = created(k.created_ns).into();
            item["hostname"] = k.hostname.clone().into();
            item["username"] = k.username.clone().into();
            item["kdf"] = serde_json::json!({
                "algorithm": "argon2id",
                "memory_kib": k.params.memory_kib,
                "iterations": k.params.iterations,
                "parallelism": k.params.parallelism,
            });
        }
        Err(why) => item["damaged"] = why.clone().into(),
    }
    item
}

fn add(ctx: &Context, args: &KeyAddArgs) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let password = ctx.new_password(args.new_password_file.as_deref())?;
    let id = key_files::add(&repo, &password, args.kdf.params(), owner(args))?;
    let note = format!("added key file {}", short(&id));
    report(ctx, serde_json::json!({ "added": to_hex(&id) }), &note);
    Ok(Outcome::Success)
}

fn remove(ctx: &Context, args: &KeyRemoveArgs) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let lock = ctx.lock(&repo, true)?;
    let id = key_files::find(&key_files::list(&repo)?, &args.id)?;
    key_files::remove(&repo, &lock, &id)?;
    let note = format!("removed key file {}", short(&id));
    report(ctx, serde_json::json!({ "removed": to_hex(&id) }), &note);
    Ok(Outcome::Success)
}

fn passwd(ctx: &Context, args: &KeyAddArgs) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let password = ctx.new_password(args.new_password_file.as_deref())?;
    let lock = ctx.lock(&repo, true)?;
    let id = key_files::replace(&repo, &lock, &password, args.kdf.params(), owner(args))?;
    let note = format!(
        "added key file {} for the new password and removed key file {}, which the old one opened",
        short(&id),
        short(repo.key_id())
    );
    let json = serde_json::json!({ "added": to_hex(&id), "removed": to_hex(repo.key_id()) });
    report(ctx, json, &note);
    Ok(Outcome::Success)
}

/// Prints what a change did: `json` with --json, else `note` for a human.
fn report(ctx: &Context, json: serde_json::Value, note: &str) {
    if ctx.json {
        println!("{json}");
    } else {
        ctx.note(note);
    }
}
