//! Cluster mode: events, locks and deletion across relays. A listener on one relay hears what
//! was done through another, once; one lock holder across relays; a deletion through one relay
//! closes the document's clients on every relay.
//!
//! Needs a `nats-server` binary (`AETHERFLOW_NATS_SERVER="$(tests/nats-server.sh)"`); the
//! tests are `#[ignore]`d so a plain `cargo test` reports them as ignored, and the README's
//! test command runs them with `--ignored`.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;
#[path = "common/nats.rs"]
mod nats;

use std::collections::HashMap;
use std::time::Duration;

use common::api_client::SseClient;
use common::{Relay, YClient, cluster_relay, read_text};
use nats::NatsCluster;
use serde_json::{Value, json};

async fn call(relay: &Relay, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let (status, text) = common::http_request(relay.addr, method, path, None, body.as_ref()).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn create(relay: &Relay, name: &str, kind: &str) {
    let body = json!({ "name": name, "kind": kind });
    let (status, created) = call(relay, "POST", "/api/v1/docs", Some(body)).await;
    assert_eq!(status, 201, "{created}");
}

/// The event stream of `doc` on `relay`. A document just created through another relay may
/// not be visible yet to the replica this relay's catalog read reaches: tried again on 404.
async fn events(relay: &Relay, doc: &str) -> SseClient {
    let path = format!("/api/v1/docs/{doc}/events");
    for _ in 0..50 {
        match SseClient::open(relay.addr, &path, None).await {
            Ok(sse) => return sse,
            Err((404, _)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err((status, body)) => panic!("{status}: {body}"),
        }
    }
    panic!("{doc} never became visible through this relay");
}

/// A y-websocket client of `doc` through `relay`; a refused upgrade fails with the relay's log.
async fn connect(relay: &Relay, doc: &str) -> YClient {
    if let Err(e) = tokio_tungstenite::connect_async(relay.ws_url(doc)).await {
        panic!("cannot connect to {doc}: {e}\n{}", relay.logs());
    }
    YClient::connect(&relay.ws_url(doc)).await
}

/// The events `sse` gets up to and including the first that `last` accepts, counted by type.
async fn count_until(
    sse: &mut SseClient,
    last: impl Fn(&str, &Value) -> bool,
) -> (HashMap<String, usize>, Vec<Value>) {
    let mut counts = HashMap::new();
    let mut seen = Vec::new();
    loop {
        // Bounded per event only so that a lost event fails instead of hanging: the stream's
        // keep-alives would reset the per-line timeout.
        let (name, data) = tokio::time::timeout(common::TIMEOUT, sse.next_event())
            .await
            .expect("no event came")
            .expect("the stream goes on");
        *counts.entry(name.clone()).or_default() += 1;
        seen.push(data.clone());
        if last(&name, &data) {
            return (counts, seen);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a nats-server binary: AETHERFLOW_NATS_SERVER=$(tests/nats-server.sh)"]
async fn a_listener_on_one_relay_hears_each_change_made_through_another_once() {
    let cluster = NatsCluster::start().await;
    let (a, b) = (
        cluster_relay(&cluster.url(), "HEAR"),
        cluster_relay(&cluster.url(), "HEAR"),
    );

    // Yjs updates through A: the first while B has no room of the document, the second while
    // it has one (a client of its own, so B follows the log too); B's listener hears each once.
    create(&a, "text", "yjs").await;
    let mut sse = events(&b, "text").await;
    let mut on_a = YClient::connect(&a.ws_url("text")).await;
    on_a.append("hello").await;
    on_a.barrier().await;
    let mut on_b = YClient::connect(&b.ws_url("text")).await;
    on_b.wait_for_text("hello").await;
    on_a.append(" again").await;
    on_b.wait_for_text("hello again").await;
    // Once A answered the barrier it has announced the updates (it answers only after they are
    // committed), so its client's departure is announced after them: the end of what to count.
    on_a.barrier().await;
    drop(on_a);
    let (counts, seen) = count_until(&mut sse, |name, _| name == "user_left").await;
    assert_eq!(
        counts.get("updated"),
        Some(&2),
        "{seen:?}\nA: {}\nB: {}",
        a.logs(),
        b.logs()
    );
    assert_eq!(counts.get("user_joined"), Some(&2), "A's and B's: {seen:?}");
    assert!(
        seen.iter()
            .all(|e| e["type"] != "updated" || e["kind"] == "yjs")
    );

    // A register write, a conflict and a lock through A, heard on B; A's release closes it.
    create(&a, "notes", "manual").await;
    let mut sse = events(&b, "notes").await;
    let register = "/api/v1/docs/notes/register";
    let lock = "/api/v1/docs/notes/lock";
    let (status, _) = call(
        &a,
        "PUT",
        register,
        Some(json!({ "value": "v1", "base_version": 0, "author": "ann" })),
    )
    .await;
    assert_eq!(status, 200);
    call(
        &a,
        "PUT",
        register,
        Some(json!({ "value": "late", "base_version": 0, "author": "bob" })),
    )
    .await;
    let taken = json!({ "ttl_ms": 60_000, "holder": "ann" });
    assert_eq!(call(&a, "POST", lock, Some(taken)).await.0, 200);
    assert_eq!(
        call(&a, "DELETE", &format!("{lock}?holder=ann"), None)
            .await
            .0,
        204
    );
    let (counts, seen) = count_until(&mut sse, |name, _| name == "lock_released").await;
    for kind in ["updated", "conflict_detected", "lock_acquired"] {
        assert_eq!(counts.get(kind), Some(&1), "{kind}: {seen:?}");
    }
    let by_type = |kind: &str| seen.iter().find(|e| e["type"] == kind).unwrap().clone();
    assert_eq!(by_type("updated")["register"]["value"], "v1");
    assert_eq!(
        by_type("conflict_detected")["conflict"]["proposed"]["value"],
        "late"
    );
    assert_eq!(by_type("lock_acquired")["holder"], "ann");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a nats-server binary: AETHERFLOW_NATS_SERVER=$(tests/nats-server.sh)"]
async fn writers_racing_for_a_lock_on_two_relays_get_one_holder_until_it_expires() {
    let cluster = NatsCluster::start().await;
    let (a, b) = (
        cluster_relay(&cluster.url(), "RACE"),
        cluster_relay(&cluster.url(), "RACE"),
    );
    create(&a, "plan", "manual").await;
    let mut sse = events(&b, "plan").await;
    let lock = "/api/v1/docs/plan/lock";
    let (ann, bob) = tokio::join!(
        call(
            &a,
            "POST",
            lock,
            Some(json!({ "ttl_ms": 1500, "holder": "ann" }))
        ),
        call(
            &b,
            "POST",
            lock,
            Some(json!({ "ttl_ms": 1500, "holder": "bob" }))
        ),
    );
    let ((winner, on_winner), (loser, on_loser, refusal)) = match (ann.0, bob.0) {
        (200, 423) => (("ann", &a), ("bob", &b, bob.1)),
        (423, 200) => (("bob", &b), ("ann", &a, ann.1)),
        other => panic!(
            "one holder expected: {other:?} {} {}\nA: {}\nB: {}",
            ann.1,
            bob.1,
            a.logs(),
            b.logs()
        ),
    };
    // The same refusal as on one relay.
    assert_eq!(refusal["error"]["code"], "locked");
    let message = refusal["error"]["message"].as_str().unwrap();
    assert!(message.contains(winner), "{message}");
    for relay in [&a, &b] {
        assert_eq!(call(relay, "GET", lock, None).await.1["holder"], winner);
    }
    // The holder renews through the other relay; the other still cannot take it there.
    let renew = json!({ "ttl_ms": 1500, "holder": winner });
    assert_eq!(call(on_loser, "PUT", lock, Some(renew)).await.0, 200);
    let again = json!({ "ttl_ms": 60_000, "holder": loser });
    assert_eq!(
        call(on_winner, "POST", lock, Some(again.clone())).await.0,
        423
    );
    // Nobody touches it: it expires, announced once cluster-wide, and then the other takes it.
    // (A bound on the wait only so that a lost event fails instead of hanging: the stream's
    // keep-alives would reset the per-line timeout.)
    let expired = tokio::time::timeout(common::TIMEOUT, sse.wait_for("lock_expired"))
        .await
        .expect("lock_expired never came");
    assert_eq!(expired["holder"], winner);
    let (status, taken) = call(on_loser, "POST", lock, Some(again)).await;
    assert_eq!(status, 200, "{taken}");
    let (counts, seen) = count_until(&mut sse, |name, data| {
        name == "lock_acquired" && data["holder"] == loser
    })
    .await;
    assert_eq!(counts.get("lock_expired"), None, "expired twice: {seen:?}");
    assert_eq!(call(on_winner, "GET", lock, None).await.1["holder"], loser);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a nats-server binary: AETHERFLOW_NATS_SERVER=$(tests/nats-server.sh)"]
async fn a_write_under_someone_elses_lock_is_refused_through_another_relay() {
    let cluster = NatsCluster::start().await;
    let (a, b) = (
        cluster_relay(&cluster.url(), "GUARD"),
        cluster_relay(&cluster.url(), "GUARD"),
    );
    create(&a, "memo", "manual").await;
    let lock = "/api/v1/docs/memo/lock";
    let register = "/api/v1/docs/memo/register";
    let taken = json!({ "ttl_ms": 60_000, "holder": "ann" });
    assert_eq!(call(&a, "POST", lock, Some(taken)).await.0, 200);
    let bobs = json!({ "value": "bob's", "base_version": 0, "author": "bob" });
    let (status, refused) = call(&b, "PUT", register, Some(bobs)).await;
    assert_eq!(status, 423, "{refused}");
    assert_eq!(refused["error"]["code"], "locked");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ann")
    );
    let anns = json!({ "value": "ann's", "base_version": 0, "author": "ann" });
    assert_eq!(call(&b, "PUT", register, Some(anns)).await.0, 200);
    // Released through B, the document is open to everyone through A.
    assert_eq!(
        call(&b, "DELETE", &format!("{lock}?holder=ann"), None)
            .await
            .0,
        204
    );
    let bobs = json!({ "value": "bob's", "base_version": 1, "author": "bob" });
    let (status, written) = call(&a, "PUT", register, Some(bobs)).await;
    assert_eq!(status, 200, "{written}");
    assert_eq!(call(&b, "GET", register, None).await.1["value"], "bob's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a nats-server binary: AETHERFLOW_NATS_SERVER=$(tests/nats-server.sh)"]
async fn deleting_through_one_relay_closes_the_documents_clients_on_every_relay() {
    let cluster = NatsCluster::start().await;
    let (a, b) = (
        cluster_relay(&cluster.url(), "DELETE"),
        cluster_relay(&cluster.url(), "DELETE"),
    );
    let mut on_a = connect(&a, "doomed").await;
    on_a.append("content").await;
    on_a.barrier().await;
    let mut on_b = connect(&b, "doomed").await;
    on_b.wait_for_text("content").await;
    let mut sse = events(&b, "doomed").await;
    let (status, body) = call(&a, "DELETE", "/api/v1/docs/doomed", None).await;
    assert_eq!(status, 204, "{body}\nrelay A:\n{}", a.logs());
    for client in [&mut on_a, &mut on_b] {
        let close = client.expect_close().await;
        assert_eq!(u16::from(close.code), 4410);
        assert_eq!(close.reason.as_str(), "document deleted");
    }
    sse.wait_for("deleted").await;
    assert!(sse.next_event().await.is_none(), "the stream ends");
    // A late joiner anywhere finds nothing.
    assert_eq!(read_text(&b, "doomed").await, "");
    assert_eq!(read_text(&a, "doomed").await, "");
}
