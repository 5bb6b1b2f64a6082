//! S3-compatible object storage: where a bucket is and how we talk to it.
//!
//! Guarantees:
//! - every request that fails for a reason that may pass (a dropped connection, a 5xx answer,
//!   "slow down", no answer in time) is tried again, with growing pauses, up to
//!   `MAX_ATTEMPTS` times. Trying again is safe: every object is written whole in one PUT, under
//!   the hash of its content or with bytes that the writer would write again;
//! - no call takes longer than `deadline(path, bytes)`, retries included. A commit (an index
//!   segment, a snapshot, the generation) is written right after the repository lock was
//!   checked, and must land before others may call that lock stale (`repo::lock`: 5 minutes
//!   of margin), so a call for anything but a pack gives up after `COMMIT_DEADLINE`, a minute
//!   before that, in case the store finishes a request we gave up on. A pack, never a commit,
//!   gets time in proportion to its size, for slow links: as if the link carried only
//!   `SLOWEST_BYTES_PER_SEC` and every one of the `REQUESTS_IN_FLIGHT` requests shared it.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};

/// Attempts per call, the first included.
const MAX_ATTEMPTS: u32 = 6;
/// The slowest link a call is given time for, after `BASE_DEADLINE`.
const SLOWEST_BYTES_PER_SEC: u64 = 32 * 1024;
/// Requests kept in flight on object storage (restore's reads, prune's deletions, the
/// packer's uploads): enough to hide the latency of a store far away, or to fill a link whose
/// single connections are slow.
pub(super) const REQUESTS_IN_FLIGHT: usize = 8;
const BASE_DEADLINE: Duration = Duration::from_secs(120);
const COMMIT_DEADLINE: Duration = Duration::from_secs(240);
/// One attempt's own limit, before the time for its bytes: a request nobody answers is
/// given up and tried again, rather than waited for until the call's deadline.
const BASE_ATTEMPT: Duration = Duration::from_secs(40);

/// Where a repository in a bucket is, and who we are there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Object keys start with `prefix/` (none when empty).
    pub prefix: String,
    /// The store's URL; `None` for AWS itself (or `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// `None`: `AWS_REGION`, `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// Access key id and secret; `None`: the AWS tools' chain (`AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE` and `~/.aws`, the instance's role).
    pub credentials: Option<(String, String)>,
}

impl S3Config {
    /// From what follows `s3://` in a repository location: `BUCKET[/PREFIX]`.
    pub fn from_location(rest: &str) -> Result<Self> {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::Usage(format!(
                "repository location \"s3://{rest}\": no bucket (write s3://BUCKET or s3://BUCKET/PREFIX)"
            )));
        }
        let prefix: Vec<&str> = prefix.split('/').filter(|p| !p.is_empty()).collect();
        Ok(S3Config {
            bucket: bucket.to_string(),
            prefix: prefix.join("/"),
            ..Default::default()
        })
    }

    pub fn location(&self) -> String {
        match self.prefix.as_str() {
            "" => format!("s3://{}", self.bucket),
            prefix => format!("s3://{}/{prefix}", self.bucket),
        }
    }

    pub(super) fn builder(&self) -> opendal::services::S3 {
        let region = self.region.clone().unwrap_or_else(|| {
            ["AWS_REGION", "AWS_DEFAULT_REGION"]
                .iter()
                .find_map(|v| std::env::var(v).ok().filter(|r| !r.is_empty()))
                .unwrap_or_else(|| "us-east-1".into())
        });
        let mut builder = opendal::services::S3::default()
            .bucket(&self.bucket)
            .root(&format!("/{}", self.prefix))
            .region(&region);
        if let Some(endpoint) = &self.endpoint {
            builder = builder.endpoint(endpoint);
        }
        if let Some((id, secret)) = &self.credentials {
            builder = builder.access_key_id(id).secret_access_key(secret);
        }
        builder
    }
}

/// How long a call on `path` moving `bytes` may take in all, retries included.
pub(super) fn deadline(path: &str, bytes: u64) -> Duration {
    let needed = BASE_DEADLINE + time_for(path, bytes);
    match is_pack(path) {
        true => needed,
        false => needed.min(COMMIT_DEADLINE),
    }
}

fn attempt_limit(path: &str, bytes: u64) -> Duration {
    BASE_ATTEMPT + time_for(path, bytes)
}

fn is_pack(path: &str) -> bool {
    path.starts_with("packs/")
}

