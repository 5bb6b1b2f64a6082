//! Command-line flags (clap) and their validation into the options the library takes, before
//! any work starts.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Content-addressed, deduplicating, encrypted backups"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args)]
pub struct GlobalArgs {
    /// Repository location: a local path, file://PATH or s3://BUCKET[/PREFIX] [default: ~/.local/share/cairn/repository]
    #[arg(short = 'r', long = "repo", env = "CAIRN_REPOSITORY", global = true)]
    pub repo: Option<String>,
    /// Folder for the local index cache [default: ~/.cache/cairn]
    #[arg(long, env = "CAIRN_CACHE_DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
    /// Read the password from this file (first line)
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Print data as JSON
    #[arg(long, global = true)]
    pub json: bool,
    /// Print nothing but errors and the requested data
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Wait this long for a conflicting lock to go away (e.g. 30s, 10m, 2h; 0 to fail at once)
    #[arg(long, global = true, default_value = "1m", value_parser = parse_wait)]
    pub retry_lock: std::time::Duration,
    /// More log output (repeat for more)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a repository
    Init(InitArgs),
    /// Back up files and folders into a new snapshot
    Backup(Box<BackupArgs>),
    /// List snapshots
    Snapshots,
    /// Restore a snapshot into a folder
    Restore(RestoreArgs),
    /// List the entries of a snapshot
    Ls(LsArgs),
    /// Write one file of a snapshot to standard output
    Dump(DumpArgs),
    /// Find paths matching a pattern across snapshots
    Find(FindArgs),
    /// Show what changed between two snapshots, or between a snapshot and the disk
    Diff(DiffArgs),
    /// Verify the repository: structure, and with --read-data every stored byte
    Check(CheckArgs),
    /// Repair the index or snapshots after damage
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Remove snapshots by retention policy or by id (the data goes at the next prune)
    Forget(Box<ForgetArgs>),
    /// Delete data no snapshot needs, repacking packs with too much of it
    Prune(PruneArgs),
    /// Add, remove or set tags on snapshots
    Tag(TagArgs),
    /// Remove stale locks (left by processes that died)
    Unlock(UnlockArgs),
    /// Copy snapshots from another repository into this one
    Copy(CopyArgs),
    /// List, add and remove the repository's passwords (key files), or change the one in use
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Args)]
pub struct SnapshotFilterArgs {
    /// Only snapshots of this host
    #[arg(long)]
    pub host: Option<String>,
    /// Only snapshots with this tag (repeatable: all must be present)
    #[arg(long)]
    pub tag: Vec<String>,
    /// Only snapshots with this source path
    #[arg(long)]
    pub path: Option<String>,
}

impl SnapshotFilterArgs {
    pub fn filter(&self) -> cairn::snapshot::Filter {
        cairn::snapshot::Filter {
            host: self.host.clone(),
            tags: self.tag.clone(),
            path: self.path.clone(),
        }
    }
}

