//! Facts about the machine cairn runs on: host and user names, the clock, and user/group name
//! lookups (cached per thread).

use std::cell::RefCell;
use std::collections::HashMap;

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

pub fn username() -> String {
    user_name(nix::unistd::getuid().as_raw()).unwrap_or_else(|| "unknown".into())
}

/// What makes a process id on this machine mean one process: the boot (process ids are
/// reused after a reboot) and the process-id namespace (containers sharing a host name each
/// have their own). Empty where either is unknown, so no process id can be judged by it.
pub fn process_namespace() -> String {
    use std::os::unix::fs::MetadataExt;
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id");
    let ns = std::fs::metadata("/proc/self/ns/pid");
    match (boot, ns) {
        (Ok(boot), Ok(ns)) => format!("{}/{}:{}", boot.trim(), ns.dev(), ns.ino()),
        _ => String::new(),
    }
}

/// Whether descriptors can be named, and reopened, as `/proc/self/fd/N`.
pub fn proc_mounted() -> bool {
    static MOUNTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *MOUNTED.get_or_init(|| std::path::Path::new("/proc/self/fd").is_dir())
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map(|u| u.name)
}

pub fn group_name(gid: u32) -> Option<String> {
    nix::unistd::Group::from_gid(gid.into())
        .ok()
        .flatten()
        .map(|g| g.name)
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

/// The local UTC offset in seconds at the given instant.
pub fn local_offset_s(at_ns: i64) -> i32 {
    use chrono::{Local, Offset, TimeZone};
    Local
        .timestamp_nanos(at_ns)
        .offset()
        .fix()
        .local_minus_utc()
}

/// RFC 3339 with offset, e.g. `2026-11-22T04:12:00.123456789+01:00`.
pub fn format_time(ns: i64, offset_s: i32) -> String {
    use chrono::{FixedOffset, TimeZone};
    let tz = FixedOffset::east_opt(offset_s)
        .unwrap_or_else(|| FixedOffset::east_opt(0).expect("zero offset"));
    tz.timestamp_nanos(ns).to_rfc3339()
}

thread_local! {
    static USERS: RefCell<HashMap<u32, Option<String>>> = RefCell::new(HashMap::new());
    static GROUPS: RefCell<HashMap<u32, Option<String>>> = RefCell::new(HashMap::new());
    static UIDS: RefCell<HashMap<String, Option<u32>>> = RefCell::new(HashMap::new());
    static GIDS: RefCell<HashMap<String, Option<u32>>> = RefCell::new(HashMap::new());
}

type Cache<K, V> = std::thread::LocalKey<RefCell<HashMap<K, V>>>;

/// Looks `key` up in a per-thread cache, computing it with `find` the first time: a walk or a
/// restore asks for the same few ids and names for every entry, from many threads, and each
/// uncached lookup reads the user database.
fn cached<K, V>(cache: &'static Cache<K, V>, key: K, find: impl FnOnce() -> V) -> V
where
    K: std::hash::Hash + Eq,
    V: Clone,
{
    cache.with(|m| m.borrow_mut().entry(key).or_insert_with(find).clone())
}

/// The uid of a user name on this machine, looked up once per thread.
pub fn cached_uid(name: &str) -> Option<u32> {
    cached(&UIDS, name.to_string(), || {
        nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
    })
}

/// The gid of a group name on this machine, looked up once per thread.
pub fn cached_gid(name: &str) -> Option<u32> {
    cached(&GIDS, name.to_string(), || {
        nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw())
    })
}

/// The user name of `uid`, looked up once per thread.
pub fn cached_user_name(uid: u32) -> Option<String> {
    cached(&USERS, uid, || user_name(uid))
}

/// The group name of `gid`, looked up once per thread.
pub fn cached_group_name(gid: u32) -> Option<String> {
    cached(&GROUPS, gid, || group_name(gid))
}
