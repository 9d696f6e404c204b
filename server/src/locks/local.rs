//! One relay's locks, in memory: a [`LockTable`] on the wall clock, announcing changes on
//! [`Events`], with one timer per lease so that an expired lock is announced
//! (`lock_expired`) even if nobody touches the document. Whichever comes first, the timer or
//! an access after the deadline, frees the lock and announces it, exactly once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aetherflow_crdt::DocName;
use futures_util::FutureExt;

use super::rules::LockTable;
use super::{Lock, LockError, LockFuture, LockLedger};
use crate::events::{DocEvent, Events};
use crate::wall_clock::now_ms;

/// The embedded relay's locks; cheap to clone.
#[derive(Clone)]
pub struct LocalLocks {
    table: Arc<Mutex<LockTable>>,
    /// The expiry timer of each document's current lease; a renewal or release stops the
    /// old one, so frequent renewals do not pile up sleeping tasks.
    timers: Arc<Mutex<HashMap<DocName, tokio::task::AbortHandle>>>,
    events: Events,
}

impl LocalLocks {
    /// No locks; changes are published on `events`.
    pub fn new(events: Events) -> LocalLocks {
        LocalLocks {
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

    /// See [`super::rules::acquire`]; announces `lock_acquired` (or `lock_renewed`).
    pub fn acquire(&self, doc: &DocName, holder: &str, ttl_ms: u64) -> Result<Lock, LockError> {
        self.current(doc);
        let (lock, renewal) = self.lock().acquire(doc, holder, ttl_ms, now_ms())?;
        self.arm(doc, &lock, ttl_ms);
        self.events
            .publish(doc, super::granted(&lock.holder, lock.expires_ms, renewal));
        Ok(lock)
    }

    /// See [`super::rules::renew`]; announces `lock_renewed`.
    pub fn renew(&self, doc: &DocName, holder: &str, ttl_ms: u64) -> Result<Lock, LockError> {
        self.current(doc);
        let lock = self.lock().renew(doc, holder, ttl_ms, now_ms())?;
        self.arm(doc, &lock, ttl_ms);
        self.events
            .publish(doc, super::granted(&lock.holder, lock.expires_ms, true));
        Ok(lock)
    }

    /// See [`super::rules::release`]; announces `lock_released`.
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

    /// See [`super::rules::may_write`].
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
        super::announce_expiry(&self.events, doc, lock.holder);
    }
}

impl LockLedger for LocalLocks {
    fn current<'a>(&'a self, doc: &'a DocName) -> LockFuture<'a, Option<Lock>> {
        std::future::ready(Ok(LocalLocks::current(self, doc))).boxed()
    }

    fn acquire<'a>(
        &'a self,
        doc: &'a DocName,
        holder: &'a str,
        ttl_ms: u64,
    ) -> LockFuture<'a, Lock> {
        std::future::ready(LocalLocks::acquire(self, doc, holder, ttl_ms)).boxed()
    }

    fn renew<'a>(&'a self, doc: &'a DocName, holder: &'a str, ttl_ms: u64) -> LockFuture<'a, Lock> {
        std::future::ready(LocalLocks::renew(self, doc, holder, ttl_ms)).boxed()
    }

    fn release<'a>(&'a self, doc: &'a DocName, holder: &'a str) -> LockFuture<'a, Lock> {
        std::future::ready(LocalLocks::release(self, doc, holder)).boxed()
    }

    fn may_write<'a>(&'a self, doc: &'a DocName, who: &'a str) -> LockFuture<'a, ()> {
        std::future::ready(LocalLocks::may_write(self, doc, who)).boxed()
    }

    fn forget<'a>(&'a self, doc: &'a DocName) -> LockFuture<'a, ()> {
        LocalLocks::forget(self, doc);
        std::future::ready(Ok(())).boxed()
    }
}
