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
//! one a document is using. A `wss://` relay URL is TLS (rustls) trusting the platform's root
//! certificates and any CA given with [`ClientConfig::tls_root_certificate`]; a failed
//! handshake shows in [`SyncState::denied`] as `TLS: ...`.
//! Quantum is encrypted and authenticates the relay by the key [`ClientConfig::quantum_key`]
//! pins (see [`relay_key`]); a relay holding another key is refused (status 495 in
//! [`SyncState::denied`]), never fallen back from.
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
//!
//! # Registers
//!
//! Documents that are not CRDTs, a title (`lww`) or publishing notes (`manual`), open with
//! [`Client::register`] as a [`RegisterHandle`]. LWW writes are stamped with a hybrid
//! logical clock and [`Client::client_id`], apply locally at once and converge to the highest
//! stamp everywhere; manual writes name the version they were based on, and a stale one
//! becomes a conflict record that anyone may resolve. Commands made offline wait in the
//! database and go out on reconnect; each has a [`WriteTicket`] for the relay's answer.
//! Over Quantum they travel as `register` envelopes, over the WebSocket fallback on the
//! relay's live channel. See [`register`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use aetherflow_client::{Client, ClientConfig, RegisterEvent};
//! use serde_json::json;
//!
//! let dir = tempfile::tempdir()?;
//! let client = Client::open(ClientConfig::new(dir.path()))?;
//! let title = client.register("doc.title").await?;
//! let mut events = title.events();
//! title.write(json!("Hello"))?;
//! assert_eq!(
//!     events.next().await,
//!     Some(RegisterEvent::Changed { value: Some(json!("Hello")) })
//! );
//! # client.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # History
//!
//! The relay keeps every version of a Yjs document; [`Client::history`] gives a [`History`]
//! handle on it through the relay's HTTP API (the address of
//! [`ClientConfig::websocket_url`], `https` for `wss://` with the same trust, the client's
//! token): list [`Version`]s newest first, page by page; read the document at one as JSON,
//! as one Yjs update or as a read-only [`yrs::Doc`]; [`History::diff`] two versions and
//! [`History::blame`] a text, with the token subjects that wrote each run; restore a version
//! (every connected client, this one included, gets it as an ordinary update); label
//! versions. The relay's refusals are [`ClientError::Relay`] with its status and code (`403
//! read_only` when a read token restores, `404 not_found` for an unknown version). See
//! [`history`].
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), aetherflow_client::ClientError> {
//! use aetherflow_client::{Client, ClientConfig, Page};
//! use yrs::{GetString, Transact};
//!
//! let config = ClientConfig::new("./client-data")
//!     .websocket("wss://relay.example")
//!     .token("a write token for notes");
//! let client = Client::open(config)?;
//! let history = client.history("notes")?;
//! let page = history.versions(Page::newest(20)).await?;
//! for version in &page.versions {
//!     println!("{} by {:?} at {} ms", version.id, version.authors, version.time_ms);
//! }
//! if let Some(oldest) = page.versions.last() {
//!     let then = history.doc_at(oldest.id).await?;
//!     let text = then.get_or_insert_text("text");
//!     println!("it read: {}", text.get_string(&then.transact()));
//!     history.label(oldest.id, "first draft").await?;
//!     let restored = history.restore(oldest.id).await?;
//!     assert_eq!(restored.restored, oldest.id);
//! }
//! if let Some(older) = page.next_before {
//!     let _next = history.versions(Page::newest(20).before(older)).await?;
//! }
//! # client.close().await
//! # }
//! ```
//!
//! # Peers
//!
//! SDK instances on one network can also sync with each other directly, with or without a
//! relay: one [`Client::listen`]s (a [`Peer`]), the others add its address with
//! [`ClientConfig::peer`]. Every replica of the group shares one secret
//! ([`ClientConfig::peer_secret`]); a peer presenting another one is refused. What a replica
//! gets from a peer stays *pending* until the relay acknowledges it, so when the relay is back
//! everyone's edits reach it, each exactly once. [`SyncState::peers`] says which peer links
//! are up. See [`peer`] for the protocol.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), aetherflow_client::ClientError> {
//! use aetherflow_client::{Client, ClientConfig};
//! use yrs::{GetString, Text, Transact};
//!
//! let (dir_a, dir_b) = (tempfile::tempdir().expect("a dir"), tempfile::tempdir().expect("a dir"));
//! // A listens for peers that know the group's secret...
//! let a = Client::open(ClientConfig::new(dir_a.path()).peer_secret("team secret"))?;
//! let peer = a.listen("127.0.0.1:0".parse().expect("an address")).await?;
//! // ...and B syncs with A directly: no relay anywhere.
//! let b_config = ClientConfig::new(dir_b.path())
//!     .peer(peer.local_addr())
//!     .peer_secret("team secret");
//! let b = Client::open(b_config)?;
//! let (notes_a, notes_b) = (a.doc("notes").await?, b.doc("notes").await?);
//! let text_a = notes_a.doc().get_or_insert_text("text");
//! text_a.insert(&mut notes_a.doc().transact_mut(), 0, "hello, peer");
//!
//! let text_b = notes_b.doc().get_or_insert_text("text");
//! let mut changes = notes_b.changes();
//! while text_b.get_string(&notes_b.doc().transact()) != "hello, peer" {
//!     changes.next().await;
//! }
//! assert!(notes_b.state().borrow().peers[&peer.local_addr()].online);
//! # a.close().await?;
//! # b.close().await
//! # }
//! ```

pub mod config;
pub mod doc;
pub mod error;
pub mod history;
pub mod peer;
mod peer_link;
pub mod quantum;
mod reconnect;
pub mod register;
pub mod relay_key;
pub mod store;
pub mod sync;
mod task;
#[cfg(feature = "testing")]
pub mod testing;
mod tls;
pub mod transport;
pub mod websocket;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aetherflow_crdt::DocName;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Backoff, ClientConfig};
pub use doc::{
    Change, Changes, Connection, DocHandle, PEER_ORIGIN, PeerState, REMOTE_ORIGIN, SyncState,
};
pub use error::{ClientError, TransportError};
pub use history::{
    Blame, Diff, History, Label, Page, Restored, Run, RunKind, Version, VersionPage,
};
pub use peer::Peer;
pub use quantum::{Fallback, QuantumTransport};
pub use register::{
    LockEvent, RegisterError, RegisterEvent, RegisterEvents, RegisterHandle, RegisterState,
    WriteOutcome, WriteTicket,
};
pub use relay_key::RelayKey;
pub use transport::{Link, Offline, RegisterLink, RegisterMessage, Transport, TransportKind};
pub use websocket::WebSocketTransport;

