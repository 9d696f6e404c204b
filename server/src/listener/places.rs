//! The listener's connection places: who gets one, who is cut to make room, and the
//! rate-limited warning about both.
//!
//! There are `--max-connections` places: the last [`health_places`] of them serve `/healthz`
//! only, so connections that finish requests (WebSockets, say) cannot take every place from a
//! health check. Connections that have not yet sent a complete request head are listed, oldest
//! first; when every place is taken, a newcomer cuts the oldest of them (one in a general place
//! if there is any) and takes its place, handed over directly so no one else can grab it, so a
//! flood of connections that never finish a head (a slow-header attack) cannot lock anyone
//! out: the newest connections, which include every client that sends its request at once, are
//! served. Only when no listed connection is left is a newcomer refused.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Shortest time between two warnings about refused or cut connections.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Longest a newcomer waits for the place of the connection it cut (its task has to notice).
const TAKE_OVER_WAIT: Duration = Duration::from_secs(1);

/// Places kept for `/healthz` out of `max_connections`: a sixteenth, from 1 to 64.
pub fn health_places(max_connections: usize) -> usize {
    (max_connections / 16).clamp(1, 64)
}

/// A connection's place, given back when the connection's socket closes, or handed to the
/// newcomer that cut the connection.
pub(super) struct Place {
    permit: Option<OwnedSemaphorePermit>,
    /// Whether it is one of the places kept for health checks.
    pub(super) health_only: bool,
    /// The connection's entry in the list of those that may be cut.
    pub(super) pending: Arc<Pending>,
}

/// A place on its way from a cut connection to the newcomer that cut it.
pub(super) struct Handover {
    permit: OwnedSemaphorePermit,
    health_only: bool,
}

impl Drop for Place {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let heir = self
            .pending
            .heir
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        // Straight to the newcomer, so no other connection can take the place in between;
        // if the newcomer has given up, the permit goes back to the semaphore.
        if let Some(heir) = heir {
            let _ = heir.send(Handover {
                permit,
                health_only: self.health_only,
            });
        }
    }
}

/// A connection still waiting for its first complete request head.
pub(super) struct Pending {
    /// [`WAITING`], [`SERVED`] or [`CUT`]; the first to move it from `WAITING` decides.
    state: AtomicU8,
    /// Cancelled when the connection is cut.
    pub(super) cut: CancellationToken,
    /// The newcomer that cut it, waiting for its place.
    heir: Mutex<Option<oneshot::Sender<Handover>>>,
}

const WAITING: u8 = 0;
const SERVED: u8 = 1;
const CUT: u8 = 2;

impl Pending {
    /// Marks the connection as having sent a complete head; false if it was cut first.
    pub(super) fn served(&self) -> bool {
        match self
            .state
            .compare_exchange(WAITING, SERVED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(current) => current == SERVED,
        }
    }

    /// Cuts the connection if it is still waiting, with `heir` to receive its place.
    fn try_cut(&self, heir: oneshot::Sender<Handover>) -> bool {
        if self
            .state
            .compare_exchange(WAITING, CUT, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        *self
            .heir
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(heir);
        self.cut.cancel();
        true
    }
}

/// Every place, and the connections that may be cut.
pub(super) struct Places {
    general: Arc<Semaphore>,
    health: Arc<Semaphore>,
    /// Newcomers waiting for the place of a connection they cut: as many as places for
    /// health checks, at least 8, so the sockets over the cap stay few.
    takers: Arc<Semaphore>,
    /// Connections without a complete head yet, oldest first (and some served or gone ones,
    /// pruned as the lists grow): those in general places, then those in places kept for
    /// health checks, which are cut only when no other is left (a newcomer inherits the kind
    /// of place it takes over).
    pending: Mutex<[VecDeque<Weak<Pending>>; 2]>,
    max_connections: usize,
    log: RefusalLog,
}

/// What to do with a newcomer when every place is taken.
pub(super) enum Full {
    /// It cut a waiting connection; its place arrives here ([`Places::take_over`]).
    TakeOver(TakeOver),
    /// Refuse it.
    Refuse,
}

/// A newcomer's claim on the place of the connection it cut.
pub(super) struct TakeOver {
    place: oneshot::Receiver<Handover>,
    /// Counts the newcomer among those waiting.
    _taker: OwnedSemaphorePermit,
}

impl Places {
    pub(super) fn new(max_connections: usize) -> Places {
        let health = health_places(max_connections).min(max_connections.saturating_sub(1));
        Places {
            general: Arc::new(Semaphore::new(max_connections - health)),
            health: Arc::new(Semaphore::new(health)),
            takers: Arc::new(Semaphore::new(health.max(8))),
            pending: Mutex::new([VecDeque::new(), VecDeque::new()]),
            max_connections,
            log: RefusalLog::default(),
        }
    }

