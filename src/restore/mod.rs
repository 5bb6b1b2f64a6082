//! Restore: recreate a snapshot's tree under a target directory.
//!
//! Two halves that run at once: the walk of the trees, creating folders, symlinks and special
//! files and planning each regular file (`plan`), hands batches of at most `batch_files`
//! files and folders over to the finisher (`finish`), which reads the needed packs in
//! parallel and writes each verified blob where it belongs, each file under a temporary name
//! that it is renamed from once complete, with its metadata (`plan::Plan::execute`); then
//! makes the batch's hard links and sets the metadata of the folders in it. The walk waits
//! while the finisher is busy with the two batches before, so three batches are held at most
//! and memory is bounded whatever the size of the tree (only the first path of each file with
//! several links is kept to the end).
//!
//! Guarantees:
//! - nothing is written outside the target: every entry name is checked (no `/`, NUL, `.`,
//!   `..` or empty name), every entry is reached through its folder's descriptor, each folder
//!   opened from the target one name at a time, never through a symlink (`target`), so not
//!   even a symlink swapped in during the restore is followed; directories are created by us
//!   or must already be real directories, and files are created under a fresh temporary name
//!   and renamed into place, which replaces a symlink rather than following it;
//! - every byte written was verified against its blob id first (`pack::open_blob`);
//! - a damaged or missing blob fails only the files that need it: the error names the file
//!   and the pack, the file is not left behind, and the rest of the restore goes on;
//! - directory metadata is applied after the directory's contents: a folder is finished
//!   only once the walk has left it and every file and link in it is in place.

mod failures;
mod finish;
mod links;
mod metadata;
mod plan;
mod select;
mod target;
mod temp;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{SyncSender, sync_channel};

use crate::blobs::BlobReader;
use crate::error::{Error, Result};
use crate::ids::TreeId;
use crate::index::LocalIndex;
use crate::repo::Repository;
use crate::tree::{Node, NodeKind};
use crate::walk::os_string;
use failures::Failures;
use finish::{Batch, Finisher, FolderEnd};
pub use links::FirstPaths;
use plan::PlannedFile;
pub use select::{Overwrite, Selection};
use target::{At, Target};
use temp::TempNames;

