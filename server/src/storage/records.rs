//! What the storage interfaces hand back: a document's stored form, its metadata and size.

use aetherflow_crdt::register::{CommandError, Kind};
use serde::{Deserialize, Serialize};

/// What storage holds of one Yjs document.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StoredDoc {
    /// The latest snapshot (one v1 update holding the whole state), if the log was ever
    /// compacted; from [`DocumentHistory::at`](super::DocumentHistory::at), the base state
    /// the entries replay on.
    pub snapshot: Option<Vec<u8>>,
    /// Log entries after the snapshot, oldest first.
    pub log: Vec<Vec<u8>>,
    /// The sequence number of the last entry loaded (or folded into the snapshot); 0 for an
    /// empty document. From [`DocumentHistory::at`](super::DocumentHistory::at): the entry asked
    /// for. [`DocumentLog::follow`](super::DocumentLog::follow) starts after it.
    pub last_seq: u64,
}

/// One entry of a document's log, with its place in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The entry's sequence number: increasing along the document's log, never reused while
    /// the document exists (the embedded engine keeps entries as history; see
    /// [`DocumentHistory`](super::DocumentHistory)).
    pub seq: u64,
    /// The v1 update.
    pub update: Vec<u8>,
}

/// Size and age of a stored document.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DocStats {
    /// Entries in the update log since the last snapshot (Yjs documents).
    pub updates: u64,
    /// Bytes of the current document: snapshot, log entries after it and register (kept
    /// history not counted).
    pub size_bytes: u64,
    /// Time of the last change, milliseconds since the Unix epoch, if known.
    pub modified_ms: Option<u64>,
}

/// What storage knows about a document besides its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentMeta {
    /// Its kind, fixed at creation.
    pub kind: Kind,
    /// Creation time, milliseconds since the Unix epoch (`None` for a Yjs document created
    /// implicitly by a connection).
    pub created_ms: Option<u64>,
}

/// What creating a document did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The document was created.
    New(DocumentMeta),
    /// A document of that name already exists; nothing changed.
    Exists(DocumentMeta),
}

/// Why a register command was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterFailure {
    /// No document of that name exists.
    #[error("no such document")]
    NotFound,
    /// The document is a Yjs document, not a register.
    #[error("the document is a {0:?} document, not a register")]
    NotARegister(Kind),
    /// The register refused the command.
    #[error(transparent)]
    Command(#[from] CommandError),
}

/// What the history keeps of one log entry besides its update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The entry's sequence number; never reused within a document.
    pub seq: u64,
    /// When it was committed, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Who made it (token subjects, sorted); empty when unknown (an HTTP writer, an open relay).
    pub authors: Vec<String>,
    /// Size of its update in bytes.
    pub bytes: u64,
}

/// A document's history as stored: its entries' metadata and its labels.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Timeline {
    /// Every kept entry, oldest first.
    pub entries: Vec<HistoryEntry>,
    /// Labels by the sequence number of the entry they name.
    pub labels: std::collections::BTreeMap<u64, String>,
}
