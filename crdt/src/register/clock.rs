//! Hybrid logical clocks: timestamps that follow physical time but never run backwards and
//! always exceed every stamp seen, so causally later writes get larger stamps even across
//! machines whose clocks disagree a little.
//!
//! The caller passes the physical time (milliseconds since the Unix epoch) in; nothing here
//! reads a clock.

use serde::{Deserialize, Serialize};

/// One hybrid-logical-clock reading: physical milliseconds, then a counter for events within
/// the same millisecond. Ordered by `(wall_ms, counter)`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct HlcStamp {
    /// Milliseconds since the Unix epoch (the largest physical time seen).
    pub wall_ms: u64,
    /// Events at `wall_ms`, counted from 0.
    pub counter: u32,
}

/// How far ahead of the receiver's physical time a stamp may be, in milliseconds: one minute
/// covers ordinary clock skew between machines, while a stamp beyond it (a broken clock, or a
/// writer stamping `u64::MAX` to pin a last-writer-wins register forever) is refused.
pub const MAX_DRIFT_MS: u64 = 60_000;

/// A remote stamp that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// The stamp is further ahead of our physical time than the allowed drift: a broken or
    /// hostile clock that would drag every later stamp into the future.
    #[error(
        "stamp {stamp_ms} ms is {ahead_ms} ms ahead of local time (at most {max_drift_ms} ms allowed)"
    )]
    TooFarAhead {
        /// The remote stamp's physical part.
        stamp_ms: u64,
        /// How far ahead of local time it is.
        ahead_ms: u64,
        /// The configured bound.
        max_drift_ms: u64,
    },
}

/// A hybrid logical clock for one replica.
#[derive(Debug, Clone, Default)]
pub struct HybridClock {
    last: HlcStamp,
}

impl HybridClock {
    /// A clock that has seen nothing yet.
    pub fn new() -> HybridClock {
        HybridClock::default()
    }

    /// The last stamp issued or observed.
    pub fn last(&self) -> HlcStamp {
        self.last
    }

    /// Stamps a local event at physical time `now_ms`: larger than every stamp before it.
    pub fn tick(&mut self, now_ms: u64) -> HlcStamp {
        self.last = if now_ms > self.last.wall_ms {
            HlcStamp {
                wall_ms: now_ms,
                counter: 0,
            }
        } else {
            successor(self.last)
        };
        self.last
    }

    /// Takes in a stamp received from elsewhere at physical time `now_ms`, so that the next
    /// [`tick`](Self::tick) exceeds it. Refuses stamps more than `max_drift_ms` ahead of `now_ms`.
    pub fn observe(
        &mut self,
        remote: HlcStamp,
        now_ms: u64,
        max_drift_ms: u64,
    ) -> Result<(), ClockError> {
        check_drift(remote, now_ms, max_drift_ms)?;
        self.last = self.last.max(remote);
        Ok(())
    }
}

/// Whether `stamp` is at most `max_drift_ms` ahead of the physical time `now_ms`: the check
/// [`HybridClock::observe`] makes, for a receiver that keeps no clock of its own (the relay
/// checking a register write before storing it).
pub fn check_drift(stamp: HlcStamp, now_ms: u64, max_drift_ms: u64) -> Result<(), ClockError> {
    let ahead_ms = stamp.wall_ms.saturating_sub(now_ms);
    if ahead_ms > max_drift_ms {
        return Err(ClockError::TooFarAhead {
            stamp_ms: stamp.wall_ms,
            ahead_ms,
            max_drift_ms,
        });
    }
    Ok(())
}