    /// A free place, general ones first.
    pub(super) fn take(&self) -> Option<Place> {
        if let Ok(permit) = self.general.clone().try_acquire_owned() {
            return Some(self.place(permit, false));
        }
        let permit = self.health.clone().try_acquire_owned().ok()?;
        Some(self.place(permit, true))
    }

    /// Every place is taken: cuts the oldest connection still waiting for its first head, if
    /// there is one and not too many newcomers wait already.
    pub(super) fn full(&self) -> Full {
        let Ok(taker) = self.takers.clone().try_acquire_owned() else {
            self.log.refused(self.max_connections);
            return Full::Refuse;
        };
        let mut pending = self.lock();
        for list in pending.iter_mut() {
            while let Some(oldest) = list.pop_front() {
                let Some(oldest) = oldest.upgrade() else {
                    continue;
                };
                let (heir, place) = oneshot::channel();
                if oldest.try_cut(heir) {
                    drop(pending);
                    self.log.cut(self.max_connections);
                    return Full::TakeOver(TakeOver {
                        place,
                        _taker: taker,
                    });
                }
            }
        }
        drop(pending);
        self.log.refused(self.max_connections);
        Full::Refuse
    }

    /// Waits (briefly) for the place of the connection the newcomer cut; if that connection
    /// closed by itself meanwhile, a place that is free.
    pub(super) async fn take_over(&self, claim: TakeOver) -> Option<Place> {
        let place = match tokio::time::timeout(TAKE_OVER_WAIT, claim.place).await {
            Ok(Ok(handover)) => Some(self.place(handover.permit, handover.health_only)),
            _ => self.take(),
        };
        if place.is_none() {
            self.log.refused(self.max_connections);
        }
        place
    }

    /// A place for a new connection, listed as waiting for its first head.
    fn place(&self, permit: OwnedSemaphorePermit, health_only: bool) -> Place {
        Place {
            permit: Some(permit),
            health_only,
            pending: self.register(health_only),
        }
    }

