//! The relay's Quantum identity against the real binary: its key is generated once in the
//! data directory (mode 0600) and kept across restarts, printed and served with the address at
//! `GET /api/v1/quantum`; an SDK pinning another key is refused clearly (no fallback to
//! WebSocket), and trust on first use records the key and refuses a relay that changed it.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use aetherflow_client::testing::{append_text, wait_state};
use aetherflow_client::{Client, ClientConfig, Connection, TransportKind};
use common::{Relay, TIMEOUT, http_get};

fn config(dir: &std::path::Path) -> ClientConfig {
    let mut config = ClientConfig::new(dir).backoff(aetherflow_client::Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
    });
    config.quantum_handshake_timeout = Duration::from_millis(500);
    config
}

fn hex(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn the_relay_serves_its_address_and_key_and_keeps_the_key_across_restarts() {
    let mut relay = Relay::start(&[]);
    let data = relay.take_temp().unwrap();
    let (status, body) = http_get(relay.addr, "/api/v1/quantum").await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["addr"], relay.quantum_addr.unwrap().to_string());
    assert_eq!(json["public_key"], hex(&relay.quantum_key()));
    assert_eq!(json["key_encoding"], "hex");
    assert_eq!(json["noise"], "Noise_NK_25519_AESGCM_BLAKE2s");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key_file = data.path().join("quantum.key");
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "only the relay's user reads the private key"
        );
        let text = std::fs::read_to_string(&key_file).unwrap();
        assert!(
            !text.contains(&hex(&relay.quantum_key())),
            "the file holds the private half"
        );
    }
    let key = relay.quantum_key();
    relay.signal_and_wait("TERM");
    let again = Relay::start_in(data.path(), &[]);
    assert_eq!(
        again.quantum_key(),
        key,
        "the same identity after a restart"
    );

    let off = Relay::start(&["--quantum-addr", "off"]);
    let (status, body) = http_get(off.addr, "/api/v1/quantum").await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn a_missing_key_file_stops_the_relay_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.key");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_aetherflow"))
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--quantum-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--quantum-key")
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("quantum key file") && stderr.contains("not found"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_holding_another_key_than_the_pinned_one_is_refused_without_fallback() {
    let relay = Relay::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(
        config(dir.path())
            .quantum(relay.quantum_addr.unwrap())
            .quantum_key([7; 32])
            .websocket(format!("ws://{}", relay.addr)),
    )
    .unwrap();
    let doc = client.doc("pinned").await.unwrap();
    append_text(&doc, "text", "must not leak");
    wait_state(&doc, TIMEOUT, |s| s.denied.is_some()).await;
    let state = doc.state().borrow().clone();
    let denied = state.denied.unwrap();
    assert!(denied.starts_with("495 quantum_key_mismatch"), "{denied}");
    assert!(
        !matches!(state.connection, Connection::Online(_)),
        "no fallback to WebSocket: {:?}",
        state.connection
    );
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_on_first_use_records_the_key_and_refuses_a_relay_that_changed_it() {
    let relay = Relay::start(&[]);
    let udp = relay.quantum_addr.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ws = format!("ws://{}", relay.addr);
    let tofu = || {
        config(dir.path())
            .quantum(udp)
            .quantum_trust_on_first_use()
            .websocket(ws.clone())
    };
    let client = Client::open(tofu()).unwrap();
    let doc = client.doc("tofu").await.unwrap();
    wait_state(&doc, TIMEOUT, |s| {
        s.synced && s.connection == Connection::Online(TransportKind::Quantum)
    })
    .await;
    client.close().await.unwrap();
    let known = std::fs::read_to_string(dir.path().join("quantum_known_relays")).unwrap();
    assert_eq!(known, format!("{udp} {}\n", hex(&relay.quantum_key())));

    // Another relay (another data directory, so another key) takes over the same UDP port.
    drop(relay);
    let udp_arg = udp.to_string();
    let impostor = Relay::start(&["--quantum-addr", &udp_arg]);
    assert_ne!(impostor.quantum_key(), [0; 32]);
    let client = Client::open(tofu()).unwrap();
    let doc = client.doc("tofu").await.unwrap();
    wait_state(&doc, TIMEOUT, |s| s.denied.is_some()).await;
    let denied = doc.state().borrow().denied.clone().unwrap();
    assert!(denied.starts_with("495 quantum_key_changed"), "{denied}");
    client.close().await.unwrap();
}
