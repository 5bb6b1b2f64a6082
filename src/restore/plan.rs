//! The data half of a restore: which blobs go where, read pack by pack.
//!
//! Every needed blob is looked up once and grouped by pack; each pack is read in a few large
//! ranges in offset order (neighbouring blobs closer than `MAX_GAP` share one read), the reads
//! of all packs in parallel: on the rayon pool, or, where the storage wants more reads in
//! flight than that (object storage), from threads of their own a few reads ahead. A blob
//! used by several files (or several times) is read and verified once and written to every
//! place that needs it.
//!
//! A file's temporary file is made by the first write that reaches it. Whoever settles the
//! file's last placement (written or failed) finishes it: metadata through the descriptor it
//! holds, then the rename into place; or, if anything failed, removal of the temporary file.
//! So a file whose blobs arrive in one read is opened once.
//!
//! A blob that cannot be read or fails verification where the plan looked for it is read from
//! the other packs the index lists it in, if any, before the files that need it fail.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use rayon::prelude::*;

use super::failures::Failures;
use super::metadata::{self, Current, Owners};
use super::target::{At, Target};
use crate::blobs::lock;
use crate::error::{Error, Result};
use crate::ids::{BlobId, IdMap, PackId};
use crate::index::LocalIndex;
use crate::pack::{BlobEntry, open_blob, with_blob_in_place};
use crate::repo::Repository;
use crate::tree::Node;

/// Blobs closer than this in a pack are fetched in one read (the gap is read and dropped).
const MAX_GAP: u64 = 256 * 1024;
/// No single read from local storage is larger than this, so that a batch's reads share out
/// evenly among the workers (with 4 MiB reads, workers sat idle at the end of each batch once
/// packs held blobs in the walk's order). Reads kept in flight (object storage) may be up to
/// `MAX_READ_AHEAD`: each request costs a round trip.
const MAX_READ: u64 = 1024 * 1024;
const MAX_READ_AHEAD: u64 = 2 * 1024 * 1024;

/// A file being restored: its final path, the temporary file its content goes to, and
/// whether anything failed.
pub struct PlannedFile {
    pub path: PathBuf,
    /// Names the temporary file (`tmp`).
    temp_suffix: u64,
    pub node: Node,
    pub failed: AtomicBool,
    /// The file was given its full size (it has holes).
    sized: AtomicBool,
    /// Placements not yet written or failed.
    pending: AtomicUsize,
    temp: Mutex<Temp>,
}

/// Whether the temporary file exists yet, and which inode it is, with the owner and mode it
/// was made with.
#[derive(Clone, Copy)]
enum Temp {
    NotMade,
    Made(Current),
}

impl PlannedFile {
    pub fn new(path: PathBuf, temp_suffix: u64, node: Node) -> Self {
        PlannedFile {
            path,
            temp_suffix,
            node,
            failed: AtomicBool::new(false),
            sized: AtomicBool::new(false),
            pending: AtomicUsize::new(0),
            temp: Mutex::new(Temp::NotMade),
        }
    }

    fn temp_name(&self) -> OsString {
        super::temp::file_name(self.temp_suffix)
    }

    /// Makes the temporary file unless it exists; returns it open if it made it.
    fn make(&self, target: &Target) -> std::io::Result<Option<OpenTemp<'_>>> {
        let mut temp = lock(&self.temp);
        if let Temp::Made(_) = *temp {
            return Ok(None);
        }
        // No one but its owner gets more access while it is written than it will have after.
        let mode = (self.node.mode & 0o777) | 0o200;
        let at = target.at(&self.path)?;
        let file = at.sibling(&self.temp_name()).create_file(mode)?;
        *temp = Temp::Made(Current::of(&file.metadata()?));
        Ok(Some(OpenTemp { file, at }))
    }

    fn reopen(&self, target: &Target) -> std::io::Result<OpenTemp<'_>> {
        let Temp::Made(made) = *lock(&self.temp) else {
            return Err(std::io::Error::from_raw_os_error(libc::ENOENT));
        };
        let at = target.at(&self.path)?;
        let file = open_again(&at.sibling(&self.temp_name()), &made)?;
        Ok(OpenTemp { file, at })
    }

    /// Writes one placement; returns the temporary file used, if one was opened.
    fn write(
        &self,
        target: &Target,
        data: &[u8],
        offset: u64,
        zeros: bool,
    ) -> std::io::Result<Option<OpenTemp<'_>>> {
        let made = self.make(target)?;
        // A blob of zeros is not written but left a hole, so sparse files stay sparse: the
        // first one gives the file its full size (no write reaches past it), which the
        // other blobs' writes reach by themselves.
        if zeros && self.sized.swap(true, Ordering::Relaxed) {
            return Ok(made);
        }
        let open = match made {
            Some(open) => open,
            None => self.reopen(target)?,
        };
        if zeros {
            open.file.set_len(self.node.size)?;
        } else {
            open.file.write_all_at(data, offset)?;
        }
        Ok(Some(open))
    }
}