    /// Lists a new connection as waiting for its first head.
    fn register(&self, health_only: bool) -> Arc<Pending> {
        let entry = Arc::new(Pending {
            state: AtomicU8::new(WAITING),
            cut: CancellationToken::new(),
            heir: Mutex::new(None),
        });
        let mut lists = self.lock();
        let pending = &mut lists[usize::from(health_only)];
        // Served and closed connections leave entries behind; dropping them once the list is
        // twice the connection cap keeps it within about that and costs O(1) per connection.
        if pending.len() >= self.max_connections.saturating_mul(2) {
            pending.retain(|p| {
                p.upgrade()
                    .is_some_and(|p| p.state.load(Ordering::Acquire) == WAITING)
            });
        }
        pending.push_back(Arc::downgrade(&entry));
        entry
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [VecDeque<Weak<Pending>>; 2]> {
        // Pushes, pops and a retain cannot leave the list inconsistent.
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Counts refused and cut connections and logs at most one warning per
/// [`REFUSAL_LOG_EVERY`].
#[derive(Default)]
struct RefusalLog {
    /// When the last warning was logged, and the refusals and cuts since.
    state: Mutex<(Option<Instant>, u64, u64)>,
}

impl RefusalLog {
    fn refused(&self, max_connections: usize) {
        self.record(max_connections, 1, 0);
    }

    fn cut(&self, max_connections: usize) {
        self.record(max_connections, 0, 1);
    }

    fn record(&self, max_connections: usize, refused: u64, cut: u64) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.1 += refused;
        state.2 += cut;
        let now = Instant::now();
        if state
            .0
            .is_some_and(|last| now.duration_since(last) < REFUSAL_LOG_EVERY)
        {
            return;
        }
        warn!(
            refused = state.1,
            cut_without_request = state.2,
            max_connections,
            "at the connection limit (--max-connections): refusing connections and cutting \
             those that have not sent a request"
        );
        *state = (Some(now), 0, 0);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn places_for_health_checks_are_a_sixteenth_within_bounds() {
        assert_eq!(health_places(2), 1);
        assert_eq!(health_places(64), 4);
        assert_eq!(health_places(896), 56);
        assert_eq!(health_places(100_000), 64);
    }

    #[test]
    fn the_last_places_serve_health_checks_only() {
        let places = Places::new(4);
        let taken: Vec<Place> = std::iter::from_fn(|| places.take()).collect();
        let health: Vec<bool> = taken.iter().map(|p| p.health_only).collect();
        assert_eq!(health, [false, false, false, true]);
        drop(taken);
        assert!(places.take().is_some_and(|p| !p.health_only));
    }

    #[tokio::test]
    async fn a_full_relay_cuts_the_oldest_connection_without_a_request_and_never_a_served_one() {
        let places = Places::new(3);
        let served = places.take().unwrap();
        let oldest = places.take().unwrap();
        let newer = places.take().unwrap();
        assert!(places.take().is_none());
        assert!(served.pending.served());
        let Full::TakeOver(claim) = places.full() else {
            panic!("nothing cut");
        };
        assert!(oldest.pending.cut.is_cancelled());
        assert!(!newer.pending.cut.is_cancelled() && !served.pending.cut.is_cancelled());
        // A cut connection's late head is not served.
        assert!(!oldest.pending.served());
        // Its place goes to the newcomer, not to whoever asks first.
        let was_health_only = oldest.health_only;
        drop(oldest);
        assert!(places.take().is_none());
        let taken = places.take_over(claim).await.unwrap();
        assert_eq!(taken.health_only, was_health_only);
        // The newcomer has not sent a head either: it is next (its place is a general one,
        // `newer`'s is kept for health checks), then `newer`, then nothing.
        assert!(matches!(places.full(), Full::TakeOver(_)));
        assert!(taken.pending.cut.is_cancelled() && !newer.pending.cut.is_cancelled());
        assert!(matches!(places.full(), Full::TakeOver(_)));
        assert!(newer.pending.cut.is_cancelled());
        assert!(matches!(places.full(), Full::Refuse));
        assert!(!served.pending.cut.is_cancelled());
    }

    #[test]
    fn a_place_kept_for_health_checks_is_cut_only_when_no_other_is_left() {
        let places = Places::new(2);
        let first = places.take().unwrap();
        let health = places.take().unwrap();
        assert!(!first.health_only && health.health_only);
        drop(first);
        // Newer than the connection in the health place, and still cut first.
        let general = places.take().unwrap();
        assert!(matches!(places.full(), Full::TakeOver(_)));
        assert!(general.pending.cut.is_cancelled() && !health.pending.cut.is_cancelled());
        assert!(matches!(places.full(), Full::TakeOver(_)));
        assert!(health.pending.cut.is_cancelled());
    }

    #[test]
    fn the_waiting_list_stays_near_the_cap() {
        let places = Places::new(4);
        for _ in 0..100 {
            let place = places.take().unwrap();
            assert!(place.pending.served());
        }
        assert!(places.lock()[0].len() <= 9);
    }
}