use crate::doc::lock;
use crate::store::{LocalStore, StoreReader, WriteOp};

/// The client: a local database, a transport to the relay and links to peers, shared by every
/// open document.
pub struct Client {
    store: LocalStore,
    docs: Arc<OpenDocs>,
}

/// The open documents and what opening one needs; shared with [`Peer`] listeners, which open
/// the documents peers subscribe to.
pub(crate) struct OpenDocs {
    config: ClientConfig,
    reader: StoreReader,
    writer: std::sync::mpsc::Sender<WriteOp>,
    transport: Arc<dyn Transport>,
    /// The relay's Quantum transport, when [`Client::open`] made one.
    quantum: Option<Arc<QuantumTransport>>,
    /// A Quantum transport per configured peer.
    peers: Vec<(SocketAddr, Arc<dyn Transport>)>,
    docs: Mutex<HashMap<String, DocHandle>>,
    /// Open register documents.
    registers: Mutex<HashMap<String, RegisterHandle>>,
    /// This client's id, the writer of its LWW register writes.
    client_id: String,
    /// The relay's HTTP API (version history), or why the configuration has none.
    relay_api: Result<Arc<history::RelayApi>, String>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("data_dir", &self.docs.config.data_dir)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Opens the local database and picks the transport from `config`: Quantum when
    /// [`ClientConfig::quantum_addr`] is set, falling back to WebSocket when
    /// [`ClientConfig::websocket_url`] is set too; offline when neither is. Documents also
    /// sync with every peer in [`ClientConfig::peers`].
    ///
    /// A configuration that [`ClientConfig::validate`] refuses is [`ClientError::Config`].
    pub fn open(config: ClientConfig) -> Result<Client, ClientError> {
        config.validate()?;
        let websocket = config.websocket_url.as_ref().map(|url| {
            Arc::new(
                WebSocketTransport::new(url, config.token.clone())
                    .tls_root_certificates(config.tls_root_certificates.clone()),
            ) as Arc<dyn Transport>
        });
        let quantum = config
            .quantum_addr
            .zip(config.quantum_key)
            .map(|(addr, mode)| {
                let resolver = relay_key::KeyResolver {
                    mode,
                    relay: addr,
                    http: config
                        .websocket_url
                        .as_deref()
                        .and_then(relay_key::http_host),
                    known: config.data_dir.join(relay_key::KNOWN_RELAYS_FILE),
                };
                let driver = config.quantum_driver();
                Arc::new(QuantumTransport::for_relay(
                    addr,
                    config.token.clone(),
                    driver,
                    resolver,
                ))
            });
        let transport: Arc<dyn Transport> = match (quantum.clone(), websocket) {
            (Some(primary), Some(fallback)) => Arc::new(Fallback { primary, fallback }),
            (Some(only), None) => only,
            (None, Some(only)) => only,
            (None, None) => Arc::new(Offline),
        };
        Client::build(config, transport, quantum)
    }

