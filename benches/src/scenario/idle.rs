//! Idle connections: many synced connections spread over many documents, held open while
//! nothing happens; measures the server's resident memory per connection.

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use super::{open_many_documents, rss_bytes};
use crate::client::Target;

/// Shape of the idle run.
#[derive(Debug, Clone)]
pub struct IdleParams {
    /// Connections to open.
    pub connections: usize,
    /// Documents they spread over (connection i opens documents i·k .. i·k + k − 1, each mod
    /// docs, for k documents per connection).
    pub docs: usize,
    /// Documents each connection holds open (more than 1: Hocuspocus only).
    pub docs_per_connection: usize,
    /// Time to let the server settle after the last connection synced, before measuring.
    pub settle: Duration,
    /// The server's process id, for its resident memory.
    pub server_pid: Option<u32>,
    /// Concurrent handshakes while connecting.
    pub concurrency: usize,
    /// Loopback source addresses to spread connections over.
    pub sources: Vec<IpAddr>,
}

/// What an idle run measured.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Connections attempted.
    pub connections: usize,
    /// Documents.
    pub docs: usize,
    /// Documents each connection held open.
    pub docs_per_connection: usize,
    /// Connections that opened and synced.
    pub synced: usize,
    /// Connections that failed to open or sync.
    pub failed: usize,
    /// Synced connections still open when the run ended.
    pub still_open: usize,
    /// First error, if any.
    pub first_error: Option<String>,
    /// Seconds to open and sync every connection.
    pub connect_s: f64,
    /// Server RSS before connecting, bytes.
    pub rss_before: Option<u64>,
    /// Server RSS with every connection open, bytes.
    pub rss_after: Option<u64>,
    /// (after − before) / synced connections, bytes; includes the documents' own memory.
    pub bytes_per_connection: Option<f64>,
}

/// Runs the idle scenario against `target`.
pub async fn run(target: &Target, p: &IdleParams) -> anyhow::Result<IdleReport> {
    let rss_before = p.server_pid.map(rss_bytes).transpose()?;
    let per = p.docs_per_connection.max(1);
    let docs: Vec<Vec<String>> = (0..p.connections)
        .map(|i| {
            (0..per)
                .map(|j| format!("idle-{}", (i * per + j) % p.docs.max(1)))
                .collect()
        })
        .collect();
    let started = std::time::Instant::now();
    let results = open_many_documents(target, &docs, &p.sources, p.concurrency).await;
    let connect_s = started.elapsed().as_secs_f64();
    let mut sessions = Vec::new();
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok(session) => sessions.push(session.split()),
            Err(e) => errors.push(e),
        }
    }
    tokio::time::sleep(p.settle).await;
    let rss_after = p.server_pid.map(rss_bytes).transpose()?;
    // A connection counts as still open if the server has not closed it: poll each receiver
    // once without waiting.
    let mut still_open = 0;
    for (_, rx) in &mut sessions {
        use futures_util::StreamExt;
        match tokio::time::timeout(Duration::ZERO, rx.next()).await {
            Err(_) | Ok(Some(Ok(_))) => still_open += 1,
            Ok(None | Some(Err(_))) => {}
        }
    }
    let synced = sessions.len();
    let bytes_per_connection = match (rss_before, rss_after) {
        (Some(before), Some(after)) if synced > 0 => {
            Some((after as f64 - before as f64) / synced as f64)
        }
        _ => None,
    };
    Ok(IdleReport {
        connections: p.connections,
        docs: p.docs,
        docs_per_connection: per,
        synced,
        failed: errors.len(),
        still_open,
        first_error: errors.first().cloned(),
        connect_s,
        rss_before,
        rss_after,
        bytes_per_connection,
    })
}