pub struct RestoreOptions {
    pub target: PathBuf,
    /// Use numeric uid/gid even where the names resolve on this machine.
    pub numeric_owner: bool,
    pub selection: Selection,
    pub overwrite: Overwrite,
    /// Decide and list, write nothing.
    pub dry_run: bool,
    /// Read every restored file back and check it against its blob ids.
    pub verify: bool,
    /// The snapshot marks its sparse files (`Snapshot::marks_sparse`): only their all-zero
    /// blobs are left holes, other files get theirs written (a swap file or a preallocated
    /// database stays allocated). Else every all-zero blob is a hole.
    pub holes_marked: bool,
    /// Files and folders handed over to be written at a time (three batches are held at
    /// most). Bounds memory whatever the size of the tree; a blob that files of two batches
    /// share is read once for each.
    pub batch_files: usize,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct RestoreStats {
    pub files: u64,
    pub dirs: u64,
    pub other_entries: u64,
    pub bytes: u64,
    /// Existing entries left alone (`--overwrite if-changed|never`).
    pub skipped: u64,
    pub errors: u64,
    /// Device nodes not made: that needs root.
    pub devices_not_made: u64,
}

/// What a dry run would write at a path.
#[derive(Debug, PartialEq)]
pub enum WouldWrite<'a> {
    /// A file's content, of this size.
    File(u64),
    /// A later path of a file with several links: a hard link to the first.
    Link(&'a Path),
    /// A folder not there yet.
    Dir,
    /// A symlink, FIFO, socket or device node.
    Other(NodeKind),
    /// An entry kept as it is, whose metadata differs from the snapshot's.
    Metadata,
    /// A temporary file an interrupted restore left, which a real run removes.
    Removal,
}

/// Where a restore's news of single entries goes.
pub trait Report {
    /// A problem with one entry (counted in `errors`); called once the restore is over.
    fn failed(&self, path: &Path, err: &Error);
    /// With `dry_run`: what the restore would write at `path`, as the walk comes to it (a
    /// folder after what is below it). The listing is not held, so it takes no memory
    /// however long it is.
    fn would_write(&self, path: &Path, what: WouldWrite<'_>);
}

/// Where a restore starts: a folder's tree (its contents go into the target) or one entry
/// (written into the target under its name). The path is the start's path in the snapshot.
pub enum Start {
    Tree(TreeId, Vec<u8>),
    Entry(Box<Node>, Vec<u8>),
}

/// Checks that a name from a snapshot is a single, harmless path component.
pub fn check_name(parent: &Path, name: &[u8]) -> Result<()> {
    let bad = name.is_empty()
        || name == b"."
        || name == b".."
        || name.contains(&b'/')
        || name.contains(&0);
    if bad {
        return Err(Error::UnsafeName {
            parent: parent.display().to_string(),
            name: String::from_utf8_lossy(name).into_owned(),
        });
    }
    Ok(())
}

/// Files and folders in the first batch.
const FIRST_BATCH: usize = 1024;

struct Walk<'a> {
    repo: &'a Repository,
    trees: BlobReader<'a>,
    /// A read-transaction connection: the many lookups skip per-statement locking.
    index: LocalIndex,
    opts: &'a RestoreOptions,
    is_root: bool,
    target: &'a Target,
    temp: &'a TempNames,
    /// When this restore began: temporary files unchanged since are an interrupted one's.
    started: std::time::SystemTime,
    /// Files planned, links to make once their first path is in place, and folders the walk
    /// has left (children before parents, waiting for their metadata).
    batch: Batch,
    /// Where batches go to be written.
    finisher: SyncSender<Batch>,
    finisher_gone: bool,
    /// Files and folders this batch may hold: small at first, so that writing starts soon,
    /// then doubling up to `batch_files` (walking is several times faster than writing).
    batch_limit: usize,
    first_paths: FirstPaths,
    stats: RestoreStats,
    report: &'a dyn Report,
    failures: &'a Failures,
}

/// Restores from `start` into `opts.target`. Per-entry problems go to `report` and are
/// counted; the returned error is for problems that stop the whole restore.
pub fn run(
    repo: &Repository,
    index: &LocalIndex,
    start: Start,
    opts: &RestoreOptions,
    report: &dyn Report,
) -> Result<RestoreStats> {
    let target_missing = !opts.target.exists();
    if !opts.dry_run {
        fs::create_dir_all(&opts.target).map_err(|e| Error::io(&opts.target, e))?;
    }
    let target = Target::open(&opts.target).map_err(|e| Error::io(&opts.target, e))?;
    let temp = TempNames::new();
    let failures = Failures::default();
    let owners = metadata::Owners {
        is_root: crate::host::is_root(),
        numeric: opts.numeric_owner,
    };
    let mut finisher = Finisher {
        repo,
        trees: BlobReader::new(repo, index.snapshot_reader()?),
        copies_index: index.another_connection().map(Mutex::new),
        verify: opts.verify,
        owners,
        holes_marked: opts.holes_marked,
        replace: opts.overwrite != Overwrite::Never,
        temp: &temp,
        target: &target,
        failures: &failures,
        files: 0,
        bytes: 0,
    };
    let (trees, walk_index) = (index.snapshot_reader()?, index.snapshot_reader()?);
    let mut stats = std::thread::scope(|scope| {
        // No batch waits in between: the walk hands one over when the finisher takes it.
        let (hand_over, batches) = sync_channel::<Batch>(0);
        let finishing = scope.spawn(move || {
            finisher.finish_all(batches);
            (finisher.files, finisher.bytes)
        });
        let walk = Walk {
            repo,
            trees: BlobReader::new(repo, trees),
            index: walk_index,
            opts,
            is_root: owners.is_root,
            target: &target,
            temp: &temp,
            started: std::time::SystemTime::now(),
            batch: Batch::default(),
            finisher: hand_over,
            finisher_gone: false,
            batch_limit: opts.batch_files.min(FIRST_BATCH),
            first_paths: FirstPaths::default(),
            stats: RestoreStats::default(),
            failures: &failures,
            report,
        };
        let walked = walk.run(start);
        let (files, bytes) = finishing
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        walked.map(|stats| RestoreStats {
            files: stats.files + files,
            bytes: stats.bytes + bytes,
            ..stats
        })
    })?;
    if opts.dry_run && target_missing {
        report.would_write(&opts.target, WouldWrite::Dir);
    }
    let (failures, stop) = failures.into_inner();
    stats.errors = failures.len() as u64;
    for (path, err) in &failures {
        report.failed(path, err);
    }
    match stop {
        Some((path, err)) => Err(Error::RestoreStopped {
            path,
            reason: err.to_string(),
            files: stats.files,
        }),
        None => Ok(stats),
    }
}

impl Walk<'_> {
    /// Walks everything from `start`, hands the last batch over and returns what it counted.
    /// A starting folder whose listing cannot be read is an error: nothing would be restored.
    fn run(mut self, start: Start) -> Result<RestoreStats> {
        let target = self.opts.target.clone();
        match start {
            Start::Tree(tree, at) => {
                // Read twice, the second time from the cache of tree packs.
                self.trees.tree(&tree)?;
                // A starting folder is matched like any entry: excluded, nothing is restored;
                // included, everything in it.
                let (excluded, forced) = self.opts.selection.at_start(&at);
                if !excluded {
                    self.dir_contents(&tree, &target, &at, forced, false);
                }
            }
            Start::Entry(node, at) => {
                check_name(&target, &node.name)?;
                let path = target.join(os_string(&node.name));
                let (excluded, forced) = self.opts.selection.at_start(&at);
                if !excluded && let Err(e) = self.entry(*node, &path, &at, forced, false) {
                    self.fail(&path, e);
                }
            }
        }
        self.hand_over();
        Ok(self.stats)
    }

