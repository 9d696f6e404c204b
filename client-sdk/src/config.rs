//! The client's configuration, built once and handed to [`crate::Client::open`], which checks
//! it ([`ClientConfig::validate`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::error::ConfigError;
use crate::relay_key::RelayKey;

/// How long to wait between reconnection attempts: `initial`, doubled after each failure, at
/// most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Upper bound on the delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The delay before attempt `failures + 1`, after `failures` failed attempts in a row.
    pub fn delay(&self, failures: u32) -> Duration {
        // 2^20 × any sane initial delay is past any sane max; capping the shift avoids overflow.
        let factor = 1u32 << failures.min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// [`Backoff::delay`] less up to half of it, chosen by `seed` (the client's id): clients
    /// that lost the relay together spread their reconnections out instead of arriving at once.
    pub fn jittered(&self, failures: u32, seed: u64) -> Duration {
        let full = self.delay(failures);
        // splitmix64's finaliser: a well-mixed value from the seed and the attempt number.
        let mut x = seed ^ u64::from(failures).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        let per_mille = (x % 1000) as f64;
        full.saturating_sub(full.mul_f64(per_mille / 2000.0))
    }
}

/// Default [`ClientConfig::quantum_sparse_fec_budget`], in percent of data bytes: latency
/// first (a parity packet for every edit), where the transport's own default (30 %) is
/// bytes first.
pub const DEFAULT_SPARSE_FEC_BUDGET: u16 = 200;

/// Everything a [`crate::Client`] needs.
#[derive(Clone)]
pub struct ClientConfig {
    /// The relay's Quantum (UDP) address, tried first when set.
    pub quantum_addr: Option<SocketAddr>,
    /// How the client knows the relay's Quantum key; required with `quantum_addr`. See
    /// [`crate::relay_key`]: pinned in production, trusted on first use in development.
    pub quantum_key: Option<RelayKey>,
    /// How long to wait for a Quantum handshake before falling back to WebSocket.
    pub quantum_handshake_timeout: Duration,
    /// The relay's WebSocket base URL, e.g. `ws://127.0.0.1:8080`, or `wss://relay.example`
    /// for TLS (the token is then encrypted too); a document `d` syncs at
    /// `{websocket_url}/ws/d`. The relay's HTTP API ([`crate::History`]) is at the same
    /// host, port and path over `http://` (`https://` for `wss://`). `None`: the client stays
    /// offline (edits are kept locally).
    pub websocket_url: Option<String>,
    /// Certificate authorities (PEM) trusted for `wss://` besides the platform's root
    /// certificates: a private CA, or a relay's self-signed certificate. See
    /// [`ClientConfig::tls_root_certificate`].
    pub tls_root_certificates: Vec<Vec<u8>>,
    /// A JWT client token, sent as `?token=` when the relay runs with auth.
    pub token: Option<String>,
    /// Directory of the local database `aetherflow-client.redb` (created if missing).
    pub data_dir: PathBuf,
    /// Longest wait for a connection to open.
    pub connect_timeout: Duration,
    /// Longest an HTTP request to the relay's API may take, connecting and reading the whole
    /// answer included (30 s by default); see [`crate::History`].
    pub http_timeout: Duration,
    /// Delays between reconnection attempts.
    pub backoff: Backoff,
    /// Other SDK instances listening with [`crate::Client::listen`] to sync with directly, in
    /// addition to the relay (or instead of it, when no relay is configured).
    pub peers: Vec<SocketAddr>,
    /// The secret shared by every peer of a group: both sides of a peer link mix it into the
    /// Quantum handshake as a pre-shared key, so it never travels and a peer without it fails
    /// the handshake. Required to [`crate::Client::listen`]. It is unrelated to the relay's
    /// token.
    pub peer_secret: Option<String>,
    /// Parity bytes Quantum may add per 100 bytes of sparse traffic (edits, presence), 0 to
    /// 200 ([`DEFAULT_SPARSE_FEC_BUDGET`] by default), on the connection to the relay, to
    /// peers and on a [`crate::Peer`] listener. Spent only while loss is measured (none below
    /// 1 %), so a clean network pays nothing.
    ///
    /// The trade-off is bytes for the tail latency under loss: a lost edit that parity
    /// covers is rebuilt one one-way delay after it was sent, one that it does not waits
    /// about 1.2 round trips for the tail loss probe's resend. A parity packet is about ten
    /// bytes longer than the packet it covers, so only a budget above 100 % covers every
    /// edit. Measured with `sdk-latency` (two clients through the relay, 20 edits/s, RTT 50
    /// ms, 5 % loss each way): edits that waited for a resend were 61–78 per 1,000 at 30 %,
    /// about 10–25 at 100 % and 5–6 at 200 %; the Quantum p99 went from the resend tier
    /// (106–148 ms) to about 61–64 ms at 200 %, for about 2.35 × WebSocket's bytes on the
    /// link (1.65 × at 30 %). With no loss measured no parity is sent. Details in
    /// `benches/RESULTS.md`.
    pub quantum_sparse_fec_budget: u16,
}

