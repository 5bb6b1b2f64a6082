//! The data half of a restore: which blobs go where, read pack by pack.
//!
//! Every needed blob is looked up once and grouped by pack; each pack is read in a few large
//! ranges in offset order (neighbouring blobs closer than `MAX_GAP` share one read), packs in
//! parallel. A blob used by several files (or several times) is read and verified once and
//! written to every place that needs it.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rayon::prelude::*;

use crate::blobs::lock;
use crate::error::{Error, Result};
use crate::ids::{BlobId, PackId};
use crate::index::LocalIndex;
use crate::pack::{BlobEntry, open_blob};
use crate::repo::Repository;
use crate::tree::Node;
use crate::walk::long_path;

/// Blobs closer than this in a pack are fetched in one read (the gap is read and dropped).
const MAX_GAP: u64 = 256 * 1024;
/// No single read is larger than this.
const MAX_READ: u64 = 8 * 1024 * 1024;

/// A file being restored: its final path, the temporary file its content goes to, and
/// whether anything failed.
pub struct PlannedFile {
    pub path: PathBuf,
    pub tmp: PathBuf,
    pub node: Node,
    pub failed: AtomicBool,
    /// The file was given its full size (it has holes).
    pub sized: AtomicBool,
    /// Owner and mode the temporary file was created with, if known.
    pub current: Option<super::metadata::Current>,
}

struct Placement {
    file: usize,
    offset: u64,
}

struct PlannedBlob {
    entry: BlobEntry,
    targets: Vec<Placement>,
}

#[derive(Default)]
pub struct Plan {
    pub files: Vec<PlannedFile>,
    packs: HashMap<PackId, Vec<PlannedBlob>>,
    where_is: HashMap<BlobId, (PackId, usize)>,
}

impl Plan {
    /// Adds a file whose temporary file exists; returns an error (and adds nothing) if one of
    /// its blobs is not in the index.
    pub fn add_file(&mut self, index: &LocalIndex, file: PlannedFile) -> Result<()> {
        let mut placements = Vec::with_capacity(file.node.content.len());
        let mut offset = 0u64;
        for id in &file.node.content {
            let (pack, i) = match self.where_is.get(id) {
                Some(&found) => found,
                None => {
                    let (pack, entry) =
                        index.lookup(id)?.ok_or(Error::BlobNotFound { blob: *id })?;
                    let blobs = self.packs.entry(pack).or_default();
                    blobs.push(PlannedBlob {
                        entry,
                        targets: Vec::new(),
                    });
                    self.where_is.insert(*id, (pack, blobs.len() - 1));
                    (pack, blobs.len() - 1)
                }
            };
            placements.push((pack, i, offset));
            offset += u64::from(self.packs[&pack][i].entry.raw_len);
        }
        let file_index = self.files.len();
        for (pack, i, offset) in placements {
            if let Some(blobs) = self.packs.get_mut(&pack) {
                blobs[i].targets.push(Placement {
                    file: file_index,
                    offset,
                });
            }
        }
        self.files.push(file);
        Ok(())
    }

    /// Reads every pack and writes the blobs into the temporary files. Failures mark the
    /// files they touch and are reported through `fail`; the returned count is bytes written.
    pub fn execute(&self, repo: &Repository, fail: &(dyn Fn(&PathBuf, Error) + Sync)) -> u64 {
        let written = AtomicU64::new(0);
        let packs: Vec<_> = self.packs.iter().collect();
        packs.par_iter().for_each(|(pack, blobs)| {
            let mut order: Vec<&PlannedBlob> = blobs.iter().collect();
            order.sort_by_key(|b| b.entry.offset);
            for span in spans(&order) {
                let start = span[0].entry.offset;
                let end = span.last().map_or(start, |b| b.entry.end());
                match repo.read_pack_range(pack, start..end) {
                    Ok(bytes) => {
                        for blob in span {
                            let at = (blob.entry.offset - start) as usize;
                            let sealed = &bytes[at..at + blob.entry.stored_len as usize];
                            match open_blob(repo.keys(), repo.id(), pack, &blob.entry, sealed) {
                                Ok(data) => self.write(blob, &data, &written, fail),
                                Err(e) => self.fail_targets(blob, &e, fail),
                            }
                        }
                    }
                    Err(e) => {
                        for blob in span {
                            self.fail_targets(blob, &e, fail);
                        }
                    }
                }
            }
        });
        written.into_inner()
    }

    fn write(
        &self,
        blob: &PlannedBlob,
        data: &[u8],
        written: &AtomicU64,
        fail: &(dyn Fn(&PathBuf, Error) + Sync),
    ) {
        // A blob of zeros is not written but left a hole, so sparse files stay sparse: the
        // first one gives its file its full size (no write reaches past it), which the
        // other blobs' writes reach by themselves.
        let zeros = data.iter().all(|&b| b == 0);
        for t in &blob.targets {
            let file = &self.files[t.file];
            if file.failed.load(Ordering::Relaxed) {
                continue;
            }
            let open = || long_path::open(OpenOptions::new().write(true), &file.tmp);
            let result = if !zeros {
                open().and_then(|f| f.write_all_at(data, t.offset))
            } else if !file.sized.swap(true, Ordering::Relaxed) {
                open().and_then(|f| f.set_len(file.node.size))
            } else {
                Ok(())
            };
            match result {
                Ok(()) => {
                    written.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    if !file.failed.swap(true, Ordering::Relaxed) {
                        fail(&file.path, Error::io(&file.path, e));
                    }
                }
            }
        }
    }

    fn fail_targets(
        &self,
        blob: &PlannedBlob,
        err: &Error,
        fail: &(dyn Fn(&PathBuf, Error) + Sync),
    ) {
        for t in &blob.targets {
            let file = &self.files[t.file];
            if !file.failed.swap(true, Ordering::Relaxed) {
                let described = match err {
                    Error::BlobIntegrity { blob, pack, reason } => Error::BlobIntegrity {
                        blob: *blob,
                        pack: *pack,
                        reason: reason.clone(),
                    },
                    other => Error::Invalid(other.to_string()),
                };
                fail(&file.path, described);
            }
        }
    }
}

/// Groups blobs (sorted by offset) into reads.
fn spans<'b>(order: &'b [&'b PlannedBlob]) -> Vec<&'b [&'b PlannedBlob]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=order.len() {
        let split = i == order.len() || {
            let prev = &order[i - 1].entry;
            let next = &order[i].entry;
            next.offset > prev.end() + MAX_GAP || next.end() - order[start].entry.offset > MAX_READ
        };
        if split {
            out.push(&order[start..i]);
            start = i;
        }
    }
    out
}

/// Errors reported from worker threads, kept for the caller.
pub type Failures = Mutex<Vec<(PathBuf, Error)>>;

pub fn record(failures: &Failures) -> impl Fn(&PathBuf, Error) + Sync + '_ {
    move |path, err| lock(failures).push((path.clone(), err))
}
