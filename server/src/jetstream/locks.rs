//! Locks held across every relay of a cluster, in the key-value bucket `{prefix}_locks`: one
//! record per locked document (`{"holder", "expires_ms"}`, under the hex of its name), its
//! revision the lease.
//!
//! Every decision reads the record from the bucket stream's leader (never a replica that may
//! lag), applies the one set of rules in [`crate::locks::rules`], and writes with a
//! conditional update on the revision it read; of two relays racing, one wins and the other
//! reads again and decides anew, so there is one holder across all relays. Release and expiry
//! delete the record, conditionally too. A lease ends at its stored deadline (the granting
//! relay's wall clock; relays' clocks are assumed to agree, e.g. by NTP): a record found
//! expired by any operation is deleted first, and every relay also watches the bucket and
//! arms a timer for each lease, so an expiry happens on time even if nobody touches the
//! document. Whichever relay's conditional delete wins announces `lock_expired`, so each
//! change is announced once, cluster-wide, through the shared event bus.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aetherflow_crdt::DocName;
use async_nats::jetstream::{kv, stream};
use futures_util::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};

use super::{CAS_ATTEMPTS, JetStreamEngine, create_bucket, key, lost_race, name_of};
use crate::events::{DocEvent, Events};
use crate::locks::{Lock, LockError, LockFuture, LockLedger, announce_expiry, granted, rules};
use crate::storage::StoreError;
use crate::wall_clock::now_ms;

/// How long a timer whose expiry failed (the cluster unreachable) waits to try again.
const RETRY: Duration = Duration::from_secs(1);

/// A lock as the bucket stores it.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    holder: String,
    expires_ms: u64,
}

/// A document's lock as the stream's leader has it: the lock, if any, and the revision of the
/// key's last record (0 if it never had one), for a conditional write.
struct Stand {
    lock: Option<Lock>,
    revision: u64,
}

/// Cluster mode's locks; cheap to clone.
#[derive(Clone)]
pub struct ClusterLocks {
    inner: Arc<Inner>,
}

struct Inner {
    bucket: kv::Store,
    events: Events,
    /// The expiry timer of each locked document, with the revision it is for.
    timers: Mutex<HashMap<DocName, (u64, tokio::task::AbortHandle)>>,
}

