//! Documents sync between clients through the real relay.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use aetherflow_crdt::protocol::{Message, SyncMessage};
use common::{Relay, YClient, http_get, read_text};

#[tokio::test]
async fn healthz_answers_200_once_ready() {
    let relay = Relay::start(&[]);
    let (status, body) = http_get(relay.addr, "/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(body.trim(), "ok");
}

#[tokio::test]
async fn concurrent_edits_converge_and_a_late_joiner_gets_everything() {
    let relay = Relay::start(&[]);
    let url = relay.ws_url("shared-notes");
    let mut alice = YClient::connect(&url).await;
    let mut bob = YClient::connect(&url).await;
    // Both type before seeing each other's edits.
    alice.append("alice ").await;
    bob.append("bob ").await;
    let converged = {
        // Wait until each has both edits, whatever the interleaving.
        loop {
            let a = alice.text();
            if a.contains("alice") && a.contains("bob") {
                break a;
            }
            alice.wait_for_text_change().await;
        }
    };
    bob.wait_for_text(&converged).await;
    drop(alice);
    drop(bob);
    assert_eq!(read_text(&relay, "shared-notes").await, converged);
}

#[tokio::test]
async fn updates_are_echoed_to_every_connection_including_the_sender() {
    let relay = Relay::start(&[]);
    let url = relay.ws_url("echo");
    let mut writer = YClient::connect(&url).await;
    let mut reader = YClient::connect(&url).await;
    let sent = writer.append("hello").await;
    for client in [&mut writer, &mut reader] {
        loop {
            if let Message::Sync(SyncMessage::Update(update)) = client.next_message().await {
                assert_eq!(
                    update, sent,
                    "the relay relays the update's bytes unchanged"
                );
                break;
            }
        }
    }
    assert_eq!(reader.text(), "");
    reader.apply(&sent);
    assert_eq!(reader.text(), "hello");
}

#[tokio::test]
async fn documents_are_isolated_from_each_other() {
    let relay = Relay::start(&[]);
    let mut a = YClient::connect(&relay.ws_url("doc-a")).await;
    a.append("only in a").await;
    a.barrier().await;
    assert_eq!(read_text(&relay, "doc-b").await, "");
    assert_eq!(read_text(&relay, "doc-a").await, "only in a");
}

/// One awareness entry `[count = 1, clientID, clock, state]`, as y-protocols encodes it.
fn awareness(client: u64, clock: u64, state: &str) -> Vec<u8> {
    aetherflow_crdt::awareness::encode_update(&[(client, clock, state)])
}

#[tokio::test]
async fn awareness_is_relayed_and_removed_when_its_connection_drops() {
    let relay = Relay::start(&[]);
    let url = relay.ws_url("presence");
    let mut watcher = YClient::connect(&url).await;
    let mut visitor = YClient::connect(&url).await;
    let state = r#"{"user":{"name":"Ada"}}"#;
    visitor
        .send(&Message::Awareness(awareness(4242, 1, state)))
        .await;
    loop {
        if let Message::Awareness(update) = watcher.next_message().await {
            assert_eq!(update, awareness(4242, 1, state));
            break;
        }
    }
    // A late joiner is greeted with the current awareness.
    let mut late = YClient::connect_raw(&url).await;
    let greeting = late.messages_until_awareness().await;
    assert_eq!(greeting, awareness(4242, 1, state));
    // The visitor vanishes without saying goodbye: the relay announces the removal.
    drop(visitor);
    loop {
        if let Message::Awareness(update) = watcher.next_message().await {
            assert_eq!(update, awareness(4242, 2, "null"));
            break;
        }
    }
}

#[tokio::test]
async fn a_client_that_vanishes_silently_is_dropped_after_missed_pings() {
    let relay = Relay::start(&["--ping-interval-secs", "1"]);
    let url = relay.ws_url("silent");
    let mut watcher = YClient::connect(&url).await;
    // The ghost announces itself, then never reads again: it answers no ping, as a peer whose
    // network vanished without a FIN would.
    let mut ghost = YClient::connect(&url).await;
    ghost
        .send(&Message::Awareness(awareness(77, 1, "{}")))
        .await;
    let removal = awareness(77, 2, "null");
    loop {
        // The watcher keeps answering pings (tungstenite does so while we read).
        if let Message::Awareness(update) = watcher.next_message().await
            && update == removal
        {
            break;
        }
    }
    drop(ghost);
}

#[tokio::test]
async fn a_reader_that_falls_far_behind_is_closed_with_1013_and_nobody_else_suffers() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Frame;
    // The writer floods on purpose; the message rate limit is not what this test is about.
    let relay = Relay::start(&["--message-rate-per-sec", "0"]);
    let url = relay.ws_url("firehose");
    let mut stalled = YClient::connect(&url).await;
    let writer = YClient::connect(&url).await;
    let (mut tx, mut rx) = writer.socket.split();
    // The writer reads its own echoes and never runs more than 64 ahead of them, so only the
    // stalled reader can fall behind, however slow this machine is.
    let (seen_tx, mut seen) = tokio::sync::watch::channel(0u64);
    let echoes = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(Ok(frame)) = rx.next().await {
            if let Frame::Binary(bytes) = frame
                && let Ok(Message::Awareness(_)) = Message::decode(&bytes, &Default::default())
            {
                n += 1;
                let _ = seen_tx.send(n);
            }
        }
        n
    });
    let big_state = format!("{{\"pad\":\"{}\"}}", "x".repeat(32 * 1024));
    // Far more than the outbox (1,024 frames) plus what the socket buffers can hold.
    for clock in 1..=4000u64 {
        let message = Message::Awareness(awareness(9, clock, &big_state)).encode();
        tx.send(Frame::Binary(message.into())).await.unwrap();
        let behind = clock.saturating_sub(64);
        tokio::time::timeout(common::TIMEOUT, seen.wait_for(|&n| n >= behind))
            .await
            .expect("the writer's echoes stalled")
            .unwrap();
    }
    // The stalled reader now reads: after what was buffered, the relay's verdict.
    let close = stalled.expect_close().await;
    assert_eq!(u16::from(close.code), 1013, "{}", close.reason);
    // The writer was never held back: it sees every echo, then leaves. (Echoes still queued
    // when a client sends its close are not owed to it, so wait before closing.)
    tokio::time::timeout(common::TIMEOUT, seen.wait_for(|&n| n >= 4000))
        .await
        .expect("the writer's last echoes never came")
        .unwrap();
    tx.send(Frame::Close(None)).await.unwrap();
    assert!(echoes.await.unwrap() >= 4000, "the writer saw every echo");
    let mut after = YClient::connect(&url).await;
    after.append("still fine").await;
    after.barrier().await;
}

/// The relay reads with a 1 KiB buffer so idle connections stay small (issue 7); a message
/// hundreds of times larger must still arrive whole, reach other readers and be stored.
#[tokio::test]
async fn a_message_far_larger_than_the_read_buffer_syncs_and_is_stored() {
    let relay = Relay::start(&[]);
    let url = relay.ws_url("big-paste");
    let mut writer = YClient::connect(&url).await;
    let mut reader = YClient::connect(&url).await;
    // 1 MiB of varied text, past the old 128 KiB default buffer too.
    let paste: String = (0..1024 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let update = writer.append(&paste).await;
    assert!(
        update.len() > 1024 * 1024,
        "the update is one large message"
    );
    reader.wait_for_text(&paste).await;
    writer.wait_for_echo().await;
    assert_eq!(read_text(&relay, "big-paste").await, paste);
}
