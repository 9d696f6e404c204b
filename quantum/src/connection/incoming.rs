//! What a connection does with each packet it receives.

use std::net::SocketAddr;
use std::time::Instant;

use rand::Rng;

use super::{Candidate, CloseReason, Connection, Event, MAX_PENDING_RESPONSES, Role, State};
use crate::congestion::Ack;
use crate::congestion::pacer::Pacer;
use crate::crypto::PacketKeys;
use crate::fec::sender::LossMeter;
use crate::packet::{Control, Flags, Packet};
use crate::recv::{Arrival, Delivery, RecvBuffer};
use crate::rtt::RttEstimator;

pub(crate) use crate::packet::expand_sequence as expand;

impl Connection {
    /// Handles a packet of `len` bytes addressed to this connection that authenticated (or
    /// is a handshake packet allowed in clear).
    pub(crate) fn handle_packet(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        packet: Packet,
        len: usize,
    ) {
        if matches!(self.state, State::Closed) {
            return;
        }
        self.stats.packets_received += 1;
        self.stats.bytes_received += len as u64;
        if remote != self.remote {
            if self.state != State::Established {
                return;
            }
            self.note_candidate(now, remote, len);
        } else {
            self.amp_received += len as u64;
        }
        self.last_recv = now;
        let flags = packet.header.flags;
        if flags.contains(Flags::RST) {
            if remote == self.remote {
                self.enter_closed(CloseReason::PeerReset);
            }
            return;
        }
        if flags.contains(Flags::URG) {
            self.handle_control(now, remote, &packet);
            return;
        }
        if flags.contains(Flags::SYN) {
            self.handle_syn(now, remote, &packet);
            return;
        }
        if self.state == State::SynSent {
            return;
        }
        if flags.contains(Flags::ACK) {
            self.handle_ack(now, &packet);
        }
        if flags.contains(Flags::FEC) {
            if self.state != State::SynReceived {
                self.handle_parity(now, &packet.payload);
            }
            self.maybe_finish_close(now);
            return;
        }
        let carries_data =
            !packet.payload.is_empty() || flags.contains(Flags::PSH) || flags.contains(Flags::FIN);
        if carries_data && self.state != State::SynReceived {
            self.handle_data(now, packet);
            self.fec_repair(now);
        }
        self.maybe_finish_close(now);
    }

    fn note_candidate(&mut self, now: Instant, remote: SocketAddr, len: usize) {
        let rto = self.rtt.rto();
        match self.candidate.as_mut() {
            Some(candidate) if candidate.addr == remote => {
                candidate.received += len as u64;
                if candidate.challenged_at.is_none_or(|at| now >= at + rto) {
                    candidate.challenge_due = true;
                }
            }
            _ => {
                let token = self.challenge_token();
                self.candidate = Some(Candidate {
                    addr: remote,
                    token,
                    received: len as u64,
                    sent: 0,
                    challenge_due: true,
                    challenged_at: None,
                });
            }
        }
    }

    fn handle_control(&mut self, now: Instant, remote: SocketAddr, packet: &Packet) {
        let Ok(control) = Control::decode(&packet.payload) else {
            self.stats.malformed += 1;
            return;
        };
        match control {
            Control::Retry(cookie) => {
                if self.state == State::SynSent
                    && self.role == Role::Client
                    && remote == self.remote
                {
                    self.cookie = Some(cookie);
                    self.handshake_due = true;
                    // The server answered, so the path works: start the backoff afresh.
                    self.backoff = 0;
                    // The next SYN is a new attempt, not a repeat: its answer is a fair RTT sample.
                    self.handshake_sent = None;
                }
            }
            Control::PathChallenge(token) => {
                if self.responses.len() < MAX_PENDING_RESPONSES {
                    self.responses.push_back((remote, token));
                }
            }
            Control::PathResponse(token) => {
                let proven = self
                    .candidate
                    .as_ref()
                    .is_some_and(|c| c.addr == remote && c.token == token);
                if proven {
                    self.candidate = None;
                    if remote.ip() != self.remote.ip() {
                        self.reset_path_state();
                    }
                    self.remote = remote;
                    self.ack.now = true;
                    self.events.push_back(Event::Migrated(remote));
                }
            }
            Control::FecRepaired(total) if remote == self.remote => {
                self.on_repairs_reported(now, total);
            }
            Control::FecRepaired(_) => {}
            Control::Refused => {
                if self.state == State::SynSent && self.role == Role::Client {
                    self.enter_closed(CloseReason::HandshakeFailed);
                }
            }
        }
    }

