//! Quantum, AetherFlow's reliable-UDP transport: a sans-IO protocol core in the manner of
//! quinn-proto.
//!
//! The core takes datagrams and the current time as arguments and yields datagrams to send, the
//! next timeout and events. It reads no clock, opens no socket, and draws randomness only from
//! the seed in its [`Config`], so a simulated network (see `tests/sim/`) drives it
//! deterministically.
//!
//! # Call order
//!
//! Feed each received datagram to [`Endpoint::handle`]; then drain
//! [`Endpoint::poll_transmit`] and [`Endpoint::poll_event`]; arm a timer for
//! [`Endpoint::poll_timeout`] and call [`Endpoint::handle_timeout`] when it fires; poll again
//! after every call that changes state ([`Endpoint::send`], [`Connection::close`], ...).
//!
//! ```
//! use std::time::{Duration, Instant, SystemTime};
//! use aetherflow_quantum::{Config, Endpoint, Event};
//!
//! let start = Instant::now();
//! let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
//! let mut client = Endpoint::new(Config { seed: 1, ..Config::default() }, start, wall).unwrap();
//! let server_config = Config { seed: 2, accept_incoming: true, ..Config::default() };
//! let mut server = Endpoint::new(server_config, start, wall).unwrap();
//! let (client_addr, server_addr) = ("10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap());
//!
//! let id = client.connect(start, server_addr);
//! client.send(id, b"hello").unwrap();
//! let mut now = start;
//! let mut received = Vec::new();
//! for _ in 0..20 {
//!     // A perfect network with 5 ms one-way delay.
//!     now += Duration::from_millis(5);
//!     while let Some(t) = client.poll_transmit(now) { server.handle(now, client_addr, &t.contents); }
//!     while let Some(t) = server.poll_transmit(now) { client.handle(now, server_addr, &t.contents); }
//!     while let Some((_, event)) = server.poll_event() {
//!         if let Event::Message(bytes) = event { received.push(bytes); }
//!     }
//!     client.handle_timeout(now);
//!     server.handle_timeout(now);
//! }
//! assert_eq!(received, vec![b"hello".to_vec()]);
//! ```
//!
//! # Running it over UDP
//!
//! The [`driver`] module runs the core on a real socket under tokio:
//! [`QuantumEndpoint::bind`], [`QuantumEndpoint::connect`] / [`QuantumEndpoint::accept`], then
//! [`QuantumConnection::send`], [`QuantumConnection::recv`] and [`QuantumConnection::close`].
//! Its module docs have an example.
//!
//! # Packet layout
//!
//! Every datagram is one packet; integers are big-endian.
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | magic `AFQM` |
//! | 4 | 1 | version, `1` |
//! | 5 | 1 | flags: bit 0 SYN, 1 ACK, 2 FIN, 3 RST, 4 FEC, 5 PSH, 6 URG, 7 ECE |
//! | 6 | 16 | connection id, a UUIDv7 drawn by the client |
//! | 22 | 4 | sequence number (low 32 bits of the sender's 64-bit counter) |
//! | 26 | 4 | acknowledgement: the next sequence number expected from the peer |
//! | 30 | 2 | payload length `P` |
//! | 32 | 8·n | `n` ≤ 8 SACK blocks, each `start` (4) and `end` (4), a half-open range held beyond the acknowledgement; only with ACK |
//! | 32 + 8·n | `P` | payload |
//!
//! The number of SACK blocks is implied: `n = (datagram length − 32 − P) / 8`, which must be a
//! whole number no greater than 8. Packet kinds:
//!
//! - **SYN** (client): sequence = initial sequence number; payload empty or a 20-byte retry
//!   cookie. **SYN|ACK** (server): its own initial sequence number, acknowledging the client's.
//! - **Data**: payload is one fragment of a message, sequence numbers count fragments; PSH
//!   marks a message's last fragment. **FIN** consumes a sequence number and carries nothing.
//! - **Pure ACK** (also the keepalive): no payload, no PSH/FIN; its sequence is not consumed.
//! - **URG**: the payload is a control frame, a type byte then a fixed body: `1` retry
//!   cookie (20 bytes: time bucket 4, SipHash-2-4-128 tag 16), `2` path challenge (8-byte
//!   token), `3` path response (the token echoed). Control frames are not retransmitted.
//! - **RST** aborts at once.
//!
//! # Mechanisms
//!
//! - Handshake: SYN → Retry(cookie) → SYN(cookie) → SYN|ACK → ACK. The server keeps no state
//!   until a SYN echoes a cookie bound to the client's address, the connection id and a time
//!   bucket ([`cookie`]); before the handshake completes it sends at most 3× the bytes it got.
//! - Reliability (the private `send` and `recv` modules): per-fragment sequence numbers, SACK,
//!   loss after three later transmissions are acknowledged or 9/8 RTT passed (RACK-style, so
//!   lost retransmissions are caught too), RFC 6298 RTO with exponential backoff ([`rtt`]).
//! - Migration: a packet for a known connection from a new address triggers a path challenge
//!   to that address (within the 3× budget); only a correct response moves the connection.
//! - Keepalive after [`Config::keepalive_interval`] of silence; close after
//!   [`Config::idle_timeout`] without hearing anything; FIN/FIN close then a drain of 3 RTO.
//!
//! # Status
//!
//! Built: packet codec, endpoint, connection state machine, retry cookies, anti-amplification,
//! migration, SACK loss recovery, RTO, keepalive/idle, FIN/RST, and the simulator tests; the
//! tokio + quinn-udp runtime [`driver`] ([`QuantumEndpoint`], [`QuantumConnection`]) with
//! loopback tests in `tests/driver.rs`.
//! Not built yet, in priority order:
//!
//! 1. BBR (STARTUP, DRAIN, PROBE_BW, PROBE_RTT) with pacing behind [`congestion::CongestionController`];
//!    the connection uses the interim [`congestion::NewReno`], which does not pace, and the
//!    trait's `pacing_rate` is not yet consulted by `poll_transmit`. BBR needs per-packet
//!    delivery-rate samples, which `send` does not record yet.
//! 2. Forward error correction with `reed-solomon-erasure` (10+3 groups, early close on a
//!    deadline, loss-adaptive parity, repairs counted as losses). The FEC flag is reserved;
//!    packets carrying it are currently treated like any other.
//! 3. Smaller gaps: congestion state is not reset on migration; a duplicate-ACK counter is
//!    not kept separately (the transmission-order threshold stands in for it); ECN (ECE) is
//!    unused; the endpoint forgets a closed connection only after its events are polled.

pub mod config;
pub mod congestion;
pub mod connection;
pub mod cookie;
pub mod driver;
pub mod endpoint;
pub mod packet;
mod recv;
pub mod rtt;
mod send;

pub use config::{Config, ConfigError};
pub use connection::{CloseReason, Connection, ConnectionStats, Event, Role, SendError, Transmit};
pub use driver::{
    Connection as QuantumConnection, DriverConfig, DriverError, DriverStats,
    Endpoint as QuantumEndpoint,
};
pub use endpoint::{Endpoint, EndpointStats};
pub use packet::{ConnectionId, DecodeError, Packet};