impl JetStreamEngine {
    /// The cluster's locks, announcing on `events`; watching the bucket for leases to expire
    /// from when this returns. Tries again for up to 30 s while the servers have no leaders
    /// (just after one died), like [`JetStreamEngine::connect`].
    pub async fn locks(&self, events: Events) -> Result<ClusterLocks, StoreError> {
        let deadline = tokio::time::Instant::now() + super::SETUP_PATIENCE;
        let (bucket, watch) = loop {
            match self.open_locks().await {
                Ok(opened) => break opened,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "the locks bucket is not ready; trying again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let locks = ClusterLocks {
            inner: Arc::new(Inner {
                bucket,
                events,
                timers: Mutex::default(),
            }),
        };
        tokio::spawn(locks.clone().watch(watch));
        Ok(locks)
    }

    /// Creates (or finds) the locks bucket and starts watching it.
    async fn open_locks(&self) -> Result<(kv::Store, kv::Watch), StoreError> {
        let config = kv::Config {
            bucket: format!("{}_locks", self.inner.prefix),
            history: 1,
            num_replicas: self.inner.log.cached_info().config.num_replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let bucket = create_bucket(&self.inner.js, config)
            .await
            .map_err(|e| super::unreachable(&*e))?;
        let watch = bucket
            .watch_with_history(">")
            .await
            .map_err(super::unreachable)?;
        Ok((bucket, watch))
    }
}

fn unavailable(e: impl std::fmt::Display) -> LockError {
    LockError::Unavailable(e.to_string())
}

impl ClusterLocks {
    /// `doc`'s lock as the leader has it, with an expired one still in it.
    async fn read(&self, doc: &DocName) -> Result<Stand, LockError> {
        let Some(message) = super::last_record(&self.inner.bucket, doc)
            .await
            .map_err(unavailable)?
        else {
            return Ok(Stand {
                lock: None,
                revision: 0,
            });
        };
        // A delete or purge marker: no lock.
        let deleted = super::is_deletion(&message);
        let lock = match serde_json::from_slice::<Record>(&message.payload) {
            _ if deleted => None,
            Ok(record) => Some(Lock {
                holder: record.holder,
                expires_ms: record.expires_ms,
                lease: message.sequence,
            }),
            Err(e) => {
                // Overwritten by the next grant rather than holding the document forever.
                tracing::warn!(doc = %doc, error = %e, "unreadable lock record counts as no lock");
                None
            }
        };
        Ok(Stand {
            lock,
            revision: message.sequence,
        })
    }

    /// Writes `record` (or, for `None`, deletes the lock) if the key's last revision is still
    /// `revision`; `Ok(None)` if another relay changed it first.
    async fn write(
        &self,
        doc: &DocName,
        revision: u64,
        record: Option<&Record>,
    ) -> Result<Option<u64>, LockError> {
        let bucket = &self.inner.bucket;
        let written = match record {
            Some(record) => {
                let value = serde_json::to_vec(record).map_err(unavailable)?;
                bucket.update(key(doc), value.into(), revision).await
            }
            None => bucket
                .delete_expect_revision(key(doc), Some(revision))
                .await
                .map(|()| revision),
        };
        match written {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if lost_race(&e) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// `doc`'s lock now: an expired one is deleted first (and announced by whichever relay's
    /// delete wins).
    async fn settle(&self, doc: &DocName) -> Result<Stand, LockError> {
        for _ in 0..CAS_ATTEMPTS {
            let stand = self.read(doc).await?;
            match &stand.lock {
                Some(lock) if rules::expired(lock, now_ms()) => {
                    if self.write(doc, stand.revision, None).await?.is_some() {
                        announce_expiry(&self.inner.events, doc, lock.holder.clone());
                    }
                }
                _ => return Ok(stand),
            }
        }
        Err(kept_changing())
    }

    /// Grants `holder` the lease `decide` allows on the lock as it stands, retrying on a lost
    /// race; announces it.
    async fn grant(
        &self,
        doc: &DocName,
        holder: &str,
        decide: impl Fn(Option<&Lock>, u64) -> Result<rules::Grant, LockError>,
    ) -> Result<Lock, LockError> {
        for _ in 0..CAS_ATTEMPTS {
            let stand = self.settle(doc).await?;
            let grant = decide(stand.lock.as_ref(), now_ms())?;
            let record = Record {
                holder: holder.to_owned(),
                expires_ms: grant.expires_ms,
            };
            if let Some(revision) = self.write(doc, stand.revision, Some(&record)).await? {
                let lock = Lock {
                    holder: record.holder,
                    expires_ms: record.expires_ms,
                    lease: revision,
                };
                self.arm(doc, revision, lock.expires_ms);
                let event = granted(&lock.holder, lock.expires_ms, grant.renewal);
                self.inner.events.publish(doc, event);
                return Ok(lock);
            }
        }
        Err(kept_changing())
    }

    async fn release_lock(&self, doc: &DocName, holder: &str) -> Result<Lock, LockError> {
        for _ in 0..CAS_ATTEMPTS {
            let stand = self.settle(doc).await?;
            rules::release(stand.lock.as_ref(), holder, now_ms())?;
            let Some(lock) = stand.lock else {
                return Err(LockError::NotLocked);
            };
            if self.write(doc, stand.revision, None).await?.is_some() {
                self.disarm(doc, stand.revision + 1);
                let event = DocEvent::LockReleased {
                    holder: lock.holder.clone(),
                };
                self.inner.events.publish(doc, event);
                return Ok(lock);
            }
        }
        Err(kept_changing())
    }

    /// Follows the bucket: arms a timer for every lease, stops it when the lock goes. Starts
    /// again after a failure, for as long as the relay runs.
    async fn watch(self, mut watch: kv::Watch) {
        loop {
            while let Some(entry) = watch.next().await {
                let Ok(entry) = entry else { break };
                let Some(doc) = name_of(&entry.key) else {
                    continue;
                };
                match entry.operation {
                    kv::Operation::Put => {
                        if let Ok(record) = serde_json::from_slice::<Record>(&entry.value) {
                            self.arm(&doc, entry.revision, record.expires_ms);
                        }
                    }
                    kv::Operation::Delete | kv::Operation::Purge => {
                        self.disarm(&doc, entry.revision);
                    }
                }
            }
            tracing::warn!("the watch on locks stopped; starting it again");
            loop {
                tokio::time::sleep(RETRY).await;
                if let Ok(again) = self.inner.bucket.watch_with_history(">").await {
                    watch = again;
                    break;
                }
            }
        }
    }

    /// Starts the timer of `doc`'s lease `revision`, ending at `expires_ms`, unless it runs.
    fn arm(&self, doc: &DocName, revision: u64, expires_ms: u64) {
        let mut timers = self.timers();
        if timers.get(doc).is_some_and(|(armed, _)| *armed >= revision) {
            return;
        }
        let locks = self.clone();
        let name = doc.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(expires_ms.saturating_sub(now_ms()))).await;
            // From here on nothing stops this task (a watched delete would, and could cut it
            // between its winning delete and the announcement).
            locks.unlist(&name, revision);
            loop {
                match locks.settle(&name).await {
                    Ok(stand) => {
                        // Still running by this relay's clock (clocks differ): wait again.
                        if let Some(lock) = stand.lock {
                            locks.arm(&name, lock.lease, lock.expires_ms);
                        }
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(doc = %name, error = %e, "lock expiry not checked; trying again");
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
        });
        if let Some((_, old)) = timers.insert(doc.clone(), (revision, timer.abort_handle())) {
            old.abort();
        }
    }

    /// Takes `doc`'s timer for `revision` off the list without stopping it (it is running).
    fn unlist(&self, doc: &DocName, revision: u64) {
        let mut timers = self.timers();
        if timers.get(doc).is_some_and(|(armed, _)| *armed == revision) {
            timers.remove(doc);
        }
    }

    /// Stops `doc`'s timer if it is for a revision before `before` (a later lease keeps its
    /// own).
    fn disarm(&self, doc: &DocName, before: u64) {
        let mut timers = self.timers();
        if timers.get(doc).is_some_and(|(armed, _)| *armed < before)
            && let Some((_, timer)) = timers.remove(doc)
        {
            timer.abort();
        }
    }

    fn timers(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<DocName, (u64, tokio::task::AbortHandle)>> {
        // Single inserts and removes cannot leave the map inconsistent.
        self.inner
            .timers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn kept_changing() -> LockError {
    LockError::Unavailable("the lock kept changing under concurrent requests".into())
}

/// Runs a lock operation in a task of its own, so that a caller that goes away (a client
/// hanging up) cannot cut it between its winning write and the announcement.
fn detached<T: Send + 'static>(
    operation: impl Future<Output = Result<T, LockError>> + Send + 'static,
) -> LockFuture<'static, T> {
    async move {
        tokio::spawn(operation)
            .await
            .map_err(|e| LockError::Unavailable(format!("lock operation failed: {e}")))?
    }
    .boxed()
}

impl LockLedger for ClusterLocks {
    fn current<'a>(&'a self, doc: &'a DocName) -> LockFuture<'a, Option<Lock>> {
        let (locks, doc) = (self.clone(), doc.clone());
        detached(async move { Ok(locks.settle(&doc).await?.lock) })
    }

    fn acquire<'a>(
        &'a self,
        doc: &'a DocName,
        holder: &'a str,
        ttl_ms: u64,
    ) -> LockFuture<'a, Lock> {
        let (locks, doc, holder) = (self.clone(), doc.clone(), holder.to_owned());
        detached(async move {
            let decide = |lock: Option<&Lock>, now| rules::acquire(lock, &holder, ttl_ms, now);
            locks.grant(&doc, &holder, decide).await
        })
    }

    fn renew<'a>(&'a self, doc: &'a DocName, holder: &'a str, ttl_ms: u64) -> LockFuture<'a, Lock> {
        let (locks, doc, holder) = (self.clone(), doc.clone(), holder.to_owned());
        detached(async move {
            let decide = |lock: Option<&Lock>, now| rules::renew(lock, &holder, ttl_ms, now);
            locks.grant(&doc, &holder, decide).await
        })
    }

    fn release<'a>(&'a self, doc: &'a DocName, holder: &'a str) -> LockFuture<'a, Lock> {
        let (locks, doc, holder) = (self.clone(), doc.clone(), holder.to_owned());
        detached(async move { locks.release_lock(&doc, &holder).await })
    }

    fn may_write<'a>(&'a self, doc: &'a DocName, who: &'a str) -> LockFuture<'a, ()> {
        let (locks, doc, who) = (self.clone(), doc.clone(), who.to_owned());
        detached(async move {
            let stand = locks.settle(&doc).await?;
            rules::may_write(stand.lock.as_ref(), &who, now_ms())
        })
    }

    fn forget<'a>(&'a self, doc: &'a DocName) -> LockFuture<'a, ()> {
        async move {
            self.disarm(doc, u64::MAX);
            self.inner.bucket.purge(key(doc)).await.map_err(unavailable)
        }
        .boxed()
    }
}
