//! The transmit path: which datagram goes out next (reset, path validation, handshake,
//! parity, data under the congestion window and the pacer, acknowledgements and keepalives),
//! and the packet building and accounting they share.

use std::net::SocketAddr;
use std::time::Instant;

use super::{AckState, Connection, Role, State, Transmit};
use crate::packet::{Control, Flags, Header, MAX_SACK_BLOCKS, Packet, SackBlock};
use crate::wire;

impl Connection {
    /// Builds a packet with the current acknowledgement state attached.
    pub(super) fn packet(&self, flags: Flags, sequence: u64, payload: Vec<u8>) -> Packet {
        let mut flags = flags;
        let (acknowledgement, sack) = match &self.recv {
            Some(recv) => {
                flags |= Flags::ACK;
                let sack = recv.sack_blocks().into_iter().take(MAX_SACK_BLOCKS);
                let sack = sack
                    .map(|(start, end)| SackBlock {
                        start: start as u32,
                        end: end as u32,
                    })
                    .collect();
                (recv.ack() as u32, sack)
            }
            None => (0, Vec::new()),
        };
        let header = Header {
            flags,
            connection_id: self.id,
            sequence: sequence as u32,
            acknowledgement,
        };
        Packet {
            header,
            sack,
            payload,
        }
    }

    /// Seals (or, for the handshake, encodes in clear) and accounts for one outgoing packet;
    /// `None` only for a packet that needs keys before the handshake produced them.
    pub(super) fn emit(
        &mut self,
        now: Instant,
        destination: SocketAddr,
        packet: &Packet,
    ) -> Option<Transmit> {
        let contents = self.seal(now, packet)?;
        let len = contents.len() as u64;
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += len;
        self.last_send = now;
        if destination == self.remote {
            self.amp_sent += len;
            if packet.header.flags.contains(Flags::ACK) {
                self.ack = AckState::default();
            }
        } else if let Some(candidate) = self.candidate.as_mut().filter(|c| c.addr == destination) {
            candidate.sent += len;
        }
        Some(Transmit {
            destination,
            contents,
        })
    }

    /// Whether `len` more bytes fit the anti-amplification budget towards the peer.
    pub(super) fn may_send(&self, len: usize) -> bool {
        self.validated || self.amp_sent + len as u64 <= 3 * self.amp_received
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.reset_due {
            self.reset_due = false;
            let packet = self.packet(Flags::RST, self.send.next_seq(), Vec::new());
            return self.emit(now, self.remote, &packet);
        }
        if self.state == State::Closed {
            return None;
        }
        if let Some(transmit) = self.poll_path(now) {
            return Some(transmit);
        }
        match self.state {
            State::SynSent | State::SynReceived => self.poll_handshake(now),
            _ => self
                .poll_fec(now)
                .or_else(|| self.poll_data(now))
                .or_else(|| self.poll_ack(now)),
        }
    }

    fn poll_path(&mut self, now: Instant) -> Option<Transmit> {
        if let Some((addr, token)) = self.responses.pop_front() {
            let packet = self.packet(
                Flags::URG,
                self.send.next_seq(),
                Control::PathResponse(token).to_bytes(),
            );
            return self.emit(now, addr, &packet);
        }
        let candidate = self.candidate.as_ref()?;
        let packet = self.packet(
            Flags::URG,
            self.send.next_seq(),
            Control::PathChallenge(candidate.token).to_bytes(),
        );
        let within_budget = candidate.sent + packet.encoded_len() as u64 <= 3 * candidate.received;
        if !candidate.challenge_due || !within_budget {
            return None;
        }
        let addr = candidate.addr;
        if let Some(candidate) = self.candidate.as_mut() {
            candidate.challenge_due = false;
            candidate.challenged_at = Some(now);
        }
        self.emit(now, addr, &packet)
    }

    fn poll_handshake(&mut self, now: Instant) -> Option<Transmit> {
        if !self.handshake_due {
            return None;
        }
        let packet = match self.role {
            Role::Client => {
                let payload = wire::syn_payload(self.cookie.as_ref(), &self.hello);
                self.packet(Flags::SYN, u64::from(self.local_isn), payload)
            }
            Role::Server => self.packet(Flags::SYN, u64::from(self.local_isn), self.hello.clone()),
        };
        if !self.may_send(packet.encoded_len()) {
            return None;
        }
        self.handshake_due = false;
        let repeat = self.handshake_sent.is_some();
        self.handshake_sent = Some((now, repeat));
        self.emit(now, self.remote, &packet)
    }

    fn poll_data(&mut self, now: Instant) -> Option<Transmit> {
        // Recomputed on every call, so a stale release time never lingers in `poll_timeout`.
        self.pacing_release = None;
        if self.state != State::Established {
            return None;
        }
        let in_flight = self.send.bytes_in_flight();
        if self.send.nothing_to_send() && in_flight < self.cc.window() {
            self.send.mark_app_limited();
        }
        let limit = self.send.acked_below() + self.config.window_packets;
        let seq = self.send.next_to_send(limit)?;
        let fragment = self.send.fragment(seq)?;
        let mut flags = Flags::NONE;
        if fragment.last {
            flags |= Flags::PSH;
        }
        if fragment.fin {
            flags |= Flags::FIN;
        }
        let packet = self.packet(flags, seq, fragment.payload.clone());
        let len = packet.encoded_len() as u64;
        if in_flight > 0 && in_flight + len > self.cc.window() {
            return None;
        }
        if let Some(release) = self.pacer.release(now, len, self.cc.pacing_rate()) {
            self.pacing_release = Some(release);
            return None;
        }
        self.pacer.on_sent(now, len);
        let transmit = self.emit(now, self.remote, &packet)?;
        if self.send.on_transmit(seq, now, len) {
            self.stats.retransmits += 1;
        } else {
            self.fec_on_first_transmit(now, seq, &packet);
        }
        self.cc.on_sent(now, len, in_flight);
        self.rto_base.get_or_insert(now);
        Some(transmit)
    }

    fn poll_ack(&mut self, now: Instant) -> Option<Transmit> {
        let ack_due = self.ack.now || self.ack.deadline.is_some_and(|d| d <= now);
        let keepalive_due = self.state == State::Established
            && now >= self.last_send + self.config.keepalive_interval;
        if !ack_due && !keepalive_due {
            return None;
        }
        let packet = self.packet(Flags::NONE, self.send.next_seq(), Vec::new());
        self.emit(now, self.remote, &packet)
    }
}
