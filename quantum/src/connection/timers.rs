//! The connection's timers: handshake and data retransmission, loss threshold, delayed
//! acknowledgement, tail loss probe, pacing release, keepalive, idle timeout and draining.
//!
//! The pacing release needs no handling here: when it passes, the next
//! [`Connection::poll_transmit`] sends the packet the pacer was holding back.

use std::time::{Duration, Instant};

use crate::rtt::GRANULARITY;

use super::{CloseReason, Connection, State};

impl Connection {
    fn handshake_deadline(&self) -> Option<Instant> {
        let (sent, _) = self.handshake_sent?;
        matches!(self.state, State::SynSent | State::SynReceived)
            .then(|| sent + self.rtt.backed_off_rto(self.backoff))
    }

    fn rto_deadline(&self) -> Option<Instant> {
        let base = self.rto_base?;
        (self.send.bytes_in_flight() > 0).then(|| base + self.rtt.backed_off_rto(self.backoff))
    }

    /// Tail loss probe (after RACK-TLP, RFC 8985 section 7): while the application has
    /// nothing more to send, no time-threshold loss timer runs and no probe is outstanding,
    /// the oldest packet in flight is resent if it is not acknowledged within SRTT plus a
    /// jitter margin (plus the peer's ACK delay unless it followed a silence longer than that,
    /// since then the peer acknowledges it at once, see `handle_data`). A sparse sender's lone
    /// lost message is so resent about one RTT after it left, instead of when a later
    /// message's SACK reveals the hole or the RTO fires. Returns the deadline and the packet.
    fn tail_probe(&self) -> Option<(Instant, u64)> {
        if self.state != State::Established
            || self.tail_probe_sent
            || self.send.bytes_in_flight() == 0
            || self.send.loss_time().is_some()
            || !self.send.nothing_to_send()
        {
            return None;
        }
        let timeout = self.probe_timeout()?;
        let (seq, sent, gap) = self.send.tail_candidate()?;
        let ack_delay = if gap.is_none_or(|gap| gap >= self.config.max_ack_delay) {
            Duration::ZERO
        } else {
            self.config.max_ack_delay
        };
        let deadline = sent + timeout + ack_delay;
        // Past the retransmission timer a probe has nothing left to gain.
        self.rto_deadline()
            .is_none_or(|rto| deadline < rto)
            .then_some((deadline, seq))
    }

    /// How long after a packet left, with no ACK delay, its tail loss probe is due: SRTT plus
    /// a jitter margin of max(2·RTTVAR, SRTT/8). `None` before the first RTT sample.
    pub(super) fn probe_timeout(&self) -> Option<Duration> {
        let srtt = self.rtt.smoothed()?;
        Some(srtt + (self.rtt.variance() * 2).max(srtt / 8).max(GRANULARITY))
    }

    fn keepalive_deadline(&self) -> Option<Instant> {
        (self.state == State::Established).then(|| self.last_send + self.config.keepalive_interval)
    }

    /// When [`Connection::handle_timeout`] should next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Closed {
            return None;
        }
        let drain = match self.state {
            State::Draining(until) => Some(until),
            _ => None,
        };
        [
            self.handshake_deadline(),
            self.rto_deadline(),
            self.send.loss_time(),
            self.tail_probe().map(|(deadline, _)| deadline),
            self.ack.deadline,
            self.pacing_release,
            self.fec.tx.deadline(),
            self.keepalive_deadline(),
            Some(self.last_recv + self.config.idle_timeout),
            drain,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Acts on every timer that expired by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        if matches!(self.state, State::Draining(until) if now >= until) {
            self.state = State::Closed;
            return;
        }
        if now >= self.last_recv + self.config.idle_timeout {
            self.enter_closed(CloseReason::TimedOut);
            return;
        }
        if self.handshake_deadline().is_some_and(|d| now >= d) {
            self.backoff += 1;
            self.handshake_due = true;
        }
        self.fec_timeout(now);
        if self.send.loss_time().is_some_and(|d| now >= d) {
            self.detect_losses(now);
        }
        if let Some((_, seq)) = self.tail_probe().filter(|&(d, _)| now >= d) {
            self.send.queue_probe(seq);
            self.tail_probe_sent = true;
            self.probed = Some((seq, now));
            self.stats.tail_probes += 1;
        }
        if self.rto_deadline().is_some_and(|d| now >= d) {
            self.stats.rto_expiries += 1;
            let presumed_lost = self.send.on_rto();
            self.fec.tx.meter.on_lost(presumed_lost);
            self.cc.on_rto(now);
            self.backoff += 1;
            self.rto_base = None;
        }
        if self.ack.deadline.is_some_and(|d| now >= d) {
            self.ack.now = true;
        }
    }
}