/// A temporary file open for writing, with the entry it is to be renamed to: a file written
/// and finished in one go has its folder looked up once.
struct OpenTemp<'p> {
    file: File,
    at: At<'p>,
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
    packs: IdMap<PackId, Vec<PlannedBlob>>,
    where_is: IdMap<BlobId, (PackId, usize)>,
}

/// What `Plan::execute` did.
#[derive(Default)]
pub struct Written {
    pub bytes: u64,
    /// Files renamed into place.
    pub files: u64,
}

/// Where and how files are written: the target they go below, whose ownership may be set,
/// and where failures are kept.
#[derive(Clone, Copy)]
pub struct Destination<'a> {
    pub target: &'a Target,
    pub owners: Owners,
    pub failures: &'a Failures,
    /// See `RestoreOptions::holes_marked`.
    pub holes_marked: bool,
    /// Whether a file may replace what is at its path (not with `--overwrite never`, which
    /// keeps even what appeared there after the walk looked).
    pub replace: bool,
}

/// Every location of a blob, for reading another copy when one fails.
pub type Copies<'a> = &'a (dyn Fn(&BlobId) -> Result<Vec<(PackId, BlobEntry)>> + Sync);

impl Plan {
    /// Adds a file; returns an error (and adds nothing) if one of its blobs is not in the
    /// index.
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
        // Else a hole set to the recorded size could cut written data off, or stretch the file.
        if offset != file.node.size {
            let why = format!(
                "its entry says {} bytes but its blobs hold {offset}",
                file.node.size
            );
            return Err(Error::corrupt("file", file.path.display(), why));
        }
        file.pending.store(placements.len(), Ordering::Relaxed);
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

    /// Reads every pack, writes the blobs into the temporary files and puts each finished
    /// file in place. Failures mark the files they touch and are kept in `failures`; a write
    /// that finds the target full stops what is left.
    pub fn execute(&self, repo: &Repository, to: Destination, copies: Copies) -> Written {
        let failures = to.failures;
        let bytes = AtomicU64::new(0);
        let files = AtomicU64::new(0);
        let orders: Vec<(&PackId, Vec<&PlannedBlob>)> = self
            .packs
            .iter()
            .map(|(pack, blobs)| {
                let mut order: Vec<&PlannedBlob> = blobs.iter().collect();
                order.sort_by_key(|b| b.entry.offset);
                (pack, order)
            })
            .collect();
        // Reads, not packs, are shared out: the last pack is not left to one worker.
        let depth = repo.requests_in_flight();
        let max_read = if depth > 1 { MAX_READ_AHEAD } else { MAX_READ };
        let reads = longest_first(&orders, max_read);
        // Once the target is full, what is left is not read: its files fail (and their
        // temporary files go) without being reported one by one.
        let read = |&(pack, span): &(&PackId, &[&PlannedBlob])| match failures.stopped() {
            true => (true, Err(Error::Invalid("the restore stopped".into()))),
            false => (false, repo.read_pack_range(pack, read_range(span))),
        };
        let place = |&(pack, span): &(&PackId, &[&PlannedBlob]),
                     (stopped, read): (bool, Result<Vec<u8>>)| {
            let start = read_range(span).start;
            // Read ahead, but placed after the stop: dropped as if it had not been read.
            let (stopped, read) = if !stopped && failures.stopped() {
                (true, Err(Error::Invalid("the restore stopped".into())))
            } else {
                (stopped, read)
            };
            let mut read = read;
            let shared = sharing_bytes(span);
            for (blob, shared) in span.iter().zip(shared) {
                let place_blob = |data: Result<&[u8]>| {
                    let done = self.place_blob(blob, data, to, &bytes);
                    files.fetch_add(done, Ordering::Relaxed);
                };
                // Opened where it was read (no copy), written from this thread's buffer. Opening
                // garbles the bytes, and wipes them where it fails: a blob that shares bytes
                // with another (entries of a damaged index may) is opened from a copy.
                let opened = match &mut read {
                    Ok(packed) => {
                        let at = (blob.entry.offset - start) as usize;
                        let sealed = &mut packed[at..at + blob.entry.stored_len as usize];
                        let (keys, repo_id) = (repo.keys(), repo.id());
                        match shared {
                            true => open_blob(keys, repo_id, pack, &blob.entry, sealed)
                                .map(|data| place_blob(Ok(&data))),
                            false => with_blob_in_place(
                                keys,
                                repo_id,
                                pack,
                                &blob.entry,
                                sealed,
                                |data| {
                                    place_blob(Ok(data));
                                },
                            ),
                        }
                    }
                    Err(e) => Err(describe(e)),
                };
                if let Err(e) = opened {
                    let copy = match stopped {
                        true => Err(e),
                        false => crate::blobs::other_copy(repo, copies(&blob.entry.id), pack, e),
                    };
                    place_blob(copy.as_deref().map_err(describe));
                }
            }
        };
        match depth {
            0 | 1 => reads.par_iter().for_each(|r| place(r, read(r))),
            depth => read_ahead(&reads, depth, read, place),
        }
        let empty = self.files.par_iter().filter(|f| f.node.content.is_empty());
        let made = empty.map(|file| match file.make(to.target) {
            Ok(handle) => self.finish(file, handle, to),
            Err(e) => {
                self.fail_write(file, Error::io(&file.path, e), failures);
                0
            }
        });
        files.fetch_add(made.sum(), Ordering::Relaxed);
        Written {
            bytes: bytes.into_inner(),
            files: files.into_inner(),
        }
    }

