//! The local database: every document's state and its pending (unacknowledged) local updates,
//! in one redb file, so edits survive a restart while the relay is out of reach.
//!
//! Tables:
//! - `snapshots`: document → a v1 update holding the state folded so far;
//! - `log`: (document, seq) → v1 updates applied after the snapshot (local and remote);
//! - `pending`: (document, local seq) → local v1 updates the relay has not acknowledged;
//! - `register_state`: register document → the relay's last known state (JSON), so a register
//!   opened offline knows its kind and value;
//! - `register_pending`: (register document, local seq) → register commands (JSON) the relay
//!   has not answered yet, sent again on every connection;
//! - `meta`: `client_id` → this client's id, the writer id of its LWW writes.
//!
//! Writes go through one writer thread that batches whatever is queued into one fsync'd
//! transaction. It is a plain thread, not a tokio task, so queued writes still reach the disk
//! when the runtime shuts down before the client is closed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tracing::error;

use crate::error::ClientError;

const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
const LOG: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("log");
const PENDING: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("pending");
const REGISTER_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("register_state");
const REGISTER_PENDING: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("register_pending");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// A document's log is folded into its snapshot once it holds this many entries, so opening a
/// document costs its size, not its history.
const COMPACT_AFTER: u64 = 256;

/// What the database holds of one document.
#[derive(Debug, Default)]
pub struct StoredDoc {
    /// The folded state, if the log was ever compacted.
    pub snapshot: Option<Vec<u8>>,
    /// Updates after the snapshot, oldest first.
    pub log: Vec<Vec<u8>>,
    /// Pending local updates by local sequence number.
    pub pending: BTreeMap<u64, Vec<u8>>,
}

/// A request to the writer thread.
pub enum WriteOp {
    /// Append an applied update to the log; `pending` also records it as unacknowledged.
    Record {
        /// The document.
        doc: String,
        /// The v1 update.
        update: Vec<u8>,
        /// The local sequence number, for local updates.
        pending: Option<u64>,
    },
    /// The relay has every pending update up to and including `upto`.
    Ack {
        /// The document.
        doc: String,
        /// Highest acknowledged local sequence number.
        upto: u64,
    },
    /// A register command the relay has not answered yet (JSON of a register `Command`).
    RegisterCommand {
        /// The register document.
        doc: String,
        /// Its local sequence number.
        seq: u64,
        /// The command as JSON.
        command: Vec<u8>,
    },
    /// The relay answered register command `seq` (or refused it for good).
    RegisterDone {
        /// The register document.
        doc: String,
        /// The command's local sequence number.
        seq: u64,
    },
    /// The relay's latest known state of a register document (JSON).
    RegisterState {
        /// The register document.
        doc: String,
        /// The state as JSON.
        state: Vec<u8>,
    },
    /// Reply once everything queued before is committed.
    Flush(tokio::sync::oneshot::Sender<Result<(), String>>),
    /// Commit what is queued before, then stop (the client is closing).
    Stop,
}

/// What the database holds of one register document.
#[derive(Debug, Default)]
pub struct StoredRegister {
    /// The relay's last known state, as JSON.
    pub state: Option<Vec<u8>>,
    /// Unanswered commands by local sequence number, as JSON.
    pub pending: BTreeMap<u64, Vec<u8>>,
}

/// Reads documents from the local database; cheap to clone.
#[derive(Clone)]
pub struct StoreReader(Arc<Database>);

impl StoreReader {
    /// Reads a document. Blocking.
    pub fn load(&self, doc: &str) -> Result<StoredDoc, ClientError> {
        let txn = self.0.begin_read().map_err(store_error)?;
        let snapshot = txn
            .open_table(SNAPSHOTS)
            .map_err(store_error)?
            .get(doc)
            .map_err(store_error)?
            .map(|v| v.value().to_vec());
        let mut stored = StoredDoc {
            snapshot,
            ..StoredDoc::default()
        };
        let log = txn.open_table(LOG).map_err(store_error)?;
        for entry in log.range((doc, 0)..=(doc, u64::MAX)).map_err(store_error)? {
            let (_, value) = entry.map_err(store_error)?;
            stored.log.push(value.value().to_vec());
        }
        stored.pending = entries_of(&txn, PENDING, doc)?;
        Ok(stored)
    }

