//! One thin file per command. This module holds what they share: the resolved global options,
//! password lookup, opening the repository and its local index, and formatting helpers.

pub mod backup;
pub mod check;
pub mod copy;
pub mod diff;
pub mod dump;
pub mod find;
pub mod forget;
pub mod init;
pub mod key;
pub mod ls;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod snapshots;
pub mod tag;
pub mod unlock;

use std::io::IsTerminal;
use std::path::PathBuf;

use cairn::error::{Error, Result};
use cairn::ids::PackId;
use cairn::index::{LocalIndex, OpenReport, PreparedIndex, Unjudged};
use cairn::repo::Repository;
use cairn::repo::lock::RepositoryLock;
use cairn::storage::{self, Storage};

use crate::cli::{GlobalArgs, KdfArgs};

/// How a command that did not fail ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Done, but some entries were skipped or failed (exit code 3).
    Partial,
    /// `check` ran to the end and found damage (exit code 17).
    Damaged,
}

/// Two workers per CPU (at most 16): a worker waiting for the disk leaves its CPU to
/// another; each holds at most about 25 MiB (see README.md, "Memory and threads").
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(4, |n| (n.get() * 2).min(16))
}

/// Sizes rayon's global pool, which the data path's workers run on: `threads` or the default.
pub fn set_worker_threads(threads: Option<usize>) -> Result<()> {
    let threads = threads.unwrap_or_else(default_threads);
    cairn::walk::worker_pool(threads, |b| b.build_global())
        .map_err(|e| Error::Invalid(format!("--threads: {e}")))?;
    tracing::debug!("{} worker threads", rayon::current_num_threads());
    Ok(())
}

/// `Context::prepare_index` under way. Dropped, it waits until the index file is prepared,
/// so that an early error does not end the process in the middle of creating it (not for
/// a listing of packs that may follow, which can take long on object storage).
pub struct PreparingIndex {
    thread: Option<std::thread::JoinHandle<Option<PreparedIndex>>>,
    /// Signalled (or closed) once the index file is prepared.
    file_ready: std::sync::mpsc::Receiver<()>,
}

impl PreparingIndex {
    fn finish(&mut self) -> Option<PreparedIndex> {
        self.thread.take()?.join().ok().flatten()
    }
}

impl Drop for PreparingIndex {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.file_ready.recv();
        }
    }
}

pub struct Context {
    pub repo: String,
    /// How long to wait for a conflicting lock to go away.
    pub retry_lock: std::time::Duration,
    pub cache_dir: PathBuf,
    pub password_file: Option<PathBuf>,
    pub json: bool,
    pub quiet: bool,
    /// Where the password was taken from, once it was (for a "wrong password" message).
    pub password_source: std::sync::Mutex<Option<String>>,
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from)
}

fn xdg(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map_or_else(|| home().join(fallback), PathBuf::from)
}

impl Context {
    pub fn new(g: &GlobalArgs) -> Self {
        Context {
            retry_lock: g.retry_lock,
            repo: g.repo.clone().unwrap_or_else(|| {
                xdg("XDG_DATA_HOME", ".local/share")
                    .join("cairn/repository")
                    .display()
                    .to_string()
            }),
            cache_dir: g
                .cache_dir
                .clone()
                .unwrap_or_else(|| xdg("XDG_CACHE_HOME", ".cache").join("cairn")),
            password_file: g.password_file.clone(),
            json: g.json,
            quiet: g.quiet,
            password_source: std::sync::Mutex::new(None),
        }
    }

    /// The repository's storage; `create` allows a location that does not exist yet.
    pub fn storage(&self, create: bool) -> Result<Box<dyn Storage>> {
        storage::open_location(&self.repo, create)
    }

