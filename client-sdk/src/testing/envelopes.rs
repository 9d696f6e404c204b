//! Helpers for protocol tests that speak envelopes on a raw Quantum connection (to a relay or
//! a [`crate::Peer`]), for hand-made and malformed input. They panic when a wait runs out.

use std::net::SocketAddr;
use std::time::Duration;

use aetherflow_crdt::envelope::{Control, Envelope, EnvelopeLimits, Payload};
use aetherflow_crdt::protocol::Message;
use aetherflow_quantum::crypto::psk_from_secret;
use aetherflow_quantum::{DriverConfig, DriverError, QuantumConnection, QuantumEndpoint};

/// A raw Quantum connection to the relay at `addr` holding the key `relay_key`, from a
/// fresh loopback endpoint; keep the endpoint alive as long as the connection.
///
/// # Panics
///
/// When the endpoint cannot bind or the handshake fails.
pub async fn raw_connect(
    addr: SocketAddr,
    relay_key: [u8; 32],
) -> (QuantumEndpoint, QuantumConnection) {
    let mut driver = DriverConfig::default();
    driver.quantum.server_public_key = Some(relay_key);
    connect_with(addr, driver)
        .await
        .expect("the handshake completes")
}

/// A raw Quantum connection to the [`crate::Peer`] at `addr`, authenticated with the group's
/// `secret`; `Err` if the handshake fails (a wrong secret).
///
/// # Panics
///
/// When the endpoint cannot bind.
pub async fn raw_connect_peer(
    addr: SocketAddr,
    secret: &str,
) -> Result<(QuantumEndpoint, QuantumConnection), DriverError> {
    let mut driver = DriverConfig::default();
    driver.quantum.psk = Some(psk_from_secret(secret.as_bytes()));
    connect_with(addr, driver).await
}

async fn connect_with(
    addr: SocketAddr,
    driver: DriverConfig,
) -> Result<(QuantumEndpoint, QuantumConnection), DriverError> {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let endpoint = QuantumEndpoint::bind(loopback, driver)
        .await
        .expect("a loopback endpoint binds");
    let conn = endpoint.connect(addr).await?;
    Ok((endpoint, conn))
}

/// The encoded `hello` envelope with `token` (a relay token or a peer secret).
pub fn hello(token: Option<&str>) -> Vec<u8> {
    Envelope::connection(Control::Hello {
        client_version: "test".into(),
        token: token.map(str::to_owned),
    })
    .encode()
}

/// The encoded `subscribe` envelope for `doc`.
pub fn subscribe(doc: &str) -> Vec<u8> {
    Envelope::new(doc, Payload::Control(Control::Subscribe)).encode()
}

/// The next envelope; `None` once the connection has ended.
///
/// # Panics
///
/// When nothing arrives within `timeout`, or what arrives is not an envelope.
pub async fn next_envelope(conn: &QuantumConnection, timeout: Duration) -> Option<Envelope> {
    let bytes = tokio::time::timeout(timeout, conn.recv())
        .await
        .expect("no envelope in time")
        .ok()??;
    Some(Envelope::decode(&bytes, &EnvelopeLimits::default()).expect("an envelope"))
}

/// The next error envelope for `doc` (`""` for the connection), skipping anything else;
/// `None` if the connection ended first.
///
/// # Panics
///
/// As [`next_envelope`].
pub async fn next_error(
    conn: &QuantumConnection,
    doc: &str,
    timeout: Duration,
) -> Option<(u32, String)> {
    loop {
        let envelope = next_envelope(conn, timeout).await?;
        if let (true, Payload::Control(Control::Error { code, reason })) =
            (envelope.doc == doc, envelope.payload)
        {
            return Some((code, reason));
        }
    }
}

/// The next y-protocols message for `doc`, skipping anything else.
///
/// # Panics
///
/// As [`next_envelope`], and when the connection ends first.
pub async fn next_message(conn: &QuantumConnection, doc: &str, timeout: Duration) -> Message {
    loop {
        let envelope = next_envelope(conn, timeout)
            .await
            .expect("connection ended first");
        if let (true, Payload::Yjs(message)) = (envelope.doc == doc, envelope.payload) {
            return message;
        }
    }
}
