//! An endpoint: one UDP socket's worth of connections, demultiplexed by connection id.
//!
//! The endpoint answers SYNs statelessly with a retry cookie (see [`crate::cookie`]) and only
//! runs the Noise handshake (the Diffie-Hellman work) and creates a [`Connection`] once a SYN
//! echoes a valid one, so a flood of spoofed SYNs costs it neither memory nor key agreement.
//! A SYN whose Noise message does not authenticate gets a refusal in clear and leaves no
//! state. Datagrams that fail to decode, or name no known connection, are dropped and counted
//! in [`EndpointStats`].

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{Config, ConfigError};
use crate::connection::{Connection, Event, SendError, Transmit};
use crate::cookie::CookieJar;
use crate::packet::{ConnectionId, Control, Flags, Header, Packet};
use crate::wire::{self, Datagram};

/// Endpoint-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Datagrams that were not valid Quantum packets.
    pub malformed: u64,
    /// Packets naming no connection this endpoint holds (and not an acceptable SYN).
    pub unknown_connection: u64,
    /// Retry cookies sent in answer to SYNs.
    pub retries_sent: u64,
    /// SYNs whose cookie did not verify.
    pub invalid_cookies: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// SYNs with a valid cookie whose Noise message did not authenticate (a client pinning
    /// another key, or holding another pre-shared secret); each got a refusal.
    pub handshakes_refused: u64,
}

/// Many connections behind one address. See [`Connection`] for the call order, which is the
/// same here.
#[derive(Debug)]
pub struct Endpoint {
    config: Config,
    rng: ChaCha8Rng,
    cookies: CookieJar,
    /// `(instant, wall clock)` read together by the caller, to date connection ids.
    anchor: (Instant, SystemTime),
    connections: BTreeMap<ConnectionId, Connection>,
    stateless: VecDeque<Transmit>,
    stats: EndpointStats,
}

impl Endpoint {
    /// An endpoint created at `now`, when the wall clock read `wall_clock` (used only to date
    /// the UUIDv7 connection ids).
    pub fn new(
        config: Config,
        now: Instant,
        wall_clock: SystemTime,
    ) -> Result<Endpoint, ConfigError> {
        config.validate()?;
        Ok(Endpoint {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            cookies: CookieJar::new(config.cookie_key, config.cookie_lifetime, now),
            anchor: (now, wall_clock),
            connections: BTreeMap::new(),
            stateless: VecDeque::new(),
            stats: EndpointStats::default(),
            config,
        })
    }

    /// Opens a connection to `remote`; its SYN goes out on the next poll.
    pub fn connect(&mut self, now: Instant, remote: SocketAddr) -> ConnectionId {
        let wall = self.anchor.1 + now.saturating_duration_since(self.anchor.0);
        let millis = wall
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let id = ConnectionId::new_v7(millis, self.rng.random());
        let seed = self.rng.random();
        let conn = Connection::connect(self.config.clone(), id, remote, now, seed);
        self.connections.insert(id, conn);
        id
    }

    /// Counters.
    pub fn stats(&self) -> &EndpointStats {
        &self.stats
    }

    /// How many connections hold state.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// A connection, while it exists.
    pub fn connection(&self, id: ConnectionId) -> Option<&Connection> {
        self.connections.get(&id)
    }

    /// A connection for sending, closing or aborting.
    pub fn connection_mut(&mut self, id: ConnectionId) -> Option<&mut Connection> {
        self.connections.get_mut(&id)
    }

    /// Queues a message on connection `id`.
    pub fn send(&mut self, id: ConnectionId, message: &[u8]) -> Result<(), SendError> {
        self.connections
            .get_mut(&id)
            .ok_or(SendError::Closed)?
            .send(message)
    }

