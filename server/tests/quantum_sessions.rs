//! Quantum connections as first-class sessions, against the real relay binary: listed by the
//! admin API with moving counters, disconnected by an admin (and the SDK comes back), held to
//! the message and connection rates, and reporting their transport figures to `/metrics`.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use aetherflow_client::testing::envelopes::{
    hello, next_envelope, next_error, next_message, raw_connect, subscribe,
};
use aetherflow_client::testing::live::wait_state;
use aetherflow_client::{Client, ClientConfig, DocHandle};
use aetherflow_crdt::envelope::{Control, Envelope, EnvelopeLimits, Payload};
use aetherflow_crdt::protocol::{Message, SyncMessage};
use common::{Relay, TIMEOUT, YClient, http_json, http_raw};
use serde_json::{Value, json};
use yrs::{GetString, Text, Transact};

const ADMIN_KEY: &str = "admin-key-for-tests-0123";
const SECRET: &str = "jwt-secret-for-tests";

fn secured(extra: &[&str]) -> Relay {
    let mut args = vec!["--admin-key", ADMIN_KEY, "--jwt-secret", SECRET];
    args.extend_from_slice(extra);
    Relay::start(&args)
}

async fn admin(relay: &Relay, method: &str, path: &str) -> (u16, Value) {
    http_json(relay.addr, method, path, Some(ADMIN_KEY), None).await
}

async fn mint(relay: &Relay, sub: &str, docs: &[&str]) -> String {
    let body = json!({ "sub": sub, "docs": docs, "perm": "write", "ttl_secs": 600 });
    let (status, minted) = http_json(
        relay.addr,
        "POST",
        "/api/v1/tokens",
        Some(ADMIN_KEY),
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{minted}");
    minted["token"].as_str().unwrap().to_owned()
}

fn sdk(relay: &Relay, dir: &std::path::Path, token: &str) -> Client {
    let mut config = ClientConfig::new(dir)
        .backoff(aetherflow_client::Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
        })
        .token(token)
        .quantum(relay.quantum_addr.unwrap())
        .quantum_key(relay.quantum_key());
    config.quantum_handshake_timeout = Duration::from_millis(500);
    Client::open(config).unwrap()
}

fn append(handle: &DocHandle, s: &str) {
    let text = handle.doc().get_or_insert_text("text");
    let mut txn = handle.doc().transact_mut();
    let len = text.len(&txn);
    text.insert(&mut txn, len, s);
}

