//! The native SDK (`aetherflow-client`) against the real relay binary: sync between SDK
//! clients, partitions, relay restarts, a relay restored from an old backup, offline replicas,
//! and a client restarted with pending offline edits.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aetherflow_client::testing::{append_text, assert_exactly_once, text, wait_state, wait_text};
use aetherflow_client::{
    Backoff, Client, ClientConfig, Connection, DocHandle, Link, Transport, TransportError,
    TransportKind, WebSocketTransport,
};
use common::{Relay, TIMEOUT, read_text};
use futures_util::future::BoxFuture;
use serde_json::json;

/// A WebSocket transport whose relay address the test can change, since a restarted relay
/// listens on a new port. Points at a closed port until told otherwise.
#[derive(Clone)]
struct MovableRelay(Arc<Mutex<String>>);

impl MovableRelay {
    fn nowhere() -> MovableRelay {
        // Port 1 on loopback refuses connections: the client is offline.
        MovableRelay(Arc::new(Mutex::new("ws://127.0.0.1:1".into())))
    }

    fn to(relay: &Relay) -> MovableRelay {
        let movable = MovableRelay::nowhere();
        movable.point_at(relay);
        movable
    }

    fn point_at(&self, relay: &Relay) {
        *self.0.lock().unwrap() = format!("ws://{}", relay.addr);
    }
}

impl Transport for MovableRelay {
    fn connect<'a>(&'a self, doc: &'a str) -> BoxFuture<'a, Result<Link, TransportError>> {
        let base = self.0.lock().unwrap().clone();
        Box::pin(async move { WebSocketTransport::new(base, None).connect(doc).await })
    }
}

fn config(dir: &std::path::Path) -> ClientConfig {
    ClientConfig::new(dir).backoff(Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
    })
}

fn client(dir: &std::path::Path, transport: &MovableRelay) -> Client {
    Client::with_transport(config(dir), Arc::new(transport.clone())).unwrap()
}

/// Online, synced, and the relay has acknowledged every local edit.
async fn wait_settled(handle: &DocHandle) {
    wait_state(handle, TIMEOUT, |s| {
        s.synced && s.pending == 0 && matches!(s.connection, Connection::Online(_))
    })
    .await;
}

