//! The Quantum transport: one reliable-UDP connection to the relay carries every document,
//! each message an [`Envelope`] naming its document.
//!
//! The first `connect` opens the connection and sends `hello` with the token; each document
//! then subscribes. A demultiplexing task routes the relay's envelopes to the documents'
//! links. A subscription counts as open once the relay's greeting (sync step 1) arrives; an
//! `error` envelope instead becomes [`TransportError::Refused`]. When the connection dies,
//! every link closes and the documents reconnect, which opens a new connection.
//!
//! Register documents ([`crate::Client::register`]) subscribe the same way; the relay greets
//! them with `event "state"` instead of a step 1, and their commands travel as `register`
//! envelopes, each answered by `event "result"` or an `error` (see the relay's
//! `quantum` module for the codes). A Yjs handle on a register document, or a register
//! handle on a Yjs document, is refused with status 409.
//!
//! The relay limits how many documents one connection may hold (`--quantum-max-documents`,
//! default 100): a subscription over it is refused with status 413 and the relay's reason,
//! the connection and the other documents stay as they were.

use aetherflow_crdt::code::Code;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aetherflow_crdt::envelope::{Control, Envelope, EnvelopeLimits, Payload};
use aetherflow_crdt::protocol::Message;
use aetherflow_quantum::crypto::psk_from_secret;
use aetherflow_quantum::{
    CloseReason, ConnectionStats, DriverConfig, DriverError, QuantumConnection, QuantumEndpoint,
};
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::doc::lock;
use crate::error::TransportError;
use crate::relay_key::{KeyResolver, RelayKey, mismatch};
use crate::transport::{Link, RegisterLink, RegisterMessage, Transport, TransportKind};

/// Messages buffered per document and direction.
const LINK_BUFFER: usize = 256;

/// What the relay sends a document's link: a Yjs message, or an event or refusal (for a
/// register document, exactly what its link hands on).
enum Routed {
    Message(Message),
    Relay(RegisterMessage),
}

/// The open connection shared by every document.
struct Mux {
    conn: QuantumConnection,
    /// Each document's route, with an id telling a replaced subscription from its successor.
    routes: Mutex<HashMap<String, (u64, mpsc::Sender<Routed>)>>,
    next_route: std::sync::atomic::AtomicU64,
    /// Cancelled when the connection has ended.
    dead: CancellationToken,
    /// The connection-level refusal that ended it (a wrong token), if any.
    refused: Mutex<Option<(u32, String)>>,
}

/// How a transport's handshake is authenticated.
#[derive(Debug, Clone)]
enum Trust {
    /// Whatever the driver settings say (pinned key or pre-shared secret set by the caller).
    Preset,
    /// The relay's key, pinned or trusted on first use.
    Relay(KeyResolver),
    /// A peer sharing the group's secret (pre-shared key).
    Peer,
}

/// Connects documents over Quantum.
pub struct QuantumTransport {
    relay: SocketAddr,
    token: Option<String>,
    driver: DriverConfig,
    trust: Trust,
    limits: EnvelopeLimits,
    state: tokio::sync::Mutex<(Option<QuantumEndpoint>, Option<Arc<Mux>>)>,
}

impl std::fmt::Debug for QuantumTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantumTransport")
            .field("relay", &self.relay)
            .finish_non_exhaustive()
    }
}

impl QuantumTransport {
    /// A transport for the relay's Quantum listener at `relay`, which must hold the static key
    /// whose public half is `relay_key` (the relay prints it at start-up), with the SDK's
    /// default sparse FEC budget ([`crate::config::DEFAULT_SPARSE_FEC_BUDGET`]).
    pub fn new(
        relay: SocketAddr,
        relay_key: [u8; 32],
        token: Option<String>,
        handshake_timeout: Duration,
    ) -> Self {
        let mut driver = DriverConfig {
            handshake_timeout,
            ..DriverConfig::default()
        };
        driver.quantum.fec.sparse_budget_percent = crate::config::DEFAULT_SPARSE_FEC_BUDGET;
        driver.quantum.server_public_key = Some(relay_key);
        QuantumTransport::with_driver(relay, token, driver)
    }

    /// A transport for `relay` whose local endpoint uses `driver` (for example
    /// [`crate::ClientConfig::quantum_driver`]), which must pin the relay's key
    /// (`driver.quantum.server_public_key`) or hold a pre-shared secret. Settings the
    /// transport refuses make every connect fail with [`TransportError::Connect`] saying why.
    pub fn with_driver(relay: SocketAddr, token: Option<String>, driver: DriverConfig) -> Self {
        QuantumTransport {
            relay,
            token,
            driver,
            trust: Trust::Preset,
            limits: EnvelopeLimits::default(),
            state: tokio::sync::Mutex::new((None, None)),
        }
    }

