//! `cairn snapshots`: list snapshots, oldest first. The `--json` form is a stable interface
//! for scripts (documented in README.md).

use cairn::error::Result;
use cairn::host::format_time;
use cairn::snapshot;

use super::{Context, Outcome, for_terminal, for_terminal_bytes, human_bytes};

pub fn run(ctx: &Context) -> Result<Outcome> {
    let (_repo, index) = ctx.open()?;
    let all = snapshot::list(&index)?;
    if ctx.json {
        let items: Vec<_> = all
            .iter()
            .map(|(id, s)| {
                let mut item = serde_json::json!({
                    "id": id.to_hex(),
                    "short_id": id.short(),
                    "time": format_time(s.time_ns, s.utc_offset_s),
                    "hostname": s.hostname,
                    "username": s.username,
                    "paths": s.paths_lossy(),
                    "tags": s.tags,
                    "tree": s.tree.to_hex(),
                    "partial": s.partial,
                    "program_version": s.program_version,
                    "chunker": { "min": s.chunker.min, "avg": s.chunker.avg, "max": s.chunker.max },
                    "summary": s.summary,
                    "original": s.original.map(|o| o.to_hex()),
                    "repair_note": s.repair_note,
                });
                if let Some(hex) = cairn::tree::all_hex_unless_utf8(&s.paths) {
                    item["paths_hex"] = hex.into();
                }
                item
            })
            .collect();
        return super::print_json(&items).map(|()| Outcome::Success);
    }
    println!(
        "{:<8}  {:<25}  {:<15}  {:<12}  {:>10}  paths",
        "id", "time", "host", "tags", "size"
    );
    for (id, s) in &all {
        let time = format_time(s.time_ns - s.time_ns % 1_000_000_000, s.utc_offset_s);
        println!(
            "{:<8}  {:<25}  {:<15}  {:<12}  {:>10}  {}{}",
            id.short(),
            time,
            for_terminal(&s.hostname),
            for_terminal(&s.tags.join(",")),
            human_bytes(s.summary.total_file_bytes),
            s.paths
                .iter()
                .map(|p| for_terminal_bytes(p))
                .collect::<Vec<_>>()
                .join(" "),
            if s.partial { " (partial)" } else { "" }
        );
    }
    ctx.note(&match all.len() {
        1 => "1 snapshot".to_string(),
        n => format!("{n} snapshots"),
    });
    Ok(Outcome::Success)
}
