//! The second half of a restore, on a thread of its own while the walk goes on: the batches
//! the walk hands over, in order. For each: the files' data (`plan::Plan::execute`), then
//! with `verify` reading them back; then its end: the hard links planned in it, then the
//! metadata of the folders the walk had left when it handed it over. A batch's files are
//! written while the batch before is still being written, and that one's end made: its last
//! reads and writes, and the next one's first, keep the workers busy between them. Two
//! batches may write into one folder (a batch ends after any file); their temporary names
//! come from one counter, and the folder is handed over, with the later batch, only after
//! both.
//!
//! Guarantees: a folder's metadata is set only after every file and link in it is in place
//! (the walk hands a folder over only after everything in it); a link is made only once its
//! first path was written, in this batch or an earlier one, and not at all if that failed;
//! batches end in order, each once its files are written.
//! A folder whose mode denies its owner search permission is finished last of all, so that
//! links made later to files inside it need no privilege to reach them.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::thread::ScopedJoinHandle;

use rayon::prelude::*;

use super::failures::Failures;
use super::metadata::{self, Owners};
use super::plan::{Destination, Plan, Written};
use super::select;
use super::target::Target;
use super::temp::{self, TempNames};
use crate::blobs::{BlobReader, lock};
use crate::error::{Error, Result};
use crate::ids::BlobId;
use crate::index::LocalIndex;
use crate::repo::Repository;
use crate::tree::Node;

/// What the walk hands over: files to write, links to make once they are, and folders it has
/// left, children before parents.
#[derive(Default)]
pub struct Batch {
    pub plan: Plan,
    /// (link, first path).
    pub links: Vec<(PathBuf, PathBuf)>,
    pub dirs: Vec<(PathBuf, FolderEnd)>,
}

/// What a folder is given once everything in it is in place.
pub enum FolderEnd {
    /// The snapshot's metadata.
    Snapshot(Box<Node>),
    /// Back the mode it had: `--overwrite never` leaves an existing folder as it is, but one of
    /// ours we could not write into was opened up while its contents were restored.
    ModeItHad(u32),
}

impl FolderEnd {
    fn mode(&self) -> u32 {
        match self {
            FolderEnd::Snapshot(node) => node.mode,
            FolderEnd::ModeItHad(mode) => *mode,
        }
    }
}

impl Batch {
    /// Files, links and folders held.
    pub fn len(&self) -> usize {
        self.plan.files.len() + self.links.len() + self.dirs.len()
    }
}

/// What is left of a batch once its files are in place: its links, then its folders.
struct BatchEnd {
    links: Vec<(PathBuf, PathBuf)>,
    dirs: Vec<(PathBuf, FolderEnd)>,
}

/// What a batch's end made: links, and the folders left for last.
#[derive(Default)]
struct Ended {
    links: u64,
    closed_dirs: Vec<(PathBuf, FolderEnd)>,
}

pub struct Finisher<'a> {
    pub repo: &'a Repository,
    /// For `verify`.
    pub trees: BlobReader<'a>,
    /// Asked, from any worker, only when a blob fails where the plan looked for it.
    pub copies_index: Result<Mutex<LocalIndex>>,
    pub verify: bool,
    pub owners: Owners,
    /// See `RestoreOptions::holes_marked`.
    pub holes_marked: bool,
    /// See `Destination::replace`.
    pub replace: bool,
    pub temp: &'a TempNames,
    /// Where the restore writes.
    pub target: &'a Target,
    pub failures: &'a Failures,
    /// Files (and links) put in place, and bytes written.
    pub files: u64,
    pub bytes: u64,
}

