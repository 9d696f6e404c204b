//! Document locks: a lease with a holder and a time to live.
//!
//! [`LockTable`] is the pure part: it takes the time as an argument. [`Locks`] wraps it for the
//! relay: it reads the clock, publishes lock events and runs one timer per lease so that an
//! expired lock is announced (`lock_expired`) even if nobody touches the document. Whichever
//! comes first, the timer or an access after the deadline, frees the lock and announces it,
//! exactly once.
//!
//! Locks live in memory and do not survive a restart: they are short leases that holders
//! renew, and a restart frees them all (holders re-acquire).
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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aetherflow_crdt::DocName;
use serde::Serialize;

use crate::events::{DocEvent, Events};
use crate::wall_clock::now_ms;

/// The longest lease one request may take: an hour.
pub const MAX_TTL_MS: u64 = 3_600_000;

/// A held lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lock {
    /// Who holds it.
    pub holder: String,
    /// When it expires, ms since the Unix epoch.
    pub expires_ms: u64,
    /// Tells apart successive leases, so a stale timer does not free a renewed lock.
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
}

/// Every document's lock, as of a time the caller gives.
#[derive(Debug, Default)]
pub struct LockTable {
    locks: HashMap<DocName, Lock>,
    next_lease: u64,
}

impl LockTable {
    /// The lock on `doc` at `now_ms`; an expired one is removed and returned as `Err`.
    pub fn current(&mut self, doc: &DocName, now_ms: u64) -> Result<Option<&Lock>, Lock> {
        if let Some(lock) = self.locks.get(doc)
            && lock.expires_ms <= now_ms
        {
            return Err(self.locks.remove(doc).expect("present: just looked it up"));
        }
        Ok(self.locks.get(doc))
    }

    /// Takes the lock for `holder` for `ttl_ms`: free, expired, or already `holder`'s (which
    /// renews it).
    pub fn acquire(
        &mut self,
        doc: &DocName,
        holder: &str,
        ttl_ms: u64,
        now_ms: u64,
    ) -> Result<Lock, LockError> {
        check_ttl(ttl_ms)?;
        if let Some(lock) = self.locks.get(doc)
            && lock.holder != holder
            && lock.expires_ms > now_ms
        {
            return Err(held(lock));
        }
        Ok(self.grant(doc, holder, ttl_ms, now_ms))
    }

    /// Extends `holder`'s unexpired lock to `now_ms + ttl_ms`.
    pub fn renew(
        &mut self,
        doc: &DocName,
        holder: &str,
        ttl_ms: u64,
        now_ms: u64,
    ) -> Result<Lock, LockError> {
        check_ttl(ttl_ms)?;
        self.held_by(doc, holder, now_ms)?;
        Ok(self.grant(doc, holder, ttl_ms, now_ms))
    }

    /// Frees `holder`'s unexpired lock.
    pub fn release(&mut self, doc: &DocName, holder: &str, now_ms: u64) -> Result<Lock, LockError> {
        self.held_by(doc, holder, now_ms)?;
        Ok(self.locks.remove(doc).expect("present: held_by found it"))
    }

    /// Whether `who` may write `doc`: it is unlocked, expired, or `who` holds it.
    pub fn may_write(&self, doc: &DocName, who: &str, now_ms: u64) -> Result<(), LockError> {
        match self.locks.get(doc) {
            Some(lock) if lock.holder != who && lock.expires_ms > now_ms => Err(held(lock)),
            _ => Ok(()),
        }
    }

    /// Removes lease `lease` of `doc` if it is still the current one (its timer fired).
    pub fn expire(&mut self, doc: &DocName, lease: u64) -> Option<Lock> {
        if self.locks.get(doc).is_some_and(|l| l.lease == lease) {
            return self.locks.remove(doc);
        }
        None
    }

    /// Drops `doc`'s lock (the document was deleted).
    pub fn forget(&mut self, doc: &DocName) -> Option<Lock> {
        self.locks.remove(doc)
    }

