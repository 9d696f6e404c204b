//! Webhooks against the real relay: a receiver started by each test on loopback (which the
//! relay is told to allow), events signed and verified here with an HMAC of our own,
//! retries until the receiver recovers, `kill -9` between commit and delivery, debouncing,
//! the private-address refusal and the admin's replay of parked events.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::webhook_receiver::{Received, Receiver};
use common::{Relay, TIMEOUT, YClient, http_json, metric_value};
use serde_json::{Value, json};

const ADMIN_KEY: &str = "webhook-admin-key-0123456789";

/// The relay, allowed to post to loopback, with fast retries.
fn relay_args(extra: &[&'static str]) -> Vec<&'static str> {
    let mut args = vec![
        "--admin-key",
        ADMIN_KEY,
        "--webhook-allow-private-addresses",
    ];
    args.extend_from_slice(extra);
    if !extra.contains(&"--webhook-retry-initial-ms") {
        args.extend_from_slice(&["--webhook-retry-initial-ms", "50"]);
    }
    if !extra.contains(&"--webhook-debounce-ms") {
        args.extend_from_slice(&["--webhook-debounce-ms", "200"]);
    }
    args
}

async fn admin(relay: &Relay, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let answer = common::http_raw(
        relay.addr,
        method,
        path,
        &[("X-Admin-Key", ADMIN_KEY)],
        &body,
    )
    .await;
    let json = match answer.body.is_empty() {
        true => Value::Null,
        false => answer.json(),
    };
    (answer.status, json)
}

/// `/metrics`, which takes the admin key when the relay has one.
async fn metrics(relay: &Relay) -> String {
    common::http_raw(
        relay.addr,
        "GET",
        "/metrics",
        &[("X-Admin-Key", ADMIN_KEY)],
        "",
    )
    .await
    .body
}

async fn register_endpoint(relay: &Relay, receiver: SocketAddr, events: &[&str]) -> Value {
    let body = json!({ "url": format!("http://{receiver}/hook"), "events": events });
    let (status, endpoint) = admin(relay, "POST", "/api/v1/webhooks", Some(body)).await;
    assert_eq!(status, 201, "{endpoint}");
    endpoint
}

async fn create_doc(relay: &Relay, name: &str, kind: &str) {
    let body = json!({ "name": name, "kind": kind });
    let (status, body) = http_json(relay.addr, "POST", "/api/v1/docs", None, Some(body)).await;
    assert_eq!(status, 201, "{body}");
}

/// Our own check of the signature header: HMAC-SHA256 over `"{t}.{body}"`.
fn verify(secret: &str, received: &Received) -> bool {
    let Some((t, signatures)) = aetherflow_crdt::webhook::parse_signature(&received.signature)
    else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut payload = format!("{t}.").into_bytes();
    payload.extend_from_slice(&received.body);
    signatures
        .iter()
        .any(|s| ring::hmac::verify(&key, &payload, s).is_ok())
}

#[tokio::test]
async fn events_arrive_signed_verifiable_and_without_content() {
    let receiver = Receiver::default();
    let at = receiver.start().await;
    let relay = Relay::start(&relay_args(&[]));
    let endpoint = register_endpoint(
        &relay,
        at,
        &["document.created", "register.updated", "document.deleted"],
    )
    .await;
    let secret = endpoint["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"));
    let (_, listed) = admin(&relay, "GET", "/api/v1/webhooks", None).await;
    assert!(
        listed["endpoints"][0].get("secret").is_none(),
        "a listing never shows the secret: {listed}"
    );

    create_doc(&relay, "notes", "manual").await;
    let write = json!({ "value": "top secret value", "base_version": 0 });
    let (status, _) = http_json(
        relay.addr,
        "PUT",
        "/api/v1/docs/notes/register",
        None,
        Some(write),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) =
        common::http_request(relay.addr, "DELETE", "/api/v1/docs/notes", None, None).await;
    assert_eq!(status, 204);

    let mut got = receiver.wait_until("three events", |r| r.len() >= 3).await;
    // Events are delivered concurrently, in no promised order; their ids (UUIDv7) sort in
    // the order they were recorded.
    got.sort_by(|a, b| a.id.cmp(&b.id));
    let kinds: Vec<&str> = got.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["document.created", "register.updated", "document.deleted"]
    );
    for event in &got {
        assert!(
            verify(secret, event),
            "signature does not verify: {event:?}"
        );
        assert!(
            !verify("whsec_wrong", event),
            "a wrong secret must not verify"
        );
        let body = event.json();
        assert_eq!(
            body["id"],
            event.id.as_str(),
            "the id header is the body's id"
        );
        assert_eq!(body["document"], "notes");
        assert!(body["data"].get("content").is_none(), "{body}");
        assert!(!String::from_utf8_lossy(&event.body).contains("top secret"));
    }
    // A tampered body no longer verifies.
    let mut tampered = got[0].clone();
    tampered.body = br#"{"id":"forged"}"#.to_vec();
    assert!(!verify(secret, &tampered));
    // Counted before the delivery is recorded, so once the outbox is empty.
    wait_for_empty_outbox(&relay).await;
    let metrics = metrics(&relay).await;
    assert_eq!(
        metric_value(&metrics, "aetherflow_webhook_deliveries_total"),
        3.0
    );
}