    /// Writes a blob (or its failure) to every place that needs it, finishing the files
    /// whose last placement it was; returns how many were put in place.
    fn place_blob(
        &self,
        blob: &PlannedBlob,
        data: Result<&[u8]>,
        to: Destination,
        bytes: &AtomicU64,
    ) -> u64 {
        // A blob of zeros is left a hole in every file that may have holes.
        let zeros = data.as_ref().is_ok_and(|d| d.iter().all(|&b| b == 0));
        let mut done = 0;
        for t in &blob.targets {
            let file = &self.files[t.file];
            let hole = zeros && (file.node.sparse || !to.holes_marked);
            let handle = match &data {
                Ok(data) => self.write_placement(file, data, t.offset, hole, bytes, to),
                Err(e) => {
                    self.fail_file(file, describe(e), to.failures);
                    None
                }
            };
            if file.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                done += self.finish(file, handle, to);
            }
        }
        done
    }

    fn write_placement<'a>(
        &self,
        file: &'a PlannedFile,
        data: &[u8],
        offset: u64,
        zeros: bool,
        written: &AtomicU64,
        to: Destination,
    ) -> Option<OpenTemp<'a>> {
        if file.failed.load(Ordering::Relaxed) {
            return None;
        }
        match file.write(to.target, data, offset, zeros) {
            Ok(handle) => {
                written.fetch_add(data.len() as u64, Ordering::Relaxed);
                handle
            }
            Err(e) => {
                self.fail_write(file, Error::io(&file.path, e), to.failures);
                None
            }
        }
    }

    /// Puts a file whose placements are all settled in place (1), or removes its temporary
    /// file if anything failed (0).
    fn finish(&self, file: &PlannedFile, open: Option<OpenTemp>, to: Destination) -> u64 {
        let Temp::Made(current) = *lock(&file.temp) else {
            debug_assert!(file.failed.load(Ordering::Acquire), "unmade but not failed");
            return 0; // failed before anything was written
        };
        let io = |e| Error::io(&file.path, e);
        let (at, handle) = match open {
            Some(OpenTemp { file, at }) => (at, Some(file)),
            None => match to.target.at(&file.path) {
                Ok(at) => (at, None),
                Err(e) => {
                    self.fail_file(file, io(e), to.failures);
                    return 0;
                }
            },
        };
        let name = file.temp_name();
        let tmp = at.sibling(&name);
        let put = match file.failed.load(Ordering::Acquire) {
            true => Err(None),
            false => handle
                .map_or_else(|| open_again(&tmp, &current), Ok)
                .map_err(io)
                .and_then(|f| {
                    let current = Some(current);
                    metadata::apply_to_file(&f, &file.path, &file.node, to.owners, current)
                })
                .and_then(|()| tmp.rename_into_place(&at, to.replace).map_err(io))
                .map_err(Some),
        };
        match put {
            Ok(true) => 1,
            // Something appeared at the path since the walk looked, and is kept: not the
            // snapshot's file, so it is neither read back nor linked to.
            Ok(false) => {
                let _ = tmp.remove_file();
                file.failed.store(true, Ordering::Release);
                to.failures.keep_instead(&file.path);
                0
            }
            Err(e) => {
                let _ = tmp.remove_file();
                if let Some(e) = e {
                    self.fail_file(file, e, to.failures);
                }
                0
            }
        }
    }

    /// Marks a file failed; the first failure is the one reported.
    fn fail_file(&self, file: &PlannedFile, err: Error, failures: &Failures) {
        if !file.failed.swap(true, Ordering::AcqRel) {
            failures.record(&file.path, err);
        }
    }

    /// Marks a file failed by a write of its data, which stops the restore if the target is
    /// full (metadata failures never do: one owner over quota is no reason to stop).
    fn fail_write(&self, file: &PlannedFile, err: Error, failures: &Failures) {
        if !file.failed.swap(true, Ordering::AcqRel) {
            failures.record_write(&file.path, err);
        }
    }
}

