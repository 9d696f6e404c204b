//! A [`aetherflow_client::Peer`]'s answers to bad input, over a raw Quantum connection on
//! loopback: each misuse gets its error envelope, none disturbs the listener.
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::time::Duration;

use aetherflow_client::peer::{ERROR_MALFORMED, ERROR_NOT_SUPPORTED, ERROR_PROTOCOL};
use aetherflow_client::testing::envelopes::{
    hello, next_envelope, next_error, next_message, raw_connect_peer, subscribe,
};
use aetherflow_client::testing::text;
use aetherflow_client::{Client, ClientConfig, DocHandle};
use aetherflow_crdt::envelope::{Envelope, Payload};
use aetherflow_crdt::protocol::{Message, SyncMessage};
use aetherflow_quantum::{CloseReason, DriverError};
use yrs::{GetString, Text, Transact};

const TIMEOUT: Duration = Duration::from_secs(20);
const SECRET: &str = "s3cret";

/// A listening client holding document `doc` with text "kept".
async fn listener(dir: &std::path::Path) -> (Client, SocketAddr, DocHandle) {
    let client = Client::open(ClientConfig::new(dir).peer_secret(SECRET)).unwrap();
    let addr = client
        .listen("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .local_addr();
    let doc = client.doc("doc").await.unwrap();
    let text = doc.doc().get_or_insert_text("text");
    text.insert(&mut doc.doc().transact_mut(), 0, "kept");
    (client, addr, doc)
}

/// A raw connection to the listener with the group's secret.
async fn raw_connect(
    addr: SocketAddr,
) -> (
    aetherflow_quantum::QuantumEndpoint,
    aetherflow_quantum::QuantumConnection,
) {
    raw_connect_peer(addr, SECRET).await.unwrap()
}

#[tokio::test]
async fn a_wrong_or_missing_secret_fails_the_handshake_and_the_document_stays_unread() {
    let dir = tempfile::tempdir().unwrap();
    let (client, addr, doc) = listener(dir.path()).await;
    for secret in ["s3cre", "s3cret ", ""] {
        match raw_connect_peer(addr, secret).await {
            Err(DriverError::ConnectionLost(CloseReason::HandshakeFailed)) => {}
            other => panic!(
                "{secret:?}: expected a refused handshake, got {:?}",
                other.map(|_| ())
            ),
        }
    }
    // The right secret still gets in, and no token needs to travel in the hello.
    let (_endpoint, conn) = raw_connect(addr).await;
    conn.send(hello(None)).await.unwrap();
    conn.send(subscribe("doc")).await.unwrap();
    next_message(&conn, "doc", TIMEOUT).await;
    assert_eq!(text(&doc, "text"), "kept");
    client.close().await.unwrap();
}

#[tokio::test]
async fn subscribing_before_hello_gets_4400_and_the_connection_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (client, addr, _doc) = listener(dir.path()).await;
    let (_endpoint, conn) = raw_connect(addr).await;
    conn.send(subscribe("doc")).await.unwrap();
    let (code, reason) = next_error(&conn, "", TIMEOUT)
        .await
        .expect("connection ended first");
    assert_eq!(
        (code, reason.as_str()),
        (ERROR_PROTOCOL, "the first message must be hello")
    );
    assert!(next_envelope(&conn, TIMEOUT).await.is_none());
    client.close().await.unwrap();
}

#[tokio::test]
async fn a_malformed_envelope_gets_1002_and_the_listener_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (client, addr, _doc) = listener(dir.path()).await;
    let (_endpoint, conn) = raw_connect(addr).await;
    conn.send(hello(Some(SECRET))).await.unwrap();
    conn.send(&b"\x07garbage"[..]).await.unwrap();
    assert_eq!(
        next_error(&conn, "", TIMEOUT)
            .await
            .expect("connection ended first")
            .0,
        ERROR_MALFORMED
    );
    assert!(next_envelope(&conn, TIMEOUT).await.is_none());
    // A new connection is served.
    let (_endpoint, conn) = raw_connect(addr).await;
    conn.send(hello(Some(SECRET))).await.unwrap();
    conn.send(subscribe("doc")).await.unwrap();
    assert!(matches!(
        next_message(&conn, "doc", TIMEOUT).await,
        Message::Sync(SyncMessage::Step1(_))
    ));
    client.close().await.unwrap();
}

