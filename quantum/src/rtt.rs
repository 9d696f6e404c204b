//! Round-trip time estimation and the retransmission timeout, per RFC 6298.

use std::time::Duration;

/// Clock granularity `G` of RFC 6298; the core works in nanoseconds, but a floor keeps the
/// variance term from collapsing to zero on a perfectly steady path.
pub(crate) const GRANULARITY: Duration = Duration::from_millis(1);

/// Smoothed RTT, RTT variance and the retransmission timeout derived from them.
#[derive(Debug, Clone)]
pub struct RttEstimator {
    /// SRTT, once the first sample arrived.
    smoothed: Option<Duration>,
    /// RTTVAR.
    variance: Duration,
    /// The most recent sample.
    latest: Option<Duration>,
    /// The smallest sample seen.
    min: Option<Duration>,
    /// RTO before any sample (RFC 6298 says 1 s).
    initial_rto: Duration,
    /// Floor of the RTO (RFC 6298 says 1 s; we default lower, as Linux does).
    min_rto: Duration,
    /// Ceiling of the RTO, also after backoff.
    max_rto: Duration,
}

impl RttEstimator {
    /// A fresh estimator.
    pub fn new(initial_rto: Duration, min_rto: Duration, max_rto: Duration) -> RttEstimator {
        RttEstimator {
            smoothed: None,
            variance: Duration::ZERO,
            latest: None,
            min: None,
            initial_rto,
            min_rto,
            max_rto,
        }
    }

    /// Folds in one sample (RFC 6298 section 2, with alpha 1/8 and beta 1/4).
    pub fn update(&mut self, sample: Duration) {
        self.latest = Some(sample);
        self.min = Some(self.min.map_or(sample, |min| min.min(sample)));
        match self.smoothed {
            None => {
                self.smoothed = Some(sample);
                self.variance = sample / 2;
            }
            Some(srtt) => {
                let error = srtt.abs_diff(sample);
                self.variance = (self.variance * 3 + error) / 4;
                self.smoothed = Some((srtt * 7 + sample) / 8);
            }
        }
    }

    /// SRTT, if any sample arrived.
    pub fn smoothed(&self) -> Option<Duration> {
        self.smoothed
    }

    /// The latest sample, if any.
    pub fn latest(&self) -> Option<Duration> {
        self.latest
    }

    /// The smallest sample, if any.
    pub fn min(&self) -> Option<Duration> {
        self.min
    }

    /// RTTVAR.
    pub fn variance(&self) -> Duration {
        self.variance
    }

    /// The retransmission timeout without backoff: `SRTT + max(G, 4·RTTVAR)`, clamped.
    pub fn rto(&self) -> Duration {
        match self.smoothed {
            None => self.initial_rto,
            Some(srtt) => srtt + GRANULARITY.max(self.variance * 4),
        }
        .clamp(self.min_rto, self.max_rto)
    }

    /// The timeout after `backoff` consecutive expiries: doubled each time, capped.
    pub fn backed_off_rto(&self, backoff: u32) -> Duration {
        let factor = 1u32 << backoff.min(16);
        self.rto().saturating_mul(factor).min(self.max_rto)
    }

    /// How long after a later packet was acknowledged an earlier one counts as lost:
    /// 9/8 of the larger of SRTT and the latest sample, as RFC 9002 does.
    pub fn loss_delay(&self) -> Duration {
        let base = match (self.smoothed, self.latest) {
            (Some(srtt), Some(latest)) => srtt.max(latest),
            _ => self.initial_rto,
        };
        (base * 9 / 8).max(GRANULARITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn first_sample_sets_srtt_and_half_variance() {
        let mut rtt = RttEstimator::new(ms(1000), ms(200), ms(60_000));
        assert_eq!(rtt.rto(), ms(1000));
        rtt.update(ms(100));
        assert_eq!(rtt.smoothed(), Some(ms(100)));
        assert_eq!(rtt.variance(), ms(50));
        assert_eq!(rtt.rto(), ms(300));
    }

    #[test]
    fn later_samples_follow_rfc6298_weights() {
        let mut rtt = RttEstimator::new(ms(1000), ms(1), ms(60_000));
        rtt.update(ms(100));
        rtt.update(ms(200));
        // RTTVAR = 3/4·50 + 1/4·100 = 62.5; SRTT = 7/8·100 + 1/8·200 = 112.5.
        assert_eq!(rtt.variance(), Duration::from_micros(62_500));
        assert_eq!(rtt.smoothed(), Some(Duration::from_micros(112_500)));
        assert_eq!(rtt.rto(), Duration::from_micros(362_500));
    }

    #[test]
    fn rto_respects_floor_and_backoff_cap() {
        let mut rtt = RttEstimator::new(ms(1000), ms(200), ms(10_000));
        rtt.update(ms(10));
        assert_eq!(rtt.rto(), ms(200));
        assert_eq!(rtt.backed_off_rto(1), ms(400));
        assert_eq!(rtt.backed_off_rto(3), ms(1600));
        assert_eq!(rtt.backed_off_rto(40), ms(10_000));
    }
}
