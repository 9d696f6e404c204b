//! The SDK's register API against the real relay binary: LWW over Quantum and over the
//! WebSocket fallback (two clients converge to the highest stamp), a manual conflict between
//! two clients resolved by one and seen by both, events arriving live, an offline LWW write
//! kept across a client restart and delivered when the relay comes up, an offline manual write
//! on a stale version becoming a conflict, and a read-only token refused with a typed error.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use aetherflow_client::{
    Client, ClientConfig, Connection, RegisterError, RegisterEvent, RegisterHandle, RegisterState,
    TransportKind, WriteOutcome,
};
use aetherflow_server::auth::Permission;
use common::api_client::{SECRET, token};
use common::{Relay, TIMEOUT, http_json};
use serde_json::{Value, json};

fn config(dir: &std::path::Path) -> ClientConfig {
    let mut config = ClientConfig::new(dir).backoff(aetherflow_client::Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
    });
    config.quantum_handshake_timeout = Duration::from_millis(500);
    config
}

fn quantum(relay: &Relay, dir: &std::path::Path) -> Client {
    Client::open(
        config(dir)
            .quantum(relay.quantum_addr.unwrap())
            .quantum_key(relay.quantum_key()),
    )
    .unwrap()
}

async fn create(relay: &Relay, name: &str, kind: &str, bearer: Option<&str>) {
    let body = json!({ "name": name, "kind": kind });
    let (status, created) = http_json(relay.addr, "POST", "/api/v1/docs", bearer, Some(body)).await;
    assert_eq!(status, 201, "{created}");
}

async fn relay_register(relay: &Relay, doc: &str, bearer: Option<&str>) -> Value {
    let path = format!("/api/v1/docs/{doc}/register");
    let (status, register) = http_json(relay.addr, "GET", &path, bearer, None).await;
    assert_eq!(status, 200, "{register}");
    register
}

async fn wait_state(
    handle: &RegisterHandle,
    mut condition: impl FnMut(&RegisterState) -> bool,
) -> RegisterState {
    let mut state = handle.state();
    let waited = tokio::time::timeout(TIMEOUT, state.wait_for(|s| condition(s))).await;
    waited
        .unwrap_or_else(|_| panic!("state never matched: {:?}", handle.state().borrow()))
        .unwrap()
        .clone()
}

async fn wait_online(handle: &RegisterHandle, kind: TransportKind) {
    wait_state(handle, |s| s.connection == Connection::Online(kind)).await;
}

/// Waits on the handle's events (no polling) until `done` holds.
async fn wait_until(handle: &RegisterHandle, what: &str, mut done: impl FnMut() -> bool) {
    let mut events = handle.events();
    while !done() {
        tokio::time::timeout(TIMEOUT, events.next())
            .await
            .unwrap_or_else(|_| panic!("never happened: {what}; value {:?}", handle.value()));
    }
}

async fn wait_value(handle: &RegisterHandle, expected: &Value) {
    let what = format!("value {expected}");
    wait_until(handle, &what, || handle.value().as_ref() == Some(expected)).await;
}

