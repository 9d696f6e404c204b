//! Live traffic: writers send small updates at a fixed rate to documents that synced readers
//! follow; measures delivery latency over every (update, reader) pair and missing deliveries.
//! `fanout` is one document with one writer and many readers; `mixed` is many documents with
//! a few writers and readers each.
//!
//! Every writer is a yrs client with its own client id that inserts one character per update,
//! so its n-th update raises its clock to n. A reader applies each update it receives to its
//! own replica and reads the writers' clocks off the replica's state vector: every clock value
//! newly covered is one delivery, whose latency is the time since the writer sent that update.
//! This holds whether the server forwards updates one by one or merges several into one.
//! Writers and readers may be on different relays of a cluster (two targets).

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aetherflow_crdt::protocol::{SyncMessage, encode_sync_update};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message as Frame;
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, Text, Transact, Update};

use super::open_many;
use crate::client::{Receiver, Sender, Target};
use crate::stats::LatencySummary;
use crate::wire::{Dialect, Incoming};

/// Shape of the traffic.
#[derive(Debug, Clone)]
pub struct TrafficParams {
    /// Number of documents.
    pub docs: usize,
    /// Writers per document.
    pub writers_per_doc: usize,
    /// Readers per document.
    pub readers_per_doc: usize,
    /// Updates per second sent by each writer.
    pub rate: f64,
    /// How long writers send.
    pub duration: Duration,
    /// How long readers keep listening after the last update was sent.
    pub grace: Duration,
    /// Concurrent handshakes while connecting.
    pub concurrency: usize,
    /// Loopback source addresses to spread connections over.
    pub sources: Vec<IpAddr>,
}

/// What a traffic run measured.
#[derive(Debug, Clone, Serialize)]
pub struct TrafficReport {
    /// Documents.
    pub docs: usize,
    /// Writers connected.
    pub writers: usize,
    /// Readers connected.
    pub readers: usize,
    /// Connections that failed to open or sync.
    pub failed_connections: usize,
    /// First connection or send error, if any.
    pub first_error: Option<String>,
    /// Updates the writers sent.
    pub updates_sent: u64,
    /// Deliveries due: each update times the readers of its document.
    pub expected_deliveries: u64,
    /// Deliveries observed.
    pub deliveries: u64,
    /// Deliveries due but never observed.
    pub missing: u64,
    /// Seconds the writers sent for.
    pub duration_s: f64,
    /// Deliveries per second over the sending period.
    pub deliveries_per_s: f64,
    /// Delivery latency over all (update, reader) pairs.
    pub latency: LatencySummary,
}

/// When each writer sent each of its updates: `[writer][seq]`.
struct SendTimes {
    per_writer: usize,
    times: Vec<OnceLock<Instant>>,
}

impl SendTimes {
    fn slot(&self, writer: usize, seq: u64) -> Option<&OnceLock<Instant>> {
        let seq = usize::try_from(seq).ok().filter(|&s| s < self.per_writer)?;
        self.times.get(writer * self.per_writer + seq)
    }
}

/// Runs the traffic scenario with writers connected through `writer` and readers through
/// `reader` (the same target on a single server).
pub async fn run(
    writer: &Target,
    reader: &Target,
    p: &TrafficParams,
) -> anyhow::Result<TrafficReport> {
    let doc_names: Vec<String> = (0..p.docs).map(|d| format!("traffic-{d}")).collect();
    let spread = |per_doc: usize| -> Vec<String> {
        doc_names
            .iter()
            .flat_map(|d| std::iter::repeat_n(d.clone(), per_doc))
            .collect()
    };
    let (reader_docs, writer_docs) = (spread(p.readers_per_doc), spread(p.writers_per_doc));
    let readers = open_many(reader, &reader_docs, &p.sources, p.concurrency).await;
    let writers = open_many(writer, &writer_docs, &p.sources, p.concurrency).await;

    let per_writer = (p.rate * p.duration.as_secs_f64()).ceil() as usize + 2;
    let times = Arc::new(SendTimes {
        per_writer,
        times: (0..per_writer * writer_docs.len())
            .map(|_| OnceLock::new())
            .collect(),
    });
    let start = Instant::now() + Duration::from_millis(200);
    let stop_listening = start + p.duration + p.grace;
    let mut errors = Vec::new();
    let (reader_tasks, readers_per_doc) = spawn_readers(
        readers,
        reader.dialect,
        p,
        &times,
        stop_listening,
        &mut errors,
    );
    let writer_tasks = spawn_writers(writers, p, start, &times, &mut errors);
    let (readers, writers) = (reader_tasks.len(), writer_tasks.len());
    let failed_connections = reader_docs.len() + writer_docs.len() - readers - writers;

    let (mut updates_sent, mut expected_deliveries) = (0, 0);
    for (doc, task) in writer_tasks {
        let (sent, error) = task.await?;
        updates_sent += sent;
        expected_deliveries += sent * readers_per_doc[doc];
        errors.extend(error);
    }
    let mut latencies = Vec::new();
    for task in reader_tasks {
        let tally = task.await?;
        latencies.extend(tally.latencies);
        errors.extend(tally.error);
    }
    let deliveries = latencies.len() as u64;
    let duration_s = p.duration.as_secs_f64();
    Ok(TrafficReport {
        docs: p.docs,
        writers,
        readers,
        failed_connections,
        first_error: errors.first().cloned(),
        updates_sent,
        expected_deliveries,
        deliveries,
        missing: expected_deliveries.saturating_sub(deliveries),
        duration_s,
        deliveries_per_s: deliveries as f64 / duration_s,
        latency: LatencySummary::from_micros(&mut latencies),
    })
}

