//! Bad input gets a clear close code and reason, harms nobody else and changes nothing stored.
//! One test per case, each against the real relay.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{Relay, YClient, http_get, read_text};
use tokio_tungstenite::tungstenite::Message as Frame;

/// A room with a bystander who has written "intact"; returns both.
async fn room_with_bystander(relay: &Relay, doc: &str) -> YClient {
    let mut bystander = YClient::connect(&relay.ws_url(doc)).await;
    bystander.append("intact").await;
    bystander.barrier().await;
    bystander
}

/// Sends `bytes` as one binary frame from a fresh connection, expects the close `code`, then
/// checks the bystander still syncs and the document holds exactly what it wrote.
async fn assert_refused(relay: &Relay, doc: &str, bytes: Vec<u8>, code: u16) -> String {
    let mut bystander = room_with_bystander(relay, doc).await;
    let mut offender = YClient::connect(&relay.ws_url(doc)).await;
    offender.send_raw(bytes).await;
    let close = offender.expect_close().await;
    assert_eq!(u16::from(close.code), code, "reason: {}", close.reason);
    assert!(!close.reason.is_empty(), "a close reason is given");
    bystander.append(" still-syncing").await;
    bystander.barrier().await;
    assert_eq!(read_text(relay, doc).await, "intact still-syncing");
    close.reason.to_string()
}

#[tokio::test]
async fn truncated_message_closes_with_1002() {
    let relay = Relay::start(&[]);
    // Sync update claiming 50 bytes of payload, carrying 3.
    let reason = assert_refused(&relay, "truncated", vec![0, 2, 50, 1, 2, 3], 1002).await;
    assert!(reason.to_lowercase().contains("truncated"), "{reason}");
}

#[tokio::test]
async fn unknown_message_type_closes_with_1002() {
    let relay = Relay::start(&[]);
    assert_refused(&relay, "unknown-type", vec![77, 1, 2], 1002).await;
}

#[tokio::test]
async fn bytes_that_are_not_a_yjs_update_close_with_1007() {
    let relay = Relay::start(&[]);
    let garbage = vec![0xff, 0xfe, 0x13, 0x37, 0x00, 0x99, 0xaa, 0xbb];
    let mut message = vec![0, 2, garbage.len() as u8];
    message.extend(garbage);
    assert_refused(&relay, "garbage-update", message, 1007).await;
}

#[tokio::test]
async fn message_longer_than_its_payload_claims_closes_with_1002() {
    let relay = Relay::start(&[]);
    // A valid empty sync step 1 followed by stray bytes.
    let reason = assert_refused(&relay, "trailing", vec![0, 0, 1, 0, 9, 9, 9], 1002).await;
    assert!(reason.to_lowercase().contains("trailing"), "{reason}");
}

#[tokio::test]
async fn invalid_awareness_state_closes_with_1007() {
    let relay = Relay::start(&[]);
    // One entry: client 1, clock 1, state "{nope" (not JSON).
    let payload = [vec![1, 1, 1, 5], b"{nope".to_vec()].concat();
    let mut message = vec![1, payload.len() as u8];
    message.extend(payload);
    assert_refused(&relay, "bad-awareness", message, 1007).await;
}

#[tokio::test]
async fn frame_over_max_message_bytes_closes_with_1009() {
    let relay = Relay::start(&["--max-message-bytes", "4096"]);
    let big = vec![0u8; 10_000];
    let reason = assert_refused(&relay, "too-big", big, 1009).await;
    assert!(reason.contains("4096"), "{reason}");
}

#[tokio::test]
async fn text_frame_closes_with_1003() {
    let relay = Relay::start(&[]);
    let mut bystander = room_with_bystander(&relay, "texty").await;
    let mut offender = YClient::connect(&relay.ws_url("texty")).await;
    use futures_util::SinkExt;
    offender
        .socket
        .send(Frame::Text("hello".into()))
        .await
        .unwrap();
    assert_eq!(u16::from(offender.expect_close().await.code), 1003);
    bystander.append("!").await;
    bystander.barrier().await;
}

#[tokio::test]
async fn invalid_document_names_are_refused_before_the_upgrade() {
    let relay = Relay::start(&[]);
    let too_long = "x".repeat(256);
    let cases = [
        ("/ws/", "empty"),
        ("/ws", "empty"),
        (&format!("/ws/{too_long}")[..], "255"),
        ("/ws/bad%01name", "control"),
        ("/ws/a/b", "slash"),
        ("/ws/a%2Fb", "slash"),
        ("/ws/a%5Cb", "backslash"),
    ];
    for (path, hint) in cases {
        let (status, body) = http_get(relay.addr, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["error"]["code"], "invalid_doc_name", "{path}");
        let message = json["error"]["message"].as_str().unwrap().to_lowercase();
        assert!(message.contains(hint), "{path}: {message}");
    }
    // And a WebSocket client is refused too, not upgraded.
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws/a%5Cb", relay.addr)).await;
    assert!(refused.is_err());
    // A legal 255-byte name works.
    let ok_name = "y".repeat(255);
    let mut client = YClient::connect(&relay.ws_url(&ok_name)).await;
    client.append("fine").await;
    client.barrier().await;
}

#[tokio::test]
async fn an_update_yrs_cannot_integrate_closes_the_sender_and_the_room_reloads_intact() {
    use aetherflow_crdt::protocol::{Message, SyncMessage};
    use yrs::{Doc, Text, Transact};
    let relay = Relay::start(&[]);
    let url = relay.ws_url("reload-me");
    // Client 1 writes "abc": item (client 1, clock 0) exists in the room.
    let author = Doc::with_client_id(1);
    let update = {
        let text = author.get_or_insert_text("text");
        let mut txn = author.transact_mut();
        text.insert(&mut txn, 0, "abc");
        txn.encode_update_v1()
    };
    let mut bystander = YClient::connect(&url).await;
    bystander
        .send(&Message::Sync(SyncMessage::Update(update)))
        .await;
    bystander.wait_for_text("abc").await;
    // A well-formed update whose block names that string item as its parent: it decodes,
    // but yrs refuses to integrate it, possibly after touching the in-memory document.
    let mut offender = YClient::connect(&url).await;
    let bad = vec![1, 1, 2, 0, 4, 0, 1, 0, 1, b'x', 0];
    offender
        .send(&Message::Sync(SyncMessage::Update(bad)))
        .await;
    assert_eq!(u16::from(offender.expect_close().await.code), 1007);
    // Everyone else is asked to reconnect while the room reloads from the store...
    let close = bystander.expect_close().await;
    assert_eq!(u16::from(close.code), 1011, "{}", close.reason);
    // ...and finds the document exactly as it was committed.
    let mut back = YClient::connect(&url).await;
    assert_eq!(back.text(), "abc");
    back.append("d").await;
    back.barrier().await;
}