    /// Hands the batch over to be written, once the finisher is done with the one before.
    fn hand_over(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        tracing::debug!(
            files = batch.plan.files.len(),
            "restore: planned, folders made"
        );
        // Fails only if the finisher is gone (it panicked, which `run` passes on): the walk
        // then stops.
        self.finisher_gone |= self.finisher.send(batch).is_err();
    }

    /// Hands the batch over once the files and folders held reach its limit.
    fn end_batch_if_full(&mut self) {
        if self.batch.len() >= self.batch_limit {
            self.hand_over();
            self.batch_limit = (self.batch_limit * 2).min(self.opts.batch_files);
        }
    }

    fn fail(&self, path: &Path, err: Error) {
        self.failures.record(path, err);
    }

    /// Whether an entry was made; a failure to make it (a folder, symlink or special file) is
    /// recorded like a failed file write, so one for want of room stops the restore.
    fn made(&self, path: &Path, made: Result<()>) -> bool {
        match made {
            Ok(()) => true,
            Err(e) => {
                self.failures.record_write(path, e);
                false
            }
        }
    }

    /// Restores a folder's entries; true if anything below was restored (or kept).
    /// `forced`: an include matched a folder above, so everything below is wanted.
    /// `fresh`: this restore created the folder, so nothing in it can exist yet.
    fn dir_contents(
        &mut self,
        tree: &TreeId,
        dir: &Path,
        at: &[u8],
        forced: bool,
        fresh: bool,
    ) -> bool {
        if crate::walk::depth(at) > crate::walk::MAX_DEPTH {
            let why = format!("nested deeper than {} folders", crate::walk::MAX_DEPTH);
            self.fail(dir, Error::Invalid(why));
            return false;
        }
        let tree = match self.trees.tree(tree) {
            Ok(t) => t,
            Err(e) => {
                self.fail(dir, e);
                return false;
            }
        };
        match (fresh, self.opts.dry_run) {
            (true, _) => {}
            (false, true) => {
                for path in temp::stale(self.target, dir, self.started) {
                    self.report.would_write(&path, WouldWrite::Removal);
                }
            }
            (false, false) => temp::remove_stale(self.target, dir, self.started),
        }
        let mut any = false;
        let mut previous: Option<Vec<u8>> = None;
        for node in tree.nodes {
            if self.finisher_gone || self.failures.stopped() {
                break;
            }
            if let Err(e) = check_name(dir, &node.name) {
                self.fail(dir, e);
                continue;
            }
            let path = dir.join(os_string(&node.name));
            let mut child_at = at.to_vec();
            child_at.push(b'/');
            child_at.extend_from_slice(&node.name);
            // A name twice in one folder (a tree readers accept, no backup writes): the first
            // entry wins, and a later one can neither replace it nor write through it. The
            // failure is the folder's: the entry at that path is the first one.
            if previous.as_ref() == Some(&node.name) {
                if !self.opts.selection.excluded(&child_at) {
                    let why = format!(
                        "the snapshot lists {:?} twice in this folder; only the first was restored",
                        String::from_utf8_lossy(&node.name)
                    );
                    self.fail(dir, Error::Invalid(why));
                }
                continue;
            }
            previous = Some(node.name.clone());
            match self.entry(node, &path, &child_at, forced, fresh) {
                Ok(restored) => any |= restored,
                Err(e) => self.fail(&path, e),
            }
        }
        any
    }

