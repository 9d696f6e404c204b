//! Rate limits against the real relay: too many connections from one address get 429 before
//! the upgrade; a session over its message rate is slowed down (the relay stops reading it),
//! not closed, while its neighbours keep syncing and nothing committed is lost.
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
async fn a_burst_far_over_the_limit_is_slowed_down_not_closed_and_every_update_applied() {
    // A bulk import: 20,000 updates over one connection, four times the burst. The relay
    // reads them at the limit's pace instead of closing the connection.
    let relay = Relay::start(&["--message-rate-per-sec", "4000", "--message-burst", "5000"]);
    let importer = YClient::connect(&relay.ws_url("import")).await;
    let (mut tx, mut rx) = importer.socket.split();
    let reader = tokio::spawn(async move {
        // The echoes, read so the importer is not the one falling behind; a close ends it.
        while let Some(Ok(frame)) = rx.next().await {
            if let Frame::Close(close) = frame {
                return Some(close);
            }
        }
        None
    });
    let count = 20_000;
    for i in 0..count {
        let update = {
            use yrs::{Text, Transact};
            let text = importer.doc.get_or_insert_text("text");
            let mut txn = importer.doc.transact_mut();
            text.push(&mut txn, if i % 2 == 0 { "a" } else { "b" });
            txn.encode_update_v1()
        };
        let message = Message::Sync(SyncMessage::Update(update)).encode();
        tx.send(Frame::Binary(message.into()))
            .await
            .unwrap_or_else(|e| panic!("update {i} not accepted: {e}"));
    }
    // Everything arrived: a fresh client sees all 20,000 characters.
    let deadline = std::time::Instant::now() + 3 * TIMEOUT;
    loop {
        let text = read_text(&relay, "import").await;
        if text.len() == count {
            assert_eq!(text, "ab".repeat(count / 2));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {count} updates applied",
            text.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Still connected: the relay never closed it.
    assert!(!reader.is_finished(), "closed: {:?}", reader.await);
}

#[tokio::test]
async fn a_flooding_session_is_held_back_while_its_neighbour_keeps_working() {
    // A burst of 40 then 20 a second: the flood below is far over it, while the neighbour's
    // handful of messages is far under it.
    let args = ["--message-rate-per-sec", "20", "--message-burst", "40"];
    let mut relay = Relay::start(&args);
    let url = relay.ws_url("shared");
    let mut neighbour = YClient::connect(&url).await;
    neighbour.append("before ").await;
    neighbour.barrier().await;

    let flooder = YClient::connect(&url).await;
    let (mut tx, mut rx) = flooder.socket.split();
    let reader = tokio::spawn(async move {
        while let Some(Ok(frame)) = rx.next().await {
            if let Frame::Close(close) = frame {
                return close;
            }
        }
        None
    });
    // Each update is a valid Yjs update from the flooder's own client id. The flood goes on
    // until the test is over; the relay's backpressure is what slows it down.
    let (sent_tx, sent) = tokio::sync::watch::channel(0usize);
    let flood = tokio::spawn(async move {
        let doc = yrs::Doc::with_client_id(777);
        let text = doc.get_or_insert_text("flood");
        loop {
            let update = {
                use yrs::{Text, Transact};
                let mut txn = doc.transact_mut();
                text.push(&mut txn, "x");
                txn.encode_update_v1()
            };
            let message = Message::Sync(SyncMessage::Update(update)).encode();
            if tx.send(Frame::Binary(message.into())).await.is_err() {
                return;
            }
            sent_tx.send_modify(|n| *n += 1);
        }
    });
    // Well past the burst: the relay is holding the flooder back now.
    let mut progress = sent.clone();
    tokio::time::timeout(TIMEOUT, progress.wait_for(|n| *n > 200))
        .await
        .expect("the flooder could not even send its burst")
        .unwrap();

    // The neighbour on the same document still syncs, and the flooder is not closed.
    neighbour.append("after").await;
    neighbour.barrier().await;
    let seen = read_text(&relay, "shared").await;
    assert_eq!(seen, "before after");
    // The relay keeps reading the flood at the limit's pace, well past the burst.
    let deadline = std::time::Instant::now() + TIMEOUT;
    while flood_text(&relay).await.len() < 100 {
        assert!(
            std::time::Instant::now() < deadline && !reader.is_finished(),
            "the relay stopped reading the flooder: {:?}",
            reader.is_finished()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(!reader.is_finished(), "the flooder was disconnected");
    assert!(!flood.is_finished(), "the flooder's sends failed");
    flood.abort();

    // Everything committed survives a restart: a fresh client sees the same document.
    let flood_before = flood_text(&relay).await;
    assert!(
        !flood_before.is_empty(),
        "the relay applied none of the flood"
    );
    let temp = relay.take_temp();
    assert!(relay.signal_and_wait("TERM").success());
    let restarted = Relay::start_in(&relay.data_dir, &args);
    assert_eq!(read_text(&restarted, "shared").await, seen);
    let flood_after = flood_text(&restarted).await;
    assert!(
        flood_after.len() >= flood_before.len(),
        "{} before the restart, {} after",
        flood_before.len(),
        flood_after.len()
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
