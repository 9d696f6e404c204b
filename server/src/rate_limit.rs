//! Token buckets: the per-address connection limit and the per-session message limit.
//!
//! A [`TokenBucket`] is pure: it takes the current [`Instant`] as an argument, so it is tested
//! with virtual time. [`ConnectionLimiter`] keeps one bucket per remote IP address behind a
//! mutex; a session owns its own message bucket and needs no lock.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use aetherflow_server::rate_limit::{Rate, TokenBucket};
//!
//! let start = Instant::now();
//! // 2 per second, bursts of up to 3.
//! let mut bucket = TokenBucket::new(Rate::per_second(2, 3), start);
//! assert!(bucket.try_take(start).is_ok());
//! assert!(bucket.try_take(start).is_ok());
//! assert!(bucket.try_take(start).is_ok());
//! let wait = bucket.try_take(start).unwrap_err();
//! assert_eq!(wait, Duration::from_millis(500));
//! assert!(bucket.try_take(start + wait).is_ok());
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How fast tokens refill and how many a bucket holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    per_second: f64,
    /// Most tokens a bucket holds: the burst allowed after a quiet spell.
    burst: u32,
}

impl Rate {
    /// `per_second` tokens a second, holding at most `burst` (at least 1).
    pub fn per_second(per_second: u32, burst: u32) -> Rate {
        Rate {
            per_second: f64::from(per_second),
            burst: burst.max(1),
        }
    }

    /// `per_minute` tokens a minute, holding at most `burst` (at least 1).
    pub fn per_minute(per_minute: u32, burst: u32) -> Rate {
        Rate {
            per_second: f64::from(per_minute) / 60.0,
            burst: burst.max(1),
        }
    }

    /// The burst size.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Tokens added per second.
    pub fn tokens_per_second(&self) -> f64 {
        self.per_second
    }
}

/// A token bucket: starts full, refills continuously, and refuses a take when empty.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: Rate,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: Rate, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            tokens: f64::from(rate.burst),
            updated: now,
        }
    }

    /// The bucket's rate.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes one token, or says how long until one is available. A clock that went backwards
    /// (`now` before the last call) refills nothing.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        if self.rate.per_second <= 0.0 {
            // A zero rate never refills; say "a long time" rather than infinity.
            return Err(Duration::from_secs(3600));
        }
        let missing = 1.0 - self.tokens;
        Err(Duration::from_secs_f64(missing / self.rate.per_second))
    }

    /// How long until `tokens` (at most the burst) are in the bucket, without taking any;
    /// zero if they already are. A zero rate says "a long time", as [`try_take`] does.
    ///
    /// [`try_take`]: TokenBucket::try_take
    pub fn time_until(&mut self, tokens: u32, now: Instant) -> Duration {
        self.refill(now);
        let wanted = f64::from(tokens.min(self.rate.burst));
        if self.tokens >= wanted {
            return Duration::ZERO;
        }
        if self.rate.per_second <= 0.0 {
            return Duration::from_secs(3600);
        }
        Duration::from_secs_f64((wanted - self.tokens) / self.rate.per_second)
    }

    /// Whether the bucket is full at `now`, so forgetting it changes nothing.
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= f64::from(self.rate.burst)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * self.rate.per_second).min(f64::from(self.rate.burst));
        self.updated = self.updated.max(now);
    }
}

/// Buckets kept before full ones are swept out, bounding memory under many addresses.
const SWEEP_ABOVE: usize = 4096;

/// The connection limit: one bucket per remote IP address. `None` rate means unlimited.
#[derive(Clone)]
pub struct ConnectionLimiter {
    rate: Option<Rate>,
    buckets: Arc<Mutex<HashMap<IpAddr, TokenBucket>>>,
}

impl ConnectionLimiter {
    /// A limiter allowing `rate` connections per address; `None` allows everything.
    pub fn new(rate: Option<Rate>) -> ConnectionLimiter {
        ConnectionLimiter {
            rate,
            buckets: Arc::default(),
        }
    }