/// Polls `probe` until it returns `Some`, bounded by [`TIMEOUT`].
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The open (not CLOSED) Quantum sessions of `user`.
async fn quantum_sessions(relay: &Relay, user: &str) -> Vec<Value> {
    let path = format!("/api/v1/sessions?user={user}&transport=quantum");
    let (status, page) = admin(relay, "GET", &path).await;
    assert_eq!(status, 200, "{page}");
    page["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] != "CLOSED")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quantum_client_is_a_session_with_moving_counters_and_an_admin_disconnect_reconnects_it()
{
    let relay = secured(&[]);
    let token = mint(&relay, "ada", &["notes"]).await;
    let dir = tempfile::tempdir().unwrap();
    let client = sdk(&relay, dir.path(), &token);
    let notes = client.doc("notes").await.unwrap();
    let reader_token = mint(&relay, "rex", &["notes"]).await;
    let mut reader =
        YClient::connect(&format!("{}?token={reader_token}", relay.ws_url("notes"))).await;
    append(&notes, "one;");
    reader.wait_for_text("one;").await;

    let first = eventually("ada's quantum session", || async {
        let sessions = quantum_sessions(&relay, "ada").await;
        (sessions.len() == 1 && sessions[0]["messages_in"].as_u64() > Some(1))
            .then(|| sessions[0].clone())
    })
    .await;
    assert_eq!(first["transport"], "quantum");
    assert_eq!(first["documents"], json!(["notes"]));
    assert_eq!(first["state"], "ACTIVE");
    assert!(first["bytes_out"].as_u64() > Some(0), "{first}");
    let id = first["id"].as_str().unwrap().to_owned();

    // Another edit moves the counters.
    append(&notes, "two;");
    reader.wait_for_text("one;two;").await;
    eventually("counters moved", || async {
        let (_, now) = admin(&relay, "GET", &format!("/api/v1/sessions/{id}")).await;
        (now["messages_in"].as_u64() > first["messages_in"].as_u64()
            && now["bytes_in"].as_u64() > first["bytes_in"].as_u64())
        .then_some(())
    })
    .await;

    let (status, closed) = admin(
        &relay,
        "DELETE",
        &format!("/api/v1/sessions/{id}?reason=maintenance"),
    )
    .await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["state"], "CLOSED");
    assert_eq!(closed["close"]["code"], 1008);
    assert!(
        closed["close"]["reason"]
            .as_str()
            .unwrap()
            .contains("maintenance"),
        "{closed}"
    );

    // The SDK reconnects: a new session, and edits flow again.
    eventually("a new session after the disconnect", || async {
        let sessions = quantum_sessions(&relay, "ada").await;
        sessions
            .iter()
            .any(|s| s["id"] != id.as_str())
            .then_some(())
    })
    .await;
    append(&notes, "three;");
    reader.wait_for_text("one;two;three;").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_quantum_client_is_closed_for_its_rate_while_another_keeps_syncing() {
    let relay = Relay::start(&["--message-rate-per-sec", "1", "--message-burst", "40"]);
    let (_endpoint, flood) = raw_connect(relay.quantum_addr.unwrap(), relay.quantum_key()).await;
    flood.send(hello(None)).await.unwrap();
    let subscribe = Envelope::new("notes", Payload::Control(Control::Subscribe));
    flood.send(subscribe.encode()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = ClientConfig::new(dir.path())
        .quantum(relay.quantum_addr.unwrap())
        .quantum_key(relay.quantum_key());
    config.quantum_handshake_timeout = Duration::from_millis(500);
    let calm = Client::open(config).unwrap();
    let notes = calm.doc("notes").await.unwrap();
    let mut reader = YClient::connect(&relay.ws_url("notes")).await;

    let empty_update = Envelope::new(
        "notes",
        Payload::Yjs(Message::Sync(SyncMessage::Update(vec![0, 0]))),
    )
    .encode();
    for _ in 0..100 {
        if flood.send(empty_update.clone()).await.is_err() {
            break;
        }
    }
    let (code, reason) = next_error(&flood, "", TIMEOUT)
        .await
        .expect("closed without a reason");
    assert_eq!(code, 1008);
    assert!(reason.contains("message rate limit exceeded"), "{reason}");

    append(&notes, "still syncing");
    reader.wait_for_text("still syncing").await;
    assert_eq!(
        notes
            .doc()
            .get_or_insert_text("text")
            .get_string(&notes.doc().transact()),
        "still syncing"
    );
}

#[tokio::test]
async fn new_quantum_connections_over_the_address_rate_are_refused_with_a_retry_time() {
    let relay = Relay::start(&["--connect-rate-per-min", "1", "--connect-burst", "2"]);
    let (_e1, first) = raw_connect(relay.quantum_addr.unwrap(), relay.quantum_key()).await;
    let (_e2, second) = raw_connect(relay.quantum_addr.unwrap(), relay.quantum_key()).await;
    for conn in [&first, &second] {
        conn.send(hello(None)).await.unwrap();
        let subscribe = Envelope::new("notes", Payload::Control(Control::Subscribe));
        conn.send(subscribe.encode()).await.unwrap();
    }
    let (_e3, third) = raw_connect(relay.quantum_addr.unwrap(), relay.quantum_key()).await;
    let (code, reason) = next_error(&third, "", TIMEOUT)
        .await
        .expect("refused without a reason");
    assert_eq!(code, 4429);
    assert!(reason.contains("retry in"), "{reason}");
    // The admitted ones still work: the relay greets their subscriptions.
    let greeting = tokio::time::timeout(TIMEOUT, first.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let greeting = Envelope::decode(&greeting, &EnvelopeLimits::default()).unwrap();
    assert_eq!(greeting.doc, "notes");
}

fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_quantum_rtt_and_congestion_window_after_a_client_synced() {
    let relay = secured(&[]);
    let token = mint(&relay, "ada", &["notes"]).await;
    let dir = tempfile::tempdir().unwrap();
    let client = sdk(&relay, dir.path(), &token);
    let notes = client.doc("notes").await.unwrap();
    append(&notes, "measured");
    let reader_token = mint(&relay, "rex", &["notes"]).await;
    let mut reader =
        YClient::connect(&format!("{}?token={reader_token}", relay.ws_url("notes"))).await;
    reader.wait_for_text("measured").await;
    let auth = format!("Bearer {ADMIN_KEY}");
    let text = eventually("quantum series in /metrics", || {
        let auth = auth.clone();
        let addr = relay.addr;
        async move {
            let response = http_raw(addr, "GET", "/metrics", &[("Authorization", &auth)], "").await;
            assert_eq!(response.status, 200, "{}", response.body);
            let rtt = series(&response.body, "aetherflow_quantum_rtt_seconds_count")?;
            (rtt > 0.0).then_some(response.body)
        }
    })
    .await;
    let rtt_sum = series(&text, "aetherflow_quantum_rtt_seconds_sum").unwrap();
    assert!(rtt_sum > 0.0, "{text}");
    let cwnd_count = series(&text, "aetherflow_quantum_congestion_window_bytes_count").unwrap();
    let cwnd_sum = series(&text, "aetherflow_quantum_congestion_window_bytes_sum").unwrap();
    assert!(cwnd_count > 0.0 && cwnd_sum > 0.0, "{text}");
    assert!(
        series(
            &text,
            "aetherflow_received_bytes_total{transport=\"quantum\"}"
        ) > Some(0.0),
        "{text}"
    );
}

#[tokio::test]
async fn a_silent_quantum_session_shows_idle_and_active_again_when_it_speaks() {
    let relay = secured(&["--ping-interval-secs", "1"]);
    let token = mint(&relay, "ada", &["notes"]).await;
    let (_endpoint, conn) = raw_connect(relay.quantum_addr.unwrap(), relay.quantum_key()).await;
    conn.send(hello(Some(&token))).await.unwrap();
    let subscribe = Envelope::new("notes", Payload::Control(Control::Subscribe)).encode();
    conn.send(subscribe.clone()).await.unwrap();
    // Quantum keepalives come only after 10 s of silence, so a second of it shows.
    let idle = eventually("the session turns IDLE", || async {
        let sessions = quantum_sessions(&relay, "ada").await;
        sessions.into_iter().find(|s| s["state"] == "IDLE")
    })
    .await;
    assert_eq!(idle["documents"], json!(["notes"]));
    conn.send(subscribe).await.unwrap();
    eventually("the session is ACTIVE again", || async {
        let sessions = quantum_sessions(&relay, "ada").await;
        sessions
            .iter()
            .any(|s| s["state"] == "ACTIVE")
            .then_some(())
    })
    .await;
}

/// Every Quantum session of the relay, open or closed within the registry's grace period.
async fn all_quantum_sessions(relay: &Relay) -> Vec<Value> {
    let (status, page) = admin(relay, "GET", "/api/v1/sessions?transport=quantum").await;
    assert_eq!(status, 200, "{page}");
    page["sessions"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_quantum_hello_without_a_valid_token_is_closed_at_once_and_never_listed() {
    let relay = secured(&[]);
    for (token, code) in [
        (None, "token_missing"),
        (Some("not.a.jwt"), "token_malformed"),
    ] {
        let (_endpoint, conn) = raw_connect(relay.quantum_addr.unwrap(), relay.quantum_key()).await;
        conn.send(hello(token)).await.unwrap();
        let refusal = next_error(&conn, "", TIMEOUT).await;
        assert_eq!(refusal, Some((4401, code.to_owned())));
        // Closed by the relay: nothing more arrives and the connection ends.
        assert!(next_envelope(&conn, TIMEOUT).await.is_none());
    }
    // A client with a valid token is listed; the refused ones never were.
    let token = mint(&relay, "ada", &["notes"]).await;
    let (_endpoint, conn) = raw_connect(relay.quantum_addr.unwrap(), relay.quantum_key()).await;
    conn.send(hello(Some(&token))).await.unwrap();
    conn.send(subscribe("notes")).await.unwrap();
    next_message(&conn, "notes", TIMEOUT).await;
    let sessions = all_quantum_sessions(&relay).await;
    let users: Vec<&str> = sessions
        .iter()
        .map(|s| s["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["ada"], "{sessions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_over_the_connection_document_limit_is_refused_with_4413_and_the_rest_stay()
{
    let relay = Relay::start(&["--admin-key", ADMIN_KEY, "--quantum-max-documents", "2"]);
    let (_endpoint, conn) = raw_connect(relay.quantum_addr.unwrap(), relay.quantum_key()).await;
    conn.send(hello(None)).await.unwrap();
    for doc in ["one", "two"] {
        conn.send(subscribe(doc)).await.unwrap();
        next_message(&conn, doc, TIMEOUT).await;
    }
    conn.send(subscribe("three")).await.unwrap();
    let (code, reason) = next_error(&conn, "three", TIMEOUT)
        .await
        .expect("connection ended first");
    assert_eq!(code, 4413);
    assert!(reason.contains("too many documents"), "{reason}");
    // Subscribing again to a document it holds is no new document.
    conn.send(subscribe("two")).await.unwrap();
    next_message(&conn, "two", TIMEOUT).await;
    // After leaving one, another fits; the connection was never closed.
    let leave = Envelope::new("one", Payload::Control(Control::Unsubscribe));
    conn.send(leave.encode()).await.unwrap();
    conn.send(subscribe("three")).await.unwrap();
    next_message(&conn, "three", TIMEOUT).await;
    let sessions = all_quantum_sessions(&relay).await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0]["state"], "ACTIVE");

    // The SDK reports the refusal on the handle over the limit; the others keep syncing.
    let dir = tempfile::tempdir().unwrap();
    let mut config = ClientConfig::new(dir.path())
        .quantum(relay.quantum_addr.unwrap())
        .quantum_key(relay.quantum_key());
    config.quantum_handshake_timeout = Duration::from_millis(500);
    let client = Client::open(config).unwrap();
    let first = client.doc("first").await.unwrap();
    wait_state(&first, TIMEOUT, |s| s.synced).await;
    let second = client.doc("second").await.unwrap();
    wait_state(&second, TIMEOUT, |s| s.synced).await;
    let third = client.doc("third").await.unwrap();
    let state = wait_state(&third, TIMEOUT, |s| s.denied.is_some()).await;
    let denied = state.denied.unwrap();
    assert!(denied.starts_with("413 too many documents"), "{denied}");
    let mut reader = YClient::connect(&relay.ws_url("first")).await;
    append(&first, "still syncing");
    reader.wait_for_text("still syncing").await;
}

/// One awareness update: client 1's state `{"n": clock}` at `clock`.
fn presence(clock: u64) -> Vec<u8> {
    let state = format!("{{\"n\":{clock}}}");
    aetherflow_crdt::awareness::encode_update(&[(1, clock, &state)])
}

/// The relay's `aetherflow_documents_loaded`.
async fn documents_loaded(relay: &Relay) -> Option<f64> {
    let response = http_raw(relay.addr, "GET", "/metrics", &[], "").await;
    series(&response.body, "aetherflow_documents_loaded")
}

/// The Quantum session is the only reader of its outgoing queue, which the tasks forwarding
/// room frames fill. It once awaited room in that queue for its own answers (here a register
/// document's `state`), so a queue filled while it waited for a busy store stalled the
/// connection for good. The relay's 8 blocking threads are kept busy loading large documents
/// while the subscription waits for the store and another client floods a document the
/// connection holds with presence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quantum_session_answers_while_forwarded_frames_fill_its_queue() {
    let relay = Relay::start(&["--unload-after-secs", "1", "--message-rate-per-sec", "0"]);
    let big = |i: u64| {
        let doc = yrs::Doc::with_client_id(100 + i);
        let map = doc.get_or_insert_map("m");
        let mut txn = doc.transact_mut();
        for k in 0..100_000u32 {
            yrs::Map::insert(&map, &mut txn, format!("k{k}"), true);
        }
        txn.encode_update_v1()
    };
    for i in 0..8 {
        let mut writer = YClient::connect(&relay.ws_url(&format!("big{i}"))).await;
        writer
            .send_raw(aetherflow_crdt::protocol::encode_sync_update(&big(i)))
            .await;
        writer.barrier().await;
    }
    let (status, body) = http_json(
        relay.addr,
        "POST",
        "/api/v1/docs",
        None,
        Some(json!({"name": "reg", "kind": "lww"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (_e1, victim) = raw_connect(relay.quantum_addr.unwrap(), relay.quantum_key()).await;
    let (_e2, flooder) = raw_connect(relay.quantum_addr.unwrap(), relay.quantum_key()).await;
    for conn in [&victim, &flooder] {
        conn.send(hello(None)).await.unwrap();
        conn.send(subscribe("hot")).await.unwrap();
        next_message(conn, "hot", TIMEOUT).await;
    }
    // Only "hot" stays loaded.
    eventually("the large documents unloaded", || async {
        (documents_loaded(&relay).await? <= 1.0).then_some(())
    })
    .await;
    // Eight loads at once take every blocking thread.
    let loads: Vec<_> = (0..8)
        .map(|i| {
            let url = relay.ws_url(&format!("big{i}"));
            tokio::spawn(async move { YClient::connect(&url).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    victim.send(subscribe("reg")).await.unwrap();
    for clock in 1..=1500 {
        let message = Message::Awareness(presence(clock));
        let envelope = Envelope::new("hot", Payload::Yjs(message)).encode();
        flooder.send(envelope).await.unwrap();
    }
    let state = tokio::time::timeout(TIMEOUT, async {
        loop {
            let envelope = next_envelope(&victim, TIMEOUT).await?;
            if envelope.doc == "reg" {
                return Some(envelope.payload);
            }
        }
    })
    .await
    .expect("the session stalled: no answer to the subscription");
    assert!(
        matches!(&state, Some(Payload::Control(Control::Event { name, .. })) if name == "state"),
        "{state:?}"
    );
    for load in loads {
        load.await.unwrap();
    }
}

#[tokio::test]
async fn a_quantum_client_that_stops_acknowledging_is_closed_while_a_send_waits() {
    use aetherflow_client::testing::envelopes::{next_message, subscribe};

    let relay = Relay::start(&["--ping-interval-secs", "1"]);
    let addr = relay.quantum_addr.unwrap();
    let key = relay.quantum_key();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    // The client runs on a runtime of its own thread, subscribes, then that thread blocks: its
    // endpoint acknowledges nothing more, as a frozen or vanished client does.
    let frozen = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let kept = runtime.block_on(async {
            let (endpoint, conn) = raw_connect(addr, key).await;
            conn.send(hello(None)).await.unwrap();
            conn.send(subscribe("frozen")).await.unwrap();
            next_message(&conn, "frozen", TIMEOUT).await;
            (endpoint, conn)
        });
        ready_tx.send(()).unwrap();
        let _ = release_rx.recv();
        drop(kept);
    });
    ready_rx
        .recv_timeout(TIMEOUT)
        .expect("the client subscribed");

    // 12 MiB broadcast to it, one update at a time so that each is a message of its own: far
    // more than the relay may hold unacknowledged (4 MiB).
    let mut writer = YClient::connect(&relay.ws_url("frozen")).await;
    let chunk = "z".repeat(256 * 1024);
    for _ in 0..48 {
        writer.append(&chunk).await;
        writer.wait_for_echo().await;
    }
    // The session is closed for it, although its send never completes.
    relay
        .wait_for_log("connection not reading: no send progress; closing")
        .await;
    release_tx.send(()).unwrap();
    frozen.join().unwrap();
}
