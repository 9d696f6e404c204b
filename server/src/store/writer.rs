//! The single store writer: every write in the relay goes through this one task, which
//! drains whatever has queued up and commits it in one redb transaction (group commit).
//!
//! In [`WriteMode::Durable`] every commit is fsync'd (`Durability::Immediate`) before its
//! waiters are told. In [`WriteMode::Relaxed`] writes nobody waits for are committed with
//! `Durability::None` (in the file, not yet fsync'd) and an fsync'd commit follows within the
//! flush interval, so the bound on loss after a crash is that interval plus one fsync.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use aetherflow_crdt::DocName;
use redb::{Durability, ReadableTable};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};

use crate::metrics::Metrics;
use tracing::{debug, error};

use aetherflow_crdt::register::{Command, Outcome};
use aetherflow_crdt::webhook::EventKind;

use super::Store;
use super::documents::Tables;
use super::outbox::{Outbox, OutboxOp, ResolveOf};
use crate::storage::{DocumentMeta, RegisterFailure, StoreError};

/// Most requests folded into one commit; bounds the size of one transaction.
const MAX_REQUESTS_PER_COMMIT: usize = 4096;
/// Requests that may queue before senders wait (backpressure).
const QUEUE_CAPACITY: usize = 8192;

/// How commits reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Every commit is fsync'd.
    Durable,
    /// Commits nobody waits for are fsync'd within `flush`.
    Relaxed {
        /// The longest a commit stays un-fsync'd.
        flush: Duration,
    },
}

/// One change to the store.
#[derive(Debug)]
pub enum WriteOp {
    /// Append a v1 update to a document's log.
    Append {
        /// The document.
        doc: DocName,
        /// The update, as it will be replayed on load.
        update: Vec<u8>,
        /// Who made it (token subjects), for webhooks' `document.changed`.
        authors: Vec<String>,
    },
    /// Replace a document's snapshot, covering its whole log: the snapshot holds everything
    /// the log held, and loads read only later entries (the log stays, as history). Sent by
    /// the document's room, after its appends, so the order in this queue guarantees that
    /// every covered entry is in the snapshot.
    Compact {
        /// The document.
        doc: DocName,
        /// The document's full state as one v1 update.
        snapshot: Vec<u8>,
    },
    /// Create a document of a given kind, unless one of that name exists.
    CreateDocument {
        /// The document.
        doc: DocName,
        /// Its kind and creation time.
        meta: DocumentMeta,
    },
    /// Apply a command to a register document (read, change and write in one transaction).
    Register {
        /// The document.
        doc: DocName,
        /// The change.
        command: Command,
    },
    /// Remove a document entirely: snapshot, log, metadata, register and its conflicts.
    DeleteDocument {
        /// The document.
        doc: DocName,
    },
    /// Change the webhook endpoints or the outbox (see [`super::outbox`]).
    Webhook(OutboxOp),
    /// Set (`Some`) or remove (`None`) the label of a document's log entry; answers
    /// [`WriteResult::Found`].
    Label {
        /// The document.
        doc: DocName,
        /// The entry (a version's id).
        seq: u64,
        /// The label.
        label: Option<String>,
    },
    /// Thin a document's history by merges planned from a read ([`Store::thin_plan`]);
    /// answers [`WriteResult::Thinned`].
    Thin {
        /// The document.
        doc: DocName,
        /// The merges.
        merges: Vec<super::thinning::PlannedMerge>,
    },
}

/// What one committed write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteResult {
    /// Appended, compacted or flushed.
    Done,
    /// The document was created.
    Created(DocumentMeta),
    /// A document of that name already exists; nothing changed.
    Exists(DocumentMeta),
    /// A register command's outcome; only applied outcomes changed anything.
    Register(Result<Outcome, RegisterFailure>),
    /// A deletion: whether the document existed.
    Deleted(bool),
    /// A webhook change or a label: whether the endpoint, outbox row, entry or label it
    /// named was there.
    Found(bool),
    /// Thinning: how many versions it dropped.
    Thinned(usize),
}

type Waiter = oneshot::Sender<Result<WriteResult, StoreError>>;

struct Request {
    op: Option<WriteOp>,
    done: Option<Waiter>,
}

/// Handle for sending writes to the writer task; cheap to clone. The task ends once every
/// handle is dropped, after a final fsync'd commit.
#[derive(Clone)]
pub struct StoreWriter {
    tx: mpsc::Sender<Request>,
}