    /// Admits one connection from `ip`, or says how long it must wait.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        // A poisoned lock only means another request panicked mid-update; the map is still
        // a valid map of buckets.
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() > SWEEP_ABOVE {
            buckets.retain(|_, bucket| !bucket.is_full(now));
        }
        buckets
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(rate, now))
            .try_take(now)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_allows_its_burst_then_refuses() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(Rate::per_second(10, 5), t0);
        for _ in 0..5 {
            assert!(bucket.try_take(t0).is_ok());
        }
        assert_eq!(bucket.try_take(t0), Err(Duration::from_millis(100)));
    }

    #[test]
    fn tokens_refill_at_the_rate_and_never_beyond_the_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(Rate::per_second(2, 4), t0);
        for _ in 0..4 {
            bucket.try_take(t0).unwrap();
        }
        // One second later: two tokens back, not more.
        let t1 = t0 + Duration::from_secs(1);
        assert!(bucket.try_take(t1).is_ok());
        assert!(bucket.try_take(t1).is_ok());
        assert!(bucket.try_take(t1).is_err());
        // An hour of quiet refills only up to the burst.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..4 {
            assert!(bucket.try_take(t2).is_ok());
        }
        assert!(bucket.try_take(t2).is_err());
    }

    #[test]
    fn a_steady_stream_at_the_rate_is_never_refused() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(Rate::per_second(100, 1), t0);
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_millis(10 * i);
            assert!(bucket.try_take(now).is_ok(), "refused message {i}");
        }
    }

    #[test]
    fn per_minute_rates_tell_the_wait_in_seconds() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(Rate::per_minute(6, 1), t0);
        bucket.try_take(t0).unwrap();
        let wait = bucket.try_take(t0).unwrap_err();
        assert_eq!(wait.as_secs(), 10);
    }

    #[test]
    fn a_clock_going_backwards_refills_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut bucket = TokenBucket::new(Rate::per_second(1, 1), t0);
        bucket.try_take(t0).unwrap();
        let earlier = t0 - Duration::from_secs(5);
        assert!(bucket.try_take(earlier).is_err());
        assert!(bucket.try_take(t0).is_err());
    }

    #[test]
    fn a_zero_rate_refuses_after_the_burst_with_a_finite_wait() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(Rate::per_second(0, 1), t0);
        bucket.try_take(t0).unwrap();
        assert_eq!(bucket.try_take(t0), Err(Duration::from_secs(3600)));
    }

    #[test]
    fn time_until_waits_for_the_tokens_asked_without_taking_any() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(Rate::per_second(10, 5), t0);
        assert_eq!(bucket.time_until(5, t0), Duration::ZERO);
        for _ in 0..5 {
            bucket.try_take(t0).unwrap();
        }
        assert_eq!(bucket.time_until(1, t0), Duration::from_millis(100));
        // Never more than the burst, however many are asked for.
        assert_eq!(bucket.time_until(50, t0), Duration::from_millis(500));
        assert!(bucket.try_take(t0 + Duration::from_millis(100)).is_ok());
    }

    #[test]
    fn each_address_has_its_own_bucket() {
        let limiter = ConnectionLimiter::new(Some(Rate::per_minute(1, 2)));
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limiter.admit(a, t0).is_ok());
        assert!(limiter.admit(a, t0).is_ok());
        assert!(limiter.admit(a, t0).is_err());
        assert!(limiter.admit(b, t0).is_ok());
    }

    #[test]
    fn no_rate_means_no_limit() {
        let limiter = ConnectionLimiter::new(None);
        let ip: IpAddr = "::1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert!(limiter.admit(ip, t0).is_ok());
        }
    }

    #[test]
    fn full_buckets_are_swept_when_many_addresses_pile_up() {
        let limiter = ConnectionLimiter::new(Some(Rate::per_second(1, 1)));
        let t0 = Instant::now();
        for i in 0..=SWEEP_ABOVE as u32 {
            limiter.admit(IpAddr::from(i.to_be_bytes()), t0).unwrap();
        }
        // Later every bucket has refilled, so the next admit sweeps them all out.
        let later = t0 + Duration::from_secs(2);
        limiter.admit("192.0.2.1".parse().unwrap(), later).unwrap();
        assert_eq!(limiter.buckets.lock().unwrap().len(), 1);
    }
}
