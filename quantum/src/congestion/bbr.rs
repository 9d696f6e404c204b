//! BBR v1, after draft-cardwell-iccrg-bbr-congestion-control-00 and Linux's `tcp_bbr.c`.
//!
//! BBR models the path by two numbers: the bottleneck bandwidth (the largest delivery rate of
//! the last ten round trips) and the round-trip propagation time (the smallest RTT of the last
//! ten seconds). It paces at a gain times the bandwidth and caps what is in flight at a gain
//! times their product, the BDP. Four states choose the gains:
//!
//! - **STARTUP** doubles the rate every round (gain 2/ln 2) until the bandwidth stops growing
//!   by a quarter for three rounds: the pipe is full.
//! - **DRAIN** paces at ln 2/2 until what is in flight falls to one BDP, emptying the queue
//!   STARTUP built.
//! - **PROBE_BW** cycles eight phases of one min-RTT each: 1.25 to probe for more bandwidth,
//!   0.75 to drain what the probe queued, then six at 1.
//! - **PROBE_RTT** runs when the min RTT has not been refreshed for ten seconds: the window
//!   drops to four packets for at least 200 ms and one round trip, so the queue empties and the
//!   true propagation delay can be seen.
//!
//! A sender restarting after idle (nothing in flight) paces at the estimate itself rather than
//! at a probing gain, and its first acknowledgement refreshes an expired min RTT instead of
//! entering PROBE_RTT: the idle period has already drained the queue.
//!
//! Loss does not enter the model. On a loss episode the window is held to what is in flight
//! (packet conservation) for one round, then grows back towards its target; when a round
//! passes without loss the window from before the episode is restored.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::filter::MaxFilter;
use super::{Ack, CongestionController, PathModel};

/// STARTUP's pacing and window gain, 2/ln 2.
const HIGH_GAIN: f64 = 2.885;
/// DRAIN's pacing gain, the inverse of STARTUP's.
const DRAIN_GAIN: f64 = 1.0 / HIGH_GAIN;
/// PROBE_BW's window gain: room for delayed and aggregated acknowledgements.
const CWND_GAIN: f64 = 2.0;
/// PROBE_BW's pacing gains, one phase per min RTT.
const PACING_GAINS: [f64; 8] = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
/// Round trips the bandwidth filter remembers.
const BW_WINDOW_ROUNDS: u64 = 10;
/// How long a min-RTT sample stays valid before PROBE_RTT re-measures it.
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
/// Least time spent at the minimum window in PROBE_RTT.
const PROBE_RTT_DURATION: Duration = Duration::from_millis(200);
/// The window never goes below this many packets.
const MIN_CWND_PACKETS: u64 = 4;
/// Window before any measurement.
const INITIAL_CWND_PACKETS: u64 = 10;
/// STARTUP ends after this many rounds without 25% bandwidth growth.
const FULL_BW_ROUNDS: u32 = 3;
/// Paced slightly below the estimate (Linux's 1% margin) so queues drain.
const PACING_MARGIN: f64 = 0.99;

/// BBR's state machine states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BbrState {
    /// Exponential search for the bottleneck bandwidth.
    Startup,
    /// Emptying the queue STARTUP built.
    Drain,
    /// Steady state: cycling the pacing gain around the bandwidth estimate.
    ProbeBw,
    /// A brief minimal window to re-measure the propagation delay.
    ProbeRtt,
}

/// State of a loss episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recovery {
    /// No loss outstanding.
    Open,
    /// A loss was reported; the window is cut to what is in flight at the next ack.
    Entering,
    /// In an episode; `conserving` holds the window to what is in flight for its first round.
    Active { conserving: bool },
}

