//! The link model: a pure, seeded delay line with jitter, random loss and an optional rate
//! limit. Time and packets go in ([`LinkModel::offer`]); packets and their release times come
//! out ([`LinkModel::next_release`], [`LinkModel::pop_due`]). No clock, no socket: the TUN
//! forwarder in [`super::emulator`] drives it, and the unit tests below drive it with made-up
//! instants.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What one direction of an emulated link does to the packets that cross it.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Base one-way delay added to every packet.
    pub delay: Duration,
    /// Each packet's delay is drawn uniformly from `delay ± jitter`.
    pub jitter: Duration,
    /// Probability in `[0, 1]` that a packet is dropped (independently per packet).
    pub loss: f64,
    /// Bottleneck rate in bits per second; `None` means unlimited. Packets queue (without
    /// limit) behind the one being serialised, and their delay starts once serialised.
    pub rate_bps: Option<u64>,
    /// Whether jitter may reorder packets. When false (the default, like a real single path),
    /// a packet never leaves before the one offered before it: its release time is held back
    /// to the previous packet's.
    pub reorder: bool,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            rate_bps: None,
            reorder: false,
        }
    }
}

/// A [`LinkConfig`] that cannot be emulated.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LinkConfigError {
    /// The loss probability is not a number in `[0, 1]`.
    #[error("loss probability must be within [0, 1], got {0}")]
    LossOutOfRange(f64),
    /// Jitter larger than the delay would need negative delays.
    #[error("jitter ({jitter:?}) must not exceed the delay ({delay:?})")]
    JitterExceedsDelay {
        /// The configured base delay.
        delay: Duration,
        /// The configured jitter.
        jitter: Duration,
    },
    /// A rate limit of zero bits per second would never deliver anything.
    #[error("rate limit must be above 0 bit/s")]
    ZeroRate,
}

impl LinkConfig {
    /// Checks that the configuration describes a link that can exist.
    pub fn validate(&self) -> Result<(), LinkConfigError> {
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(LinkConfigError::LossOutOfRange(self.loss));
        }
        if self.jitter > self.delay {
            return Err(LinkConfigError::JitterExceedsDelay {
                delay: self.delay,
                jitter: self.jitter,
            });
        }
        if self.rate_bps == Some(0) {
            return Err(LinkConfigError::ZeroRate);
        }
        Ok(())
    }
}

/// What happened to an offered packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// The packet will be released at this instant.
    Queued(Instant),
    /// The packet was lost.
    Dropped,
}

/// A packet waiting in the delay line. Ordered by release time, then by arrival, so that
/// equal release times keep arrival order.
#[derive(Debug)]
struct Held<P> {
    release: Instant,
    seq: u64,
    packet: P,
}

impl<P> PartialEq for Held<P> {
    fn eq(&self, other: &Self) -> bool {
        (self.release, self.seq) == (other.release, other.seq)
    }
}
impl<P> Eq for Held<P> {}
impl<P> PartialOrd for Held<P> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<P> Ord for Held<P> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.release, self.seq).cmp(&(other.release, other.seq))
    }
}

/// One direction of an emulated link: a seeded delay line holding packets of type `P`.
#[derive(Debug)]
pub struct LinkModel<P> {
    config: LinkConfig,
    rng: ChaCha8Rng,
    held: BinaryHeap<Reverse<Held<P>>>,
    next_seq: u64,
    /// Release time of the last packet queued; without reordering no later packet leaves
    /// before it.
    last_release: Option<Instant>,
    /// When the bottleneck finishes serialising what it has been given.
    busy_until: Option<Instant>,
}

