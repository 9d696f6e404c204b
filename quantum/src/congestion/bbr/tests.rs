//! BBR's state machine driven through a small model of one bottleneck: packets leave the
//! sender as the window and the real [`Pacer`] allow, queue at a link of fixed rate, and are
//! acknowledged one propagation delay later, with samples from the real [`DeliveryRate`].

use std::collections::VecDeque;

use super::*;
use crate::congestion::RateSample;
use crate::congestion::delivery::{AckSampler, DeliveryRate, SendState};
use crate::congestion::pacer::Pacer;

const MSS: u64 = 1000;
const STEP: Duration = Duration::from_micros(100);

/// A sender with BBR in front of a bottleneck of `rate` bytes/s and `rtt` propagation delay.
struct Path {
    bbr: Bbr,
    delivery: DeliveryRate,
    pacer: Pacer,
    rate: u64,
    rtt: Duration,
    now: Instant,
    /// When the bottleneck finishes its current backlog.
    link_free: Instant,
    /// Acknowledgements on their way: arrival, snapshot, whether the packet was dropped.
    acks: VecDeque<(Instant, SendState, Instant, bool)>,
    inflight: u64,
    /// Bytes the application still wants to send; `u64::MAX` for a bulk sender.
    backlog: u64,
    /// Drop every `n`th packet, if set.
    drop_every: Option<u64>,
    sent: u64,
    /// States seen, in order, without repeats.
    states: Vec<BbrState>,
}

impl Path {
    fn new(rate: u64, rtt: Duration) -> Path {
        let now = Instant::now();
        Path {
            bbr: Bbr::new(MSS, 1),
            delivery: DeliveryRate::default(),
            pacer: Pacer::new(MSS),
            rate,
            rtt,
            now,
            link_free: now,
            acks: VecDeque::new(),
            inflight: 0,
            backlog: u64::MAX,
            drop_every: None,
            sent: 0,
            states: vec![BbrState::Startup],
        }
    }

    fn send_what_is_allowed(&mut self) {
        while self.backlog >= MSS
            && self.inflight + MSS <= self.bbr.window()
            && self
                .pacer
                .release(self.now, MSS, self.bbr.pacing_rate())
                .is_none()
        {
            let state = self.delivery.on_send(self.now, self.inflight);
            self.pacer.on_sent(self.now, MSS);
            self.bbr.on_sent(self.now, MSS, self.inflight);
            self.inflight += MSS;
            self.backlog -= MSS;
            self.sent += 1;
            let dropped = self.drop_every.is_some_and(|n| self.sent.is_multiple_of(n));
            let start = self.link_free.max(self.now);
            let done = start + Duration::from_nanos(MSS * 1_000_000_000 / self.rate);
            self.link_free = done;
            self.acks
                .push_back((done + self.rtt, state, self.now, dropped));
        }
        if self.backlog < MSS && self.inflight < self.bbr.window() {
            self.delivery.mark_app_limited(self.inflight);
        }
    }

    fn deliver_acks(&mut self) {
        while self.acks.front().is_some_and(|&(at, ..)| at <= self.now) {
            let Some((_, state, sent, dropped)) = self.acks.pop_front() else {
                break;
            };
            self.inflight -= MSS;
            if dropped {
                self.bbr.on_loss(self.now, MSS, sent);
                continue;
            }
            let mut sampler = AckSampler::default();
            self.delivery
                .on_packet_acked(self.now, &state, MSS, &mut sampler);
            let rate: Option<RateSample> = self.delivery.finish(self.now, sampler);
            let ack = Ack {
                bytes: MSS,
                rtt: Some(self.now - sent),
                bytes_in_flight: self.inflight,
                rate,
            };
            self.bbr.on_ack(self.now, &ack);
        }
    }

