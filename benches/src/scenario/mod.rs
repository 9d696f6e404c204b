//! The load generator's scenarios. Each takes a [`Target`] and its own
//! parameters and returns a serialisable report; none of them starts or stops a server.

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

/// Reads the resident set size of process `pid` in bytes, from `/proc/PID/status`.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("malformed VmRSS line: {line}"))?
        .parse()?;
    Ok(kib * 1024)
}
