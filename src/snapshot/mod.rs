//! Snapshots: the commit point of a backup. A snapshot names the root tree and records when,
//! where, by whom and with which chunker parameters it was made. It is written last, after the
//! packs and index segment it depends on (design rule 3), so a snapshot that exists is complete.
//!
//! Encoding (see `codec`), encrypted as a file of kind `SNAP`: `1 time ns`, `2 UTC offset s`,
//! `3 hostname`, `4 username`, `5 path` (repeated, raw bytes), `6 tag` (repeated), `7 root tree`,
//! `8 summary` (nested: `1 files`, `2 dirs`, `3 other entries`, `4 bytes read`, `5 new data
//! blobs`, `6 new tree blobs`, `7 bytes added raw`, `8 bytes added stored`, `9 total file
//! bytes`, `10 duration ns`, `11 skipped entries`, `12 new files`, `13 changed files`,
//! `14 unchanged files`), `9 chunker` (nested: `1 min`, `2 avg`,
//! `3 max`), `10 partial` (1 if some source entries could not be read), `11 program version`,
//! `12 original snapshot id` and `13 repair note` (only in snapshots written by
//! `repair snapshots`), `14 superseded snapshot id` (only in snapshots written by `tag`).

pub mod removal;

use crate::chunk::ChunkerParams;
use crate::codec::{self, FieldWriter};
use crate::error::{Error, Result};
use crate::ids::{RepositoryId, SnapshotId, TreeId};
use crate::index::LocalIndex;
use crate::repo::lock::RepositoryLock;
use crate::repo::{FileKind, Repository};

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub files: u64,
    pub dirs: u64,
    pub other_entries: u64,
    pub bytes_read: u64,
    pub data_blobs_added: u64,
    pub tree_blobs_added: u64,
    pub bytes_added_raw: u64,
    pub bytes_added_stored: u64,
    pub total_file_bytes: u64,
    pub duration_ns: u64,
    pub skipped: u64,
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unchanged: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub time_ns: i64,
    pub utc_offset_s: i32,
    pub hostname: String,
    pub username: String,
    pub paths: Vec<Vec<u8>>,
    pub tags: Vec<String>,
    pub tree: TreeId,
    pub summary: Summary,
    pub chunker: ChunkerParams,
    pub partial: bool,
    pub program_version: String,
    /// tag 12: the snapshot this one was repaired from (`repair snapshots`).
    pub original: Option<SnapshotId>,
    /// tag 13: what the repair changed, in words.
    pub repair_note: Option<String>,
    /// tag 14: the snapshot this one replaces (`tag` rewrites a snapshot this way): once this
    /// one exists, the replaced one is hidden, even before it is deleted.
    pub supersedes: Option<SnapshotId>,
    /// tag 15: when the backup began reading its sources, if that was recorded (`time_ns` can
    /// be set to another time with `--time`). A file whose ctime is not well before it may have
    /// changed while it was read without changing its timestamps (see the backup walker).
    pub started_ns: Option<i64>,
    /// tag 16: where this snapshot was copied from (`copy`).
    pub copied_from: Option<CopiedFrom>,
    /// tag 17: the files of this snapshot's trees that had holes carry `Node::sparse`, so a
    /// restore writes the all-zero blobs of the others as data. Absent (snapshots written
    /// before files were marked): every all-zero blob is a hole.
    pub marks_sparse: bool,
}

/// The repository and snapshot a copy was made from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CopiedFrom {
    pub repository: RepositoryId,
    pub snapshot: SnapshotId,
}

