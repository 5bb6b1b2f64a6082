//! The local SQLite index: blob → pack location, the packs, the index segments merged so far,
//! and a catalog of decrypted snapshots. It lives in the cache directory, one folder per
//! repository id.
//!
//! Guarantees (design rule 1):
//! - it holds exactly the union of the index segments present in the repository when it was
//!   last synced: if a segment it merged has gone (prune, repair), it is emptied and rebuilt;
//! - a missing file, a file failing `PRAGMA quick_check`, another schema version or another
//!   repository's file is discarded and rebuilt, never trusted;
//! - so a blob it reports as stored is in a pack that an index segment lists;
//! - a blob may have several locations (stored again after its pack was lost, or by two
//!   backups at once); packs that `validate_packs` found missing or cut short, and locations
//!   the last `check --read-data` found damaged, are never reported as stored and are the
//!   last choice of `lookup`;
//! - a tree it lists as complete has every blob below it indexed and usable: whatever takes
//!   a blob out or makes one unusable empties that list (`COMPLETE_TREES`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::segment::IndexSegment;
use crate::error::{Error, Result};
use crate::ids::{BlobId, BlobType, IndexId, PackId, RepositoryId, SnapshotId, TreeId};
use crate::pack::BlobEntry;
use crate::repo::{FileKind, Repository};

pub const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE segments (id BLOB PRIMARY KEY);
CREATE TABLE packs (
    seq INTEGER PRIMARY KEY,
    id BLOB NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    lost INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE blobs (
    id BLOB NOT NULL,
    pack INTEGER NOT NULL,
    type INTEGER NOT NULL,
    compression INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    stored_len INTEGER NOT NULL,
    raw_len INTEGER NOT NULL,
    PRIMARY KEY (id, pack)
) WITHOUT ROWID;
CREATE TABLE snapshots (id BLOB PRIMARY KEY, time_ns INTEGER NOT NULL, body BLOB NOT NULL);
CREATE TABLE damaged_blobs (
    id BLOB NOT NULL,
    pack BLOB NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (id, pack)
);
";

/// Trees all of whose blobs (below them, at any depth) were in the index when a finished
/// backup recorded them. A backup whose parent's tree is here need not look up, one by one,
/// the blobs of the files it reuses from it. Anything that takes a blob out of the index or
/// makes one unusable forgets them all and raises `complete_epoch`, by trigger, whatever
/// statement (and process) does it; a backup records its tree only if the epoch is still the
/// one it read before it first looked at the index. Created where missing, so caches made
/// before it gain it.
///
/// Blob rows leave the index only with their pack's row (`CLEAR`), so the trigger is on
/// `packs`: one on `blobs` would make SQLite delete its millions of rows one by one.
const COMPLETE_TREES: &str = "
CREATE TABLE IF NOT EXISTS complete_trees (id BLOB PRIMARY KEY);
CREATE TRIGGER IF NOT EXISTS complete_trees_blob_moved AFTER UPDATE ON blobs
    BEGIN DELETE FROM complete_trees; UPDATE meta SET value = value + 1 WHERE key = 'complete_epoch'; END;
CREATE TRIGGER IF NOT EXISTS complete_trees_pack_removed AFTER DELETE ON packs
    BEGIN DELETE FROM complete_trees; UPDATE meta SET value = value + 1 WHERE key = 'complete_epoch'; END;
CREATE TRIGGER IF NOT EXISTS complete_trees_pack_lost AFTER UPDATE OF lost ON packs
    WHEN NEW.lost != 0
    BEGIN DELETE FROM complete_trees; UPDATE meta SET value = value + 1 WHERE key = 'complete_epoch'; END;
CREATE TRIGGER IF NOT EXISTS complete_trees_blob_damaged AFTER INSERT ON damaged_blobs
    BEGIN DELETE FROM complete_trees; UPDATE meta SET value = value + 1 WHERE key = 'complete_epoch'; END;
INSERT OR IGNORE INTO meta (key, value) VALUES ('complete_epoch', 0);
";

/// Empties everything merged from index segments (not the snapshot catalog).
const CLEAR: &str = "DELETE FROM blobs; DELETE FROM packs; DELETE FROM segments;";

pub struct LocalIndex {
    conn: Connection,
    path: PathBuf,
    /// Some location is known lost or damaged, so lookups must pass over those: kept in step
    /// by `sync`, `validate_packs` and `record_verified_packs`, and inherited by the other
    /// connections made from this one.
    careful: bool,
}

/// What `LocalIndex::open` had to do, for the user to hear about.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Why the local index was rebuilt from scratch, if it was.
    pub rebuilt: Option<String>,
    pub segments_merged: usize,
    /// Index segments and snapshots that could not be read and were left out, with why.
    pub skipped: Vec<String>,
}