    /// Reads a register document. Blocking.
    pub fn load_register(&self, doc: &str) -> Result<StoredRegister, ClientError> {
        let txn = self.0.begin_read().map_err(store_error)?;
        let state = txn
            .open_table(REGISTER_STATE)
            .map_err(store_error)?
            .get(doc)
            .map_err(store_error)?
            .map(|v| v.value().to_vec());
        let mut stored = StoredRegister {
            state,
            ..StoredRegister::default()
        };
        stored.pending = entries_of(&txn, REGISTER_PENDING, doc)?;
        Ok(stored)
    }
}

/// The entries of `doc` in a table keyed by (document, sequence number), by sequence number.
fn entries_of(
    txn: &redb::ReadTransaction,
    table: TableDefinition<(&str, u64), &[u8]>,
    doc: &str,
) -> Result<BTreeMap<u64, Vec<u8>>, ClientError> {
    let table = txn.open_table(table).map_err(store_error)?;
    let mut entries = BTreeMap::new();
    for entry in table
        .range((doc, 0)..=(doc, u64::MAX))
        .map_err(store_error)?
    {
        let (key, value) = entry.map_err(store_error)?;
        entries.insert(key.value().1, value.value().to_vec());
    }
    Ok(entries)
}

/// Handle on the local database and its writer thread.
pub struct LocalStore {
    db: Arc<Database>,
    writer: mpsc::Sender<WriteOp>,
    thread: Option<JoinHandle<()>>,
    client_id: String,
}

fn store_error(e: impl std::fmt::Display) -> ClientError {
    ClientError::Store(e.to_string())
}