impl Summary {
    fn encode(&self) -> Vec<u8> {
        let mut w = FieldWriter::new();
        w.uint(1, self.files)
            .uint(2, self.dirs)
            .uint(3, self.other_entries)
            .uint(4, self.bytes_read)
            .uint(5, self.data_blobs_added)
            .uint(6, self.tree_blobs_added)
            .uint(7, self.bytes_added_raw)
            .uint(8, self.bytes_added_stored)
            .uint(9, self.total_file_bytes)
            .uint(10, self.duration_ns)
            .uint(11, self.skipped)
            .uint(12, self.files_new)
            .uint(13, self.files_changed)
            .uint(14, self.files_unchanged);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let mut s = Summary::default();
        for f in codec::fields(bytes)? {
            let field = match f.tag {
                1 => &mut s.files,
                2 => &mut s.dirs,
                3 => &mut s.other_entries,
                4 => &mut s.bytes_read,
                5 => &mut s.data_blobs_added,
                6 => &mut s.tree_blobs_added,
                7 => &mut s.bytes_added_raw,
                8 => &mut s.bytes_added_stored,
                9 => &mut s.total_file_bytes,
                10 => &mut s.duration_ns,
                11 => &mut s.skipped,
                12 => &mut s.files_new,
                13 => &mut s.files_changed,
                14 => &mut s.files_unchanged,
                // Unknown fields of a newer version, of any type, are skipped.
                _ => continue,
            };
            *field = f.uint()?;
        }
        Some(s)
    }
}

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = FieldWriter::new();
        w.int(1, self.time_ns)
            .int(2, self.utc_offset_s.into())
            .bytes(3, self.hostname.as_bytes())
            .bytes(4, self.username.as_bytes());
        for p in &self.paths {
            w.bytes(5, p);
        }
        for t in &self.tags {
            w.bytes(6, t.as_bytes());
        }
        let mut chunker = FieldWriter::new();
        chunker
            .uint(1, self.chunker.min.into())
            .uint(2, self.chunker.avg.into())
            .uint(3, self.chunker.max.into());
        w.bytes(7, &self.tree.0)
            .bytes(8, &self.summary.encode())
            .bytes(9, &chunker.finish())
            .uint(10, self.partial.into())
            .bytes(11, self.program_version.as_bytes());
        if let Some(original) = &self.original {
            w.bytes(12, &original.0);
        }
        if let Some(note) = &self.repair_note {
            w.bytes(13, note.as_bytes());
        }
        if let Some(old) = &self.supersedes {
            w.bytes(14, &old.0);
        }
        if let Some(started) = self.started_ns {
            w.int(15, started);
        }
        if let Some(from) = &self.copied_from {
            w.bytes(16, &[from.repository.0, from.snapshot.0].concat());
        }
        if self.marks_sparse {
            w.uint(17, 1);
        }
        w.finish()
    }

    pub fn decode(id: &SnapshotId, bytes: &[u8]) -> Result<Self> {
        Self::decode_inner(bytes)
            .ok_or_else(|| Error::corrupt("snapshot", id, "malformed encoding"))
    }

    fn decode_inner(bytes: &[u8]) -> Option<Self> {
        let mut s = Snapshot {
            time_ns: 0,
            utc_offset_s: 0,
            hostname: String::new(),
            username: String::new(),
            paths: Vec::new(),
            tags: Vec::new(),
            tree: TreeId::default(),
            summary: Summary::default(),
            chunker: ChunkerParams::FILES,
            partial: false,
            program_version: String::new(),
            original: None,
            repair_note: None,
            supersedes: None,
            started_ns: None,
            copied_from: None,
            marks_sparse: false,
        };
        let mut tree = None;
        for f in codec::fields(bytes)? {
            match f.tag {
                1 => s.time_ns = f.int()?,
                2 => s.utc_offset_s = i32::try_from(f.int()?).ok()?,
                3 => s.hostname = f.string()?,
                4 => s.username = f.string()?,
                5 => s.paths.push(f.value.to_vec()),
                6 => s.tags.push(f.string()?),
                7 => tree = Some(TreeId::from_slice(f.value)?),
                8 => s.summary = Summary::decode(f.value)?,
                9 => s.chunker = decode_chunker(f.value)?,
                10 => s.partial = f.uint()? != 0,
                11 => s.program_version = f.string()?,
                12 => s.original = Some(SnapshotId::from_slice(f.value)?),
                13 => s.repair_note = Some(f.string()?),
                14 => s.supersedes = Some(SnapshotId::from_slice(f.value)?),
                15 => s.started_ns = Some(f.int()?),
                16 if f.value.len() == 64 => {
                    s.copied_from = Some(CopiedFrom {
                        repository: RepositoryId(f.value[..32].try_into().ok()?),
                        snapshot: SnapshotId::from_slice(&f.value[32..])?,
                    });
                }
                16 => return None,
                17 => s.marks_sparse = f.uint()? != 0,
                _ => {}
            }
        }
        s.tree = tree?;
        Some(s)
    }

    pub fn paths_lossy(&self) -> Vec<String> {
        self.paths
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    }
}