/// Shown without its secrets (the token and the peer secret), so a configuration may be
/// logged.
impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("ClientConfig")
            .field("quantum_addr", &self.quantum_addr)
            .field("quantum_key", &self.quantum_key)
            .field("quantum_handshake_timeout", &self.quantum_handshake_timeout)
            .field("websocket_url", &self.websocket_url)
            .field("tls_root_certificates", &self.tls_root_certificates.len())
            .field("token", &redacted(&self.token))
            .field("data_dir", &self.data_dir)
            .field("connect_timeout", &self.connect_timeout)
            .field("http_timeout", &self.http_timeout)
            .field("backoff", &self.backoff)
            .field("peers", &self.peers)
            .field("peer_secret", &redacted(&self.peer_secret))
            .field("quantum_sparse_fec_budget", &self.quantum_sparse_fec_budget)
            .finish()
    }
}

/// File name of the local database inside [`ClientConfig::data_dir`].
pub const DATABASE_FILE: &str = "aetherflow-client.redb";

impl ClientConfig {
    /// A configuration storing its data in `data_dir`, with no relay yet (offline).
    pub fn new(data_dir: impl Into<PathBuf>) -> ClientConfig {
        ClientConfig {
            quantum_addr: None,
            quantum_key: None,
            quantum_handshake_timeout: Duration::from_secs(2),
            websocket_url: None,
            tls_root_certificates: Vec::new(),
            token: None,
            data_dir: data_dir.into(),
            connect_timeout: Duration::from_secs(10),
            http_timeout: Duration::from_secs(30),
            backoff: Backoff::default(),
            peers: Vec::new(),
            peer_secret: None,
            quantum_sparse_fec_budget: DEFAULT_SPARSE_FEC_BUDGET,
        }
    }

