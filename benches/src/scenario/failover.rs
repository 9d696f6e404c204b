//! Failover storm: synced clients over many non-empty documents, alternately on instance A and
//! instance B of one cluster; every document gets one update through A, which a client on B
//! sees; then A is killed with SIGKILL and every client it held reconnects to B at once.
//!
//! The displaced clients reconnect as fresh clients holding nothing, so nothing they could send
//! again hides a loss: what they receive in B's sync step 2 is what the survivor has. Measures
//! the time from the kill until the last displaced client has synced on B, and how many of the
//! updates seen on B before the kill that state lacks. Reconnecting at once, with no back-off,
//! is the worst case for the survivor; real clients spread out over their back-off.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use aetherflow_crdt::protocol::{SyncMessage, encode_sync_update};
use anyhow::Context;
use futures_util::StreamExt;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message as Frame;
use yrs::updates::decoder::Decode;
use yrs::{ClientID, Doc, ReadTxn, StateVector, Text, Transact, Update};

use super::open_many;
use crate::client::{Receiver, Session, Target};
use crate::wire::{Dialect, Incoming};

/// The yrs client id of document `d`'s update through A is this plus `d`: far above any id
/// id a load-generator replica picks at random is likely to hit.
const SEED_CLIENT_BASE: u64 = 1 << 40;

/// Shape of the storm.
#[derive(Debug, Clone)]
pub struct FailoverParams {
    /// Connections in all, half on each instance.
    pub connections: usize,
    /// Documents they spread over (each has connections on both instances when
    /// `connections >= 2 * docs`).
    pub docs: usize,
    /// Characters each document's update through A inserts.
    pub seed_chars: usize,
    /// Process id of instance A, killed with SIGKILL.
    pub victim_pid: u32,
    /// How long a client on B may take to see its document's update through A.
    pub seen_timeout: Duration,
    /// Concurrent handshakes while connecting and reconnecting.
    pub concurrency: usize,
    /// Loopback source addresses to spread connections over.
    pub sources: Vec<IpAddr>,
}

/// What a failover run measured.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverReport {
    /// Connections asked for.
    pub connections: usize,
    /// Documents.
    pub docs: usize,
    /// Connections that failed to open or sync before the kill.
    pub failed_connections: usize,
    /// Documents whose update through A a client on B saw before the kill.
    pub seen_before_kill: usize,
    /// Clients on A when it was killed.
    pub displaced: usize,
    /// Displaced clients synced again on B.
    pub resynced: usize,
    /// Displaced clients that could not sync on B.
    pub failed_reconnects: usize,
    /// Seconds from the kill until the last displaced client synced on B.
    pub kill_to_all_synced_s: f64,
    /// Updates seen on B before the kill that a displaced client's state from B lacks
    /// (counted once per document).
    pub updates_lost: usize,
    /// First connection, update or reconnection error, if any.
    pub first_error: Option<String>,
}

/// Runs the storm: clients on `a` (killed) and `b` (the survivor).
pub async fn run(a: &Target, b: &Target, p: &FailoverParams) -> anyhow::Result<FailoverReport> {
    let docs: Vec<String> = (0..p.docs.max(1))
        .map(|d| format!("failover-{d}"))
        .collect();
    // Connection pair k holds document k % docs, one end on each instance.
    let pairs = p.connections / 2;
    let pair_docs: Vec<String> = (0..pairs).map(|k| docs[k % docs.len()].clone()).collect();
    let on_a = open_many(a, &pair_docs, &p.sources, p.concurrency).await;
    let on_b = open_many(b, &pair_docs, &p.sources, p.concurrency).await;
    let mut errors = Vec::new();
    let mut on_a = keep_open(on_a, &mut errors);
    let on_b = keep_open(on_b, &mut errors);
    let failed_connections = 2 * pairs - on_a.len() - on_b.len();

    // B's clients stay connected through the storm: the survivor carries them too.
    let (seen, _on_b) = seed_through_a(&mut on_a, on_b, docs.len(), p, &mut errors).await;
    let displaced: Vec<String> = on_a.iter().map(|s| s.doc.clone()).collect();

    let killed = Instant::now();
    kill(p.victim_pid)?;
    drop(on_a);
    let states = reconnect_all(b, &displaced, p).await;
    let kill_to_all_synced_s = killed.elapsed().as_secs_f64();

    let mut lost_docs = vec![false; docs.len()];
    let mut resynced = 0;
    for (doc, state) in displaced.iter().zip(states) {
        match state {
            Ok(state) => {
                resynced += 1;
                let d = doc_index(doc);
                if seen[d] && !holds_seed(&state, d, p.seed_chars) {
                    lost_docs[d] = true;
                }
            }
            Err(e) => errors.push(e),
        }
    }
    Ok(FailoverReport {
        connections: p.connections,
        docs: docs.len(),
        failed_connections,
        seen_before_kill: seen.iter().filter(|&&s| s).count(),
        displaced: displaced.len(),
        resynced,
        failed_reconnects: displaced.len() - resynced,
        kill_to_all_synced_s,
        updates_lost: lost_docs.iter().filter(|&&l| l).count(),
        first_error: errors.first().cloned(),
    })
}

/// The sessions that opened; the errors of the others go to `errors`.
fn keep_open(opened: Vec<Result<Session, String>>, errors: &mut Vec<String>) -> Vec<Session> {
    opened
        .into_iter()
        .filter_map(|s| s.map_err(|e| errors.push(e)).ok())
        .collect()
}