#[derive(Args)]
pub struct PruneArgs {
    /// Repack a pack when more than this share of it is unused (e.g. 5%, 0%, 100%)
    #[arg(long, default_value = "5%")]
    pub max_unused: String,
    /// Report what would be deleted and repacked; change nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

#[derive(Args)]
pub struct ForgetArgs {
    /// Snapshots to forget (id prefixes or `latest`, among those the filters match), instead
    /// of a policy
    pub snapshots: Vec<String>,
    /// Keep the N newest snapshots
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the last N hours that have one
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_hourly: u32,
    /// … days
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_daily: u32,
    /// … ISO weeks
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_weekly: u32,
    /// … months
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_monthly: u32,
    /// … years
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_yearly: u32,
    /// Keep every snapshot within this span of the newest one (e.g. 30d, 1y2m, 2w, 12h)
    #[arg(long, value_name = "SPAN")]
    pub keep_within: Option<String>,
    /// Keep every snapshot with this tag; `a,b` keeps those with both (repeatable)
    #[arg(long, value_name = "TAG")]
    pub keep_tag: Vec<String>,
    /// Apply the policy to each group of snapshots with equal values of these fields
    #[arg(long, default_value = "host,paths")]
    pub group_by: String,
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
    /// Allow a policy to remove every snapshot of a group
    #[arg(long)]
    pub allow_remove_all: bool,
    /// Print what would be kept (and why) and removed; change nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Run prune afterwards
    #[arg(long)]
    pub prune: bool,
    /// For --prune: repack a pack when more than this share of it is unused
    #[arg(long, default_value = "5%")]
    pub max_unused: String,
}

#[derive(Args)]
pub struct TagArgs {
    /// Snapshots to change (id prefixes or `latest`, among those the filters match;
    /// default: all of those)
    pub snapshots: Vec<String>,
    /// Add this tag (repeatable)
    #[arg(long)]
    pub add: Vec<String>,
    /// Remove this tag (repeatable)
    #[arg(long)]
    pub remove: Vec<String>,
    /// Replace all tags with these (repeatable; `--set ''` clears them)
    #[arg(long)]
    pub set: Vec<String>,
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
}

#[derive(Args)]
pub struct UnlockArgs {
    /// Remove every lock, not only stale ones (only when no cairn is running on the repository)
    #[arg(long)]
    pub remove_all: bool,
}

#[derive(Subcommand)]
pub enum RepairCommand {
    /// Rebuild the index segments (and the local index) from the pack headers; salvage packs
    /// whose header is damaged or in which `check --read-data` found damaged blobs
    Index(RepairIndexArgs),
    /// Write new snapshots without the files whose data is lost
    Snapshots(RepairSnapshotsArgs),
    /// Write the config again, with the repository id the key files were made for, when it
    /// is damaged or lost
    Config(RepairConfigArgs),
}

#[derive(Args)]
pub struct RepairConfigArgs {
    /// Report whether it would be written; write nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

#[derive(Args)]
pub struct RepairIndexArgs {
    /// Report what would change; write nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

#[derive(Args)]
pub struct RepairSnapshotsArgs {
    /// Snapshots to repair (id prefixes; default: all)
    pub snapshots: Vec<String>,
    /// Keep the readable start of a damaged file instead of removing it
    #[arg(long)]
    pub truncate: bool,
    /// Delete each original snapshot once its repaired version is stored
    #[arg(long)]
    pub forget: bool,
    /// Report what would change; write nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

#[derive(Args)]
pub struct CheckArgs {
    /// Also download every pack and verify every blob in it
    #[arg(long)]
    pub read_data: bool,
    /// Read only some packs: `n/m` (a fixed n-th of m parts; runs 1/m … m/m cover all),
    /// `5%` (random packs), or `500M` (random packs, about that many bytes)
    #[arg(long, value_name = "SUBSET")]
    pub read_data_subset: Option<String>,
    /// Worker threads [default: two per CPU, at most 16]
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Args)]
pub struct CopyArgs {
    /// The repository to copy from
    #[arg(long, env = "CAIRN_FROM_REPOSITORY")]
    pub from_repo: String,
    /// Read the source repository's password from this file (first line) [default:
    /// CAIRN_FROM_PASSWORD, then a prompt on a terminal]
    #[arg(long, env = "CAIRN_FROM_PASSWORD_FILE")]
    pub from_password_file: Option<PathBuf>,
    /// Snapshots to copy (id prefixes or `latest`, among those the filters match;
    /// default: all of those)
    pub snapshots: Vec<String>,
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
    /// List what would be copied; write nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// zstd compression level for the data stored anew (1-19)
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub compression: i32,
}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// List the key files: id, who made each and when, and which one the password opens
    List,
    /// Add a password: a new key file wrapping the same master key
    Add(KeyAddArgs),
    /// Remove a key file by id (not the one the given password opens)
    Remove(KeyRemoveArgs),
    /// Change the password: add a key file for the new one, then remove the one in use
    Passwd(KeyAddArgs),
}

#[derive(Args)]
pub struct KeyAddArgs {
    /// Read the new password from this file (first line) [default: CAIRN_NEW_PASSWORD, then
    /// a prompt on a terminal]
    #[arg(long, env = "CAIRN_NEW_PASSWORD_FILE")]
    pub new_password_file: Option<PathBuf>,
    /// Host name recorded in the new key file [default: this host]
    #[arg(long)]
    pub host: Option<String>,
    /// User name recorded in the new key file [default: this user]
    #[arg(long)]
    pub user: Option<String>,
    #[command(flatten)]
    pub kdf: KdfArgs,
}

#[derive(Args)]
pub struct KeyRemoveArgs {
    /// The key file's id, or a prefix of it that names only one
    pub id: String,
}

#[derive(Args, Clone)]
pub struct KdfArgs {
    /// Argon2id memory for the new key, in MiB
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(8..=4096))]
    pub kdf_memory: u32,
    /// Argon2id iterations for the new key
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub kdf_iterations: u32,
}