impl<P> LinkModel<P> {
    /// A model for `config`, whose random choices (loss, jitter) follow `seed`.
    pub fn new(config: LinkConfig, seed: u64) -> Result<Self, LinkConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            held: BinaryHeap::new(),
            next_seq: 0,
            last_release: None,
            busy_until: None,
        })
    }

    /// The configuration this model emulates.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// Offers a packet of `len` bytes that entered the link at `now`; it is either dropped
    /// or held until the returned release time.
    pub fn offer(&mut self, now: Instant, packet: P, len: usize) -> Fate {
        // Draw loss before anything else so a seed's loss pattern does not depend on jitter.
        if self.config.loss > 0.0 && self.rng.random_bool(self.config.loss) {
            return Fate::Dropped;
        }
        let sent = self.serialised_at(now, len);
        let mut release = sent + self.jittered_delay();
        if !self.config.reorder {
            release = release.max(self.last_release.unwrap_or(release));
        }
        self.last_release = Some(self.last_release.map_or(release, |l| l.max(release)));
        let seq = self.next_seq;
        self.next_seq += 1;
        self.held.push(Reverse(Held {
            release,
            seq,
            packet,
        }));
        Fate::Queued(release)
    }

    /// When the bottleneck has finished sending a `len`-byte packet that arrived at `now`.
    fn serialised_at(&mut self, now: Instant, len: usize) -> Instant {
        let Some(rate) = self.config.rate_bps else {
            return now;
        };
        let start = self.busy_until.map_or(now, |b| b.max(now));
        let bits = u128::try_from(len).unwrap_or(u128::MAX).saturating_mul(8);
        let nanos = bits.saturating_mul(1_000_000_000) / u128::from(rate);
        let done = start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.busy_until = Some(done);
        done
    }

    fn jittered_delay(&mut self) -> Duration {
        if self.config.jitter.is_zero() {
            return self.config.delay;
        }
        let jitter = i128::try_from(self.config.jitter.as_nanos()).unwrap_or(i128::MAX);
        let offset = self.rng.random_range(-jitter..=jitter);
        let base = i128::try_from(self.config.delay.as_nanos()).unwrap_or(i128::MAX);
        // validate() guarantees jitter <= delay, so the sum is never negative.
        Duration::from_nanos(u64::try_from(base + offset).unwrap_or(0))
    }

    /// When the next held packet is due, if any is held.
    pub fn next_release(&self) -> Option<Instant> {
        self.held.peek().map(|Reverse(h)| h.release)
    }

    /// Takes the next packet whose release time is at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<P> {
        if self.next_release()? > now {
            return None;
        }
        self.held.pop().map(|Reverse(h)| h.packet)
    }

    /// How many packets are held.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn model(config: LinkConfig, seed: u64) -> LinkModel<u32> {
        LinkModel::new(config, seed).expect("valid config")
    }

    /// Offers packets 0..n at 1 ms intervals and returns (packet, delay) in release order.
    fn run(m: &mut LinkModel<u32>, n: u32, start: Instant) -> Vec<(u32, Duration)> {
        let mut offered_at = Vec::new();
        for i in 0..n {
            let t = start + MS * i;
            offered_at.push(t);
            m.offer(t, i, 100);
        }
        let mut out = Vec::new();
        while let Some(t) = m.next_release() {
            let p = m.pop_due(t).expect("due packet pops at its release time");
            out.push((p, t - offered_at[p as usize]));
        }
        out
    }

    #[test]
    fn fixed_delay_is_exact_and_holds_packets_until_due() {
        let mut m = model(
            LinkConfig {
                delay: 25 * MS,
                ..LinkConfig::default()
            },
            1,
        );
        let t0 = Instant::now();
        assert_eq!(m.offer(t0, 7, 100), Fate::Queued(t0 + 25 * MS));
        assert_eq!(m.pop_due(t0 + 24 * MS), None, "released early");
        assert_eq!(m.pop_due(t0 + 25 * MS), Some(7));
        assert_eq!(m.held(), 0);
        let out = run(&mut m, 100, t0);
        assert!(out.iter().all(|&(_, d)| d == 25 * MS));
    }

    #[test]
    fn jitter_stays_within_bounds_and_spreads() {
        let config = LinkConfig {
            delay: 25 * MS,
            jitter: 5 * MS,
            reorder: true,
            ..LinkConfig::default()
        };
        let out = run(&mut model(config, 42), 2000, Instant::now());
        assert_eq!(out.len(), 2000);
        assert!(out.iter().all(|&(_, d)| d >= 20 * MS && d <= 30 * MS));
        // Uniform on ±5 ms: both tails get used, not just the base delay.
        assert!(out.iter().any(|&(_, d)| d < 21 * MS));
        assert!(out.iter().any(|&(_, d)| d > 29 * MS));
        let mean = out.iter().map(|&(_, d)| d).sum::<Duration>() / 2000;
        assert!(mean > 24 * MS && mean < 26 * MS, "mean {mean:?}");
    }

    #[test]
    fn jitter_without_reordering_keeps_order() {
        let config = LinkConfig {
            delay: 25 * MS,
            jitter: 10 * MS,
            ..LinkConfig::default()
        };
        let out = run(&mut model(config, 3), 1000, Instant::now());
        let order: Vec<u32> = out.iter().map(|&(p, _)| p).collect();
        assert_eq!(order, (0..1000).collect::<Vec<_>>());
        assert!(out.iter().all(|&(_, d)| d >= 15 * MS));
    }

    #[test]
    fn jitter_with_reordering_allowed_reorders() {
        let config = LinkConfig {
            delay: 25 * MS,
            jitter: 10 * MS,
            reorder: true,
            ..LinkConfig::default()
        };
        let out = run(&mut model(config, 3), 1000, Instant::now());
        assert!(out.windows(2).any(|w| w[0].0 > w[1].0));
    }

    #[test]
    fn loss_rate_is_within_statistical_bounds() {
        for (seed, loss) in [(1, 0.01), (2, 0.05), (3, 0.10), (4, 0.5)] {
            let n = 20_000u32;
            let config = LinkConfig {
                loss,
                ..LinkConfig::default()
            };
            let delivered = run(&mut model(config, seed), n, Instant::now()).len();
            let lost = f64::from(n) - delivered as f64;
            let expected = f64::from(n) * loss;
            let sigma = (f64::from(n) * loss * (1.0 - loss)).sqrt();
            assert!(
                (lost - expected).abs() < 5.0 * sigma,
                "seed {seed}: lost {lost}, expected {expected} ± {sigma}"
            );
        }
    }

    #[test]
    fn no_loss_and_full_loss_are_exact() {
        let none = LinkConfig::default();
        assert_eq!(run(&mut model(none, 9), 5000, Instant::now()).len(), 5000);
        let all = LinkConfig {
            loss: 1.0,
            ..LinkConfig::default()
        };
        assert_eq!(run(&mut model(all, 9), 5000, Instant::now()).len(), 0);
    }

    #[test]
    fn same_seed_same_fates_other_seed_other_fates() {
        let config = LinkConfig {
            delay: 10 * MS,
            jitter: 5 * MS,
            loss: 0.1,
            ..LinkConfig::default()
        };
        let t0 = Instant::now();
        let a = run(&mut model(config.clone(), 5), 1000, t0);
        let b = run(&mut model(config.clone(), 5), 1000, t0);
        let c = run(&mut model(config, 6), 1000, t0);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn rate_limit_serialises_packets_back_to_back() {
        // 1000-byte packets at 800 kbit/s take 10 ms each to serialise.
        let config = LinkConfig {
            delay: 5 * MS,
            rate_bps: Some(800_000),
            ..LinkConfig::default()
        };
        let mut m = model(config, 1);
        let t0 = Instant::now();
        let fates: Vec<Fate> = (0..3).map(|i| m.offer(t0, i, 1000)).collect();
        let expected: Vec<Fate> = [15, 25, 35]
            .iter()
            .map(|&ms| Fate::Queued(t0 + ms * MS))
            .collect();
        assert_eq!(fates, expected);
        // After an idle gap the bottleneck starts fresh.
        let later = t0 + 100 * MS;
        assert_eq!(m.offer(later, 3, 1000), Fate::Queued(later + 15 * MS));
    }

    #[test]
    fn bad_configs_are_rejected_with_a_reason() {
        let bad_loss = |loss| LinkConfig {
            loss,
            ..LinkConfig::default()
        };
        for loss in [-0.1, 1.5, f64::NAN] {
            let err = LinkModel::<u32>::new(bad_loss(loss), 0).expect_err("bad loss");
            assert!(matches!(err, LinkConfigError::LossOutOfRange(_)));
        }
        let jitter = LinkConfig {
            delay: MS,
            jitter: 2 * MS,
            ..LinkConfig::default()
        };
        assert_eq!(
            LinkModel::<u32>::new(jitter, 0).expect_err("jitter > delay"),
            LinkConfigError::JitterExceedsDelay {
                delay: MS,
                jitter: 2 * MS
            }
        );
        let rate = LinkConfig {
            rate_bps: Some(0),
            ..LinkConfig::default()
        };
        assert_eq!(
            LinkModel::<u32>::new(rate, 0).expect_err("zero rate"),
            LinkConfigError::ZeroRate
        );
    }
}
