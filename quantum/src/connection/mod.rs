//! One Quantum connection as a pure state machine.
//!
//! Call order, as in quinn-proto: feed every datagram for this connection to
//! [`Connection::handle`]; then drain [`Connection::poll_transmit`] until it returns `None`,
//! drain [`Connection::poll_event`], and arm a timer for [`Connection::poll_timeout`]; when the
//! timer fires call [`Connection::handle_timeout`] and poll again. The [`Endpoint`] does all of
//! this for many connections at once.
//!
//! [`Endpoint`]: crate::Endpoint

mod fec;
mod incoming;
mod timers;

pub(crate) use incoming::expand as expand_sequence;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use thiserror::Error;

use crate::config::Config;
use crate::congestion::pacer::Pacer;
use crate::congestion::{BbrState, CongestionController};
use crate::packet::{
    COOKIE_LEN, ConnectionId, Control, Flags, Header, MAX_SACK_BLOCKS, Packet, SackBlock,
};
use crate::recv::RecvBuffer;
use crate::rtt::RttEstimator;
use crate::send::{Fragment, SendBuffer};

/// A datagram the caller must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// The bytes.
    pub contents: Vec<u8>,
}

/// Something the application should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The handshake completed.
    Connected,
    /// A whole message arrived, in order, exactly once.
    Message(Vec<u8>),
    /// The peer closed its sending side; no further messages will arrive.
    Finished,
    /// The peer proved it owns a new address, and packets now go there.
    Migrated(SocketAddr),
    /// The connection is over.
    Closed(CloseReason),
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CloseReason {
    /// Both sides sent FIN and saw it acknowledged.
    #[error("closed gracefully")]
    Graceful,
    /// The local application aborted it.
    #[error("aborted locally")]
    LocalAbort,
    /// The peer sent RST.
    #[error("reset by peer")]
    PeerReset,
    /// Nothing arrived for the idle timeout.
    #[error("idle timeout")]
    TimedOut,
    /// The peer sent a message larger than the configured maximum.
    #[error("peer sent a message over the size limit")]
    MessageTooLarge,
}

/// Why [`Connection::send`] refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SendError {
    /// The connection is closing or closed.
    #[error("connection is closing or closed")]
    Closed,
    /// The message exceeds the configured maximum.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
}

/// Which side opened the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sent the SYN.
    Client,
    /// Answered it.
    Server,
}

/// Counters for monitoring and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Smoothed RTT, once measured.
    pub srtt: Option<Duration>,
    /// Current retransmission timeout, without backoff.
    pub rto: Duration,
    /// Congestion window in bytes.
    pub cwnd: u64,
    /// Pacing rate in bytes per second; `None` while unpaced (always, under NewReno).
    pub pacing_rate: Option<u64>,
    /// BBR's state; `None` under NewReno.
    pub bbr_state: Option<BbrState>,
    /// Minimum RTT: BBR's ten-second windowed estimate, or under NewReno the smallest sample.
    pub min_rtt: Option<Duration>,
    /// BBR's bottleneck bandwidth estimate in bytes per second, once it has a sample.
    pub bottleneck_bandwidth: Option<u64>,
    /// Bytes in flight.
    pub bytes_in_flight: u64,
    /// Datagrams sent.
    pub packets_sent: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Datagrams received for this connection.
    pub packets_received: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Data packets sent again.
    pub retransmits: u64,
    /// Data packets declared lost by the duplicate or time threshold.
    pub fast_losses: u64,
    /// Retransmission timer expiries.
    pub rto_expiries: u64,
    /// Tail loss probes sent (also counted in `retransmits`).
    pub tail_probes: u64,
    /// Probes whose acknowledgement came too late to be the original's (at least half the
    /// minimum RTT after the probe): the original was lost, and this counts as a loss for
    /// congestion control and the FEC loss rate. The remaining probes were likely spurious.
    pub tail_probe_recoveries: u64,
    /// Data packets received that had already arrived: the peer's spurious retransmissions
    /// (tail loss probes of delivered packets among them) or network duplicates.
    pub duplicates_received: u64,
    /// Messages delivered to the application.
    pub messages_delivered: u64,
    /// Datagrams for this connection that failed to decode.
    pub malformed: u64,
    /// FEC parity packets sent.
    pub fec_packets_sent: u64,
    /// Bytes of FEC parity packets sent.
    pub fec_bytes_sent: u64,
    /// Data packets this side rebuilt from the peer's parity.
    pub fec_repaired: u64,
    /// Data packets the peer reported it rebuilt from our parity (counted as losses).
    pub fec_repairs_reported: u64,
    /// Parity packets or groups from the peer that were malformed or inconsistent.
    pub fec_rejected: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    SynSent,
    SynReceived,
    Established,
    /// Closed gracefully; still acknowledging retransmitted FINs until the instant.
    Draining(Instant),
    Closed,
}