impl KdfArgs {
    pub fn params(&self) -> cairn::repo::KdfParams {
        cairn::repo::KdfParams {
            memory_kib: self.kdf_memory * 1024,
            iterations: self.kdf_iterations,
            parallelism: 2,
        }
    }
}

#[derive(Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub kdf: KdfArgs,
}

#[derive(Args)]
pub struct BackupArgs {
    /// Files and folders to back up (with --stdin-from-command: the command and its arguments,
    /// after `--`)
    #[arg(required_unless_present = "stdin")]
    pub paths: Vec<PathBuf>,
    /// Create the repository first if it does not exist
    #[arg(long)]
    pub init: bool,
    /// Back up standard input as one file
    #[arg(long, conflicts_with = "stdin_from_command")]
    pub stdin: bool,
    /// Run the command given after `--` and back up its output as one file; no snapshot is
    /// saved if the command fails
    #[arg(long)]
    pub stdin_from_command: bool,
    /// File name for --stdin / --stdin-from-command
    #[arg(long, default_value = "stdin")]
    pub stdin_name: String,
    /// Chunk-size profile: `files` (about 1 MiB) or `small` (about 16 KiB, for dumps and
    /// images that change in place) [default: the parent's, else files; small for streams]
    #[arg(long, value_parser = ["files", "small"])]
    pub chunk_profile: Option<String>,
    /// Leave out entries matching GLOB (repeatable; without `/` it matches names, with `/`
    /// paths: from the root if it starts with `/`, else their ends)
    #[arg(long = "exclude", value_name = "GLOB")]
    pub excludes: Vec<String>,
    /// Read exclude patterns from FILE (one per line, # comments)
    #[arg(long = "exclude-file", value_name = "FILE")]
    pub exclude_files: Vec<PathBuf>,
    /// Leave out folders that contain a file of this name (e.g. CACHEDIR.TAG)
    #[arg(long = "exclude-if-present", value_name = "NAME")]
    pub exclude_if_present: Vec<String>,
    /// Leave out files larger than SIZE (e.g. 500M, 2G)
    #[arg(long, value_name = "SIZE")]
    pub exclude_larger_than: Option<String>,
    /// Do not cross into other file systems
    #[arg(short = 'x', long)]
    pub one_file_system: bool,
    /// Compare with this snapshot instead of the latest one of the same host and paths
    #[arg(long, conflicts_with = "force")]
    pub parent: Option<String>,
    /// Read every file, even those unchanged since the parent snapshot
    #[arg(long)]
    pub force: bool,
    /// Show what would be stored; write nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Record this time instead of now (RFC 3339, or `YYYY-MM-DD HH:MM[:SS]` local time)
    #[arg(long)]
    pub time: Option<String>,
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Record this host name instead of the machine's
    #[arg(long)]
    pub host: Option<String>,
    /// zstd compression level (1-19)
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub compression: i32,
    /// Worker threads for reading, hashing, compressing and encrypting [default: two per
    /// CPU, at most 16]
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub kdf: KdfArgs,
}