    /// The password, from (in order) --password-file / CAIRN_PASSWORD_FILE,
    /// CAIRN_PASSWORD_COMMAND, CAIRN_PASSWORD, or a prompt on a terminal.
    pub fn password(&self, confirm: bool) -> Result<Vec<u8>> {
        let from = |source: String| {
            self.password_was_from(source);
        };
        if let Some(path) = &self.password_file {
            from(format!("the password file {}", path.display()));
            let text = std::fs::read(path).map_err(|e| {
                Error::Password(format!("cannot read password file {}: {e}", path.display()))
            })?;
            return Ok(first_line(&text));
        }
        if let Some(cmd) = std::env::var_os("CAIRN_PASSWORD_COMMAND").filter(|c| !c.is_empty()) {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(&cmd)
                .stderr(std::process::Stdio::inherit())
                .output()
                .map_err(|e| Error::Password(format!("cannot run CAIRN_PASSWORD_COMMAND: {e}")))?;
            if !out.status.success() {
                return Err(Error::Password(format!(
                    "CAIRN_PASSWORD_COMMAND failed ({})",
                    out.status
                )));
            }
            from("CAIRN_PASSWORD_COMMAND".into());
            return Ok(first_line(&out.stdout));
        }
        if let Some(pw) = std::env::var_os("CAIRN_PASSWORD") {
            from("CAIRN_PASSWORD".into());
            use std::os::unix::ffi::OsStringExt;
            return Ok(pw.into_vec());
        }
        if !std::io::stdin().is_terminal() {
            return Err(Error::Password(
                "no password given: use --password-file, CAIRN_PASSWORD_FILE, CAIRN_PASSWORD_COMMAND or CAIRN_PASSWORD".into(),
            ));
        }
        from("the terminal".into());
        prompt("repository password", confirm)
    }

    /// A new password for `key add` and `key passwd`: from `file`, CAIRN_NEW_PASSWORD, or
    /// typed twice on a terminal. Never empty.
    pub fn new_password(&self, file: Option<&std::path::Path>) -> Result<Vec<u8>> {
        let source = ("CAIRN_NEW_PASSWORD", "--new-password-file");
        other_password(file, source, "new password", true)
    }

    /// The password of the repository `copy` reads from: from `file`, CAIRN_FROM_PASSWORD,
    /// or typed on a terminal.
    /// Where the password last used came from, for the message if it opens nothing.
    fn password_was_from(&self, source: String) {
        *cairn::blobs::lock(&self.password_source) = Some(source);
    }

    pub fn source_password(&self, file: Option<&std::path::Path>) -> Result<Vec<u8>> {
        self.password_was_from(match file {
            Some(path) => format!("the source repository's password file {}", path.display()),
            None if std::env::var_os("CAIRN_FROM_PASSWORD").is_some() => {
                "CAIRN_FROM_PASSWORD (the source repository's password)".into()
            }
            None => "the terminal (the source repository's password)".into(),
        });
        let source = ("CAIRN_FROM_PASSWORD", "--from-password-file");
        other_password(file, source, "password of the source repository", false)
    }

    /// Opens the repository and syncs its local index.
    pub fn open(&self) -> Result<(Repository, LocalIndex)> {
        let repo = self.open_repo()?;
        let index = self.open_index(&repo)?;
        Ok((repo, index))
    }

    pub fn open_repo(&self) -> Result<Repository> {
        Repository::open(self.storage(false)?, || self.password(false))
    }

    /// Opens the repository, locks it (shared or exclusive), then syncs the local index.
    pub fn open_locked(&self, exclusive: bool) -> Result<(Repository, RepositoryLock, LocalIndex)> {
        let repo = self.open_repo()?;
        let lock = self.lock(&repo, exclusive)?;
        let index = self.open_index(&repo)?;
        Ok((repo, lock, index))
    }

    pub fn lock(&self, repo: &Repository, exclusive: bool) -> Result<RepositoryLock> {
        RepositoryLock::acquire(repo, exclusive, self.retry_lock)
    }

    pub fn open_index(&self, repo: &Repository) -> Result<LocalIndex> {
        tracing::debug!("repository open; syncing the local index");
        let (index, report) = LocalIndex::open(&self.cache_dir, repo)?;
        tracing::debug!(
            segments_merged = report.segments_merged,
            "local index ready"
        );
        self.report_index_open(&report);
        Ok(index)
    }

    /// Starts `LocalIndex::prepare` on a thread of its own for the repository at the location
    /// (its id read from its config, which needs no key), so that opening and checking the
    /// local index overlaps the key derivation; `open_prepared_index` takes the result.
    pub fn prepare_index(&self) -> PreparingIndex {
        self.prepare(false)
    }

    /// `prepare_index`, then the packs on storage listed too, for
    /// `open_prepared_index_for_reading` (`PreparedIndex::list_packs`).
    pub fn prepare_index_for_reading(&self) -> PreparingIndex {
        self.prepare(true)
    }

