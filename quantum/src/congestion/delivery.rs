//! Delivery-rate estimation per draft-cheng-iccrg-delivery-rate-estimation.
//!
//! Each transmission snapshots how much had been delivered and when; the acknowledgement of
//! the newest such packet then yields "bytes delivered over the interval since", measured over
//! the longer of the send and the acknowledgement interval so that neither a burst of sends nor
//! a compressed burst of acknowledgements inflates the rate.

use std::time::{Duration, Instant};

/// One delivery-rate measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSample {
    /// Bytes delivered over [`RateSample::interval`].
    pub delivered: u64,
    /// The longer of the send and acknowledgement intervals the sample spans.
    pub interval: Duration,
    /// Bytes the connection had delivered when the sampled packet was sent; BBR counts round
    /// trips by it.
    pub prior_delivered: u64,
    /// Bytes the connection has delivered in total, this acknowledgement included.
    pub total_delivered: u64,
    /// The sender had nothing to send during the sampled interval, so the rate says more about
    /// the application than about the path.
    pub app_limited: bool,
}

impl RateSample {
    /// Bytes per second, or `None` for an empty interval.
    pub fn bandwidth(&self) -> Option<u64> {
        let nanos = self.interval.as_nanos();
        if nanos == 0 {
            return None;
        }
        let rate = u128::from(self.delivered) * 1_000_000_000 / nanos;
        Some(u64::try_from(rate).unwrap_or(u64::MAX))
    }
}

/// What a packet remembers from the moment it was (last) transmitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SendState {
    /// When it was sent.
    sent_time: Instant,
    /// The connection's delivered count then.
    delivered: u64,
    /// When that count last grew.
    delivered_time: Instant,
    /// Send time of the packet whose acknowledgement began the current sampling flight.
    first_sent_time: Instant,
    /// Whether the connection was application-limited.
    app_limited: bool,
}

/// The newest acknowledged packet of one acknowledgement, from which the sample is taken.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AckSampler {
    newest: Option<SendState>,
}

/// Per-connection delivery-rate state.
#[derive(Debug, Default)]
pub(crate) struct DeliveryRate {
    /// Bytes acknowledged so far.
    delivered: u64,
    /// When `delivered` last grew.
    delivered_time: Option<Instant>,
    /// Send time of the newest packet acknowledged so far.
    first_sent_time: Option<Instant>,
    /// While non-zero, the connection is application-limited until this much is delivered.
    app_limited_until: u64,
}

impl DeliveryRate {
    /// Snapshot for a packet sent at `now` with `bytes_in_flight` outstanding before it.
    pub fn on_send(&mut self, now: Instant, bytes_in_flight: u64) -> SendState {
        if bytes_in_flight == 0 || self.delivered_time.is_none() {
            // Sending after silence: start measuring from now, not from the last delivery.
            self.delivered_time = Some(now);
            self.first_sent_time = Some(now);
        }
        SendState {
            sent_time: now,
            delivered: self.delivered,
            delivered_time: self.delivered_time.unwrap_or(now),
            first_sent_time: self.first_sent_time.unwrap_or(now),
            app_limited: self.app_limited_until != 0,
        }
    }

    /// Counts one acknowledged packet of `size` bytes.
    pub fn on_packet_acked(
        &mut self,
        now: Instant,
        state: &SendState,
        size: u64,
        sampler: &mut AckSampler,
    ) {
        self.delivered += size;
        self.delivered_time = Some(now);
        let newer = sampler
            .newest
            .is_none_or(|n| (state.sent_time, state.delivered) > (n.sent_time, n.delivered));
        if newer {
            sampler.newest = Some(*state);
            self.first_sent_time = Some(state.sent_time);
        }
    }

    /// The sample of one acknowledgement, after all its packets were counted.
    pub fn finish(&mut self, now: Instant, sampler: AckSampler) -> Option<RateSample> {
        if self.app_limited_until != 0 && self.delivered > self.app_limited_until {
            self.app_limited_until = 0;
        }
        let newest = sampler.newest?;
        let send_elapsed = newest
            .sent_time
            .saturating_duration_since(newest.first_sent_time);
        let ack_elapsed = now.saturating_duration_since(newest.delivered_time);
        Some(RateSample {
            delivered: self.delivered - newest.delivered,
            interval: send_elapsed.max(ack_elapsed),
            prior_delivered: newest.delivered,
            total_delivered: self.delivered,
            app_limited: newest.app_limited,
        })
    }

