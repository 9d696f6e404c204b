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
mod outgoing;
mod protection;
mod timers;
mod types;

pub use types::{CloseReason, ConnectionStats, Event, Role, SendError, Transmit};

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::Config;
use crate::congestion::CongestionController;
use crate::congestion::pacer::Pacer;
use crate::crypto::PacketKeys;
use crate::crypto::handshake::{self, HandshakeError, Initiator};
use crate::packet::{COOKIE_LEN, ConnectionId, Packet};
use crate::recv::RecvBuffer;
use crate::rtt::RttEstimator;
use crate::send::{Fragment, SendBuffer};

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
    /// A client's Noise handshake, until the SYN-ACK completes it.
    handshake: Option<Initiator>,
    /// Our handshake message, repeated with every SYN (client) or SYN-ACK (server).
    hello: Vec<u8>,
    /// The peer's handshake message (a client keeps the SYN-ACK's to recognise repeats).
    peer_hello: Vec<u8>,
    /// Packet protection, once the handshake produced keys.
    keys: Option<PacketKeys>,
    /// Reused buffer that sealed datagrams are decrypted into.
    open_buf: Vec<u8>,
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
            handshake: None,
            hello: Vec::new(),
            peer_hello: Vec::new(),
            keys: None,
            open_buf: Vec::new(),
            config,
        }
    }

    /// A client connection that will send its SYN on the first [`Connection::poll_transmit`].
    /// Without a pinned server key or pre-shared secret in `config` it is closed at once
    /// with [`CloseReason::HandshakeFailed`].
    pub fn connect(
        config: Config,
        id: ConnectionId,
        remote: SocketAddr,
        now: Instant,
        seed: u64,
    ) -> Connection {
        let mut conn = Connection::new(config, Role::Client, id, remote, now, seed);
        let noise_seed = conn.rng.random();
        let isn = conn.local_isn.to_be_bytes();
        let started = conn
            .config
            .client_credentials()
            .ok_or(HandshakeError::NoKey)
            .and_then(|credentials| Initiator::start(&credentials, id, noise_seed, &isn));
        match started {
            Ok((initiator, hello)) => {
                conn.handshake = Some(initiator);
                conn.hello = hello;
            }
            Err(_) => conn.enter_closed(CloseReason::HandshakeFailed),
        }
        conn
    }

    /// A server connection for a SYN whose cookie checked out (or that needed none), once its
    /// Noise message `hello` authenticated. The peer's initial sequence number comes from
    /// inside the Noise message, not from the clear header.
    pub(crate) fn accept(
        config: Config,
        syn: &Packet,
        hello: &[u8],
        remote: SocketAddr,
        now: Instant,
        seed: u64,
    ) -> Result<Connection, HandshakeError> {
        let credentials = config.server_credentials().ok_or(HandshakeError::NoKey)?;
        let id = syn.header.connection_id;
        let mut conn = Connection::new(config, Role::Server, id, remote, now, seed);
        let noise_seed = conn.rng.random();
        let isn = conn.local_isn.to_be_bytes();
        let (keys, answer, theirs) = handshake::respond(&credentials, id, noise_seed, hello, &isn)?;
        let peer_isn: [u8; 4] = theirs
            .as_slice()
            .try_into()
            .map_err(|_| HandshakeError::Malformed)?;
        let window = conn.config.window_packets;
        let first = u64::from(u32::from_be_bytes(peer_isn)) + 1;
        conn.recv = Some(RecvBuffer::new(first, window, conn.config.max_message_size));
        let policy = conn.config.update_policy();
        conn.keys = Some(PacketKeys::new(keys.send, keys.recv, policy, now));
        conn.hello = answer;
        Ok(conn)
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
            key_updates_sent: self.keys.as_ref().map_or(0, |k| k.updates().0),
            key_updates_received: self.keys.as_ref().map_or(0, |k| k.updates().1),
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

    /// Draws a fresh path-challenge token.
    fn challenge_token(&mut self) -> u64 {
        self.rng.random()
    }
}
