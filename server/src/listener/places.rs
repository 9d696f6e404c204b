//! The listener's connection places: who gets one, who is cut to make room, and the
//! rate-limited warning about both.
//!
//! There are `--max-connections` places: the last [`health_places`] of them serve `/healthz`
//! only, so connections that finish requests (WebSockets, say) cannot take every place from a
//! health check. Connections that have not yet sent a complete request head are listed, oldest
//! first; when every place is taken, a newcomer cuts the oldest of them and takes its place, so
//! a flood of connections that never finish a head (a slow-header attack) cannot lock anyone
//! out: the newest connections, which include every client that sends its request at once, are
//! served. Only when no listed connection is left is a newcomer refused.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Shortest time between two warnings about refused or cut connections.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Longest a newcomer waits for the place of the connection it cut.
const TAKE_OVER_WAIT: Duration = Duration::from_secs(1);

/// Places kept for `/healthz` out of `max_connections`: a sixteenth, from 1 to 64.
pub fn health_places(max_connections: usize) -> usize {
    (max_connections / 16).clamp(1, 64)
}

/// A connection's place, given back when the connection's socket closes.
pub(super) struct Place {
    _permit: OwnedSemaphorePermit,
    /// Whether it is one of the places kept for health checks.
    pub(super) health_only: bool,
}

/// A connection still waiting for its first complete request head.
pub(super) struct Pending {
    /// [`WAITING`], [`SERVED`] or [`CUT`]; the first to move it from `WAITING` decides.
    state: AtomicU8,
    /// Cancelled when the connection is cut.
    pub(super) cut: CancellationToken,
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

    fn try_cut(&self) -> bool {
        let cut = self
            .state
            .compare_exchange(WAITING, CUT, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if cut {
            self.cut.cancel();
        }
        cut
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
    /// pruned as the list grows).
    pending: Mutex<VecDeque<Weak<Pending>>>,
    max_connections: usize,
    log: RefusalLog,
}

/// What to do with a newcomer when every place is taken.
pub(super) enum Full {
    /// It cut a waiting connection; wait with this for its place ([`Places::take_over`]).
    TakeOver(OwnedSemaphorePermit),
    /// Refuse it.
    Refuse,
}

impl Places {
    pub(super) fn new(max_connections: usize) -> Places {
        let health = health_places(max_connections).min(max_connections.saturating_sub(1));
        Places {
            general: Arc::new(Semaphore::new(max_connections - health)),
            health: Arc::new(Semaphore::new(health)),
            takers: Arc::new(Semaphore::new(health.max(8))),
            pending: Mutex::new(VecDeque::new()),
            max_connections,
            log: RefusalLog::default(),
        }
    }

    /// A free place, general ones first.
    pub(super) fn take(&self) -> Option<Place> {
        if let Ok(permit) = self.general.clone().try_acquire_owned() {
            return Some(Place {
                _permit: permit,
                health_only: false,
            });
        }
        let permit = self.health.clone().try_acquire_owned().ok()?;
        Some(Place {
            _permit: permit,
            health_only: true,
        })
    }

    /// Every place is taken: cuts the oldest connection still waiting for its first head, if
    /// there is one and not too many newcomers wait already.
    pub(super) fn full(&self) -> Full {
        let Ok(taker) = self.takers.clone().try_acquire_owned() else {
            self.log.refused(self.max_connections);
            return Full::Refuse;
        };
        let mut pending = self.lock();
        while let Some(oldest) = pending.pop_front() {
            if oldest.upgrade().is_some_and(|p| p.try_cut()) {
                drop(pending);
                self.log.cut(self.max_connections);
                return Full::TakeOver(taker);
            }
        }
        drop(pending);
        self.log.refused(self.max_connections);
        Full::Refuse
    }

    /// Waits (briefly) for a place freed by a cut connection.
    pub(super) async fn take_over(&self, taker: OwnedSemaphorePermit) -> Option<Place> {
        let general = self.general.clone();
        let health = self.health.clone();
        let place = tokio::time::timeout(TAKE_OVER_WAIT, async move {
            tokio::select! {
                biased;
                permit = general.acquire_owned() => permit.ok().map(|permit| Place {
                    _permit: permit,
                    health_only: false,
                }),
                permit = health.acquire_owned() => permit.ok().map(|permit| Place {
                    _permit: permit,
                    health_only: true,
                }),
            }
        })
        .await
        .ok()
        .flatten();
        drop(taker);
        if place.is_none() {
            self.log.refused(self.max_connections);
        }
        place
    }

    /// Lists a new connection as waiting for its first head.
    pub(super) fn register(&self) -> Arc<Pending> {
        let entry = Arc::new(Pending {
            state: AtomicU8::new(WAITING),
            cut: CancellationToken::new(),
        });
        let mut pending = self.lock();
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

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Weak<Pending>>> {
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

    #[test]
    fn a_full_relay_cuts_the_oldest_connection_without_a_request_and_never_a_served_one() {
        let places = Places::new(4);
        let served = places.register();
        let oldest = places.register();
        let newer = places.register();
        assert!(served.served());
        assert!(matches!(places.full(), Full::TakeOver(_)));
        assert!(oldest.cut.is_cancelled());
        assert!(!newer.cut.is_cancelled() && !served.cut.is_cancelled());
        // A cut connection's late head is not served.
        assert!(!oldest.served());
        assert!(matches!(places.full(), Full::TakeOver(_)));
        assert!(newer.cut.is_cancelled());
        assert!(matches!(places.full(), Full::Refuse));
        assert!(!served.cut.is_cancelled());
    }

    #[test]
    fn the_waiting_list_stays_near_the_cap() {
        let places = Places::new(4);
        let kept: Vec<Arc<Pending>> = (0..100).map(|_| places.register()).collect();
        for p in &kept {
            assert!(p.served());
        }
        drop(kept);
        for _ in 0..100 {
            let _ = places.register();
        }
        assert!(places.lock().len() <= 9);
    }
}
