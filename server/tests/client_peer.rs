//! Peer-assisted sync with the real relay binary: two SDK replicas sync directly over Quantum
//! while the relay is down, then the relay comes back and every replica, including a fresh
//! client that only talks to the relay, converges with each edit exactly once.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aetherflow_client::testing::{append_text, assert_exactly_once, wait_state, wait_text};
use aetherflow_client::{
    Backoff, Client, ClientConfig, Connection, Link, QuantumTransport, SyncState, Transport,
    TransportError, TransportKind,
};
use common::{Relay, TIMEOUT, read_text};
use futures_util::future::BoxFuture;

const SECRET: &str = "office LAN secret";

/// A Quantum transport to a relay that is down until the test starts one (a relay started on
/// port 0 gets its address only then).
#[derive(Clone, Default)]
struct RelayWhenUp(Arc<Mutex<Option<Arc<QuantumTransport>>>>);

impl RelayWhenUp {
    fn point_at(&self, relay: &Relay) {
        let addr = relay.quantum_addr.unwrap();
        let transport =
            QuantumTransport::new(addr, relay.quantum_key(), None, Duration::from_millis(500));
        *self.0.lock().unwrap() = Some(Arc::new(transport));
    }
}

impl Transport for RelayWhenUp {
    fn connect<'a>(&'a self, doc: &'a str) -> BoxFuture<'a, Result<Link, TransportError>> {
        let transport = self.0.lock().unwrap().clone();
        Box::pin(async move {
            match transport {
                Some(transport) => transport.connect(doc).await,
                None => Err(TransportError::Connect("the relay is down".into())),
            }
        })
    }
}

fn config(dir: &std::path::Path) -> ClientConfig {
    let mut config = ClientConfig::new(dir).peer_secret(SECRET).backoff(Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
    });
    config.quantum_handshake_timeout = Duration::from_millis(500);
    config
}

#[tokio::test]
async fn replicas_sync_directly_while_the_relay_is_down_and_everyone_converges_when_it_is_back() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let relay_a = RelayWhenUp::default();
    let relay_b = RelayWhenUp::default();
    let a = Client::with_transport(config(dirs[0].path()), Arc::new(relay_a.clone())).unwrap();
    let a_addr = a
        .listen("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .local_addr();
    let b = Client::with_transport(
        config(dirs[1].path()).peer(a_addr),
        Arc::new(relay_b.clone()),
    )
    .unwrap();
    let doc_a = a.doc("plan").await.unwrap();
    let doc_b = b.doc("plan").await.unwrap();

    // The relay is down: A and B edit and sync with each other directly.
    append_text(&doc_a, "text", "A offline. ");
    append_text(&doc_b, "text", "B offline. ");
    let offline = ["A offline. ", "B offline. "];
    let at_a = wait_text(&doc_a, "text", TIMEOUT, |t| {
        offline.iter().all(|p| t.contains(p))
    })
    .await;
    assert_eq!(
        wait_text(&doc_b, "text", TIMEOUT, |t| offline
            .iter()
            .all(|p| t.contains(p)))
        .await,
        at_a
    );
    let state = wait_state(&doc_b, TIMEOUT, |s| {
        s.peers.get(&a_addr).is_some_and(|p| p.synced)
    })
    .await;
    assert_ne!(state.connection, Connection::Online(TransportKind::Quantum));
    assert!(doc_a.state().borrow().pending > 0 && state.pending > 0);

    // The relay comes back.
    let relay = Relay::start(&[]);
    relay_a.point_at(&relay);
    relay_b.point_at(&relay);
    let settled = |s: &SyncState| {
        s.synced && s.pending == 0 && s.connection == Connection::Online(TransportKind::Quantum)
    };
    wait_state(&doc_a, TIMEOUT, settled).await;
    wait_state(&doc_b, TIMEOUT, settled).await;
    // An edit made with everything up travels both routes and still counts once.
    append_text(&doc_b, "text", "B online. ");
    let all = ["A offline. ", "B offline. ", "B online. "];

    // A fresh client that only knows the relay.
    let c = Client::open(
        config(dirs[2].path())
            .quantum(relay.quantum_addr.unwrap())
            .quantum_key(relay.quantum_key()),
    )
    .unwrap();
    let doc_c = c.doc("plan").await.unwrap();
    let at_c = wait_text(&doc_c, "text", TIMEOUT, |t| {
        all.iter().all(|p| t.contains(p))
    })
    .await;
    assert_exactly_once(&at_c, &all);
    assert_eq!(
        wait_text(&doc_a, "text", TIMEOUT, |t| all
            .iter()
            .all(|p| t.contains(p)))
        .await,
        at_c
    );
    assert_eq!(
        wait_text(&doc_b, "text", TIMEOUT, |t| all
            .iter()
            .all(|p| t.contains(p)))
        .await,
        at_c
    );
    wait_state(&doc_a, TIMEOUT, settled).await;
    wait_state(&doc_b, TIMEOUT, settled).await;
    assert_eq!(
        read_text(&relay, "plan").await,
        at_c,
        "the relay holds it too"
    );
    for client in [a, b, c] {
        client.close().await.unwrap();
    }
}
