//! Updates that add nothing to a document (what pycrdt's provider sends back for every update
//! it applies, or a joiner's whole copy of a document the relay holds) are neither broadcast
//! nor stored (issue 13).

mod common;

use aetherflow_crdt::DocName;
use aetherflow_crdt::protocol::{Message, SyncMessage};
use aetherflow_server::store::Store;
use common::{Relay, YClient};
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, StateVector, Transact};

/// Reads messages until the client's text is `expected`; returns how many update frames
/// (sync updates or step 2s) it took and the size of the largest.
async fn updates_until(client: &mut YClient, expected: &str) -> (usize, usize) {
    let (mut frames, mut largest) = (0, 0);
    while client.text() != expected {
        if let Message::Sync(SyncMessage::Update(update) | SyncMessage::Step2(update)) =
            client.next_message().await
        {
            frames += 1;
            largest = largest.max(update.len());
            client.apply(&update);
        }
    }
    (frames, largest)
}

#[tokio::test]
async fn echoed_updates_are_neither_broadcast_nor_stored() {
    let mut relay = Relay::start(&[]);
    let temp = relay.take_temp().expect("a temporary data dir");
    let url = relay.ws_url("echoes");
    let mut writer = YClient::connect(&url).await;
    let mut reader = YClient::connect(&url).await;
    let big = "x".repeat(50_000);
    let update = writer.append(&big).await;
    writer.wait_for_echo().await;
    reader.wait_for_text(&big).await;

    // The reader sends back its whole copy, then the writer re-sends the 50 KB update 40
    // times and makes a one-character edit.
    let whole = reader
        .doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    reader
        .send(&Message::Sync(SyncMessage::Update(whole)))
        .await;
    let sv = reader.doc.transact().state_vector().encode_v1();
    reader.send(&Message::Sync(SyncMessage::Step1(sv))).await;
    let mut echoes = 0;
    loop {
        match reader.next_message().await {
            Message::Sync(SyncMessage::Step2(_)) => break,
            Message::Sync(SyncMessage::Update(_)) => echoes += 1,
            _ => {}
        }
    }
    assert_eq!(echoes, 0, "the reader's own copy came back {echoes} times");
    for _ in 0..40 {
        writer
            .send(&Message::Sync(SyncMessage::Update(update.clone())))
            .await;
    }
    writer.append("!").await;

    // Each client's next update is the one new edit (the writer gets its echo, as from the
    // y-websocket server): no re-sent copy reached anyone.
    let expected = format!("{big}!");
    let (frames, largest) = updates_until(&mut reader, &expected).await;
    assert!(
        frames == 1 && largest < 1_000,
        "{frames} update frames (largest {largest} bytes) for a one-character edit"
    );
    let (mut frames, mut largest) = (0, 0);
    while largest == 0 || largest > 1_000 {
        if let Message::Sync(SyncMessage::Update(update)) = writer.next_message().await {
            frames += 1;
            largest = update.len();
        }
    }
    assert_eq!(
        frames,
        1,
        "the writer got {} copies of its 50 KB update back",
        frames - 1
    );
    drop((writer, reader));
    relay.signal_and_wait("TERM");

    let store = Store::open(&temp.path().join("aetherflow.redb")).expect("the relay's store");
    let stored = store
        .load(&DocName::parse("echoes").expect("a valid name"))
        .expect("the document is stored");
    let bytes: usize = stored.log.iter().map(Vec::len).sum();
    assert_eq!(
        stored.log.len(),
        2,
        "the log holds the two edits, not the echoes ({bytes} bytes)"
    );
    assert!(bytes < 60_000, "the log holds {bytes} bytes");
}