    /// The peer moved to a new IP address: what was learnt about the old path (RTT, window,
    /// bandwidth, pacing, loss rate) says nothing about the new one, so it starts afresh as on
    /// a new connection (RFC 9000, section 9.4). A change of port alone is taken for NAT
    /// rebinding on the same path and keeps it. Packets in flight stay in flight; their
    /// acknowledgements give the new estimator its first samples.
    fn reset_path_state(&mut self) {
        let mss = self.config.mtu as u64;
        self.rtt = RttEstimator::new(
            self.config.initial_rto,
            self.config.min_rto,
            self.config.max_rto,
        );
        self.cc = self.config.congestion.build(mss, self.rng.random());
        self.pacer = Pacer::new(mss);
        self.pacing_release = None;
        self.backoff = 0;
        self.fec.tx.meter = LossMeter::default();
        self.stats.path_resets += 1;
    }

    fn handle_syn(&mut self, now: Instant, remote: SocketAddr, packet: &Packet) {
        if remote != self.remote {
            return;
        }
        let header = packet.header;
        match (self.role, self.state) {
            (Role::Server, State::SynReceived) => self.handshake_due = true,
            (Role::Client, State::SynSent) => {
                if !header.flags.contains(Flags::ACK) {
                    return;
                }
                let Some(initiator) = self.handshake.as_mut() else {
                    return;
                };
                // A forged SYN-ACK fails here and leaves the handshake as it was.
                let Ok((keys, payload)) = initiator.finish(&packet.payload) else {
                    self.stats.auth_failures += 1;
                    return;
                };
                let Ok(isn) = <[u8; 4]>::try_from(payload.as_slice()) else {
                    self.stats.malformed += 1;
                    return;
                };
                self.handshake = None;
                let policy = self.config.update_policy();
                self.keys = Some(PacketKeys::new(keys.send, keys.recv, policy, now));
                self.peer_hello = packet.payload.clone();
                if let Some((sent, false)) = self.handshake_sent {
                    self.rtt.update(now.saturating_duration_since(sent));
                }
                let first = u64::from(u32::from_be_bytes(isn)) + 1;
                self.recv = Some(RecvBuffer::new(
                    first,
                    self.config.window_packets,
                    self.config.max_message_size,
                ));
                self.establish();
                self.ack.now = true;
            }
            // Our acknowledgement of the SYN-ACK was lost; repeat it.
            (Role::Client, State::Established) => self.ack.now = true,
            _ => {}
        }
    }

    fn establish(&mut self) {
        self.state = State::Established;
        self.validated = true;
        self.backoff = 0;
        self.handshake_due = false;
        self.events.push_back(Event::Connected);
    }

    fn handle_ack(&mut self, now: Instant, packet: &Packet) {
        let base = self.send.acked_below();
        if self.state == State::SynReceived {
            if expand(packet.header.acknowledgement, base) < base {
                return;
            }
            if let Some((sent, false)) = self.handshake_sent {
                self.rtt.update(now.saturating_duration_since(sent));
            }
            self.establish();
        }
        let cum = expand(packet.header.acknowledgement, base);
        let sacks: Vec<(u64, u64)> = packet
            .sack
            .iter()
            .map(|block| {
                let start = expand(block.start, base);
                (
                    start,
                    start + u64::from(block.end.wrapping_sub(block.start)),
                )
            })
            .collect();
        let result = self.send.on_ack(now, cum, &sacks);
        self.judge_probe(now);
        if let Some(sample) = result.rtt_sample {
            self.rtt.update(sample);
        }
        if result.acked_packets > 0 {
            self.backoff = 0;
            self.tail_probe_sent = false;
            self.rto_base = (self.send.bytes_in_flight() > 0).then_some(now);
            let ack = Ack {
                bytes: result.acked_bytes,
                rtt: result.rtt_sample,
                bytes_in_flight: self.send.bytes_in_flight(),
                rate: result.rate,
            };
            self.cc.on_ack(now, &ack);
        }
        self.detect_losses(now);
    }

