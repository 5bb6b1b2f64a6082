//! End-to-end on S3-compatible object storage: the real binary against a real S3 server,
//! through the same commands as on local disk.
//!
//! The server is the one `CAIRN_TEST_S3_ENDPOINT` names (bucket `CAIRN_TEST_S3_BUCKET`,
//! credentials and region from the usual `AWS_*` variables; `../shared/bench/garage-cluster.sh`
//! starts a Garage cluster for this), else a `moto_server` started here when one is installed
//! (`pip install 'moto[server]'`). Without either the test says it is skipped, unless
//! `CAIRN_REQUIRE_S3` is set (CI sets it), in which case that is a failure.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct S3Server {
    endpoint: String,
    bucket: String,
    /// Credentials and region, when the server was started here.
    vars: Vec<(&'static str, String)>,
    child: Option<Child>,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
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
    let port = free_port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
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
        child: Some(child),
    };
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        let exited = server.child.as_mut().unwrap().try_wait().unwrap();
        assert!(exited.is_none(), "moto_server exited: {exited:?}");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "moto_server did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = http(port, "PUT", "/cairn-test").unwrap();
    assert!(status.contains(" 200 "), "create bucket: {status}");
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

/// A scratch area whose repository is a fresh prefix in the server's bucket.
struct S3Env<'s> {
    env: Env,
    server: &'s S3Server,
}

impl<'s> S3Env<'s> {
    fn new(server: &'s S3Server) -> Self {
        let mut env = Env::new();
        let prefix = env
            .dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        env.repo = format!("s3://{}/{prefix}", server.bucket).into();
        S3Env { env, server }
    }

    fn run(&self, args: &[&str]) -> Output {
        self.env
            .cmd(args)
            .env("AWS_ENDPOINT_URL", &self.server.endpoint)
            .envs(self.server.vars.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run cairn")
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
#[test]
fn backup_restore_check_and_prune_on_object_storage() {
    let Some(server) = s3_server() else { return };
    let s3 = S3Env::new(&server);
    let src = s3.env.path("src");
    make_tree(&src);
    settle();
    s3.ok(&["init", "--kdf-memory", "8", "--kdf-iterations", "1"]);
    let src_arg = src.to_str().unwrap();
    let first = s3.json(&["backup", src_arg]);
    assert_eq!(first["summary"]["files_new"], 52, "{first}");

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
}

/// What a user gets wrong about a bucket gets the same answers as on local disk: an empty
/// prefix is "no repository" (exit 10), a wrong password exit 12, a bucket that does not
/// exist the store's own words; none of them writes anything.
#[test]
fn object_storage_mistakes_are_reported_like_local_ones() {
    let Some(server) = s3_server() else { return };
    let s3 = S3Env::new(&server);
    let out = s3.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no repository at s3://"),
        "{}",
        stderr(&out)
    );

    s3.ok(&["init", "--kdf-memory", "8", "--kdf-iterations", "1"]);
    let out = s3
        .env
        .cmd(&["snapshots"])
        .env("AWS_ENDPOINT_URL", &server.endpoint)
        .envs(server.vars.iter().map(|(k, v)| (k, v)))
        .env("CAIRN_PASSWORD", "not the password")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    let out = s3.run(&["init", "--kdf-memory", "8", "--kdf-iterations", "1"]);
    assert!(!out.status.success(), "a second init must refuse");

    let mut missing = S3Env::new(&server);
    missing.env.repo = "s3://no-such-bucket-for-cairn/x".into();
    let out = missing.run(&["snapshots"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("NoSuchBucket"), "{}", stderr(&out));
}
