//! The one configuration struct of a Quantum endpoint and its connections.

use std::time::Duration;

use thiserror::Error;

use crate::congestion::Algorithm;
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
    /// Whether a server demands a retry cookie before it keeps any state for a SYN.
    pub require_retry: bool,
    /// Secret key of the retry cookies; keep it private and random in production.
    pub cookie_key: [u8; 16],
    /// How long one cookie time bucket lasts; a cookie is valid for one to two buckets.
    pub cookie_lifetime: Duration,
    /// Forward error correction (see [`crate::fec`]).
    pub fec: FecConfig,
    /// Congestion controller of every connection: BBR with pacing unless NewReno is chosen.
    pub congestion: Algorithm,
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
            fec: FecConfig::default(),
            congestion: Algorithm::Bbr,
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
        self.fec.validate()?;
        Ok(())
    }

    /// Message bytes one data packet carries: the MTU less a header with full SACK blocks.
    pub fn max_fragment(&self) -> usize {
        self.mtu - MAX_OVERHEAD
    }
}
