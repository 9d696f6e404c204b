//! Hostile clients (issue 14): the memory attacks one client could make on a relay, one after
//! the other against the same server process, each with the server's peak resident memory
//! while it ran, so that the bound the relay documents can be checked against a real run.
//!
//! 1. `slow_reader`: a subscriber that never reads while a writer sends large updates to its
//!    document (the outbox a silent reader pins).
//! 2. `presence_flood`: one connection announcing ever new client ids with large states.
//! 3. `large_content`: a document of many map entries read as JSON by several requests at
//!    once (`GET .../content`).
//! 4. `large_update`: one update of many small map entries (its decoded size, not its bytes).
//!
//! The scenario only observes: it reports how the server answered (closed, refused, served)
//! and its memory, and asserts nothing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aetherflow_crdt::awareness::encode_update;
use aetherflow_crdt::protocol::{encode_awareness, encode_sync_update};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as Frame;
use yrs::{Doc, Map, ReadTxn, StateVector, Text, Transact};

use super::{peak_rss_bytes, rss_bytes};
use crate::client::{Session, Target};

/// Shape of the hostile run.
#[derive(Debug, Clone)]
pub struct HostileParams {
    /// The server's process id, for its memory.
    pub server_pid: u32,
    /// Large updates the writer sends to the silent reader's document.
    pub slow_reader_updates: usize,
    /// Size of each of those updates, bytes.
    pub slow_reader_update_bytes: usize,
    /// Presence updates of the flooding connection, each a new client id.
    pub presence_updates: usize,
    /// Size of each presence state, bytes.
    pub presence_state_bytes: usize,
    /// Map entries of the document read as JSON.
    pub content_entries: usize,
    /// `GET .../content` requests at once.
    pub content_requests: usize,
    /// Map entries of the one large update.
    pub update_entries: usize,
}

/// What one attack did and what it cost the server.
#[derive(Debug, Clone, Serialize)]
pub struct AttackReport {
    /// Which attack.
    pub name: &'static str,
    /// How the server answered.
    pub outcome: String,
    /// Server RSS before the attack, bytes.
    pub rss_before: u64,
    /// Highest server RSS sampled while it ran (every 20 ms), bytes.
    pub rss_peak: u64,
    /// Server RSS once it was over, bytes.
    pub rss_after: u64,
    /// Seconds it took.
    pub seconds: f64,
}

/// What a hostile run measured.
#[derive(Debug, Clone, Serialize)]
pub struct HostileReport {
    /// Each attack, in order.
    pub attacks: Vec<AttackReport>,
    /// The server's peak RSS over its whole life (`VmHWM`), bytes.
    pub peak_rss: u64,
}

/// Runs every attack against `target`.
pub async fn run(target: &Target, p: &HostileParams) -> anyhow::Result<HostileReport> {
    let http = target.socket_addr()?;
    let mut attacks = Vec::new();
    attacks.push(measured(p.server_pid, "slow_reader", slow_reader(target, p)).await?);
    attacks.push(measured(p.server_pid, "presence_flood", presence_flood(target, p)).await?);
    attacks.push(
        measured(
            p.server_pid,
            "large_content",
            large_content(target, http, p),
        )
        .await?,
    );
    attacks.push(measured(p.server_pid, "large_update", large_update(target, p)).await?);
    Ok(HostileReport {
        attacks,
        peak_rss: peak_rss_bytes(p.server_pid)?,
    })
}

