//! Which key the SDK expects the relay's Quantum listener to hold.
//!
//! Quantum's handshake (Noise NK) authenticates the relay by its static public key, which the
//! client must know before it connects. Two ways to know it:
//!
//! - **Pinned** ([`RelayKey::Pinned`], [`crate::ClientConfig::quantum_key`]): the key the
//!   relay prints at start-up (`aetherflow quantum key: HEX`). The production setting.
//! - **Trust on first use** ([`RelayKey::TrustOnFirstUse`],
//!   [`crate::ClientConfig::quantum_trust_on_first_use`]), for development: the first
//!   connection fetches the key from the relay's `GET /api/v1/quantum` (over the HTTP address
//!   of [`crate::ClientConfig::websocket_url`]) and records it in the data directory's
//!   [`KNOWN_RELAYS_FILE`] (`ADDR HEX` lines, like ssh's `known_hosts`); every later
//!   connection uses the recorded key. A relay that later holds another key fails the
//!   handshake, refused with status 495 `quantum_key_changed`; delete its line from the file
//!   if the key was rotated on purpose. The first fetch is only as trustworthy as the path it
//!   took.
//!
//! A relay that holds another key than the pinned one is refused with status 495
//! `quantum_key_mismatch`; neither refusal falls back to WebSocket, since a key that does
//! not match may mean someone is in the middle.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aetherflow_quantum::crypto::{from_hex, to_hex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::TransportError;

/// The file in [`crate::ClientConfig::data_dir`] holding the relay keys trusted on first use.
pub const KNOWN_RELAYS_FILE: &str = "quantum_known_relays";

/// The HTTP status of a refusal because the relay's key is not the expected one (nginx's
/// "SSL certificate error").
pub const STATUS_KEY_MISMATCH: u16 = 495;

/// Largest answer read from `GET /api/v1/quantum`.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// How the client knows the relay's Quantum key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayKey {
    /// The relay's static public key, known in advance.
    Pinned([u8; 32]),
    /// Fetched on first use and recorded; see the module docs (development only).
    TrustOnFirstUse,
}

impl RelayKey {
    /// A pinned key from the 64 hex digits the relay prints; `None` if `hex` is not that.
    pub fn from_hex(hex: &str) -> Option<RelayKey> {
        from_hex(hex).map(RelayKey::Pinned)
    }
}

/// Finds the key for one relay, as configured.
#[derive(Debug, Clone)]
pub(crate) struct KeyResolver {
    /// The configured mode.
    pub mode: RelayKey,
    /// The relay's Quantum address (the key of the known-relays file).
    pub relay: SocketAddr,
    /// `host:port` of the relay's HTTP API, from the WebSocket URL.
    pub http: Option<String>,
    /// The known-relays file.
    pub known: PathBuf,
}

impl KeyResolver {
    /// The key to pin for the next connection.
    pub async fn resolve(&self) -> Result<[u8; 32], TransportError> {
        Ok(match self.mode {
            RelayKey::Pinned(key) => key,
            RelayKey::TrustOnFirstUse => match known_key(&self.known, self.relay) {
                Some(key) => key,
                None => {
                    let key = self.fetch().await?;
                    remember(&self.known, self.relay, &key)?;
                    key
                }
            },
        })
    }

    /// Asks the relay's `GET /api/v1/quantum` for its key (plain HTTP/1.1).
    async fn fetch(&self) -> Result<[u8; 32], TransportError> {
        let Some(host) = &self.http else {
            return Err(TransportError::Connect(
                "trust on first use needs the relay's http:// or ws:// address (websocket_url)"
                    .into(),
            ));
        };
        let failed = |why: String| {
            TransportError::Connect(format!("fetching the relay's Quantum key: {why}"))
        };
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(host.as_str()).await?;
            let request = format!(
                "GET /api/v1/quantum HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: application/json\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).await?;
            let mut answer = Vec::new();
            stream
                .take(MAX_ANSWER_BYTES)
                .read_to_end(&mut answer)
                .await?;
            Ok::<_, std::io::Error>(answer)
        };
        let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| failed("timed out".into()))?
            .map_err(|e| failed(e.to_string()))?;
        let text = String::from_utf8_lossy(&answer);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| failed("not an HTTP answer".into()))?;
        if !head.starts_with("HTTP/1.1 200") {
            let status = head.lines().next().unwrap_or_default().to_owned();
            return Err(failed(status));
        }
        let json: serde_json::Value =
            serde_json::from_str(body).map_err(|e| failed(e.to_string()))?;
        json["public_key"]
            .as_str()
            .and_then(from_hex)
            .ok_or_else(|| failed("no public_key in the answer".into()))
    }
}

/// `host:port` of the HTTP API behind a `ws://` or `http://` URL; `None` for TLS URLs (the
/// development mode speaks plain HTTP only) or anything else.
pub(crate) fn http_host(websocket_url: &str) -> Option<String> {
    let rest = websocket_url
        .strip_prefix("ws://")
        .or_else(|| websocket_url.strip_prefix("http://"))?;
    let host = rest.split('/').next()?;
    (!host.is_empty()).then(|| host.to_owned())
}

/// The key recorded for `relay`, if any.
fn known_key(file: &Path, relay: SocketAddr) -> Option<[u8; 32]> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let (addr, hex) = line.split_once(' ')?;
        (addr.parse::<SocketAddr>().ok()? == relay)
            .then(|| from_hex(hex))
            .flatten()
    })
}

/// Records `key` for `relay`.
fn remember(file: &Path, relay: SocketAddr, key: &[u8; 32]) -> Result<(), TransportError> {
    use std::io::Write;
    let write = || {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)?;
        writeln!(out, "{relay} {}", to_hex(key))
    };
    write().map_err(|e| TransportError::Connect(format!("recording the relay's key: {e}")))
}

/// The refusal for a handshake the relay refused: our key is not the one it holds.
pub(crate) fn mismatch(relay: SocketAddr, first_use: bool) -> TransportError {
    let reason = if first_use {
        format!(
            "quantum_key_changed: the relay at {relay} no longer holds the key first trusted \
             (recorded in {KNOWN_RELAYS_FILE}); if it was rotated on purpose, delete that line"
        )
    } else {
        format!(
            "quantum_key_mismatch: the relay at {relay} does not hold the pinned Quantum key \
             (ClientConfig::quantum_key; the relay prints its key at start-up)"
        )
    };
    TransportError::Refused {
        status: STATUS_KEY_MISMATCH,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::{RelayKey, http_host, known_key, remember};

    #[test]
    fn hosts_keys_and_the_known_relays_file() {
        assert_eq!(
            http_host("ws://127.0.0.1:8080"),
            Some("127.0.0.1:8080".into())
        );
        assert_eq!(http_host("http://relay:80/x"), Some("relay:80".into()));
        assert_eq!(http_host("wss://relay"), None);
        assert_eq!(
            RelayKey::from_hex(&"0a".repeat(32)),
            Some(RelayKey::Pinned([10; 32]))
        );
        assert_eq!(RelayKey::from_hex("0a"), None);
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("known");
        let relay = "127.0.0.1:9".parse().expect("literal");
        assert_eq!(known_key(&file, relay), None);
        remember(&file, relay, &[7; 32]).expect("written");
        remember(&file, "127.0.0.1:10".parse().expect("literal"), &[8; 32]).expect("written");
        assert_eq!(known_key(&file, relay), Some([7; 32]));
    }
}
