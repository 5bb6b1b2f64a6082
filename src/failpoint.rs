//! Failpoints: named places on the write paths where a test can make the process die at once,
//! as `kill -9` or a power cut would, to prove that an interruption there loses nothing.
//!
//! `CAIRN_FAILPOINT=NAME` aborts the process the first time it reaches `hit("NAME")`;
//! `CAIRN_FAILPOINT=NAME:N` the N-th time. Unset (always, outside tests), `hit` costs one
//! lookup of a value read once per process.

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
