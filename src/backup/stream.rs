//! Dump streams as sources: standard input, or the output of a command (`pg_dump`, `tar`).
//!
//! Guarantee: if the command fails (non-zero exit or killed by a signal), the stream is not
//! committed: the caller gets `CommandFailed` with the exit status and the tail of the
//! command's standard error, and writes no snapshot.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use super::Reporter;
use super::content::{ContentWriter, StoredContent};
use crate::blobs::lock;
use crate::error::{Error, Result};

/// How much of a failed command's standard error is kept for the message.
const STDERR_TAIL: usize = 4096;
/// Once the command has exited, standard error is read on until nothing came for this long:
/// a process it left behind may hold the pipe open for as long as it runs.
const STDERR_QUIET: std::time::Duration = std::time::Duration::from_secs(2);
/// And for no longer than this, however much keeps coming.
const STDERR_AT_MOST: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Clone, Debug)]
pub enum StreamSource {
    Stdin,
    Command(Vec<OsString>),
}

pub fn store(
    content: &ContentWriter,
    source: &StreamSource,
    reporter: &dyn Reporter,
) -> Result<StoredContent> {
    let on_bytes = |n| reporter.bytes_read(n);
    match source {
        StreamSource::Stdin => content
            .store(std::io::stdin().lock(), u64::MAX, &on_bytes)?
            .map_err(|e| Error::io("standard input", e)),
        StreamSource::Command(argv) => store_command(content, argv, &on_bytes),
    }
}

fn store_command(
    content: &ContentWriter,
    argv: &[OsString],
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<StoredContent> {
    let shown = argv
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::Usage("--stdin-from-command needs a command after --".into()))?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::CommandFailed {
            command: shown.clone(),
            status: format!("could not start: {e}"),
            stderr_tail: String::new(),
        })?;
    let tail = Arc::new(Mutex::new(Vec::<u8>::new()));
    // A message for each piece read; the channel closes with the pipe.
    let (stderr_read, stderr_news) = std::sync::mpsc::channel::<()>();
    if let Some(mut err) = child.stderr.take() {
        let tail = Arc::clone(&tail);
        // Not joined: it ends with the pipe, or with the process.
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                // Kept before it is passed on, which may block (a full pipe of ours).
                {
                    let mut t = lock(&tail);
                    t.extend_from_slice(&buf[..n]);
                    let excess = t.len().saturating_sub(STDERR_TAIL);
                    t.drain(..excess);
                }
                let _ = stderr_read.send(());
                let _ = std::io::stderr().write_all(&buf[..n]);
            }
        });
    } else {
        drop(stderr_read);
    }
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::Invalid("no stdout pipe".into()))?;
    let stored = content.store(stdout, u64::MAX, on_bytes);
    let status = child.wait().map_err(|e| Error::io(&shown, e));
    let give_up = std::time::Instant::now() + STDERR_AT_MOST;
    while std::time::Instant::now() < give_up && stderr_news.recv_timeout(STDERR_QUIET).is_ok() {}
    let stored = stored?;
    let status = status?;
    if !status.success() {
        return Err(Error::CommandFailed {
            command: shown,
            status: status.to_string(),
            stderr_tail: String::from_utf8_lossy(&lock(&tail)).into_owned(),
        });
    }
    stored.map_err(|e| Error::io(&shown, e))
}