impl Finisher<'_> {
    /// Finishes every batch the walk hands over, then the folders left for last.
    pub fn finish_all(&mut self, batches: Receiver<Batch>) {
        let (mut written, mut ended) = (Written::default(), Ended::default());
        let this = &*self;
        std::thread::scope(|scope| {
            let mut before: Option<(ScopedJoinHandle<'_, Written>, BatchEnd)> = None;
            for Batch { plan, links, dirs } in batches {
                // Runs while the batch before is still being written.
                crate::failpoint::hook("restore-batch", this.target.path());
                let writing = scope.spawn(move || this.write(plan));
                let end = BatchEnd { links, dirs };
                if let Some((writing, end)) = before.replace((writing, end)) {
                    this.end(writing, end, &mut written, &mut ended);
                }
            }
            if let Some((writing, end)) = before {
                this.end(writing, end, &mut written, &mut ended);
            }
        });
        self.bytes += written.bytes;
        self.files += written.files + ended.links;
        self.finish_closed_dirs(ended.closed_dirs);
    }

    /// Once a batch's files are written (`writing`), makes its links, then sets its folders'
    /// metadata; adds what it did to `written` and `ended`.
    fn end(
        &self,
        writing: ScopedJoinHandle<'_, Written>,
        end: BatchEnd,
        written: &mut Written,
        ended: &mut Ended,
    ) {
        let done = writing
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        written.bytes += done.bytes;
        written.files += done.files;
        // After a stop (in this batch or the next, written meanwhile), files not written
        // failed unreported: a link could point at the old file at their path. A restore
        // that stopped makes no more links; run again, it makes them.
        if !self.failures.stopped() {
            ended.links += self.links(end.links);
        }
        ended.closed_dirs.extend(self.dirs(end.dirs));
    }

    /// The files' data, then with `verify` reading them back.
    fn write(&self, plan: Plan) -> Written {
        let copies = |id: &BlobId| match &self.copies_index {
            Ok(index) => lock(index).locations(id),
            Err(e) => Err(Error::Invalid(e.to_string())),
        };
        let to = Destination {
            target: self.target,
            owners: self.owners,
            failures: self.failures,
            holes_marked: self.holes_marked,
            replace: self.replace,
        };
        let written = plan.execute(self.repo, to, &copies);
        tracing::debug!("restore: data written, files in place");
        if self.verify {
            self.verify(&plan);
        }
        written
    }

    fn fail(&self, path: PathBuf, err: Error) {
        self.failures.record(&path, err);
    }

    /// Reads every restored file back and checks it against its blob ids.
    fn verify(&self, plan: &Plan) {
        let bad: Vec<(PathBuf, String)> = plan
            .files
            .par_iter()
            .filter(|f| !f.failed.load(Ordering::Relaxed))
            .filter_map(|f| {
                let why = match self.read_back(&f.path, &f.node) {
                    Ok(true) => return None,
                    Ok(false) => "the file on disk differs from the snapshot".to_string(),
                    Err(e) => format!("it could not be read back ({e})"),
                };
                Some((f.path.clone(), why))
            })
            .collect();
        // Kept even if the next batch, written meanwhile, stopped the restore: this file
        // counts as written.
        for (path, why) in bad {
            let err = Error::Invalid(format!("verification failed: {why}"));
            self.failures.record_found(&path, err);
        }
    }

    /// Whether the restored file holds the node's content. Not root, a file of ours that its
    /// mode does not let us read (restored so) is made readable while it is read back.
    fn read_back(&self, path: &std::path::Path, node: &Node) -> Result<bool> {
        let (repo, trees, target) = (self.repo, &self.trees, self.target);
        let refused = match select::same_content(repo, trees, target, path, node) {
            Err(Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::PermissionDenied
                    && !self.owners.is_root =>
            {
                source
            }
            other => return other,
        };
        let at = target.at(path).map_err(|e| Error::io(path, e))?;
        let read = || {
            crate::failpoint::hook("restore-read-back", path);
            select::same_content(repo, trees, target, path, node)
        };
        match at.with_owner_bits(0o400, read) {
            Ok(Some(same)) => same,
            Ok(None) => Err(Error::io(path, refused)),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Hard links within the restored set become hard links again; a link whose first path
    /// failed is not made (it would link to whatever is at that path), and fails too.
    /// Returns how many were made.
    fn links(&self, links: Vec<(PathBuf, PathBuf)>) -> u64 {
        let mut made = 0;
        if links.is_empty() {
            return made;
        }
        let failed = self.failures.paths();
        for (link, first) in links {
            if self.failures.stopped() {
                break;
            }
            if failed.contains(&first) {
                let why = format!("not linked: {} could not be restored", first.display());
                self.fail(link, Error::Invalid(why));
                continue;
            }
            if self.failures.was_kept_instead(&first) {
                let why = format!(
                    "not linked: something appeared at {} while the restore ran, and was kept",
                    first.display()
                );
                self.fail(link, Error::Invalid(why));
                continue;
            }
            let name = temp::file_name(self.temp.next());
            let result = self.target.at(&link).and_then(|at| {
                let tmp = at.sibling(&name);
                self.target.at(&first)?.hard_link_to(&tmp)?;
                // Only a link made here is removed again: the name may be someone else's.
                let put = tmp.rename_into_place(&at, self.replace);
                if !put.as_ref().is_ok_and(|&put| put) {
                    let _ = tmp.remove_file();
                }
                put
            });
            match result {
                Ok(true) => made += 1,
                Ok(false) => {}
                Err(e) => self.failures.record_write(&link, Error::io(&link, e)),
            }
        }
        made
    }

    /// Folder metadata, on every worker (in any order: setting a folder's metadata changes
    /// nothing in the folder above it); returns the folders left for last.
    fn dirs(&self, dirs: Vec<(PathBuf, FolderEnd)>) -> Vec<(PathBuf, FolderEnd)> {
        let (closed, open): (Vec<_>, Vec<_>) = dirs
            .into_iter()
            .partition(|(_, end)| end.mode() & 0o100 == 0);
        open.into_par_iter()
            .for_each(|(path, end)| self.apply(path, &end));
        closed
    }

    fn apply(&self, path: PathBuf, end: &FolderEnd) {
        let applied = (self.target.at(&path))
            .map_err(|e| Error::io(&path, e))
            .and_then(|at| match end {
                FolderEnd::Snapshot(node) => metadata::apply(&at, &path, node, self.owners),
                FolderEnd::ModeItHad(mode) => at.chmod(*mode).map_err(|e| Error::io(&path, e)),
            });
        if let Err(e) = applied {
            self.fail(path, e);
        }
    }

    /// Finishes the folders left for last (see the module comment; children before parents),
    /// once every batch is done. The folders above them were given to their owners long
    /// before, who could have swapped one for a symlink since: like every entry, each is
    /// reached through its folder's descriptor.
    fn finish_closed_dirs(&self, closed_dirs: Vec<(PathBuf, FolderEnd)>) {
        crate::failpoint::hook("restore-closed-dirs", self.target.path());
        self.target.forget_all();
        for (path, end) in closed_dirs {
            self.apply(path, &end);
        }
    }
}