    fn run(&mut self, span: Duration) {
        let end = self.now + span;
        while self.now < end {
            self.deliver_acks();
            self.send_what_is_allowed();
            if self.states.last() != Some(&self.bbr.state()) {
                self.states.push(self.bbr.state());
            }
            self.now += STEP;
        }
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn bulk_sender_goes_startup_drain_probe_bw_and_finds_the_bottleneck() {
    let mut path = Path::new(1_000_000, ms(40));
    path.run(Duration::from_secs(3));
    assert_eq!(
        path.states,
        [BbrState::Startup, BbrState::Drain, BbrState::ProbeBw]
    );
    let bw = path.bbr.bandwidth();
    assert!((900_000..=1_100_000).contains(&bw), "bandwidth {bw}");
    let min_rtt = path.bbr.min_rtt().expect("measured");
    assert!(
        min_rtt >= ms(40) && min_rtt <= ms(42),
        "min rtt {min_rtt:?}"
    );
    // The window sits near twice the BDP (40 kB), not at what the link could buffer.
    let cwnd = path.bbr.window();
    assert!((60_000..=120_000).contains(&cwnd), "cwnd {cwnd}");
}

#[test]
fn probe_bw_cycles_its_pacing_gain_around_the_estimate() {
    let mut path = Path::new(1_000_000, ms(40));
    path.run(Duration::from_secs(3));
    let mut rates = Vec::new();
    for _ in 0..400 {
        path.run(ms(1));
        rates.push(path.bbr.pacing_rate().expect("pacing"));
    }
    let bw = path.bbr.bandwidth() as f64;
    let gains: Vec<f64> = rates.iter().map(|&r| r as f64 / bw).collect();
    let near = |g: f64, want: f64| (g - want * PACING_MARGIN).abs() < 0.01;
    assert!(gains.iter().any(|&g| near(g, 1.25)), "probed up: {gains:?}");
    assert!(gains.iter().any(|&g| near(g, 0.75)), "drained");
    assert!(gains.iter().filter(|&&g| near(g, 1.0)).count() > gains.len() / 2);
}

#[test]
fn probe_rtt_after_ten_seconds_without_a_lower_rtt_then_back_to_probe_bw() {
    let mut path = Path::new(1_000_000, ms(40));
    path.run(Duration::from_secs(9));
    assert!(!path.states.contains(&BbrState::ProbeRtt));
    let mut min_cwnd_seen = u64::MAX;
    let mut entered = None;
    let mut left = None;
    let end = path.now + Duration::from_secs(4);
    while path.now < end {
        path.run(ms(1));
        let state = path.bbr.state();
        if state == BbrState::ProbeRtt {
            entered.get_or_insert(path.now);
            min_cwnd_seen = min_cwnd_seen.min(path.bbr.window());
        } else if entered.is_some() && left.is_none() {
            left = Some(path.now);
        }
    }
    let (entered, left) = (entered.expect("entered"), left.expect("left"));
    assert!(left - entered >= PROBE_RTT_DURATION, "{:?}", left - entered);
    assert_eq!(min_cwnd_seen, 4 * MSS);
    assert_eq!(path.bbr.state(), BbrState::ProbeBw);
    assert!(path.bbr.window() > 40_000, "window restored");
}

#[test]
fn app_limited_samples_do_not_pull_the_estimate_down() {
    let mut path = Path::new(1_000_000, ms(40));
    path.run(Duration::from_secs(2));
    let bw = path.bbr.bandwidth();
    // From now on a trickle: one packet every 50 ms.
    path.backlog = 0;
    for _ in 0..100 {
        path.backlog += MSS;
        path.run(ms(50));
    }
    assert_eq!(path.bbr.bandwidth(), bw);
    let rate = path.bbr.pacing_rate().expect("pacing");
    assert!(rate as f64 >= 0.7 * bw as f64, "pacing {rate} vs bw {bw}");
}

#[test]
fn random_loss_leaves_the_model_and_the_window_standing() {
    let mut path = Path::new(1_000_000, ms(40));
    path.drop_every = Some(30);
    path.run(Duration::from_secs(4));
    let bw = path.bbr.bandwidth();
    assert!(bw >= 850_000, "bandwidth {bw}");
    assert_eq!(path.bbr.state(), BbrState::ProbeBw);
    // A window-halving controller would sit far below the 40 kB BDP.
    assert!(path.bbr.window() >= 40_000, "cwnd {}", path.bbr.window());
}

#[test]
fn rto_restarts_from_the_minimum_window_and_restores_after_a_clean_round() {
    let mut path = Path::new(1_000_000, ms(40));
    path.run(Duration::from_secs(2));
    let before = path.bbr.window();
    path.bbr.on_rto(path.now);
    assert_eq!(path.bbr.window(), 4 * MSS);
    path.run(ms(300));
    assert!(path.bbr.window() >= before.min(80_000) * 3 / 4);
}

#[test]
fn pacing_starts_from_the_initial_window_over_the_first_rtt() {
    let mut bbr = Bbr::new(MSS, 1);
    assert_eq!(bbr.pacing_rate(), None, "no pacing before any measurement");
    let ack = Ack {
        bytes: MSS,
        rtt: Some(ms(100)),
        bytes_in_flight: 0,
        rate: None,
    };
    bbr.on_ack(Instant::now(), &ack);
    // STARTUP's gain times the initial ten packets per 100 ms.
    let expected = HIGH_GAIN * (10 * MSS) as f64 / 0.1;
    let rate = bbr.pacing_rate().expect("paced once an RTT is known") as f64;
    assert!((rate - expected).abs() <= 1.0, "{rate} vs {expected}");
}

#[test]
fn a_sender_back_from_a_long_idle_skips_probe_rtt_and_paces_at_the_estimate() {
    let mut path = Path::new(1_000_000, ms(40));
    path.run(Duration::from_secs(3));
    assert_eq!(path.bbr.state(), BbrState::ProbeBw);
    let (bw, cwnd) = (path.bbr.bandwidth(), path.bbr.window());
    // Eleven quiet seconds: the min-RTT sample expires meanwhile.
    path.backlog = 0;
    path.run(Duration::from_secs(11));
    path.backlog = MSS;
    path.send_what_is_allowed();
    let rate = path.bbr.pacing_rate().expect("pacing");
    assert_eq!(
        rate,
        (PACING_MARGIN * bw as f64) as u64,
        "gain 1 on restart"
    );
    path.run(ms(100));
    assert_eq!(path.states.last(), Some(&BbrState::ProbeBw));
    assert!(!path.states.contains(&BbrState::ProbeRtt));
    assert_eq!(path.bbr.window(), cwnd);
    // The expired estimate was replaced by the fresh sample, so the ten seconds start afresh.
    let stamp = path.bbr.min_rtt.map(|(_, at)| at).expect("measured");
    assert!(path.now - stamp < ms(100));
}

#[test]
fn an_app_limited_sender_paces_no_slower_than_the_initial_window() {
    // One small message per 50 ms round trip: the only rate samples are the application's
    // own (200 bytes per 50 ms), and pacing at a few times that would spread a burst of a
    // message, its barrier and their parity over tens of milliseconds.
    let mut bbr = Bbr::new(MSS, 1);
    let t0 = Instant::now();
    let mut delivered = 0;
    for round in 0..40u32 {
        delivered += 200;
        let ack = Ack {
            bytes: 200,
            rtt: Some(ms(50)),
            bytes_in_flight: 0,
            rate: Some(RateSample {
                delivered: 200,
                interval: ms(50),
                prior_delivered: delivered - 200,
                total_delivered: delivered,
                app_limited: true,
            }),
        };
        bbr.on_ack(t0 + ms(50) * round, &ack);
    }
    assert_eq!(
        bbr.state(),
        BbrState::Startup,
        "an app-limited sender never fills the pipe"
    );
    let initial = HIGH_GAIN * (10 * MSS) as f64 / 0.05;
    let rate = bbr.pacing_rate().expect("paced") as f64;
    assert!(
        rate >= initial - 1.0,
        "{rate} bytes/s paced, initial window {initial}"
    );
}