    /// Checks the settings the transport would otherwise refuse only when it connects.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.quantum_addr.is_some() {
            match self.quantum_key {
                None => return Err(ConfigError::NoQuantumKey),
                Some(RelayKey::TrustOnFirstUse)
                    if self
                        .websocket_url
                        .as_deref()
                        .and_then(crate::relay_key::http_host)
                        .is_none() =>
                {
                    return Err(ConfigError::TrustOnFirstUseNeedsHttp);
                }
                Some(_) => {}
            }
        }
        let max = aetherflow_quantum::fec::MAX_SPARSE_BUDGET_PERCENT;
        if self.quantum_sparse_fec_budget > max {
            return Err(ConfigError::SparseFecBudget {
                percent: self.quantum_sparse_fec_budget,
                max,
            });
        }
        for pem in &self.tls_root_certificates {
            crate::tls::parse_roots(pem)
                .map_err(|e| ConfigError::TlsRootCertificate { reason: e.reason })?;
        }
        Ok(())
    }

    /// Sets [`ClientConfig::quantum_sparse_fec_budget`] (checked when the client opens).
    pub fn quantum_sparse_fec_budget(mut self, percent: u16) -> ClientConfig {
        self.quantum_sparse_fec_budget = percent;
        self
    }

    /// The Quantum settings of this client's connections and [`crate::Peer`] listeners.
    pub fn quantum_driver(&self) -> aetherflow_quantum::DriverConfig {
        let mut driver = aetherflow_quantum::DriverConfig {
            handshake_timeout: self.quantum_handshake_timeout,
            ..aetherflow_quantum::DriverConfig::default()
        };
        driver.quantum.fec.sparse_budget_percent = self.quantum_sparse_fec_budget;
        driver
    }

    /// Syncs over WebSocket with the relay at `url` (`ws://HOST:PORT`, or `wss://HOST` for
    /// TLS).
    pub fn websocket(mut self, url: impl Into<String>) -> ClientConfig {
        self.websocket_url = Some(url.into());
        self
    }

    /// Also trusts the certificate authority `pem` (one or more PEM certificates) for
    /// `wss://`, besides the platform's roots: a private CA, or the relay's own self-signed
    /// certificate. Call once per CA; a PEM without a certificate makes [`crate::Client::open`]
    /// fail with [`ConfigError::TlsRootCertificate`].
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let config = aetherflow_client::ClientConfig::new("./data")
    ///     .websocket("wss://relay.internal:8443")
    ///     .tls_root_certificate(std::fs::read("/etc/aetherflow/ca.pem")?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> ClientConfig {
        self.tls_root_certificates.push(pem.into());
        self
    }

    /// Syncs over Quantum with the relay's UDP listener at `addr` (WebSocket, if also set, is
    /// the fallback).
    pub fn quantum(mut self, addr: SocketAddr) -> ClientConfig {
        self.quantum_addr = Some(addr);
        self
    }

    /// Pins the relay's Quantum key: the 32-byte public key it prints at start-up (as hex:
    /// [`RelayKey::from_hex`]) and serves at `GET /api/v1/quantum`.
    pub fn quantum_key(mut self, key: [u8; 32]) -> ClientConfig {
        self.quantum_key = Some(RelayKey::Pinned(key));
        self
    }

    /// Development only: trusts the relay's Quantum key fetched on the first connection and
    /// refuses a different one later (see [`crate::relay_key`]).
    pub fn quantum_trust_on_first_use(mut self) -> ClientConfig {
        self.quantum_key = Some(RelayKey::TrustOnFirstUse);
        self
    }

    /// Authenticates with `token`.
    pub fn token(mut self, token: impl Into<String>) -> ClientConfig {
        self.token = Some(token.into());
        self
    }

    /// Also syncs directly with the SDK instance listening (see [`crate::Client::listen`]) at
    /// `addr`. Call once per peer.
    pub fn peer(mut self, addr: SocketAddr) -> ClientConfig {
        self.peers.push(addr);
        self
    }

    /// Sets the secret shared with peers (see [`ClientConfig::peer_secret`]).
    pub fn peer_secret(mut self, secret: impl Into<String>) -> ClientConfig {
        self.peer_secret = Some(secret.into());
        self
    }

    /// Gives each HTTP request to the relay's API at most `timeout` (see
    /// [`ClientConfig::http_timeout`]).
    pub fn http_timeout(mut self, timeout: Duration) -> ClientConfig {
        self.http_timeout = timeout;
        self
    }

    /// Uses `backoff` between reconnection attempts.
    pub fn backoff(mut self, backoff: Backoff) -> ClientConfig {
        self.backoff = backoff;
        self
    }

    /// The local database's path.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join(DATABASE_FILE)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_configuration_shows_no_secret() {
        let config = ClientConfig::new("unused")
            .token("secret-token-value")
            .peer_secret("secret-peer-value")
            .websocket("ws://relay.example");
        let shown = format!("{config:?}");
        assert!(!shown.contains("secret-token-value"), "{shown}");
        assert!(!shown.contains("secret-peer-value"), "{shown}");
        assert!(shown.contains("ws://relay.example"), "{shown}");
        let transport =
            crate::WebSocketTransport::new("ws://relay", Some("secret-token-value".into()));
        assert!(!format!("{transport:?}").contains("secret-token-value"));
    }

    #[test]
    fn a_sparse_fec_budget_above_200_is_refused_and_0_to_200_reach_the_transport() {
        let config = ClientConfig::new("unused");
        assert_eq!(config.quantum_sparse_fec_budget, DEFAULT_SPARSE_FEC_BUDGET);
        assert_eq!(
            config.quantum_driver().quantum.fec.sparse_budget_percent,
            DEFAULT_SPARSE_FEC_BUDGET
        );
        for percent in [0, 55, 200] {
            let config = ClientConfig::new("unused").quantum_sparse_fec_budget(percent);
            assert_eq!(config.validate(), Ok(()));
            let driver = config.quantum_driver();
            assert_eq!(driver.quantum.fec.sparse_budget_percent, percent);
            assert_eq!(driver.quantum.validate(), Ok(()));
        }
        for percent in [201, u16::MAX] {
            let err = ClientConfig::new("unused")
                .quantum_sparse_fec_budget(percent)
                .validate()
                .unwrap_err();
            assert_eq!(err, ConfigError::SparseFecBudget { percent, max: 200 });
            assert!(
                err.to_string().contains("quantum_sparse_fec_budget"),
                "{err}"
            );
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let delays: Vec<_> = (0..6).map(|n| backoff.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_delay_and_differs_by_client() {
        let backoff = Backoff::default();
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..50u64 {
            for failures in 0..8 {
                let full = backoff.delay(failures);
                let jittered = backoff.jittered(failures, seed);
                assert!(
                    jittered <= full && jittered >= full / 2,
                    "{jittered:?} of {full:?}"
                );
            }
            seen.insert(backoff.jittered(3, seed));
        }
        assert!(seen.len() > 25, "clients should not share delays: {seen:?}");
    }
}
