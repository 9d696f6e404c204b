//! The connection's timers: handshake and data retransmission, loss threshold, delayed
//! acknowledgement, pacing release, keepalive, idle timeout and draining.
//!
//! The pacing release needs no handling here: when it passes, the next
//! [`Connection::poll_transmit`] sends the packet the pacer was holding back.

use std::time::Instant;

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
            self.ack.deadline,
            self.fec.tx.deadline(),
            self.pacing_release,
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