/// Whether an error reading one segment or snapshot during a sync means "leave it out and go
/// on" (damaged, or deleted since it was listed) rather than "stop".
fn skippable(e: &Error) -> bool {
    e.is_integrity()
        || matches!(
            e,
            Error::Storage {
                not_found: true,
                ..
            }
        )
}

fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::Index {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Why an existing file cannot be trusted, or `None` if it can.
fn distrust(conn: &Connection, repo_id: &str) -> Option<String> {
    let check: rusqlite::Result<String> = conn.query_row("PRAGMA quick_check", [], |r| r.get(0));
    match check {
        Ok(s) if s == "ok" => {}
        Ok(s) => return Some(format!("it is damaged ({s})")),
        Err(e) => return Some(format!("it cannot be read ({e})")),
    }
    let meta = |key: &str| -> Option<String> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .ok()
    };
    match meta("schema_version") {
        Some(v) if v == SCHEMA_VERSION.to_string() => {}
        Some(v) => {
            return Some(format!(
                "it has schema version {v}, this cairn uses {SCHEMA_VERSION}"
            ));
        }
        None => return Some("it has no schema version".into()),
    }
    if meta("repository_id").as_deref() != Some(repo_id) {
        return Some("it belongs to another repository".into());
    }
    None
}

/// Removes a database and its side files, the side files first: a process stopped half-way
/// must not leave an old write-ahead log beside a database created after it.
fn remove_db_files(path: &Path) {
    for suffix in ["-wal", "-shm", "-journal", ""] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// One row of a blob's location, as stored.
struct LocationRow {
    pack: Vec<u8>,
    blob_type: u8,
    compression: u8,
    offset: i64,
    stored_len: u32,
    raw_len: u32,
}

impl LocationRow {
    fn read(r: &rusqlite::Row) -> rusqlite::Result<Self> {
        Ok(LocationRow {
            pack: r.get(0)?,
            blob_type: r.get(1)?,
            compression: r.get(2)?,
            offset: r.get(3)?,
            stored_len: r.get(4)?,
            raw_len: r.get(5)?,
        })
    }

    fn location(self, id: &BlobId, path: &Path) -> Result<(PackId, BlobEntry)> {
        let bad = || Error::Index {
            path: path.to_path_buf(),
            message: format!("malformed row for blob {id}"),
        };
        Ok((
            PackId::from_slice(&self.pack).ok_or_else(bad)?,
            BlobEntry {
                id: *id,
                blob_type: BlobType::from_code(self.blob_type).ok_or_else(bad)?,
                compression: self.compression,
                offset: u64::try_from(self.offset).map_err(|_| bad())?,
                stored_len: self.stored_len,
                raw_len: self.raw_len,
            },
        ))
    }
}

/// Whether a connection reads the file through a memory mapping.
#[derive(Clone, Copy)]
enum Mapping {
    /// Connections share the OS page cache instead of each filling its own, and a cold index
    /// is read ahead (an unchanged backup of the kernel tree took 10% longer with `pread`s
    /// of single pages).
    Mapped,
    /// See `LocalIndex::worker_reader`.
    Unmapped,
}

fn connect(path: &Path, mapping: Mapping) -> Result<Connection> {
    let conn = Connection::open(path).map_err(sql_err(path))?;
    conn.busy_timeout(std::time::Duration::from_secs(60))
        .map_err(sql_err(path))?;
    let mmap_size = match mapping {
        Mapping::Mapped => "268435456",
        Mapping::Unmapped => "0",
    };
    conn.execute_batch(&format!("PRAGMA mmap_size = {mmap_size};"))
        .map_err(sql_err(path))?;
    // The bundled SQLite is built with STAT4, which re-prepares a statement whenever a new
    // value is bound to a parameter the planner looked at: that re-parsing cost more than the
    // lookups themselves. Our queries have one good plan whatever the values.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(sql_err(path))?;
    Ok(conn)
}

/// Creates an empty index with its schema under a temporary name and links it into place, so
/// another process opening the cache at the same moment never sees a file without tables. If
/// another process linked its own first, that one is used.
fn create_atomically(dir: &Path, path: &Path, repo_hex: &str) -> Result<()> {
    let tmp = dir.join(format!("index.sqlite.new-{}", std::process::id()));
    remove_db_files(&tmp);
    {
        let c = connect(&tmp, Mapping::Mapped)?;
        c.execute_batch("PRAGMA journal_mode=WAL;")
            .map_err(sql_err(&tmp))?;
        c.execute_batch(SCHEMA).map_err(sql_err(&tmp))?;
        c.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?1), ('repository_id', ?2)",
            params![SCHEMA_VERSION.to_string(), repo_hex],
        )
        .map_err(sql_err(&tmp))?;
    }
    let linked = match std::fs::hard_link(&tmp, path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(Error::io(path, e)),
        _ => Ok(()),
    };
    remove_db_files(&tmp);
    linked
}