/// A new address the peer sent from, not yet proven.
#[derive(Debug)]
struct Candidate {
    addr: SocketAddr,
    token: u64,
    /// Bytes received from it, for the anti-amplification budget.
    received: u64,
    /// Bytes sent to it.
    sent: u64,
    /// A challenge should go out.
    challenge_due: bool,
    /// When the last challenge went out.
    challenged_at: Option<Instant>,
}

/// When to acknowledge.
#[derive(Debug, Default)]
struct AckState {
    /// Acknowledge at the next opportunity.
    now: bool,
    /// Acknowledge at this instant at the latest.
    deadline: Option<Instant>,
    /// In-order packets received since the last acknowledgement.
    unacked: u32,
    /// When the latest data packet arrived: one that follows a longer silence than
    /// `max_ack_delay` is acknowledged at once, since waiting would pair it with nothing.
    last_data: Option<Instant>,
}

/// One connection's protocol state. See the module docs for the call order.
#[derive(Debug)]
pub struct Connection {
    config: Config,
    role: Role,
    id: ConnectionId,
    state: State,
    /// The validated peer address.
    remote: SocketAddr,
    rng: ChaCha8Rng,
    local_isn: u32,
    /// Retry cookie to echo in our SYN.
    cookie: Option<[u8; COOKIE_LEN]>,
    send: SendBuffer,
    /// Exists once the peer's initial sequence number is known.
    recv: Option<RecvBuffer>,
    rtt: RttEstimator,
    cc: Box<dyn CongestionController>,
    /// Spaces data packets at the controller's pacing rate.
    pacer: Pacer,
    /// When the pacer will release the data packet it is holding back.
    pacing_release: Option<Instant>,
    /// Consecutive expiries of the retransmission or handshake timer.
    backoff: u32,
    /// Start of the running retransmission timer.
    rto_base: Option<Instant>,
    /// A tail loss probe went out and nothing new has been acknowledged since.
    tail_probe_sent: bool,
    /// The latest probed packet and when the probe fired, until it is acknowledged.
    probed: Option<(u64, Instant)>,
    /// SYN or SYN-ACK due.
    handshake_due: bool,
    /// Last SYN or SYN-ACK transmission, and whether it was a repeat.
    handshake_sent: Option<(Instant, bool)>,
    ack: AckState,
    last_recv: Instant,
    last_send: Instant,
    /// The peer's address is proven; until then a server obeys the 3× amplification limit.
    validated: bool,
    amp_received: u64,
    amp_sent: u64,
    candidate: Option<Candidate>,
    /// Path challenges to answer: where from, and the token.
    responses: VecDeque<(SocketAddr, u64)>,
    close_requested: bool,
    reset_due: bool,
    events: VecDeque<Event>,
    stats: ConnectionStats,
    /// Forward error correction, both directions.
    fec: fec::FecLink,
}

/// Path challenges answered per flight; more are dropped so a flood cannot grow the queue.
const MAX_PENDING_RESPONSES: usize = 4;

impl Connection {
    fn new(
        config: Config,
        role: Role,
        id: ConnectionId,
        remote: SocketAddr,
        now: Instant,
        seed: u64,
    ) -> Connection {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let local_isn: u32 = rng.random();
        let rtt = RttEstimator::new(config.initial_rto, config.min_rto, config.max_rto);
        let mss = config.mtu as u64;
        Connection {
            role,
            id,
            state: if role == Role::Client {
                State::SynSent
            } else {
                State::SynReceived
            },
            remote,
            rng,
            local_isn,
            cookie: None,
            send: SendBuffer::new(u64::from(local_isn) + 1),
            recv: None,
            rtt,
            cc: config.congestion.build(mss, seed ^ 0xbb5e_ed00),
            pacer: Pacer::new(mss),
            pacing_release: None,
            backoff: 0,
            rto_base: None,
            tail_probe_sent: false,
            probed: None,
            handshake_due: true,
            handshake_sent: None,
            ack: AckState::default(),
            last_recv: now,
            last_send: now,
            validated: role == Role::Client,
            amp_received: 0,
            amp_sent: 0,
            candidate: None,
            responses: VecDeque::new(),
            close_requested: false,
            reset_due: false,
            events: VecDeque::new(),
            stats: ConnectionStats::default(),
            fec: fec::FecLink::new(config.fec.clone()),
            config,
        }
    }

    /// A client connection that will send its SYN on the first [`Connection::poll_transmit`].
    pub fn connect(
        config: Config,
        id: ConnectionId,
        remote: SocketAddr,
        now: Instant,
        seed: u64,
    ) -> Connection {
        Connection::new(config, Role::Client, id, remote, now, seed)
    }

    /// A server connection for a SYN whose cookie checked out (or that needed none).
    pub(crate) fn accept(
        config: Config,
        syn: &Packet,
        remote: SocketAddr,
        now: Instant,
        seed: u64,
    ) -> Connection {
        let mut conn = Connection::new(
            config,
            Role::Server,
            syn.header.connection_id,
            remote,
            now,
            seed,
        );
        let window = conn.config.window_packets;
        let first = u64::from(syn.header.sequence) + 1;
        conn.recv = Some(RecvBuffer::new(first, window, conn.config.max_message_size));
        conn
    }

