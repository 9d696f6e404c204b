//! Bad input on the Hocuspocus endpoint `/hocuspocus`, against the real relay: malformed
//! prefixed messages close only their own connection, unknown or invalid document names are
//! refused per document, and a connection holds at most `--hocuspocus-max-documents`.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::HashMap;

use aetherflow_crdt::hocuspocus::{Auth, Frame as Wire, Message, Payload};
use aetherflow_crdt::protocol::{self, Limits, SyncMessage};
use common::{Relay, TIMEOUT, YClient, read_text};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use yrs::{Doc, Text, Transact};

/// A client speaking the Hocuspocus protocol by hand.
struct Hocuspocus {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The client's copy of each document, by address.
    docs: HashMap<String, Doc>,
}

impl Hocuspocus {
    async fn connect(relay: &Relay) -> Hocuspocus {
        let url = format!("ws://{}/hocuspocus", relay.addr);
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Hocuspocus {
            socket,
            docs: HashMap::new(),
        }
    }

    async fn send(&mut self, address: &str, payload: Payload) {
        let message = Message {
            address: address.into(),
            payload,
        };
        self.send_raw(message.encode()).await;
    }

    async fn send_raw(&mut self, bytes: Vec<u8>) {
        self.socket.send(Frame::Binary(bytes.into())).await.unwrap();
    }

    /// The next message, skipping pings.
    async fn next(&mut self) -> Message {
        loop {
            let frame = tokio::time::timeout(TIMEOUT, self.socket.next())
                .await
                .expect("timed out waiting for a message");
            match frame {
                Some(Ok(Frame::Binary(bytes))) => {
                    match Wire::decode(&bytes, &Limits::default()).unwrap() {
                        Wire::Message(message) => return message,
                        Wire::Ping | Wire::Pong => {}
                    }
                }
                Some(Ok(Frame::Close(close))) => panic!("closed: {close:?}"),
                Some(Ok(_)) => {}
                other => panic!("connection ended: {other:?}"),
            }
        }
    }

    /// Sends the token for `address` and returns the relay's answer.
    async fn authenticate(&mut self, address: &str, token: &str) -> Auth {
        let token = Auth::Token {
            token: token.into(),
            provider_version: Some("4.8.0".into()),
        };
        self.send(address, Payload::Auth(token)).await;
        self.auth_answer(address).await
    }

    /// The next auth message for `address`.
    async fn auth_answer(&mut self, address: &str) -> Auth {
        loop {
            let message = self.next().await;
            if let (true, Payload::Auth(auth)) = (message.address == address, message.payload) {
                return auth;
            }
        }
    }

    /// Appends `s` to the document at `address` and waits until the relay says it is saved.
    async fn append(&mut self, address: &str, s: &str) {
        let update = {
            let doc = self.docs.entry(address.to_owned()).or_default();
            let text = doc.get_or_insert_text("text");
            let mut txn = doc.transact_mut();
            let len = text.len(&txn);
            text.insert(&mut txn, len, s);
            txn.encode_update_v1()
        };
        let message = protocol::Message::Sync(SyncMessage::Update(update));
        self.send(address, Payload::Yjs(message)).await;
        loop {
            let message = self.next().await;
            if message.address == address && message.payload == Payload::SyncStatus(true) {
                return;
            }
        }
    }

    async fn expect_close(&mut self) -> CloseFrame {
        loop {
            let frame = tokio::time::timeout(TIMEOUT, self.socket.next())
                .await
                .expect("timed out waiting for the close frame");
            match frame {
                Some(Ok(Frame::Close(Some(close)))) => return close,
                Some(Ok(_)) => {}
                other => panic!("no close frame: {other:?}"),
            }
        }
    }
}

fn authenticated(auth: &Auth) -> bool {
    matches!(auth, Auth::Authenticated { scope } if scope == "read-write")
}

fn denied(auth: Auth) -> String {
    match auth {
        Auth::PermissionDenied { reason } => reason,
        other => panic!("expected permission denied, got {other:?}"),
    }
}

/// Sends `bytes` from a connection that holds `doc` open, expects the close `code`, then
/// checks that another Hocuspocus connection and a y-websocket client still sync and the
/// document holds exactly what they wrote.
async fn assert_refused(relay: &Relay, doc: &str, bytes: Vec<u8>, code: u16) -> String {
    let mut bystander = Hocuspocus::connect(relay).await;
    assert!(authenticated(&bystander.authenticate(doc, "").await));
    bystander.append(doc, "intact").await;
    let mut offender = Hocuspocus::connect(relay).await;
    assert!(authenticated(&offender.authenticate(doc, "").await));
    offender.send_raw(bytes).await;
    let close = offender.expect_close().await;
    assert_eq!(u16::from(close.code), code, "reason: {}", close.reason);
    assert!(!close.reason.is_empty(), "a close reason is given");
    bystander.append(doc, " still-syncing").await;
    let mut yws = YClient::connect(&relay.ws_url(doc)).await;
    assert_eq!(yws.text(), "intact still-syncing");
    yws.append(" mixed").await;
    yws.barrier().await;
    assert_eq!(read_text(relay, doc).await, "intact still-syncing mixed");
    close.reason.to_string()
}