    /// A transport to the relay whose key `resolver` finds (pinned or trusted on first use).
    pub(crate) fn for_relay(
        relay: SocketAddr,
        token: Option<String>,
        driver: DriverConfig,
        resolver: KeyResolver,
    ) -> Self {
        QuantumTransport {
            trust: Trust::Relay(resolver),
            ..QuantumTransport::with_driver(relay, token, driver)
        }
    }

    /// A transport to a peer of the group sharing `secret`: the handshake proves both hold
    /// it (Noise with a pre-shared key), so the secret itself never travels.
    pub(crate) fn for_peer(peer: SocketAddr, secret: &str, mut driver: DriverConfig) -> Self {
        driver.quantum.psk = Some(psk_from_secret(secret.as_bytes()));
        QuantumTransport {
            trust: Trust::Peer,
            ..QuantumTransport::with_driver(peer, None, driver)
        }
    }

    /// The open connection's figures (bytes and parity sent, retransmits, FEC repairs);
    /// `None` while no connection is open. Waits while a connection is being opened.
    pub async fn stats(&self) -> Option<ConnectionStats> {
        let mux = self.state.lock().await.1.clone()?;
        mux.conn.stats().await.ok()
    }

    /// The live connection, opening one (and the local socket) if needed.
    async fn mux(&self) -> Result<Arc<Mux>, TransportError> {
        let mut state = self.state.lock().await;
        if let Some(mux) = &state.1
            && !mux.dead.is_cancelled()
        {
            return Ok(mux.clone());
        }
        let endpoint = match &state.0 {
            Some(endpoint) => endpoint.clone(),
            None => {
                let local: SocketAddr = if self.relay.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                }
                .parse()
                .expect("a literal socket address parses");
                let mut driver = self.driver.clone();
                if let Trust::Relay(resolver) = &self.trust {
                    driver.quantum.server_public_key = Some(resolver.resolve().await?);
                }
                let endpoint = QuantumEndpoint::bind(local, driver)
                    .await
                    .map_err(|e| TransportError::Connect(e.to_string()))?;
                state.0 = Some(endpoint.clone());
                endpoint
            }
        };
        let conn = endpoint
            .connect(self.relay)
            .await
            .map_err(|e| self.connect_error(e))?;
        let hello = Envelope::connection(Control::Hello {
            client_version: env!("CARGO_PKG_VERSION").to_owned(),
            token: self.token.clone(),
        });
        conn.send(hello.encode())
            .await
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        let mux = Arc::new(Mux {
            conn,
            routes: Mutex::new(HashMap::new()),
            next_route: std::sync::atomic::AtomicU64::new(0),
            dead: CancellationToken::new(),
            refused: Mutex::new(None),
        });
        tokio::spawn(demux(mux.clone(), self.limits));
        state.1 = Some(mux.clone());
        Ok(mux)
    }
}

impl QuantumTransport {
    /// A failed connect; a refused handshake is a refusal (no fallback, no point retrying
    /// with the same key or secret).
    fn connect_error(&self, error: DriverError) -> TransportError {
        let refused = matches!(
            error,
            DriverError::ConnectionLost(CloseReason::HandshakeFailed)
        );
        match &self.trust {
            Trust::Relay(resolver) if refused => {
                mismatch(self.relay, resolver.mode == RelayKey::TrustOnFirstUse)
            }
            Trust::Peer if refused => TransportError::Refused {
                status: 401,
                reason: format!(
                    "wrong peer secret: the peer at {} refused the handshake",
                    self.relay
                ),
            },
            _ => TransportError::Connect(error.to_string()),
        }
    }