/// Opens a temporary file again, refusing anything else found under its name: in a folder
/// others can write to, a symlink, FIFO or file of theirs swapped in for it would otherwise
/// take the writes (and the snapshot's owner and mode). Theirs has their owner, whatever
/// inode number it was given (a removed file's is soon given again).
fn open_again(tmp: &At, made: &Current) -> std::io::Result<File> {
    let f = tmp.open_write()?;
    let meta = f.metadata()?;
    let found = Current::of(&meta);
    let identity = |c: &Current| (c.device, c.inode, c.uid);
    if !meta.is_file() || identity(&found) != identity(made) {
        return Err(std::io::Error::other(
            "its temporary file was replaced while it was written",
        ));
    }
    Ok(f)
}

/// The error to report for each file a failed read or blob touches.
fn describe(err: &Error) -> Error {
    match err {
        Error::BlobIntegrity { blob, pack, reason } => Error::BlobIntegrity {
            blob: *blob,
            pack: *pack,
            reason: reason.clone(),
        },
        other => Error::Invalid(other.to_string()),
    }
}

/// Runs `read` on every item from `depth` threads of its own, and `place` on each result on
/// the rayon pool as it arrives, in whatever order: for storage where a read mostly waits for
/// an answer. At most `depth` reads are in flight or waiting to be handed over, one more waits
/// to be placed, and one is being placed on each rayon thread.
fn read_ahead<I: Sync, R: Send>(
    items: &[I],
    depth: usize,
    read: impl Fn(&I) -> R + Sync,
    place: impl Fn(&I, R) + Sync,
) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        // Made inside the scope: if placing panics, the receiver is gone before the scope
        // waits for the readers, so none of them stays blocked sending.
        let (sender, results) = std::sync::mpsc::sync_channel::<(usize, R)>(1);
        let results = Mutex::new(results);
        for _ in 0..depth.min(items.len()) {
            let (sender, next, read) = (sender.clone(), &next, &read);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= items.len() || sender.send((i, read(&items[i]))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(sender);
        (0..items.len()).into_par_iter().for_each(|_| {
            let Ok((i, result)) = lock(&results).recv() else {
                return;
            };
            place(&items[i], result);
        });
    });
}

