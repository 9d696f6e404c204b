//! The SDK over Quantum against the real relay binary: envelopes multiplexing documents on one
//! reliable-UDP connection, interop with WebSocket clients, fallback, restart, and the relay's
//! answers to bad input on its Quantum listener.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use aetherflow_client::testing::envelopes::{
    hello, next_envelope, next_error, raw_connect, subscribe,
};
use aetherflow_client::testing::{append_text, wait_state, wait_text};
use aetherflow_client::{Client, ClientConfig, Connection, DocHandle, TransportKind};
use aetherflow_crdt::envelope::{Control, Envelope, Payload};
use aetherflow_crdt::protocol::{Message, SyncMessage};
use common::{Relay, TIMEOUT, read_text};

fn config(dir: &std::path::Path) -> ClientConfig {
    let mut config = ClientConfig::new(dir).backoff(aetherflow_client::Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
    });
    config.quantum_handshake_timeout = Duration::from_millis(500);
    config
}

async fn wait_settled_on(handle: &DocHandle, kind: TransportKind) {
    wait_state(handle, TIMEOUT, |s| {
        s.synced && s.pending == 0 && s.connection == Connection::Online(kind)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_over_quantum_syncs_several_documents_with_websocket_clients() {
    let relay = Relay::start(&[]);
    let (dir_q, dir_w) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let q = Client::open(
        config(dir_q.path())
            .quantum(relay.quantum_addr.unwrap())
            .quantum_key(relay.quantum_key()),
    )
    .unwrap();
    let w = Client::open(config(dir_w.path()).websocket(format!("ws://{}", relay.addr))).unwrap();
    // Two documents share the one Quantum connection.
    let (q1, q2) = (q.doc("one").await.unwrap(), q.doc("two").await.unwrap());
    let (w1, w2) = (w.doc("one").await.unwrap(), w.doc("two").await.unwrap());
    append_text(&q1, "text", "quantum in one;");
    append_text(&q2, "text", "quantum in two;");
    wait_text(&w1, "text", TIMEOUT, |t| t == "quantum in one;").await;
    wait_text(&w2, "text", TIMEOUT, |t| t == "quantum in two;").await;
    append_text(&w1, "text", "websocket in one;");
    wait_text(&q1, "text", TIMEOUT, |t| {
        t == "quantum in one;websocket in one;"
    })
    .await;
    wait_settled_on(&q1, TransportKind::Quantum).await;
    wait_settled_on(&q2, TransportKind::Quantum).await;
    assert_eq!(
        read_text(&relay, "one").await,
        "quantum in one;websocket in one;"
    );
    assert_eq!(read_text(&relay, "two").await, "quantum in two;");
    q.close().await.unwrap();
    w.close().await.unwrap();
}

/// The sparse FEC budget is a setting of each end (relay flag, SDK config); ends with
/// different budgets sync, and the SDK reports its connection's figures once one is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_sdk_with_their_own_sparse_fec_budgets_sync_over_quantum() {
    let relay = Relay::start(&["--quantum-sparse-fec-budget", "200"]);
    let quantum = relay.quantum_addr.unwrap();
    let key = relay.quantum_key();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Client::open(
        config(dir_a.path())
            .quantum(quantum)
            .quantum_key(key)
            .quantum_sparse_fec_budget(0),
    )
    .unwrap();
    let b = Client::open(config(dir_b.path()).quantum(quantum).quantum_key(key)).unwrap();
    assert!(
        a.quantum_stats().await.is_none(),
        "no connection before a document"
    );
    let (doc_a, doc_b) = (
        a.doc("budgets").await.unwrap(),
        b.doc("budgets").await.unwrap(),
    );
    append_text(&doc_a, "text", "from a;");
    wait_text(&doc_b, "text", TIMEOUT, |t| t == "from a;").await;
    append_text(&doc_b, "text", "from b;");
    wait_text(&doc_a, "text", TIMEOUT, |t| t == "from a;from b;").await;
    wait_settled_on(&doc_a, TransportKind::Quantum).await;
    wait_settled_on(&doc_b, TransportKind::Quantum).await;
    for client in [&a, &b] {
        let stats = client.quantum_stats().await.unwrap();
        assert!(
            stats.bytes_sent > 0 && stats.messages_delivered > 0,
            "{stats:?}"
        );
    }
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quantum_listener_the_sdk_falls_back_to_websocket() {
    let relay = Relay::start(&["--quantum-addr", "off"]);
    assert_eq!(relay.quantum_addr, None);
    // Nothing answers on this UDP port: the handshake times out.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = Client::open(
        config(dir.path())
            .quantum(silent.local_addr().unwrap())
            .quantum_key([1; 32])
            .websocket(format!("ws://{}", relay.addr)),
    )
    .unwrap();
    let doc = c.doc("fallback").await.unwrap();
    append_text(&doc, "text", "via websocket");
    wait_settled_on(&doc, TransportKind::WebSocket).await;
    assert_eq!(read_text(&relay, "fallback").await, "via websocket");
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quantum_clients_edit_through_a_relay_restart_and_converge() {
    let mut relay = Relay::start(&[]);
    let data = relay.take_temp().unwrap();
    let udp = relay.quantum_addr.unwrap();
    // The key lives in the data directory, so the restarted relay holds the same one.
    let key = relay.quantum_key();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Client::open(config(dir_a.path()).quantum(udp).quantum_key(key)).unwrap();
    let b = Client::open(config(dir_b.path()).quantum(udp).quantum_key(key)).unwrap();
    let (doc_a, doc_b) = (a.doc("r").await.unwrap(), b.doc("r").await.unwrap());
    append_text(&doc_a, "text", "before;");
    wait_text(&doc_b, "text", TIMEOUT, |t| t == "before;").await;

    relay.signal_and_wait("TERM");
    wait_state(&doc_a, TIMEOUT, |s| {
        !matches!(s.connection, Connection::Online(_))
    })
    .await;
    wait_state(&doc_b, TIMEOUT, |s| {
        !matches!(s.connection, Connection::Online(_))
    })
    .await;
    append_text(&doc_a, "text", "A;");
    append_text(&doc_b, "text", "B;");

    // Same data, same UDP port (UDP ports are free again at once).
    let udp_arg = udp.to_string();
    let relay = Relay::start_in(data.path(), &["--quantum-addr", &udp_arg]);
    assert_eq!(relay.quantum_addr, Some(udp));
    wait_settled_on(&doc_a, TransportKind::Quantum).await;
    wait_settled_on(&doc_b, TransportKind::Quantum).await;
    let expected = read_text(&relay, "r").await;
    assert!(
        expected == "before;A;B;" || expected == "before;B;A;",
        "{expected}"
    );
    wait_text(&doc_a, "text", TIMEOUT, |t| t == expected).await;
    wait_text(&doc_b, "text", TIMEOUT, |t| t == expected).await;
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_over_quantum_is_reported_as_the_refusal() {
    let relay = Relay::start(&["--jwt-secret", "quantum-secret"]);
    let dir = tempfile::tempdir().unwrap();
    let c = Client::open(
        config(dir.path())
            .quantum(relay.quantum_addr.unwrap())
            .quantum_key(relay.quantum_key())
            .token("not.a.jwt"),
    )
    .unwrap();
    let doc = c.doc("secret").await.unwrap();
    let state = wait_state(&doc, TIMEOUT, |s| s.denied.is_some()).await;
    assert_eq!(state.denied.as_deref(), Some("401 token_malformed"));
    c.close().await.unwrap();
}

#[tokio::test]
async fn garbage_on_the_quantum_listener_gets_error_1002_and_the_connection_ends() {
    let relay = Relay::start(&[]);
    let (_endpoint, conn) = raw_connect(relay.quantum_addr.unwrap(), relay.quantum_key()).await;
    conn.send(hello(None)).await.unwrap();
    conn.send(&b"\x07garbage"[..]).await.unwrap();
    let (code, reason) = next_error(&conn, "", TIMEOUT)
        .await
        .expect("connection ended first");
    assert_eq!(code, 1002);
    assert!(
        reason.contains("unsupported envelope version 7"),
        "{reason}"
    );
    assert!(next_envelope(&conn, TIMEOUT).await.is_none());
    // The relay is fine.
    assert_eq!(read_text(&relay, "fine").await, "");
}

#[tokio::test]
async fn subscribing_before_hello_is_refused_with_4400() {
    let relay = Relay::start(&[]);
    let (_endpoint, conn) = raw_connect(relay.quantum_addr.unwrap(), relay.quantum_key()).await;
    let subscribe = Envelope::new("doc", Payload::Control(Control::Subscribe));
    conn.send(subscribe.encode()).await.unwrap();
    let (code, reason) = next_error(&conn, "", TIMEOUT)
        .await
        .expect("connection ended first");
    assert_eq!(
        (code, reason.as_str()),
        (4400, "the first message must be hello")
    );
    assert!(next_envelope(&conn, TIMEOUT).await.is_none());
}

#[tokio::test]
async fn misuse_after_hello_gets_errors_and_the_connection_stays_usable() {
    let relay = Relay::start(&[]);
    let (_endpoint, conn) = raw_connect(relay.quantum_addr.unwrap(), relay.quantum_key()).await;
    conn.send(hello(None)).await.unwrap();
    // A message for a document it never subscribed to.
    let stray = Envelope::new(
        "stray",
        Payload::Yjs(Message::Sync(SyncMessage::Update(vec![0, 0]))),
    );
    conn.send(stray.encode()).await.unwrap();
    assert_eq!(
        next_error(&conn, "stray", TIMEOUT)
            .await
            .expect("connection ended first"),
        (4400, "not subscribed".into())
    );
    // A register operation for a document it never subscribed to.
    let op = aetherflow_crdt::register::Command::Resolve {
        conflict: 1,
        value: serde_json::json!(1),
        author: "a".into(),
        at_ms: 0,
    };
    conn.send(Envelope::new("reg", Payload::Register(op)).encode())
        .await
        .unwrap();
    assert_eq!(
        next_error(&conn, "reg", TIMEOUT)
            .await
            .expect("connection ended first"),
        (4400, "not subscribed".into())
    );
    // A register document answers a subscription with its state, not a Yjs greeting.
    let (status, _) = common::http_json(
        relay.addr,
        "POST",
        "/api/v1/docs",
        None,
        Some(serde_json::json!({"name": "title", "kind": "lww"})),
    )
    .await;
    assert_eq!(status, 201);
    conn.send(subscribe("title")).await.unwrap();
    let state = next_envelope(&conn, TIMEOUT).await.unwrap();
    assert_eq!(state.doc, "title");
    assert!(
        matches!(&state.payload, Payload::Control(Control::Event { name, .. }) if name == "state"),
        "{state:?}"
    );
    // Still usable: a Yjs document subscribes and gets the relay's greeting.
    conn.send(subscribe("notes")).await.unwrap();
    // Skipping the register document's events (its own `user_joined`).
    let greeting = loop {
        let envelope = next_envelope(&conn, TIMEOUT).await.unwrap();
        if envelope.doc != "title" {
            break envelope;
        }
    };
    assert_eq!(greeting.doc, "notes");
    assert!(matches!(
        greeting.payload,
        Payload::Yjs(Message::Sync(SyncMessage::Step1(_)))
    ));
}

#[tokio::test]
async fn shutdown_tells_quantum_clients_1001_at_once_instead_of_leaving_them_to_time_out() {
    let mut relay = Relay::start(&[]);
    let (_endpoint, conn) = raw_connect(relay.quantum_addr.unwrap(), relay.quantum_key()).await;
    conn.send(hello(None)).await.unwrap();
    let subscribe = Envelope::new("doc", Payload::Control(Control::Subscribe)).encode();
    conn.send(subscribe).await.unwrap();
    // The room's greeting (sync step 1) shows the session is up.
    let greeting = next_envelope(&conn, TIMEOUT)
        .await
        .expect("the relay greets");
    assert_eq!(greeting.doc, "doc");

    relay.signal_and_wait("TERM");
    // Well within the transport's 30 s idle timeout: the relay said goodbye before exiting.
    let (code, reason) = next_error(&conn, "", TIMEOUT)
        .await
        .expect("connection ended first");
    assert_eq!((code, reason.as_str()), (1001, "server shutting down"));
}
