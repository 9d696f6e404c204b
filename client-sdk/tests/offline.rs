//! The client without a relay, and bad input: invalid names, a database in use, a damaged
//! database, a relay that sends garbage, an unusable configuration.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use aetherflow_client::config::ConfigError;
use aetherflow_client::store::{LocalStore, WriteOp};
use aetherflow_client::{
    Backoff, Change, Client, ClientConfig, ClientError, Link, Transport, TransportError,
    TransportKind,
};
use aetherflow_crdt::DocNameError;
use aetherflow_crdt::protocol::{Message, SyncMessage};
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use yrs::{GetString, Text, Transact};

const TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn edits_work_offline_and_are_reported_as_changes() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(ClientConfig::new(dir.path())).unwrap();
    let doc = client.doc("offline").await.unwrap();
    let mut changes = doc.changes();
    let text = doc.doc().get_or_insert_text("text");
    text.insert(&mut doc.doc().transact_mut(), 0, "hi");
    let change = tokio::time::timeout(TIMEOUT, changes.next()).await.unwrap();
    assert!(matches!(change, Some(Change::Local(_))));
    assert_eq!(doc.state().borrow().pending, 1);
    doc.flush().await.unwrap();
    // Opening the same name again gives the same document.
    let again = client.doc("offline").await.unwrap();
    let text = again.doc().get_or_insert_text("text");
    assert_eq!(text.get_string(&again.doc().transact()), "hi");
    client.close().await.unwrap();
}

#[tokio::test]
async fn invalid_document_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(ClientConfig::new(dir.path())).unwrap();
    assert!(matches!(
        client.doc("").await,
        Err(ClientError::DocName(DocNameError::Empty))
    ));
    assert!(matches!(
        client.doc("a/b").await,
        Err(ClientError::DocName(DocNameError::Slash))
    ));
    client.close().await.unwrap();
}

#[tokio::test]
async fn a_database_in_use_by_another_client_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let first = Client::open(ClientConfig::new(dir.path())).unwrap();
    let err = Client::open(ClientConfig::new(dir.path())).unwrap_err();
    assert!(matches!(err, ClientError::Open { .. }), "{err}");
    assert!(err.to_string().contains("aetherflow-client.redb"), "{err}");
    first.close().await.unwrap();
}

/// A sparse FEC budget the transport would refuse stops the client at open, whichever way it
/// is built, before it creates a database, binds a socket or reaches the relay or a peer.
#[tokio::test]
async fn a_sparse_fec_budget_above_200_is_refused_when_the_client_opens() {
    let dir = tempfile::tempdir().unwrap();
    let relay = "127.0.0.1:9".parse().unwrap();
    let bad = ClientConfig::new(dir.path())
        .quantum(relay)
        .quantum_key([1; 32])
        .peer(relay)
        .peer_secret("secret")
        .quantum_sparse_fec_budget(201);
    let err = Client::open(bad.clone()).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Config(ConfigError::SparseFecBudget {
                percent: 201,
                max: 200
            })
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("quantum_sparse_fec_budget"),
        "{err}"
    );
    let err = Client::with_transport(bad, Arc::new(aetherflow_client::Offline)).unwrap_err();
    assert!(matches!(err, ClientError::Config(_)), "{err}");
    assert!(!dir.path().join("aetherflow-client.redb").exists());
    // The limit itself is fine.
    let at_limit = ClientConfig::new(dir.path()).quantum_sparse_fec_budget(200);
    Client::open(at_limit).unwrap().close().await.unwrap();
}

/// A transport built by hand with settings Quantum refuses fails to connect saying why,
/// rather than connecting with other settings: the driver settings reach the endpoint.
#[tokio::test]
async fn a_quantum_transport_with_a_refused_budget_fails_to_connect_saying_why() {
    let mut driver = ClientConfig::new("unused").quantum_driver();
    driver.quantum.fec.sparse_budget_percent = 250;
    driver.quantum.server_public_key = Some([1; 32]);
    let relay = "127.0.0.1:9".parse().unwrap();
    let transport = aetherflow_client::QuantumTransport::with_driver(relay, None, driver);
    match transport.connect("doc").await {
        Err(TransportError::Connect(why)) => assert!(why.contains("250 %"), "{why}"),
        other => panic!("expected a connect error, got {:?}", other.map(|l| l.kind)),
    }
}

#[tokio::test]
async fn a_data_dir_that_is_a_file_is_a_clear_error() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let err = Client::open(ClientConfig::new(file.path())).unwrap_err();
    assert!(matches!(err, ClientError::Open { .. }), "{err}");
}

#[tokio::test]
async fn a_damaged_stored_document_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = ClientConfig::new(dir.path());
    let store = LocalStore::open(&config.database_path()).unwrap();
    store
        .writer()
        .send(WriteOp::Record {
            doc: "damaged".into(),
            update: vec![0xff, 0xff, 0x01],
            pending: None,
        })
        .unwrap();
    tokio::task::spawn_blocking(move || store.close())
        .await
        .unwrap();
    let client = Client::open(config).unwrap();
    let err = client.doc("damaged").await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Corrupt { doc, .. } if doc == "damaged"),
        "{err}"
    );
    // Other documents are unaffected.
    client.doc("fine").await.unwrap();
    client.close().await.unwrap();
}

/// A relay that answers every connection with a malformed update.
struct GarbageRelay {
    connects: mpsc::UnboundedSender<()>,
}

impl Transport for GarbageRelay {
    fn connect<'a>(&'a self, _doc: &'a str) -> BoxFuture<'a, Result<Link, TransportError>> {
        Box::pin(async move {
            let _ = self.connects.send(());
            let (outgoing, mut sent) = mpsc::channel(16);
            let (to_client, incoming) = mpsc::channel(16);
            tokio::spawn(async move {
                let garbage = Message::Sync(SyncMessage::Update(vec![5, 0xff, 0xff, 0xff]));
                let _ = to_client.send(garbage).await;
                // Keep the link open until the client drops it.
                while sent.recv().await.is_some() {}
            });
            Ok(Link {
                kind: TransportKind::WebSocket,
                outgoing,
                incoming,
            })
        })
    }
}

#[tokio::test]
async fn a_malformed_update_from_the_relay_drops_the_connection_not_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let (connects, mut connected) = mpsc::unbounded_channel();
    let config = ClientConfig::new(dir.path()).backoff(Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
    });
    let client = Client::with_transport(config, Arc::new(GarbageRelay { connects })).unwrap();
    let doc = client.doc("victim").await.unwrap();
    let text = doc.doc().get_or_insert_text("text");
    text.insert(&mut doc.doc().transact_mut(), 0, "intact");
    // The client drops the bad connection and tries again.
    for _ in 0..3 {
        tokio::time::timeout(TIMEOUT, connected.recv())
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(text.get_string(&doc.doc().transact()), "intact");
    assert!(!doc.state().borrow().synced);
    assert_eq!(doc.state().borrow().pending, 1);
    client.close().await.unwrap();
}
