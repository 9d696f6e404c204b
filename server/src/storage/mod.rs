//! The storage interfaces: what the relay needs from the engine that keeps its documents.
//!
//! Four seams, each an object-safe trait, so the relay holds `Arc<dyn ...>` and never names
//! an engine:
//!
//! - [`DocumentLog`]: a Yjs document is a snapshot plus the log of updates after it. Rooms
//!   append a batch and learn when it is durable, read a document's snapshot and entries when
//!   they load it, fold the log into a new snapshot, and (for history) read entries by range.
//! - [`RegisterStore`]: `lww` and `manual` registers, changed by commands that read, apply
//!   the pure rules of [`aetherflow_crdt::register`] and write back atomically.
//! - [`Catalog`]: which documents exist, of which kind and size; creation and deletion.
//! - [`DocumentHistory`] (optional): a Yjs document's kept log read as versions, the state at
//!   any entry, labels and thinning.
//!
//! The embedded redb database (the `store` module) implements all three; it is the default.
//! Every implementation must pass the same conformance suite (`conformance`, run by each
//! engine's tests), which states the contract as tests: an acknowledged append survives a
//! reopen; entries come back in order; compaction never loses an entry appended after the
//! snapshot was taken; a register command is applied atomically; deletion removes everything.

mod committing;
#[cfg(test)]
pub(crate) mod conformance;
mod error;
mod records;

use std::sync::Arc;

use aetherflow_crdt::DocName;
use aetherflow_crdt::register::{Command, Outcome, Register};
use futures_util::future::BoxFuture;

pub use committing::Committing;
pub use error::{Damage, StoreError};
pub use records::{
    Created, DocStats, DocumentMeta, HistoryEntry, LogEntry, RegisterFailure, StoredDoc, Timeline,
};

/// A storage operation under way.
pub type Pending<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// Entries other relays append to a document, as they become durable.
pub type Following =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<LogEntry, StoreError>> + Send>>;

/// Which document names a listing keeps.
pub type NameFilter = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// The log of Yjs documents: snapshot plus updates after it, per document.
///
/// Ordering: the operations of one handle on one document take effect in the order they were
/// called (appends, then a compaction, then more appends), whichever engine runs them.
pub trait DocumentLog: Send + Sync {
    /// Queues `update` at the end of `doc`'s log, made by `authors` (token subjects; empty
    /// when unknown). Returns once the engine has accepted it (waiting only for room in its
    /// queue) with a [`Committing`] that resolves once the entry is durable. Entries appended
    /// through one handle become durable in the order appended.
    fn append(
        &self,
        doc: DocName,
        update: Vec<u8>,
        authors: Vec<String>,
    ) -> Pending<'_, Committing>;

    /// Queues `update` without waiting for it to become durable (relaxed durability): the
    /// engine makes it durable within its flush interval.
    fn append_relaxed(
        &self,
        doc: DocName,
        update: Vec<u8>,
        authors: Vec<String>,
    ) -> Pending<'_, ()>;

    /// Replaces `doc`'s snapshot by `snapshot`, which holds every entry appended through this
    /// handle before the call: [`DocumentLog::load`] no longer returns those entries (an
    /// engine with [`DocumentHistory`] keeps them as history; others drop them). Entries
    /// appended later stay.
    fn compact(&self, doc: DocName, snapshot: Vec<u8>) -> Pending<'_, ()>;

    /// The document's snapshot and log, each entry checked against its checksum
    /// ([`StoreError::Damaged`] otherwise). An unknown document is empty.
    fn load(&self, doc: DocName) -> Pending<'_, StoredDoc>;

    /// Up to `limit` log entries of `doc` with sequence numbers from `from` on, oldest first.
    fn entries(&self, doc: DocName, from: u64, limit: usize) -> Pending<'_, Vec<LogEntry>>;

    /// Entries of `doc` appended after sequence `after` by other handles (other relays), as
    /// they become durable; `None` for an engine only this relay writes to (the default).
    fn follow(&self, doc: DocName, after: u64) -> Pending<'_, Option<Following>> {
        let _ = (doc, after);
        Box::pin(async { Ok(None) })
    }

    /// Waits until everything queued before the call is durable.
    fn flush(&self) -> Pending<'_, ()>;

    /// Whether writes currently succeed: `false` while the disk is full or failing. Readiness
    /// reports it.
    fn is_writable(&self) -> bool;

    /// Commits since the engine opened; increases before the waiters of a commit are told,
    /// so a read that began at one count has seen everything committed up to it.
    fn commits(&self) -> u64;
}

