//! The connection's public value types: datagrams out, events, close and send errors, roles
//! and counters.

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;

use crate::congestion::BbrState;

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
    /// The Noise handshake failed: the server refused our message (we pinned another key
    /// than it holds, or hold another pre-shared secret), or this side had no key to start.
    #[error(
        "handshake failed: the peer holds another key than the one pinned (or another pre-shared secret)"
    )]
    HandshakeFailed,
}

/// Why [`Connection::send`](super::Connection::send) refused a message.
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
    /// Sealed datagrams that failed authentication (forged, tampered with, truncated, or
    /// sealed under a key this side does not hold); dropped without any other effect.
    pub auth_failures: u64,
    /// Authenticated datagrams whose packet number was already seen (or is older than the
    /// replay window); dropped without any other effect.
    pub replays_dropped: u64,
    /// Datagrams in clear that the handshake state does not allow (anything but the
    /// handshake packets); dropped without any other effect.
    pub clear_dropped: u64,
    /// Times this side updated its send key.
    pub key_updates_sent: u64,
    /// Times this side followed a key update of the peer.
    pub key_updates_received: u64,
    /// Times the peer moved to a new IP address and RTT, congestion and loss state started
    /// afresh (a change of port alone keeps them).
    pub path_resets: u64,
}
