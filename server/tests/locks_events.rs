//! Locks and the Server-Sent Events stream, against the real relay: every event type reaches
//! a listener; locks are acquired, renewed, released and expire on their own; a locked manual
//! document refuses everyone but the holder.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::api_client::SseClient;
use common::{Relay, YClient, http_json};
use serde_json::{Value, json};

async fn create(relay: &Relay, name: &str, kind: &str) {
    let body = json!({ "name": name, "kind": kind });
    let (status, created) = http_json(relay.addr, "POST", "/api/v1/docs", None, Some(body)).await;
    assert_eq!(status, 201, "{created}");
}

async fn call(relay: &Relay, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let (status, text) = common::http_request(relay.addr, method, path, None, body.as_ref()).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn events(relay: &Relay, doc: &str) -> SseClient {
    SseClient::open(relay.addr, &format!("/api/v1/docs/{doc}/events"), None)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_lock_is_acquired_renewed_and_released_with_an_event_each() {
    let relay = Relay::start(&[]);
    create(&relay, "notes", "manual").await;
    let mut sse = events(&relay, "notes").await;
    let lock = "/api/v1/docs/notes/lock";

    let (status, taken) = call(
        &relay,
        "POST",
        lock,
        Some(json!({ "ttl_ms": 60_000, "holder": "ann" })),
    )
    .await;
    assert_eq!(status, 200, "{taken}");
    assert_eq!(taken["holder"], "ann");
    let event = sse.wait_for("lock_acquired").await;
    assert_eq!(event["holder"], "ann");
    assert_eq!(event["expires_ms"], taken["expires_ms"]);

    let (status, refused) = call(
        &relay,
        "POST",
        lock,
        Some(json!({ "ttl_ms": 1000, "holder": "bob" })),
    )
    .await;
    assert_eq!(status, 423, "{refused}");
    assert_eq!(refused["error"]["code"], "locked");
    let (status, _) = call(
        &relay,
        "PUT",
        lock,
        Some(json!({ "ttl_ms": 1000, "holder": "bob" })),
    )
    .await;
    assert_eq!(status, 423, "bob cannot renew ann's lock");

    let (status, renewed) = call(
        &relay,
        "PUT",
        lock,
        Some(json!({ "ttl_ms": 120_000, "holder": "ann" })),
    )
    .await;
    assert_eq!(status, 200, "{renewed}");
    assert!(renewed["expires_ms"].as_u64() > taken["expires_ms"].as_u64());
    assert_eq!(
        sse.wait_for("lock_renewed").await["expires_ms"],
        renewed["expires_ms"]
    );
    let (_, shown) = call(&relay, "GET", lock, None).await;
    assert_eq!(shown["holder"], "ann");

    let (status, _) = call(&relay, "DELETE", &format!("{lock}?holder=bob"), None).await;
    assert_eq!(status, 423, "bob cannot release ann's lock");
    let (status, _) = call(&relay, "DELETE", &format!("{lock}?holder=ann"), None).await;
    assert_eq!(status, 204);
    assert_eq!(sse.wait_for("lock_released").await["holder"], "ann");
    let (_, shown) = call(&relay, "GET", lock, None).await;
    assert_eq!(shown["locked"], false);
    let (status, body) = call(
        &relay,
        "PUT",
        lock,
        Some(json!({ "ttl_ms": 1000, "holder": "ann" })),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
}

#[tokio::test]
async fn an_expired_lock_frees_itself_and_says_so() {
    let relay = Relay::start(&[]);
    create(&relay, "notes", "manual").await;
    let mut sse = events(&relay, "notes").await;
    let lock = "/api/v1/docs/notes/lock";
    let (status, _) = call(
        &relay,
        "POST",
        lock,
        Some(json!({ "ttl_ms": 50, "holder": "ann" })),
    )
    .await;
    assert_eq!(status, 200);
    // Nobody touches the document: the expiry timer alone announces it.
    assert_eq!(sse.wait_for("lock_expired").await["holder"], "ann");
    let (_, shown) = call(&relay, "GET", lock, None).await;
    assert_eq!(shown["locked"], false);
    let (status, _) = call(
        &relay,
        "POST",
        lock,
        Some(json!({ "ttl_ms": 60_000, "holder": "bob" })),
    )
    .await;
    assert_eq!(status, 200, "the expired lock is free for someone else");
}

#[tokio::test]
async fn a_locked_manual_document_refuses_everyone_but_the_holder() {
    let relay = Relay::start(&[]);
    create(&relay, "notes", "manual").await;
    let register = "/api/v1/docs/notes/register";
    let (status, _) = call(
        &relay,
        "POST",
        "/api/v1/docs/notes/lock",
        Some(json!({ "ttl_ms": 60_000, "holder": "ann" })),
    )
    .await;
    assert_eq!(status, 200);
    let (status, refused) = call(
        &relay,
        "PUT",
        register,
        Some(json!({ "value": "bob's", "base_version": 0, "author": "bob" })),
    )
    .await;
    assert_eq!(status, 423, "{refused}");
    assert_eq!(refused["error"]["code"], "locked");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ann")
    );
    let (status, written) = call(
        &relay,
        "PUT",
        register,
        Some(json!({ "value": "ann's", "base_version": 0, "author": "ann" })),
    )
    .await;
    assert_eq!(status, 200, "{written}");
    let (_, shown) = call(&relay, "GET", register, None).await;
    assert_eq!(shown["value"], "ann's");
}

#[tokio::test]
async fn lock_requests_are_validated() {
    let relay = Relay::start(&[]);
    create(&relay, "notes", "manual").await;
    let lock = "/api/v1/docs/notes/lock";
    for body in [
        json!({ "ttl_ms": 0 }),
        json!({ "ttl_ms": 3_600_001 }),
        json!({ "ttl": 5 }),
        json!("x"),
    ] {
        let (status, answer) = call(&relay, "POST", lock, Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "bad_request");
    }
    let (status, _) = call(
        &relay,
        "POST",
        "/api/v1/docs/absent/lock",
        Some(json!({ "ttl_ms": 10 })),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_event_stream_carries_presence_updates_conflicts_and_deletion() {
    let relay = Relay::start(&[]);
    // A Yjs document: presence and updates.
    create(&relay, "text", "yjs").await;
    let mut sse = events(&relay, "text").await;
    let mut client = YClient::connect(&relay.ws_url("text")).await;
    let joined = sse.wait_for("user_joined").await;
    assert_eq!(joined["user"], "anonymous");
    client.append("hi").await;
    let updated = sse.wait_for("updated").await;
    assert_eq!(updated["kind"], "yjs");
    assert!(updated["bytes"].as_u64().unwrap() > 0);
    drop(client);
    assert_eq!(sse.wait_for("user_left").await["conn"], joined["conn"]);

    // A manual document: updates with the register, a conflict, its resolution, deletion.
    create(&relay, "notes", "manual").await;
    let mut sse = events(&relay, "notes").await;
    let register = "/api/v1/docs/notes/register";
    call(
        &relay,
        "PUT",
        register,
        Some(json!({ "value": "v1", "base_version": 0 })),
    )
    .await;
    let updated = sse.wait_for("updated").await;
    assert_eq!(updated["register"]["value"], "v1");
    call(
        &relay,
        "PUT",
        register,
        Some(json!({ "value": "late", "base_version": 0 })),
    )
    .await;
    let detected = sse.wait_for("conflict_detected").await;
    assert_eq!(detected["conflict"]["proposed"]["value"], "late");
    let id = detected["conflict"]["id"].as_u64().unwrap();
    let resolve = format!("/api/v1/docs/notes/conflicts/{id}/resolve");
    call(&relay, "POST", &resolve, Some(json!({ "value": "merged" }))).await;
    let resolved = sse.wait_for("conflict_resolved").await;
    assert_eq!(resolved["conflict"], id);
    assert_eq!(resolved["revision"]["value"], "merged");
    call(&relay, "DELETE", "/api/v1/docs/notes", None).await;
    sse.wait_for("deleted").await;
    assert!(
        sse.next_event().await.is_none(),
        "the stream ends after deletion"
    );
}

#[tokio::test]
async fn the_event_stream_of_a_missing_document_is_404() {
    let relay = Relay::start(&[]);
    let Err((status, body)) = SseClient::open(relay.addr, "/api/v1/docs/absent/events", None).await
    else {
        panic!("a stream for a missing document");
    };
    assert_eq!(status, 404, "{body}");
}