    /// This connection's id.
    pub fn id(&self) -> ConnectionId {
        self.id
    }

    /// Which side opened it.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The peer's validated address.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// Whether the handshake completed and the connection is not yet closed.
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// Whether the connection is over and has nothing left to send.
    pub fn is_drained(&self) -> bool {
        self.state == State::Closed && !self.reset_due && self.events.is_empty()
    }

    /// Counters.
    pub fn stats(&self) -> ConnectionStats {
        let model = self.cc.path_model();
        ConnectionStats {
            srtt: self.rtt.smoothed(),
            rto: self.rtt.rto(),
            cwnd: self.cc.window(),
            pacing_rate: self.cc.pacing_rate(),
            bbr_state: model.map(|m| m.state),
            min_rtt: model.map_or(self.rtt.min(), |m| m.min_rtt),
            bottleneck_bandwidth: model.map(|m| m.bottleneck_bandwidth).filter(|&bw| bw > 0),
            bytes_in_flight: self.send.bytes_in_flight(),
            ..self.stats.clone()
        }
    }

    /// Fragments queued or in flight that the peer has not yet cumulatively acknowledged. The
    /// core buffers whatever it is given; a driver bounds this to push back on its senders.
    pub fn unacked_fragments(&self) -> u64 {
        self.send.next_seq() - self.send.acked_below()
    }

    /// Queues a message for ordered, reliable delivery; it goes out once the handshake is done.
    pub fn send(&mut self, message: &[u8]) -> Result<(), SendError> {
        if self.close_requested || matches!(self.state, State::Closed | State::Draining(_)) {
            return Err(SendError::Closed);
        }
        let max = self.config.max_message_size;
        if message.len() > max {
            return Err(SendError::TooLarge {
                len: message.len(),
                max,
            });
        }
        let chunk = self.config.max_fragment();
        let count = message.len().div_ceil(chunk).max(1);
        for index in 0..count {
            let start = index * chunk;
            let end = (start + chunk).min(message.len());
            self.send.push(Fragment {
                payload: message[start..end].to_vec(),
                last: index + 1 == count,
                fin: false,
            });
        }
        Ok(())
    }

    /// Closes gracefully: queued messages are still delivered, then FIN.
    pub fn close(&mut self) {
        if self.close_requested || matches!(self.state, State::Closed | State::Draining(_)) {
            return;
        }
        self.close_requested = true;
        self.send.push(Fragment {
            payload: Vec::new(),
            last: false,
            fin: true,
        });
    }

    /// Aborts at once with RST; undelivered messages are dropped.
    pub fn abort(&mut self) {
        if self.state == State::Closed {
            return;
        }
        self.reset_due = true;
        self.enter_closed(CloseReason::LocalAbort);
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn enter_closed(&mut self, reason: CloseReason) {
        self.state = State::Closed;
        self.candidate = None;
        self.events.push_back(Event::Closed(reason));
    }

    /// Builds a packet with the current acknowledgement state attached.
    fn packet(&self, flags: Flags, sequence: u64, payload: Vec<u8>) -> Packet {
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

    /// Encodes and accounts for one outgoing packet.
    fn emit(&mut self, now: Instant, destination: SocketAddr, packet: &Packet) -> Transmit {
        let contents = packet
            .to_bytes()
            .expect("the core builds packets within the format's limits");
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
        Transmit {
            destination,
            contents,
        }
    }

    /// Whether `len` more bytes fit the anti-amplification budget towards the peer.
    fn may_send(&self, len: usize) -> bool {
        self.validated || self.amp_sent + len as u64 <= 3 * self.amp_received
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.reset_due {
            self.reset_due = false;
            let packet = self.packet(Flags::RST, self.send.next_seq(), Vec::new());
            return Some(self.emit(now, self.remote, &packet));
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
            return Some(self.emit(now, addr, &packet));
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
        Some(self.emit(now, addr, &packet))
    }

    fn poll_handshake(&mut self, now: Instant) -> Option<Transmit> {
        if !self.handshake_due {
            return None;
        }
        let packet = match self.role {
            Role::Client => {
                let payload = self.cookie.map(|c| c.to_vec()).unwrap_or_default();
                self.packet(Flags::SYN, u64::from(self.local_isn), payload)
            }
            Role::Server => self.packet(Flags::SYN, u64::from(self.local_isn), Vec::new()),
        };
        if !self.may_send(packet.encoded_len()) {
            return None;
        }
        self.handshake_due = false;
        let repeat = self.handshake_sent.is_some();
        self.handshake_sent = Some((now, repeat));
        Some(self.emit(now, self.remote, &packet))
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
        let transmit = self.emit(now, self.remote, &packet);
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
        Some(self.emit(now, self.remote, &packet))
    }

    /// Draws a fresh path-challenge token.
    fn challenge_token(&mut self) -> u64 {
        self.rng.random()
    }
}