/// A local index opened and checked, not yet synced with its repository (`LocalIndex::prepare`).
pub struct PreparedIndex {
    index: LocalIndex,
    report: OpenReport,
    repo_id: RepositoryId,
    listing: Option<PackListing>,
}

/// The packs on storage, and the packs the index listed before they were listed, which the
/// listing judges whether it holds them or not (`LocalIndex::mark_lost`).
pub struct PackListing {
    judged: HashSet<PackId>,
    stored: HashMap<PackId, u64>,
}

/// What a pack indexed after a listing was made, and missing from it, calls for.
pub enum Unjudged {
    /// Nothing: another process indexed it after it was written, after the listing.
    Skip,
    /// A new listing: the index itself took it in since (an early listing).
    Relist,
}

impl PreparedIndex {
    /// Whether this is the index of `repo` (its id may have been read before `repo` was
    /// opened, from another repository's config at the same place).
    pub fn is_for(&self, repo: &Repository) -> bool {
        self.repo_id == *repo.id()
    }

    /// Lists the packs on `storage` (after noting the packs the index lists), for
    /// `LocalIndex::mark_lost`: this way the listing, which needs no key, overlaps the key
    /// derivation. A listing that fails is left to be made again later.
    pub fn list_packs(&mut self, storage: &dyn crate::storage::Storage) {
        let Ok(judged) = self.index.indexed_packs() else {
            return;
        };
        if let Ok(stored) = crate::repo::stored_packs(storage) {
            self.listing = Some(PackListing { judged, stored });
        }
    }

    /// The listing `list_packs` made, if any.
    pub fn take_listing(&mut self) -> Option<PackListing> {
        self.listing.take()
    }

    /// The second half of `LocalIndex::open`: merges the repository's index segments and
    /// snapshots the index has not seen.
    pub fn sync_with(self, repo: &Repository) -> Result<(LocalIndex, OpenReport)> {
        if !self.is_for(repo) {
            return Err(Error::Invalid(format!(
                "local index prepared for repository {}, not {}",
                self.repo_id.short(),
                repo.id().short()
            )));
        }
        let (mut index, mut report) = (self.index, self.report);
        index.sync(repo, &mut report)?;
        Ok((index, report))
    }
}

impl LocalIndex {
    /// Opens (creating or rebuilding as needed) the local index of `repo` under `cache_dir`,
    /// then merges the repository's index segments and snapshots it has not seen.
    pub fn open(cache_dir: &Path, repo: &Repository) -> Result<(Self, OpenReport)> {
        Self::prepare(cache_dir, repo.id())?.sync_with(repo)
    }

    /// The first half of `open`, which needs no key: the file opened and checked (`PRAGMA
    /// quick_check` reads all of it), or created or rebuilt, but not synced. So it can run
    /// while the key is derived.
    pub fn prepare(cache_dir: &Path, repo_id: &RepositoryId) -> Result<PreparedIndex> {
        let dir = cache_dir.join(repo_id.to_hex());
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = dir.join("index.sqlite");
        let repo_hex = repo_id.to_hex();
        let mut report = OpenReport::default();
        let existed = path.exists();
        let mut conn = if existed {
            match connect(&path, Mapping::Mapped) {
                Ok(c) => match distrust(&c, &repo_hex) {
                    None => Some(c),
                    Some(why) => {
                        report.rebuilt = Some(why);
                        None
                    }
                },
                Err(e) => {
                    report.rebuilt = Some(e.to_string());
                    None
                }
            }
        } else {
            None
        };
        if conn.is_none() {
            if existed {
                remove_db_files(&path);
            }
            create_atomically(&dir, &path, &repo_hex)?;
            conn = Some(connect(&path, Mapping::Mapped)?);
        }
        let conn = conn.expect("set above");
        conn.execute_batch("PRAGMA synchronous=NORMAL;")
            .and_then(|()| conn.execute_batch(COMPLETE_TREES))
            .map_err(sql_err(&path))?;
        let index = LocalIndex {
            conn,
            path,
            careful: false,
        };
        Ok(PreparedIndex {
            index,
            report,
            repo_id: *repo_id,
            listing: None,
        })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        sql_err(&self.path)
    }