/// A reader's task: what it observed.
type ReaderTask = tokio::task::JoinHandle<Tally>;

/// Starts a listening task for every reader that connected; also returns how many readers
/// each document has.
fn spawn_readers(
    readers: Vec<Result<crate::client::Session, String>>,
    dialect: Dialect,
    p: &TrafficParams,
    times: &Arc<SendTimes>,
    until: Instant,
    errors: &mut Vec<String>,
) -> (Vec<ReaderTask>, Vec<u64>) {
    let mut tasks = Vec::new();
    let mut per_doc = vec![0u64; p.docs];
    for (i, session) in readers.into_iter().enumerate() {
        let doc = i / p.readers_per_doc.max(1);
        match session {
            Ok(session) => {
                per_doc[doc] += 1;
                let (_, rx) = session.split();
                let follow = Follow {
                    dialect,
                    first_writer: doc * p.writers_per_doc,
                    writers: p.writers_per_doc,
                    times: times.clone(),
                };
                tasks.push(tokio::spawn(read_deliveries(rx, follow, until)));
            }
            Err(e) => errors.push(e),
        }
    }
    (tasks, per_doc)
}

/// What one writer does: when to start, how often to send, when to stop.
struct WriterPlan {
    /// Global writer index; the yrs client id is this plus one.
    writer: usize,
    dialect: Dialect,
    doc: String,
    first_tick: Instant,
    period: Duration,
    stop: Instant,
}

/// A writer's task: it returns how many updates it sent and the error that stopped it early.
type WriterTask = tokio::task::JoinHandle<(u64, Option<String>)>;

/// Starts a sending task for every writer that connected; returns `(document, task)` pairs.
fn spawn_writers(
    writers: Vec<Result<crate::client::Session, String>>,
    p: &TrafficParams,
    start: Instant,
    times: &Arc<SendTimes>,
    errors: &mut Vec<String>,
) -> Vec<(usize, WriterTask)> {
    let count = writers.len().max(1);
    let mut tasks = Vec::new();
    for (w, session) in writers.into_iter().enumerate() {
        let session = match session {
            Ok(session) => session,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let (dialect, doc) = (session.dialect, session.doc.clone());
        let (tx, rx) = session.split();
        // Writers start spread over one period, not all on the same tick.
        let offset = Duration::from_secs_f64(w as f64 / count as f64 / p.rate);
        let plan = WriterPlan {
            writer: w,
            dialect,
            doc,
            first_tick: start + offset,
            period: Duration::from_secs_f64(1.0 / p.rate),
            stop: start + p.duration,
        };
        // Servers may echo a writer's own updates; reading them keeps its socket flowing.
        tokio::spawn(drain(rx, start + p.duration + p.grace));
        let task = tokio::spawn(write_updates(tx, plan, times.clone()));
        tasks.push((w / p.writers_per_doc.max(1), task));
    }
    tasks
}

/// Sends one single-character insert per tick until the plan's stop time; returns how many
/// updates were sent and the error that ended sending early, if any.
async fn write_updates(
    mut tx: Sender,
    plan: WriterPlan,
    times: Arc<SendTimes>,
) -> (u64, Option<String>) {
    let doc = Doc::with_client_id(plan.writer as u64 + 1);
    let text = doc.get_or_insert_text("text");
    let mut ticks = tokio::time::interval_at(plan.first_tick, plan.period);
    // A late tick is dropped rather than made up in a burst, so the offered rate stays honest.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut sent = 0u64;
    loop {
        let now = ticks.tick().await;
        if now >= plan.stop {
            break;
        }
        let Some(slot) = times.slot(plan.writer, sent) else {
            break;
        };
        let update = {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, "x");
            txn.encode_update_v1()
        };
        let frame = Frame::Binary(
            plan.dialect
                .frame(&plan.doc, &encode_sync_update(&update))
                .into(),
        );
        let _ = slot.set(Instant::now());
        if let Err(e) = tx.send(frame).await {
            return (sent, Some(format!("writer {}: {e}", plan.writer)));
        }
        sent += 1;
    }
    (sent, None)
}