impl StoreWriter {
    /// Starts the writer task.
    pub fn spawn(store: Store, mode: WriteMode) -> (StoreWriter, JoinHandle<()>) {
        StoreWriter::spawn_with_metrics(store, mode, Metrics::new())
    }

    /// Starts the writer task, recording commit latency and batch sizes in `metrics`.
    pub fn spawn_with_metrics(
        store: Store,
        mode: WriteMode,
        metrics: Metrics,
    ) -> (StoreWriter, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let task = tokio::spawn(run(store, mode, rx, metrics));
        (StoreWriter { tx }, task)
    }

    /// Queues `op` and waits until it is committed and fsync'd; returns what it did.
    pub async fn commit(&self, op: WriteOp) -> Result<WriteResult, StoreError> {
        self.request(Some(op)).await
    }

    /// Queues `op` and returns at once with a [`Queued`] that resolves when the op is
    /// committed and fsync'd. Waits only for room in the queue. Ops are committed in the
    /// order they are queued, so a room can keep several batches in flight and still
    /// broadcast each one only after its own commit.
    pub async fn enqueue(&self, op: WriteOp) -> Result<Queued, StoreError> {
        let (done, wait) = oneshot::channel();
        let request = Request {
            op: Some(op),
            done: Some(done),
        };
        self.tx
            .send(request)
            .await
            .map_err(|_| StoreError::WriterGone)?;
        Ok(Queued { wait })
    }

    /// Queues `op` without waiting for the commit (relaxed durability). Waits only for room
    /// in the queue.
    pub async fn submit(&self, op: WriteOp) -> Result<(), StoreError> {
        let request = Request {
            op: Some(op),
            done: None,
        };
        self.tx
            .send(request)
            .await
            .map_err(|_| StoreError::WriterGone)
    }

    /// Waits until everything queued before this call is committed and fsync'd.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.request(None).await.map(|_| ())
    }

    async fn request(&self, op: Option<WriteOp>) -> Result<WriteResult, StoreError> {
        let (done, wait) = oneshot::channel();
        let request = Request {
            op,
            done: Some(done),
        };
        self.tx
            .send(request)
            .await
            .map_err(|_| StoreError::WriterGone)?;
        wait.await.map_err(|_| StoreError::WriterGone)?
    }
}

/// A write queued by [`StoreWriter::enqueue`]; resolves to what it did once it is committed
/// and fsync'd, or to the error that stopped it.
#[derive(Debug)]
pub struct Queued {
    wait: oneshot::Receiver<Result<WriteResult, StoreError>>,
}

impl Future for Queued {
    type Output = Result<WriteResult, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.wait)
            .poll(cx)
            .map(|answer| answer.unwrap_or(Err(StoreError::WriterGone)))
    }
}

/// Next sequence number per document, so an append does not look up the log's tail.
type SeqCache = HashMap<DocName, u64>;