/// A BBR v1 congestion controller.
#[derive(Debug, Clone)]
pub struct Bbr {
    /// Bytes per packet the window is counted in.
    mss: u64,
    state: BbrState,
    /// Bottleneck bandwidth, bytes per second, windowed over round trips.
    bandwidth: MaxFilter,
    /// Propagation delay estimate and when it was last set.
    min_rtt: Option<(Duration, Instant)>,
    /// Congestion window in bytes.
    cwnd: u64,
    /// Bytes per second, once an RTT or bandwidth sample allowed a guess.
    pacing_rate: Option<u64>,
    /// Round trips counted so far.
    round_count: u64,
    /// A new round starts when a packet sent after this much was delivered is acknowledged.
    next_round_delivered: u64,
    /// Whether the latest acknowledgement began a new round.
    round_start: bool,
    /// Delivered total of the latest sample.
    delivered: u64,
    /// Bandwidth when STARTUP last saw 25% growth.
    full_bw: u64,
    /// Rounds since then.
    full_bw_rounds: u32,
    /// STARTUP found the bottleneck.
    filled_pipe: bool,
    /// PROBE_BW phase and when it began.
    cycle_index: usize,
    cycle_start: Option<Instant>,
    /// When PROBE_RTT may end, once the window has drained to the minimum.
    probe_rtt_done: Option<Instant>,
    /// PROBE_RTT has also spent a round trip at the minimum window.
    probe_rtt_round_done: bool,
    /// Sending restarted after idle and nothing has been delivered since.
    idle_restart: bool,
    /// Window to restore after PROBE_RTT or a loss episode.
    prior_cwnd: u64,
    recovery: Recovery,
    /// A loss was reported in the current round.
    loss_in_round: bool,
    /// A loss was reported since the latest acknowledgement.
    loss_since_ack: bool,
    /// Source of PROBE_BW's random starting phase, so flows do not probe in lockstep.
    rng: ChaCha8Rng,
}

