//! Document locks: a lease with a holder and a time to live.
//!
//! The rules live once, pure, in [`rules`] (time passed in). Where locks are kept is a
//! [`LockLedger`]: one relay keeps them in memory ([`LocalLocks`]: a restart frees them all,
//! holders re-acquire); cluster mode keeps them in JetStream, so a lock holds across every
//! relay (`jetstream/locks.rs`). [`Locks`] is the relay's handle on either. Every change is
//! announced on the event bus once: `lock_acquired`, `lock_renewed`, `lock_released`, and
//! `lock_expired` when a lease runs out, by a timer even if nobody touches the document.
//!
//! ```
//! use aetherflow_crdt::DocName;
//! use aetherflow_server::locks::{LockError, LockTable};
//! let doc = DocName::parse("notes").unwrap();
//! let mut table = LockTable::default();
//! table.acquire(&doc, "ann", 1_000, 0).unwrap();
//! assert!(matches!(table.acquire(&doc, "bob", 1_000, 10), Err(LockError::Held { .. })));
//! assert!(table.acquire(&doc, "bob", 1_000, 1_000).is_ok(), "expired at 1,000 ms");
//! ```

mod local;
pub mod rules;

use std::sync::Arc;

use aetherflow_crdt::DocName;
use futures_util::future::BoxFuture;
use serde::Serialize;

pub use self::local::LocalLocks;
pub use self::rules::LockTable;
use crate::events::{DocEvent, Events};

/// The longest lease one request may take: an hour.
pub const MAX_TTL_MS: u64 = 3_600_000;

/// A held lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lock {
    /// Who holds it.
    pub holder: String,
    /// When it expires, ms since the Unix epoch.
    pub expires_ms: u64,
    /// Tells apart successive leases, so a stale timer does not free a renewed lock (in
    /// cluster mode: the record's revision).
    #[serde(skip)]
    pub lease: u64,
}

/// Why a lock operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// Someone else holds the lock.
    #[error("locked by {holder} until {expires_ms} (ms since the Unix epoch)")]
    Held {
        /// The holder.
        holder: String,
        /// When the lease ends.
        expires_ms: u64,
    },
    /// There is no lock to renew or release.
    #[error("the document is not locked")]
    NotLocked,
    /// The TTL is outside 1 ms ..= [`MAX_TTL_MS`].
    #[error("ttl_ms must be between 1 and {MAX_TTL_MS}")]
    BadTtl,
    /// Where locks are kept cannot be reached (cluster mode: JetStream); nothing changed.
    #[error("locks unavailable: {0}")]
    Unavailable(String),
}

/// A lock operation under way.
pub type LockFuture<'a, T> = BoxFuture<'a, Result<T, LockError>>;

/// Where locks are kept, and the one place their changes are announced from. Every
/// operation applies [`rules`] to the lock as it stands there.
pub trait LockLedger: Send + Sync {
    /// The lock on `doc` now, if any (an expired one is freed and announced).
    fn current<'a>(&'a self, doc: &'a DocName) -> LockFuture<'a, Option<Lock>>;
    /// See [`rules::acquire`]; announces `lock_acquired` (or `lock_renewed`).
    fn acquire<'a>(
        &'a self,
        doc: &'a DocName,
        holder: &'a str,
        ttl_ms: u64,
    ) -> LockFuture<'a, Lock>;
    /// See [`rules::renew`]; announces `lock_renewed`.
    fn renew<'a>(&'a self, doc: &'a DocName, holder: &'a str, ttl_ms: u64) -> LockFuture<'a, Lock>;
    /// See [`rules::release`]; announces `lock_released`.
    fn release<'a>(&'a self, doc: &'a DocName, holder: &'a str) -> LockFuture<'a, Lock>;
    /// See [`rules::may_write`].
    fn may_write<'a>(&'a self, doc: &'a DocName, who: &'a str) -> LockFuture<'a, ()>;
    /// Drops `doc`'s lock without an event (the document was deleted).
    fn forget<'a>(&'a self, doc: &'a DocName) -> LockFuture<'a, ()>;
}

/// The relay's locks, wherever they are kept; cheap to clone.
#[derive(Clone)]
pub struct Locks {
    ledger: Arc<dyn LockLedger>,
}

impl Locks {
    /// One relay's locks in memory, announced on `events`.
    pub fn local(events: Events) -> Locks {
        Locks::kept_in(Arc::new(LocalLocks::new(events)))
    }

    /// Locks kept in `ledger` (cluster mode's).
    pub fn kept_in(ledger: Arc<dyn LockLedger>) -> Locks {
        Locks { ledger }
    }

    /// See [`LockLedger::current`].
    pub async fn current(&self, doc: &DocName) -> Result<Option<Lock>, LockError> {
        self.ledger.current(doc).await
    }

    /// See [`LockLedger::acquire`].
    pub async fn acquire(
        &self,
        doc: &DocName,
        holder: &str,
        ttl_ms: u64,
    ) -> Result<Lock, LockError> {
        self.ledger.acquire(doc, holder, ttl_ms).await
    }

    /// See [`LockLedger::renew`].
    pub async fn renew(&self, doc: &DocName, holder: &str, ttl_ms: u64) -> Result<Lock, LockError> {
        self.ledger.renew(doc, holder, ttl_ms).await
    }

    /// See [`LockLedger::release`].
    pub async fn release(&self, doc: &DocName, holder: &str) -> Result<Lock, LockError> {
        self.ledger.release(doc, holder).await
    }

    /// See [`LockLedger::may_write`].
    pub async fn may_write(&self, doc: &DocName, who: &str) -> Result<(), LockError> {
        self.ledger.may_write(doc, who).await
    }

    /// See [`LockLedger::forget`].
    pub async fn forget(&self, doc: &DocName) -> Result<(), LockError> {
        self.ledger.forget(doc).await
    }
}

/// The event of a granted lease: `lock_renewed` if it extends the holder's own.
pub fn granted(holder: &str, expires_ms: u64, renewal: bool) -> DocEvent {
    let holder = holder.to_owned();
    if renewal {
        DocEvent::LockRenewed { holder, expires_ms }
    } else {
        DocEvent::LockAcquired { holder, expires_ms }
    }
}

/// Announces that `holder`'s lease on `doc` ran out.
pub fn announce_expiry(events: &Events, doc: &DocName, holder: String) {
    tracing::info!(doc = %doc, %holder, "lock expired");
    events.publish(doc, DocEvent::LockExpired { holder });
}