/// The time `bytes` take on the slowest link; packs are moved many at a time, which share it.
fn time_for(path: &str, bytes: u64) -> Duration {
    let sharing = if is_pack(path) { REQUESTS_IN_FLIGHT } else { 1 } as u64;
    Duration::from_secs(bytes * sharing / SLOWEST_BYTES_PER_SEC)
}

/// The pause before attempt `n + 1`: 1, 2, 4, 8, then 10 s, each up to a quarter longer at
/// random, so that readers that failed together do not come back together.
fn pause(n: u32) -> Duration {
    let base = Duration::from_secs((1u64 << (n - 1).min(4)).min(10));
    let [random] = crate::crypto::random_bytes::<1>();
    base + base.mul_f64(f64::from(random) / 1024.0)
}

/// Runs `request` until it succeeds, fails for good, or the call runs out of attempts or
/// time; `op`, `path` and `bytes` say what it does, for messages and limits.
pub(super) async fn with_retries<T, F, Fut>(
    op: &'static str,
    path: &str,
    bytes: u64,
    request: F,
) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = opendal::Result<T>>,
{
    let deadline = Instant::now() + deadline(path, bytes);
    let mut attempt = 1;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let why = match tokio::time::timeout(left.min(attempt_limit(path, bytes)), request()).await
        {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) if !e.is_temporary() => return Err(error(op, path, &e)),
            Ok(Err(e)) => describe(&e),
            Err(_) => "no answer in time".to_string(),
        };
        let wait = pause(attempt);
        // Not worth starting an attempt that could hardly finish.
        if attempt == MAX_ATTEMPTS || Instant::now() + wait + BASE_ATTEMPT / 4 >= deadline {
            return Err(Error::Storage {
                op,
                path: path.to_string(),
                not_found: false,
                message: format!("{why} (gave up after {attempt} attempts)"),
            });
        }
        tracing::warn!(
            "storage: {op} {path}: {why}; trying again in {:.1} s",
            wait.as_secs_f64()
        );
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// A request that failed for good. Only the store's "no such key" is `not_found`: callers
/// treat a missing object as gone (a lock released, a segment pruned).
pub(super) fn error(op: &'static str, path: &str, err: &opendal::Error) -> Error {
    Error::Storage {
        op,
        path: path.to_string(),
        not_found: err.kind() == opendal::ErrorKind::NotFound,
        message: describe(err),
    }
}