    fn prepare(&self, list_packs: bool) -> PreparingIndex {
        let (location, cache_dir) = (self.repo.clone(), self.cache_dir.clone());
        let (ready, file_ready) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let storage = storage::open_location(&location, false).ok()?;
            let config = cairn::repo::read_config(storage.as_ref()).ok()?;
            let mut prepared = LocalIndex::prepare(&cache_dir, &config.id).ok()?;
            let _ = ready.send(());
            if list_packs {
                prepared.list_packs(storage.as_ref());
            }
            Some(prepared)
        });
        PreparingIndex {
            thread: Some(thread),
            file_ready,
        }
    }

    /// `open_index`, from what `prepare_index` prepared if that is this repository's index
    /// (else, or if preparing failed, as `open_index` does, which reports any error).
    pub fn open_prepared_index(
        &self,
        repo: &Repository,
        mut preparing: PreparingIndex,
    ) -> Result<LocalIndex> {
        self.open_prepared(repo, preparing.finish())
    }

    fn open_prepared(
        &self,
        repo: &Repository,
        prepared: Option<PreparedIndex>,
    ) -> Result<LocalIndex> {
        match prepared {
            Some(prepared) if prepared.is_for(repo) => {
                tracing::debug!("repository open; syncing the prepared local index");
                let (index, report) = prepared.sync_with(repo)?;
                tracing::debug!(
                    segments_merged = report.segments_merged,
                    "local index ready"
                );
                self.report_index_open(&report);
                Ok(index)
            }
            _ => self.open_index(repo),
        }
    }

    /// Says which indexed packs are missing from storage (or cut short), and what follows.
    pub fn warn_lost_packs(&self, lost: &[PackId], consequence: &str) {
        for pack in lost {
            eprintln!(
                "cairn: warning: pack {pack} is listed in the index but missing from the repository or cut short; {consequence}. Run `cairn check` to see what it affects"
            );
        }
    }

    /// Syncs the local index and checks it against the packs on storage, for commands that
    /// read data: a blob stored in a lost pack and again elsewhere is then read from there.
    pub fn open_index_for_reading(&self, repo: &Repository) -> Result<LocalIndex> {
        let index = self.open_index(repo)?;
        self.validated_for_reading(repo, index)
    }

    /// `open_index_for_reading` from what `prepare_index_for_reading` prepared
    /// (`open_prepared_index`), with the packs it listed if it could.
    pub fn open_prepared_index_for_reading(
        &self,
        repo: &Repository,
        mut preparing: PreparingIndex,
    ) -> Result<LocalIndex> {
        let mut prepared = preparing.finish();
        // Only for this repository's index: another may have been put at the same place.
        let listing = (prepared.as_mut())
            .filter(|p| p.is_for(repo))
            .and_then(PreparedIndex::take_listing);
        let mut index = self.open_prepared(repo, prepared)?;
        let early = match listing {
            Some(listing) => index.mark_lost(&listing, Unjudged::Relist)?,
            None => None,
        };
        let lost = match early {
            Some(lost) => lost,
            None => index.validate_packs(repo)?,
        };
        self.warn_lost(&lost);
        Ok(index)
    }

    fn validated_for_reading(
        &self,
        repo: &Repository,
        mut index: LocalIndex,
    ) -> Result<LocalIndex> {
        let lost = index.validate_packs(repo)?;
        self.warn_lost(&lost);
        Ok(index)
    }

    fn warn_lost(&self, lost: &[PackId]) {
        self.warn_lost_packs(lost, "files whose data was only there cannot be restored");
    }

    pub fn report_index_open(&self, report: &OpenReport) {
        if let Some(why) = &report.rebuilt {
            self.note(&format!(
                "rebuilt the local index from the repository because {why} ({} index segments read)",
                report.segments_merged
            ));
        }
        for skipped in &report.skipped {
            eprintln!(
                "cairn: warning: left out of the local index: {skipped}; run `cairn check` to see what it affects"
            );
        }
    }

    pub fn init(&self, kdf: &KdfArgs) -> Result<Repository> {
        let storage = self.storage(true)?;
        // Before the password is asked for.
        Repository::refuse_init_over(storage.as_ref())?;
        let password = self.password(true)?;
        Repository::init(storage, &password, kdf.params())
    }

    /// A message for a human, on stderr, unless --quiet.
    pub fn note(&self, msg: &str) {
        if !self.quiet {
            eprintln!("{msg}");
        }
    }
}