    /// Routes `doc`'s envelopes to a new channel and subscribes; replacing an older route
    /// closes that subscription's link.
    async fn subscribe(
        &self,
        doc: &str,
    ) -> Result<(Arc<Mux>, u64, mpsc::Receiver<Routed>), TransportError> {
        let mux = self.mux().await?;
        let (route, routed) = mpsc::channel(LINK_BUFFER);
        let route_id = mux
            .next_route
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&mux.routes).insert(doc.to_owned(), (route_id, route));
        let subscribe = Envelope::new(doc, Payload::Control(Control::Subscribe));
        mux.conn
            .send(subscribe.encode())
            .await
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        Ok((mux, route_id, routed))
    }

    /// [`Transport::connect_register`]: subscribes and waits for the `state` event.
    async fn open_register(&self, doc: &str) -> Result<RegisterLink, TransportError> {
        let (mux, route_id, mut routed) = self.subscribe(doc).await?;
        let state = match routed.recv().await {
            Some(Routed::Relay(RegisterMessage::Event { name, data })) if name == "state" => {
                RegisterMessage::Event { name, data }
            }
            Some(Routed::Relay(RegisterMessage::Error { code, reason })) => {
                remove_route(&mux, doc, route_id);
                return Err(refusal(code, reason));
            }
            Some(_) => {
                unsubscribe(&mux, doc, route_id).await;
                return Err(TransportError::Refused {
                    status: 409,
                    reason: format!(
                        "{doc} is not a register document on the relay (a Yjs document, or \
                         none yet: create it with POST /api/v1/docs)"
                    ),
                });
            }
            None => return Err(lost(&mux)),
        };
        let (outgoing, from_register) = mpsc::channel(LINK_BUFFER);
        let (to_register, incoming) = mpsc::channel(LINK_BUFFER);
        let _ = to_register.send(state).await;
        tokio::spawn(register_pump(
            mux,
            doc.to_owned(),
            route_id,
            routed,
            from_register,
            to_register,
        ));
        Ok(RegisterLink {
            kind: TransportKind::Quantum,
            outgoing,
            incoming,
        })
    }
}

/// Why a subscription got no answer: a refused hello ends the whole connection; say why.
fn lost(mux: &Mux) -> TransportError {
    match lock(&mux.refused).clone() {
        Some((code, reason)) => refusal(code, reason),
        None => TransportError::Connect("connection lost".into()),
    }
}

/// Drops `doc`'s route and tells the relay.
async fn unsubscribe(mux: &Mux, doc: &str, route_id: u64) {
    remove_route(mux, doc, route_id);
    let unsubscribe = Envelope::new(doc, Payload::Control(Control::Unsubscribe));
    let _ = mux.conn.send(unsubscribe.encode()).await;
}

/// Moves one register document's commands and events between its link and the connection.
async fn register_pump(
    mux: Arc<Mux>,
    doc: String,
    route_id: u64,
    mut routed: mpsc::Receiver<Routed>,
    mut from_register: mpsc::Receiver<aetherflow_crdt::register::Command>,
    to_register: mpsc::Sender<RegisterMessage>,
) {
    loop {
        tokio::select! {
            incoming = routed.recv() => {
                let message = match incoming {
                    Some(Routed::Relay(message)) => message,
                    Some(Routed::Message(_)) => continue,
                    None => break,
                };
                let deleted = matches!(message, RegisterMessage::Error { code, .. } if code == Code::DocumentDeleted.as_u32());
                if to_register.send(message).await.is_err() || deleted {
                    break;
                }
            }
            outgoing = from_register.recv() => match outgoing {
                Some(command) => {
                    let envelope = Envelope::new(doc.as_str(), Payload::Register(command));
                    if mux.conn.send(envelope.encode()).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
        }
    }
    if mux.dead.is_cancelled() {
        remove_route(&mux, &doc, route_id);
    } else {
        unsubscribe(&mux, &doc, route_id).await;
    }
}

/// Routes the relay's envelopes to the documents until the connection ends.
async fn demux(mux: Arc<Mux>, limits: EnvelopeLimits) {
    while let Ok(Some(bytes)) = mux.conn.recv().await {
        let envelope = match Envelope::decode(&bytes, &limits) {
            Ok(envelope) => envelope,
            Err(e) => {
                debug!(error = %e, "malformed envelope from the relay; dropping the connection");
                break;
            }
        };
        let routed = match envelope.payload {
            Payload::Yjs(message) => Routed::Message(message),
            Payload::Control(Control::Error { code, reason }) if envelope.doc.is_empty() => {
                debug!(code, %reason, "relay closed the connection");
                *lock(&mux.refused) = Some((code, reason));
                break;
            }
            Payload::Control(Control::Error { code, reason }) => {
                Routed::Relay(RegisterMessage::Error { code, reason })
            }
            Payload::Control(Control::Event { name, data }) => {
                Routed::Relay(RegisterMessage::Event { name, data })
            }
            _ => continue,
        };
        let route = lock(&mux.routes)
            .get(&envelope.doc)
            .map(|(_, route)| route.clone());
        if let Some(route) = route {
            // A link that is gone just misses the message; it resubscribes and resyncs.
            let _ = route.send(routed).await;
        }
    }
    mux.dead.cancel();
    lock(&mux.routes).clear();
    mux.conn.close().await;
}

/// Maps a subscription refusal to a transport error.
fn refusal(code: u32, reason: String) -> TransportError {
    match Code::from_u32(code) {
        Some(Code::Unauthorized | Code::Forbidden | Code::WrongKind | Code::TooManyDocuments) => {
            TransportError::Refused {
                // The HTTP status our 44xx codes mirror.
                status: (code - 4000) as u16,
                reason,
            }
        }
        _ => TransportError::Connect(format!("{code} {reason}")),
    }
}

impl Transport for QuantumTransport {
    fn connect<'a>(&'a self, doc: &'a str) -> BoxFuture<'a, Result<Link, TransportError>> {
        Box::pin(async move {
            let (mux, route_id, mut routed) = self.subscribe(doc).await?;
            // The relay greets a subscription with its step 1, or refuses it.
            let first = match routed.recv().await {
                Some(Routed::Message(message)) => message,
                Some(Routed::Relay(RegisterMessage::Event { .. })) => {
                    unsubscribe(&mux, doc, route_id).await;
                    return Err(TransportError::Refused {
                        status: 409,
                        reason: format!("{doc} is a register document; use Client::register"),
                    });
                }
                Some(Routed::Relay(RegisterMessage::Error { code, reason })) => {
                    remove_route(&mux, doc, route_id);
                    return Err(refusal(code, reason));
                }
                None => return Err(lost(&mux)),
            };
            let (outgoing, from_doc) = mpsc::channel(LINK_BUFFER);
            let (to_doc, incoming) = mpsc::channel(LINK_BUFFER);
            let _ = to_doc.send(first).await;
            tokio::spawn(pump(
                mux,
                doc.to_owned(),
                route_id,
                routed,
                from_doc,
                to_doc,
            ));
            Ok(Link {
                kind: TransportKind::Quantum,
                outgoing,
                incoming,
            })
        })
    }

    fn connect_register<'a>(
        &'a self,
        doc: &'a str,
    ) -> BoxFuture<'a, Result<RegisterLink, TransportError>> {
        Box::pin(self.open_register(doc))
    }
}

