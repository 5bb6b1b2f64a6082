//! File content into blobs: chunking, keyed hashing, compression and encryption, in parallel
//! across the chunks of a file (and, through the walker, across files).
//!
//! Guarantees: memory per file in flight is bounded by the chunker's window (`max` + 4 MiB),
//! whose chunks are sealed in parallel batches straight from it; a chunk that is already
//! stored is hashed but never compressed or encrypted again.
//!
//! Files are read with `read`, not memory-mapped: a file truncated by another process while
//! mapped would kill the backup with SIGBUS, and the copy costs far less than hashing.
//!
//! Sparse files (fewer blocks allocated than their size) are read by data region
//! (`SEEK_DATA`/`SEEK_HOLE`): holes are never read, but stored as blobs of zeros of the
//! chunker's maximal size, whose id is computed once per length. Restore leaves zero blobs
//! unwritten, so the holes come back as holes.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::blobs::lock;
use crate::chunk::{ChunkReader, Chunker};
use crate::error::Result;
use crate::ids::{BlobId, BlobType};
use crate::pack::seal_blob;
use crate::packer::{Packer, StoredBlobs};
use crate::repo::Repository;

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
    /// Ids of all-zero blobs by length (holes of sparse files).
    zero_blobs: Mutex<HashMap<usize, BlobId>>,
    windows: WindowPool,
}

/// Chunker windows of files that were read, for the next ones: a window is megabytes, and
/// allocating it afresh for each file costs a page fault per 4 KiB read.
#[derive(Default)]
struct WindowPool(Mutex<Vec<Vec<u8>>>);

impl WindowPool {
    /// Windows kept at most; more are only in use while several large files are read at once.
    const KEEP: usize = 2;

    fn take(&self) -> Vec<u8> {
        lock(&self.0).pop().unwrap_or_default()
    }

