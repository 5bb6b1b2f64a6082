//! Failpoints: named places on the write paths where a test can make the process die at once,
//! as `kill -9` or a power cut would, to prove that an interruption there loses nothing.
//!
//! `CAIRN_FAILPOINT=NAME` aborts the process the first time it reaches `hit("NAME")`;
//! `CAIRN_FAILPOINT=NAME:N` the N-th time. Unset (always, outside tests), `hit` costs one
//! lookup of a value read once per process.
//!
//! Hooks let a test change the world at a named place instead: `CAIRN_HOOK=NAME:COMMAND` runs
//! `sh -c COMMAND sh PATH` each time `hook("NAME", PATH)` is reached (a source file vanishing
//! between being listed and being read, or changing while it is read).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Armed {
    name: String,
    nth: usize,
    seen: AtomicUsize,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("CAIRN_FAILPOINT").ok()?;
            let (name, nth) = match spec.rsplit_once(':') {
                Some((name, n)) => (name.to_string(), n.parse().ok()?),
                None => (spec, 1),
            };
            Some(Armed {
                name,
                nth,
                seen: AtomicUsize::new(0),
            })
        })
        .as_ref()
}

/// Dies here if this failpoint is armed and its turn has come.
pub fn hit(name: &str) {
    if let Some(armed) = armed().filter(|a| a.name == name)
        && armed.seen.fetch_add(1, Ordering::SeqCst) + 1 == armed.nth
    {
        eprintln!("cairn: failpoint {name} reached: aborting");
        std::process::abort();
    }
}

fn armed_hook() -> Option<&'static (String, String)> {
    static HOOK: OnceLock<Option<(String, String)>> = OnceLock::new();
    HOOK.get_or_init(|| {
        let spec = std::env::var("CAIRN_HOOK").ok()?;
        let (name, command) = spec.split_once(':')?;
        Some((name.to_string(), command.to_string()))
    })
    .as_ref()
}

/// Runs the test hook armed for this place, if any, with `path` as its argument.
pub fn hook(name: &str, path: &std::path::Path) {
    if let Some((_, command)) = armed_hook().filter(|(n, _)| n == name) {
        let _ = std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .arg("sh")
            .arg(path)
            .status();
    }
}
