//! End-to-end on S3-compatible object storage: the real binary against a real S3 server,
//! through the same commands as on local disk, and the `Storage` contract through the library.
//!
//! The server is the one `CAIRN_TEST_S3_ENDPOINT` names (bucket `CAIRN_TEST_S3_BUCKET`,
//! credentials and region from the usual `AWS_*` variables; `../shared/bench/garage-cluster.sh`
//! starts a Garage cluster for this), else a `moto_server` started here when one is installed
//! (`pip install 'moto[server]'`). Without either the test says it is skipped, unless
//! `CAIRN_REQUIRE_S3` is set (CI sets it), in which case that is a failure. One server serves
//! every part, one after the other, each under its own prefix.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cairn::error::Error;
use cairn::storage::{OpendalStorage, S3Config, Storage};
use common::*;

struct S3Server {
    endpoint: String,
    bucket: String,
    /// Credentials and region, when the server was started here.
    vars: Vec<(&'static str, String)>,
    /// The server started here, and where its messages go.
    child: Option<(Child, tempfile::NamedTempFile)>,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some((child, _)) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl S3Server {
    /// Storage on this server below `prefix`, opened by the library itself.
    fn storage(&self, prefix: &str) -> OpendalStorage {
        let var = |name: &str| {
            let own = self.vars.iter().find(|(k, _)| *k == name);
            own.map(|(_, v)| v.clone())
                .or_else(|| std::env::var(name).ok())
        };
        let config = S3Config {
            bucket: self.bucket.clone(),
            prefix: prefix.to_string(),
            endpoint: Some(self.endpoint.clone()),
            region: var("AWS_REGION"),
            credentials: var("AWS_ACCESS_KEY_ID").zip(var("AWS_SECRET_ACCESS_KEY")),
        };
        OpendalStorage::s3(&config).unwrap()
    }

    /// Removes everything below `prefix`, so that a shared bucket does not fill up.
    fn wipe(&self, prefix: &str) {
        let storage = self.storage(prefix);
        for object in storage.list("", true).unwrap() {
            storage.delete(&object.path).unwrap();
        }
    }
}

/// A prefix no other run uses, even in a bucket that outlives the test.
fn unique_prefix(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{what}-{}-{nanos}", std::process::id())
}

/// One HTTP request without a body; returns the status line. (moto does not check
/// signatures, so a bucket can be made without an S3 client.)
fn http(port: u16, method: &str, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response.lines().next().unwrap_or_default().to_string())
}

fn start_moto() -> Option<S3Server> {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = tempfile::NamedTempFile::new().unwrap();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .ok()?;
    let mut server = S3Server {
        endpoint: format!("http://127.0.0.1:{port}"),
        bucket: "cairn-test".into(),
        vars: vec![
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ],
        child: Some((child, log)),
    };
    let (child, log) = server.child.as_mut().unwrap();
    let said = || std::fs::read_to_string(log.path()).unwrap_or_default();
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        let exited = child.try_wait().unwrap();
        assert!(
            exited.is_none(),
            "moto_server exited ({exited:?}):\n{}",
            said()
        );
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(60),
            "moto_server did not start:\n{}",
            said()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = http(port, "PUT", "/cairn-test").unwrap();
    assert!(
        status.contains(" 200 "),
        "create bucket: {status}\n{}",
        said()
    );
    Some(server)
}

fn s3_server() -> Option<S3Server> {
    if let Ok(endpoint) = std::env::var("CAIRN_TEST_S3_ENDPOINT") {
        let bucket = std::env::var("CAIRN_TEST_S3_BUCKET").expect("CAIRN_TEST_S3_BUCKET");
        return Some(S3Server {
            endpoint,
            bucket,
            vars: Vec::new(),
            child: None,
        });
    }
    let server = start_moto();
    if server.is_none() {
        assert!(
            std::env::var_os("CAIRN_REQUIRE_S3").is_none(),
            "CAIRN_REQUIRE_S3 is set but there is no S3 server: install moto (pip install 'moto[server]') or set CAIRN_TEST_S3_ENDPOINT"
        );
        eprintln!("skipped: no S3 server (pip install 'moto[server]', or CAIRN_TEST_S3_ENDPOINT)");
    }
    server
}

#[test]
fn object_storage() {
    let Some(server) = s3_server() else { return };
    the_storage_contract_holds(&server);
    backup_restore_check_and_prune(&server);
    mistakes_are_reported_like_local_ones(&server);
    interruptions_lose_nothing(&server);
}

/// A scratch area whose repository is a fresh prefix in the server's bucket.
struct S3Env<'s> {
    env: Env,
    server: &'s S3Server,
    prefix: String,
}