    fn held_by(&self, doc: &DocName, holder: &str, now_ms: u64) -> Result<(), LockError> {
        match self.locks.get(doc) {
            Some(lock) if lock.expires_ms <= now_ms => Err(LockError::NotLocked),
            Some(lock) if lock.holder != holder => Err(held(lock)),
            Some(_) => Ok(()),
            None => Err(LockError::NotLocked),
        }
    }

    fn grant(&mut self, doc: &DocName, holder: &str, ttl_ms: u64, now_ms: u64) -> Lock {
        self.next_lease += 1;
        let lock = Lock {
            holder: holder.to_owned(),
            expires_ms: now_ms.saturating_add(ttl_ms),
            lease: self.next_lease,
        };
        self.locks.insert(doc.clone(), lock.clone());
        lock
    }
}

fn check_ttl(ttl_ms: u64) -> Result<(), LockError> {
    if (1..=MAX_TTL_MS).contains(&ttl_ms) {
        Ok(())
    } else {
        Err(LockError::BadTtl)
    }
}

fn held(lock: &Lock) -> LockError {
    LockError::Held {
        holder: lock.holder.clone(),
        expires_ms: lock.expires_ms,
    }
}

/// The relay's locks: a [`LockTable`] on the wall clock, announcing changes on [`Events`].
#[derive(Clone)]
pub struct Locks {
    table: Arc<Mutex<LockTable>>,
    /// The expiry timer of each document's current lease; a renewal or release stops the
    /// old one, so frequent renewals do not pile up sleeping tasks.
    timers: Arc<Mutex<HashMap<DocName, tokio::task::AbortHandle>>>,
    events: Events,
}

