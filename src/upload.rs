//! Writing finished packs to storage in the background, for the packer (backup, copy) and the
//! repacker (prune, repair): one writer on local disk, up to `MAX_UPLOADS` on object storage,
//! where one request at a time would leave a long link mostly idle.
//!
//! Guarantees: `wait` returns only once every pack handed over is written, and fails if any
//! write failed; after the first failure nothing more is written and every later call fails,
//! so no index segment can list a pack that was not written; a panicking write is an error,
//! not a result that never comes. At most one pack waits to be taken by a writer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::blobs::lock;
use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::storage::Storage;

/// Pack uploads in flight at most, on storage that wants several requests in flight: each
/// holds a pack of about 16 MiB.
pub const MAX_UPLOADS: usize = 6;

/// The background threads that write finished packs.
pub struct Uploader {
    jobs: Option<SyncSender<(String, Vec<u8>)>>,
    results: Receiver<Result<()>>,
    threads: Vec<JoinHandle<()>>,
    in_flight: usize,
    /// Set at the first failed upload: the uploaders write nothing more, and every later
    /// call fails, so no segment can list a pack that was not written.
    failed: Arc<AtomicBool>,
}

/// One upload; a panic is an error, not a result that never comes.
fn upload(storage: &dyn Storage, failed: &AtomicBool, path: &str, bytes: Vec<u8>) -> Result<()> {
    if failed.load(Ordering::SeqCst) {
        return Err(Uploader::failed_before());
    }
    let written =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| storage.write(path, bytes)))
            .unwrap_or_else(|_| Err(Error::Invalid(format!("uploading {path} panicked"))));
    if written.is_err() {
        failed.store(true, Ordering::SeqCst);
    }
    written
}

impl Uploader {
    pub fn start(repo: &Repository) -> Result<Self> {
        let (jobs, job_rx) = sync_channel::<(String, Vec<u8>)>(1);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (result_tx, results) = std::sync::mpsc::channel();
        let workers = repo.requests_in_flight().clamp(1, MAX_UPLOADS);
        let failed = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (storage, job_rx, result_tx, failed) = (
                repo.shared_storage(),
                Arc::clone(&job_rx),
                result_tx.clone(),
                Arc::clone(&failed),
            );
            let thread = std::thread::Builder::new()
                .name("cairn-upload".into())
                .spawn(move || {
                    loop {
                        // A statement of its own: the receiver stays locked only while
                        // waiting for a job, not while uploading it.
                        let job = lock(&job_rx).recv();
                        let Ok((path, bytes)) = job else { break };
                        let written = upload(storage.as_ref(), &failed, &path, bytes);
                        if result_tx.send(written).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| Error::io("upload thread", e))?;
            threads.push(thread);
        }
        Ok(Uploader {
            jobs: Some(jobs),
            results,
            threads,
            in_flight: 0,
            failed,
        })
    }

    pub fn parallel(&self) -> bool {
        self.threads.len() > 1
    }

    pub fn send(&mut self, path: String, bytes: Vec<u8>) -> Result<()> {
        // Collect finished uploads first, so an upload error stops the backup early.
        while let Ok(r) = self.results.try_recv() {
            self.in_flight -= 1;
            r?;
        }
        if self.failed.load(Ordering::SeqCst) {
            return Err(Self::failed_before());
        }
        let jobs = self.jobs.as_ref().ok_or_else(Self::gone)?;
        jobs.send((path, bytes)).map_err(|_| Self::gone())?;
        self.in_flight += 1;
        Ok(())
    }

    /// Waits until every pack handed over so far is written; fails if any upload failed,
    /// now or before.
    pub fn wait(&mut self) -> Result<()> {
        while self.in_flight > 0 {
            let r = self.results.recv().map_err(|_| Self::gone())?;
            self.in_flight -= 1;
            r?;
        }
        match self.failed.load(Ordering::SeqCst) {
            true => Err(Self::failed_before()),
            false => Ok(()),
        }
    }

    fn failed_before() -> Error {
        Error::Invalid("an earlier pack upload failed; nothing more was uploaded".into())
    }

    fn gone() -> Error {
        Error::Invalid("the pack upload thread stopped unexpectedly".into())
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        self.jobs.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