/// Two clients write at once; both end with the value of the highest stamp, which is the
/// relay's too, and each saw the other's write arrive as an event.
async fn two_writers_converge(relay: &Relay, a: &RegisterHandle, b: &RegisterHandle) {
    let mut b_events = b.events();
    let first = a.write(json!("from a")).unwrap();
    assert_eq!(
        first.outcome().await.unwrap(),
        WriteOutcome::Applied { revision: None }
    );
    // b hears of it live.
    loop {
        let event = tokio::time::timeout(TIMEOUT, b_events.next())
            .await
            .unwrap();
        if event
            == Some(RegisterEvent::Changed {
                value: Some(json!("from a")),
            })
        {
            break;
        }
    }
    let (ta, tb) = (
        a.write(json!("a again")).unwrap(),
        b.write(json!("b")).unwrap(),
    );
    let (oa, ob) = (ta.outcome().await.unwrap(), tb.outcome().await.unwrap());
    assert!(
        matches!(
            oa,
            WriteOutcome::Applied { .. } | WriteOutcome::Stale { .. }
        ),
        "{oa:?}"
    );
    assert!(
        matches!(
            ob,
            WriteOutcome::Applied { .. } | WriteOutcome::Stale { .. }
        ),
        "{ob:?}"
    );
    let stored = relay_register(relay, a.name(), None).await;
    wait_value(a, &stored["value"]).await;
    wait_value(b, &stored["value"]).await;
    let winner = serde_json::to_value(a.stamp().unwrap()).unwrap();
    assert_eq!(stored["stamp"], winner);
    assert_eq!(
        serde_json::to_value(b.stamp().unwrap()).unwrap(),
        winner,
        "both clients hold the highest stamp"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lww_over_quantum_two_clients_converge_to_the_highest_stamp() {
    let relay = Relay::start(&[]);
    create(&relay, "title", "lww", None).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (quantum(&relay, dir_a.path()), quantum(&relay, dir_b.path()));
    assert_ne!(a.client_id(), b.client_id());
    let (ra, rb) = (
        a.register("title").await.unwrap(),
        b.register("title").await.unwrap(),
    );
    wait_online(&ra, TransportKind::Quantum).await;
    wait_online(&rb, TransportKind::Quantum).await;
    assert_eq!(ra.kind(), Some(aetherflow_crdt::register::Kind::Lww));
    two_writers_converge(&relay, &ra, &rb).await;
    // The SDK stamps writes with its client id.
    let writer = ra.stamp().unwrap().writer;
    assert!(
        writer == a.client_id() || writer == b.client_id(),
        "{writer}"
    );

    // A Yjs handle on the register document is refused, not left hanging.
    let doc = a.doc("title").await.unwrap();
    let mut state = doc.state();
    let denied = tokio::time::timeout(TIMEOUT, state.wait_for(|s| s.denied.is_some()))
        .await
        .unwrap()
        .unwrap()
        .denied
        .clone()
        .unwrap();
    assert!(denied.starts_with("409"), "{denied}");
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lww_over_the_websocket_fallback_converges_too() {
    let relay = Relay::start(&["--quantum-addr", "off"]);
    create(&relay, "title", "lww", None).await;
    // Nothing answers on this UDP port: the SDK falls back to the live channel.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let open = |dir: &std::path::Path| {
        let config = config(dir)
            .quantum(silent.local_addr().unwrap())
            .quantum_key([1; 32])
            .websocket(format!("ws://{}", relay.addr));
        Client::open(config).unwrap()
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(dir_a.path()), open(dir_b.path()));
    let (ra, rb) = (
        a.register("title").await.unwrap(),
        b.register("title").await.unwrap(),
    );
    wait_online(&ra, TransportKind::WebSocket).await;
    wait_online(&rb, TransportKind::WebSocket).await;
    two_writers_converge(&relay, &ra, &rb).await;
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_conflict_between_two_clients_is_resolved_by_one_and_seen_by_both() {
    let relay = Relay::start(&[]);
    create(&relay, "notes", "manual", None).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (quantum(&relay, dir_a.path()), quantum(&relay, dir_b.path()));
    let (ra, rb) = (
        a.register("notes").await.unwrap(),
        b.register("notes").await.unwrap(),
    );
    wait_online(&ra, TransportKind::Quantum).await;
    wait_online(&rb, TransportKind::Quantum).await;
    let first = ra.write_based_on(json!("v1"), 0).unwrap();
    assert!(matches!(
        first.outcome().await.unwrap(),
        WriteOutcome::Applied { revision: Some(r) } if r.version == 1
    ));
    wait_value(&rb, &json!("v1")).await;

    // Both edit version 1; a is first, so b's write becomes a conflict both see.
    let mut a_events = ra.events();
    let ours = ra.write_based_on(json!("a's"), 1).unwrap();
    assert!(matches!(
        ours.outcome().await.unwrap(),
        WriteOutcome::Applied { .. }
    ));
    let theirs = rb.write_based_on(json!("b's"), 1).unwrap();
    let WriteOutcome::Conflict { conflict } = theirs.outcome().await.unwrap() else {
        panic!("b's write on version 1 should conflict");
    };
    assert_eq!(conflict.proposed.value, json!("b's"));
    loop {
        match tokio::time::timeout(TIMEOUT, a_events.next())
            .await
            .unwrap()
        {
            Some(RegisterEvent::ConflictDetected(seen)) => {
                assert_eq!(seen.id, conflict.id);
                break;
            }
            Some(_) => {}
            None => panic!("events ended"),
        }
    }
    assert_eq!(ra.conflicts(), vec![conflict.clone()]);
    assert_eq!(rb.conflicts(), vec![conflict.clone()]);
    assert_eq!(rb.value(), Some(json!("a's")));

    let mut b_events = rb.events();
    let resolved = ra.resolve(conflict.id, json!("merged")).unwrap();
    assert!(matches!(
        resolved.outcome().await.unwrap(),
        WriteOutcome::Applied { revision: Some(r) } if r.value == json!("merged")
    ));
    loop {
        match tokio::time::timeout(TIMEOUT, b_events.next())
            .await
            .unwrap()
        {
            Some(RegisterEvent::ConflictResolved {
                conflict: id,
                revision,
            }) => {
                assert_eq!(id, conflict.id);
                assert_eq!(revision.value, json!("merged"));
                break;
            }
            Some(_) => {}
            None => panic!("events ended"),
        }
    }
    wait_value(&rb, &json!("merged")).await;
    assert!(ra.conflicts().is_empty() && rb.conflicts().is_empty());
    assert_eq!(
        relay_register(&relay, "notes", None).await["value"],
        "merged"
    );
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_lww_write_survives_a_client_restart_and_reaches_the_relay_when_it_is_up() {
    let mut relay = Relay::start(&[]);
    let data = relay.take_temp().unwrap();
    let udp = relay.quantum_addr.unwrap();
    let key = relay.quantum_key();
    create(&relay, "title", "lww", None).await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(config(dir.path()).quantum(udp).quantum_key(key)).unwrap();
    let title = client.register("title").await.unwrap();
    wait_online(&title, TransportKind::Quantum).await;

    relay.signal_and_wait("TERM");
    wait_state(&title, |s| !matches!(s.connection, Connection::Online(_))).await;
    let ticket = title.write(json!("written offline")).unwrap();
    assert_eq!(title.value(), Some(json!("written offline")));
    assert_eq!(title.pending(), 1);
    client.close().await.unwrap();
    assert_eq!(ticket.outcome().await, Err(RegisterError::Closed));

    // Reopened while the relay is still down: the write is still there and still pending.
    let client = Client::open(config(dir.path()).quantum(udp).quantum_key(key)).unwrap();
    let title = client.register("title").await.unwrap();
    assert_eq!(title.value(), Some(json!("written offline")));
    assert_eq!(title.kind(), Some(aetherflow_crdt::register::Kind::Lww));
    assert_eq!(title.pending(), 1);

    let udp_arg = udp.to_string();
    let relay = Relay::start_in(data.path(), &["--quantum-addr", &udp_arg]);
    wait_state(&title, |s| {
        s.pending == 0 && s.connection == Connection::Online(TransportKind::Quantum)
    })
    .await;
    assert_eq!(
        relay_register(&relay, "title", None).await["value"],
        "written offline"
    );
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_manual_write_on_a_stale_version_becomes_a_conflict_on_reconnect() {
    let relay = Relay::start(&["--quantum-addr", "off"]);
    create(&relay, "notes", "manual", None).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ws = format!("ws://{}", relay.addr);
    let b = Client::open(config(dir_b.path()).websocket(ws.clone())).unwrap();
    let rb = b.register("notes").await.unwrap();
    wait_online(&rb, TransportKind::WebSocket).await;
    let v1 = rb.write_based_on(json!("v1"), 0).unwrap();
    assert!(matches!(
        v1.outcome().await,
        Ok(WriteOutcome::Applied { .. })
    ));

    // a learns version 1, then goes offline (its next client has no relay) and edits it.
    let a = Client::open(config(dir_a.path()).websocket(ws.clone())).unwrap();
    let ra = a.register("notes").await.unwrap();
    wait_value(&ra, &json!("v1")).await;
    a.close().await.unwrap();
    let a = Client::open(config(dir_a.path())).unwrap();
    let ra = a.register("notes").await.unwrap();
    let base = ra.revision().unwrap().version;
    ra.write_based_on(json!("a's offline edit"), base).unwrap();
    a.close().await.unwrap();
    // Meanwhile b moves the register on.
    let v2 = rb.write_based_on(json!("b's v2"), 1).unwrap();
    assert!(matches!(
        v2.outcome().await,
        Ok(WriteOutcome::Applied { .. })
    ));

    // a is back: its write goes out with base version 1 and becomes a conflict record.
    let a = Client::open(config(dir_a.path()).websocket(ws)).unwrap();
    let ra = a.register("notes").await.unwrap();
    wait_until(&ra, "the conflict", || ra.conflicts().len() == 1).await;
    let conflict = &ra.conflicts()[0];
    assert_eq!(conflict.proposed.value, json!("a's offline edit"));
    assert_eq!(conflict.base_version, 1);
    wait_until(&rb, "b sees it", || rb.conflicts().len() == 1).await;
    let stored = relay_register(&relay, "notes", None).await;
    assert_eq!(stored["value"], "b's v2");
    assert_eq!(stored["open_conflicts"], 1);
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_token_is_refused_with_the_typed_error_and_nothing_is_stored() {
    let relay = Relay::start(&["--jwt-secret", SECRET]);
    let writer = token("ann", &["title"], Permission::Write);
    create(&relay, "title", "lww", Some(&writer)).await;
    let reader = token("rex", &["title"], Permission::Read);
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(
        config(dir.path())
            .quantum(relay.quantum_addr.unwrap())
            .quantum_key(relay.quantum_key())
            .token(reader.clone()),
    )
    .unwrap();
    let title = client.register("title").await.unwrap();
    wait_online(&title, TransportKind::Quantum).await;
    let mut events = title.events();
    let ticket = title.write(json!("mine")).unwrap();
    let refused = ticket.outcome().await.unwrap_err();
    assert!(
        matches!(&refused, RegisterError::ReadOnly { reason } if reason.contains("read-only")),
        "{refused:?}"
    );
    loop {
        match tokio::time::timeout(TIMEOUT, events.next()).await.unwrap() {
            Some(RegisterEvent::Refused(error)) => {
                assert_eq!(error, refused);
                break;
            }
            Some(_) => {}
            None => panic!("events ended"),
        }
    }
    // The refused write is dropped: the value falls back to the relay's (none).
    assert_eq!(title.value(), None);
    assert_eq!(title.pending(), 0);
    assert_eq!(
        relay_register(&relay, "title", Some(&reader)).await["value"],
        Value::Null
    );
    // A manual write on the LWW register is refused at once, without the relay.
    assert!(matches!(
        title.write_based_on(json!(1), 0),
        Err(RegisterError::WrongKind { .. })
    ));
    client.close().await.unwrap();
}

/// The next event matching `wanted`, skipping others.
async fn next_matching(
    events: &mut aetherflow_client::RegisterEvents,
    mut wanted: impl FnMut(&RegisterEvent) -> bool,
) -> RegisterEvent {
    loop {
        let event = tokio::time::timeout(TIMEOUT, events.next())
            .await
            .expect("no such event in time")
            .expect("events ended");
        if wanted(&event) {
            return event;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_events_reach_the_sdk_and_a_lock_held_by_another_refuses_its_writes() {
    let relay = Relay::start(&[]);
    create(&relay, "notes", "manual", None).await;
    let dir = tempfile::tempdir().unwrap();
    let client = quantum(&relay, dir.path());
    let notes = client.register("notes").await.unwrap();
    wait_online(&notes, TransportKind::Quantum).await;
    let mut events = notes.events();
    let lock = "/api/v1/docs/notes/lock";
    let body = json!({ "ttl_ms": 60_000, "holder": "ann" });
    let (status, taken) = http_json(relay.addr, "POST", lock, None, Some(body)).await;
    assert_eq!(status, 200, "{taken}");
    let acquired = next_matching(&mut events, |e| matches!(e, RegisterEvent::Lock(_))).await;
    assert_eq!(
        acquired,
        RegisterEvent::Lock(aetherflow_client::LockEvent::Acquired {
            holder: "ann".into(),
            expires_ms: taken["expires_ms"].as_u64().unwrap(),
        })
    );
    assert_eq!(notes.lock().unwrap()["holder"], "ann");

    // This client writes as the token's subject ("anonymous" on an open relay), not ann.
    let refused = notes
        .write_based_on(json!("mine"), 0)
        .unwrap()
        .outcome()
        .await;
    assert!(
        matches!(refused, Err(RegisterError::Locked { .. })),
        "{refused:?}"
    );
    assert_eq!(
        relay_register(&relay, "notes", None).await["value"],
        Value::Null
    );

    let path = format!("{lock}?holder=ann");
    let (status, _) = common::http_request(relay.addr, "DELETE", &path, None, None).await;
    assert_eq!(status, 204);
    next_matching(&mut events, |e| {
        matches!(e, RegisterEvent::Lock(aetherflow_client::LockEvent::Released { holder }) if holder == "ann")
    })
    .await;
    assert_eq!(notes.lock(), None);
    let allowed = notes
        .write_based_on(json!("mine"), 0)
        .unwrap()
        .outcome()
        .await;
    assert!(
        matches!(allowed, Ok(WriteOutcome::Applied { .. })),
        "{allowed:?}"
    );
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_opened_before_it_exists_is_denied_and_syncs_once_created() {
    let relay = Relay::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let client = quantum(&relay, dir.path());
    let title = client.register("later").await.unwrap();
    let denied = wait_state(&title, |s| s.denied.is_some())
        .await
        .denied
        .unwrap();
    assert!(denied.starts_with("409"), "{denied}");
    // The refused subscription did not claim the name for a Yjs document.
    create(&relay, "later", "lww", None).await;
    wait_online(&title, TransportKind::Quantum).await;
    let written = title.write(json!("now")).unwrap().outcome().await;
    assert!(
        matches!(written, Ok(WriteOutcome::Applied { .. })),
        "{written:?}"
    );
    assert_eq!(relay_register(&relay, "later", None).await["value"], "now");
    client.close().await.unwrap();
}