    /// Restores one entry; true if it (or something below it) was restored or kept.
    fn entry(
        &mut self,
        node: Node,
        path: &Path,
        at: &[u8],
        forced: bool,
        fresh: bool,
    ) -> Result<bool> {
        let select = &self.opts.selection;
        if select.excluded(at) {
            return Ok(false);
        }
        let wanted = forced || select.included(at);
        if node.kind == NodeKind::Dir {
            return self.dir(node, path, at, wanted, fresh);
        }
        if !wanted {
            return Ok(false);
        }
        // Device nodes need root; FIFOs and sockets (a socket file, which no one listens on
        // until a program binds its name again) do not.
        let device = matches!(node.kind, NodeKind::CharDevice | NodeKind::BlockDevice);
        if device && !self.is_root {
            self.stats.devices_not_made += 1;
            return Ok(false);
        }
        if !fresh {
            match self.at(path) {
                Ok(on_disk) => {
                    // Looked at first: reading a symlink to compare it moves its atime (which
                    // `keep` puts back).
                    let stale = (node.kind == NodeKind::Symlink)
                        .then(|| self.metadata_would_change(&on_disk, &node));
                    if self.keep_existing(&node, &on_disk, path)? {
                        self.keep(&node, &on_disk, path, stale)?;
                        return Ok(true);
                    }
                }
                // A dry run's folder that is not there: nothing in it is either.
                Err(_) if self.opts.dry_run => {}
                Err(e) => return Err(e),
            }
        }
        if self.opts.dry_run {
            self.list(&node, path);
            return Ok(true);
        }
        match node.kind {
            NodeKind::File if let Some(first) = self.first_paths.get(&node) => {
                self.batch.links.push((path.to_path_buf(), first));
                self.end_batch_if_full();
            }
            NodeKind::File => {
                self.first_paths.remember(&node, path);
                let planned = PlannedFile::new(path.to_path_buf(), self.temp.next(), node);
                self.batch.plan.add_file(&self.index, planned)?;
                self.end_batch_if_full();
            }
            NodeKind::Symlink => {
                let link_target = os_string(node.link_target.as_deref().unwrap_or_default());
                let make = |tmp: &At| tmp.symlink(&link_target).map_err(|e| Error::io(path, e));
                return self.make_and_place(path, &node, make);
            }
            _ => {
                return self
                    .make_and_place(path, &node, |tmp| metadata::make_special(tmp, path, &node));
            }
        }
        Ok(true)
    }

    /// A dry run's entry to be written: counted and reported.
    fn list(&mut self, node: &Node, path: &Path) {
        if node.kind != NodeKind::File {
            self.stats.other_entries += 1;
            return self.report.would_write(path, WouldWrite::Other(node.kind));
        }
        self.stats.files += 1;
        match self.first_paths.get(node) {
            // No data: a link.
            Some(first) => self.report.would_write(path, WouldWrite::Link(&first)),
            None => {
                self.first_paths.remember(node, path);
                self.stats.bytes += node.size;
                self.report.would_write(path, WouldWrite::File(node.size));
            }
        }
    }

    /// Makes a symlink or special file under a temporary name (`make`), then gives it its
    /// metadata and renames it into place; false if it could not be made.
    fn make_and_place(
        &mut self,
        path: &Path,
        node: &Node,
        make: impl FnOnce(&At) -> Result<()>,
    ) -> Result<bool> {
        let on_disk = self.at(path)?;
        let name = temp::file_name(self.temp.next());
        let tmp = on_disk.sibling(&name);
        if !self.made(path, make(&tmp)) {
            return Ok(false);
        }
        self.place(&tmp, &on_disk, path, node)?;
        Ok(true)
    }