    /// Feeds one datagram from `remote`.
    pub fn handle(&mut self, now: Instant, remote: SocketAddr, datagram: &[u8]) {
        let parsed = match wire::parse(datagram) {
            Ok(parsed) => parsed,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        let id = parsed.connection_id();
        if let Some(conn) = self.connections.get_mut(&id) {
            conn.handle_datagram(now, remote, parsed, datagram.len());
            return;
        }
        let Datagram::Clear(packet) = parsed else {
            self.stats.unknown_connection += 1;
            return;
        };
        let flags = packet.header.flags;
        let is_first_syn = flags.contains(Flags::SYN) && !flags.contains(Flags::ACK);
        if !self.config.accept_incoming || !is_first_syn {
            self.stats.unknown_connection += 1;
            return;
        }
        let Ok((cookie, hello)) = wire::parse_syn_payload(&packet.payload) else {
            self.stats.malformed += 1;
            return;
        };
        if self.config.require_retry {
            let Some(cookie) = cookie else {
                self.send_stateless(
                    remote,
                    id,
                    Control::Retry(self.cookies.issue(now, remote, id)),
                    datagram.len(),
                );
                return;
            };
            if !self.cookies.verify(now, remote, id, &cookie) {
                // An expired cookie is what a client echoes after its SYN-ACKs were lost for a
                // cookie lifetime; a fresh one lets it finish, still without state kept here.
                self.stats.invalid_cookies += 1;
                self.send_stateless(
                    remote,
                    id,
                    Control::Retry(self.cookies.issue(now, remote, id)),
                    datagram.len(),
                );
                return;
            }
        }
        // Only now, with the address proven, does the endpoint spend Diffie-Hellman work.
        let seed = self.rng.random();
        match Connection::accept(self.config.clone(), &packet, hello, remote, now, seed) {
            Ok(mut conn) => {
                self.stats.accepted += 1;
                conn.handle_packet(now, remote, packet, datagram.len());
                self.connections.insert(id, conn);
            }
            Err(_) => {
                self.stats.handshakes_refused += 1;
                self.send_stateless(remote, id, Control::Refused, datagram.len());
            }
        }
    }

    /// Answers a SYN in clear (a retry cookie or a refusal), keeping nothing; the answer is
    /// never more than three times the SYN's size.
    fn send_stateless(
        &mut self,
        remote: SocketAddr,
        id: ConnectionId,
        control: Control,
        syn_len: usize,
    ) {
        let packet = Packet {
            header: Header {
                flags: Flags::URG,
                connection_id: id,
                sequence: 0,
                acknowledgement: 0,
            },
            sack: Vec::new(),
            payload: control.to_bytes(),
        };
        if packet.encoded_len() > 3 * syn_len {
            return;
        }
        let contents = packet
            .to_bytes()
            .expect("a retry packet is within the format's limits");
        if matches!(control, Control::Retry(_)) {
            self.stats.retries_sent += 1;
        }
        self.stateless.push_back(Transmit {
            destination: remote,
            contents,
        });
    }

    /// Reads a datagram this endpoint sent, for diagnostics and tests (what a key log would
    /// show): clear handshake packets decode as they are, sealed ones with the sending
    /// connection's keys. Changes nothing.
    pub fn inspect_sent(&self, datagram: &[u8]) -> Option<Packet> {
        let id = wire::parse(datagram).ok()?.connection_id();
        match self.connections.get(&id) {
            Some(conn) => conn.inspect_sent(datagram),
            None => Packet::decode(datagram).ok(),
        }
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if let Some(transmit) = self.stateless.pop_front() {
            return Some(transmit);
        }
        self.connections
            .values_mut()
            .find_map(|conn| conn.poll_transmit(now))
    }

    /// When [`Endpoint::handle_timeout`] should next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.connections
            .values()
            .filter_map(Connection::poll_timeout)
            .min()
    }

    /// Runs every connection's expired timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        for conn in self.connections.values_mut() {
            if conn.poll_timeout().is_some_and(|t| t <= now) {
                conn.handle_timeout(now);
            }
        }
    }

    /// The next event of any connection; connections that are over are forgotten once their
    /// last event has been taken.
    pub fn poll_event(&mut self) -> Option<(ConnectionId, Event)> {
        let found = self
            .connections
            .iter_mut()
            .find_map(|(&id, conn)| conn.poll_event().map(|event| (id, event)));
        self.connections.retain(|_, conn| !conn.is_drained());
        found
    }
}