/// What went wrong, in one line: the store's error code and message, else the HTTP status
/// and what it usually means, else the network error (opendal's `Display` repeats the
/// request and the response).
pub(super) fn describe(err: &opendal::Error) -> String {
    let message = err.message();
    // An S3 error body comes as `S3Error { code: "…", message: "…", … }`.
    let field = |name: &str| {
        let start = message.find(&format!("{name}: \""))? + name.len() + 3;
        let len = message[start..].find("\", ")?;
        Some(&message[start..start + len]).filter(|f| !f.is_empty())
    };
    match (field("code"), field("message")) {
        (Some(code), Some(text)) => return format!("{code}: {text}"),
        (Some(code), None) => return code.to_string(),
        _ => {}
    }
    let full = err.to_string();
    let status = full
        .find("status: ")
        .map(|at| &full[at + 8..])
        .map(|s| {
            s.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .filter(|s| s.len() == 3);
    if let Some(status) = status {
        let hint = match status.as_str() {
            "403" => ": access denied; check the credentials and the bucket's permissions",
            "301" | "400" => ": check the region (AWS_REGION) and the endpoint (AWS_ENDPOINT_URL)",
            _ => "",
        };
        return format!("HTTP {status}{hint}");
    }
    let mut source = std::error::Error::source(err);
    let mut innermost = None;
    while let Some(e) = source {
        innermost = Some(e.to_string());
        source = e.source();
    }
    let text = innermost.unwrap_or_else(|| message.to_string());
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    line.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opendal::ErrorKind;

    #[test]
    fn locations_name_a_bucket_and_a_clean_prefix() {
        let c = S3Config::from_location("b//a//c/").unwrap();
        assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("b", "a/c"));
        assert_eq!(c.location(), "s3://b/a/c");
        assert_eq!(S3Config::from_location("b/").unwrap().location(), "s3://b");
        assert!(matches!(
            S3Config::from_location("/x"),
            Err(Error::Usage(_))
        ));
    }

    #[test]
    fn errors_say_the_store_code_or_the_status_in_one_line() {
        let body = r#"S3Error { code: "NoSuchBucket", message: "The specified bucket does not exist", resource: "", request_id: "1" }"#;
        let e = opendal::Error::new(ErrorKind::ConfigInvalid, body);
        assert_eq!(
            describe(&e),
            "NoSuchBucket: The specified bucket does not exist"
        );
        // A HEAD answer has no body, only a status.
        let head = opendal::Error::new(ErrorKind::PermissionDenied, "")
            .with_context("response", "Parts { status: 403, version: HTTP/1.1 }");
        assert!(
            describe(&head).starts_with("HTTP 403: access denied"),
            "{}",
            describe(&head)
        );
        let page = opendal::Error::new(ErrorKind::Unexpected, "<html>\n  bad\n gateway</html>");
        assert_eq!(describe(&page), "<html> bad gateway</html>");
    }

    #[test]
    fn a_missing_key_is_not_found_and_nothing_else_is() {
        let missing = opendal::Error::new(ErrorKind::NotFound, "");
        assert!(matches!(
            error("read", "x", &missing),
            Error::Storage {
                not_found: true,
                ..
            }
        ));
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let token = opendal::Error::new(ErrorKind::Unexpected, "credentials").set_source(io);
        assert!(matches!(
            error("read", "x", &token),
            Error::Storage {
                not_found: false,
                ..
            }
        ));
    }

    /// Anything but a pack is given up a minute within the lock's margin whatever its size;
    /// a pack gets time for its bytes at its share of the slowest link.
    #[test]
    fn calls_other_than_packs_give_up_within_the_lock_margin() {
        let margin = Duration::from_secs(5 * 60);
        let big = 200 * 1024 * 1024;
        for path in ["index/ab", "snapshots/ab", "generation", "locks/ab"] {
            assert!(
                deadline(path, big) <= margin - Duration::from_secs(60),
                "{path}"
            );
            assert!(deadline(path, 0) >= BASE_DEADLINE, "{path}");
        }
        let pack = 24 * 1024 * 1024;
        // A pack shares a 32 KiB/s link with the other requests in flight.
        let shared = Duration::from_secs(pack * REQUESTS_IN_FLIGHT as u64 / 32 / 1024);
        assert!(deadline("packs/ab/abc", pack) >= shared);
        assert!(attempt_limit("packs/ab/abc", pack) >= shared);
        for (n, base) in (1..=6).zip([1, 2, 4, 8, 10, 10]) {
            let p = pause(n).as_secs_f64();
            assert!(
                (base as f64..=base as f64 * 1.25).contains(&p),
                "pause {n}: {p}"
            );
        }
    }

    /// Temporary failures are tried again, up to the limit; a lasting one is not.
    #[test]
    fn temporary_failures_are_retried_and_lasting_ones_are_not() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let tries = std::sync::atomic::AtomicU32::new(0);
        let flaky = || {
            let n = tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                match n {
                    0 | 1 => Err(opendal::Error::new(ErrorKind::Unexpected, "503").set_temporary()),
                    _ => Ok(n),
                }
            }
        };
        assert_eq!(
            runtime
                .block_on(with_retries("read", "x", 0, flaky))
                .unwrap(),
            2
        );
        let always = || async {
            Err::<(), _>(opendal::Error::new(ErrorKind::Unexpected, "503").set_temporary())
        };
        let err = runtime
            .block_on(with_retries("read", "x", 0, always))
            .unwrap_err();
        assert!(
            err.to_string().contains("gave up after 6 attempts"),
            "{err}"
        );
        // A store that never answers: given up by the deadline.
        let started = runtime.block_on(async { Instant::now() });
        let silent = || std::future::pending::<opendal::Result<()>>();
        let err = runtime
            .block_on(with_retries("write", "index/ab", 0, silent))
            .unwrap_err();
        assert!(err.to_string().contains("no answer in time"), "{err}");
        let took = runtime.block_on(async { started.elapsed() });
        assert!(took <= deadline("index/ab", 0), "{took:?}");
        tries.store(0, std::sync::atomic::Ordering::SeqCst);
        let denied = || {
            tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Err::<(), _>(opendal::Error::new(ErrorKind::PermissionDenied, "")) }
        };
        assert!(
            runtime
                .block_on(with_retries("read", "x", 0, denied))
                .is_err()
        );
        assert_eq!(tries.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
