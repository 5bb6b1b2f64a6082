//! Command-line flags (clap) and their validation into the options the library takes, before
//! any work starts.

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
    /// Repository location: a local path or file:// URL [default: ~/.local/share/cairn/repository]
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
    /// More log output (repeat for more)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a repository
    Init(InitArgs),
    /// Back up files and folders into a new snapshot
    Backup(BackupArgs),
    /// List snapshots
    Snapshots,
    /// Restore a snapshot into a folder
    Restore(RestoreArgs),
    /// List the entries of a snapshot
    Ls(LsArgs),
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

#[derive(Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub kdf: KdfArgs,
}

#[derive(Args)]
pub struct BackupArgs {
    /// Files and folders to back up
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Create the repository first if it does not exist
    #[arg(long)]
    pub init: bool,
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Record this host name instead of the machine's
    #[arg(long)]
    pub host: Option<String>,
    /// zstd compression level (1-19)
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub compression: i32,
    #[command(flatten)]
    pub kdf: KdfArgs,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// Snapshot id prefix or `latest`
    pub snapshot: String,
    /// Folder to restore into (created if missing)
    #[arg(long, short = 't')]
    pub target: PathBuf,
    /// Set owners by numeric id even where the names exist here
    #[arg(long)]
    pub numeric_owner: bool,
}

#[derive(Args)]
pub struct LsArgs {
    /// Snapshot id prefix or `latest`
    pub snapshot: String,
    /// Folder inside the snapshot [default: /]
    pub path: Option<String>,
    /// Long listing: mode, owner, size, mtime
    #[arg(short = 'l', long)]
    pub long: bool,
    /// List everything below the folder
    #[arg(short = 'R', long)]
    pub recursive: bool,
}