/// A password other than the repository's: from `file` (given by `flag` or `{var}_FILE`),
/// the environment variable `var`, or typed on a terminal (twice if `confirm`). Never empty.
fn other_password(
    file: Option<&std::path::Path>,
    (var, flag): (&str, &str),
    what: &str,
    confirm: bool,
) -> Result<Vec<u8>> {
    let password = if let Some(path) = file {
        let text = std::fs::read(path).map_err(|e| {
            Error::Password(format!("cannot read {} ({what}): {e}", path.display()))
        })?;
        first_line(&text)
    } else if let Some(pw) = std::env::var_os(var) {
        use std::os::unix::ffi::OsStringExt;
        pw.into_vec()
    } else if std::io::stdin().is_terminal() {
        prompt(what, confirm)?
    } else {
        return Err(Error::Password(format!(
            "no {what} given: use {flag}, {var}_FILE or {var}"
        )));
    };
    if password.is_empty() {
        return Err(Error::Password(format!("the {what} is empty")));
    }
    Ok(password)
}

/// Reads a password typed on the terminal (twice if `confirm`); refuses an empty one.
fn prompt(what: &str, confirm: bool) -> Result<Vec<u8>> {
    let read = |label: &str| {
        rpassword::prompt_password(label)
            .map_err(|e| Error::Password(format!("cannot read from the terminal: {e}")))
    };
    let pw = read(&format!("{what}: "))?;
    if confirm && read(&format!("repeat the {what}: "))? != pw {
        return Err(Error::Password("the passwords differ".into()));
    }
    if pw.is_empty() {
        return Err(Error::Password("empty password".into()));
    }
    Ok(pw.into_bytes())
}

fn first_line(bytes: &[u8]) -> Vec<u8> {
    let end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    let line = &bytes[..end];
    line.strip_suffix(b"\r").unwrap_or(line).to_vec()
}

/// A path inside a snapshot as given on the command line: its bytes, which need not be
/// UTF-8 (names are stored as bytes), without trailing slashes.
pub fn path_in_snapshot(arg: &std::ffi::OsStr) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    let mut path = arg.as_bytes();
    while let [rest @ .., b'/'] = path {
        path = rest;
    }
    path
}

pub use cairn::terminal::{for_terminal, for_terminal_bytes, message_for_terminal};

/// `{path, path_hex}` for JSON output: `path_hex` only where the path is not UTF-8.
pub fn path_json(path: &std::path::Path) -> serde_json::Value {
    use std::os::unix::ffi::OsStrExt;
    let path = cairn::tree::JsonPath::new(path.as_os_str().as_bytes());
    serde_json::to_value(path).unwrap_or_default()
}

/// Adds `key` to a JSON object with the hex of `bytes` when they are not UTF-8 (the string
/// field beside it then shows them lossily), so that every name can be told exactly.
pub fn add_hex(object: &mut serde_json::Value, key: &str, bytes: &[u8]) {
    if let (Some(hex), Some(map)) = (cairn::tree::hex_unless_utf8(bytes), object.as_object_mut()) {
        map.insert(key.into(), hex.into());
    }
}

/// 1536 → "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Standard output for commands that print as they go (a listing can hold millions of
/// lines): buffered, and keeping the first failure to write, after which nothing more is
/// written, for `finish` to return.
pub struct Printer {
    out: std::io::BufWriter<std::io::StdoutLock<'static>>,
    failed: Option<std::io::Error>,
}

impl Printer {
    pub fn new() -> Self {
        Printer {
            out: std::io::BufWriter::new(std::io::stdout().lock()),
            failed: None,
        }
    }

    pub fn write(&mut self, text: &str) {
        use std::io::Write;
        if self.failed.is_none()
            && let Err(e) = self.out.write_all(text.as_bytes())
        {
            self.failed = Some(e);
        }
    }

    /// `value` as compact JSON; a value that cannot be encoded fails the output.
    pub fn json(&mut self, before: &str, value: &impl serde::Serialize) {
        match serde_json::to_string(value) {
            Ok(text) => self.write(&format!("{before}{text}")),
            Err(e) => {
                self.failed.get_or_insert(std::io::Error::other(e));
            }
        }
    }

    pub fn finish(mut self) -> Result<()> {
        use std::io::Write;
        let flushed = self.out.flush();
        self.failed.take().map_or(flushed, Err).map_err(|e| {
            Error::Invalid(format!(
                "cannot write to standard output ({e}); the output is incomplete"
            ))
        })
    }
}

pub fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Invalid(format!("cannot encode JSON: {e}")))?;
    println!("{text}");
    Ok(())
}
