//! Nothing a client has seen is lost: SIGKILL, clean shutdown, compaction, relaxed mode.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use aetherflow_crdt::DocName;
use aetherflow_crdt::protocol::{Message, SyncMessage};
use aetherflow_server::store::Store;
use common::{Relay, YClient, read_text};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as Frame;
use yrs::{Text, Transact};

/// Writes `count` edits from one client and waits until a second client has seen them all.
/// With `one_per_commit`, waits for each edit before the next, so each is its own log entry.
async fn write_and_observe_with(
    relay: &Relay,
    doc: &str,
    count: usize,
    one_per_commit: bool,
) -> String {
    let url = relay.ws_url(doc);
    let mut writer = YClient::connect(&url).await;
    let mut observer = YClient::connect(&url).await;
    let mut expected = String::new();
    for i in 0..count {
        let piece = format!("{i},");
        writer.append(&piece).await;
        expected.push_str(&piece);
        if one_per_commit {
            observer.wait_for_text(&expected).await;
        }
    }
    observer.wait_for_text(&expected).await;
    expected
}

async fn write_and_observe(relay: &Relay, doc: &str, count: usize) -> String {
    write_and_observe_with(relay, doc, count, false).await
}

#[tokio::test]
async fn what_a_client_has_seen_survives_sigkill() {
    let mut relay = Relay::start(&[]);
    let temp = relay.take_temp().unwrap();
    let expected = write_and_observe(&relay, "crash-me", 200).await;
    relay.kill9();
    let relay = Relay::start_in(temp.path(), &[]);
    assert_eq!(read_text(&relay, "crash-me").await, expected);
}

/// Regression guard for the commit pipeline (several batches in flight per room): a writer
/// streams thousands of edits without waiting, the relay is killed while they are still
/// arriving, and whatever an observer had been shown by then must be on disk.
#[tokio::test]
async fn what_a_client_saw_mid_burst_survives_sigkill() {
    let mut relay = Relay::start(&["--message-rate-per-sec", "0"]);
    let temp = relay.take_temp().unwrap();
    let url = relay.ws_url("burst");
    let writer = YClient::connect(&url).await;
    let mut observer = YClient::connect(&url).await;
    let edits = 20_000;
    let frames: Vec<Vec<u8>> = (0..edits)
        .map(|i| {
            let text = writer.doc.get_or_insert_text("text");
            let mut txn = writer.doc.transact_mut();
            let len = text.len(&txn);
            text.insert(&mut txn, len, &format!("{i},"));
            Message::Sync(SyncMessage::Update(txn.encode_update_v1())).encode()
        })
        .collect();
    let (mut sink, mut echoes) = writer.socket.split();
    // The writer never waits: it feeds every edit, and drains its echoes on the side.
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = echoes.next().await {} });
    let send = tokio::spawn(async move {
        for frame in frames {
            if sink.feed(Frame::Binary(frame.into())).await.is_err() {
                return;
            }
        }
        let _ = sink.flush().await;
    });
    // Kill once the observer has been shown a good part of the stream, but not all of it.
    let part = format!("{},", edits / 4);
    while !observer.text().contains(&part) {
        observer.handle_next().await;
    }
    relay.kill9();
    let seen = observer.text();
    let _ = tokio::join!(send, drain);
    let relay = Relay::start_in(temp.path(), &[]);
    let stored = read_text(&relay, "burst").await;
    assert!(
        stored.starts_with(&seen),
        "the observer was shown {} characters; after the crash the document has {}",
        seen.len(),
        stored.len()
    );
}

