//! The pacer: a token bucket that lets data leave no faster than the controller's pacing rate.
//!
//! The bucket holds a small burst quantum (about a millisecond of data at the pacing rate, at
//! least two packets, at most 64 KiB) and refills at the pacing rate. A sender that was idle
//! finds the bucket full, so a lone message leaves at once; a sender with a backlog drains it
//! and is then released one packet per `size / rate`. Tokens are counted in nanobytes (bytes ×
//! 10⁹), so refilling by `rate × nanoseconds` is exact and a computed release time is never
//! early.

use std::time::{Duration, Instant};

const NANOS: u128 = 1_000_000_000;
/// Largest burst, whatever the rate.
const MAX_BURST: u64 = 64 * 1024;
/// Packets a burst may hold, however slow the rate.
const MIN_BURST_PACKETS: u64 = 2;

/// Token-bucket pacing state of one connection.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    /// Largest packet, for the burst floor.
    mtu: u64,
    /// Tokens in nanobytes; `None` until the first use, when the bucket starts full.
    tokens: Option<u128>,
    /// When the tokens were last refilled.
    last: Option<Instant>,
}

impl Pacer {
    /// A full bucket for packets of at most `mtu` bytes.
    pub fn new(mtu: u64) -> Pacer {
        Pacer {
            mtu,
            tokens: None,
            last: None,
        }
    }

    /// Bytes the bucket holds at `rate`.
    pub fn burst(&self, rate: u64) -> u64 {
        (rate / 1000).clamp(MIN_BURST_PACKETS * self.mtu, MAX_BURST)
    }

    /// When a packet of `len` bytes may leave at pacing `rate` (bytes/s): `None` for now,
    /// otherwise the instant its tokens will have accrued.
    pub fn release(&mut self, now: Instant, len: u64, rate: Option<u64>) -> Option<Instant> {
        let rate = rate.filter(|&r| r > 0)?;
        let capacity = u128::from(self.burst(rate)) * NANOS;
        let elapsed = self
            .last
            .map_or(Duration::ZERO, |last| now.saturating_duration_since(last));
        let refill = u128::from(rate) * elapsed.as_nanos();
        let tokens = self.tokens.map_or(capacity, |t| t.saturating_add(refill));
        let tokens = tokens.min(capacity);
        self.tokens = Some(tokens);
        self.last = Some(now);
        let need = u128::from(len) * NANOS;
        if tokens >= need {
            return None;
        }
        let wait = (need - tokens).div_ceil(u128::from(rate));
        Some(now + Duration::from_nanos(u64::try_from(wait).unwrap_or(u64::MAX)))
    }

    /// Spends the tokens of a packet of `len` bytes that left at `now`.
    pub fn on_sent(&mut self, now: Instant, len: u64) {
        if let Some(tokens) = self.tokens.as_mut() {
            *tokens = tokens.saturating_sub(u128::from(len) * NANOS);
        }
        self.last.get_or_insert(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_rate_nothing_waits() {
        let mut pacer = Pacer::new(1200);
        let t0 = Instant::now();
        for _ in 0..100 {
            assert_eq!(pacer.release(t0, 1200, None), None);
            pacer.on_sent(t0, 1200);
        }
    }

    #[test]
    fn a_burst_leaves_at_once_then_packets_are_spaced_by_size_over_rate() {
        let mut pacer = Pacer::new(1000);
        let t0 = Instant::now();
        let rate = Some(100_000); // 100 kB/s: one 1000-byte packet per 10 ms.
        // The burst is two packets at this rate.
        assert_eq!(pacer.release(t0, 1000, rate), None);
        pacer.on_sent(t0, 1000);
        assert_eq!(pacer.release(t0, 1000, rate), None);
        pacer.on_sent(t0, 1000);
        let next = pacer.release(t0, 1000, rate).expect("bucket empty");
        assert_eq!(next - t0, Duration::from_millis(10));
        // At the release time the packet may go, and the next one waits another 10 ms.
        assert_eq!(pacer.release(next, 1000, rate), None);
        pacer.on_sent(next, 1000);
        let after = pacer.release(next, 1000, rate).expect("bucket empty again");
        assert_eq!(after - next, Duration::from_millis(10));
    }

    #[test]
    fn an_idle_sender_finds_a_full_but_bounded_bucket() {
        let mut pacer = Pacer::new(1000);
        let t0 = Instant::now();
        let rate = Some(100_000);
        assert_eq!(pacer.release(t0, 1000, rate), None);
        pacer.on_sent(t0, 1000);
        // A minute of silence refills only the burst, not a minute's worth.
        let later = t0 + Duration::from_secs(60);
        let mut sent = 0;
        while pacer.release(later, 1000, rate).is_none() {
            pacer.on_sent(later, 1000);
            sent += 1;
        }
        assert_eq!(sent, 2);
    }

    #[test]
    fn the_burst_scales_with_the_rate_within_limits() {
        let pacer = Pacer::new(1200);
        assert_eq!(pacer.burst(10_000), 2400);
        assert_eq!(pacer.burst(10_000_000), 10_000);
        assert_eq!(pacer.burst(10_000_000_000), 64 * 1024);
    }
}
