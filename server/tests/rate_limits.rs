//! Rate limits against the real relay: too many connections from one address get 429 before
//! the upgrade; a flooding session is closed with 1008 while its neighbours keep syncing and
//! nothing committed is lost.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use aetherflow_crdt::protocol::{Message, SyncMessage};
use common::{Relay, TIMEOUT, YClient, http_raw, read_text};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as Frame;

const UPGRADE: [(&str, &str); 4] = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

#[tokio::test]
async fn too_many_connections_from_one_address_get_429_with_retry_after() {
    // One a minute after a burst of three: however slow this machine, no token comes back
    // during the test.
    let relay = Relay::start(&["--connect-rate-per-min", "1", "--connect-burst", "3"]);
    let url = relay.ws_url("busy");
    let mut first = YClient::connect(&url).await;
    let _second = YClient::connect(&url).await;
    let _third = YClient::connect(&url).await;

    let refused = http_raw(relay.addr, "GET", "/ws/busy", &UPGRADE, "").await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.json()["error"]["code"], "rate_limited");
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert!(tokio_tungstenite::connect_async(&url).await.is_err());

    // Connections already open are not affected.
    first.append("still syncing").await;
    first.wait_for_echo().await;
    // The HTTP API is not a WebSocket connection and is not counted.
    let (status, _) = common::http_get(relay.addr, "/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_flooding_session_is_closed_with_1008_while_its_neighbour_keeps_working() {
    // A burst of 40 then one a second: the flood below is far over it, while the neighbour's
    // handful of messages is far under it.
    let mut relay = Relay::start(&["--message-rate-per-sec", "1", "--message-burst", "40"]);
    let url = relay.ws_url("shared");
    let mut neighbour = YClient::connect(&url).await;
    neighbour.append("before ").await;
    neighbour.barrier().await;

    let flooder = YClient::connect(&url).await;
    let (mut tx, mut rx) = flooder.socket.split();
    let (closed_tx, closed) = tokio::sync::watch::channel(None);
    let reader = tokio::spawn(async move {
        while let Some(Ok(frame)) = rx.next().await {
            if let Frame::Close(close) = frame {
                let _ = closed_tx.send(close);
                return;
            }
        }
    });
    // Each update is a valid Yjs update from the flooder's own client id.
    let doc = yrs::Doc::with_client_id(777);
    let text = doc.get_or_insert_text("flood");
    let mut sent = 0;
    while closed.borrow().is_none() && sent < 10_000 {
        let update = {
            use yrs::{Text, Transact};
            let mut txn = doc.transact_mut();
            text.push(&mut txn, "x");
            txn.encode_update_v1()
        };
        let message = Message::Sync(SyncMessage::Update(update)).encode();
        if tx.send(Frame::Binary(message.into())).await.is_err() {
            break;
        }
        sent += 1;
    }
    tokio::time::timeout(TIMEOUT, reader)
        .await
        .expect("the flooder was never closed")
        .unwrap();
    let close = closed
        .borrow()
        .clone()
        .expect("a close frame with a reason");
    assert_eq!(u16::from(close.code), 1008, "{}", close.reason);
    assert!(close.reason.contains("rate limit"), "{}", close.reason);
    assert!(sent > 40, "closed after only {sent} messages");

    // The neighbour on the same document still syncs.
    neighbour.append("after").await;
    neighbour.barrier().await;
    let seen = read_text(&relay, "shared").await;
    assert_eq!(seen, "before after");

    // Everything committed survives a restart: a fresh client sees the same document.
    let flood_before = flood_text(&relay).await;
    let temp = relay.take_temp();
    assert!(relay.signal_and_wait("TERM").success());
    let restarted = Relay::start_in(
        &relay.data_dir,
        &["--message-rate-per-sec", "1", "--message-burst", "40"],
    );
    assert_eq!(read_text(&restarted, "shared").await, seen);
    assert_eq!(flood_text(&restarted).await, flood_before);
    // The flood was cut short: the relay applied at most the burst plus what refilled.
    assert!(
        flood_before.len() < sent,
        "{} of {sent}",
        flood_before.len()
    );
    drop(restarted);
    drop(temp);
}

/// The flooder's root text as a fresh client sees it.
async fn flood_text(relay: &Relay) -> String {
    use yrs::{GetString, Transact};
    let client = YClient::connect(&relay.ws_url("shared")).await;
    let text = client.doc.get_or_insert_text("flood");
    text.get_string(&client.doc.transact())
}
