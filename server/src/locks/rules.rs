//! The rules of a document's lock, pure: every function takes the lock as it stands (if any)
//! and the time, and says what may happen. [`LockTable`] applies them to a map of documents
//! (one relay's locks); cluster mode applies the same functions to the record it read from
//! JetStream, so both modes follow one set of rules.

use std::collections::HashMap;

use aetherflow_crdt::DocName;

use super::{Lock, LockError, MAX_TTL_MS};

/// What a successful acquire or renew grants, before it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// When the lease ends, ms since the Unix epoch.
    pub expires_ms: u64,
    /// Whether it extends a lease the holder already had (`lock_renewed`, not
    /// `lock_acquired`).
    pub renewal: bool,
}

/// Whether `lock` has run out at `now_ms`.
pub fn expired(lock: &Lock, now_ms: u64) -> bool {
    lock.expires_ms <= now_ms
}

/// `current` unless it has run out at `now_ms`.
pub fn live(current: Option<&Lock>, now_ms: u64) -> Option<&Lock> {
    current.filter(|lock| !expired(lock, now_ms))
}

/// Takes the lock for `holder` for `ttl_ms`: free, expired, or already `holder`'s (which
/// renews it).
pub fn acquire(
    current: Option<&Lock>,
    holder: &str,
    ttl_ms: u64,
    now_ms: u64,
) -> Result<Grant, LockError> {
    check_ttl(ttl_ms)?;
    match live(current, now_ms) {
        Some(lock) if lock.holder != holder => Err(held(lock)),
        found => Ok(Grant {
            expires_ms: now_ms.saturating_add(ttl_ms),
            renewal: found.is_some(),
        }),
    }
}

/// Extends `holder`'s unexpired lock to `now_ms + ttl_ms`.
pub fn renew(
    current: Option<&Lock>,
    holder: &str,
    ttl_ms: u64,
    now_ms: u64,
) -> Result<Grant, LockError> {
    check_ttl(ttl_ms)?;
    held_by(current, holder, now_ms)?;
    Ok(Grant {
        expires_ms: now_ms.saturating_add(ttl_ms),
        renewal: true,
    })
}

/// Whether `holder` may release the lock: it holds it, unexpired.
pub fn release(current: Option<&Lock>, holder: &str, now_ms: u64) -> Result<(), LockError> {
    held_by(current, holder, now_ms)
}

/// Whether `who` may write: the document is unlocked, its lock expired, or `who` holds it.
pub fn may_write(current: Option<&Lock>, who: &str, now_ms: u64) -> Result<(), LockError> {
    match live(current, now_ms) {
        Some(lock) if lock.holder != who => Err(held(lock)),
        _ => Ok(()),
    }
}

fn held_by(current: Option<&Lock>, holder: &str, now_ms: u64) -> Result<(), LockError> {
    match live(current, now_ms) {
        Some(lock) if lock.holder != holder => Err(held(lock)),
        Some(_) => Ok(()),
        None => Err(LockError::NotLocked),
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

/// Every document's lock on one relay, as of a time the caller gives.
#[derive(Debug, Default)]
pub struct LockTable {
    locks: HashMap<DocName, Lock>,
    next_lease: u64,
}

impl LockTable {
    /// The lock on `doc` at `now_ms`; an expired one is removed and returned as `Err`.
    pub fn current(&mut self, doc: &DocName, now_ms: u64) -> Result<Option<&Lock>, Lock> {
        if let Some(lock) = self.locks.get(doc)
            && expired(lock, now_ms)
        {
            return Err(self.locks.remove(doc).expect("present: just looked it up"));
        }
        Ok(self.locks.get(doc))
    }

    /// See [`acquire`]; returns the lock and whether it renewed the holder's own.
    pub fn acquire(
        &mut self,
        doc: &DocName,
        holder: &str,
        ttl_ms: u64,
        now_ms: u64,
    ) -> Result<(Lock, bool), LockError> {
        let grant = acquire(self.locks.get(doc), holder, ttl_ms, now_ms)?;
        Ok((self.grant(doc, holder, grant), grant.renewal))
    }

    /// See [`renew`].
    pub fn renew(
        &mut self,
        doc: &DocName,
        holder: &str,
        ttl_ms: u64,
        now_ms: u64,
    ) -> Result<Lock, LockError> {
        let grant = renew(self.locks.get(doc), holder, ttl_ms, now_ms)?;
        Ok(self.grant(doc, holder, grant))
    }

    /// Frees `holder`'s unexpired lock.
    pub fn release(&mut self, doc: &DocName, holder: &str, now_ms: u64) -> Result<Lock, LockError> {
        release(self.locks.get(doc), holder, now_ms)?;
        Ok(self.locks.remove(doc).expect("present: release found it"))
    }

    /// See [`may_write`].
    pub fn may_write(&self, doc: &DocName, who: &str, now_ms: u64) -> Result<(), LockError> {
        may_write(self.locks.get(doc), who, now_ms)
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

    fn grant(&mut self, doc: &DocName, holder: &str, grant: Grant) -> Lock {
        self.next_lease += 1;
        let lock = Lock {
            holder: holder.to_owned(),
            expires_ms: grant.expires_ms,
            lease: self.next_lease,
        };
        self.locks.insert(doc.clone(), lock.clone());
        lock
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
        let (lock, renewal) = table.acquire(&doc(), "ann", 100, 0).expect("free");
        assert_eq!((lock.expires_ms, renewal), (100, false));
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
    fn the_holder_acquiring_again_renews_and_anyone_takes_an_expired_lock() {
        let ann = Lock {
            holder: "ann".into(),
            expires_ms: 100,
            lease: 1,
        };
        assert_eq!(
            acquire(Some(&ann), "ann", 10, 50),
            Ok(Grant {
                expires_ms: 60,
                renewal: true
            })
        );
        assert_eq!(
            acquire(Some(&ann), "bob", 10, 100),
            Ok(Grant {
                expires_ms: 110,
                renewal: false
            })
        );
        assert_eq!(release(Some(&ann), "ann", 100), Err(LockError::NotLocked));
    }

    #[test]
    fn a_stale_timer_does_not_free_a_renewed_lease() {
        let mut table = LockTable::default();
        let (first, _) = table.acquire(&doc(), "ann", 100, 0).expect("free");
        table.renew(&doc(), "ann", 100, 90).expect("held");
        assert_eq!(table.expire(&doc(), first.lease), None);
        assert!(table.current(&doc(), 100).expect("not expired").is_some());
    }

    #[test]
    fn ttl_out_of_range_is_refused() {
        let mut table = LockTable::default();
        assert_eq!(
            table.acquire(&doc(), "ann", 0, 0).map(|(l, _)| l),
            Err(LockError::BadTtl)
        );
        assert_eq!(
            table
                .acquire(&doc(), "ann", MAX_TTL_MS + 1, 0)
                .map(|(l, _)| l),
            Err(LockError::BadTtl)
        );
    }
}