/// The index `d` of document `failover-{d}`.
fn doc_index(doc: &str) -> usize {
    doc.rsplit('-')
        .next()
        .and_then(|d| d.parse().ok())
        .expect("documents are named failover-{index} by this module")
}

/// Sends each document's update through its first client on A and waits until a client on B
/// sees it; returns, per document, whether one did, and B's connections, still open.
async fn seed_through_a(
    on_a: &mut [Session],
    on_b: Vec<Session>,
    docs: usize,
    p: &FailoverParams,
    errors: &mut Vec<String>,
) -> (Vec<bool>, Vec<OpenHalf>) {
    let deadline = tokio::time::Instant::now() + p.seen_timeout;
    let mut watched = vec![false; docs];
    let mut kept = Vec::with_capacity(on_b.len());
    let mut watchers = Vec::new();
    for session in on_b {
        let d = doc_index(&session.doc);
        if std::mem::replace(&mut watched[d], true) {
            kept.push(OpenHalf::Whole(Box::new(session)));
            continue;
        }
        let dialect = session.dialect;
        let (tx, rx) = session.split();
        kept.push(OpenHalf::Sender(tx));
        let seed_chars = p.seed_chars;
        watchers.push((
            d,
            tokio::spawn(watch_for_seed(rx, dialect, d, seed_chars, deadline)),
        ));
    }
    let mut seeded = vec![false; docs];
    for session in on_a.iter_mut() {
        let d = doc_index(&session.doc);
        if std::mem::replace(&mut seeded[d], true) {
            continue;
        }
        if let Err(e) = session.send_message(&seed_update(d, p.seed_chars)).await {
            errors.push(format!("update through A on {}: {e:#}", session.doc));
        }
    }
    let mut seen = vec![false; docs];
    for (d, task) in watchers {
        if let Ok((was_seen, rx)) = task.await {
            seen[d] = was_seen;
            kept.push(OpenHalf::Receiver(rx));
        }
    }
    (seen, kept)
}

/// A connection to B held open until the end of the run, whole or as the halves a watcher
/// split it into.
#[allow(dead_code)] // held for its open socket, never read
enum OpenHalf {
    Whole(Box<Session>),
    Sender(crate::client::Sender),
    Receiver(Receiver),
}

/// Document `d`'s update through A: `chars` characters from client `SEED_CLIENT_BASE + d`.
fn seed_update(d: usize, chars: usize) -> Vec<u8> {
    let doc = Doc::with_client_id(SEED_CLIENT_BASE + d as u64);
    let text = doc.get_or_insert_text("text");
    let mut txn = doc.transact_mut();
    text.insert(&mut txn, 0, &"s".repeat(chars));
    encode_sync_update(&txn.encode_update_v1())
}

/// Reads until the updates received hold document `d`'s update through A (true) or the
/// deadline passes or the connection ends (false); hands the receiver back, still open.
async fn watch_for_seed(
    mut rx: Receiver,
    dialect: Dialect,
    d: usize,
    seed_chars: usize,
    deadline: tokio::time::Instant,
) -> (bool, Receiver) {
    let replica = Doc::new();
    loop {
        let bytes = match tokio::time::timeout_at(deadline, rx.next()).await {
            Ok(Some(Ok(Frame::Binary(bytes)))) => bytes,
            Ok(Some(Ok(_))) => continue,
            Err(_) | Ok(None | Some(Err(_))) => return (false, rx),
        };
        if let Ok(Incoming::Sync(SyncMessage::Update(u) | SyncMessage::Step2(u))) =
            dialect.decode(&bytes)
            && let Ok(update) = Update::decode_v1(&u)
            && replica.transact_mut().apply_update(update).is_ok()
            && covers_seed(&replica.transact().state_vector(), d, seed_chars)
        {
            return (true, rx);
        }
    }
}

/// Whether state `update` (a v1 update) holds document `d`'s update through A.
fn holds_seed(update: &[u8], d: usize, seed_chars: usize) -> bool {
    let replica = Doc::new();
    let applied = Update::decode_v1(update)
        .ok()
        .is_some_and(|u| replica.transact_mut().apply_update(u).is_ok());
    applied && covers_seed(&replica.transact().state_vector(), d, seed_chars)
}

/// Whether `sv` covers all of document `d`'s update through A.
fn covers_seed(sv: &StateVector, d: usize, seed_chars: usize) -> bool {
    let client = ClientID::new(SEED_CLIENT_BASE + d as u64);
    u64::from(sv.get(&client)) >= seed_chars as u64
}

/// Sends SIGKILL to `pid`.
fn kill(pid: u32) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .context("run kill")?;
    anyhow::ensure!(status.success(), "kill -KILL {pid} failed");
    Ok(())
}

/// Reconnects every displaced client to `b` as a fresh client, `concurrency` handshakes at a
/// time; each result is the state B sent, or the error.
async fn reconnect_all(
    b: &Target,
    docs: &[String],
    p: &FailoverParams,
) -> Vec<Result<Vec<u8>, String>> {
    futures_util::stream::iter(docs.iter().enumerate())
        .map(|(i, doc)| {
            let source = (!p.sources.is_empty()).then(|| p.sources[i % p.sources.len()]);
            async move {
                Session::open_with_state(b, doc, source)
                    .await
                    .map(|(_, state)| state)
                    .map_err(|e| format!("reconnect {doc}: {e:#}"))
            }
        })
        .buffered(p.concurrency.max(1))
        .collect()
        .await
}