    /// Opens the local database and syncs through `transport` (and with the configured peers).
    /// A configuration that [`ClientConfig::validate`] refuses is [`ClientError::Config`].
    pub fn with_transport(
        config: ClientConfig,
        transport: Arc<dyn Transport>,
    ) -> Result<Client, ClientError> {
        Client::build(config, transport, None)
    }

    /// [`Client::with_transport`], keeping the relay's Quantum transport for
    /// [`Client::quantum_stats`].
    fn build(
        config: ClientConfig,
        transport: Arc<dyn Transport>,
        quantum: Option<Arc<QuantumTransport>>,
    ) -> Result<Client, ClientError> {
        config.validate()?;
        let store = LocalStore::open(&config.database_path())?;
        let peers = config
            .peers
            .iter()
            .map(|&addr| {
                let secret = config.peer_secret.as_deref().unwrap_or_default();
                let quantum = QuantumTransport::for_peer(addr, secret, config.quantum_driver());
                (addr, Arc::new(quantum) as Arc<dyn Transport>)
            })
            .collect();
        let docs = Arc::new(OpenDocs {
            quantum,
            reader: store.reader(),
            writer: store.writer(),
            registers: Mutex::new(HashMap::new()),
            client_id: store.client_id().to_owned(),
            relay_api: history::RelayApi::from_config(&config).map(Arc::new),
            config,
            transport,
            peers,
            docs: Mutex::new(HashMap::new()),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        Ok(Client { store, docs })
    }

    /// Opens document `name` (the same handle if it is open already): loads its local state
    /// and pending updates and starts syncing it. Must be called inside a tokio runtime.
    pub async fn doc(&self, name: &str) -> Result<DocHandle, ClientError> {
        self.docs.open(name).await
    }

    /// Opens register document `name` (`lww` or `manual`, created on the relay through
    /// `/api/v1/docs`; the same handle if it is open already): loads what the local database
    /// holds of it and starts syncing it. See [`register`]. Must be called inside a tokio
    /// runtime.
    pub async fn register(&self, name: &str) -> Result<RegisterHandle, ClientError> {
        self.docs.open_register(name).await
    }

    /// Document `name`'s version history on the relay (see [`history`]), through the relay's
    /// HTTP API at the address of [`ClientConfig::websocket_url`] (`http` for `ws://`, `https`
    /// for `wss://` with the same trust), with the client's token. Needs no open
    /// [`DocHandle`] and makes no request yet. [`ClientError::NoRelayApi`] when no usable
    /// WebSocket URL is configured.
    pub fn history(&self, name: &str) -> Result<History, ClientError> {
        let name = DocName::parse(name)?.as_str().to_owned();
        let api = self
            .docs
            .relay_api
            .clone()
            .map_err(|reason| ClientError::NoRelayApi { reason })?;
        Ok(History::new(name, api))
    }

    /// This client's id (made once per local database): the writer id stamped on its LWW
    /// register writes.
    pub fn client_id(&self) -> &str {
        &self.docs.client_id
    }

    /// The figures of the Quantum connection to the relay (bytes on the wire, FEC parity sent
    /// and repaired, retransmits), for diagnostics and benchmarks; `None` when the client has
    /// no Quantum relay address (or was built [`Client::with_transport`]) or no connection
    /// is open.
    pub async fn quantum_stats(&self) -> Option<aetherflow_quantum::ConnectionStats> {
        self.docs.quantum.as_ref()?.stats().await
    }

    /// Listens for other SDK instances at `addr` (port 0 picks a free one) and serves them
    /// this client's documents over Quantum, with the relay's envelope protocol (see
    /// [`peer`]). Only peers presenting [`ClientConfig::peer_secret`] are accepted, so a
    /// secret must be configured. The listener stops when the client closes.
    pub async fn listen(&self, addr: SocketAddr) -> Result<Peer, ClientError> {
        if self.docs.cancel.is_cancelled() {
            return Err(ClientError::Closed);
        }
        peer::listen(self.docs.clone(), addr).await
    }

    /// Stops syncing, commits every local change to the database and closes it. Handles still
    /// held keep their in-memory document, but their further edits are not stored.
    pub async fn close(self) -> Result<(), ClientError> {
        self.docs.cancel.cancel();
        self.docs.tasks.close();
        self.docs.tasks.wait().await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let flushed = self.store.writer().send(WriteOp::Flush(tx)).is_ok();
        if flushed {
            rx.await
                .map_err(|_| ClientError::Closed)?
                .map_err(ClientError::Store)?;
        }
        lock(&self.docs.docs).clear();
        for (_, register) in lock(&self.docs.registers).drain() {
            register.shared.close();
        }
        let Client { store, docs } = self;
        // The last reference to the database besides the store's: release it with the store.
        drop(docs);
        tokio::task::spawn_blocking(move || store.close())
            .await
            .map_err(|e| ClientError::Store(e.to_string()))
    }
}

impl OpenDocs {
    /// What a document's or register's reconnect loop needs.
    fn reconnect_context(&self) -> reconnect::TaskContext {
        reconnect::TaskContext {
            transport: self.transport.clone(),
            connect_timeout: self.config.connect_timeout,
            backoff: self.config.backoff,
            cancel: self.cancel.child_token(),
        }
    }

    /// [`Client::doc`].
    async fn open(&self, name: &str) -> Result<DocHandle, ClientError> {
        let name = DocName::parse(name)?.as_str().to_owned();
        if let Some(handle) = lock(&self.docs).get(&name) {
            return Ok(handle.clone());
        }
        if self.cancel.is_cancelled() {
            return Err(ClientError::Closed);
        }
        let reader = self.reader.clone();
        let loading = name.clone();
        let stored = tokio::task::spawn_blocking(move || reader.load(&loading))
            .await
            .map_err(|e| ClientError::Store(e.to_string()))??;
        let (handle, outbox) = DocHandle::load(name.clone(), stored, self.writer.clone())?;
        let mut docs = lock(&self.docs);
        // Another caller may have opened it meanwhile; keep theirs.
        if let Some(existing) = docs.get(&name) {
            return Ok(existing.clone());
        }
        docs.insert(name, handle.clone());
        let doc = task::DocLink {
            shared: handle.shared.clone(),
            outbox,
        };
        self.tasks
            .spawn(reconnect::run(doc, self.reconnect_context()));
        for (addr, transport) in &self.peers {
            let ctx = peer_link::LinkContext {
                addr: *addr,
                transport: transport.clone(),
                connect_timeout: self.config.connect_timeout,
                backoff: self.config.backoff,
                cancel: self.cancel.child_token(),
            };
            self.tasks.spawn(peer_link::run(handle.shared.clone(), ctx));
        }
        Ok(handle)
    }

    /// [`Client::register`].
    async fn open_register(&self, name: &str) -> Result<RegisterHandle, ClientError> {
        let name = DocName::parse(name)?.as_str().to_owned();
        if let Some(handle) = lock(&self.registers).get(&name) {
            return Ok(handle.clone());
        }
        if self.cancel.is_cancelled() {
            return Err(ClientError::Closed);
        }
        let reader = self.reader.clone();
        let loading = name.clone();
        let stored = tokio::task::spawn_blocking(move || reader.load_register(&loading))
            .await
            .map_err(|e| ClientError::Store(e.to_string()))??;
        let handle = RegisterHandle::load(
            name.clone(),
            stored,
            self.client_id.clone(),
            self.writer.clone(),
        )?;
        let mut registers = lock(&self.registers);
        if let Some(existing) = registers.get(&name) {
            return Ok(existing.clone());
        }
        registers.insert(name, handle.clone());
        let register = register::task::RegisterLoop(handle.shared.clone());
        self.tasks
            .spawn(reconnect::run(register, self.reconnect_context()));
        Ok(handle)
    }
}
