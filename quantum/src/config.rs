//! The one configuration struct of a Quantum endpoint and its connections.

use std::time::Duration;

use thiserror::Error;

use crate::congestion::Algorithm;
use crate::crypto::Secret;
use crate::crypto::handshake::Credentials;
use crate::crypto::keys::UpdatePolicy;
use crate::fec::{FecConfig, FecError};
use crate::packet::MAX_OVERHEAD;

/// Settings for an endpoint and every connection it runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest datagram sent, header and SACK blocks included.
    pub mtu: usize,
    /// Largest message `send` accepts and the receiver reassembles.
    pub max_message_size: usize,
    /// Packets that may be outstanding beyond the peer's cumulative acknowledgement; the
    /// receiver buffers at most this many out of order.
    pub window_packets: u64,
    /// Retransmission timeout before any RTT sample.
    pub initial_rto: Duration,
    /// Floor of the retransmission timeout.
    pub min_rto: Duration,
    /// Ceiling of the retransmission timeout, backoff included.
    pub max_rto: Duration,
    /// Longest a receiver waits before acknowledging in-order data.
    pub max_ack_delay: Duration,
    /// Send a keepalive after this long without sending anything.
    pub keepalive_interval: Duration,
    /// Close the connection after this long without receiving anything.
    pub idle_timeout: Duration,
    /// Seed of every random choice the endpoint makes (connection ids, sequence numbers,
    /// path challenges). The same seed and inputs give the same outputs.
    pub seed: u64,
    /// Whether this endpoint accepts incoming connections.
    pub accept_incoming: bool,
    /// Whether a server demands a retry cookie before it keeps any state for a SYN or does
    /// any Diffie-Hellman work for it. Without it, a spoofed SYN costs the server a key
    /// agreement; leave it on outside tests and fuzzing.
    pub require_retry: bool,
    /// Secret key of the retry cookies; keep it private and random in production.
    pub cookie_key: [u8; 16],
    /// How long one cookie time bucket lasts; a cookie is valid for one to two buckets.
    pub cookie_lifetime: Duration,
    /// Congestion controller of every connection: BBR with pacing unless NewReno is chosen.
    pub congestion: Algorithm,
    /// Forward error correction (see [`crate::fec`]).
    pub fec: FecConfig,
    /// A server's static private key, its identity in the Noise handshake (clients pin the
    /// public half). Needed to accept connections unless `psk` is set.
    pub static_secret: Option<Secret>,
    /// A client's pinned copy of the server's static public key; a server holding another
    /// key refuses the handshake ([`crate::CloseReason::HandshakeFailed`]).
    pub server_public_key: Option<[u8; 32]>,
    /// A secret both peers hold: when set, both sides run the pre-shared-key pattern instead
    /// of pinning a static key (see [`crate::crypto::handshake`]).
    pub psk: Option<Secret>,
    /// A sender updates its packet key after sealing this many datagrams under it.
    pub key_update_packets: u64,
    /// ... or after using it this long, whichever comes first.
    pub key_update_interval: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            mtu: 1200,
            max_message_size: 1 << 20,
            window_packets: 1024,
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(60),
            max_ack_delay: Duration::from_millis(25),
            keepalive_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            seed: 0,
            accept_incoming: false,
            require_retry: true,
            cookie_key: [0; 16],
            cookie_lifetime: Duration::from_secs(10),
            congestion: Algorithm::Bbr,
            fec: FecConfig::default(),
            static_secret: None,
            server_public_key: None,
            psk: None,
            key_update_packets: 1 << 20,
            key_update_interval: Duration::from_secs(600),
        }
    }
}

/// Why a [`Config`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The MTU leaves no room for data after a full header, or exceeds a UDP datagram.
    #[error("mtu {0} must be between {min} and 65507", min = MAX_OVERHEAD + 1)]
    Mtu(usize),
    /// A zero message size or window.
    #[error("{0} must be positive")]
    Zero(&'static str),
    /// The window must stay far below half the 32-bit sequence space.
    #[error("window of {0} packets is too large (at most 2^30)")]
    Window(u64),
    /// The keepalive must fire before the idle timeout.
    #[error("keepalive interval must be shorter than the idle timeout")]
    Keepalive,
    /// An endpoint that accepts connections needs a static key or a pre-shared secret.
    #[error(
        "accepting connections needs a static key (static_secret) or a pre-shared secret (psk)"
    )]
    NoStaticKey,
    /// Key updates must come at least every 2^30 datagrams (and after at least 16).
    #[error("key_update_packets {0} must be between 16 and 2^30")]
    KeyUpdate(u64),
    /// The FEC settings are out of range.
    #[error("fec: {0}")]
    Fec(#[from] FecError),
}

impl Config {
    /// Checks the settings hang together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.mtu <= MAX_OVERHEAD || self.mtu > 65_507 {
            return Err(ConfigError::Mtu(self.mtu));
        }
        if self.max_message_size == 0 {
            return Err(ConfigError::Zero("max_message_size"));
        }
        if self.window_packets == 0 {
            return Err(ConfigError::Zero("window_packets"));
        }
        if self.window_packets > 1 << 30 {
            return Err(ConfigError::Window(self.window_packets));
        }
        if self.keepalive_interval >= self.idle_timeout {
            return Err(ConfigError::Keepalive);
        }
        if self.accept_incoming && self.static_secret.is_none() && self.psk.is_none() {
            return Err(ConfigError::NoStaticKey);
        }
        if !(16..=1 << 30).contains(&self.key_update_packets) {
            return Err(ConfigError::KeyUpdate(self.key_update_packets));
        }
        if self.key_update_interval.is_zero() {
            return Err(ConfigError::Zero("key_update_interval"));
        }
        self.fec.validate()?;
        Ok(())
    }

    /// How this side authenticates a connection it opens (`None`: it has no key to).
    pub(crate) fn client_credentials(&self) -> Option<Credentials> {
        match (&self.psk, self.server_public_key) {
            (Some(psk), _) => Some(Credentials::Psk(psk.clone())),
            (None, Some(public)) => Some(Credentials::PinnedServer(public)),
            (None, None) => None,
        }
    }

    /// How this side authenticates a connection it accepts.
    pub(crate) fn server_credentials(&self) -> Option<Credentials> {
        match (&self.psk, &self.static_secret) {
            (Some(psk), _) => Some(Credentials::Psk(psk.clone())),
            (None, Some(secret)) => Some(Credentials::ServerStatic(secret.clone())),
            (None, None) => None,
        }
    }

    /// When senders update their keys.
    pub(crate) fn update_policy(&self) -> UpdatePolicy {
        UpdatePolicy {
            packets: self.key_update_packets,
            interval: self.key_update_interval,
        }
    }

    /// Message bytes one data packet carries: the MTU less a header with full SACK blocks.
    pub fn max_fragment(&self) -> usize {
        self.mtu - MAX_OVERHEAD
    }
}