#[derive(Args)]
pub struct DiffArgs {
    /// The older snapshot (id prefix or `latest`)
    pub first: String,
    /// The newer snapshot
    #[arg(required_unless_present = "live")]
    pub second: Option<String>,
    /// Compare only this folder
    pub path: Option<OsString>,
    /// Compare the first snapshot with this folder on disk now (what a restore would change)
    #[arg(long, conflicts_with_all = ["second", "path"])]
    pub live: Option<PathBuf>,
    /// Also report entries whose metadata alone changed (mode, owner, mtime)
    #[arg(long)]
    pub metadata: bool,
}

#[derive(Args)]
pub struct FindArgs {
    /// Glob: without `/` it matches names (`contract*.pdf`), with `/` paths: from the root
    /// if it starts with `/` (`/srv/uploads/**/*.pdf`), else their ends (`uploads/*.pdf`)
    pub pattern: String,
    #[command(flatten)]
    pub filter: SnapshotFilterArgs,
}

#[derive(Args)]
pub struct DumpArgs {
    /// Snapshot id prefix or `latest`
    pub snapshot: String,
    /// File inside the snapshot, e.g. `db.sql` or `/srv/uploads/a.pdf`
    pub path: OsString,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// Snapshot id prefix or `latest`, optionally with a path in it: `latest:/srv/uploads`
    /// restores that folder's contents (or that one file) into the target
    pub snapshot: OsString,
    /// Folder to restore into (created if missing)
    #[arg(long, short = 't')]
    pub target: PathBuf,
    /// Restore only entries matching GLOB (repeatable; without `/` it matches names, with `/`
    /// paths in the snapshot: from the root if it starts with `/`, else their ends); folders
    /// leading to them are created
    #[arg(long = "include", value_name = "GLOB")]
    pub includes: Vec<String>,
    /// Leave out entries matching GLOB (repeatable)
    #[arg(long = "exclude", value_name = "GLOB")]
    pub excludes: Vec<String>,
    /// What to do with entries that exist already: `if-changed` keeps the content of identical
    /// files (so an interrupted restore can be run again) and sets their metadata, `always`
    /// replaces, `never` keeps as is
    #[arg(long, default_value = "if-changed", value_parser = ["always", "if-changed", "never"])]
    pub overwrite: String,
    /// List what would be written; write nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Read every restored file back and check it against the snapshot
    #[arg(long)]
    pub verify: bool,
    /// Set owners by numeric id even where the names exist here
    #[arg(long)]
    pub numeric_owner: bool,
    /// Write files and folders in batches of at most N, while the next batch is planned
    /// (memory, for the three held: about 0.5 KB a file plus 40 bytes a chunk, 350 bytes a folder)
    #[arg(long, value_name = "N", default_value_t = 50_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_files: u32,
    /// Worker threads reading, verifying and writing [default: two per CPU, at most 16]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
}

#[derive(Args)]
pub struct LsArgs {
    /// Snapshot id prefix or `latest`
    pub snapshot: String,
    /// Folder inside the snapshot [default: /]
    pub path: Option<OsString>,
    /// Long listing: mode, owner, size, mtime
    #[arg(short = 'l', long)]
    pub long: bool,
    /// List everything below the folder
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

/// `90`, `90s`, `10m`, `2h`.
fn parse_wait(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c),
        _ => (t, 's'),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: use a number of seconds, or 30s, 10m, 2h"))?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        _ => return Err(format!("{text:?}: the unit must be s, m or h")),
    };
    let secs = n
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?}: too long"))?;
    Ok(std::time::Duration::from_secs(secs))
}
