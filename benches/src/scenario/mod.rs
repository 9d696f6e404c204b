//! The load generator's scenarios. Each takes a [`Target`] and its own
//! parameters and returns a serialisable report; none of them starts or stops a server.

pub mod failover;
pub mod hostile;
pub mod idle;
pub mod ingest;
pub mod traffic;

use std::net::IpAddr;

use futures_util::StreamExt;

use crate::client::{Session, Target};

/// Opens one session per entry of `docs` (same order), at most `concurrency` handshakes at a
/// time, cycling through `sources`. Failed opens come back as their error text.
pub async fn open_many(
    target: &Target,
    docs: &[String],
    sources: &[IpAddr],
    concurrency: usize,
) -> Vec<Result<Session, String>> {
    futures_util::stream::iter(docs.iter().enumerate())
        .map(|(i, doc)| {
            let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
            async move {
                Session::open(target, doc, source)
                    .await
                    .map_err(|e| format!("{e:#}"))
            }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await
}

/// Opens one session per entry of `docs`, each carrying every document of its entry over
/// one connection (see [`Session::open_documents`]); otherwise as [`open_many`].
pub async fn open_many_documents(
    target: &Target,
    docs: &[Vec<String>],
    sources: &[IpAddr],
    concurrency: usize,
) -> Vec<Result<Session, String>> {
    futures_util::stream::iter(docs.iter().enumerate())
        .map(|(i, docs)| {
            let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
            async move {
                Session::open_documents(target, docs, source)
                    .await
                    .map_err(|e| format!("{e:#}"))
            }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await
}

/// Reads the resident set size of process `pid` in bytes, from `/proc/PID/status`.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    status_bytes(pid, "VmRSS:")
}

/// Reads the peak resident set size of process `pid` over its life (`VmHWM`), in bytes.
pub fn peak_rss_bytes(pid: u32) -> anyhow::Result<u64> {
    status_bytes(pid, "VmHWM:")
}

/// A `field` of `/proc/PID/status` given in KiB, in bytes.
fn status_bytes(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .ok_or_else(|| anyhow::anyhow!("no {field} in /proc/{pid}/status"))?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("malformed {field} line: {line}"))?
        .parse()?;
    Ok(kib * 1024)
}