impl Bbr {
    /// A controller counting in packets of `mss` bytes; `seed` makes its one random choice
    /// reproducible.
    pub fn new(mss: u64, seed: u64) -> Bbr {
        Bbr {
            mss,
            state: BbrState::Startup,
            bandwidth: MaxFilter::new(BW_WINDOW_ROUNDS),
            min_rtt: None,
            cwnd: INITIAL_CWND_PACKETS * mss,
            pacing_rate: None,
            round_count: 0,
            next_round_delivered: 0,
            round_start: false,
            delivered: 0,
            full_bw: 0,
            full_bw_rounds: 0,
            filled_pipe: false,
            cycle_index: 0,
            cycle_start: None,
            probe_rtt_done: None,
            probe_rtt_round_done: false,
            idle_restart: false,
            prior_cwnd: 0,
            recovery: Recovery::Open,
            loss_in_round: false,
            loss_since_ack: false,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The state machine's current state.
    pub fn state(&self) -> BbrState {
        self.state
    }

    /// Bottleneck bandwidth estimate in bytes per second; zero before any sample.
    pub fn bandwidth(&self) -> u64 {
        self.bandwidth.get()
    }

    /// Propagation delay estimate.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt.map(|(rtt, _)| rtt)
    }

    fn min_cwnd(&self) -> u64 {
        MIN_CWND_PACKETS * self.mss
    }

    /// Pacing and window gains of the current state.
    fn gains(&self) -> (f64, f64) {
        match self.state {
            BbrState::Startup => (HIGH_GAIN, HIGH_GAIN),
            BbrState::Drain => (DRAIN_GAIN, HIGH_GAIN),
            BbrState::ProbeBw => (PACING_GAINS[self.cycle_index], CWND_GAIN),
            BbrState::ProbeRtt => (1.0, 1.0),
        }
    }

    /// `gain` × BDP plus a few packets for acknowledgement and sending quantisation.
    fn inflight(&self, gain: f64) -> u64 {
        let bw = self.bandwidth();
        let Some(min_rtt) = self.min_rtt().filter(|_| bw > 0) else {
            return INITIAL_CWND_PACKETS * self.mss;
        };
        let bdp = bw as f64 * min_rtt.as_secs_f64();
        // Float-to-int casts saturate, so an absurd estimate cannot overflow here.
        ((gain * bdp) as u64).saturating_add(3 * self.mss)
    }

    fn save_cwnd(&mut self) {
        self.prior_cwnd = if self.recovery == Recovery::Open && self.state != BbrState::ProbeRtt {
            self.cwnd
        } else {
            self.prior_cwnd.max(self.cwnd)
        };
    }

    /// Counts round trips and feeds the bandwidth filter.
    fn update_bandwidth(&mut self, ack: &Ack) {
        self.round_start = false;
        let Some(rate) = ack.rate else {
            return;
        };
        self.delivered = rate.total_delivered;
        if rate.prior_delivered >= self.next_round_delivered {
            self.next_round_delivered = rate.total_delivered;
            self.round_count += 1;
            self.round_start = true;
        }
        let Some(bw) = rate.bandwidth() else {
            return;
        };
        // An interval shorter than the propagation delay measured a burst, not the path.
        if self.min_rtt().is_some_and(|min| rate.interval < min) {
            return;
        }
        // Application-limited samples only count when they show more than we knew.
        if !rate.app_limited || bw >= self.bandwidth() {
            self.bandwidth.update(self.round_count, bw);
        }
    }

    fn update_cycle_phase(&mut self, now: Instant, ack: &Ack) {
        if self.state != BbrState::ProbeBw {
            return;
        }
        let min_rtt = self.min_rtt().unwrap_or(Duration::ZERO);
        let full_length = self.cycle_start.is_none_or(|start| now - start > min_rtt);
        let prior_inflight = ack.bytes_in_flight.saturating_add(ack.bytes);
        let gain = PACING_GAINS[self.cycle_index];
        let next = if gain > 1.0 {
            // Probe until the extra data is actually queued (or is being lost).
            full_length && (self.loss_since_ack || prior_inflight >= self.inflight(gain))
        } else if gain < 1.0 {
            // Drain early once the probe's queue is gone.
            full_length || prior_inflight <= self.inflight(1.0)
        } else {
            full_length
        };
        if next {
            self.cycle_index = (self.cycle_index + 1) % PACING_GAINS.len();
            self.cycle_start = Some(now);
        }
    }

    fn check_full_pipe(&mut self, ack: &Ack) {
        let app_limited = ack.rate.is_some_and(|r| r.app_limited);
        if self.filled_pipe || !self.round_start || app_limited {
            return;
        }
        let bw = self.bandwidth();
        if bw >= self.full_bw.saturating_mul(5) / 4 {
            self.full_bw = bw;
            self.full_bw_rounds = 0;
            return;
        }
        self.full_bw_rounds += 1;
        self.filled_pipe = self.full_bw_rounds >= FULL_BW_ROUNDS;
    }

    fn enter_probe_bw(&mut self, now: Instant) {
        self.state = BbrState::ProbeBw;
        // Any phase but the draining one, at random.
        const STARTS: [usize; 7] = [0, 2, 3, 4, 5, 6, 7];
        self.cycle_index = STARTS[self.rng.random_range(0..STARTS.len())];
        self.cycle_start = Some(now);
    }

    fn check_drain(&mut self, now: Instant, ack: &Ack) {
        if self.state == BbrState::Startup && self.filled_pipe {
            self.state = BbrState::Drain;
        }
        if self.state == BbrState::Drain && ack.bytes_in_flight <= self.inflight(1.0) {
            self.enter_probe_bw(now);
        }
    }

    fn update_min_rtt(&mut self, now: Instant, ack: &Ack) {
        let expired = self
            .min_rtt
            .is_some_and(|(_, stamp)| now > stamp + MIN_RTT_WINDOW);
        if let Some(sample) = ack.rtt
            && (expired || self.min_rtt().is_none_or(|min| sample < min))
        {
            self.min_rtt = Some((sample, now));
        }
        if expired && !self.idle_restart && self.state != BbrState::ProbeRtt {
            self.save_cwnd();
            self.state = BbrState::ProbeRtt;
            self.probe_rtt_done = None;
        }
        if self.state == BbrState::ProbeRtt {
            self.step_probe_rtt(now, ack);
        }
        if ack.rate.is_some_and(|r| r.delivered > 0) {
            self.idle_restart = false;
        }
    }

    fn step_probe_rtt(&mut self, now: Instant, ack: &Ack) {
        match self.probe_rtt_done {
            None if ack.bytes_in_flight <= self.min_cwnd() => {
                self.probe_rtt_done = Some(now + PROBE_RTT_DURATION);
                self.probe_rtt_round_done = false;
                self.next_round_delivered = self.delivered;
            }
            None => {}
            Some(done) => {
                self.probe_rtt_round_done |= self.round_start;
                if self.probe_rtt_round_done && now >= done {
                    self.exit_probe_rtt(now);
                }
            }
        }
    }

    fn exit_probe_rtt(&mut self, now: Instant) {
        if let Some((rtt, _)) = self.min_rtt {
            self.min_rtt = Some((rtt, now));
        }
        self.cwnd = self.cwnd.max(self.prior_cwnd);
        if self.filled_pipe {
            self.enter_probe_bw(now);
        } else {
            self.state = BbrState::Startup;
        }
    }

    fn set_pacing_rate(&mut self) {
        let bw = self.bandwidth();
        let measured = (bw > 0).then(|| (self.gains().0 * PACING_MARGIN * bw as f64) as u64);
        // The initial window per round trip, at STARTUP's gain.
        let initial = self.min_rtt().filter(|rtt| !rtt.is_zero()).map(|rtt| {
            (HIGH_GAIN * (INITIAL_CWND_PACKETS * self.mss) as f64 / rtt.as_secs_f64()) as u64
        });
        let rate = match (measured, initial) {
            (Some(measured), _) if self.filled_pipe => measured,
            // Until the pipe is full, never below the initial window's rate (as Linux's
            // `bbr_init_pacing_rate_from_rtt`): an app-limited sender, which never fills the
            // pipe, measures only its own small rate, and pacing at a few times that spread
            // each burst (an edit, its barrier and their parity) over tens of milliseconds.
            (Some(measured), Some(initial)) => measured.max(initial),
            (Some(rate), None) | (None, Some(rate)) => rate,
            (None, None) => return,
        };
        // Until the pipe is full, never slow down: early samples are small by construction.
        if self.filled_pipe || self.pacing_rate.is_none_or(|current| rate > current) {
            self.pacing_rate = Some(rate.max(1));
        }
    }

    /// Loss-episode bookkeeping; returns whether the window is being conserved.
    fn update_recovery(&mut self, ack: &Ack) -> bool {
        if self.round_start {
            let clean_round = !self.loss_in_round;
            self.loss_in_round = false;
            if let Recovery::Active { .. } = self.recovery {
                if clean_round {
                    self.recovery = Recovery::Open;
                    self.cwnd = self.cwnd.max(self.prior_cwnd);
                } else {
                    self.recovery = Recovery::Active { conserving: false };
                }
            }
        }
        match self.recovery {
            Recovery::Entering => {
                self.save_cwnd();
                self.cwnd = ack.bytes_in_flight.saturating_add(ack.bytes);
                self.recovery = Recovery::Active { conserving: true };
                // Conserve for one full round from here.
                self.next_round_delivered = self.delivered;
                true
            }
            Recovery::Active { conserving } => conserving,
            Recovery::Open => false,
        }
    }

    fn set_cwnd(&mut self, ack: &Ack) {
        let conserving = self.update_recovery(ack);
        if conserving {
            self.cwnd = self.cwnd.max(ack.bytes_in_flight.saturating_add(ack.bytes));
        } else {
            let mut target = self.inflight(self.gains().1);
            if self.state == BbrState::ProbeBw && self.cycle_index == 0 {
                target = target.saturating_add(2 * self.mss);
            }
            if self.filled_pipe {
                self.cwnd = self.cwnd.saturating_add(ack.bytes).min(target);
            } else if self.cwnd < target || self.delivered < INITIAL_CWND_PACKETS * self.mss {
                self.cwnd = self.cwnd.saturating_add(ack.bytes);
            }
        }
        self.cwnd = self.cwnd.max(self.min_cwnd());
        if self.state == BbrState::ProbeRtt {
            self.cwnd = self.cwnd.min(self.min_cwnd());
        }
    }
}

impl CongestionController for Bbr {
    fn on_sent(&mut self, now: Instant, _bytes: u64, bytes_in_flight: u64) {
        if bytes_in_flight > 0 {
            return;
        }
        self.idle_restart = true;
        let bw = self.bandwidth();
        match self.state {
            // Restart at the estimate, not in the middle of a probe.
            BbrState::ProbeBw if bw > 0 => {
                self.pacing_rate = Some(((PACING_MARGIN * bw as f64) as u64).max(1));
            }
            // Idle time counts towards PROBE_RTT: the queue has drained meanwhile.
            BbrState::ProbeRtt if self.probe_rtt_done.is_some_and(|done| now >= done) => {
                self.exit_probe_rtt(now);
            }
            _ => {}
        }
    }

