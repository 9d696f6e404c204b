//! Presence (awareness) follows the y-protocols clock rule, belongs to the connection that
//! introduced it, and is bounded per connection and per document (issues 13 and 14).

mod common;

use aetherflow_crdt::awareness::{
    MAX_BYTES_PER_CONNECTION, MAX_CLIENTS_PER_CONNECTION, encode_update,
};
use aetherflow_crdt::protocol::{Message, SyncMessage};
use common::{Relay, YClient};

/// An awareness update with `entries` of (client id, clock, state JSON).
fn awareness(entries: &[(u64, u64, &str)]) -> Message {
    Message::Awareness(encode_update(entries))
}

/// The next message `client` receives that is an awareness update or a sync update.
async fn next_awareness_or_update(client: &mut YClient) -> Message {
    loop {
        let message = client.next_message().await;
        if matches!(
            message,
            Message::Awareness(_) | Message::Sync(SyncMessage::Update(_))
        ) {
            return message;
        }
    }
}

#[tokio::test]
async fn a_new_clients_clock_zero_state_is_not_forwarded() {
    let relay = Relay::start(&[]);
    let url = relay.ws_url("clock-zero");
    let mut watcher = YClient::connect(&url).await;
    let mut joiner = YClient::connect(&url).await;
    // What a y-protocols Awareness sends first: `{}` at clock 0, then (on leaving) null at 1.
    joiner.send(&awareness(&[(31, 0, "{}")])).await;
    joiner.send(&awareness(&[(31, 1, "null")])).await;
    joiner.append("after").await;
    // Messages of one connection are handled in order: had either awareness entry been
    // forwarded, it would arrive before the edit.
    let next = next_awareness_or_update(&mut watcher).await;
    assert!(
        matches!(next, Message::Sync(SyncMessage::Update(_))),
        "a no-op presence change was forwarded: {next:?}"
    );
}

#[tokio::test]
async fn a_connection_cannot_change_or_remove_presence_it_did_not_introduce() {
    let relay = Relay::start(&[]);
    let url = relay.ws_url("owned-presence");
    let mut ann = YClient::connect(&url).await;
    let ann_state = awareness(&[(7, 1, r#"{"user":"ann"}"#)]);
    ann.send(&ann_state).await;
    ann.barrier().await;
    let mut eve = YClient::connect(&url).await;
    eve.send(&awareness(&[(7, 5, r#"{"user":"eve"}"#)])).await;
    eve.send(&awareness(&[(7, 6, "null")])).await;
    eve.barrier().await;
    // A late joiner still sees ann's own state.
    let mut late = YClient::connect_raw(&url).await;
    let greeting = late.messages_until_awareness().await;
    assert_eq!(Message::Awareness(greeting), ann_state);
}

#[tokio::test]
async fn a_connection_over_its_presence_limits_is_closed_and_others_keep_theirs() {
    let relay = Relay::start(&[]);
    let url = relay.ws_url("presence-limits");
    let mut ann = YClient::connect(&url).await;
    let ann_state = awareness(&[(7, 1, r#"{"user":"ann"}"#)]);
    ann.send(&ann_state).await;
    ann.barrier().await;

    // Too many client ids from one connection.
    let mut flood = YClient::connect(&url).await;
    let ids: Vec<_> = (100..=100 + MAX_CLIENTS_PER_CONNECTION as u64)
        .map(|id| (id, 1, "{}"))
        .collect();
    flood.send(&awareness(&ids)).await;
    let close = flood.expect_close().await;
    assert_eq!(u16::from(close.code), 1008, "{}", close.reason);
    assert!(close.reason.contains("presence limit"), "{}", close.reason);

    // Too many bytes, spread over states that are each under the per-state limit.
    let mut heavy = YClient::connect(&url).await;
    let big = format!("\"{}\"", "x".repeat(MAX_BYTES_PER_CONNECTION / 2));
    heavy.send(&awareness(&[(200, 1, &big)])).await;
    heavy.send(&awareness(&[(201, 1, &big)])).await;
    let close = heavy.expect_close().await;
    assert_eq!(u16::from(close.code), 1008, "{}", close.reason);

    // Nothing of either is kept, and ann's presence is untouched.
    let mut late = YClient::connect_raw(&url).await;
    let greeting = late.messages_until_awareness().await;
    assert_eq!(Message::Awareness(greeting), ann_state);
}