fn decode_chunker(bytes: &[u8]) -> Option<ChunkerParams> {
    let mut p = ChunkerParams::FILES;
    for f in codec::fields(bytes)? {
        let field = match f.tag {
            1 => &mut p.min,
            2 => &mut p.avg,
            3 => &mut p.max,
            _ => continue,
        };
        *field = u32::try_from(f.uint()?).ok()?;
    }
    p.is_valid().then_some(p)
}

/// Stores `snapshot`, the commit point of every command that writes one, and adds it to the
/// local index. `lock` is checked first: while it holds, no prune can have deleted what the
/// snapshot refers to.
pub fn commit(
    repo: &Repository,
    index: &LocalIndex,
    lock: Option<&RepositoryLock>,
    snapshot: &Snapshot,
) -> Result<SnapshotId> {
    if let Some(lock) = lock {
        lock.check()?;
    }
    let body = snapshot.encode();
    let id = SnapshotId(repo.save_file(FileKind::Snapshot, &body)?);
    // Committed now: the local index that could not list it lists it at its next sync.
    if let Err(e) = index.add_snapshot(&id, snapshot.time_ns, &body) {
        tracing::warn!(
            "snapshot {} is stored, but the local index could not list it yet: {e}",
            id.short()
        );
    }
    Ok(id)
}

/// Which snapshots a command looks at: all given conditions must hold.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub host: Option<String>,
    /// Every one of these tags.
    pub tags: Vec<String>,
    /// This source path (a `/` at its end is not part of it: `/srv/` is `/srv`).
    pub path: Option<String>,
}

impl Filter {
    pub fn matches(&self, s: &Snapshot) -> bool {
        let path = self.path.as_ref().map(|p| match p.trim_end_matches('/') {
            "" => "/",
            trimmed => trimmed,
        });
        self.host.as_ref().is_none_or(|h| &s.hostname == h)
            && self.tags.iter().all(|t| s.tags.contains(t))
            && path.is_none_or(|p| s.paths.iter().any(|sp| sp == p.as_bytes()))
    }
}

/// All snapshots in the local catalog, oldest first, without those another one supersedes.
pub fn list(index: &LocalIndex) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let (visible, _) = list_with_superseded(index)?;
    Ok(visible)
}

/// Snapshots with their ids.
pub type Listed = Vec<(SnapshotId, Snapshot)>;

/// The visible snapshots (as `list`), and the ids of superseded ones still stored.
pub fn list_with_superseded(index: &LocalIndex) -> Result<(Listed, Vec<SnapshotId>)> {
    let all = index
        .snapshot_bodies()?
        .into_iter()
        .map(|(id, body)| Snapshot::decode(&id, &body).map(|s| (id, s)))
        .collect::<Result<Vec<_>>>()?;
    let replaced: std::collections::HashSet<SnapshotId> =
        all.iter().filter_map(|(_, s)| s.supersedes).collect();
    let (hidden, visible): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|(id, _)| replaced.contains(id));
    Ok((visible, hidden.into_iter().map(|(id, _)| id).collect()))
}

/// Resolves `latest` or a unique hex prefix of a snapshot id.
pub fn find(index: &LocalIndex, name: &str) -> Result<(SnapshotId, Snapshot)> {
    find_matching(index, name, &Filter::default())
}