/// Runs `attack` while sampling the server's RSS.
async fn measured(
    pid: u32,
    name: &'static str,
    attack: impl Future<Output = anyhow::Result<String>>,
) -> anyhow::Result<AttackReport> {
    let rss_before = rss_bytes(pid)?;
    let started = Instant::now();
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        loop {
            match rss_bytes(pid) {
                Ok(rss) => peak = peak.max(rss),
                Err(_) => return peak,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let outcome = attack.await.unwrap_or_else(|e| format!("error: {e:#}"));
    let seconds = started.elapsed().as_secs_f64();
    // Let the server give back what it held for the attack before the next one.
    tokio::time::sleep(Duration::from_secs(1)).await;
    sampler.abort();
    let sampled = sampler.await.unwrap_or(0);
    let rss_after = rss_bytes(pid)?;
    Ok(AttackReport {
        name,
        outcome,
        rss_before,
        rss_peak: sampled.max(rss_after),
        rss_after,
        seconds,
    })
}

async fn slow_reader(target: &Target, p: &HostileParams) -> anyhow::Result<String> {
    let doc = "hostile-slow-reader";
    // The reader syncs, then never reads again.
    let (_silent_tx, mut silent_rx) = Session::open(target, doc, None).await?.split();
    let writer = Session::open(target, doc, None).await?;
    let frames: Vec<Frame> = (0..p.slow_reader_updates)
        .map(|i| {
            let update = text_update(i as u64 + 1, p.slow_reader_update_bytes);
            writer.frame(&encode_sync_update(&update))
        })
        .collect();
    let (mut tx, mut rx) = writer.split();
    // The writer reads its own echoes, so only the silent reader falls behind.
    let drain = tokio::spawn(async move { while rx.next().await.is_some() {} });
    for frame in frames {
        tx.send(frame).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    drain.abort();
    // Now read what the relay held for the silent reader: how did it end?
    let mut bytes = 0usize;
    let end = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(frame) = silent_rx.next().await {
            match frame {
                Ok(Frame::Close(close)) => return format!("closed: {close:?}"),
                Ok(frame) => bytes += frame.len(),
                Err(e) => return format!("connection error: {e}"),
            }
        }
        "ended without a close frame".to_owned()
    })
    .await
    .unwrap_or_else(|_| "still open after 30 s".to_owned());
    let sent = p.slow_reader_updates * p.slow_reader_update_bytes;
    Ok(format!(
        "{} MiB sent; the silent reader got {} MiB, then {end}",
        sent >> 20,
        bytes >> 20
    ))
}

async fn presence_flood(target: &Target, p: &HostileParams) -> anyhow::Result<String> {
    let session = Session::open(target, "hostile-presence", None).await?;
    let state = format!("{{\"pad\":\"{}\"}}", "x".repeat(p.presence_state_bytes));
    let frames: Vec<Frame> = (0..p.presence_updates)
        .map(|i| {
            let client = 1_000 + i as u64;
            session.frame(&encode_awareness(&encode_update(&[(client, 1, &state)])))
        })
        .collect();
    let (mut tx, mut rx) = session.split();
    let mut sent = 0;
    for frame in frames {
        if tx.send(frame).await.is_err() {
            break;
        }
        sent += 1;
    }
    let end = closed_with(&mut rx).await;
    Ok(format!("{sent} of {} sent, then {end}", p.presence_updates))
}

async fn large_content(
    target: &Target,
    http: SocketAddr,
    p: &HostileParams,
) -> anyhow::Result<String> {
    let doc = "hostile-content";
    let session = Session::open(target, doc, None).await?;
    let update = map_update(p.content_entries);
    let (mut tx, mut rx) = session.split();
    tx.send(Frame::Binary(
        target
            .dialect
            .frame(doc, &encode_sync_update(&update))
            .into(),
    ))
    .await?;
    // The relay echoes the update once it is stored.
    let _ = tokio::time::timeout(Duration::from_secs(30), rx.next()).await;
    let requests = (0..p.content_requests).map(|_| http_status(http, doc));
    let statuses = futures_util::future::join_all(requests).await;
    let mut counts = std::collections::BTreeMap::new();
    for status in statuses {
        *counts
            .entry(status.unwrap_or_else(|e| format!("{e:#}")))
            .or_insert(0) += 1;
    }
    Ok(format!(
        "{} entries, {} requests at once: {counts:?}",
        p.content_entries, p.content_requests
    ))
}

async fn large_update(target: &Target, p: &HostileParams) -> anyhow::Result<String> {
    let doc = "hostile-update";
    let session = Session::open(target, doc, None).await?;
    let update = map_update(p.update_entries);
    let frame = session.frame(&encode_sync_update(&update));
    let (mut tx, mut rx) = session.split();
    tx.send(frame).await?;
    let end = closed_with(&mut rx).await;
    Ok(format!(
        "{} entries in {} KiB: {end}",
        p.update_entries,
        update.len() >> 10
    ))
}

/// How the server ended the connection, or that it echoed and kept it open.
async fn closed_with(rx: &mut crate::client::Receiver) -> String {
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(frame) = rx.next().await {
            match frame {
                Ok(Frame::Close(close)) => return format!("closed: {close:?}"),
                Ok(_) => {}
                Err(e) => return format!("connection error: {e}"),
            }
        }
        "ended without a close frame".to_owned()
    });
    waited
        .await
        .unwrap_or_else(|_| "kept open (30 s)".to_owned())
}

/// A v1 update of `bytes` of new text from client `client`.
fn text_update(client: u64, bytes: usize) -> Vec<u8> {
    let doc = Doc::with_client_id(client);
    let text = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    text.insert(&mut txn, 0, &"y".repeat(bytes));
    txn.encode_update_v1()
}

/// A v1 update setting `entries` small map entries.
fn map_update(entries: usize) -> Vec<u8> {
    let doc = Doc::with_client_id(7);
    let map = doc.get_or_insert_map("m");
    {
        let mut txn = doc.transact_mut();
        for i in 0..entries {
            map.insert(&mut txn, format!("k{i}"), i as i64);
        }
    }
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

/// The status line's code of `GET /api/v1/docs/DOC/content`, reading the whole answer.
async fn http_status(addr: SocketAddr, doc: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "GET /api/v1/docs/{doc}/content HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), stream.read_to_end(&mut response)).await??;
    let head = String::from_utf8_lossy(&response[..response.len().min(12)]).into_owned();
    Ok(head.get(9..12).unwrap_or("???").to_owned())
}