#[tokio::test]
async fn misuse_after_hello_gets_errors_and_the_connection_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let (client, addr, doc) = listener(dir.path()).await;
    let (_endpoint, conn) = raw_connect(addr).await;
    conn.send(hello(Some(SECRET))).await.unwrap();
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
        (ERROR_PROTOCOL, "not subscribed".into())
    );
    // A register operation.
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
            .expect("connection ended first")
            .0,
        ERROR_NOT_SUPPORTED
    );
    // A malformed update on a subscribed document ends that subscription only.
    conn.send(subscribe("doc")).await.unwrap();
    next_message(&conn, "doc", TIMEOUT).await;
    let bad = Envelope::new(
        "doc",
        Payload::Yjs(Message::Sync(SyncMessage::Update(vec![0xff; 16]))),
    );
    conn.send(bad.encode()).await.unwrap();
    assert_eq!(
        next_error(&conn, "doc", TIMEOUT)
            .await
            .expect("connection ended first"),
        (ERROR_PROTOCOL, "malformed update".into())
    );
    assert_eq!(text(&doc, "text"), "kept");
    // Subscribing again works: the greeting and, asked for, the whole document.
    conn.send(subscribe("doc")).await.unwrap();
    next_message(&conn, "doc", TIMEOUT).await;
    let step1 = Envelope::new(
        "doc",
        Payload::Yjs(Message::Sync(SyncMessage::Step1(vec![0]))),
    );
    conn.send(step1.encode()).await.unwrap();
    let Message::Sync(SyncMessage::Step2(update)) = next_message(&conn, "doc", TIMEOUT).await
    else {
        panic!("a step 1 is answered with a step 2");
    };
    let copy = yrs::Doc::new();
    let decoded = <yrs::Update as yrs::updates::decoder::Decode>::decode_v1(&update).unwrap();
    copy.transact_mut().apply_update(decoded).unwrap();
    let copied = copy.get_or_insert_text("text");
    assert_eq!(copied.get_string(&copy.transact()), "kept");
    client.close().await.unwrap();
}

#[tokio::test]
async fn a_peer_gets_others_updates_but_not_its_own_back() {
    let dir = tempfile::tempdir().unwrap();
    let (client, addr, doc) = listener(dir.path()).await;
    let (_endpoint, conn) = raw_connect(addr).await;
    conn.send(hello(Some(SECRET))).await.unwrap();
    conn.send(subscribe("doc")).await.unwrap();
    next_message(&conn, "doc", TIMEOUT).await;

    let theirs = yrs::Doc::with_client_id(77);
    let their_text = theirs.get_or_insert_text("text");
    their_text.insert(&mut theirs.transact_mut(), 0, "from raw peer");
    let update =
        yrs::ReadTxn::encode_state_as_update_v1(&theirs.transact(), &yrs::StateVector::default());
    let mut changes = doc.changes();
    let envelope = Envelope::new(
        "doc",
        Payload::Yjs(Message::Sync(SyncMessage::Update(update))),
    );
    conn.send(envelope.encode()).await.unwrap();
    let applied = async {
        while !text(&doc, "text").contains("from raw peer") {
            changes.next().await.unwrap();
        }
    };
    tokio::time::timeout(TIMEOUT, applied).await.unwrap();

    // A local edit after it: the next update on the link is that edit, not an echo.
    let local = doc.doc().get_or_insert_text("text");
    local.insert(&mut doc.doc().transact_mut(), 0, "marker");
    let contains =
        |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
    let next_update = loop {
        if let Message::Sync(SyncMessage::Update(update)) =
            next_message(&conn, "doc", TIMEOUT).await
        {
            break update;
        }
    };
    assert!(contains(&next_update, b"marker"));
    assert!(!contains(&next_update, b"from raw peer"), "echoed back");
    client.close().await.unwrap();
}

#[tokio::test]
async fn subscribing_without_a_valid_document_name_is_a_malformed_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let (client, addr, _doc) = listener(dir.path()).await;
    for name in ["", "../etc"] {
        let (_endpoint, conn) = raw_connect(addr).await;
        conn.send(hello(Some(SECRET))).await.unwrap();
        conn.send(subscribe(name)).await.unwrap();
        assert_eq!(
            next_error(&conn, "", TIMEOUT)
                .await
                .expect("connection ended first")
                .0,
            ERROR_MALFORMED,
            "{name:?}"
        );
        assert!(next_envelope(&conn, TIMEOUT).await.is_none());
    }
    // The listener still serves others.
    let (_endpoint, conn) = raw_connect(addr).await;
    conn.send(hello(Some(SECRET))).await.unwrap();
    conn.send(subscribe("doc")).await.unwrap();
    assert!(matches!(
        next_message(&conn, "doc", TIMEOUT).await,
        Message::Sync(SyncMessage::Step1(_))
    ));
    client.close().await.unwrap();
}