    fn dir(
        &mut self,
        node: Node,
        path: &Path,
        at: &[u8],
        wanted: bool,
        fresh: bool,
    ) -> Result<bool> {
        let on_disk = self.at(path);
        let found = match (&on_disk, fresh) {
            (Ok(d), false) => d.stat().ok(),
            _ => None,
        };
        let mut existed = found.is_some();
        if self.opts.dry_run && found.as_ref().is_some_and(|f| !f.is_dir()) {
            // What a real run's `make_dir` finds: nothing is written through it.
            self.failures.record_write(path, not_a_folder(path));
            return Ok(false);
        }
        // A dry run's news of the folder itself, given after what is below it.
        let dry_news = match &on_disk {
            _ if !self.opts.dry_run => None,
            Ok(d) if existed => self
                .metadata_would_change(d, &node)
                .then_some(WouldWrite::Metadata),
            _ => Some(WouldWrite::Dir),
        };
        if !self.opts.dry_run {
            match on_disk.and_then(|d| make_dir(&d, path)) {
                // Made by someone else since it was looked for: not ours to treat as empty.
                Ok(made) => existed |= !made,
                Err(e) => {
                    self.failures.record_write(path, e);
                    return Ok(false);
                }
            }
        }
        let opened_up = match found {
            Some(found) if !self.opts.dry_run => self.open_up(path, &found),
            _ => None,
        };
        let below = match &node.subtree {
            Some(sub) => self.dir_contents(
                sub,
                path,
                at,
                wanted && self.opts.selection.has_includes(),
                !existed && !self.opts.dry_run,
            ),
            None => false,
        };
        let keep = below || wanted;
        if !keep {
            if !existed && !self.opts.dry_run {
                let _ = self.at(path).map(|at| at.remove_dir());
                self.target.forget(path);
            }
            if let Some(mode) = opened_up {
                let _ = self.at(path).map(|at| at.chmod(mode));
            }
            return Ok(false);
        }
        self.stats.dirs += 1;
        if let Some(news) = dry_news {
            self.report.would_write(path, news);
        }
        let end = match (
            existed && self.opts.overwrite == Overwrite::Never,
            opened_up,
        ) {
            _ if self.opts.dry_run => None,
            (false, _) => Some(FolderEnd::Snapshot(Box::new(node))),
            (true, Some(mode)) => Some(FolderEnd::ModeItHad(mode)),
            (true, None) => None,
        };
        if let Some(end) = end {
            self.batch.dirs.push((path.to_path_buf(), end));
            self.end_batch_if_full();
        }
        Ok(true)
    }

    /// Not root: an existing folder of ours whose mode denies us writing into it or searching
    /// it (an earlier run restored it so) is given both while its contents are restored; the
    /// snapshot's mode is set once they are, as for any folder. Returns the mode it had.
    fn open_up(&self, path: &Path, found: &target::Stat) -> Option<u32> {
        let euid = nix::unistd::geteuid().as_raw();
        let mode = found.mode() & 0o7777;
        if self.is_root || !found.is_dir() || found.uid() != euid || mode & 0o300 == 0o300 {
            return None;
        }
        let at = self.at(path).ok()?;
        at.chmod(mode | 0o300).ok().map(|()| mode)
    }