impl Locks {
    /// No locks; changes are published on `events`.
    pub fn new(events: Events) -> Locks {
        Locks {
            table: Arc::default(),
            timers: Arc::default(),
            events,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LockTable> {
        // Every table operation leaves it consistent, so a poisoned mutex is still usable.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The lock on `doc` now, if any.
    pub fn current(&self, doc: &DocName) -> Option<Lock> {
        let found = self.lock().current(doc, now_ms()).map(|l| l.cloned());
        match found {
            Ok(lock) => lock,
            Err(expired) => {
                self.announce_expiry(doc, expired);
                None
            }
        }
    }

    /// See [`LockTable::acquire`]; announces `lock_acquired` (or `lock_renewed`).
    pub fn acquire(&self, doc: &DocName, holder: &str, ttl_ms: u64) -> Result<Lock, LockError> {
        let before = self.current(doc);
        let lock = self.lock().acquire(doc, holder, ttl_ms, now_ms())?;
        self.arm(doc, &lock, ttl_ms);
        let (holder, expires_ms) = (lock.holder.clone(), lock.expires_ms);
        let event = if before.is_some() {
            DocEvent::LockRenewed { holder, expires_ms }
        } else {
            DocEvent::LockAcquired { holder, expires_ms }
        };
        self.events.publish(doc, event);
        Ok(lock)
    }

    /// See [`LockTable::renew`]; announces `lock_renewed`.
    pub fn renew(&self, doc: &DocName, holder: &str, ttl_ms: u64) -> Result<Lock, LockError> {
        self.current(doc);
        let lock = self.lock().renew(doc, holder, ttl_ms, now_ms())?;
        self.arm(doc, &lock, ttl_ms);
        let event = DocEvent::LockRenewed {
            holder: lock.holder.clone(),
            expires_ms: lock.expires_ms,
        };
        self.events.publish(doc, event);
        Ok(lock)
    }

    /// See [`LockTable::release`]; announces `lock_released`.
    pub fn release(&self, doc: &DocName, holder: &str) -> Result<Lock, LockError> {
        self.current(doc);
        let lock = self.lock().release(doc, holder, now_ms())?;
        self.disarm(doc);
        let event = DocEvent::LockReleased {
            holder: lock.holder.clone(),
        };
        self.events.publish(doc, event);
        Ok(lock)
    }

    /// See [`LockTable::may_write`].
    pub fn may_write(&self, doc: &DocName, who: &str) -> Result<(), LockError> {
        self.current(doc);
        self.lock().may_write(doc, who, now_ms())
    }

    /// Drops `doc`'s lock without an event (the document was deleted).
    pub fn forget(&self, doc: &DocName) {
        self.lock().forget(doc);
        self.disarm(doc);
    }

    /// Starts the timer that frees this lease when its time is up.
    fn arm(&self, doc: &DocName, lock: &Lock, ttl_ms: u64) {
        let locks = self.clone();
        let doc = doc.clone();
        let lease = lock.lease;
        let key = doc.clone();
        // Held until the handle is in the map, so even a 1 ms timer finds its own entry.
        let mut timers = self.timers();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ttl_ms)).await;
            let me = tokio::task::id();
            let mut timers = locks.timers();
            if timers.get(&doc).is_some_and(|t| t.id() == me) {
                timers.remove(&doc);
            }
            drop(timers);
            let expired = locks.lock().expire(&doc, lease);
            if let Some(lock) = expired {
                locks.announce_expiry(&doc, lock);
            }
        });
        if let Some(old) = timers.insert(key, timer.abort_handle()) {
            old.abort();
        }
    }

    /// Stops `doc`'s expiry timer (the lease ended another way).
    fn disarm(&self, doc: &DocName) {
        if let Some(timer) = self.timers().remove(doc) {
            timer.abort();
        }
    }

    fn timers(&self) -> std::sync::MutexGuard<'_, HashMap<DocName, tokio::task::AbortHandle>> {
        // Single inserts and removes cannot leave the map inconsistent.
        self.timers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn announce_expiry(&self, doc: &DocName, lock: Lock) {
        tracing::info!(doc = %doc, holder = %lock.holder, "lock expired");
        self.events.publish(
            doc,
            DocEvent::LockExpired {
                holder: lock.holder,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> DocName {
        DocName::parse("notes").expect("valid name")
    }

    #[test]
    fn only_the_holder_renews_releases_or_writes_until_expiry() {
        let mut table = LockTable::default();
        let lock = table.acquire(&doc(), "ann", 100, 0).expect("free");
        assert_eq!(lock.expires_ms, 100);
        assert!(table.may_write(&doc(), "ann", 50).is_ok());
        assert!(matches!(
            table.may_write(&doc(), "bob", 50),
            Err(LockError::Held { .. })
        ));
        assert!(matches!(
            table.renew(&doc(), "bob", 100, 50),
            Err(LockError::Held { .. })
        ));
        assert_eq!(
            table.renew(&doc(), "ann", 100, 50).map(|l| l.expires_ms),
            Ok(150)
        );
        assert!(table.may_write(&doc(), "bob", 150).is_ok(), "expired");
        assert_eq!(table.release(&doc(), "ann", 150), Err(LockError::NotLocked));
    }

    #[test]
    fn a_stale_timer_does_not_free_a_renewed_lease() {
        let mut table = LockTable::default();
        let first = table.acquire(&doc(), "ann", 100, 0).expect("free");
        table.renew(&doc(), "ann", 100, 90).expect("held");
        assert_eq!(table.expire(&doc(), first.lease), None);
        assert!(table.current(&doc(), 100).expect("not expired").is_some());
    }

    #[test]
    fn ttl_out_of_range_is_refused() {
        let mut table = LockTable::default();
        assert_eq!(table.acquire(&doc(), "ann", 0, 0), Err(LockError::BadTtl));
        assert_eq!(
            table.acquire(&doc(), "ann", MAX_TTL_MS + 1, 0),
            Err(LockError::BadTtl)
        );
    }
}
