//! The default storage engine: one embedded redb database, implementing the interfaces of
//! [`crate::storage`] ([`RedbEngine`]).
//!
//! A document is a snapshot (one Yjs v1 update holding its whole state at some point) plus an
//! update log of what came after, keyed by `(document, sequence)`. The log outlives
//! compaction as the document's history ([`history`]): a load reads the snapshot and only the
//! entries it does not cover. Only the [`writer`] task writes; rooms read their document once
//! when they load.

pub mod check;
mod checksum;
pub mod documents;
mod engine;
pub mod history;
#[cfg(test)]
mod history_props;
pub mod outbox;
mod slot;
mod thinning;
pub mod writer;

use std::path::Path;
use std::sync::Arc;

use aetherflow_crdt::DocName;
use redb::{Database, ReadableDatabase, TableDefinition};

use self::slot::Slot;
use crate::metrics::Metrics;
pub use engine::RedbEngine;
pub use writer::{Queued, StoreWriter, WriteMode, WriteOp, WriteResult};

use crate::storage::{Damage, DocStats, DocumentMeta, LogEntry, StoreError, StoredDoc};

/// Snapshot of each document: name → v1 update of its whole state.
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
/// Update log: (name, sequence) → v1 update; the entries from the snapshot's covered number
/// on are those after it (see [`history`]).
const UPDATE_LOG: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("update_log");

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed => {
                StoreError::Io(e.to_string())
            }
            other => StoreError::Engine(Arc::new(other)),
        }
    }
}

macro_rules! redb_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::from(redb::Error::from(e))
            }
        }
    )*};
}
redb_error_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Starts the writer task of `store` and returns the engine seen through the storage
/// interfaces, the writer (for what only this engine keeps: the webhooks' outbox) and the
/// writer task's handle (it ends once every handle is dropped).
pub fn start(
    store: Store,
    mode: WriteMode,
    metrics: Metrics,
) -> (
    crate::storage::Storage,
    StoreWriter,
    tokio::task::JoinHandle<()>,
) {
    let (writer, task) = StoreWriter::spawn_with_metrics(store.clone(), mode, metrics);
    let storage = crate::storage::Storage::with_history(RedbEngine::new(store, writer.clone()));
    (storage, writer, task)
}

/// Handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    slot: Arc<Slot>,
    /// Counts operations that redb failed inside of (see [`Store::contained`]).
    metrics: Metrics,
    /// Successful commits since start: a read that began at one count has seen everything
    /// committed up to it.
    commits: Arc<std::sync::atomic::AtomicU64>,
    /// Woken after a commit that recorded webhook events or made some due.
    webhooks_due: Arc<tokio::sync::Notify>,
    /// Whether webhook endpoints may exist (true until a commit found none): without any,
    /// the writer does not open the outbox's tables at all.
    webhook_endpoints: Arc<std::sync::atomic::AtomicBool>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and its tables.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = open_database(path)?;
        Ok(Store {
            slot: Arc::new(Slot::new(path, db)),
            metrics: Metrics::new(),
            commits: Arc::default(),
            webhooks_due: Arc::default(),
            webhook_endpoints: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        })
    }

    /// The same store, counting contained failures in `metrics`.
    pub fn with_metrics(self, metrics: Metrics) -> Store {
        Store { metrics, ..self }
    }

    /// Runs `operation`, turning a panic inside redb into [`StoreError::Unreadable`]: redb
    /// indexes slices by offsets read from the file, so some damaged pages make it panic
    /// instead of returning an error. The panic ends this operation only; it is counted and
    /// logged, and the database stays open for every other document.
    pub(crate) fn contained<T>(
        &self,
        operation: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // Unwind safety: nothing of this operation outlives it except redb's own state,
        // which a reading transaction does not change, and a failed write rolls back.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(operation)).unwrap_or_else(|panic| {
            let why = panic_message(panic.as_ref());
            self.metrics.storage_engine_failed();
            tracing::error!(error = %why, "redb failed inside (damaged pages?); contained");
            Err(StoreError::Unreadable(why))
        })
    }

    /// The open database; an [`StoreError::Io`] while it is closed for reopening.
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.slot.get()
    }

    /// Whether the last write (or recovery probe) succeeded: `false` while the disk is full
    /// or failing. Readiness reports it.
    pub fn is_writable(&self) -> bool {
        self.slot.is_writable()
    }

    /// Follows [`Store::is_writable`].
    pub fn writable(&self) -> tokio::sync::watch::Receiver<bool> {
        self.slot.watch()
    }

    /// Reads a document's snapshot and log. Blocking: call from a blocking context.
    ///
    /// Every snapshot and log entry is checked against its checksum: a damaged document is
    /// refused with [`StoreError::Damaged`].
    pub fn load(&self, doc: &DocName) -> Result<StoredDoc, StoreError> {
        self.contained(|| self.load_uncontained(doc))
    }

    fn load_uncontained(&self, doc: &DocName) -> Result<StoredDoc, StoreError> {
        let damaged = |damage| StoreError::Damaged {
            doc: doc.to_string(),
            damage,
        };
        let name = doc.as_str();
        let txn = self.db()?.begin_read()?;
        let snapshots = txn.open_table(SNAPSHOTS)?;
        let snapshot = snapshots.get(name)?.map(|v| v.value().to_vec());
        if let Some(bytes) = &snapshot {
            let stored = match txn.open_table(checksum::SNAPSHOT_SUMS) {
                Ok(sums) => sums.get(name)?.map(|v| v.value()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(e.into()),
            };
            checksum::verify(stored, bytes, Damage::Snapshot).map_err(damaged)?;
        }
        let log_table = txn.open_table(UPDATE_LOG)?;
        let sums = match txn.open_table(checksum::LOG_SUMS) {
            Ok(sums) => Some(sums),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let covered = history::snapshot_next(&txn.open_table(history::SNAPSHOT_NEXT)?, name)?;
        let mut log = Vec::new();
        let mut last_seq = covered.saturating_sub(1);
        for entry in log_table.range((name, covered)..=(name, u64::MAX))? {
            let (key, value) = entry?;
            let seq = key.value().1;
            last_seq = seq;
            let stored = match &sums {
                Some(sums) => checksum::log_sum(sums, name, seq)?,
                None => None,
            };
            checksum::verify(stored, value.value(), Damage::LogEntry(seq)).map_err(damaged)?;
            log.push(value.value().to_vec());
        }
        Ok(StoredDoc {
            snapshot,
            log,
            last_seq,
        })
    }

    /// Up to `limit` log entries of `doc` from sequence number `from` on, each checked
    /// against its checksum. Blocking.
    pub fn entries(
        &self,
        doc: &DocName,
        from: u64,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        self.contained(|| {
            let name = doc.as_str();
            let txn = self.db()?.begin_read()?;
            let log = txn.open_table(UPDATE_LOG)?;
            let sums = txn.open_table(checksum::LOG_SUMS)?;
            let mut out = Vec::new();
            for entry in log.range((name, from)..=(name, u64::MAX))?.take(limit) {
                let (key, value) = entry?;
                let seq = key.value().1;
                let stored = checksum::log_sum(&sums, name, seq)?;
                checksum::verify(stored, value.value(), Damage::LogEntry(seq)).map_err(
                    |damage| StoreError::Damaged {
                        doc: doc.to_string(),
                        damage,
                    },
                )?;
                out.push(LogEntry {
                    seq,
                    update: value.value().to_vec(),
                });
            }
            Ok(out)
        })
    }

    /// A document's metadata: its kind, and creation time if it was created explicitly.
    /// `None` if no such document exists. Blocking.
    pub fn document(&self, doc: &DocName) -> Result<Option<DocumentMeta>, StoreError> {
        self.contained(|| self.document_uncontained(doc))
    }

    fn document_uncontained(&self, doc: &DocName) -> Result<Option<DocumentMeta>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let documents = txn.open_table(documents::DOCUMENTS)?;
        let snapshots = txn.open_table(SNAPSHOTS)?;
        let log = txn.open_table(UPDATE_LOG)?;
        documents::meta_in(&documents, &snapshots, &log, doc)
    }

    /// A register document's state; `None` if `doc` is not a register. Blocking.
    pub fn register(
        &self,
        doc: &DocName,
    ) -> Result<Option<aetherflow_crdt::register::Register>, StoreError> {
        self.contained(|| self.register_uncontained(doc))
    }

    fn register_uncontained(
        &self,
        doc: &DocName,
    ) -> Result<Option<aetherflow_crdt::register::Register>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let registers = txn.open_table(documents::REGISTERS)?;
        let Some(bytes) = registers.get(doc.as_str())? else {
            return Ok(None);
        };
        documents::from_json(bytes.value()).map(Some)
    }

    /// How much the store holds of `doc`: log entries since the last snapshot, bytes of
    /// snapshot, log and register, and the time of its last change. Blocking.
    pub fn stats(&self, doc: &DocName) -> Result<DocStats, StoreError> {
        self.contained(|| self.stats_uncontained(doc))
    }

    fn stats_uncontained(&self, doc: &DocName) -> Result<DocStats, StoreError> {
        let txn = self.db()?.begin_read()?;
        let name = doc.as_str();
        let mut stats = DocStats::default();
        if let Some(snapshot) = txn.open_table(SNAPSHOTS)?.get(name)? {
            stats.size_bytes += snapshot.value().len() as u64;
        }
        let covered = history::snapshot_next(&txn.open_table(history::SNAPSHOT_NEXT)?, name)?;
        for entry in txn
            .open_table(UPDATE_LOG)?
            .range((name, covered)..=(name, u64::MAX))?
        {
            let (_, value) = entry?;
            stats.updates += 1;
            stats.size_bytes += value.value().len() as u64;
        }
        if let Some(register) = txn.open_table(documents::REGISTERS)?.get(name)? {
            stats.size_bytes += register.value().len() as u64;
        }
        stats.modified_ms = txn
            .open_table(documents::MODIFIED)?
            .get(name)?
            .map(|v| v.value());
        Ok(stats)
    }

    /// Up to `limit` documents whose names sort after `after` (all, if `None`) and pass
    /// `keep`, in name order (bytewise). Blocking.
    pub fn list(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<(DocName, DocumentMeta)>, StoreError> {
        self.contained(|| self.list_uncontained(after, limit, keep))
    }

    fn list_uncontained(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<(DocName, DocumentMeta)>, StoreError> {
        use std::ops::Bound;
        let txn = self.db()?.begin_read()?;
        let documents = txn.open_table(documents::DOCUMENTS)?;
        let snapshots = txn.open_table(SNAPSHOTS)?;
        let log = txn.open_table(UPDATE_LOG)?;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        // Every document has a metadata record, a snapshot or a log entry; merge the three
        // name-ordered tables, keeping at most `limit` names from each.
        let mut names = std::collections::BTreeSet::new();
        for table in [&documents, &snapshots] {
            let mut taken = 0;
            for entry in table.range::<&str>((start, Bound::Unbounded))? {
                let (key, _) = entry?;
                let name = key.value();
                if keep(name) && names.insert(name.to_owned()) {
                    taken += 1;
                }
                if taken >= limit {
                    break;
                }
            }
        }
        let log_start = after.map_or(Bound::Unbounded, |a| Bound::Excluded((a, u64::MAX)));
        let mut taken = 0;
        let mut last = String::new();
        for entry in log.range::<(&str, u64)>((log_start, Bound::Unbounded))? {
            let (key, _) = entry?;
            let name = key.value().0;
            if name == last {
                continue;
            }
            name.clone_into(&mut last);
            if keep(name) && names.insert(name.to_owned()) {
                taken += 1;
            }
            if taken >= limit {
                break;
            }
        }
        let mut out = Vec::new();
        for name in names.into_iter().take(limit) {
            // Names in the store were validated when written; skip any that no longer are.
            let Ok(doc) = DocName::parse(&name) else {
                continue;
            };
            if let Some(meta) = documents::meta_in(&documents, &snapshots, &log, &doc)? {
                out.push((doc, meta));
            }
        }
        Ok(out)
    }

    pub(crate) fn database(&self) -> Result<Arc<Database>, StoreError> {
        self.db()
    }

    /// After an I/O error: closes the database and opens it again if a failed write
    /// poisoned it (redb refuses everything after one until then; opening repairs it to its
    /// last commit), so reads work again at once; then proves there is room to write by
    /// writing and syncing a scratch file beside it (a probe inside the database would poison
    /// it again if it failed). Blocking. Marks the store writable or not by the outcome.
    ///
    /// Writes are tried again only after [`PROBES_TO_RECOVER`] probes in a row succeed (a
    /// second apart, as the writer calls this): the space a failed commit took is given back
    /// when the database reopens, and one probe into that would flip readiness back and forth
    /// on a disk that is still full.
    pub(crate) fn recover(&self) -> Result<(), StoreError> {
        let outcome = self
            .slot
            .reopen_if_poisoned(open_database)
            .and_then(|()| self.probe());
        let streak = self.slot.probed(outcome.is_ok());
        if streak >= PROBES_TO_RECOVER {
            self.slot.set_writable(true);
            return Ok(());
        }
        outcome.and(Err(StoreError::Io(format!(
            "{streak} of {PROBES_TO_RECOVER} probes in a row succeeded"
        ))))
    }

    /// Closes and reopens the database if a failed write poisoned it, so that reads work
    /// again; does not probe. Blocking.
    pub(crate) fn reopen_if_poisoned(&self) -> Result<(), StoreError> {
        self.slot.reopen_if_poisoned(open_database)
    }

    /// Writes, syncs and removes [`PROBE_BYTES`] beside the database.
    fn probe(&self) -> Result<(), StoreError> {
        let path = self.slot.path().with_extension("probe");
        let written = std::fs::File::create(&path).and_then(|mut file| {
            use std::io::Write;
            file.write_all(&vec![0u8; PROBE_BYTES])?;
            file.sync_all()
        });
        let _ = std::fs::remove_file(&path);
        written.map_err(|e| StoreError::Io(e.to_string()))
    }

    /// Resolves after a commit that recorded webhook events (the delivery task waits on it).
    pub fn webhooks_recorded(&self) -> tokio::sync::futures::Notified<'_> {
        self.webhooks_due.notified()
    }

    /// Whether webhook endpoints may exist (see the field).
    pub(crate) fn may_have_webhook_endpoints(&self) -> bool {
        self.webhook_endpoints
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// A commit found whether endpoints exist.
    pub(crate) fn set_webhook_endpoints(&self, any: bool) {
        self.webhook_endpoints
            .store(any, std::sync::atomic::Ordering::Release);
    }

    /// Wakes the webhook delivery task.
    pub(crate) fn wake_webhooks(&self) {
        self.webhooks_due.notify_one();
    }

    /// Successful commits since the store opened.
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A commit succeeded; called by the writer before it answers the commit's waiters.
    pub(crate) fn committed(&self) {
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// A commit failed on I/O: the open database is poisoned, and writes are refused until
    /// [`Store::recover`] finds room again. (A commit that succeeds meanwhile does not end
    /// that: an empty flush succeeds on a full disk.)
    pub(crate) fn commit_failed(&self) {
        self.slot.poison();
        self.slot.probed(false);
        self.slot.set_writable(false);
    }
}

/// The text of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("no message")
        .to_owned()
}

/// Bytes [`Store::recover`] must be able to write before writes are tried again.
const PROBE_BYTES: usize = 4 * 1024 * 1024;
/// Successful probes in a row before writes are tried again.
const PROBES_TO_RECOVER: u32 = 2;

/// Opens (creating if needed) the database file and its tables.
fn open_database(path: &Path) -> Result<Database, StoreError> {
    let db = Database::create(path).map_err(|e| StoreError::Open {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let txn = db.begin_write()?;
    txn.open_table(SNAPSHOTS)?;
    txn.open_table(UPDATE_LOG)?;
    txn.open_table(checksum::LOG_SUMS)?;
    txn.open_table(checksum::SNAPSHOT_SUMS)?;
    txn.open_table(documents::DOCUMENTS)?;
    txn.open_table(documents::REGISTERS)?;
    txn.open_table(documents::MODIFIED)?;
    history::create_tables(&txn)?;
    outbox::create_tables(&txn)?;
    txn.commit()?;
    Ok(db)
}