    /// An existing entry left alone keeps its content but gets the snapshot's metadata (a
    /// restore that undoes a mass `chmod`), and a file with several links stands for its
    /// inode, so a restore resumed after the first path of a link was written still links.
    /// `stale`: for a symlink, whether its metadata differed before it was read to be
    /// compared, which moved its atime.
    fn keep(&mut self, node: &Node, at: &At, path: &Path, stale: Option<bool>) -> Result<()> {
        self.stats.skipped += 1;
        // A later path kept is a link of the first, kept too: one inode, one news of it.
        let later_path = self.first_paths.first_kept(node);
        if node.kind == NodeKind::File && self.may_link_to(node, at, path) {
            self.first_paths.remember_kept(node, path);
        }
        if !stale.unwrap_or_else(|| self.metadata_would_change(at, node)) {
            // Only `if-changed` reads a symlink to compare it.
            if stale.is_some() && self.opts.overwrite == Overwrite::IfChanged && !self.opts.dry_run
            {
                metadata::put_back_times(at, path, node);
            }
            return Ok(());
        }
        if self.opts.dry_run {
            if !later_path {
                self.report.would_write(path, WouldWrite::Metadata);
            }
            return Ok(());
        }
        match metadata::apply(at, path, node, self.owners()) {
            // Not root: another user's file keeps its metadata, as ownership is skipped.
            Err(Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::PermissionDenied
                    && !self.is_root
                    && !owned_by_us(at) =>
            {
                Ok(())
            }
            other => other,
        }
    }

    /// Whether a restore would set the metadata of the entry kept at `at`.
    fn metadata_would_change(&self, at: &At, node: &Node) -> bool {
        self.opts.overwrite != Overwrite::Never && metadata::differs(at, node, self.owners())
    }

    /// Whether a kept file may be what the later paths of its hard links are linked to. With
    /// `--overwrite never` whatever is there is kept, so only a regular file with the
    /// snapshot's content and metadata (owner, mode, attributes): not a symlink or folder,
    /// nor a file someone else put there, whose content they would then control.
    fn may_link_to(&self, node: &Node, at: &At, path: &Path) -> bool {
        if self.opts.overwrite != Overwrite::Never {
            return true; // kept only as identical, and given the snapshot's metadata
        }
        node.nlink > 1
            && at.stat().is_ok_and(|s| s.is_file())
            && !metadata::differs(at, node, self.owners())
            && select::same_content(self.repo, &self.trees, self.target, path, node)
                .is_ok_and(|same| same)
    }

    /// True if an existing entry at `path` is to be left alone.
    fn keep_existing(&self, node: &Node, at: &At, path: &Path) -> Result<bool> {
        let Ok(existing) = at.stat() else {
            return Ok(false);
        };
        Ok(match self.opts.overwrite {
            Overwrite::Always => false,
            Overwrite::Never => true,
            Overwrite::IfChanged => match node.kind {
                // A later path of a file with several links is the snapshot's entry only as
                // a link of the first, kept as found: a separate copy (left by a restore of
                // only this path, or put there by hand) is made a link again, and so is a
                // link of a first path being written anew (it has the old content).
                NodeKind::File if let Some(first) = self.first_paths.get(node) => {
                    self.first_paths.first_kept(node)
                        && self
                            .target
                            .at(&first)
                            .and_then(|first| first.stat())
                            .is_ok_and(|first| existing.is_same_inode(&first))
                }
                NodeKind::File => {
                    let same =
                        select::same_content(self.repo, &self.trees, self.target, path, node);
                    match same {
                        // Unreadable (a mode that gives its owner no read when we are not
                        // root, a bad sector): written again, rather than failing every run.
                        Err(Error::Io { .. }) => false,
                        same => same?,
                    }
                }
                NodeKind::Symlink => {
                    existing.is_symlink()
                        && at
                            .read_link()
                            .is_ok_and(|t| Some(t.as_bytes()) == node.link_target.as_deref())
                }
                // An existing FIFO, socket or device node of the same kind is left (it gets
                // the snapshot's metadata): one made again would be another inode, and a live
                // socket (an agent's, a database's) replaced by one no one listens on.
                NodeKind::Fifo
                | NodeKind::Socket
                | NodeKind::CharDevice
                | NodeKind::BlockDevice => existing.is_same_special(node.kind, node.rdev),
                NodeKind::Dir => false,
            },
        })
    }

    /// Applies metadata to a finished temporary entry and renames it into place at `at`.
    fn place(&mut self, tmp: &At, at: &At, path: &Path, node: &Node) -> Result<()> {
        let replace = self.opts.overwrite != Overwrite::Never;
        let result = metadata::apply(tmp, path, node, self.owners())
            .and_then(|()| (tmp.rename_into_place(at, replace)).map_err(|e| Error::io(path, e)));
        if !result.as_ref().is_ok_and(|&put| put) {
            let _ = tmp.remove_file();
        }
        match result? {
            true => self.stats.other_entries += 1,
            false => self.stats.skipped += 1,
        }
        Ok(())
    }

    /// The entry at `path`, reached through its folder's descriptor.
    fn at<'p>(&self, path: &'p Path) -> Result<At<'p>> {
        self.target.at(path).map_err(|e| Error::io(path, e))
    }

    fn owners(&self) -> metadata::Owners {
        metadata::Owners {
            is_root: self.is_root,
            numeric: self.opts.numeric_owner,
        }
    }
}

fn owned_by_us(at: &At) -> bool {
    let euid = nix::unistd::geteuid().as_raw();
    at.stat().is_ok_and(|m| m.uid() == euid)
}

/// Creates a directory, or accepts an existing real one; refuses anything else in the way.
/// True if it made it.
fn not_a_folder(path: &Path) -> Error {
    let why = "exists and is not a directory; refusing to write through it";
    Error::io(path, std::io::Error::other(why))
}

fn make_dir(at: &At, path: &Path) -> Result<bool> {
    match at.create_dir() {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = at.stat().map_err(|e| Error::io(path, e))?;
            match meta.is_dir() {
                true => Ok(false),
                false => Err(not_a_folder(path)),
            }
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_names_are_refused() {
        let p = Path::new("/t");
        for bad in [&b""[..], b".", b"..", b"a/b", b"/etc", b"a\0b"] {
            assert!(check_name(p, bad).is_err(), "{bad:?} accepted");
        }
        for good in [&b"a"[..], b"..a", b"a b\n", &[0xff, 0xfe]] {
            assert!(check_name(p, good).is_ok(), "{good:?} refused");
        }
    }
}