    /// Once the probed packet is acknowledged: if the acknowledgement came at least half
    /// the minimum RTT after the probe, it answers the probe, so the original was lost.
    fn judge_probe(&mut self, now: Instant) {
        let Some((seq, probed_at)) = self.probed else {
            return;
        };
        if seq < self.send.acked_below() || self.send.fragment(seq).is_none() {
            self.probed = None;
            let min_rtt = self.rtt.min().unwrap_or_default();
            if now >= probed_at + min_rtt / 2 {
                self.stats.tail_probe_recoveries += 1;
                self.fec.tx.meter.on_lost(1);
                self.cc.on_loss(now, self.config.mtu as u64, probed_at);
            }
        }
    }

    pub(super) fn detect_losses(&mut self, now: Instant) {
        let lost = self.send.detect_losses(now, self.rtt.loss_delay());
        if let Some(newest) = lost.newest_sent {
            self.stats.fast_losses += lost.packets;
            self.fec.tx.meter.on_lost(lost.packets);
            self.cc.on_loss(now, lost.bytes, newest);
        }
        if self.send.bytes_in_flight() == 0 {
            self.rto_base = None;
        }
    }

    /// Takes one data packet, received or rebuilt from parity; returns whether it was new.
    pub(super) fn handle_data(&mut self, now: Instant, packet: Packet) -> bool {
        let Some(recv) = self.recv.as_mut() else {
            return false;
        };
        let had_gap = recv.has_gap();
        let seq = expand(packet.header.sequence, recv.ack());
        let flags = packet.header.flags;
        self.fec
            .record_data(seq, &packet, recv.ack(), self.config.window_packets);
        let arrival = recv.insert(
            seq,
            packet.payload,
            flags.contains(Flags::PSH),
            flags.contains(Flags::FIN),
        );
        let mut delivered = Vec::new();
        let result = recv.deliver(&mut delivered);
        let after_silence = self
            .ack
            .last_data
            .is_none_or(|at| now >= at + self.config.max_ack_delay);
        self.ack.last_data = Some(now);
        match arrival {
            Arrival::InOrder if !had_gap => {
                self.ack.unacked += 1;
                // A message's last packet after a silence: a sparse sender has nothing more
                // coming, so an immediate ACK keeps its RTT estimate and tail probe tight.
                let sparse = after_silence && flags.contains(Flags::PSH);
                if self.ack.unacked >= 2 || sparse {
                    self.ack.now = true;
                } else {
                    self.ack
                        .deadline
                        .get_or_insert(now + self.config.max_ack_delay);
                }
            }
            Arrival::Duplicate => {
                self.stats.duplicates_received += 1;
                self.ack.now = true;
            }
            _ => self.ack.now = true,
        }
        for delivery in delivered {
            match delivery {
                Delivery::Message(message) => {
                    self.stats.messages_delivered += 1;
                    self.events.push_back(Event::Message(message));
                }
                Delivery::Fin => {
                    self.ack.now = true;
                    self.events.push_back(Event::Finished);
                }
            }
        }
        if result.is_err() {
            self.reset_due = true;
            self.enter_closed(CloseReason::MessageTooLarge);
        }
        matches!(arrival, Arrival::InOrder | Arrival::OutOfOrder)
    }

    pub(super) fn maybe_finish_close(&mut self, now: Instant) {
        let peer_done = self.recv.as_ref().is_some_and(RecvBuffer::finished);
        if self.state == State::Established
            && self.close_requested
            && self.send.fin_acked()
            && peer_done
        {
            self.state = State::Draining(now + self.rtt.rto() * 3);
            self.events.push_back(Event::Closed(CloseReason::Graceful));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn expand_picks_the_nearest_wrap() {
        assert_eq!(expand(5, 3), 5);
        assert_eq!(expand(0xffff_fff0, 3), 0xffff_fff0);
        assert_eq!(expand(2, 0xffff_fff0), 0x1_0000_0002);
        assert_eq!(expand(0xffff_fff0, 0x1_0000_0002), 0xffff_fff0);
        assert_eq!(expand(7, 0x5_0000_0001), 0x5_0000_0007);
    }
}