/// `find` among the snapshots `filter` matches: `latest --host db1` is db1's newest, and a
/// prefix of another host's snapshot is not found.
pub fn find_matching(
    index: &LocalIndex,
    name: &str,
    filter: &Filter,
) -> Result<(SnapshotId, Snapshot)> {
    let mut all = list(index)?;
    all.retain(|(_, s)| filter.matches(s));
    if name == "latest" {
        return all
            .pop()
            .ok_or_else(|| Error::SnapshotNotFound(name.into()));
    }
    let wanted = name.to_ascii_lowercase();
    let mut matches: Vec<_> = all
        .into_iter()
        .filter(|(id, _)| !wanted.is_empty() && id.to_hex().starts_with(&wanted))
        .collect();
    match matches.len() {
        0 => Err(Error::SnapshotNotFound(name.into())),
        1 => Ok(matches.remove(0)),
        count => Err(Error::AmbiguousSnapshot {
            prefix: name.into(),
            count,
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A snapshot with every field set, for tests elsewhere in the crate.
    pub(crate) fn sample() -> Snapshot {
        Snapshot {
            time_ns: 1_763_700_000_123_456_789,
            utc_offset_s: 3600,
            hostname: "db1".into(),
            username: "backup".into(),
            paths: vec![b"/srv/uploads".to_vec(), vec![0xff, b'x']],
            tags: vec!["nightly".into()],
            tree: crate::ids::BlobId([4; 32]),
            summary: Summary {
                files: 3,
                bytes_read: 99,
                ..Summary::default()
            },
            chunker: ChunkerParams::FILES,
            partial: true,
            program_version: "cairn 0.1.0".into(),
            original: Some(SnapshotId([7; 32])),
            repair_note: Some("removed 1 file".into()),
            supersedes: Some(SnapshotId([8; 32])),
            started_ns: Some(1_700_000_000_000_000_001),
            copied_from: Some(CopiedFrom {
                repository: RepositoryId([7; 32]),
                snapshot: SnapshotId([8; 32]),
            }),
            marks_sparse: true,
        }
    }

    /// Regression (helper-43): a snapshot stored but not added to the local index (a full
    /// cache disk) was reported as a failed commit, so a backup that had committed failed.
    #[test]
    fn a_stored_snapshot_the_local_index_cannot_list_is_committed() {
        let repo = crate::repo::memory_repository();
        let cache = tempfile::tempdir().unwrap();
        let (index, _) = LocalIndex::open(cache.path(), &repo).unwrap();
        index.refuse_writes();
        let id = commit(&repo, &index, None, &sample()).unwrap();
        assert_eq!(repo.list_ids(FileKind::Snapshot).unwrap(), vec![id.0]);
    }

    /// Regression: `--path /srv/uploads/` matched no snapshot of `/srv/uploads`.
    #[test]
    fn a_path_filter_ignores_a_slash_at_its_end() {
        let s = sample();
        let filter = |p: &str| Filter {
            path: Some(p.into()),
            ..Filter::default()
        };
        assert!(filter("/srv/uploads").matches(&s));
        assert!(filter("/srv/uploads//").matches(&s));
        assert!(!filter("/srv").matches(&s));
        let root = Snapshot {
            paths: vec![b"/".to_vec()],
            ..sample()
        };
        assert!(filter("/").matches(&root));
    }

    #[test]
    fn round_trip() {
        let s = sample();
        let id = SnapshotId::default();
        assert_eq!(Snapshot::decode(&id, &s.encode()).unwrap(), s);
    }

    /// Regression: the summary and the chunker parameters read every field as a number, so a
    /// newer version's field of another type (bytes, a record) made the snapshot unreadable.
    #[test]
    fn unknown_fields_of_any_type_are_skipped() {
        let s = sample();
        let mut summary = s.summary.encode();
        let mut chunker = FieldWriter::new();
        chunker
            .uint(1, u64::from(s.chunker.min))
            .uint(2, u64::from(s.chunker.avg))
            .uint(3, u64::from(s.chunker.max));
        let mut chunker = chunker.finish();
        for record in [&mut summary, &mut chunker] {
            let mut extra = FieldWriter::new();
            extra.bytes(99, b"from a newer version, not a number");
            record.extend(extra.finish());
        }
        assert_eq!(Summary::decode(&summary), Some(s.summary.clone()));
        assert_eq!(decode_chunker(&chunker), Some(s.chunker));
    }

    proptest! {
        #[test]
        fn decoding_never_panics(bytes: Vec<u8>) {
            let _ = Snapshot::decode(&SnapshotId::default(), &bytes);
        }
    }
}