    fn give_back(&self, window: Vec<u8>) {
        let mut pool = lock(&self.0);
        if pool.len() < Self::KEEP {
            pool.push(window);
        }
    }
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
            zero_blobs: Mutex::new(HashMap::new()),
            windows: WindowPool::default(),
        }
    }

    /// Stores a sparse file region by region: data regions through the chunker, holes as
    /// zero blobs, without reading them. A file that shrinks meanwhile ends where it ends.
    pub fn store_sparse(
        &self,
        mut file: &File,
        len: u64,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<io::Result<StoredContent>> {
        let mut blobs = Vec::new();
        let mut pos = 0u64;
        while pos < len {
            let data = match seek_region(file, pos, libc::SEEK_DATA) {
                Ok(Some(at)) => at.min(len),
                // No data after `pos`: a hole up to the end of the file as it is now (it
                // may have been cut short while being read).
                Ok(None) => match file.metadata() {
                    Ok(now) if now.len() > pos => now.len().min(len),
                    Ok(_) => break,
                    Err(e) => return Ok(Err(e)),
                },
                // A file system without SEEK_DATA (some FUSE and CIFS servers say so with
                // other errors than EINVAL): read it all.
                Err(e)
                    if pos == 0
                        && matches!(
                            e.raw_os_error(),
                            Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS)
                        ) =>
                {
                    return self.store(file, len, on_bytes);
                }
                Err(e) => return Ok(Err(e)),
            };
            if data > pos {
                let max = u64::from(self.chunker.params().max);
                let zeros = (data - pos).div_ceil(max);
                if let Some(e) = too_many_blobs(blobs.len() as u64 + zeros) {
                    return Ok(Err(e));
                }
                blobs.extend(self.hole(data - pos, on_bytes)?);
                pos = data;
            }
            if pos >= len {
                break;
            }
            let end = match seek_region(file, pos, libc::SEEK_HOLE) {
                Ok(Some(at)) => at.min(len),
                Ok(None) => len,
                Err(e) => return Ok(Err(e)),
            };
            if let Err(e) = file.seek(SeekFrom::Start(pos)) {
                return Ok(Err(e));
            }
            let region = match self.store((&mut file).take(end - pos), end - pos, on_bytes)? {
                Ok(r) => r,
                Err(e) => return Ok(Err(e)),
            };
            blobs.extend(region.blobs);
            pos += region.size;
            if pos < end {
                break; // cut short while being read
            }
        }
        Ok(Ok(StoredContent { blobs, size: pos }))
    }

    /// `len` bytes of zeros as blobs of at most the chunker's maximal size (`store_sparse`
    /// checked that their ids fit in a tree).
    fn hole(&self, len: u64, on_bytes: &(dyn Fn(u64) + Sync)) -> Result<Vec<BlobId>> {
        let max = u64::from(self.chunker.params().max);
        let mut out = Vec::new();
        let mut left = len;
        while left > 0 {
            let n = left.min(max) as usize;
            out.push(self.zero_blob(n)?);
            on_bytes(n as u64);
            left -= n as u64;
        }
        Ok(out)
    }

    fn zero_blob(&self, len: usize) -> Result<BlobId> {
        if let Some(id) = lock(&self.zero_blobs).get(&len) {
            return Ok(*id);
        }
        let id = self.store_blob(BlobType::Data, &vec![0u8; len])?;
        lock(&self.zero_blobs).insert(len, id);
        Ok(id)
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
        self.store_chunked(source, on_bytes)
    }

    fn store_chunked<R: Read>(
        &self,
        source: R,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<io::Result<StoredContent>> {
        let mut reader = self.chunker.reader_with_window(source, self.windows.take());
        let stored = self.store_batches(&mut reader, on_bytes);
        self.windows.give_back(reader.into_window());
        stored
    }

    fn store_batches<R: Read>(
        &self,
        reader: &mut ChunkReader<'_, R>,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<io::Result<StoredContent>> {
        let mut blobs = Vec::new();
        let mut size = 0u64;
        loop {
            let batch = match reader.next_batch() {
                Ok(b) if b.is_empty() => break,
                Ok(b) => b,
                Err(e) => return Ok(Err(e)),
            };
            let chunks: Vec<&[u8]> = batch.into_iter().map(|r| &reader.window()[r]).collect();
            size += chunks.iter().map(|c| c.len() as u64).sum::<u64>();
            blobs.extend(self.store_chunks(&chunks, on_bytes)?);
            // Fail now, not after reading the rest of a stream its folder's tree could
            // never hold.
            if let Some(e) = too_many_blobs(blobs.len() as u64) {
                return Ok(Err(e));
            }
        }
        Ok(Ok(StoredContent { blobs, size }))
    }

    /// Small inputs are read whole (one allocation of their size, not the chunker's window);
    /// one that turns out larger (a file growing since it was listed) goes on through the
    /// window, so that memory stays bounded however much it grew.
    fn store_small<R: Read>(
        &self,
        mut source: R,
        size_hint: u64,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<io::Result<StoredContent>> {
        let mut data = Vec::with_capacity(size_hint as usize + 1);
        if let Err(e) = (&mut source).take(READ_WHOLE_BELOW).read_to_end(&mut data) {
            return Ok(Err(e));
        }
        if data.len() as u64 == READ_WHOLE_BELOW {
            return self.store_chunked(io::Cursor::new(data).chain(source), on_bytes);
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
        crate::pack::check_blob_len(blob_type, data.len())?;
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

/// The next offset at or after `from` where data (`SEEK_DATA`) or a hole (`SEEK_HOLE`)
/// starts; `None` past the end of the file.
fn seek_region(file: &File, from: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    use std::os::unix::io::AsRawFd;
    let from = libc::off_t::try_from(from).map_err(io::Error::other)?;
    // SAFETY: lseek on an open descriptor; it only moves the file offset, which the caller
    // sets again before reading.
    let at = unsafe { libc::lseek(file.as_raw_fd(), from, whence) };
    if at >= 0 {
        return Ok(Some(at as u64));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENXIO) => Ok(None),
        _ => Err(err),
    }
}

/// Content needing more blob ids than a tree can hold (a sparse file of petabytes, a stream of
/// tens of terabytes) is that source's problem, not the repository's: it alone is skipped.
fn too_many_blobs(count: u64) -> Option<io::Error> {
    let bytes = usize::try_from(count.saturating_mul(32)).unwrap_or(usize::MAX);
    crate::pack::check_blob_len(BlobType::Tree, bytes)
        .err()
        .map(|_| io::Error::other(format!("too large to store: it would take {count} blobs, more than a folder's tree can list")))
}