/// Reads and discards frames until `until`.
async fn drain(mut rx: Receiver, until: Instant) {
    while let Ok(Some(Ok(_))) = tokio::time::timeout_at(until, rx.next()).await {}
}

/// Which writers a reader follows and where their send times are.
struct Follow {
    dialect: Dialect,
    first_writer: usize,
    writers: usize,
    times: Arc<SendTimes>,
}

/// What one reader observed.
struct Tally {
    /// One latency per delivery, in microseconds.
    latencies: Vec<u32>,
    /// The error that ended reading early, if any.
    error: Option<String>,
}

/// Reads until `until`, noting when each frame arrived, then records a latency for every
/// writer clock value newly covered by a received update.
///
/// Decoding and applying wait until reading is over: with a thousand readers in this one
/// process, doing the yrs work on arrival would delay every other reader's next read by it,
/// and the figures would measure the load generator more than the server.
async fn read_deliveries(mut rx: Receiver, follow: Follow, until: Instant) -> Tally {
    let mut arrivals = Vec::new();
    let error = loop {
        let frame = match tokio::time::timeout_at(until, rx.next()).await {
            Err(_) => break None,
            Ok(None) => break Some("reader: server closed the connection".to_owned()),
            Ok(Some(Err(e))) => break Some(format!("reader: {e}")),
            Ok(Some(Ok(frame))) => frame,
        };
        let received = Instant::now();
        if let Frame::Binary(bytes) = frame {
            arrivals.push((received, bytes));
        }
    };
    let mut tally = tally_arrivals(&follow, &arrivals);
    tally.error = tally.error.or(error);
    tally
}

/// Applies the frames a reader received, in arrival order, to a replica; every writer clock
/// value newly covered is one delivery, timed from its send to the arrival of its frame.
fn tally_arrivals(follow: &Follow, arrivals: &[(Instant, bytes::Bytes)]) -> Tally {
    let mut seen = vec![0u64; follow.writers];
    let replica = Doc::new();
    let mut latencies = Vec::new();
    for (received, bytes) in arrivals {
        let update = match follow.dialect.decode(bytes) {
            Ok(Incoming::Sync(SyncMessage::Update(u) | SyncMessage::Step2(u))) => u,
            Ok(_) => continue,
            Err(e) => return tally_error(latencies, format!("reader: {e}")),
        };
        // Applying to a replica (rather than reading clocks off the update) also counts
        // updates the server merged, or delivered out of order, correctly.
        let applied = Update::decode_v1(&update)
            .map_err(|e| e.to_string())
            .and_then(|u| {
                replica
                    .transact_mut()
                    .apply_update(u)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = applied {
            return tally_error(latencies, format!("reader: bad update: {e}"));
        }
        for (client, clock) in replica.transact().state_vector().iter() {
            let Some(w) = (client.get() as usize)
                .checked_sub(follow.first_writer + 1)
                .filter(|&w| w < follow.writers)
            else {
                continue;
            };
            for seq in seen[w]..u64::from(*clock) {
                let sent = follow.times.slot(follow.first_writer + w, seq);
                if let Some(sent) = sent.and_then(OnceLock::get) {
                    let micros = received.saturating_duration_since(*sent).as_micros();
                    latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
                }
            }
            seen[w] = seen[w].max(u64::from(*clock));
        }
    }
    Tally {
        latencies,
        error: None,
    }
}

fn tally_error(latencies: Vec<u32>, error: String) -> Tally {
    Tally {
        latencies,
        error: Some(error),
    }
}