impl<'s> S3Env<'s> {
    fn new(server: &'s S3Server) -> Self {
        let mut env = Env::new();
        let prefix = unique_prefix("repo");
        env.repo = format!("s3://{}/{prefix}", server.bucket).into();
        S3Env {
            env,
            server,
            prefix,
        }
    }

    /// A `cairn` command for this repository, with the server's endpoint and credentials.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.env.cmd(args);
        cmd.env("AWS_ENDPOINT_URL", &self.server.endpoint)
            .envs(self.server.vars.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run cairn")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cairn {args:?} failed ({:?}): {}",
            out.status.code(),
            stderr(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(&[args, &["--json"]].concat())).expect("JSON")
    }
}

fn make_tree(root: &Path) {
    for f in 0..50 {
        write(
            &root.join(format!("docs/f{f:02}.txt")),
            &noise(f, 3000 + f as usize * 97),
        );
    }
    write(&root.join("big.bin"), &noise(99, 6 * 1024 * 1024 + 7));
    write(&root.join("empty"), b"");
    std::os::unix::fs::symlink("docs/f00.txt", root.join("link")).unwrap();
}

/// Init, two backups (the second reuses the first's unchanged files), a full restore and a
/// one-file restore that match the source, check reading all data, forget and prune, and the
/// local index rebuilt from the bucket alone.
fn backup_restore_check_and_prune(server: &S3Server) {
    let s3 = S3Env::new(server);
    let src = s3.env.path("src");
    make_tree(&src);
    settle();
    s3.ok(&["init", "--kdf-memory", "8", "--kdf-iterations", "1"]);
    let src_arg = src.to_str().unwrap();
    let first = s3.json(&["backup", src_arg]);
    assert_eq!(first["summary"]["files_new"], 52, "{first}");
    // Written to the bucket, below the prefix, as FORMAT.md lays it out.
    let bucket = server.storage(&s3.prefix);
    assert!(bucket.exists("config").unwrap());
    for dir in ["keys", "packs", "index", "snapshots"] {
        assert!(
            !bucket.list(dir, true).unwrap().is_empty(),
            "nothing in {dir}/"
        );
    }
    assert!(
        bucket.list("locks", true).unwrap().is_empty(),
        "a lock was left"
    );

    write(&src.join("docs/f07.txt"), b"changed");
    write(&src.join("docs/new.txt"), b"new");
    settle();
    let second = s3.json(&["backup", src_arg])["summary"].clone();
    assert_eq!(second["files_new"], 1, "{second}");
    assert_eq!(second["files_changed"], 1, "{second}");
    assert_eq!(second["files_unchanged"], 51, "{second}");
    let added = second["bytes_added_stored"].as_u64().unwrap();
    assert!(
        added < 64 * 1024,
        "an incremental backup stored {added} bytes"
    );

    let target = s3.env.path("restore");
    s3.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(describe(&restored(&target, &src)), describe(&src));
    let one = s3.env.path("one");
    let big = format!("latest:{}", src.join("big.bin").display());
    s3.ok(&["restore", &big, "--target", one.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(one.join("big.bin")).unwrap(),
        std::fs::read(src.join("big.bin")).unwrap()
    );

    assert!(s3.ok(&["check", "--read-data"]).contains("no damage found"));
    s3.ok(&["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(s3.json(&["snapshots"]).as_array().unwrap().len(), 1);
    assert!(s3.ok(&["check", "--read-data"]).contains("no damage found"));

    // The bucket is the only source of truth: without the local cache, the index is rebuilt
    // from it, and a restore after the prune is still whole.
    std::fs::remove_dir_all(&s3.env.cache).unwrap();
    let again = s3.env.path("again");
    s3.ok(&["restore", "latest", "--target", again.to_str().unwrap()]);
    assert_eq!(describe(&restored(&again, &src)), describe(&src));

    // A damaged pack in the bucket: check finds it, and a restore (reading ahead) restores
    // everything else and says which files it could not. (A byte every 256 KiB certainly
    // hits a chunk of big.bin, whatever the order of blobs in the pack.)
    let mut packs = bucket.list("packs", true).unwrap();
    packs.sort_by_key(|p| p.size);
    let largest = packs.pop().unwrap().path;
    let mut bytes = bucket.read(&largest).unwrap();
    for at in (100..bytes.len()).step_by(256 * 1024) {
        bytes[at] ^= 1;
    }
    bucket.write(&largest, bytes).unwrap();
    let out = s3.run(&["check", "--read-data"]);
    assert_eq!(out.status.code(), Some(17), "{}", stderr(&out));
    let partial = s3.env.path("partial");
    let out = s3.run(&["restore", "latest", "--target", partial.to_str().unwrap()]);
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{said}");
    let whole = describe(&src);
    let named = |rel: &Vec<u8>| said.contains(&format!("{}: blob", src.join(os(rel)).display()));
    let unharmed: std::collections::BTreeMap<_, _> =
        whole.iter().filter(|(rel, _)| !named(rel)).collect();
    assert!(
        unharmed.len() < whole.len(),
        "no file was named as failed: {said}"
    );
    assert!(named(&b"big.bin".to_vec()), "{said}");
    let got = describe(&restored(&partial, &src));
    assert_eq!(
        got.iter().collect::<std::collections::BTreeMap<_, _>>(),
        unharmed
    );
    server.wipe(&s3.prefix);
}

/// What a user gets wrong about a bucket gets the same answers as on local disk: an empty
/// prefix is "no repository" (exit 10), a wrong password exit 12, a bucket that does not
/// exist the store's own words; none of them writes anything.
fn mistakes_are_reported_like_local_ones(server: &S3Server) {
    let s3 = S3Env::new(server);
    let out = s3.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no repository at s3://"),
        "{}",
        stderr(&out)
    );

    s3.ok(&["init", "--kdf-memory", "8", "--kdf-iterations", "1"]);
    let out = s3
        .cmd(&["snapshots"])
        .env("CAIRN_PASSWORD", "not the password")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    let out = s3.run(&["init", "--kdf-memory", "8", "--kdf-iterations", "1"]);
    assert_eq!(out.status.code(), Some(16), "{}", stderr(&out));

    let mut missing = S3Env::new(server);
    missing.env.repo = "s3://no-such-bucket-for-cairn/x".into();
    let out = missing.run(&["snapshots"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("NoSuchBucket"), "{}", stderr(&out));
    server.wipe(&s3.prefix);
}

/// The `Storage` contract (src/storage/mod.rs) holds on object storage as on local disk:
/// what callers decide to delete or rebuild depends on it.
fn the_storage_contract_holds(server: &S3Server) {
    let prefix = unique_prefix("contract");
    let s = server.storage(&prefix);
    assert!(
        s.list("packs", true).unwrap().is_empty(),
        "a missing folder lists as empty"
    );
    s.write("packs/ab/abc", b"hello world".to_vec()).unwrap();
    s.write("packs/cd/cde", Vec::new()).unwrap();
    s.write("config", b"c".to_vec()).unwrap();
    assert_eq!(s.read("packs/ab/abc").unwrap(), b"hello world");
    assert_eq!(s.read_range("packs/ab/abc", 6..11).unwrap(), b"world");
    match s.read_range("packs/ab/abc", 6..20) {
        Err(Error::Storage { not_found, .. }) => assert!(!not_found),
        other => panic!("a read past the end must fail, not as missing: {other:?}"),
    }
    let paths = |dir: &str, recursive: bool| {
        let mut paths: Vec<String> = s
            .list(dir, recursive)
            .unwrap()
            .into_iter()
            .map(|o| o.path)
            .collect();
        paths.sort();
        paths
    };
    assert_eq!(paths("packs", true), ["packs/ab/abc", "packs/cd/cde"]);
    assert_eq!(paths("", false), ["config", "packs/"]);
    assert!(s.exists("packs/ab/abc").unwrap());
    assert_eq!(s.size("packs/ab/abc").unwrap(), 11);
    assert_eq!(s.size("packs/cd/cde").unwrap(), 0);
    assert!(
        s.modified("config").unwrap().is_some(),
        "lock staleness needs the store's clock"
    );
    s.delete("packs/ab/abc").unwrap();
    s.delete("packs/ab/abc").unwrap(); // deleting a missing object is not an error
    assert!(!s.exists("packs/ab/abc").unwrap());
    for missing in [s.read("packs/ab/abc").err(), s.size("packs/ab/abc").err()] {
        match missing {
            Some(Error::Storage { not_found, .. }) => assert!(not_found),
            other => panic!("expected not-found, got {other:?}"),
        }
    }
    // More keys than one listing page (1,000) holds.
    let many: Vec<String> = (0..1100).map(|i| format!("index/{i:064x}")).collect();
    std::thread::scope(|scope| {
        for part in many.chunks(100) {
            let s = &s;
            scope.spawn(move || part.iter().for_each(|k| s.write(k, vec![1]).unwrap()));
        }
    });
    assert_eq!(s.list("index", true).unwrap().len(), 1100);
    server.wipe(&prefix);
    assert!(s.list("", true).unwrap().is_empty());
}

/// The commit protocol holds on object storage too: a backup killed at any moment and a
/// forget-prune stopped at its steps (aborting there, as under `kill -9`) leave a repository
/// that checks clean, restores its latest snapshot exactly, and finishes the prune later;
/// the dead processes' locks do not stand in the way.
fn interruptions_lose_nothing(server: &S3Server) {
    let s3 = S3Env::new(server);
    let src = s3.env.path("src");
    make_tree(&src);
    s3.ok(&["init", "--kdf-memory", "8", "--kdf-iterations", "1"]);
    let src_arg = src.to_str().unwrap();
    for (round, delay_ms) in [50u64, 300, 900].into_iter().enumerate() {
        write(
            &src.join(format!("round{round}.bin")),
            &noise(round as u64, 3 << 20),
        );
        let mut child = s3.cmd(&["backup", "-q", src_arg]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            s3.ok(&["check"]).contains("no damage found"),
            "killed at {delay_ms} ms"
        );
    }
    s3.ok(&["backup", src_arg]);
    for stop in [
        "prune-segment-written:1",
        "prune-generation-raised:1",
        "prune-pack-deleted:1",
    ] {
        write(&src.join("docs/f01.txt"), stop.as_bytes());
        s3.ok(&["backup", src_arg]);
        let out = s3
            .cmd(&[
                "forget",
                "--keep-last",
                "1",
                "--prune",
                "--max-unused",
                "0%",
            ])
            .env("CAIRN_FAILPOINT", stop)
            .output()
            .unwrap();
        let name = assert_aborted_at(&out, stop);
        assert!(
            s3.ok(&["check", "--read-data"]).contains("no damage found"),
            "{stop}"
        );
        let target = s3.env.path(&format!("after-{name}"));
        s3.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
        assert_eq!(describe(&restored(&target, &src)), describe(&src), "{stop}");
        s3.ok(&["prune", "--max-unused", "0%"]);
        assert!(
            s3.ok(&["check", "--read-data"]).contains("no damage found"),
            "{stop}"
        );
    }
    server.wipe(&s3.prefix);
}