    fn on_ack(&mut self, now: Instant, ack: &Ack) {
        self.update_bandwidth(ack);
        self.update_cycle_phase(now, ack);
        self.check_full_pipe(ack);
        self.check_drain(now, ack);
        self.update_min_rtt(now, ack);
        self.set_pacing_rate();
        self.set_cwnd(ack);
        self.loss_since_ack = false;
    }

    fn on_loss(&mut self, _now: Instant, _bytes: u64, _sent: Instant) {
        self.loss_in_round = true;
        self.loss_since_ack = true;
        if self.recovery == Recovery::Open {
            self.recovery = Recovery::Entering;
        }
    }

    fn on_rto(&mut self, _now: Instant) {
        // Everything in flight is presumed lost: restart from the minimum window, and
        // restore the old one once a round passes cleanly.
        self.save_cwnd();
        self.cwnd = self.min_cwnd();
        self.loss_in_round = true;
        self.recovery = Recovery::Active { conserving: true };
        self.next_round_delivered = self.delivered;
    }

    fn window(&self) -> u64 {
        self.cwnd
    }

    fn pacing_rate(&self) -> Option<u64> {
        self.pacing_rate
    }

    fn path_model(&self) -> Option<PathModel> {
        Some(PathModel {
            state: self.state,
            min_rtt: self.min_rtt(),
            bottleneck_bandwidth: self.bandwidth(),
        })
    }
}

#[cfg(test)]
mod tests;