/// A Yjs document's past: the log entries kept after compaction, and labels on them.
///
/// A state "at" entry `seq` is the document just after that entry: everything appended up
/// to and including it. Engines keep checkpoints (snapshots at a sequence number) so that
/// producing it replays a short stretch of the log, not all of it.
pub trait DocumentHistory: Send + Sync {
    /// The metadata of every kept entry of `doc`, oldest first, and its labels.
    fn timeline(&self, doc: DocName) -> Pending<'_, Timeline>;

    /// `doc` just after entry `seq`, as a base snapshot and the entries to replay on it;
    /// `None` if `doc` keeps no entry `seq`.
    fn at(&self, doc: DocName, seq: u64) -> Pending<'_, Option<StoredDoc>>;

    /// Sets (`Some`) or removes (`None`) the label of entry `seq`; `false` if `doc` keeps no
    /// entry `seq` (setting) or has no label there (removing).
    fn label(&self, doc: DocName, seq: u64, label: Option<String>) -> Pending<'_, bool>;

    /// Thins `doc`'s history by `retention` as of `now_ms`, counting every entry appended
    /// through this handle before the call: the entries of every version it drops are merged
    /// into the next kept one, so the document's content never changes. Returns how many
    /// versions were dropped.
    fn thin(
        &self,
        doc: DocName,
        retention: crate::history::Retention,
        now_ms: u64,
    ) -> Pending<'_, usize>;
}

/// `lww` and `manual` register documents.
pub trait RegisterStore: Send + Sync {
    /// The register of `doc`; `None` if `doc` is not a register document.
    fn register(&self, doc: DocName) -> Pending<'_, Option<Register>>;

    /// Applies `command` to `doc`'s register atomically (read, apply, write back) and
    /// returns the outcome once it is durable; only applied outcomes change anything.
    fn apply(
        &self,
        doc: DocName,
        command: Command,
    ) -> Pending<'_, Result<Outcome, RegisterFailure>>;
}

/// Which documents exist.
pub trait Catalog: Send + Sync {
    /// Creates `doc` with `meta` unless a document of that name exists.
    fn create(&self, doc: DocName, meta: DocumentMeta) -> Pending<'_, Created>;

    /// The document's metadata; `None` if no such document exists. A Yjs document made by a
    /// first connection exists, without a creation time, once it holds data.
    fn document(&self, doc: DocName) -> Pending<'_, Option<DocumentMeta>>;

    /// How much is stored of `doc`.
    fn stats(&self, doc: DocName) -> Pending<'_, DocStats>;

    /// Up to `limit` documents whose names sort after `after` (all, if `None`) and pass
    /// `keep`, in bytewise name order.
    fn list(
        &self,
        after: Option<String>,
        limit: usize,
        keep: NameFilter,
    ) -> Pending<'_, Vec<(DocName, DocumentMeta)>>;

    /// Removes `doc` entirely (snapshot, log, metadata, register, conflicts); whether it
    /// existed. A later document of the same name starts empty.
    fn delete(&self, doc: DocName) -> Pending<'_, bool>;
}

/// The relay's storage: one engine seen through its three interfaces. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    /// Yjs documents.
    pub log: Arc<dyn DocumentLog>,
    /// Register documents.
    pub registers: Arc<dyn RegisterStore>,
    /// Which documents exist.
    pub catalog: Arc<dyn Catalog>,
    /// Documents' past versions; `None` for an engine that keeps none (cluster mode, for now).
    pub history: Option<Arc<dyn DocumentHistory>>,
}

impl Storage {
    /// One engine implementing all three interfaces.
    pub fn of<E>(engine: E) -> Storage
    where
        E: DocumentLog + RegisterStore + Catalog + 'static,
    {
        let engine = Arc::new(engine);
        Storage {
            log: engine.clone(),
            registers: engine.clone(),
            catalog: engine,
            history: None,
        }
    }

    /// One engine implementing all four interfaces, history included.
    pub fn with_history<E>(engine: E) -> Storage
    where
        E: DocumentLog + RegisterStore + Catalog + DocumentHistory + 'static,
    {
        let engine = Arc::new(engine);
        Storage {
            log: engine.clone(),
            registers: engine.clone(),
            catalog: engine.clone(),
            history: Some(engine),
        }
    }
}
