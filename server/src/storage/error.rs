//! What can go wrong in storage, whichever engine holds the data.

use std::sync::Arc;

/// Storage failures. Clients never see these texts; they are logged.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or created.
    #[error("cannot open database {path}: {reason}")]
    Open {
        /// The database file (or the engine's address).
        path: String,
        /// What the engine said.
        reason: String,
    },
    /// Reading or writing failed (a full disk, an I/O error), or failed earlier and the
    /// engine has not recovered yet: nothing can be written until it does.
    #[error("storage I/O failed: {0}")]
    Io(String),
    /// A stored document no longer matches its checksums (its bytes were damaged); other
    /// documents are unaffected. `aetherflow check` lists such documents and can repair them.
    #[error("document {doc} is damaged in storage: {damage} fails its checksum")]
    Damaged {
        /// The document.
        doc: String,
        /// What is damaged.
        damage: Damage,
    },
    /// The engine failed inside while reading or writing (redb panics on some damaged
    /// pages); the failure was contained to this operation.
    #[error("the database could not be read ({0}); its file may be damaged")]
    Unreadable(String),
    /// The engine could not be reached or did not answer (a replicated engine between leaders,
    /// a network partition): nothing can be read or written until it answers again, and
    /// retrying later may succeed. The engine's error, kept whole.
    #[error("storage unreachable: {0}")]
    Unreachable(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// A transaction, table or commit failed for another reason: the engine's error, kept
    /// whole with its source chain.
    #[error("storage error: {0}")]
    Engine(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// A stored record (register state, document metadata) cannot be encoded or decoded.
    #[error("stored record: {0}")]
    Record(#[source] Arc<serde_json::Error>),
    /// The writer has stopped (shutdown or a previous fatal error).
    #[error("the store writer has stopped")]
    WriterGone,
}

impl StoreError {
    /// Whether the failure is the storage's (disk full, I/O error, engine unreachable):
    /// writes are impossible until it recovers, and retrying later may succeed.
    pub fn is_io(&self) -> bool {
        matches!(self, StoreError::Io(_) | StoreError::Unreachable(_))
    }

    /// The same failure again, for another waiter of a failed commit.
    pub fn duplicate(&self) -> StoreError {
        match self {
            StoreError::Open { path, reason } => StoreError::Open {
                path: path.clone(),
                reason: reason.clone(),
            },
            StoreError::Io(e) => StoreError::Io(e.clone()),
            StoreError::Damaged { doc, damage } => StoreError::Damaged {
                doc: doc.clone(),
                damage: damage.clone(),
            },
            StoreError::Unreadable(e) => StoreError::Unreadable(e.clone()),
            StoreError::Unreachable(e) => StoreError::Unreachable(e.clone()),
            StoreError::Engine(e) => StoreError::Engine(e.clone()),
            StoreError::Record(e) => StoreError::Record(e.clone()),
            StoreError::WriterGone => StoreError::WriterGone,
        }
    }
}

/// What of a document failed its checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The snapshot.
    Snapshot,
    /// The log entry with this sequence number.
    LogEntry(u64),
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Snapshot => write!(f, "its snapshot"),
            Damage::LogEntry(seq) => write!(f, "log entry {seq}"),
        }
    }
}
