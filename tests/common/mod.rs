//! Helpers for end-to-end tests: run the real `cairn` binary against a temporary repository,
//! generate source trees, and compare trees after restore (content and metadata).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const PASSWORD: &str = "correct horse battery staple";

/// A scratch area with a repository location and a cache folder.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub cache: PathBuf,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo");
        let cache = dir.path().join("cache");
        Env { dir, repo, cache }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A `cairn` command with repository, cache and password set.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
        c.arg("--repo")
            .arg(&self.repo)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .env("CAIRN_PASSWORD", PASSWORD)
            .env_remove("CAIRN_PASSWORD_FILE")
            .env_remove("CAIRN_PASSWORD_COMMAND")
            .env_remove("CAIRN_REPOSITORY");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run cairn")
    }

    /// Gives the scratch folder itself, the repository and the cache to nobody (uid and gid
    /// 65534), for `run_as_nobody`; needs root.
    pub fn give_to_nobody(&self) {
        let chown = |p: &Path| std::os::unix::fs::lchown(p, Some(65534), Some(65534)).unwrap();
        chown(self.dir.path());
        let mut paths = vec![self.repo.clone(), self.cache.clone()];
        while let Some(p) = paths.pop() {
            chown(&p);
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                paths.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            }
        }
    }

    /// Runs as nobody (uid and gid 65534), with the scratch area as home; needs root.
    pub fn run_as_nobody(&self, args: &[&str]) -> Output {
        use std::os::unix::process::CommandExt;
        self.cmd(args)
            .uid(65534)
            .gid(65534)
            .env("HOME", self.dir.path())
            .output()
            .expect("run cairn")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cairn {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn init(&self) {
        self.ok(&["init", "--kdf-memory", "8", "--kdf-iterations", "1"]);
    }

    /// Backs up `paths` with --json; returns the parsed summary object.
    pub fn backup_json(&self, paths: &[&Path]) -> serde_json::Value {
        let mut args: Vec<&str> = vec!["backup", "--json"];
        for p in paths {
            args.push(p.to_str().expect("utf-8 test path"));
        }
        serde_json::from_str(&self.ok(&args)).expect("backup JSON")
    }

    /// Runs with a test hook armed (`CAIRN_HOOK`, see `cairn::failpoint`).
    pub fn run_hooked(&self, args: &[&str], hook: &str) -> Output {
        self.cmd(args)
            .env("CAIRN_HOOK", hook)
            .output()
            .expect("run cairn")
    }

    /// `backup --json ARGS` with a test hook armed (`CAIRN_HOOK`); it must exit 0.
    pub fn backup_hooked(&self, args: &[&str], hook: &str) -> serde_json::Value {
        let out = self.run_hooked(&[&["backup", "--json"], args].concat(), hook);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("backup JSON")
    }

    pub fn snapshots(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["snapshots", "--json"])).expect("snapshots JSON")
    }

    pub fn restore(&self, snapshot: &str, target: &Path) {
        self.ok(&["restore", snapshot, "--target", target.to_str().unwrap()]);
    }

    /// Total bytes of all files in the repository.
    pub fn repo_size(&self) -> u64 {
        files_below(&self.repo)
            .iter()
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Deterministic pseudo-random bytes.
/// Flips one bit of the byte at `offset` in the repository's largest pack (the data pack, in
/// a repository of one backup); returns that pack.
pub fn flip_in_largest_pack(repo: &Path, offset: usize) -> PathBuf {
    let mut packs = files_below(&repo.join("packs"));
    packs.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let pack = packs.pop().expect("a pack");
    let mut bytes = std::fs::read(&pack).unwrap();
    assert!(
        bytes.len() > offset,
        "{} is only {} bytes",
        pack.display(),
        bytes.len()
    );
    bytes[offset] ^= 0x01;
    std::fs::write(&pack, bytes).unwrap();
    pack
}

pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Waits until files just written are old enough for a backup to trust their timestamps in
/// the next one: a file changed less than two seconds before a backup started is read again
/// by the backup after it.
pub fn settle() {
    std::thread::sleep(std::time::Duration::from_millis(2100));
}

pub fn write(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, bytes).unwrap();
}

/// What a restore must reproduce of one entry.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub mtime_ns: i64,
    pub size: u64,
    pub content_hash: Option<[u8; 32]>,
    pub link: Option<Vec<u8>>,
    pub uid: u32,
    pub gid: u32,
    /// Device nodes: the device.
    pub rdev: u64,
    /// Links to the inode (hard links within the tree).
    pub nlink: u64,
    /// Extended attributes (of the entry itself, a symlink's too), sorted.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Every entry below `root`, keyed by relative path bytes, with content hashes and metadata.
pub fn describe(root: &Path) -> BTreeMap<Vec<u8>, Entry> {
    let mut out = BTreeMap::new();
    describe_into(root, root, &mut out);
    out
}

fn describe_into(root: &Path, dir: &Path, out: &mut BTreeMap<Vec<u8>, Entry>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let rel = p
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        let t = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if t.is_dir() {
            "dir"
        } else if t.is_symlink() {
            "symlink"
        } else if t.is_file() {
            "file"
        } else if t.is_fifo() {
            "fifo"
        } else if t.is_socket() {
            "socket"
        } else if t.is_char_device() {
            "char device"
        } else {
            "block device"
        };
        // `xattr` works on the entry itself, never on what a symlink points at.
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = xattr::list(&p)
            .map(|names| {
                names
                    .filter_map(|n| {
                        let value = xattr::get(&p, &n).ok().flatten()?;
                        Some((n.as_bytes().to_vec(), value))
                    })
                    .collect()
            })
            .unwrap_or_default();
        xattrs.sort();
        let entry = Entry {
            kind,
            mode: if t.is_symlink() {
                0
            } else {
                m.permissions().mode() & 0o7777
            },
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            size: if t.is_file() { m.len() } else { 0 },
            content_hash: t
                .is_file()
                .then(|| *blake3::hash(&std::fs::read(&p).unwrap()).as_bytes()),
            link: t.is_symlink().then(|| {
                std::fs::read_link(&p)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec()
            }),
            uid: m.uid(),
            gid: m.gid(),
            rdev: m.rdev(),
            nlink: if t.is_dir() { 0 } else { m.nlink() },
            xattrs,
        };
        out.insert(rel, entry);
        if t.is_dir() {
            describe_into(root, &p, out);
        }
    }
}

/// Where a source path lands inside a restore target (snapshots keep absolute paths).
pub fn restored(target: &Path, source: &Path) -> PathBuf {
    target.join(source.strip_prefix("/").unwrap())
}

/// True when the tests run as root; otherwise says that the calling test is skipped (it
/// needs root to act as another user).
/// What backup, restore and dump say of a folder nested beyond `walk::MAX_DEPTH`.
pub fn too_deep() -> String {
    format!("nested deeper than {} folders", cairn::walk::MAX_DEPTH)
}

pub fn running_as_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipped: needs root");
    }
    root
}

pub fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// Bytes in lowercase hex, as `path_hex` gives them.
pub fn hex(bytes: impl AsRef<[u8]>) -> String {
    bytes.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Asserts that a command run with `CAIRN_FAILPOINT=stop` aborted at that failpoint; returns
/// the failpoint's name.
pub fn assert_aborted_at<'s>(out: &Output, stop: &'s str) -> &'s str {
    let name = stop.split(':').next().unwrap();
    let said = stderr(out);
    let reached = said.contains(&format!("failpoint {name} reached"));
    assert!(reached, "{stop} was not reached: {said}");
    assert_eq!(out.status.code(), None, "{stop}: the process did not abort");
    name
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