fn remove_route(mux: &Mux, doc: &str, route_id: u64) {
    let mut routes = lock(&mux.routes);
    if routes.get(doc).is_some_and(|(id, _)| *id == route_id) {
        routes.remove(doc);
    }
}

/// Moves one document's messages between its link and the shared connection.
async fn pump(
    mux: Arc<Mux>,
    doc: String,
    route_id: u64,
    mut routed: mpsc::Receiver<Routed>,
    mut from_doc: mpsc::Receiver<Message>,
    to_doc: mpsc::Sender<Message>,
) {
    loop {
        tokio::select! {
            incoming = routed.recv() => match incoming {
                Some(Routed::Message(message)) => {
                    if to_doc.send(message).await.is_err() {
                        break;
                    }
                }
                Some(Routed::Relay(RegisterMessage::Error { code, reason })) => {
                    debug!(%doc, code, %reason, "relay ended the subscription");
                    break;
                }
                Some(Routed::Relay(RegisterMessage::Event { .. })) => {}
                None => break,
            },
            outgoing = from_doc.recv() => match outgoing {
                Some(message) => {
                    let envelope = Envelope::new(doc.as_str(), Payload::Yjs(message));
                    if mux.conn.send(envelope.encode()).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
        }
    }
    remove_route(&mux, &doc, route_id);
    if !mux.dead.is_cancelled() {
        let unsubscribe = Envelope::new(doc.as_str(), Payload::Control(Control::Unsubscribe));
        let _ = mux.conn.send(unsubscribe.encode()).await;
    }
}

/// Tries `primary` (Quantum), then `fallback` (WebSocket) unless the relay refused us.
pub struct Fallback {
    /// Tried first.
    pub primary: Arc<dyn Transport>,
    /// Tried when the primary cannot connect.
    pub fallback: Arc<dyn Transport>,
}

impl Transport for Fallback {
    fn connect<'a>(&'a self, doc: &'a str) -> BoxFuture<'a, Result<Link, TransportError>> {
        Box::pin(async move {
            match self.primary.connect(doc).await {
                Ok(link) => Ok(link),
                Err(refused @ TransportError::Refused { .. }) => Err(refused),
                Err(e) => {
                    debug!(error = %e, "primary transport failed; falling back");
                    self.fallback.connect(doc).await
                }
            }
        })
    }

    fn connect_register<'a>(
        &'a self,
        doc: &'a str,
    ) -> BoxFuture<'a, Result<RegisterLink, TransportError>> {
        Box::pin(async move {
            match self.primary.connect_register(doc).await {
                Ok(link) => Ok(link),
                Err(refused @ TransportError::Refused { .. }) => Err(refused),
                Err(e) => {
                    debug!(error = %e, "primary transport failed; falling back");
                    self.fallback.connect_register(doc).await
                }
            }
        })
    }
}