#[tokio::test]
async fn a_receiver_failing_n_times_then_recovering_gets_every_event_exactly_once() {
    let receiver = Receiver::default();
    receiver.fail.store(4, Ordering::SeqCst);
    let at = receiver.start().await;
    let relay = Relay::start(&relay_args(&[]));
    register_endpoint(&relay, at, &["document.created"]).await;
    for n in 0..5 {
        create_doc(&relay, &format!("doc-{n}"), "yjs").await;
    }
    let got = receiver
        .wait_until("five distinct events accepted", |r| {
            r.iter().map(|e| &e.id).collect::<BTreeSet<_>>().len() >= 5
        })
        .await;
    // Let any duplicate show itself before counting: everything is acknowledged, so the
    // outbox is empty once the relay has recorded the last delivery.
    wait_for_empty_outbox(&relay).await;
    let mut accepted_per_id: BTreeMap<String, usize> = BTreeMap::new();
    for event in receiver.accepted() {
        *accepted_per_id.entry(event.id).or_default() += 1;
    }
    assert_eq!(accepted_per_id.len(), 5, "{got:?}");
    assert!(
        accepted_per_id.values().all(|&n| n == 1),
        "each event accepted exactly once: {accepted_per_id:?}"
    );
    let documents: BTreeSet<String> = got
        .iter()
        .map(|e| e.json()["document"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(documents.len(), 5);
    assert_eq!(
        receiver.seen().len(),
        9,
        "4 refused attempts, then 5 accepted"
    );
    let metrics = metrics(&relay).await;
    assert_eq!(
        metric_value(&metrics, "aetherflow_webhook_retries_total"),
        4.0
    );
    assert_eq!(
        metric_value(&metrics, "aetherflow_webhook_failures_total"),
        4.0
    );
    assert_eq!(
        metric_value(&metrics, "aetherflow_webhook_deliveries_total"),
        5.0
    );
}

async fn wait_for_empty_outbox(relay: &Relay) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (_, page) = admin(relay, "GET", "/api/v1/webhooks/deliveries", None).await;
        if page["pending"] == 0 && page["parked"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "outbox never emptied: {page}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_event_committed_before_kill_9_is_delivered_after_restart() {
    let receiver = Receiver::default();
    receiver.hang.store(true, Ordering::SeqCst);
    let at = receiver.start().await;
    let mut relay = Relay::start(&relay_args(&[]));
    let temp = relay.take_temp().unwrap();
    register_endpoint(&relay, at, &["document.created"]).await;
    create_doc(&relay, "survivor", "yjs").await;
    // The relay is now between the commit and a delivery it will never finish.
    let deadline = Instant::now() + TIMEOUT;
    while receiver.seen().is_empty() {
        assert!(Instant::now() < deadline, "the first attempt never came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first = receiver.seen()[0].clone();
    relay.kill9();

    receiver.hang.store(false, Ordering::SeqCst);
    let relay = Relay::start_in(temp.path(), &relay_args(&[]));
    let got = receiver
        .wait_until("the event after restart", |r| !r.is_empty())
        .await;
    assert_eq!(got[0].id, first.id, "the same event, by its idempotency id");
    assert_eq!(got[0].json()["document"], "survivor");
    drop(relay);
}

#[tokio::test]
async fn changes_are_debounced_per_document_with_their_authors() {
    let receiver = Receiver::default();
    let at = receiver.start().await;
    // A window far longer than the edits take: each document's edits fall in one or two.
    let relay = Relay::start(&relay_args(&["--webhook-debounce-ms", "3000"]));
    register_endpoint(&relay, at, &["document.changed"]).await;
    let mut a = YClient::connect(&relay.ws_url("alpha")).await;
    let mut b = YClient::connect(&relay.ws_url("beta")).await;
    for n in 0..5 {
        a.append(&format!("a{n} ")).await;
        a.wait_for_echo().await;
    }
    b.append("b").await;
    b.wait_for_echo().await;
    let got = receiver
        .wait_until("every update accounted for", |r| {
            let updates = |doc: &str| -> u64 {
                r.iter()
                    .map(Received::json)
                    .filter(|e| e["document"] == doc)
                    .map(|e| e["data"]["updates"].as_u64().unwrap())
                    .sum()
            };
            updates("alpha") == 5 && updates("beta") == 1
        })
        .await;
    let alpha: Vec<Value> = got
        .iter()
        .map(Received::json)
        .filter(|e| e["document"] == "alpha")
        .collect();
    assert!(
        alpha.len() < 5,
        "five edits, debounced into fewer events: {alpha:?}"
    );
    for event in &alpha {
        assert_eq!(event["type"], "document.changed");
        assert_eq!(event["data"]["authors"], json!(["anonymous"]));
        let (from, to) = (
            event["data"]["from_ms"].as_u64(),
            event["data"]["to_ms"].as_u64(),
        );
        assert!(from <= to, "{event}");
        assert!(event["data"].get("content").is_none());
    }
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let relay = Relay::start(&["--admin-key", ADMIN_KEY]);
    for url in [
        "http://127.0.0.1:9/hook",
        "http://[::1]:9/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/hook",
        "http://192.168.1.10/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://localhost:9/hook",
    ] {
        let body = json!({ "url": url, "events": ["document.created"] });
        let (status, answer) = admin(&relay, "POST", "/api/v1/webhooks", Some(body)).await;
        assert_eq!(status, 400, "{url}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("refused"), "{url}: {message}");
    }
    let (_, listed) = admin(&relay, "GET", "/api/v1/webhooks", None).await;
    assert_eq!(listed["endpoints"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn bad_endpoint_requests_are_refused_and_change_nothing() {
    let relay = Relay::start(&["--admin-key", ADMIN_KEY]);
    for body in [
        json!({ "url": "ftp://example.com/", "events": ["document.created"] }),
        json!({ "url": "https://example.com/", "events": [] }),
        json!({ "url": "https://example.com/", "events": ["document.exploded"] }),
        json!({ "url": "https://example.com/", "events": ["document.created"], "extra": 1 }),
        json!({ "url": "https://example.com/", "events": ["document.created"], "debounce_ms": 3_600_001 }),
        json!({ "events": ["document.created"] }),
    ] {
        let (status, answer) = admin(&relay, "POST", "/api/v1/webhooks", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
    let (status, _) = http_json(relay.addr, "GET", "/api/v1/webhooks", None, None).await;
    assert_eq!(status, 401, "the admin key is required");
    let (_, listed) = admin(&relay, "GET", "/api/v1/webhooks", None).await;
    assert_eq!(listed["endpoints"], json!([]));
}

#[tokio::test]
async fn parked_events_are_listed_and_the_admins_replay_delivers_them() {
    let receiver = Receiver::default();
    receiver.fail.store(usize::MAX, Ordering::SeqCst);
    let at = receiver.start().await;
    let relay = Relay::start(&relay_args(&["--webhook-retry-horizon-secs", "1"]));
    register_endpoint(&relay, at, &["document.created"]).await;
    create_doc(&relay, "dropped", "yjs").await;
    // The first event parks, then the next is attempted (one at a time while failing).
    let deadline = Instant::now() + TIMEOUT;
    let dropped = loop {
        let (_, page) = admin(
            &relay,
            "GET",
            "/api/v1/webhooks/deliveries?state=parked",
            None,
        )
        .await;
        if let Some(row) = page["deliveries"].get(0) {
            break row.clone();
        }
        assert!(Instant::now() < deadline, "never parked: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let path = format!("/api/v1/webhooks/deliveries/{}", dropped["seq"]);
    let (status, _) = admin(&relay, "DELETE", &path, None).await;
    assert_eq!(status, 204, "the admin discards a parked event");
    let (status, _) = admin(&relay, "DELETE", &path, None).await;
    assert_eq!(status, 404);
    create_doc(&relay, "parked", "yjs").await;

    let deadline = Instant::now() + TIMEOUT;
    let parked = loop {
        let (_, page) = admin(
            &relay,
            "GET",
            "/api/v1/webhooks/deliveries?state=parked",
            None,
        )
        .await;
        if let Some(row) = page["deliveries"].get(0) {
            break row.clone();
        }
        assert!(Instant::now() < deadline, "never parked: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(parked["state"], "parked");
    assert!(
        parked["last_error"].as_str().unwrap().contains("503"),
        "{parked}"
    );
    assert!(receiver.accepted().is_empty());
    let metrics = metrics(&relay).await;
    assert_eq!(
        metric_value(&metrics, "aetherflow_webhook_parked_total"),
        2.0
    );

    receiver.fail.store(0, Ordering::SeqCst);
    let seq = parked["seq"].as_u64().unwrap();
    let path = format!("/api/v1/webhooks/deliveries/{seq}/replay");
    let (status, _) = admin(&relay, "POST", &path, None).await;
    assert_eq!(status, 202);
    let got = receiver
        .wait_until("the replayed event", |r| !r.is_empty())
        .await;
    assert_eq!(
        got[0].id,
        parked["id"].as_str().unwrap(),
        "replayed under its own id"
    );
    wait_for_empty_outbox(&relay).await;
    let documents: Vec<Value> = receiver
        .accepted()
        .iter()
        .map(|r| r.json()["document"].clone())
        .collect();
    assert_eq!(
        documents,
        [json!("parked")],
        "the discarded event never went out"
    );
    let (status, _) = admin(&relay, "POST", &path, None).await;
    assert_eq!(status, 404, "nothing parked is left to replay");
}

#[tokio::test]
async fn lock_events_and_the_prefix_filter() {
    let receiver = Receiver::default();
    let at = receiver.start().await;
    let relay = Relay::start(&relay_args(&[]));
    let body = json!({ "url": format!("http://{at}/hook"), "prefix": "team-",
        "events": ["lock.acquired", "lock.renewed", "lock.released", "document.created"] });
    let (status, _) = admin(&relay, "POST", "/api/v1/webhooks", Some(body)).await;
    assert_eq!(status, 201);
    create_doc(&relay, "private-notes", "yjs").await;
    create_doc(&relay, "team-notes", "yjs").await;
    let lock = json!({ "ttl_ms": 60_000, "holder": "ann" });
    let (status, answer) = http_json(
        relay.addr,
        "POST",
        "/api/v1/docs/team-notes/lock",
        None,
        Some(lock),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    // The holder taking it again extends it: `lock.renewed`.
    let again = json!({ "ttl_ms": 60_000, "holder": "ann" });
    let (status, answer) = http_json(
        relay.addr,
        "POST",
        "/api/v1/docs/team-notes/lock",
        None,
        Some(again),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, _) = common::http_request(
        relay.addr,
        "DELETE",
        "/api/v1/docs/team-notes/lock?holder=ann",
        None,
        None,
    )
    .await;
    assert!(status < 300, "release: {status}");
    receiver.wait_until("four events", |r| r.len() >= 4).await;
    wait_for_empty_outbox(&relay).await;
    let got: Vec<Value> = receiver.accepted().iter().map(Received::json).collect();
    assert_eq!(got.len(), 4, "{got:?}");
    let kinds: BTreeSet<&str> = got.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "document.created",
            "lock.acquired",
            "lock.renewed",
            "lock.released"
        ])
    );
    assert!(
        got.iter().all(|e| e["document"] == "team-notes"),
        "only documents under the prefix: {got:?}"
    );
    let acquired = got.iter().find(|e| e["type"] == "lock.acquired").unwrap();
    assert_eq!(acquired["data"]["holder"], "ann");
}

#[tokio::test]
async fn content_is_sent_only_to_endpoints_that_ask_for_it() {
    let plain = Receiver::default();
    let plain_at = plain.start().await;
    let full = Receiver::default();
    let full_at = full.start().await;
    let relay = Relay::start(&relay_args(&[]));
    register_endpoint(&relay, plain_at, &["register.updated"]).await;
    let body = json!({ "url": format!("http://{full_at}/hook"), "events": ["register.updated"],
        "include_content": true });
    let (status, _) = admin(&relay, "POST", "/api/v1/webhooks", Some(body)).await;
    assert_eq!(status, 201);
    create_doc(&relay, "title", "manual").await;
    let write = json!({ "value": "the new title", "base_version": 0 });
    let (status, _) = http_json(
        relay.addr,
        "PUT",
        "/api/v1/docs/title/register",
        None,
        Some(write),
    )
    .await;
    assert_eq!(status, 200);
    let with_content = full.wait_until("the event", |r| !r.is_empty()).await;
    let without = plain.wait_until("the event", |r| !r.is_empty()).await;
    assert!(String::from_utf8_lossy(&with_content[0].body).contains("the new title"));
    assert!(with_content[0].json()["data"]["content"]["register"].is_object());
    assert!(!String::from_utf8_lossy(&without[0].body).contains("the new title"));
}

#[tokio::test]
async fn every_delivery_checks_the_address_again() {
    // Registered while private addresses were allowed; the relay restarted without that
    // permission must not post there, even though the endpoint is stored.
    let receiver = Receiver::default();
    let at = receiver.start().await;
    let mut relay = Relay::start(&relay_args(&[]));
    let temp = relay.take_temp().unwrap();
    register_endpoint(&relay, at, &["document.created"]).await;
    relay.signal_and_wait("TERM");
    let relay = Relay::start_in(temp.path(), &["--admin-key", ADMIN_KEY]);
    create_doc(&relay, "nowhere", "yjs").await;
    let deadline = Instant::now() + TIMEOUT;
    let row = loop {
        let (_, page) = admin(&relay, "GET", "/api/v1/webhooks/deliveries", None).await;
        if let Some(row) = page["deliveries"].get(0)
            && row["attempts"].as_u64() > Some(0)
        {
            break row.clone();
        }
        assert!(Instant::now() < deadline, "never attempted: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        row["last_error"].as_str().unwrap().contains("refused"),
        "{row}"
    );
    assert!(
        receiver.seen().is_empty(),
        "nothing reached the private address"
    );
}

#[tokio::test]
async fn a_receiver_that_is_down_makes_the_relay_hold_one_growing_row_per_document() {
    // Bounded: while the receiver fails, the relay probes it once per backoff step (the first
    // retry here is 30 s or more away) and keeps each document's later changes in one open
    // row, however many debounce windows pass.
    let receiver = Receiver::default();
    receiver.fail.store(usize::MAX, Ordering::SeqCst);
    let at = receiver.start().await;
    let relay = Relay::start(&relay_args(&[
        "--webhook-debounce-ms",
        "50",
        "--webhook-retry-initial-ms",
        "60000",
    ]));
    register_endpoint(&relay, at, &["document.changed"]).await;
    let mut client = YClient::connect(&relay.ws_url("busy")).await;
    for n in 0..10 {
        client.append(&format!("{n} ")).await;
        client.wait_for_echo().await;
        // Past the debounce window, so each edit would open a window of its own.
        tokio::time::sleep(Duration::from_millis(120)).await;
        if n == 0 {
            let deadline = Instant::now() + TIMEOUT;
            while receiver.seen().is_empty() {
                assert!(Instant::now() < deadline, "the first attempt never came");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    let (_, page) = admin(&relay, "GET", "/api/v1/webhooks/deliveries", None).await;
    assert_eq!(
        page["pending"], 2,
        "the failed row and one open row: {page}"
    );
    assert_eq!(receiver.seen().len(), 1, "one probe: {:?}", receiver.seen());
    let metrics = metrics(&relay).await;
    assert_eq!(
        metric_value(&metrics, "aetherflow_webhook_outbox_pending"),
        2.0
    );
}