impl LocalStore {
    /// Opens (creating if needed) the database at `path` and starts its writer.
    pub fn open(path: &Path) -> Result<LocalStore, ClientError> {
        let open_error = |reason: String| ClientError::Open {
            path: path.to_owned(),
            reason,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| open_error(e.to_string()))?;
        }
        let db = Database::create(path).map_err(|e| open_error(e.to_string()))?;
        let txn = db.begin_write().map_err(store_error)?;
        txn.open_table(SNAPSHOTS).map_err(store_error)?;
        txn.open_table(LOG).map_err(store_error)?;
        txn.open_table(PENDING).map_err(store_error)?;
        txn.open_table(REGISTER_STATE).map_err(store_error)?;
        txn.open_table(REGISTER_PENDING).map_err(store_error)?;
        let client_id = {
            let mut meta = txn.open_table(META).map_err(store_error)?;
            let stored = meta
                .get("client_id")
                .map_err(store_error)?
                .map(|id| id.value().to_owned());
            match stored {
                Some(id) => id,
                None => {
                    let id = uuid::Uuid::now_v7().to_string();
                    meta.insert("client_id", id.as_str()).map_err(store_error)?;
                    id
                }
            }
        };
        txn.commit().map_err(store_error)?;
        let db = Arc::new(db);
        let (writer, rx) = mpsc::channel();
        let thread_db = db.clone();
        let thread = std::thread::Builder::new()
            .name("aetherflow-client-store".into())
            .spawn(move || write_loop(&thread_db, &rx))
            .map_err(store_error)?;
        Ok(LocalStore {
            db,
            writer,
            thread: Some(thread),
            client_id,
        })
    }

    /// This client's id (a UUIDv7 made when the database was created): the writer id of its
    /// LWW register writes.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// A sender for the writer thread.
    pub fn writer(&self) -> mpsc::Sender<WriteOp> {
        self.writer.clone()
    }

    /// A reader that can be moved to a blocking thread.
    pub fn reader(&self) -> StoreReader {
        StoreReader(self.db.clone())
    }

    /// Stops the writer after it has committed everything queued, and waits for it. Blocking.
    pub fn close(mut self) {
        let _ = self.writer.send(WriteOp::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Receives requests until every sender is gone; each wake-up drains the queue into one commit.
fn write_loop(db: &Database, rx: &mpsc::Receiver<WriteOp>) {
    let mut stopping = false;
    while !stopping && let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        ops.extend(rx.try_iter());
        if let Some(stop) = ops.iter().position(|op| matches!(op, WriteOp::Stop)) {
            // Whatever was queued after the stop arrived too late; only what came before counts.
            ops.truncate(stop);
            stopping = true;
        }
        let mut flushes = Vec::new();
        let result = commit(db, ops, &mut flushes).map_err(|e| e.to_string());
        if let Err(e) = &result {
            error!(error = %e, "local database write failed");
        }
        for flush in flushes {
            let _ = flush.send(result.clone());
        }
    }
}

fn commit(
    db: &Database,
    ops: Vec<WriteOp>,
    flushes: &mut Vec<tokio::sync::oneshot::Sender<Result<(), String>>>,
) -> Result<(), ClientError> {
    let txn = db.begin_write().map_err(store_error)?;
    let mut touched = Vec::new();
    {
        let mut log = txn.open_table(LOG).map_err(store_error)?;
        let mut pending = txn.open_table(PENDING).map_err(store_error)?;
        for op in ops {
            match op {
                WriteOp::Record {
                    doc,
                    update,
                    pending: seq,
                } => {
                    let next = log
                        .range((doc.as_str(), 0)..=(doc.as_str(), u64::MAX))
                        .map_err(store_error)?
                        .next_back()
                        .transpose()
                        .map_err(store_error)?
                        .map_or(0, |(key, _)| key.value().1 + 1);
                    log.insert((doc.as_str(), next), update.as_slice())
                        .map_err(store_error)?;
                    if let Some(seq) = seq {
                        pending
                            .insert((doc.as_str(), seq), update.as_slice())
                            .map_err(store_error)?;
                    }
                    if next + 1 >= COMPACT_AFTER {
                        touched.push(doc);
                    }
                }
                WriteOp::Ack { doc, upto } => {
                    pending
                        .retain_in((doc.as_str(), 0)..=(doc.as_str(), upto), |_, _| false)
                        .map_err(store_error)?;
                }
                WriteOp::RegisterCommand { .. }
                | WriteOp::RegisterDone { .. }
                | WriteOp::RegisterState { .. } => register_op(&txn, op)?,
                WriteOp::Flush(reply) => flushes.push(reply),
                WriteOp::Stop => {}
            }
        }
    }
    touched.dedup();
    for doc in touched {
        compact(&txn, &doc)?;
    }
    txn.commit().map_err(store_error)
}

/// Applies one register write inside `txn`.
fn register_op(txn: &redb::WriteTransaction, op: WriteOp) -> Result<(), ClientError> {
    match op {
        WriteOp::RegisterCommand { doc, seq, command } => {
            let mut pending = txn.open_table(REGISTER_PENDING).map_err(store_error)?;
            pending
                .insert((doc.as_str(), seq), command.as_slice())
                .map_err(store_error)?;
        }
        WriteOp::RegisterDone { doc, seq } => {
            let mut pending = txn.open_table(REGISTER_PENDING).map_err(store_error)?;
            pending.remove((doc.as_str(), seq)).map_err(store_error)?;
        }
        WriteOp::RegisterState { doc, state } => {
            let mut states = txn.open_table(REGISTER_STATE).map_err(store_error)?;
            states
                .insert(doc.as_str(), state.as_slice())
                .map_err(store_error)?;
        }
        _ => {}
    }
    Ok(())
}

/// Folds `doc`'s log into its snapshot inside `txn`.
fn compact(txn: &redb::WriteTransaction, doc: &str) -> Result<(), ClientError> {
    let mut snapshots = txn.open_table(SNAPSHOTS).map_err(store_error)?;
    let mut log = txn.open_table(LOG).map_err(store_error)?;
    let mut updates: Vec<Vec<u8>> = Vec::new();
    if let Some(snapshot) = snapshots.get(doc).map_err(store_error)? {
        updates.push(snapshot.value().to_vec());
    }
    for entry in log.range((doc, 0)..=(doc, u64::MAX)).map_err(store_error)? {
        updates.push(entry.map_err(store_error)?.1.value().to_vec());
    }
    let merged = yrs::merge_updates_v1(&updates).map_err(|e| ClientError::Corrupt {
        doc: doc.to_owned(),
        reason: e.to_string(),
    })?;
    snapshots
        .insert(doc, merged.as_slice())
        .map_err(store_error)?;
    log.retain_in((doc, 0)..=(doc, u64::MAX), |_, _| false)
        .map_err(store_error)?;
    Ok(())
}