#[tokio::test]
async fn an_unknown_message_type_closes_only_its_connection_with_1002() {
    let relay = Relay::start(&[]);
    let mut bytes = Vec::new();
    bytes.extend([4, b'n', b'o', b't', b'e']);
    bytes.push(42);
    let reason = assert_refused(&relay, "note", bytes, 1002).await;
    assert!(reason.contains("unknown message type 42"), "{reason}");
}

#[tokio::test]
async fn a_truncated_prefixed_update_closes_only_its_connection_with_1002() {
    let relay = Relay::start(&[]);
    // "note", sync, update, claiming 50 bytes and carrying 3.
    let bytes = vec![4, b'n', b'o', b't', b'e', 0, 2, 50, 1, 2, 3];
    let reason = assert_refused(&relay, "note", bytes, 1002).await;
    assert!(reason.contains("truncated"), "{reason}");
}

#[tokio::test]
async fn an_address_longer_than_any_document_name_closes_with_1002() {
    let relay = Relay::start(&[]);
    let mut bytes = vec![0xc8, 0x03]; // a varuint of 456: the declared address length
    bytes.extend(std::iter::repeat_n(b'a', 456));
    bytes.push(3);
    let reason = assert_refused(&relay, "note", bytes, 1002).await;
    assert!(reason.contains("too long"), "{reason}");
}

#[tokio::test]
async fn a_prefixed_update_that_is_not_yjs_closes_with_1007_and_stores_nothing() {
    let relay = Relay::start(&[]);
    let garbage = [0xff, 0xfe, 0x13, 0x37, 0x00, 0x99, 0xaa, 0xbb];
    let mut bytes = vec![4, b'n', b'o', b't', b'e', 0, 2, garbage.len() as u8];
    bytes.extend(garbage);
    assert_refused(&relay, "note", bytes, 1007).await;
}

#[tokio::test]
async fn a_text_frame_closes_with_1003() {
    let relay = Relay::start(&[]);
    let mut offender = Hocuspocus::connect(&relay).await;
    offender
        .socket
        .send(Frame::Text("hello".into()))
        .await
        .unwrap();
    let close = offender.expect_close().await;
    assert_eq!(u16::from(close.code), 1003, "{}", close.reason);
}

#[tokio::test]
async fn invalid_and_unopened_document_names_are_refused_per_document_and_the_connection_stays() {
    let relay = Relay::start(&[]);
    let mut client = Hocuspocus::connect(&relay).await;
    let reason = denied(client.authenticate("a/b", "").await);
    assert!(reason.contains("invalid document name"), "{reason}");
    let reason = denied(client.authenticate("", "").await);
    assert!(reason.contains("invalid document name"), "{reason}");
    // An update for a document this connection never opened is refused, not applied.
    let update = protocol::Message::Sync(SyncMessage::Update(vec![0, 0]));
    client.send("never-opened", Payload::Yjs(update)).await;
    let reason = denied(client.auth_answer("never-opened").await);
    assert!(reason.contains("not authenticated"), "{reason}");
    client
        .send("never-opened", Payload::Stateless("hi".into()))
        .await;
    denied(client.auth_answer("never-opened").await);
    // The same connection still opens and writes a valid document.
    assert!(authenticated(&client.authenticate("fine", "").await));
    client.append("fine", "written").await;
    assert_eq!(read_text(&relay, "fine").await, "written");
}

#[tokio::test]
async fn a_connection_holds_at_most_hocuspocus_max_documents() {
    let relay = Relay::start(&["--hocuspocus-max-documents", "2"]);
    let mut client = Hocuspocus::connect(&relay).await;
    assert!(authenticated(&client.authenticate("one", "").await));
    assert!(authenticated(&client.authenticate("two", "").await));
    let reason = denied(client.authenticate("three", "").await);
    assert!(reason.contains("too many documents"), "{reason}");
    assert!(reason.contains("limit 2"), "{reason}");
    // The documents it holds still work; closing one makes room.
    client.append("two", "kept").await;
    client.send("one", Payload::Close(None)).await;
    assert!(authenticated(&client.authenticate("three", "").await));
    client.append("three", "3").await;
    assert_eq!(read_text(&relay, "three").await, "3");
    // Another connection has its own allowance.
    let mut other = Hocuspocus::connect(&relay).await;
    assert!(authenticated(&other.authenticate("one", "").await));
    assert!(authenticated(&other.authenticate("two", "").await));
    let (status, metrics) = common::http_get(relay.addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("too_many_documents") && !l.starts_with('#')),
        "the refusal is counted"
    );
}