    fn sync(&mut self, repo: &Repository, report: &mut OpenReport) -> Result<()> {
        // A prune raises the generation before deleting anything: whatever this cache knew
        // may point at deleted packs, so it starts over.
        let generation = repo.generation()?.to_string();
        let seen: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'generation'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(self.err())?;
        if seen.as_deref() != Some(generation.as_str()) {
            if seen.is_some() {
                report.rebuilt.get_or_insert_with(|| {
                    "the repository's generation changed (a prune deleted data)".into()
                });
            }
            let tx = self.conn.transaction().map_err(sql_err(&self.path))?;
            tx.execute_batch(CLEAR)
                .and_then(|()| tx.execute_batch("DELETE FROM damaged_blobs;"))
                .and_then(|()| {
                    tx.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('generation', ?1)",
                        [&generation],
                    )
                })
                .and_then(|_| tx.commit())
                .map_err(sql_err(&self.path))?;
        }
        let in_repo: HashSet<[u8; 32]> = repo.list_ids(FileKind::Index)?.into_iter().collect();
        let merged: HashSet<[u8; 32]> = self.ids_in("segments")?;
        if !merged.is_subset(&in_repo) {
            report.rebuilt.get_or_insert_with(|| {
                "index segments it had merged are gone from the repository".into()
            });
            self.clear()?;
        }
        let merged = self.ids_in("segments")?;
        let mut missing: Vec<_> = in_repo.difference(&merged).copied().collect();
        missing.sort_unstable();
        for id in missing {
            let id = IndexId(id);
            let segment = repo
                .load_file(FileKind::Index, &id.0)
                .and_then(|bytes| IndexSegment::decode(&id, &bytes));
            match segment {
                Ok(segment) => {
                    self.add_segment(&id, &segment)?;
                    report.segments_merged += 1;
                }
                Err(e) if skippable(&e) => report.skipped.push(e.to_string()),
                Err(e) => return Err(e),
            }
        }
        self.sync_snapshots(repo, report)?;
        self.careful = self.has_unusable()?;
        Ok(())
    }

    /// Forgets every merged segment, in one transaction.
    fn clear(&mut self) -> Result<()> {
        let tx = self.conn.transaction().map_err(sql_err(&self.path))?;
        tx.execute_batch(CLEAR)
            .and_then(|()| tx.commit())
            .map_err(sql_err(&self.path))
    }

    fn ids_in(&self, table: &str) -> Result<HashSet<[u8; 32]>> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT id FROM {table}"))
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .map_err(self.err())?;
        let mut out = HashSet::new();
        for row in rows {
            if let Ok(id) = <[u8; 32]>::try_from(row.map_err(self.err())?.as_slice()) {
                out.insert(id);
            }
        }
        Ok(out)
    }

    fn sync_snapshots(&mut self, repo: &Repository, report: &mut OpenReport) -> Result<()> {
        let mut in_repo: HashSet<[u8; 32]> =
            repo.list_ids(FileKind::Snapshot)?.into_iter().collect();
        // Snapshots an interrupted `forget` committed to removing are gone already.
        let pending = crate::snapshot::removal::pending(repo, &mut |_, e| {
            report.skipped.push(e.to_string())
        })?;
        for id in pending.iter().flat_map(|(_, ids)| ids) {
            in_repo.remove(&id.0);
        }
        let cached = self.ids_in("snapshots")?;
        let tx = self.conn.transaction().map_err(sql_err(&self.path))?;
        for gone in cached.difference(&in_repo) {
            tx.execute("DELETE FROM snapshots WHERE id = ?1", [&gone[..]])
                .map_err(sql_err(&self.path))?;
        }
        for new in in_repo.difference(&cached) {
            let loaded = repo.load_file(FileKind::Snapshot, new).and_then(|body| {
                crate::snapshot::Snapshot::decode(&SnapshotId(*new), &body).map(|s| (s, body))
            });
            let (snapshot, body) = match loaded {
                Ok(loaded) => loaded,
                Err(e) if skippable(&e) => {
                    report.skipped.push(e.to_string());
                    continue;
                }
                Err(e) => return Err(e),
            };
            tx.execute(
                "INSERT OR REPLACE INTO snapshots (id, time_ns, body) VALUES (?1, ?2, ?3)",
                params![&new[..], snapshot.time_ns, body],
            )
            .map_err(sql_err(&self.path))?;
        }
        tx.commit().map_err(sql_err(&self.path))
    }

    /// Records a segment (one this process just wrote, or one read from the repository).
    pub fn add_segment(&mut self, id: &IndexId, segment: &IndexSegment) -> Result<()> {
        let path = self.path.clone();
        let err = sql_err(&path);
        let tx = self.conn.transaction().map_err(&err)?;
        {
            let mut add_pack = tx
                .prepare_cached("INSERT OR IGNORE INTO packs (id, size) VALUES (?1, ?2)")
                .map_err(&err)?;
            let mut pack_seq = tx
                .prepare_cached("SELECT seq FROM packs WHERE id = ?1")
                .map_err(&err)?;
            let mut add_blob = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO blobs (id, pack, type, compression, offset, stored_len, raw_len)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(&err)?;
            for p in &segment.packs {
                add_pack
                    .execute(params![&p.id.0[..], p.size as i64])
                    .map_err(&err)?;
                let seq: i64 = pack_seq
                    .query_row([&p.id.0[..]], |r| r.get(0))
                    .map_err(&err)?;
                for e in &p.entries {
                    add_blob
                        .execute(params![
                            &e.id.0[..],
                            seq,
                            e.blob_type.code(),
                            e.compression,
                            e.offset as i64,
                            e.stored_len,
                            e.raw_len
                        ])
                        .map_err(&err)?;
                }
            }
            tx.execute(
                "INSERT OR IGNORE INTO segments (id) VALUES (?1)",
                [&id.0[..]],
            )
            .map_err(&err)?;
        }
        tx.commit().map_err(&err)
    }

    /// Records a snapshot this process just wrote.
    pub fn add_snapshot(&self, id: &SnapshotId, time_ns: i64, body: &[u8]) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO snapshots (id, time_ns, body) VALUES (?1, ?2, ?3)",
                params![&id.0[..], time_ns, body],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    /// Makes every later write to this connection fail, as a full cache disk would.
    #[cfg(test)]
    pub fn refuse_writes(&self) {
        self.conn.execute_batch("PRAGMA query_only = ON;").unwrap();
    }

    /// Where a blob is stored, if an index segment lists it: a location in a pack known to be
    /// lost, or found damaged, only when there is no other.
    pub fn lookup(&self, id: &BlobId) -> Result<Option<(PackId, BlobEntry)>> {
        let sql = if self.careful {
            "SELECT p.id, b.type, b.compression, b.offset, b.stored_len, b.raw_len
             FROM blobs b JOIN packs p ON p.seq = b.pack WHERE b.id = ?1
             ORDER BY p.lost + EXISTS (SELECT 1 FROM damaged_blobs d
                                       WHERE d.id = b.id AND d.pack = p.id),
                      b.pack DESC
             LIMIT 1"
        } else {
            "SELECT p.id, b.type, b.compression, b.offset, b.stored_len, b.raw_len
             FROM blobs b JOIN packs p ON p.seq = b.pack WHERE b.id = ?1 LIMIT 1"
        };
        let mut stmt = self.conn.prepare_cached(sql).map_err(self.err())?;
        let row = stmt
            .query_row([&id.0[..]], LocationRow::read)
            .optional()
            .map_err(self.err())?;
        row.map(|r| r.location(id, &self.path)).transpose()
    }

    /// Every location of a blob, those not known to be lost or damaged first.
    pub fn locations(&self, id: &BlobId) -> Result<Vec<(PackId, BlobEntry)>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT p.id, b.type, b.compression, b.offset, b.stored_len, b.raw_len
                 FROM blobs b JOIN packs p ON p.seq = b.pack WHERE b.id = ?1
                 ORDER BY p.lost + EXISTS (SELECT 1 FROM damaged_blobs d
                                           WHERE d.id = b.id AND d.pack = p.id)",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([&id.0[..]], LocationRow::read)
            .map_err(self.err())?;
        rows.map(|r| r.map_err(self.err())?.location(id, &self.path))
            .collect()
    }

    /// True if the blob has a location that is not known to be lost or damaged.
    pub fn contains(&self, id: &BlobId) -> Result<bool> {
        let sql = if self.careful {
            "SELECT 1 FROM blobs b JOIN packs p ON p.seq = b.pack
             WHERE b.id = ?1 AND p.lost = 0
               AND NOT EXISTS (SELECT 1 FROM damaged_blobs d WHERE d.id = b.id AND d.pack = p.id)"
        } else {
            "SELECT 1 FROM blobs WHERE id = ?1"
        };
        let mut stmt = self.conn.prepare_cached(sql).map_err(self.err())?;
        stmt.exists([&id.0[..]]).map_err(self.err())
    }

    /// Where the record of complete trees stands; read before a backup first looks at the
    /// index, and handed back to `record_complete`.
    pub fn complete_epoch(&self) -> Result<i64> {
        self.conn
            .query_row(
                "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'complete_epoch'",
                [],
                |r| r.get(0),
            )
            .map_err(self.err())
    }

    /// Records that every blob below `tree` is in this index (see `COMPLETE_TREES`), unless
    /// some blob was taken out or became unusable since `epoch` was read. True if recorded.
    pub fn record_complete(&self, tree: &TreeId, epoch: i64) -> Result<bool> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO complete_trees (id) SELECT ?1
                 WHERE (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'complete_epoch') = ?2",
                params![&tree.0[..], epoch],
            )
            .map(|n| n == 1)
            .map_err(self.err())
    }

    /// True if every blob below `tree` was recorded in this index and none has been taken
    /// out or become unusable since.
    pub fn is_complete(&self, tree: &TreeId) -> Result<bool> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM complete_trees WHERE id = ?1")
            .map_err(self.err())?;
        stmt.exists([&tree.0[..]]).map_err(self.err())
    }

    /// True if some location is known to be lost or damaged.
    fn has_unusable(&self) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM packs WHERE lost != 0)
                     OR EXISTS (SELECT 1 FROM damaged_blobs)",
                [],
                |r| r.get(0),
            )
            .map_err(self.err())
    }

    /// Compares the indexed packs with the packs on storage (one listing) and marks those
    /// missing or of another size as lost, so their blobs count as not stored: a backup
    /// then stores them again, and restores read another copy where there is one. Returns
    /// the lost packs. Call after syncing; packs an index segment lists were written before
    /// it, so a pack written meanwhile by another backup is never taken for lost.
    pub fn validate_packs(&mut self, repo: &Repository) -> Result<Vec<PackId>> {
        // The table before the listing: a pack another process indexes in between is then
        // not looked for in a listing made before it was written.
        let judged = self.indexed_packs()?;
        let stored = repo.stored_packs()?;
        let listing = PackListing { judged, stored };
        Ok(self
            .mark_lost(&listing, Unjudged::Skip)?
            .unwrap_or_default())
    }

    /// The packs the index lists.
    fn indexed_packs(&self) -> Result<HashSet<PackId>> {
        Ok(self.ids_in("packs")?.into_iter().map(PackId).collect())
    }

    /// `validate_packs` with a listing made already: a pack the index listed before the
    /// listing was made is judged by it, so is one indexed since that the listing holds; one
    /// indexed since that it lacks may have been written after it (`Unjudged`). `None` (and
    /// nothing changed) where that calls for a new listing.
    pub fn mark_lost(
        &mut self,
        listing: &PackListing,
        unjudged: Unjudged,
    ) -> Result<Option<Vec<PackId>>> {
        let PackListing { judged, stored } = listing;
        let indexed: Vec<(Vec<u8>, i64, bool)> = {
            let mut stmt = self
                .conn
                .prepare("SELECT id, size, lost FROM packs")
                .map_err(self.err())?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? != 0)))
                .and_then(|rows| rows.collect::<rusqlite::Result<_>>())
                .map_err(self.err())?
        };
        let decided = |p: &PackId| judged.contains(p) || stored.contains_key(p);
        let ids = || indexed.iter().filter_map(|(id, ..)| PackId::from_slice(id));
        if matches!(unjudged, Unjudged::Relist) && !ids().all(|p| decided(&p)) {
            return Ok(None);
        }
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(sql_err(&path))?;
        let mut lost = Vec::new();
        for (id, size, was_lost) in indexed {
            let Some(pack) = PackId::from_slice(&id).filter(decided) else {
                continue;
            };
            let is_lost = stored.get(&pack).is_none_or(|&s| s as i64 != size);
            if is_lost != was_lost {
                tx.execute(
                    "UPDATE packs SET lost = ?1 WHERE id = ?2",
                    params![i64::from(is_lost), &id],
                )
                .map_err(sql_err(&path))?;
            }
            if is_lost {
                lost.push(pack);
            }
        }
        tx.commit().map_err(sql_err(&path))?;
        self.careful = self.has_unusable()?;
        lost.sort();
        Ok(Some(lost))
    }

    /// The rows of a query selecting two byte columns.
    fn byte_pairs(&self, sql: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut stmt = self.conn.prepare(sql).map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(self.err())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.err())
    }

    /// All cached snapshots, oldest first: id and decrypted body.
    pub fn snapshot_bodies(&self) -> Result<Vec<(SnapshotId, Vec<u8>)>> {
        let rows = self.byte_pairs("SELECT id, body FROM snapshots ORDER BY time_ns, id")?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, body)| SnapshotId::from_slice(&id).map(|id| (id, body)))
            .collect())
    }

    /// Every (blob, pack) pair the index lists.
    pub fn blob_locations(&self) -> Result<Vec<(BlobId, PackId)>> {
        let rows =
            self.byte_pairs("SELECT b.id, p.id FROM blobs b JOIN packs p ON p.seq = b.pack")?;
        let mut out = Vec::with_capacity(rows.len());
        for (blob, pack) in rows {
            let pair = BlobId::from_slice(&blob).zip(PackId::from_slice(&pack));
            out.push(pair.ok_or_else(|| Error::Index {
                path: self.path.clone(),
                message: "malformed blob row".into(),
            })?);
        }
        Ok(out)
    }

    /// Forgets every merged segment and merges the repository's segments again.
    pub fn rebuild(&mut self, repo: &Repository, why: String) -> Result<OpenReport> {
        self.clear()?;
        let mut report = OpenReport {
            rebuilt: Some(why),
            ..OpenReport::default()
        };
        self.sync(repo, &mut report)?;
        Ok(report)
    }

    /// Records the outcome of reading `packs` whole: the damaged blobs found in them replace
    /// whatever an earlier check recorded for those packs.
    pub fn record_verified_packs(
        &mut self,
        packs: &[PackId],
        damaged: &[(BlobId, PackId, String)],
    ) -> Result<()> {
        let path = self.path.clone();
        let err = sql_err(&path);
        let tx = self.conn.transaction().map_err(&err)?;
        for p in packs {
            tx.execute("DELETE FROM damaged_blobs WHERE pack = ?1", [&p.0[..]])
                .map_err(&err)?;
        }
        for (blob, pack, reason) in damaged {
            tx.execute(
                "INSERT OR REPLACE INTO damaged_blobs (id, pack, reason) VALUES (?1, ?2, ?3)",
                params![&blob.0[..], &pack.0[..], reason],
            )
            .map_err(&err)?;
        }
        tx.commit().map_err(&err)?;
        self.careful = self.has_unusable()?;
        Ok(())
    }

    /// Blobs that the last `check --read-data` on this machine found damaged: blob, pack,
    /// reason.
    pub fn damaged_blobs(&self) -> Result<Vec<(BlobId, PackId, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, pack, reason FROM damaged_blobs ORDER BY id")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            let (blob, pack, reason) = row.map_err(self.err())?;
            if let Some((b, p)) = BlobId::from_slice(&blob).zip(PackId::from_slice(&pack)) {
                out.push((b, p, reason));
            }
        }
        Ok(out)
    }

    /// A connection that holds one read transaction open until it is dropped: it sees the
    /// index as it is now, and its lookups skip SQLite's per-statement file locking, which
    /// dominates the cost of the many small lookups of a backup.
    pub fn snapshot_reader(&self) -> Result<LocalIndex> {
        self.reader(Mapping::Mapped)
    }

    /// `snapshot_reader` for one of many workers: no memory-mapped reads (SQLite's page cache
    /// of 2 MiB instead), since a page every worker touched would count in the resident size
    /// once per worker's mapping (5 workers with an index of 300 MB would look like 1.5 GB).
    pub fn worker_reader(&self) -> Result<LocalIndex> {
        self.reader(Mapping::Unmapped)
    }

    fn reader(&self, mapping: Mapping) -> Result<LocalIndex> {
        let reader = self.connection(mapping)?;
        reader.conn.execute_batch("BEGIN").map_err(reader.err())?;
        reader.contains(&BlobId::default())?;
        Ok(reader)
    }

    /// A second connection to the same (already synced) index, for use on another thread.
    pub fn another_connection(&self) -> Result<LocalIndex> {
        self.connection(Mapping::Mapped)
    }

    fn connection(&self, mapping: Mapping) -> Result<LocalIndex> {
        Ok(LocalIndex {
            conn: connect(&self.path, mapping)?,
            path: self.path.clone(),
            careful: self.careful,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: without the query planner stability guarantee, every lookup with a new
    /// blob id re-parsed its statement (STAT4), which cost a third of a restore's CPU time.
    #[test]
    fn connections_keep_their_query_plans() {
        let dir = tempfile::tempdir().unwrap();
        let conn = connect(&dir.path().join("index.sqlite"), Mapping::Mapped).unwrap();
        let qpsg = rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG;
        assert!(conn.db_config(qpsg).unwrap());
    }

    /// An index prepared (without a key) for one repository is never synced with another:
    /// the id is read from the config before the repository is opened, and another
    /// repository may have been put at the same place meanwhile.
    #[test]
    fn a_prepared_index_is_synced_only_with_its_own_repository() {
        let (one, other) = (
            crate::repo::memory_repository(),
            crate::repo::memory_repository(),
        );
        let cache = tempfile::tempdir().unwrap();
        let prepared = LocalIndex::prepare(cache.path(), one.id()).unwrap();
        assert!(!prepared.is_for(&other));
        assert!(prepared.sync_with(&other).is_err());
        let prepared = LocalIndex::prepare(cache.path(), one.id()).unwrap();
        let (index, report) = prepared.sync_with(&one).unwrap();
        assert!(report.rebuilt.is_none());
        assert!(
            index
                .path()
                .starts_with(cache.path().join(one.id().to_hex()))
        );
    }

    /// A listing made before the sync (`PreparedIndex::list_packs`) judges the packs the
    /// index held then, and those indexed since that it holds; one indexed since that it
    /// lacks may have been written after it, and calls for a new listing (a fresh cache, in
    /// which nothing was indexed before, must still find lost packs).
    #[test]
    fn an_early_listing_judges_only_what_it_can() {
        let repo = crate::repo::memory_repository();
        let cache = tempfile::tempdir().unwrap();
        let (mut index, _) = LocalIndex::open(cache.path(), &repo).unwrap();
        let add = |index: &LocalIndex, seq: u8| {
            let sql = format!("INSERT INTO packs (seq, id, size) VALUES ({seq}, ?1, 10)");
            index.conn.execute(&sql, [&[seq; 32][..]]).unwrap();
        };
        add(&index, 1);
        add(&index, 2);
        let listing = |judged: &[u8], stored: &[u8]| PackListing {
            judged: judged.iter().map(|&s| PackId([s; 32])).collect(),
            stored: stored.iter().map(|&s| (PackId([s; 32]), 10)).collect(),
        };
        let lost = |index: &mut LocalIndex, l: PackListing, unjudged| {
            index.mark_lost(&l, unjudged).unwrap()
        };
        // Pack 1 was indexed before the listing, which lacks it: lost. Pack 2 was indexed
        // since, and is listed: there.
        let one = vec![PackId([1; 32])];
        let early = lost(&mut index, listing(&[1], &[2]), Unjudged::Relist);
        assert_eq!(early, Some(one.clone()));
        // Nothing was indexed before (a fresh cache): every pack is listed, nothing is lost.
        let fresh = lost(&mut index, listing(&[], &[1, 2]), Unjudged::Relist);
        assert_eq!(fresh, Some(vec![]));
        // Pack 2, indexed since, is not listed: only a new listing can tell.
        assert_eq!(lost(&mut index, listing(&[1], &[]), Unjudged::Relist), None);
        assert!(!index.careful, "nothing changed");
        // A listing made after the sync skips it (another process indexed it since).
        let late = lost(&mut index, listing(&[1], &[]), Unjudged::Skip);
        assert_eq!(late, Some(one));
        assert!(index.careful);
    }

    /// A tree recorded complete stays so while blobs are only added or healed, and is
    /// forgotten by whatever takes a blob out or makes one unusable.
    #[test]
    fn complete_trees_are_forgotten_when_a_blob_becomes_unusable() {
        let repo = crate::repo::memory_repository();
        let cache = tempfile::tempdir().unwrap();
        let (index, _) = LocalIndex::open(cache.path(), &repo).unwrap();
        let tree: TreeId = BlobId([7; 32]);
        let insert_pack = "INSERT INTO packs (seq, id, size) VALUES (1, x'01', 10);
             INSERT INTO blobs VALUES (x'02', 1, 0, 0, 0, 10, 10);";
        let record = |index: &LocalIndex| {
            let epoch = index.complete_epoch().unwrap();
            assert!(index.record_complete(&tree, epoch).unwrap());
            assert!(index.is_complete(&tree).unwrap());
            epoch
        };
        index.conn.execute_batch(insert_pack).unwrap();
        let kept = [
            "INSERT INTO blobs VALUES (x'03', 1, 0, 0, 10, 10, 10);",
            "UPDATE packs SET lost = 0 WHERE seq = 1;",
            "INSERT INTO segments VALUES (x'04');",
        ];
        record(&index);
        for sql in kept {
            index.conn.execute_batch(sql).unwrap();
            assert!(index.is_complete(&tree).unwrap(), "forgotten by {sql}");
        }
        let forget = [
            "UPDATE packs SET lost = 1 WHERE seq = 1;",
            "INSERT INTO damaged_blobs VALUES (x'02', x'01', 'flipped');",
            "UPDATE blobs SET pack = 2 WHERE id = x'03';",
            "DELETE FROM packs WHERE seq = 1;",
            CLEAR,
        ];
        for sql in forget {
            index
                .conn
                .execute_batch("DELETE FROM packs; DELETE FROM blobs;")
                .unwrap();
            index.conn.execute_batch(insert_pack).unwrap();
            index.conn.execute_batch(kept[0]).unwrap();
            record(&index);
            index.conn.execute_batch(sql).unwrap();
            assert!(!index.is_complete(&tree).unwrap(), "kept after {sql}");
        }
        // A cache made before the table existed gains it on opening.
        index
            .conn
            .execute_batch("DROP TABLE complete_trees;")
            .unwrap();
        drop(index);
        let (index, _) = LocalIndex::open(cache.path(), &repo).unwrap();
        record(&index);
    }
}