async fn run(store: Store, mode: WriteMode, mut rx: mpsc::Receiver<Request>, metrics: Metrics) {
    let mut seqs = SeqCache::new();
    // Set while commits made with `Durability::None` await an fsync'd commit.
    let mut unsynced_since: Option<Instant> = None;
    loop {
        let first = match (mode, unsynced_since) {
            (WriteMode::Relaxed { flush }, Some(since)) => {
                match timeout_at(since + flush, rx.recv()).await {
                    Ok(Some(request)) => Some(request),
                    Ok(None) => break,
                    Err(_elapsed) => None,
                }
            }
            // While the storage fails, try to recover at least once a second, so that
            // readiness turns green again without waiting for a client's write.
            _ if !store.is_writable() => {
                match timeout_at(Instant::now() + RECOVERY_INTERVAL, rx.recv()).await {
                    Ok(Some(request)) => Some(request),
                    Ok(None) => break,
                    Err(_elapsed) => {
                        recover(&store).await;
                        continue;
                    }
                }
            }
            _ => match rx.recv().await {
                Some(request) => Some(request),
                None => break,
            },
        };
        if !store.is_writable() {
            // A failed commit poisoned the database: reopen it before trying again. The probe
            // that ends the failure runs on the timer above, not once per batch.
            reopen(&store).await;
        }
        let mut batch: Vec<Request> = first.into_iter().collect();
        while batch.len() < MAX_REQUESTS_PER_COMMIT {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let sync = match mode {
            WriteMode::Durable => true,
            WriteMode::Relaxed { flush } => {
                batch.iter().any(|r| r.done.is_some())
                    || unsynced_since.is_some_and(|since| since.elapsed() >= flush)
            }
        };
        let (ops, waiters): (Vec<_>, Vec<_>) = batch.into_iter().map(|r| (r.op, r.done)).unzip();
        let count = ops.len();
        let appends = ops
            .iter()
            .filter(|op| matches!(op, Some(WriteOp::Append { .. })))
            .count();
        let started = Instant::now();
        let result;
        (seqs, result) = commit_blocking(store.clone(), ops, sync, seqs).await;
        match &result {
            Ok(_) => {
                store.committed();
                metrics.committed(appends, started.elapsed());
            }
            Err(e) if e.is_io() => {
                metrics.storage_failed();
                store.commit_failed();
            }
            Err(_) => {}
        }
        match &result {
            Ok(_) if sync => unsynced_since = None,
            Ok(_) => {
                unsynced_since.get_or_insert_with(Instant::now);
            }
            Err(e) => error!(error = %e, ops = count, "store commit failed"),
        }
        debug!(ops = count, sync, "store commit");
        if !store.is_writable() {
            // Reopen at once, so that reads work again while the storage is full.
            reopen(&store).await;
        }
        match result {
            Ok(results) => {
                for (waiter, result) in waiters.into_iter().zip(results) {
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(Ok(result));
                    }
                }
            }
            Err(e) => {
                for waiter in waiters.into_iter().flatten() {
                    let _ = waiter.send(Err(e.duplicate()));
                }
            }
        }
    }
    if unsynced_since.is_some() {
        let (_, result) = commit_blocking(store, Vec::new(), true, seqs).await;
        if let Err(e) = result {
            error!(error = %e, "final store flush failed");
        }
    }
}

/// How often a failing storage is retried while no write comes.
const RECOVERY_INTERVAL: Duration = Duration::from_secs(1);

/// Reopens the database after an I/O error and probes it (see [`Store::recover`]).
async fn recover(store: &Store) {
    let store = store.clone();
    let outcome = tokio::task::spawn_blocking(move || store.recover()).await;
    match outcome {
        Ok(Ok(())) => tracing::info!("storage writable again"),
        Ok(Err(e)) => debug!(error = %e, "storage still failing"),
        Err(e) => error!(error = %e, "storage recovery panicked"),
    }
}

/// Reopens the database if a failed commit poisoned it (see [`Store::reopen_if_poisoned`]).
async fn reopen(store: &Store) {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || store.reopen_if_poisoned()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(error = %e, "database not reopened yet"),
        Err(e) => error!(error = %e, "reopening the database panicked"),
    }
}

/// One result per request, in order: a flush (no op) is `Done`.
type Results = Result<Vec<WriteResult>, StoreError>;

async fn commit_blocking(
    store: Store,
    ops: Vec<Option<WriteOp>>,
    sync: bool,
    mut seqs: SeqCache,
) -> (SeqCache, Results) {
    let joined = tokio::task::spawn_blocking(move || {
        let result = store.contained(|| apply(&store, ops, sync, &mut seqs));
        if result.is_err() {
            // The cache may be ahead of what was committed; rebuild it from the tables.
            seqs.clear();
        }
        (seqs, result)
    })
    .await;
    match joined {
        Ok(out) => out,
        Err(e) => (
            SeqCache::new(),
            Err(StoreError::Unreadable(format!(
                "store writer task failed: {e}"
            ))),
        ),
    }
}

fn apply(store: &Store, ops: Vec<Option<WriteOp>>, sync: bool, seqs: &mut SeqCache) -> Results {
    let mut txn = store.database()?.begin_write()?;
    let durability = if sync {
        Durability::Immediate
    } else {
        Durability::None
    };
    txn.set_durability(durability)
        .map_err(|e| StoreError::Engine(Arc::new(redb::Error::from(e))))?;
    let mut results = Vec::with_capacity(ops.len());
    let woken;
    let endpoints;
    {
        let mut tables = Tables::open(&txn)?;
        // Events are recorded in this same transaction: they commit with their change or
        // not at all. With no endpoint there is nothing to record, and the outbox's tables
        // stay closed (opening them costs every commit; issue 16's ingest bisect).
        let needs_outbox = store.may_have_webhook_endpoints()
            || ops.iter().any(|op| matches!(op, Some(WriteOp::Webhook(_))));
        let mut outbox = match needs_outbox {
            true => Some(Outbox::open(&txn)?),
            false => None,
        };
        for op in ops {
            results.push(apply_one(&txn, &mut tables, outbox.as_mut(), op, seqs)?);
        }
        woken = outbox.as_ref().is_some_and(|o| o.woken);
        endpoints = outbox.as_ref().map(Outbox::has_endpoints);
    }
    txn.commit()?;
    if let Some(any) = endpoints {
        store.set_webhook_endpoints(any);
    }
    if woken {
        store.wake_webhooks();
    }
    Ok(results)
}