#[tokio::test]
async fn sigterm_closes_every_socket_with_1001_and_keeps_relaxed_writes() {
    let mut relay = Relay::start(&["--durability", "relaxed"]);
    let temp = relay.take_temp().unwrap();
    let expected = write_and_observe(&relay, "relaxed-doc", 50).await;
    let mut watcher = YClient::connect(&relay.ws_url("relaxed-doc")).await;
    let status = relay.signal_and_wait("TERM");
    let close = watcher.expect_close().await;
    assert_eq!(u16::from(close.code), 1001);
    assert!(status.success(), "clean shutdown exits 0: {status:?}");
    let relay = Relay::start_in(temp.path(), &[]);
    assert_eq!(read_text(&relay, "relaxed-doc").await, expected);
}

#[tokio::test]
async fn sigint_is_a_clean_shutdown_too() {
    let mut relay = Relay::start(&[]);
    let mut client = YClient::connect(&relay.ws_url("bye")).await;
    let status = relay.signal_and_wait("INT");
    assert_eq!(u16::from(client.expect_close().await.code), 1001);
    assert!(status.success());
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly_without_a_quantum_listener() {
    // Regression: with --quantum-addr off, the unused Quantum context kept the store writer
    // alive and shutdown waited for it forever.
    let mut relay = Relay::start(&["--quantum-addr", "off"]);
    let mut client = YClient::connect(&relay.ws_url("no-udp")).await;
    client.append("kept").await;
    client.barrier().await;
    let status = relay.signal_and_wait("TERM");
    assert_eq!(u16::from(client.expect_close().await.code), 1001);
    assert!(status.success());
}

#[tokio::test]
async fn the_log_is_folded_into_a_snapshot_and_nothing_is_lost() {
    let mut relay = Relay::start(&["--compact-after-updates", "10"]);
    let temp = relay.take_temp().unwrap();
    let expected = write_and_observe_with(&relay, "long-history", 95, true).await;
    relay.signal_and_wait("TERM");
    let store = Store::open(&temp.path().join("aetherflow.redb")).unwrap();
    let stored = store
        .load(&DocName::parse("long-history").unwrap())
        .unwrap();
    assert!(stored.snapshot.is_some(), "the log was compacted");
    assert!(
        stored.log.len() < 10,
        "the log holds only what came after the last snapshot: {}",
        stored.log.len()
    );
    drop(store);
    let relay = Relay::start_in(temp.path(), &[]);
    assert_eq!(read_text(&relay, "long-history").await, expected);
}

#[tokio::test]
async fn a_log_of_few_large_entries_is_folded_once_it_weighs_enough() {
    // Entries are counted far from the entry limit, but four pastes of 3 KB weigh over 8 KB.
    let mut relay = Relay::start(&[
        "--compact-after-updates",
        "1000",
        "--compact-after-bytes",
        "8192",
    ]);
    let temp = relay.take_temp().unwrap();
    let mut client = YClient::connect(&relay.ws_url("pastes")).await;
    for n in 0..4 {
        client.append(&format!("{n}").repeat(3000)).await;
        client.barrier().await;
    }
    let expected = client.text();
    relay.signal_and_wait("TERM");
    let store = Store::open(&temp.path().join("aetherflow.redb")).unwrap();
    let stored = store.load(&DocName::parse("pastes").unwrap()).unwrap();
    assert!(
        stored.snapshot.is_some(),
        "four entries over --compact-after-bytes were folded"
    );
    assert!(stored.log.len() < 4, "{} entries left", stored.log.len());
    drop(store);
    let relay = Relay::start_in(temp.path(), &[]);
    assert_eq!(read_text(&relay, "pastes").await, expected);
}

#[tokio::test]
async fn an_idle_document_unloads_and_reloads_intact() {
    let relay = Relay::start(&["--unload-after-secs", "1"]);
    let expected = write_and_observe(&relay, "sleepy", 20).await;
    // Wait (bounded) for the relay to report the unload, then read the document back.
    let deadline = std::time::Instant::now() + common::TIMEOUT;
    while !relay.logs().contains("document unloaded") {
        assert!(
            std::time::Instant::now() < deadline,
            "never unloaded: {}",
            relay.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(read_text(&relay, "sleepy").await, expected);
}
