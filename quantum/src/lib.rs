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
//! use aetherflow_quantum::crypto::Keypair;
//! use aetherflow_quantum::{Config, Endpoint, Event};
//!
//! let start = Instant::now();
//! let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
//! // The server's identity; the client pins its public half.
//! let relay = Keypair::from_seed(3);
//! let client_config = Config { seed: 1, server_public_key: Some(relay.public), ..Config::default() };
//! let mut client = Endpoint::new(client_config, start, wall).unwrap();
//! let server_config = Config {
//!     seed: 2,
//!     accept_incoming: true,
//!     static_secret: Some(relay.secret),
//!     ..Config::default()
//! };
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
//! Every datagram is one packet; integers are big-endian. Version 2 (this one) seals every
//! datagram after the handshake; version 1 (plaintext) is refused, and there is no plaintext
//! mode to fall back to. Every datagram starts with a 22-byte prefix:
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | magic `AFQM` |
//! | 4 | 1 | version, `2` |
//! | 5 | 1 | kind: `0` clear (handshake only), `1` sealed; bit 1 is the sealed datagram's key phase |
//! | 6 | 16 | connection id, a UUIDv7 drawn by the client |
//!
//! A **clear** datagram (kind 0) continues with the packet itself (below, from offset 22). Only
//! the handshake may be clear: the client's SYN, the server's retry cookie or refusal, and the
//! SYN-ACK ([`wire`], `connection/protection.rs`); anything else in clear is dropped.
//!
//! A **sealed** datagram (kind 1 or 3) continues with:
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 22 | 8 | packet number: the AEAD nonce, a per-direction counter every datagram takes afresh |
//! | 30 | … | the packet below, encrypted with AES-256-GCM; bytes 0..30 are its associated data |
//! | end − 16 | 16 | the AEAD tag |
//!
//! The packet (in clear inside a clear datagram, encrypted inside a sealed one):
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 1 | flags: bit 0 SYN, 1 ACK, 2 FIN, 3 RST, 4 FEC, 5 PSH, 6 URG, 7 ECE |
//! | 1 | 4 | sequence number (low 32 bits of the sender's 64-bit counter) |
//! | 5 | 4 | acknowledgement: the next sequence number expected from the peer |
//! | 9 | 2 | payload length `P` |
//! | 11 | 8·n | `n` ≤ 8 SACK blocks, each `start` (4) and `end` (4), a half-open range held beyond the acknowledgement; only with ACK |
//! | 11 + 8·n | `P` | payload |
//!
//! The number of SACK blocks is implied: `n = (packet length − 11 − P) / 8`, which must be a
//! whole number no greater than 8. A sealed data packet spends [`packet::HEADER_LEN`] (57)
//! bytes besides SACK blocks and payload. Packet kinds:
//!
//! - **SYN** (client, clear): payload a marker byte (`0`, or `1` followed by the 20-byte
//!   retry cookie), then the first Noise message. **SYN|ACK** (server, clear): payload the
//!   second Noise message. The initial sequence numbers travel inside the Noise payloads
//!   (4 bytes each), so the clear header fields of the handshake are not trusted.
//! - **Data**: payload is one fragment of a message, sequence numbers count fragments; PSH
//!   marks a message's last fragment. **FIN** consumes a sequence number and carries nothing.
//! - **Pure ACK** (also the keepalive): no payload, no PSH/FIN; its sequence is not consumed.
//! - **URG**: the payload is a control frame, a type byte then a fixed body: `1` retry
//!   cookie (20 bytes: time bucket 4, SipHash-2-4-128 tag 16; clear), `2` path challenge
//!   (8-byte token), `3` path response (the token echoed), `4` FEC repairs (4 bytes: how many
//!   data packets the sender of the frame has rebuilt from parity so far, modulo 2³²), `5`
//!   handshake refused (no body; clear, the server's answer to a Noise message that did not
//!   authenticate). Control frames are not retransmitted, and their acknowledgement field is
//!   ignored.
//! - **FEC**: a Reed-Solomon parity packet. Its sequence is not consumed (like a pure ACK's);
//!   the payload is a 7-byte sub-header, first sequence of the group (4), data packets `k`
//!   (1), parity packets `m` (1), parity index (1), then the parity shard. Data shards are a
//!   packet's payload length (2), its PSH/FIN flags (1) and payload, zero-padded to the
//!   group's longest. Layouts and rules in [`fec`].
//! - **RST** aborts at once (sealed, so only the peer can send one).
//!
//! # Threat model
//!
//! Against an attacker who can read, drop, delay, replay, reorder and inject datagrams on the
//! path (and one off the path who guesses), Quantum gives what TLS 1.3 gives on the same path:
//!
//! - **Server authentication.** The client pins the server's static key
//!   ([`Config::server_public_key`]); the Noise NK handshake ([`crypto::handshake`], which
//!   says why NK) completes only with the holder of its private half. A wrong key closes the
//!   connection with [`CloseReason::HandshakeFailed`]. Peers sharing a secret use NNpsk0
//!   ([`Config::psk`]) instead.
//! - **Confidentiality and integrity** of everything after the handshake: the token in the
//!   application's hello, messages, acknowledgements, parity, control, keepalives, FIN and
//!   RST. The prefix and packet number are authenticated as associated data.
//! - **No replays, no state change from forgeries.** A sealed datagram is opened before
//!   anything else looks at it; one that fails ([`ConnectionStats::auth_failures`]) or repeats
//!   a packet number ([`ConnectionStats::replays_dropped`]; a 2,048-number window) is dropped
//!   and changes nothing else: a forged reset closes nothing, forged acknowledgements move
//!   nothing, a forged datagram from a new address starts no path challenge.
//! - **Key updates** ([`crypto::keys`]): each direction's key is replaced by Noise's REKEY
//!   of it after [`Config::key_update_packets`] datagrams or [`Config::key_update_interval`];
//!   the key phase bit tells the receiver, which keeps the old key for 3 RTO for reordered
//!   datagrams.
//! - **Denial of service.** The server answers an unvalidated address with a stateless cookie
//!   and does no Diffie-Hellman work until a SYN echoes it; before the handshake completes it
//!   sends at most 3× the bytes it received.
//!
//! What an on-path observer still sees: the connection id (stable for the connection's life,
//! so migrations are linkable), datagram sizes and timing (so message sizes and typing
//! rhythm), the packet numbers, the key phase, the handshake datagrams (the client's and
//! server's ephemeral public keys, the retry cookie), and the addresses. What an attacker on
//! the path can still do: drop or delay datagrams (the connection then times out, as with
//! TCP), and answer a client's SYN with a clear refusal or retry, which ends or delays that
//! handshake (it cannot make the client accept anything). The server's first Noise message
//! carries no application data, and the client's carries only its initial sequence number,
//! since NK's first message is not forward secret. Theft of the server's static key lets the
//! thief impersonate the server to new connections; it does not decrypt recorded traffic.
//!
//! # Mechanisms
//!
//! - Handshake: SYN(Noise 1) → Retry(cookie) → SYN(cookie, Noise 1) → SYN|ACK(Noise 2) → sealed
//!   ACK. The server keeps no state and does no Diffie-Hellman work until a SYN echoes a
//!   cookie bound to the client's address, the connection id and a time bucket ([`cookie`]);
//!   before the handshake completes it sends at most 3× the bytes it got. A Noise message that
//!   does not authenticate earns a clear refusal and leaves no state
//!   ([`EndpointStats::handshakes_refused`]).
//! - Reliability (the private `send` and `recv` modules): per-fragment sequence numbers, SACK,
//!   loss after three later transmissions are acknowledged or 9/8 RTT passed (RACK-style, so
//!   lost retransmissions are caught too), RFC 6298 RTO with exponential backoff ([`rtt`]).
//! - Sparse traffic (issue 3): a message's last packet arriving after a silence longer than
//!   `max_ack_delay` is acknowledged at once (waiting would pair it with nothing), so a
//!   sparse sender's RTT samples carry no ACK delay. While the application has nothing more
//!   to send, a tail loss probe (after RACK-TLP, RFC 8985) resends the oldest packet in
//!   flight if it is unacknowledged SRTT + max(2·RTTVAR, SRTT/8) after it left (plus
//!   `max_ack_delay` if it followed another packet closely): a lone lost message is resent
//!   about one RTT after sending instead of when the next message's SACK shows the hole. One
//!   probe per acknowledgement progress; it declares nothing lost, but an acknowledgement
//!   arriving at least half the minimum RTT after the probe shows the original was lost and
//!   counts as a loss ([`ConnectionStats::tail_probe_recoveries`]).
//! - Congestion control ([`congestion`]): BBR v1 by default, NewReno via
//!   [`Config::congestion`]. Each transmission snapshots the delivery state, so each
//!   acknowledgement yields a delivery-rate sample (draft-cheng-iccrg-delivery-rate-estimation);
//!   BBR keeps the largest sample of the last ten round trips as the bottleneck bandwidth and
//!   the smallest RTT of the last ten seconds, and moves through STARTUP, DRAIN, PROBE_BW and
//!   PROBE_RTT. Samples taken while the application had nothing to send only count if they
//!   raise the estimate, so a sparse sender keeps it; loss holds the window to what is in
//!   flight for one round rather than halving it.
//! - Pacing: data packets (retransmissions included) pass a token bucket filled at the
//!   controller's pacing rate and holding about 1 ms of data (at least two packets).
//!   [`Connection::poll_timeout`] includes the instant a held-back packet may leave. An idle
//!   sender finds the bucket full, so a lone message leaves at once. Before any RTT sample
//!   nothing is paced; then BBR paces at 2/ln 2 × the initial window per RTT until its first
//!   bandwidth sample. A sender back from idle paces at the estimate (not a probing gain) and
//!   does not start with PROBE_RTT, as Linux's `idle_restart` does. [`ConnectionStats`] reports the window, pacing rate, BBR state, min RTT
//!   and bandwidth estimate.
//! - Migration: a sealed packet for a known connection from a new address that authenticates
//!   (and is no replay) triggers a sealed path challenge to that address (within the 3×
//!   budget); only a correct, sealed response moves the connection.
//!   A move to a new IP address starts RTT, congestion, pacing and loss-rate state afresh
//!   (RFC 9000 §9.4); a new port alone (NAT rebinding) keeps them.
//! - Forward error correction ([`fec`]): first transmissions are grouped, up to 10 per
//!   group. A full group, or one that holds 4 and saw no packet for 5 ms (or whose oldest is
//!   200 ms old), gets 0 to 3 Reed-Solomon parity packets sized by the measured loss rate
//!   (none below 0.5 %). Sparse (app-limited) traffic has its own rule (issue 3): its group
//!   holds only packets whose tail loss probe is not yet due, and gets one parity packet 5 ms
//!   after its newest packet whenever a byte budget pays for it (30 % of data bytes at 2 %
//!   measured loss or more, less below, none below 1 %; [`fec::FecConfig`]), so a lost
//!   message that parity covers is rebuilt one one-way delay + 5 ms after it was sent. The
//!   receiver rebuilds missing packets from any `k` of the
//!   `k + m` and feeds them through the normal receive path; it reports its repair count, and
//!   the sender counts repairs as losses for congestion control and its loss measurement.
//!   Loss detection of protected packets starts from their parity's send time, so a repair
//!   can arrive before a retransmission is sent, unless the parity left after the packet's
//!   own time threshold expired (then it could not beat a retransmission); tail loss probes
//!   ignore parity, so FEC never holds a sparse message's recovery back.
//! - Keepalive after [`Config::keepalive_interval`] of silence; close after
//!   [`Config::idle_timeout`] without hearing anything; FIN/FIN close then a drain of 3 RTO.
//!
//! # Status
//!
//! Built: Noise handshake (NK, NNpsk0) after the retry cookie, sealed datagrams with replay
//! window and key updates (`tests/sim/secure.rs`), packet codec, endpoint, connection state
//! machine, retry cookies, anti-amplification,
//! migration, SACK loss recovery, RTO, keepalive/idle, FIN/RST, BBR with pacing (NewReno
//! selectable), forward error correction with a budgeted sparse mode
//! (`tests/sim/sparse_fec.rs`), immediate ACKs and tail loss probes for sparse traffic
//! (`tests/sim/tail.rs`), path-state reset on migration, and the simulator tests, including a bottleneck model (a rate limit with a
//! finite queue) that the congestion scenarios in `tests/sim/congestion.rs` run against; the
//! tokio + quinn-udp runtime [`driver`] ([`QuantumEndpoint`], [`QuantumConnection`]) with
//! loopback tests in `tests/driver.rs`; cargo-fuzz targets for `Packet::decode` and
//! `Endpoint::handle`, and for the handshake path, in `fuzz/`.
//! Not built yet, in priority order:
//!
//! 1. FEC gaps: parity is not paced or limited by the congestion window (it is not counted in
//!    flight); repairs are reported to congestion control as sent one smoothed RTT ago, since
//!    the exact packets are not named; a lost repair report is only made good by a later one.
//! 2. Sparse-traffic gaps: the probe's verdict (original lost or not) is inferred from the
//!    acknowledgement's timing, as there is no DSACK; a probe that is itself lost is left
//!    to the RTO; within the default 30 % sparse parity budget about a third of sparse
//!    packets are covered by parity in time, so at 5 % loss the p99 of sparse traffic stays
//!    at the probe tier (SRTT + SRTT/8 + one-way delay); a p99 near the one-way delay takes a
//!    budget of about 100 % (see [`fec`], "The limit").
//! 3. Security gaps: the connection id is stable, so an observer links a connection across
//!    migrations (QUIC rotates ids); packet numbers and key phase are not header-protected;
//!    a clear refusal or retry from an on-path attacker ends or delays a handshake; a
//!    receiver follows at most one key phase it saw nothing of (every datagram of two
//!    consecutive phases lost breaks the connection), which the default of 2^20 datagrams
//!    per key makes impossible in practice.
//! 4. Smaller gaps: BBR v1 only (no BBRv2/v3
//!    loss or ECN response, no ack-aggregation compensation, no long-term bandwidth
//!    sampling for policers); ack delay is not subtracted from RTT samples (so delayed ACKs can inflate BBR's min RTT
//!    by up to `max_ack_delay` on a sparse connection); a duplicate-ACK counter is not kept
//!    separately (the transmission-order threshold stands in for it); ECN (ECE) is unused;
//!    the endpoint forgets a closed connection only after its events are polled; the
//!    driver does not act on ICMP errors (a connect to a closed port fails by its handshake
//!    timeout) and does not bound undelivered received messages or unaccepted connections.

pub mod config;
pub mod congestion;
pub mod connection;
pub mod cookie;
pub mod crypto;
#[cfg(feature = "driver")]
pub mod driver;
pub mod endpoint;
pub mod fec;
pub mod packet;
mod recv;
pub mod rtt;
mod send;
pub mod wire;

pub use config::{Config, ConfigError};
pub use connection::{CloseReason, Connection, ConnectionStats, Event, Role, SendError, Transmit};
#[cfg(feature = "driver")]
pub use driver::{
    Connection as QuantumConnection, DriverConfig, DriverError, DriverStats,
    Endpoint as QuantumEndpoint,
};
pub use endpoint::{Endpoint, EndpointStats};
pub use packet::{ConnectionId, DecodeError, Packet};