/// The next stamp after `stamp` within the same millisecond; a full counter moves on to the
/// next millisecond instead of wrapping.
fn successor(stamp: HlcStamp) -> HlcStamp {
    match stamp.counter.checked_add(1) {
        Some(counter) => HlcStamp {
            wall_ms: stamp.wall_ms,
            counter,
        },
        None => HlcStamp {
            wall_ms: stamp.wall_ms.saturating_add(1),
            counter: 0,
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn follows_physical_time_when_it_moves_forward() {
        let mut clock = HybridClock::new();
        assert_eq!(
            clock.tick(100),
            HlcStamp {
                wall_ms: 100,
                counter: 0
            }
        );
        assert_eq!(
            clock.tick(250),
            HlcStamp {
                wall_ms: 250,
                counter: 0
            }
        );
    }

    #[test]
    fn counts_within_a_millisecond_and_when_time_goes_backwards() {
        let mut clock = HybridClock::new();
        clock.tick(100);
        assert_eq!(
            clock.tick(100),
            HlcStamp {
                wall_ms: 100,
                counter: 1
            }
        );
        assert_eq!(
            clock.tick(50),
            HlcStamp {
                wall_ms: 100,
                counter: 2
            }
        );
    }

    #[test]
    fn a_full_counter_moves_to_the_next_millisecond() {
        let mut clock = HybridClock::new();
        let near_full = HlcStamp {
            wall_ms: 7,
            counter: u32::MAX,
        };
        clock.observe(near_full, 7, 0).unwrap();
        assert_eq!(
            clock.tick(7),
            HlcStamp {
                wall_ms: 8,
                counter: 0
            }
        );
    }

    #[test]
    fn observed_stamps_are_exceeded_by_the_next_tick() {
        let mut clock = HybridClock::new();
        let remote = HlcStamp {
            wall_ms: 1_000,
            counter: 5,
        };
        clock.observe(remote, 990, 60_000).unwrap();
        assert!(clock.tick(995) > remote);
    }

    #[test]
    fn stamps_far_in_the_future_are_refused() {
        let mut clock = HybridClock::new();
        let wild = HlcStamp {
            wall_ms: 10_000_000,
            counter: 0,
        };
        let err = clock.observe(wild, 1_000, 60_000).unwrap_err();
        assert!(matches!(err, ClockError::TooFarAhead { .. }));
        assert_eq!(
            clock.last(),
            HlcStamp::default(),
            "a refused stamp is not taken in"
        );
    }

    #[test]
    fn the_drift_bound_admits_skew_up_to_the_bound_and_refuses_the_far_future() {
        let at = |wall_ms| HlcStamp {
            wall_ms,
            counter: u32::MAX,
        };
        let now = 1_000_000;
        assert!(check_drift(at(0), now, MAX_DRIFT_MS).is_ok(), "the past");
        assert!(check_drift(at(now + MAX_DRIFT_MS), now, MAX_DRIFT_MS).is_ok());
        assert_eq!(
            check_drift(at(u64::MAX), now, MAX_DRIFT_MS),
            Err(ClockError::TooFarAhead {
                stamp_ms: u64::MAX,
                ahead_ms: u64::MAX - now,
                max_drift_ms: MAX_DRIFT_MS,
            })
        );
        assert!(check_drift(at(now + MAX_DRIFT_MS + 1), now, MAX_DRIFT_MS).is_err());
    }

    proptest! {
        #[test]
        fn stamps_strictly_increase_whatever_the_physical_time(
            events in proptest::collection::vec((0u64..1_000, any::<bool>(), 0u64..1_000, 0u32..4), 1..200)
        ) {
            let mut clock = HybridClock::new();
            let mut previous = None;
            for (now, receive, remote_ms, remote_counter) in events {
                if receive {
                    let remote = HlcStamp { wall_ms: remote_ms, counter: remote_counter };
                    if clock.observe(remote, now, 500).is_ok() {
                        prop_assert!(clock.last() >= remote);
                    }
                } else {
                    let stamp = clock.tick(now);
                    if let Some(previous) = previous {
                        prop_assert!(stamp > previous);
                    }
                    previous = Some(stamp);
                }
            }
        }
    }
}