    /// The application has nothing more to send although the window has room: samples of
    /// packets sent until what is in flight now is delivered are application-limited.
    pub fn mark_app_limited(&mut self, bytes_in_flight: u64) {
        self.app_limited_until = (self.delivered + bytes_in_flight).max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn steady_flight_measures_bytes_over_the_round_trip() {
        let t0 = Instant::now();
        let mut rate = DeliveryRate::default();
        // Ten 1000-byte packets sent 1 ms apart, each acknowledged 50 ms after it left.
        let states: Vec<SendState> = (0..10)
            .map(|i| rate.on_send(t0 + ms(i), i * 1000))
            .collect();
        let mut last = None;
        for (i, state) in states.iter().enumerate() {
            let mut sampler = AckSampler::default();
            let now = t0 + ms(i as u64 + 50);
            rate.on_packet_acked(now, state, 1000, &mut sampler);
            last = rate.finish(now, sampler);
        }
        let sample = last.expect("acknowledgements sample");
        // The last packet was sent with nothing delivered yet, 59 ms before its ack.
        assert_eq!(sample.delivered, 10_000);
        assert_eq!(sample.interval, ms(59));
        assert_eq!(sample.prior_delivered, 0);
        assert!(!sample.app_limited);
        assert_eq!(sample.bandwidth(), Some(10_000_000 / 59));
    }

    #[test]
    fn the_longer_of_send_and_ack_intervals_bounds_the_rate() {
        let t0 = Instant::now();
        let mut rate = DeliveryRate::default();
        let a = rate.on_send(t0, 0);
        let b = rate.on_send(t0 + ms(10), 1000);
        let mut sampler = AckSampler::default();
        rate.on_packet_acked(t0 + ms(50), &a, 1000, &mut sampler);
        rate.finish(t0 + ms(50), sampler);
        // Both acknowledgements arrive at once. b's snapshot saw nothing delivered since t0,
        // so its sample spans 50 ms of acknowledgements, longer than its 10 ms of sending.
        let mut sampler = AckSampler::default();
        rate.on_packet_acked(t0 + ms(50), &b, 1000, &mut sampler);
        let sample = rate.finish(t0 + ms(50), sampler).expect("sample");
        assert_eq!(sample.delivered, 2000);
        assert_eq!(sample.interval, ms(50));
        assert_eq!(sample.bandwidth(), Some(40_000));
    }

    #[test]
    fn app_limited_marks_samples_until_the_flight_is_delivered() {
        let t0 = Instant::now();
        let mut rate = DeliveryRate::default();
        rate.mark_app_limited(0);
        let p = rate.on_send(t0, 0);
        let mut sampler = AckSampler::default();
        rate.on_packet_acked(t0 + ms(20), &p, 100, &mut sampler);
        let sample = rate.finish(t0 + ms(20), sampler).expect("sample");
        assert!(sample.app_limited);
        // Delivery passed the mark, so the next packet's sample is not app-limited.
        let q = rate.on_send(t0 + ms(20), 0);
        let mut sampler = AckSampler::default();
        rate.on_packet_acked(t0 + ms(40), &q, 100, &mut sampler);
        let sample = rate.finish(t0 + ms(40), sampler).expect("sample");
        assert!(!sample.app_limited);
    }

    #[test]
    fn an_ack_of_nothing_sampled_gives_no_sample_and_zero_interval_no_rate() {
        let t0 = Instant::now();
        let mut rate = DeliveryRate::default();
        assert_eq!(rate.finish(t0, AckSampler::default()), None);
        let sample = RateSample {
            delivered: 1,
            interval: Duration::ZERO,
            prior_delivered: 0,
            total_delivered: 1,
            app_limited: false,
        };
        assert_eq!(sample.bandwidth(), None);
    }
}