fn apply_one(
    txn: &redb::WriteTransaction,
    tables: &mut Tables<'_>,
    outbox: Option<&mut Outbox<'_>>,
    op: Option<WriteOp>,
    seqs: &mut SeqCache,
) -> Result<WriteResult, StoreError> {
    let now = crate::wall_clock::now_ms();
    Ok(match op {
        None => WriteResult::Done,
        Some(WriteOp::Append {
            doc,
            update,
            authors,
        }) => {
            let seq = match seqs.get(&doc) {
                Some(&seq) => seq,
                None => next_seq(txn, &tables.log, &doc)?,
            };
            tables.append(&doc, seq, &update)?;
            tables.record(&doc, seq, now, update.len(), &authors)?;
            tables.touch(&doc, now)?;
            if let Some(outbox) = outbox {
                outbox.changed(doc.as_str(), &authors, now)?;
            }
            seqs.insert(doc, seq + 1);
            WriteResult::Done
        }
        Some(WriteOp::Compact { doc, snapshot }) => {
            let next = match seqs.get(&doc) {
                Some(&seq) => seq,
                None => next_seq(txn, &tables.log, &doc)?,
            };
            super::history::compact(txn, tables, &doc, next, &snapshot)?;
            WriteResult::Done
        }
        Some(WriteOp::Label { doc, seq, label }) => WriteResult::Found(super::history::label(
            txn,
            tables,
            &doc,
            seq,
            label.as_deref(),
        )?),
        Some(WriteOp::Thin { doc, merges }) => {
            WriteResult::Thinned(super::thinning::thin(txn, tables, &doc, &merges)?)
        }
        Some(WriteOp::CreateDocument { doc, meta }) => {
            let result = tables.create(&doc, meta)?;
            if let (WriteResult::Created(meta), Some(outbox)) = (&result, outbox) {
                let data = serde_json::json!({ "kind": meta.kind });
                outbox.record(doc.as_str(), EventKind::DocumentCreated, &data, now)?;
            }
            result
        }
        Some(WriteOp::Register { doc, command }) => {
            let resolving = ResolveOf::of(&command);
            let result = tables.apply_command(&doc, command)?;
            if let (Ok(outcome), Some(outbox)) = (&result, outbox) {
                outbox.register_changed(doc.as_str(), &resolving, outcome, now)?;
            }
            WriteResult::Register(result)
        }
        Some(WriteOp::DeleteDocument { doc }) => {
            // The log restarts at 0 for a document of this name made later.
            seqs.remove(&doc);
            let existed = tables.delete(&doc)?;
            super::history::delete(txn, &doc)?;
            if let (true, Some(outbox)) = (existed, outbox) {
                outbox.deleted(doc.as_str(), now)?;
            }
            WriteResult::Deleted(existed)
        }
        Some(WriteOp::Webhook(op)) => {
            let Some(outbox) = outbox else {
                return Err(StoreError::Unreadable(
                    "the outbox is opened for every webhook change".into(),
                ));
            };
            WriteResult::Found(outbox.apply(op, now)?)
        }
    })
}

/// The next sequence number of `doc`: past its last entry and past what its snapshot
/// covers, so numbers never restart while the document exists.
fn next_seq(
    txn: &redb::WriteTransaction,
    log: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    doc: &DocName,
) -> Result<u64, StoreError> {
    let name = doc.as_str();
    let last = log
        .range((name, 0)..=(name, u64::MAX))?
        .next_back()
        .transpose()?;
    let after_log = last.map_or(0, |(key, _)| key.value().1 + 1);
    let covered =
        super::history::snapshot_next(&txn.open_table(super::history::SNAPSHOT_NEXT)?, name)?;
    Ok(after_log.max(covered))
}
