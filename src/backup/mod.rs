//! The backup pipeline: walk the sources (or read a stream), chunk and store new content
//! through the packer, store one tree per directory, then — after the packer has written
//! every pack and the index segment that lists them — write the snapshot, the commit point.
//!
//! Guarantees: a source entry that vanished is skipped with a warning; one that cannot be
//! read is skipped with a warning and marks the snapshot partial; problems with the repository, or a failed stream
//! command, abort the backup before the snapshot is written, leaving at most unreferenced
//! packs for prune. A dry run writes nothing.
//!
//! Snapshot layout: the root tree mirrors the absolute paths of the sources, so backing up
//! `/srv/uploads` yields the tree `/` → `srv` → `uploads`; directories above a source carry
//! their own metadata but only the entries leading to sources. A stream named `db.sql` is the
//! file `/db.sql`.

mod content;
pub mod exclude;
mod prescan;
pub(crate) mod source_file;
pub mod stream;
mod walker;

use std::collections::{BTreeMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::blobs::BlobReader;
use crate::chunk::{Chunker, ChunkerParams};
use crate::error::{Error, Result};
use crate::host;
use crate::ids::{PackId, SnapshotId, TreeId};
use crate::index::LocalIndex;
use crate::packer::Packer;
use crate::repo::Repository;
use crate::repo::lock::RepositoryLock;
use crate::snapshot::{self, Snapshot, Summary};
use crate::tree::{Node, NodeKind, Tree};
use crate::walk;
use crate::walk::ahead::ListingAhead;
use content::ContentWriter;
pub use exclude::{ExcludeOptions, Excludes};
pub use prescan::prescan;
pub use stream::StreamSource;
use walker::{Counters, Walker};

/// What to back up: paths on disk, or one named stream.
pub enum Source {
    Paths(Vec<PathBuf>),
    Stream { source: StreamSource, name: String },
}

/// Which snapshot to compare with.
pub enum ParentChoice {
    /// The latest snapshot with the same host and paths.
    Auto,
    /// A named snapshot (id prefix or `latest`).
    Named(String),
    /// None: read everything (`--force`).
    None,
}

pub struct BackupOptions {
    pub source: Source,
    pub tags: Vec<String>,
    pub hostname: String,
    pub zstd_level: i32,
    /// `None`: the parent's parameters if there is a parent, else the default for the source.
    pub chunker: Option<ChunkerParams>,
    pub excludes: ExcludeOptions,
    pub parent: ParentChoice,
    pub dry_run: bool,
    /// Record this time instead of now (ns since the epoch).
    pub time_ns: Option<i64>,
}

/// A source entry that was skipped or stored imperfectly.
#[derive(Clone, Debug)]
pub struct Warning {
    pub path: PathBuf,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileStatus {
    New,
    Changed,
    Unchanged,
}

/// What a backup tells its caller as it goes (progress bars, dry-run listings). Called from
/// worker threads.
pub trait Reporter: Sync {
    fn warning(&self, warning: Warning);
    fn file_started(&self, _path: &Path) {}
    fn bytes_read(&self, _n: u64) {}
    fn file_done(&self, _path: &Path, _status: FileStatus, _size: u64) {}
    /// Why the backup must stop now (its output cannot be written, say): it then saves no
    /// snapshot and fails with `Error::Stopped`.
    fn stop(&self) -> Option<String> {
        None
    }
}

pub struct BackupOutcome {
    /// `None` for a dry run.
    pub id: Option<SnapshotId>,
    pub snapshot: Snapshot,
    pub parent: Option<SnapshotId>,
    /// Indexed packs missing from storage or cut short: what this backup needed of them was
    /// stored again.
    pub lost_packs: Vec<PackId>,
}

/// The directories leading to the sources: each name maps to a child; `is_source` marks a
/// source itself, stored whole.
#[derive(Default)]
struct SourceTrie {
    children: BTreeMap<Vec<u8>, SourceTrie>,
    is_source: bool,
}

impl SourceTrie {
    fn build(sources: &[PathBuf]) -> Self {
        let mut root = SourceTrie::default();
        for s in sources {
            let mut node = &mut root;
            for c in s.components().skip(1) {
                node = node
                    .children
                    .entry(walk::name_bytes(c.as_os_str()))
                    .or_default();
            }
            node.is_source = true;
        }
        root
    }
}

fn find_parent(
    index: &LocalIndex,
    choice: &ParentChoice,
    hostname: &str,
    paths: &[Vec<u8>],
) -> Result<Option<(SnapshotId, Snapshot)>> {
    match choice {
        ParentChoice::None => Ok(None),
        ParentChoice::Named(name) => snapshot::find(index, name).map(Some),
        ParentChoice::Auto => Ok(snapshot::list(index)?
            .into_iter()
            .filter(|(_, s)| s.hostname == hostname && s.paths == paths)
            .max_by_key(|(_, s)| s.time_ns)),
    }
}

/// Checks what can be checked of the options before the repository is touched (so that a
/// `backup --init` refused for its flags creates nothing): the stream name, that a command
/// is given, and that the exclude patterns compile (returned compiled).
pub fn check_options(opts: &BackupOptions) -> Result<Excludes> {
    if let Source::Stream { name, source } = &opts.source {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(Error::Usage(format!(
                "stream name {name:?} must be a plain file name"
            )));
        }
        if matches!(source, StreamSource::Command(argv) if argv.is_empty()) {
            return Err(Error::Usage(
                "--stdin-from-command needs a command after --".into(),
            ));
        }
    }
    let excludes = Excludes::new(&opts.excludes)?;
    if let Source::Paths(paths) = &opts.source {
        check_nested_sources(paths, &excludes)?;
    }
    Ok(excludes)
}

/// Refuses a source inside another that the walk of the outer one would not reach. On the
/// way down to it, the outer source and each entry after it must be a folder the walk
/// descends into: not excluded, without an exclude marker, on the device of the source above
/// with --one-file-system. A source named on the way is a new start, as for `Walker::entry`,
/// which saves every named source whatever the excludes say. A symlink on the way is not
/// followed by the walk; the source is accepted if where it leads is reached instead (under
/// its real path: `/home/alice` where `/home` links to `var/home`, in a backup of `/`).
fn check_nested_sources(paths: &[PathBuf], excludes: &Excludes) -> Result<()> {
    let named = walk::named_sources(paths)?;
    let roots = walk::roots_of(&named);
    for nested in named.iter().filter(|p| !roots.contains(p)) {
        if let Some((dir, stops)) = way_stops(nested, &roots, &named, excludes)? {
            let outer = roots.iter().find(|r| nested.starts_with(r));
            return Err(Error::Usage(format!(
                "source {} is inside source {}, but {} on the way {stops}, so the backup \
                 would not reach it: back it up on its own",
                nested.display(),
                outer.map_or(Path::new("/"), |o| o).display(),
                dir.display()
            )));
        }
    }
    Ok(())
}

/// Where and why the walk from the source above `nested` would stop before reaching it.
fn way_stops(
    nested: &Path,
    roots: &[PathBuf],
    named: &[PathBuf],
    excludes: &Excludes,
) -> Result<Option<(PathBuf, &'static str)>> {
    let metadata = |path: &Path| {
        walk::long_path::symlink_metadata(path).map_err(|e| Error::SourceUnreadable {
            path: path.to_path_buf(),
            source: e,
        })
    };
    let mut way: Vec<&Path> = nested.ancestors().skip(1).collect();
    let Some(outer) = way.iter().position(|a| roots.iter().any(|r| r == a)) else {
        return Ok(None);
    };
    way.truncate(outer + 1);
    let mut device = None;
    for dir in way.into_iter().rev() {
        let meta = metadata(dir)?;
        let name = dir.file_name().map_or(&[][..], |n| n.as_bytes());
        let stops = if !meta.is_dir() {
            let real = std::fs::canonicalize(nested).ok();
            if let Some(real) =
                real.filter(|r| r != nested && roots.iter().any(|o| r.starts_with(o)))
            {
                return way_stops(&real, roots, named, excludes);
            }
            "is not a folder (a symlink is stored, not followed)"
        } else if named.iter().any(|n| n == dir) {
            device = Some(meta.dev());
            continue;
        } else if excludes.excludes(dir, name, None) {
            "is excluded"
        } else if excludes.has_marker(dir) {
            "holds an exclude marker"
        } else if excludes.one_file_system && device.is_some_and(|d| meta.dev() != d) {
            "is on another file system, and --one-file-system is set"
        } else {
            continue;
        };
        return Ok(Some((dir.to_path_buf(), stops)));
    }
    Ok(None)
}

/// Starts listing the sources' folders ahead of the walk, as the walk will descend into them
/// (for `run`; `None` for a stream). Started before the repository is opened, the disk works
/// on the listings while the key is derived.
pub fn list_ahead(opts: &BackupOptions) -> Result<Option<ListingAhead>> {
    let Source::Paths(paths) = &opts.source else {
        return Ok(None);
    };
    let named = walk::named_sources(paths)?;
    let sources = walk::roots_of(&named);
    let named: HashSet<PathBuf> = named.into_iter().collect();
    let excludes = Excludes::new(&opts.excludes)?;
    // The walk's own rules (`Walker::entry`): a folder named as a source, or one not
    // excluded, on the source's device with --one-file-system, without an exclude marker.
    let descends = move |e: &walk::DirEntry, device: u64| {
        let Ok(meta) = &e.metadata else { return false };
        if !meta.is_dir() {
            return false;
        }
        let other_device = meta.dev() != device;
        named.contains(&e.path)
            || !(excludes.excludes(&e.path, &e.name, None)
                || (excludes.one_file_system && other_device)
                || excludes.has_marker(&e.path))
    };
    Ok(Some(ListingAhead::start(&sources, Box::new(descends))))
}

/// Runs a backup and (unless a dry run) commits its snapshot; `ahead` is from `list_ahead`.
pub fn run(
    repo: &Repository,
    index: &mut LocalIndex,
    opts: &BackupOptions,
    reporter: &dyn Reporter,
    lock: Option<&RepositoryLock>,
    ahead: Option<&ListingAhead>,
) -> Result<BackupOutcome> {
    let excludes = check_options(opts)?;
    let started = Instant::now();
    let started_ns = host::now_ns();
    let time_ns = opts.time_ns.unwrap_or(started_ns);
    let (sources, paths, named) = match &opts.source {
        Source::Paths(p) => {
            let named = walk::named_sources(p)?;
            let sources = walk::roots_of(&named);
            let named = named.into_iter().collect();
            if let Some(first) = sources.first() {
                crate::failpoint::hook("sources-checked", first);
            }
            let paths = sources
                .iter()
                .map(|p| walk::name_bytes(p.as_os_str()))
                .collect();
            (sources, paths, named)
        }
        Source::Stream { name, .. } => {
            let paths = vec![format!("/{name}").into_bytes()];
            (Vec::new(), paths, HashSet::new())
        }
    };
    // Read first: if anything makes a blob unusable from here on, in this process or another,
    // this backup's view of the index may be stale and its tree is not recorded complete.
    let complete_epoch = index.complete_epoch()?;
    // Design rule 1: the index is checked against the packs on storage before the backup
    // deduplicates against it, so blobs of a lost pack are stored again (self-healing).
    let lost_packs = index.validate_packs(repo)?;
    let parent = find_parent(index, &opts.parent, &opts.hostname, &paths)?;
    let default_params = match opts.source {
        Source::Paths(_) => ChunkerParams::FILES,
        Source::Stream { .. } => ChunkerParams::SMALL,
    };
    let params = opts
        .chunker
        .or(parent.as_ref().map(|(_, p)| p.chunker))
        .unwrap_or(default_params);
    let parent_complete = match &parent {
        Some((_, p)) => index.is_complete(&p.tree)?,
        None => false,
    };
    tracing::debug!(parent = ?parent.as_ref().map(|p| p.0), parent_complete, "backup starts");
    let parent_reader = match &parent {
        Some(_) => Some(BlobReader::new(repo, index.snapshot_reader()?)),
        None => None,
    };
    let packer = if opts.dry_run {
        Packer::dry_run(repo, index, opts.zstd_level)?
    } else {
        Packer::new(repo, index, opts.zstd_level)?.guarded_by(lock)
    };
    let packer = Mutex::new(packer);
    let content = ContentWriter::new(
        repo,
        &packer,
        Chunker::new(repo.keys().chunker_key(), params),
    );
    let walker = Walker {
        content: &content,
        parent: parent_reader.as_ref(),
        parent_complete,
        parent_started_ns: parent
            .as_ref()
            .map_or(i64::MIN, |(_, p)| p.started_ns.unwrap_or(p.time_ns)),
        parent_marks_sparse: parent.as_ref().is_some_and(|(_, p)| p.marks_sparse),
        excludes: &excludes,
        reporter,
        counters: Counters::default(),
        resolved_sources: sources
            .iter()
            .map(|s| {
                (
                    s.clone(),
                    std::fs::canonicalize(s).unwrap_or_else(|_| s.clone()),
                )
            })
            .collect(),
        ahead,
        named,
    };
    let parent_root = parent.as_ref().map(|(_, s)| s.tree);
    let root = match &opts.source {
        Source::Paths(_) => paths_root(&walker, &sources, parent_root)?,
        Source::Stream { source, name } => {
            stream_root(&walker, source, name, time_ns, parent_root)?
        }
    };
    tracing::debug!("walk done; flushing packs");
    let mut summary = Summary::default();
    walker.counters.fill(&mut summary);
    summary.bytes_read = content.bytes_read.load(Ordering::Relaxed);
    // The content writer borrows the packer; it ends here, and the parent's read
    // transaction with it.
    drop(content);
    drop(parent_reader);
    let stats = packer
        .into_inner()
        .map_err(|_| Error::Invalid("a backup worker panicked".into()))?
        .finish()?;
    summary.data_blobs_added = stats.data_blobs;
    summary.tree_blobs_added = stats.tree_blobs;
    summary.bytes_added_raw = stats.raw_bytes;
    summary.bytes_added_stored = stats.stored_bytes;
    summary.duration_ns = started.elapsed().as_nanos() as u64;
    let snapshot = Snapshot {
        time_ns,
        utc_offset_s: host::local_offset_s(time_ns),
        hostname: opts.hostname.clone(),
        username: host::username(),
        paths,
        tags: opts.tags.clone(),
        tree: root,
        partial: summary.skipped > 0,
        summary,
        chunker: params,
        program_version: format!("cairn {}", env!("CARGO_PKG_VERSION")),
        original: None,
        repair_note: None,
        supersedes: None,
        started_ns: Some(started_ns),
        copied_from: None,
        marks_sparse: true,
    };
    let parent = parent.map(|(id, _)| id);
    // The walk looks before each entry; this catches what failed after its last look.
    if let Some(reason) = reporter.stop() {
        return Err(Error::Stopped(reason));
    }
    if opts.dry_run {
        return Ok(BackupOutcome {
            id: None,
            snapshot,
            parent,
            lost_packs,
        });
    }
    // Everything the snapshot needs is stored and indexed; commit only while the lock still
    // keeps prune away from what this backup deduplicated against.
    let id = snapshot::commit(repo, index, lock, &snapshot)?;
    // Each blob below the root was found in the index or stored (and indexed) by this run.
    // Only a shortcut for the next backup, so a failure here must not fail this one.
    if let Err(e) = index.record_complete(&snapshot.tree, complete_epoch) {
        tracing::warn!("could not note the snapshot as complete in the local index: {e}");
    }
    Ok(BackupOutcome {
        id: Some(id),
        snapshot,
        parent,
        lost_packs,
    })
}

fn paths_root(walker: &Walker, sources: &[PathBuf], parent_root: Option<TreeId>) -> Result<TreeId> {
    let trie = SourceTrie::build(sources);
    let root = if trie.is_source {
        let device = std::fs::metadata("/").map_err(|e| Error::io("/", e))?;
        walker.dir_tree(
            Path::new("/"),
            parent_root,
            device.dev(),
            walk::ListingGuard::source(&device),
        )?
    } else {
        Some(virtual_dir(walker, Path::new("/"), &trie, parent_root)?)
    };
    match root {
        Some(r) => Ok(r),
        None => walker.store_tree(&Tree::default()),
    }
}

/// A directory above the sources: its own metadata, but only the entries leading on.
fn virtual_dir(
    walker: &Walker,
    real: &Path,
    trie: &SourceTrie,
    parent: Option<TreeId>,
) -> Result<TreeId> {
    let parent_tree = match (walker.parent, parent) {
        (Some(reader), Some(id)) => reader.tree(&id).ok(),
        _ => None,
    };
    let mut tree = Tree::default();
    for (name, child) in &trie.children {
        let path = real.join(walk::os_string(name));
        let parent_node = parent_tree.as_ref().and_then(|t| t.find(name));
        // A source gone since it was checked (an unmounted share), or a folder above one
        // that cannot be read, leaves a partial snapshot, never one that looks complete.
        if child.is_source {
            let meta = match walk::long_path::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    walker.skip(&path, format!("cannot read the source: {e}; skipped"));
                    continue;
                }
            };
            if let Some(node) =
                walker.entry(name.clone(), &path, Some(Ok(meta)), parent_node, None, None)?
            {
                tree.nodes.push(node);
            }
            continue;
        }
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                walker.skip(&path, format!("cannot read metadata: {e}; skipped"));
                continue;
            }
        };
        let mut node = walk::node_from_metadata(name.clone(), &meta);
        node.kind = NodeKind::Dir;
        node.subtree = Some(virtual_dir(
            walker,
            &path,
            child,
            parent_node.and_then(|n| n.subtree),
        )?);
        tree.nodes.push(node);
    }
    walker.store_folder_tree(real, tree)
}

