//! NewReno, the loss-based controller Quantum used before BBR; kept as an option.

use std::time::Instant;

use super::{Ack, CongestionController};

/// NewReno (RFC 9002 section 7 flavour): slow start, congestion avoidance, one window halving
/// per loss episode, and collapse to the minimum window on a retransmission timeout.
///
/// It does not pace, and every loss episode halves the window; choose it with
/// [`Algorithm::NewReno`](super::Algorithm::NewReno).
#[derive(Debug, Clone)]
pub struct NewReno {
    /// Maximum packet size the window is counted in.
    mss: u64,
    /// Congestion window in bytes.
    window: u64,
    /// Slow-start threshold in bytes.
    ssthresh: u64,
    /// Bytes acknowledged in congestion avoidance not yet turned into window growth.
    acked_in_avoidance: u64,
    /// Start of the current loss episode; losses of packets sent before it do not cut again.
    recovery_start: Option<Instant>,
}

impl NewReno {
    /// A controller counting in packets of `mss` bytes, starting at ten packets.
    pub fn new(mss: u64) -> NewReno {
        NewReno {
            mss,
            window: 10 * mss,
            ssthresh: u64::MAX,
            acked_in_avoidance: 0,
            recovery_start: None,
        }
    }

    fn min_window(&self) -> u64 {
        2 * self.mss
    }
}

impl CongestionController for NewReno {
    fn on_sent(&mut self, _now: Instant, _bytes: u64, _bytes_in_flight: u64) {}

    fn on_ack(&mut self, _now: Instant, ack: &Ack) {
        let bytes = ack.bytes;
        if self.window < self.ssthresh {
            self.window += bytes;
            return;
        }
        self.acked_in_avoidance += bytes;
        if self.acked_in_avoidance >= self.window {
            self.acked_in_avoidance -= self.window;
            self.window += self.mss;
        }
    }

    fn on_loss(&mut self, now: Instant, _bytes: u64, sent: Instant) {
        if self.recovery_start.is_some_and(|start| sent <= start) {
            return;
        }
        self.recovery_start = Some(now);
        self.ssthresh = (self.window / 2).max(self.min_window());
        self.window = self.ssthresh;
        self.acked_in_avoidance = 0;
    }

    fn on_rto(&mut self, now: Instant) {
        self.ssthresh = (self.window / 2).max(self.min_window());
        self.window = self.min_window();
        self.recovery_start = Some(now);
        self.acked_in_avoidance = 0;
    }

    fn window(&self) -> u64 {
        self.window
    }

    fn pacing_rate(&self) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn slow_start_then_one_halving_per_episode() {
        let t0 = Instant::now();
        let mut cc = NewReno::new(1000);
        let ack = Ack {
            bytes: 5000,
            rtt: None,
            bytes_in_flight: 0,
            rate: None,
        };
        cc.on_ack(t0, &ack);
        assert_eq!(cc.window(), 15_000);
        let t1 = t0 + Duration::from_millis(100);
        cc.on_loss(t1, 1000, t0);
        assert_eq!(cc.window(), 7_500);
        // A second loss from the same flight does not halve again.
        cc.on_loss(t1, 1000, t0);
        assert_eq!(cc.window(), 7_500);
        cc.on_rto(t1 + Duration::from_secs(1));
        assert_eq!(cc.window(), 2_000);
    }
}