/// Every read of every pack, longest first: a batch then ends on short reads, not with one
/// worker left on a long one while the others wait.
fn longest_first<'b>(
    orders: &'b [(&'b PackId, Vec<&'b PlannedBlob>)],
    max_read: u64,
) -> Vec<(&'b PackId, &'b [&'b PlannedBlob])> {
    let mut reads: Vec<_> = orders
        .iter()
        .flat_map(|(pack, order)| spans(order, max_read).into_iter().map(|span| (*pack, span)))
        .collect();
    reads.sort_by_key(|(_, span)| std::cmp::Reverse(read_range(span).end - read_range(span).start));
    reads
}

/// Groups blobs (sorted by offset) into reads.
fn spans<'b>(order: &'b [&'b PlannedBlob], max_read: u64) -> Vec<&'b [&'b PlannedBlob]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=order.len() {
        let split = i == order.len() || {
            let prev = &order[i - 1].entry;
            let next = &order[i].entry;
            next.offset > prev.end() + MAX_GAP || next.end() - order[start].entry.offset > max_read
        };
        if split {
            out.push(&order[start..i]);
            start = i;
        }
    }
    out
}

/// For each blob of a span (sorted by offset), whether it shares bytes with another.
fn sharing_bytes(span: &[&PlannedBlob]) -> Vec<bool> {
    let mut shared = vec![false; span.len()];
    let mut end_so_far = 0;
    for (i, blob) in span.iter().enumerate() {
        let with_earlier = i > 0 && blob.entry.offset < end_so_far;
        let with_later = span
            .get(i + 1)
            .is_some_and(|next| next.entry.offset < blob.entry.end());
        shared[i] = with_earlier || with_later;
        end_so_far = end_so_far.max(blob.entry.end());
    }
    shared
}

/// The bytes of a pack that hold a span's blobs (sorted by offset): up to the largest end, not
/// the last blob's, since entries of a damaged index may overlap.
fn read_range(span: &[&PlannedBlob]) -> std::ops::Range<u64> {
    let start = span.first().map_or(0, |b| b.entry.offset);
    let end = span.iter().map(|b| b.entry.end()).max().unwrap_or(start);
    start..end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::NodeKind;
    use std::os::unix::fs::PermissionsExt;

    /// Every item is read once and placed once, whatever the depth.
    #[test]
    fn read_ahead_reads_and_places_every_item_once() {
        for (items, depth) in [(0, 4), (1, 8), (7, 3), (50, 8), (50, 2), (3, 16)] {
            let items: Vec<usize> = (0..items).collect();
            let reads = AtomicUsize::new(0);
            let placed = Mutex::new(Vec::new());
            let read = |&i: &usize| {
                reads.fetch_add(1, Ordering::SeqCst);
                i * 10
            };
            read_ahead(&items, depth, read, |&i, r| {
                assert_eq!(r, i * 10);
                lock(&placed).push(i);
            });
            let mut placed = placed.into_inner().unwrap();
            placed.sort();
            assert_eq!(placed, items, "depth {depth}");
            assert_eq!(reads.load(Ordering::SeqCst), items.len());
        }
    }

    /// A panic while placing comes out of `read_ahead` instead of leaving readers blocked.
    #[test]
    fn a_panic_while_placing_is_not_a_hang() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let items: Vec<usize> = (0..400).collect();
            let outcome = std::panic::catch_unwind(|| {
                read_ahead(
                    &items,
                    4,
                    |&i| i,
                    |&i, _| assert_ne!(i, 3, "placing failed"),
                );
            });
            let _ = done.send(outcome.is_err());
        });
        let panicked = finished.recv_timeout(std::time::Duration::from_secs(30));
        assert_eq!(panicked, Ok(true), "read_ahead hung or swallowed the panic");
    }

    fn blob(offset: u64, stored_len: u32) -> PlannedBlob {
        PlannedBlob {
            entry: BlobEntry {
                id: BlobId([0; 32]),
                blob_type: crate::ids::BlobType::Data,
                compression: 0,
                offset,
                stored_len,
                raw_len: stored_len,
            },
            targets: Vec::new(),
        }
    }

    /// Reads come longest first, and together cover every blob once.
    #[test]
    fn reads_come_longest_first() {
        let far = MAX_GAP + 1;
        let a = [blob(0, 10), blob(10 + far, 500), blob(600 + far, 20)];
        let b = [blob(0, 100), blob(100, 300), blob(400 + far, 5)];
        let (pa, pb) = (PackId([1; 32]), PackId([2; 32]));
        let orders = vec![(&pa, a.iter().collect()), (&pb, b.iter().collect())];
        let reads = longest_first(&orders, MAX_READ);
        let lengths: Vec<u64> = reads
            .iter()
            .map(|(_, span)| read_range(span).end - read_range(span).start)
            .collect();
        assert_eq!(lengths, [610, 400, 10, 5]);
        assert_eq!(reads.iter().map(|(_, span)| span.len()).sum::<usize>(), 6);
    }

    /// Regression: with overlapping index entries (a blob inside another), the read ended at
    /// the last blob's end and cutting the first blob out of it panicked.
    #[test]
    fn a_read_covers_every_blob_of_its_span() {
        let (outer, inner, next) = (blob(0, 100), blob(10, 5), blob(100, 20));
        assert_eq!(read_range(&[&outer, &inner]), 0..100);
        assert_eq!(read_range(&[&outer, &inner, &next]), 0..120);
    }

    /// Blobs whose bytes another entry of the span also takes in, before or after, are
    /// found (and opened from a copy); neighbours that only touch are not.
    #[test]
    fn blobs_sharing_bytes_are_found() {
        let span = [
            blob(0, 100),
            blob(10, 5),
            blob(100, 20),
            blob(120, 10),
            blob(125, 10),
        ];
        let span: Vec<&PlannedBlob> = span.iter().collect();
        assert_eq!(sharing_bytes(&span), [true, true, false, true, true]);
        let (first, later) = (blob(0, 50), blob(60, 10));
        assert_eq!(sharing_bytes(&[&first, &later]), [false, false]);
    }

    fn tmp(file: &PlannedFile) -> PathBuf {
        file.path
            .with_file_name(crate::restore::temp::file_name(file.temp_suffix))
    }

    /// Regression: temporary files were made 0666 less the umask, so a private file being
    /// restored could be read by others until its mode was set at the end.
    #[test]
    fn a_temporary_file_gives_no_one_else_more_access_than_the_file_will_have() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::open(dir.path()).unwrap();
        for (mode, most) in [
            (0o600, 0o600),
            (0o400, 0o600),
            (0o640, 0o640),
            (0o4755, 0o755),
        ] {
            let mut node = Node::new(b"f".to_vec(), NodeKind::File);
            node.mode = mode;
            let path = dir.path().join(format!("f{mode:o}"));
            let file = PlannedFile::new(path.clone(), u64::from(mode), node);
            assert!(file.make(&target).unwrap().is_some());
            assert!(file.make(&target).unwrap().is_none(), "made twice");
            let made = std::fs::metadata(tmp(&file)).unwrap().permissions().mode() & 0o7777;
            assert_eq!(made & !most, 0, "{mode:o} made as {made:o}");
        }
    }

    /// A symlink swapped in for a temporary file (a folder others can write to) must not
    /// take the writes of a file whose blobs come in several reads.
    #[test]
    fn a_symlink_swapped_in_for_a_temporary_file_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"keep").unwrap();
        let mut node = Node::new(b"f".to_vec(), NodeKind::File);
        node.mode = 0o644;
        let file = PlannedFile::new(dir.path().join("f"), 1, node);
        let target = Target::open(dir.path()).unwrap();
        file.write(&target, b"first", 0, false).unwrap();
        std::fs::remove_file(tmp(&file)).unwrap();
        std::os::unix::fs::symlink(&outside, tmp(&file)).unwrap();
        assert!(file.write(&target, b"second", 5, false).is_err());
        assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
    }

    /// Regression: a file or FIFO swapped in for a temporary file was opened again as if it
    /// were the file being written (a FIFO hung the restore; a file took the writes).
    #[test]
    fn anything_swapped_in_for_a_temporary_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::open(dir.path()).unwrap();
        let mut node = Node::new(b"f".to_vec(), NodeKind::File);
        node.mode = 0o644;
        let file = PlannedFile::new(dir.path().join("f"), 1, node);
        file.write(&target, b"first", 0, false).unwrap();
        std::fs::remove_file(tmp(&file)).unwrap();
        std::fs::write(tmp(&file), b"theirs").unwrap();
        let theirs = Some(nix::unistd::Uid::from_raw(
            nix::unistd::geteuid().as_raw() ^ 1,
        ));
        if nix::unistd::chown(&tmp(&file), theirs, None).is_err() {
            return; // not root: no one else's file can be made here
        }
        assert!(file.write(&target, b"second", 5, false).is_err());
        assert_eq!(std::fs::read(tmp(&file)).unwrap(), b"theirs");
        std::fs::remove_file(tmp(&file)).unwrap();
        nix::unistd::mkfifo(&tmp(&file), nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
        assert!(file.write(&target, b"second", 5, false).is_err());
    }
}
