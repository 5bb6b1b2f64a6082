//! The `cairn` binary: parses flags, runs one command, and maps the outcome to an exit code
//! (the table is in README.md and in `exit_code` below).

mod cli;
mod commands;

use clap::Parser;

use cairn::error::Error;
use cli::{Cli, Command};
use commands::{Context, Outcome};

/// Exit codes, as documented in README.md.
mod exit {
    pub const SUCCESS: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const PARTIAL: i32 = 3;
    pub const REPOSITORY_NOT_FOUND: i32 = 10;
    pub const LOCKED: i32 = 11;
    pub const WRONG_PASSWORD: i32 = 12;
    pub const NOT_A_REPOSITORY: i32 = 13;
    pub const NEWER_FORMAT: i32 = 14;
    pub const SOURCE_NOT_FOUND: i32 = 15;
    pub const REPOSITORY_EXISTS: i32 = 16;
    pub const DAMAGED: i32 = 17;
    /// `check` could not run to the end (whatever the reason), so it says nothing of damage.
    pub const CHECK_NOT_RUN: i32 = 18;
}

fn exit_code(err: &Error) -> i32 {
    match err {
        Error::RepositoryNotFound { .. } => exit::REPOSITORY_NOT_FOUND,
        Error::Locked { .. } => exit::LOCKED,
        Error::WrongPassword { .. } => exit::WRONG_PASSWORD,
        Error::NotARepository { .. } => exit::NOT_A_REPOSITORY,
        Error::NewerFormat { .. } => exit::NEWER_FORMAT,
        Error::SourceNotFound { .. } | Error::SourceUnreadable { .. } => exit::SOURCE_NOT_FOUND,
        Error::RepositoryExists { .. } | Error::ConfigLost { .. } => exit::REPOSITORY_EXISTS,
        e if e.is_damage() => exit::DAMAGED,
        _ => exit::FAILURE,
    }
}

/// Large buffers (chunks, packs) are allocated and freed all the time on several threads.
/// A backup's memory is capped, and glibc's adaptive threshold would let the resident size grow
/// with the thread count, so there a fixed 1 MiB threshold returns them to the system. Reading
/// commands have room to spare, and reusing heap memory spares them the page faults of fresh
/// mappings (about 5% of a restore's time; 20 MB more resident). Freed memory at the top of
/// the heap is kept up to twice the threshold instead of glibc's 128 KiB, which would return
/// it and fault it in again for the next buffer (about 10% of a restore's time).
fn tune_allocator(command: &Command) {
    let threshold = match command {
        Command::Restore(_) | Command::Check(_) | Command::Dump(_) => 32 << 20,
        _ => 1 << 20,
    };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, threshold);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 2 * threshold);
    }
}

/// Set when `println!` panicked because standard output failed (a full disk under `> file`).
static STDOUT_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Such a panic is reported as an error instead of a panic; it still unwinds, so locks and
/// temporary files are cleaned up on the way, and `main` turns it into an exit code.
fn report_unwritable_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        match message.strip_prefix("failed printing to stdout: ") {
            Some(why) if !STDOUT_FAILED.swap(true, std::sync::atomic::Ordering::SeqCst) => {
                eprintln!(
                    "cairn: error: cannot write to standard output ({why}); the output is incomplete"
                );
            }
            Some(_) => {}
            None => default(info),
        }
    }));
}

fn main() {
    // Die quietly on a closed pipe (`cairn ls latest | head`), as command-line tools do.
    // SAFETY: setting a signal disposition to the default before any threads start.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    report_unwritable_stdout();
    tune_allocator(&cli.command);
    let level = match (cli.global.quiet, cli.global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let ctx = Context::new(&cli.global);
    let run = || match &cli.command {
        Command::Init(a) => commands::init::run(&ctx, a),
        Command::Backup(a) => commands::backup::run(&ctx, a),
        Command::Snapshots => commands::snapshots::run(&ctx),
        Command::Restore(a) => commands::restore::run(&ctx, a),
        Command::Ls(a) => commands::ls::run(&ctx, a),
        Command::Dump(a) => commands::dump::run(&ctx, a),
        Command::Find(a) => commands::find::run(&ctx, a),
        Command::Diff(a) => commands::diff::run(&ctx, a),
        Command::Check(a) => commands::check::run(&ctx, a),
        Command::Repair(a) => commands::repair::run(&ctx, a),
        Command::Forget(a) => commands::forget::run(&ctx, a),
        Command::Prune(a) => commands::prune::run(&ctx, a),
        Command::Tag(a) => commands::tag::run(&ctx, a),
        Command::Unlock(a) => commands::unlock::run(&ctx, a),
        Command::Key(a) => commands::key::run(&ctx, a),
        Command::Copy(a) => commands::copy::run(&ctx, a),
    };
    // On a thread with room for walks of deep trees (see `walk::MAX_DEPTH`), or here if no
    // such thread can be made.
    let outcome = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("cairn".into())
            .stack_size(cairn::walk::STACK_SIZE)
            .spawn_scoped(scope, run)
            .map(|thread| thread.join())
    });
    let outcome =
        outcome.unwrap_or_else(|_| std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)));
    let result = match outcome {
        Ok(result) => result,
        Err(_) if STDOUT_FAILED.load(std::sync::atomic::Ordering::SeqCst) => {
            std::process::exit(match cli.command {
                Command::Check(_) => exit::CHECK_NOT_RUN,
                _ => exit::FAILURE,
            })
        }
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let code = match result {
        Ok(Outcome::Success) => exit::SUCCESS,
        Ok(Outcome::Partial) => exit::PARTIAL,
        Ok(Outcome::Damaged) => exit::DAMAGED,
        Err(Error::Usage(message)) => {
            eprintln!("cairn: error: {}", commands::message_for_terminal(&message));
            exit::USAGE
        }
        Err(e) if matches!(cli.command, Command::Check(_)) => {
            eprintln!("cairn: error: the check could not run: {}", shown(&e));
            exit::CHECK_NOT_RUN
        }
        Err(e) => {
            eprintln!("cairn: error: {}", shown(&e));
            match &e {
                Error::WrongPassword { .. } => {
                    let source = cairn::blobs::lock(&ctx.password_source).clone();
                    if let Some(source) = source {
                        eprintln!("cairn: the password was taken from {source}.");
                    }
                }
                // Nothing can open the repository, `check` included.
                Error::Corrupt { kind: "key", .. } => eprintln!(
                    "cairn: no key file of the repository could be used. Put keys/ back from a copy of the repository; nothing was changed."
                ),
                e if e.is_damage() => eprintln!(
                    "cairn: the repository holds damaged or missing data. `cairn check --read-data` finds all of it and what it affects; keep a copy of the repository before any repair."
                ),
                _ => {}
            }
            exit_code(&e)
        }
    };
    std::process::exit(code);
}

/// An error's message, with control characters escaped: it may carry names from the disk or
/// a snapshot. A failed command's own error output is passed on as it is, as it was while it
/// ran.
fn shown(e: &Error) -> String {
    match e {
        Error::CommandFailed { .. } => e.to_string(),
        e => commands::message_for_terminal(&e.to_string()),
    }
}
