//! File content into blobs: chunking, keyed hashing, compression and encryption, in parallel
//! across the chunks of a file (and, through the walker, across files).
//!
//! Guarantees: memory per file in flight is bounded (a batch of at most `BATCH_BYTES` of
//! chunks plus the chunker's window of `max` + 4 MiB); a chunk that is already stored is hashed but never
//! compressed or encrypted again.
//!
//! Files are read with `read`, not memory-mapped: a file truncated by another process while
//! mapped would kill the backup with SIGBUS, and the copy costs far less than hashing.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::blobs::lock;
use crate::chunk::Chunker;
use crate::error::Result;
use crate::ids::{BlobId, BlobType};
use crate::pack::seal_blob;
use crate::packer::{Packer, StoredBlobs};
use crate::repo::Repository;

/// Chunks are sealed in parallel batches of about this many bytes.
const BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Inputs smaller than this are read whole; larger ones through the chunker's window.
const READ_WHOLE_BELOW: u64 = 1024 * 1024;

/// Content stored from one file or stream.
pub struct StoredContent {
    pub blobs: Vec<BlobId>,
    pub size: u64,
}

pub struct ContentWriter<'p, 'a> {
    pub repo: &'a Repository,
    pub packer: &'p Mutex<Packer<'a>>,
    pub stored: Arc<StoredBlobs>,
    pub chunker: Chunker,
    zstd_level: i32,
    pub bytes_read: AtomicU64,
}

impl<'p, 'a> ContentWriter<'p, 'a> {
    pub fn new(repo: &'a Repository, packer: &'p Mutex<Packer<'a>>, chunker: Chunker) -> Self {
        let (zstd_level, stored) = {
            let p = lock(packer);
            (p.zstd_level(), p.stored_blobs())
        };
        ContentWriter {
            repo,
            packer,
            stored,
            chunker,
            zstd_level,
            bytes_read: AtomicU64::new(0),
        }
    }

    /// Stores everything `source` yields. `on_bytes` hears of progress. The outer error is
    /// the repository's; the inner one is the source's.
    pub fn store<R: Read>(
        &self,
        source: R,
        size_hint: u64,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<io::Result<StoredContent>> {
        if size_hint < READ_WHOLE_BELOW {
            return self.store_small(source, size_hint, on_bytes);
        }
        let mut blobs = Vec::new();
        let mut size = 0u64;
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut batch_bytes = 0;
        for chunk in self.chunker.reader(source) {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => return Ok(Err(e)),
            };
            size += chunk.len() as u64;
            batch_bytes += chunk.len();
            batch.push(chunk);
            if batch_bytes >= BATCH_BYTES {
                blobs.extend(self.store_chunks(&batch, on_bytes)?);
                batch.clear();
                batch_bytes = 0;
            }
        }
        blobs.extend(self.store_chunks(&batch, on_bytes)?);
        Ok(Ok(StoredContent { blobs, size }))
    }

    /// Small inputs are read whole (one allocation of their size, not the chunker's window).
    fn store_small<R: Read>(
        &self,
        mut source: R,
        size_hint: u64,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<io::Result<StoredContent>> {
        let mut data = Vec::with_capacity(size_hint as usize + 1);
        if let Err(e) = source.read_to_end(&mut data) {
            return Ok(Err(e));
        }
        let chunks: Vec<&[u8]> = self.chunker.cuts(&data).map(|r| &data[r]).collect();
        let blobs = self.store_chunks(&chunks, on_bytes)?;
        Ok(Ok(StoredContent {
            blobs,
            size: data.len() as u64,
        }))
    }

    fn store_chunks<C: AsRef<[u8]> + Sync>(
        &self,
        chunks: &[C],
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<Vec<BlobId>> {
        let store = |c: &C| {
            let id = self.store_chunk(c.as_ref());
            on_bytes(c.as_ref().len() as u64);
            id
        };
        if chunks.len() <= 1 {
            return chunks.iter().map(store).collect();
        }
        chunks.par_iter().map(store).collect()
    }

    fn store_chunk(&self, data: &[u8]) -> Result<BlobId> {
        self.bytes_read
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.store_blob(BlobType::Data, data)
    }

    /// Stores one blob unless it is already stored; hashing and sealing happen outside the
    /// packer's lock.
    pub fn store_blob(&self, blob_type: BlobType, data: &[u8]) -> Result<BlobId> {
        let keys = self.repo.keys();
        let id = keys.blob_id(data);
        if self.stored.contains(&id)? {
            return Ok(id);
        }
        let sealed = seal_blob(keys, self.repo.id(), blob_type, id, data, self.zstd_level);
        lock(self.packer).add_sealed(sealed)?;
        Ok(id)
    }
}