#[tokio::test]
async fn a_connection_over_the_message_rate_closes_with_1008_and_others_go_on() {
    let relay = Relay::start(&["--message-rate-per-sec", "1", "--message-burst", "20"]);
    let mut bystander = Hocuspocus::connect(&relay).await;
    assert!(authenticated(&bystander.authenticate("rated", "").await));
    let mut flooder = Hocuspocus::connect(&relay).await;
    assert!(authenticated(&flooder.authenticate("rated", "").await));
    let query = protocol::Message::QueryAwareness;
    for _ in 0..100 {
        let message = Message {
            address: "rated".into(),
            payload: Payload::Yjs(query.clone()),
        };
        // The relay may close mid-flood; later sends then fail, which is the point.
        if flooder
            .socket
            .send(Frame::Binary(message.encode().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let close = flooder.expect_close().await;
    assert_eq!(u16::from(close.code), 1008, "{}", close.reason);
    assert!(close.reason.contains("rate"), "{}", close.reason);
    bystander.append("rated", "still here").await;
    assert_eq!(read_text(&relay, "rated").await, "still here");
}

#[tokio::test]
async fn a_message_over_max_message_bytes_closes_with_1009_and_stores_nothing() {
    let relay = Relay::start(&["--max-message-bytes", "1024"]);
    let mut big = vec![4, b'n', b'o', b't', b'e', 5, 0x90, 0x20]; // stateless, 4,112 bytes
    big.extend(std::iter::repeat_n(b'x', 4112));
    assert_refused(&relay, "note", big, 1009).await;
}

#[tokio::test]
async fn deleting_a_document_closes_it_on_the_socket_and_the_other_documents_stay() {
    let relay = Relay::start(&[]);
    let mut client = Hocuspocus::connect(&relay).await;
    assert!(authenticated(&client.authenticate("doomed", "").await));
    assert!(authenticated(&client.authenticate("kept", "").await));
    client.append("doomed", "gone soon").await;
    let (status, _) =
        common::http_request(relay.addr, "DELETE", "/api/v1/docs/doomed", None, None).await;
    assert!((200..300).contains(&status), "{status}");
    loop {
        let message = client.next().await;
        if message.address == "doomed"
            && let Payload::Close(reason) = message.payload
        {
            assert!(reason.is_some_and(|r| r.contains("deleted")));
            break;
        }
    }
    client.append("kept", "still here").await;
    assert_eq!(read_text(&relay, "kept").await, "still here");
}

#[tokio::test]
async fn a_connection_that_stops_reading_its_documents_is_closed_with_1013_and_the_writer_goes_on()
{
    // One outbox per connection, whatever its documents: its bound is what the relay holds.
    let relay = Relay::start(&["--outbox-max-bytes", "1048576"]);
    let mut silent = Hocuspocus::connect(&relay).await;
    assert!(authenticated(&silent.authenticate("wide-a", "").await));
    assert!(authenticated(&silent.authenticate("wide-b", "").await));
    // 12 MiB of broadcasts over the two documents: more than the socket buffers of a client
    // that reads nothing and the 1 MiB outbox.
    let chunk = "x".repeat(256 * 1024);
    let mut writer = Hocuspocus::connect(&relay).await;
    assert!(authenticated(&writer.authenticate("wide-a", "").await));
    assert!(authenticated(&writer.authenticate("wide-b", "").await));
    for n in 0..48 {
        let address = if n % 2 == 0 { "wide-a" } else { "wide-b" };
        writer.append(address, &chunk).await;
    }
    relay
        .wait_for_log("outbox over its byte bound; closing with 1013")
        .await;
    let close = silent.expect_close().await;
    assert_eq!(u16::from(close.code), 1013, "{}", close.reason);
    assert!(close.reason.contains("reconnect"), "{}", close.reason);
    // The writer was never held back, and everything it was told is saved is stored.
    writer.append("wide-a", "end").await;
    assert_eq!(
        read_text(&relay, "wide-a").await.len(),
        24 * chunk.len() + 3
    );
    assert_eq!(read_text(&relay, "wide-b").await.len(), 24 * chunk.len());
}