fn stream_root(
    walker: &Walker,
    source: &StreamSource,
    name: &str,
    time_ns: i64,
    parent_root: Option<TreeId>,
) -> Result<TreeId> {
    let stored = stream::store(walker.content, source, walker.reporter)?;
    // A dump is never empty: no data is a command before the pipe that failed (its status
    // is not ours to see) or a closed standard input. Stored as it came, but not as if
    // nothing were wrong.
    if stored.size == 0 {
        let why = "the stream gave no data (did the command before the pipe fail?); stored as \
                   an empty file, and the snapshot marked partial";
        walker.skip(Path::new(name), why.into());
    }
    let mut node = Node::new(name.as_bytes().to_vec(), NodeKind::File);
    node.mode = 0o600;
    node.uid = nix::unistd::getuid().as_raw();
    node.gid = nix::unistd::getgid().as_raw();
    node.user = host::user_name(node.uid);
    node.group = host::group_name(node.gid);
    node.mtime_ns = time_ns;
    node.atime_ns = time_ns;
    node.ctime_ns = time_ns;
    node.size = stored.size;
    node.content = stored.blobs;
    let parent = walker.parent_tree(parent_root);
    let status = match parent.as_ref().and_then(|t| t.find(name.as_bytes())) {
        None => FileStatus::New,
        Some(p) if p.content == node.content => FileStatus::Unchanged,
        Some(_) => FileStatus::Changed,
    };
    walker.count_file(stored.size, status, Path::new(name));
    walker.store_tree(&Tree { nodes: vec![node] })
}