async fn wait_offline(handle: &DocHandle) {
    wait_state(handle, TIMEOUT, |s| {
        !matches!(s.connection, Connection::Online(_))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sdk_clients_sync_through_the_relay_which_stores_the_result() {
    let relay = Relay::start(&[]);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let url = format!("ws://{}", relay.addr);
    let a = Client::open(config(dir_a.path()).websocket(&url)).unwrap();
    let b = Client::open(config(dir_b.path()).websocket(&url)).unwrap();
    let doc_a = a.doc("shared").await.unwrap();
    let doc_b = b.doc("shared").await.unwrap();
    wait_settled(&doc_a).await;
    wait_settled(&doc_b).await;
    assert_eq!(
        doc_a.state().borrow().connection,
        Connection::Online(TransportKind::WebSocket)
    );

    append_text(&doc_a, "text", "from A;");
    wait_text(&doc_b, "text", TIMEOUT, |t| t == "from A;").await;
    append_text(&doc_b, "text", "from B;");
    wait_text(&doc_a, "text", TIMEOUT, |t| t == "from A;from B;").await;
    wait_settled(&doc_a).await;
    wait_settled(&doc_b).await;
    assert_eq!(read_text(&relay, "shared").await, "from A;from B;");

    // Presence goes through the relay too.
    doc_a.set_presence(&json!({"name": "alice"})).unwrap();
    let mut changes = doc_b.changes();
    while !doc_b.presence().values().any(|p| p["name"] == "alice") {
        tokio::time::timeout(TIMEOUT, changes.next()).await.unwrap();
    }
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_and_heal_across_a_relay_restart() {
    let mut relay = Relay::start(&[]);
    let data = relay.take_temp().unwrap();
    let transport = MovableRelay::to(&relay);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (
        client(dir_a.path(), &transport),
        client(dir_b.path(), &transport),
    );
    let (doc_a, doc_b) = (a.doc("p").await.unwrap(), b.doc("p").await.unwrap());
    append_text(&doc_a, "text", "before;");
    wait_text(&doc_b, "text", TIMEOUT, |t| t == "before;").await;

    // The relay goes away; both sides keep editing.
    relay.signal_and_wait("TERM");
    wait_offline(&doc_a).await;
    wait_offline(&doc_b).await;
    append_text(&doc_a, "text", "A offline;");
    append_text(&doc_b, "text", "B offline;");
    assert_eq!(doc_a.state().borrow().pending, 1);
    assert_eq!(doc_b.state().borrow().pending, 1);

    // It comes back (on a new port) with its data: everyone converges.
    let relay = Relay::start_in(data.path(), &[]);
    transport.point_at(&relay);
    let pieces = ["before;", "A offline;", "B offline;"];
    let done = |t: &str| pieces.iter().all(|p| t.contains(p));
    let text_a = wait_text(&doc_a, "text", TIMEOUT, done).await;
    let text_b = wait_text(&doc_b, "text", TIMEOUT, done).await;
    assert_eq!(text_a, text_b);
    assert_exactly_once(&text_a, &pieces);
    wait_settled(&doc_a).await;
    wait_settled(&doc_b).await;
    assert_eq!(read_text(&relay, "p").await, text_a);
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_restored_from_an_old_backup_regains_newer_state_from_clients() {
    let mut relay = Relay::start(&[]);
    let data = relay.take_temp().unwrap();
    let transport = MovableRelay::to(&relay);
    let dir = tempfile::tempdir().unwrap();
    let c = client(dir.path(), &transport);
    let doc = c.doc("restore").await.unwrap();
    append_text(&doc, "text", "old;");
    wait_settled(&doc).await;

    // Back up the relay's data dir, then write more after the backup.
    relay.signal_and_wait("TERM");
    let backup = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(data.path()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), backup.path().join(entry.file_name())).unwrap();
    }
    let relay = Relay::start_in(data.path(), &[]);
    transport.point_at(&relay);
    append_text(&doc, "text", "new;");
    wait_settled(&doc).await;
    assert_eq!(read_text(&relay, "restore").await, "old;new;");

    // Disaster: the relay is restored from the backup, which lacks "new;".
    let mut relay = relay;
    relay.signal_and_wait("TERM");
    let restored = Relay::start_in(backup.path(), &[]);
    assert_eq!(read_text(&restored, "restore").await, "old;");
    transport.point_at(&restored);
    // The client reconnects, sees the relay's state vector and sends what it lacks.
    wait_state(&doc, TIMEOUT, |s| s.synced).await;
    wait_settled(&doc).await;
    assert_eq!(read_text(&restored, "restore").await, "old;new;");
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_edit_offline_then_merge_through_the_relay() {
    let transport = MovableRelay::nowhere();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let clients: Vec<_> = dirs.iter().map(|d| client(d.path(), &transport)).collect();
    let mut docs = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let doc = c.doc("three").await.unwrap();
        append_text(&doc, "text", &format!("replica {i} line 1;"));
        append_text(&doc, "text", &format!("replica {i} line 2;"));
        assert_eq!(doc.state().borrow().pending, 2);
        docs.push(doc);
    }
    let relay = Relay::start(&[]);
    transport.point_at(&relay);
    let pieces: Vec<String> = (0..3)
        .flat_map(|i| {
            [
                format!("replica {i} line 1;"),
                format!("replica {i} line 2;"),
            ]
        })
        .collect();
    let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let mut texts = Vec::new();
    for doc in &docs {
        texts.push(
            wait_text(doc, "text", TIMEOUT, |t| {
                pieces.iter().all(|p| t.contains(p))
            })
            .await,
        );
        wait_settled(doc).await;
    }
    assert!(texts.iter().all(|t| *t == texts[0]), "{texts:?}");
    assert_exactly_once(&texts[0], &pieces);
    // Each replica's own lines stay in order.
    for i in 0..3 {
        let one = texts[0].find(&format!("replica {i} line 1;")).unwrap();
        let two = texts[0].find(&format!("replica {i} line 2;")).unwrap();
        assert!(one < two, "{}", texts[0]);
    }
    assert_eq!(read_text(&relay, "three").await, texts[0]);
    for c in clients {
        c.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_restarted_with_pending_offline_edits_delivers_them() {
    let dir = tempfile::tempdir().unwrap();
    let transport = MovableRelay::nowhere();
    let c = client(dir.path(), &transport);
    let doc = c.doc("restart").await.unwrap();
    append_text(&doc, "text", "typed offline, ");
    append_text(&doc, "text", "then the app quit");
    assert_eq!(doc.state().borrow().pending, 2);
    c.close().await.unwrap();
    drop(doc);

    let relay = Relay::start(&[]);
    let reopened =
        Client::open(config(dir.path()).websocket(format!("ws://{}", relay.addr))).unwrap();
    let doc = reopened.doc("restart").await.unwrap();
    assert_eq!(text(&doc, "text"), "typed offline, then the app quit");
    wait_settled(&doc).await;
    assert_eq!(
        read_text(&relay, "restart").await,
        "typed offline, then the app quit"
    );
    reopened.close().await.unwrap();

    // The acknowledgement was stored: reopened offline, nothing is pending any more.
    let offline = Client::open(config(dir.path())).unwrap();
    let doc = offline.doc("restart").await.unwrap();
    assert_eq!(doc.state().borrow().pending, 0);
    assert_eq!(text(&doc, "text"), "typed offline, then the app quit");
    offline.close().await.unwrap();
}

const SECRET: &str = "sdk-secret";

fn token(secret: &str, docs: &[&str], perm: aetherflow_server::auth::Permission) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = aetherflow_server::auth::Claims {
        sub: "ada".into(),
        docs: docs.iter().map(|d| d.to_string()).collect(),
        perm,
        exp,
    };
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_valid_token_the_sdk_syncs_and_with_a_bad_one_it_reports_the_refusal() {
    use aetherflow_server::auth::Permission;
    let relay = Relay::start(&["--jwt-secret", SECRET]);
    let url = format!("ws://{}", relay.addr);
    let good = token(SECRET, &["plans"], Permission::Write);
    let dir = tempfile::tempdir().unwrap();
    let c = Client::open(config(dir.path()).websocket(&url).token(&good)).unwrap();
    let doc = c.doc("plans").await.unwrap();
    append_text(&doc, "text", "authorised");
    wait_settled(&doc).await;
    let read_url = format!("{}?token={good}", relay.ws_url("plans"));
    assert_eq!(common::read_text_with(&read_url).await, "authorised");
    c.close().await.unwrap();

    let forged = token("not-the-secret", &["plans"], Permission::Write);
    let dir = tempfile::tempdir().unwrap();
    let c = Client::open(config(dir.path()).websocket(&url).token(forged)).unwrap();
    let doc = c.doc("plans").await.unwrap();
    append_text(&doc, "text", "forged");
    let state = wait_state(&doc, TIMEOUT, |s| s.denied.is_some()).await;
    assert_eq!(state.denied.as_deref(), Some("401 token_bad_signature"));
    assert_eq!(state.pending, 1, "a refused edit stays pending locally");
    c.close().await.unwrap();

    // A read-only token: the relay's permission-denied message is reported, the edit stays
    // pending, and the relay's text is unchanged.
    let read_only = token(SECRET, &["plans"], Permission::Read);
    let dir = tempfile::tempdir().unwrap();
    let c = Client::open(config(dir.path()).websocket(&url).token(read_only)).unwrap();
    let doc = c.doc("plans").await.unwrap();
    wait_text(&doc, "text", TIMEOUT, |t| t == "authorised").await;
    append_text(&doc, "text", " by a reader");
    let state = wait_state(&doc, TIMEOUT, |s| s.denied.is_some()).await;
    assert!(state.denied.unwrap().contains("read-only"));
    assert_eq!(doc.state().borrow().pending, 1);
    assert_eq!(common::read_text_with(&read_url).await, "authorised");
    c.close().await.unwrap();
}
