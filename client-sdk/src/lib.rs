//! AetherFlow's native client: offline-first Yjs documents kept in sync with the relay.
//!
//! A [`Client`] holds a local redb database and a transport. [`Client::doc`] opens a
//! [`DocHandle`] on a local yrs document: edit it with ordinary yrs transactions and the
//! client stores every change locally, sends it to the relay when it can, and applies what
//! others wrote. Without a relay, edits keep working and wait in the database as *pending*
//! updates; on every (re)connection client and relay exchange state vectors in both
//! directions, so each gets exactly what it lacks (no loss, no duplicates), even a relay
//! restored from an old backup.
//!
//! The transport sits behind the [`Transport`] trait: [`QuantumTransport`] (one reliable-UDP
//! connection carrying every document in envelopes) first, [`WebSocketTransport`] (one
//! y-websocket connection per document) as the fallback; [`SyncState::connection`] says which
//! one a document is using.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), aetherflow_client::ClientError> {
//! use aetherflow_client::{Client, ClientConfig};
//! use yrs::{GetString, Text, Transact};
//!
//! let dir = tempfile::tempdir().expect("a temp dir");
//! // No relay configured: the client works offline and keeps everything locally.
//! let client = Client::open(ClientConfig::new(dir.path()))?;
//! let notes = client.doc("notes").await?;
//! let text = notes.doc().get_or_insert_text("text");
//! text.insert(&mut notes.doc().transact_mut(), 0, "written offline");
//! assert_eq!(notes.state().borrow().pending, 1);
//! client.close().await?;
//!
//! // Reopened later: the edit and its pending status survived.
//! let client = Client::open(ClientConfig::new(dir.path()))?;
//! let notes = client.doc("notes").await?;
//! let text = notes.doc().get_or_insert_text("text");
//! assert_eq!(text.get_string(&notes.doc().transact()), "written offline");
//! assert_eq!(notes.state().borrow().pending, 1);
//! # client.close().await
//! # }
//! ```

pub mod config;
pub mod doc;
pub mod error;
pub mod quantum;
pub mod store;
pub mod sync;
mod task;
pub mod testing;
pub mod transport;
pub mod websocket;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aetherflow_crdt::DocName;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Backoff, ClientConfig};
pub use doc::{Change, Changes, Connection, DocHandle, REMOTE_ORIGIN, SyncState};
pub use error::{ClientError, TransportError};
pub use quantum::{Fallback, QuantumTransport};
pub use transport::{Link, Offline, Transport, TransportKind};
pub use websocket::WebSocketTransport;

use crate::doc::lock;
use crate::store::LocalStore;

/// The client: a local database and a transport, shared by every open document.
pub struct Client {
    config: ClientConfig,
    store: LocalStore,
    transport: Arc<dyn Transport>,
    docs: Mutex<HashMap<String, DocHandle>>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("data_dir", &self.config.data_dir)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Opens the local database and picks the transport from `config`: Quantum when
    /// [`ClientConfig::quantum_addr`] is set, falling back to WebSocket when
    /// [`ClientConfig::websocket_url`] is set too; offline when neither is.
    pub fn open(config: ClientConfig) -> Result<Client, ClientError> {
        let websocket = config.websocket_url.as_ref().map(|url| {
            Arc::new(WebSocketTransport::new(url, config.token.clone())) as Arc<dyn Transport>
        });
        let quantum = config.quantum_addr.map(|addr| {
            Arc::new(QuantumTransport::new(
                addr,
                config.token.clone(),
                config.quantum_handshake_timeout,
            )) as Arc<dyn Transport>
        });
        let transport: Arc<dyn Transport> = match (quantum, websocket) {
            (Some(primary), Some(fallback)) => Arc::new(Fallback { primary, fallback }),
            (Some(only), None) | (None, Some(only)) => only,
            (None, None) => Arc::new(Offline),
        };
        Client::with_transport(config, transport)
    }

    /// Opens the local database and syncs through `transport`.
    pub fn with_transport(
        config: ClientConfig,
        transport: Arc<dyn Transport>,
    ) -> Result<Client, ClientError> {
        let store = LocalStore::open(&config.database_path())?;
        Ok(Client {
            config,
            store,
            transport,
            docs: Mutex::new(HashMap::new()),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        })
    }

    /// Opens document `name` (the same handle if it is open already): loads its local state
    /// and pending updates and starts syncing it. Must be called inside a tokio runtime.
    pub async fn doc(&self, name: &str) -> Result<DocHandle, ClientError> {
        let name = DocName::parse(name)?.as_str().to_owned();
        if let Some(handle) = lock(&self.docs).get(&name) {
            return Ok(handle.clone());
        }
        if self.cancel.is_cancelled() {
            return Err(ClientError::Closed);
        }
        let reader = self.store.reader();
        let loading = name.clone();
        let stored = tokio::task::spawn_blocking(move || reader.load(&loading))
            .await
            .map_err(|e| ClientError::Store(e.to_string()))??;
        let (handle, outbox) = DocHandle::load(name.clone(), stored, self.store.writer())?;
        let mut docs = lock(&self.docs);
        // Another caller may have opened it meanwhile; keep theirs.
        if let Some(existing) = docs.get(&name) {
            return Ok(existing.clone());
        }
        docs.insert(name, handle.clone());
        let ctx = task::TaskContext {
            transport: self.transport.clone(),
            connect_timeout: self.config.connect_timeout,
            backoff: self.config.backoff,
            cancel: self.cancel.child_token(),
        };
        self.tasks
            .spawn(task::run(handle.shared.clone(), outbox, ctx));
        Ok(handle)
    }

    /// Stops syncing, commits every local change to the database and closes it. Handles still
    /// held keep their in-memory document, but their further edits are not stored.
    pub async fn close(self) -> Result<(), ClientError> {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let flushed = self.store.writer().send(store::WriteOp::Flush(tx)).is_ok();
        if flushed {
            rx.await
                .map_err(|_| ClientError::Closed)?
                .map_err(ClientError::Store)?;
        }
        lock(&self.docs).clear();
        let store = self.store;
        tokio::task::spawn_blocking(move || store.close())
            .await
            .map_err(|e| ClientError::Store(e.to_string()))
    }
}
