//! Peer-assisted sync: an SDK instance that listens ([`crate::Client::listen`]) serves its
//! local documents to other SDK instances over Quantum, so replicas on one network keep
//! syncing with each other while the relay is unreachable.
//!
//! A [`Peer`] speaks the relay's Quantum protocol ([`aetherflow_crdt::envelope`]), so another
//! client reaches it with [`crate::ClientConfig::peer`] exactly as it reaches a relay: `hello`,
//! then `subscribe` per document, then y-protocols sync messages both ways. Subscribing opens
//! the document locally (and starts its sync with the relay, if one is configured). Updates
//! from peers are stored and stay *pending* until the relay acknowledges them, so whatever
//! replica reaches the relay first delivers everyone's edits; local edits and updates from the
//! relay or other peers are forwarded to every subscribed peer.
//!
//! **Authentication.** Every replica of a group is configured with the same secret
//! ([`crate::ClientConfig::peer_secret`]). Both sides of a peer link mix it into Quantum's
//! Noise handshake as a pre-shared key (`Noise_NNpsk0_25519_AESGCM_BLAKE2s`, see
//! `aetherflow_quantum::crypto::handshake`): the secret never travels, a peer that does not
//! hold it fails the handshake (the listener refuses it and keeps no state; the connecting
//! SDK reports status 401 "wrong peer secret"), and everything after the handshake is
//! encrypted and authenticated. The `hello` token is ignored. A listener needs a secret.
//!
//! **Registers are not served by peers.** A register document (`lww`, `manual`,
//! [`crate::Client::register`]) needs the relay's authority: token permissions, locks, the
//! one version order that turns stale manual writes into conflict records. A peer answers
//! `register` envelopes with 4501; a client whose relay is unreachable keeps its register
//! writes in its own database until the relay is back.
//!
//! | code | meaning | connection |
//! |---:|---|---|
//! | 1001 | the peer is shutting down | closed |
//! | 1002 | malformed envelope (an invalid document name included) | closed |
//! | 1011 | the document could not be opened locally | kept |
//! | 4400 | protocol misuse: no hello first, a message for an unsubscribed document, a malformed update | kept (closed without hello) |
//! | 4501 | register operations are not served by peers (they need the relay) | kept |

use aetherflow_crdt::code::Code;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aetherflow_crdt::envelope::{Control, Envelope, EnvelopeLimits, Payload};
use aetherflow_crdt::protocol::Message;
use aetherflow_quantum::crypto::psk_from_secret;
use aetherflow_quantum::{QuantumConnection, QuantumEndpoint};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span};

use crate::OpenDocs;
use crate::error::ClientError;
use crate::peer_link::{self, Role, Sink};

/// Error code: the peer is shutting down.
pub const ERROR_GOING_AWAY: u32 = Code::GoingAway.as_u32();
/// Error code: malformed envelope.
pub const ERROR_MALFORMED: u32 = Code::ProtocolError.as_u32();
/// Error code: the document could not be opened.
pub const ERROR_UNAVAILABLE: u32 = Code::InternalError.as_u32();
/// Error code: protocol misuse.
pub const ERROR_PROTOCOL: u32 = Code::BadRequest.as_u32();
/// Error code once sent for a missing or wrong peer secret; no longer sent, since a peer
/// without the secret now fails the Quantum handshake before any envelope.
pub const ERROR_UNAUTHORIZED: u32 = Code::Unauthorized.as_u32();
/// Error code: register operations are not served by peers.
pub const ERROR_NOT_SUPPORTED: u32 = Code::NotSupported.as_u32();

/// How long a new connection may take to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued per connection and per subscription.
const BUFFER: usize = 256;

/// A listening SDK instance, returned by [`crate::Client::listen`]. It stops when the client
/// closes or when [`Peer::stop`] is called.
#[derive(Debug)]
pub struct Peer {
    addr: SocketAddr,
    cancel: CancellationToken,
}

impl Peer {
    /// The UDP address peers connect to (with the port picked, if 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening and closes every peer connection (the client keeps running). Returns at
    /// once; the UDP port is released just after.
    pub fn stop(&self) {
        self.cancel.cancel();
    }
}

/// Binds the listener and starts accepting.
pub(crate) async fn listen(docs: Arc<OpenDocs>, addr: SocketAddr) -> Result<Peer, ClientError> {
    let secret = docs
        .config
        .peer_secret
        .clone()
        .ok_or(ClientError::NoPeerSecret)?;
    // The client's sparse FEC budget, so edits served to peers are protected alike.
    let mut driver = docs.config.quantum_driver();
    driver.quantum.accept_incoming = true;
    driver.quantum.psk = Some(psk_from_secret(secret.as_bytes()));
    let endpoint = QuantumEndpoint::bind(addr, driver)
        .await
        .map_err(|e| ClientError::Listen {
            addr,
            reason: e.to_string(),
        })?;
    let cancel = docs.cancel.child_token();
    let peer = Peer {
        addr: endpoint.local_addr(),
        cancel: cancel.clone(),
    };
    let tasks = docs.tasks.clone();
    tasks.spawn(accept(endpoint, docs, cancel));
    Ok(peer)
}

/// Accepts connections until cancelled, then closes the endpoint.
async fn accept(endpoint: QuantumEndpoint, docs: Arc<OpenDocs>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            conn = endpoint.accept() => match conn {
                Some(conn) => {
                    let span = info_span!("peer", remote = %conn.remote_addr());
                    let served = connection(conn, docs.clone(), cancel.clone());
                    docs.tasks.spawn(served.instrument(span));
                }
                None => break,
            },
            () = cancel.cancelled() => break,
        }
    }
    endpoint.close().await;
}

/// One subscribed document: its link task and the way to hand it the peer's messages.
struct Subscription {
    to_doc: mpsc::Sender<Message>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What one connection holds besides its socket.
struct Served {
    docs: Arc<OpenDocs>,
    limits: EnvelopeLimits,
    subscriptions: HashMap<String, Subscription>,
    to_peer: mpsc::Sender<Vec<u8>>,
}

/// Serves one connection (whose handshake proved it holds the secret): hello, then
/// subscriptions and their messages.
async fn connection(conn: QuantumConnection, docs: Arc<OpenDocs>, cancel: CancellationToken) {
    let limits = EnvelopeLimits::default();
    if let Err(refusal) = hello(&conn, &limits).await {
        if let Some((code, reason)) = refusal {
            debug!(code, reason, "refusing the peer");
            let _ = conn.send(error("", code, reason)).await;
        }
        conn.close().await;
        return;
    }
    debug!("peer accepted");
    let (to_peer, mut outgoing) = mpsc::channel::<Vec<u8>>(BUFFER);
    let mut served = Served {
        docs,
        limits,
        subscriptions: HashMap::new(),
        to_peer,
    };
    let closing = loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break Some((ERROR_GOING_AWAY, "peer shutting down")),
            Some(bytes) = outgoing.recv() => {
                if conn.send(bytes).await.is_err() {
                    break None;
                }
            }
            incoming = conn.recv() => {
                let Ok(Some(bytes)) = incoming else { break None };
                if let Err(close) = served.on_envelope(&bytes).await {
                    break Some(close);
                }
            }
        }
    };
    served.subscriptions.clear();
    if let Some((code, reason)) = closing {
        let _ = conn.send(error("", code, reason)).await;
    }
    conn.close().await;
}

/// Waits for the hello (its token is not checked: the handshake proved the secret).
/// `Err(Some)` is a refusal to send, `Err(None)` a connection that went away.
async fn hello(
    conn: &QuantumConnection,
    limits: &EnvelopeLimits,
) -> Result<(), Option<(u32, &'static str)>> {
    let bytes = match tokio::time::timeout(HELLO_TIMEOUT, conn.recv()).await {
        Ok(Ok(Some(bytes))) => bytes,
        Ok(_) => return Err(None),
        Err(_) => return Err(Some((ERROR_PROTOCOL, "no hello in time"))),
    };
    match Envelope::decode(&bytes, limits) {
        Ok(Envelope {
            payload: Payload::Control(Control::Hello { .. }),
            ..
        }) => Ok(()),
        Ok(_) => Err(Some((ERROR_PROTOCOL, "the first message must be hello"))),
        Err(_) => Err(Some((ERROR_MALFORMED, "malformed envelope"))),
    }
}

/// An error envelope.
fn error(doc: &str, code: u32, reason: &str) -> Vec<u8> {
    let reason = reason.to_owned();
    Envelope::new(doc, Payload::Control(Control::Error { code, reason })).encode()
}

impl Served {
    /// Handles one envelope; `Err` closes the connection with that code and reason.
    async fn on_envelope(&mut self, bytes: &[u8]) -> Result<(), (u32, &'static str)> {
        let envelope = match Envelope::decode(bytes, &self.limits) {
            Ok(envelope) => envelope,
            Err(e) => {
                debug!(error = %e, "malformed envelope from a peer");
                return Err((ERROR_MALFORMED, "malformed envelope"));
            }
        };
        let doc = envelope.doc;
        let refusal = match envelope.payload {
            Payload::Control(Control::Subscribe) => self.subscribe(&doc).await,
            Payload::Control(Control::Unsubscribe) => {
                self.subscriptions.remove(&doc);
                None
            }
            Payload::Yjs(message) => self.forward(&doc, message).await,
            Payload::Register(_) => Some((
                ERROR_NOT_SUPPORTED,
                "register operations are not served by peers",
            )),
            // A second hello, or errors and events from the peer: nothing to do.
            Payload::Control(_) => None,
        };
        if let Some((code, reason)) = refusal
            && self.to_peer.send(error(&doc, code, reason)).await.is_err()
        {
            return Err((ERROR_GOING_AWAY, "connection closing"));
        }
        Ok(())
    }

    /// Opens `doc` locally and starts serving it; returns the refusal to send otherwise.
    async fn subscribe(&mut self, doc: &str) -> Option<(u32, &'static str)> {
        self.subscriptions.remove(doc);
        let handle = match self.docs.open(doc).await {
            Ok(handle) => handle,
            Err(ClientError::DocName(_)) => return Some((ERROR_PROTOCOL, "bad document name")),
            Err(e) => {
                debug!(doc, error = %e, "cannot open a document for a peer");
                return Some((ERROR_UNAVAILABLE, "document unavailable"));
            }
        };
        let (to_doc, mut incoming) = mpsc::channel(BUFFER);
        let shared = handle.shared.clone();
        let sink = Sink::Envelopes {
            doc: doc.to_owned(),
            to_peer: self.to_peer.clone(),
        };
        let cancel = self.docs.cancel.child_token();
        let task = tokio::spawn(async move {
            let end =
                peer_link::exchange(&shared, &mut Role::Serving, &mut incoming, &sink, &cancel)
                    .await;
            debug!(doc = %shared.name, ?end, "peer subscription ended");
            if end == peer_link::LinkEnd::BadInput
                && let Sink::Envelopes { doc, to_peer } = &sink
            {
                let _ = to_peer
                    .send(error(doc, ERROR_PROTOCOL, "malformed update"))
                    .await;
            }
        });
        self.subscriptions
            .insert(doc.to_owned(), Subscription { to_doc, task });
        None
    }

    /// Hands a message to its document's subscription.
    async fn forward(&mut self, doc: &str, message: Message) -> Option<(u32, &'static str)> {
        let Some(subscription) = self.subscriptions.get(doc) else {
            return Some((ERROR_PROTOCOL, "not subscribed"));
        };
        if subscription.to_doc.send(message).await.is_ok() {
            return None;
        }
        // The subscription ended (a malformed update); the peer may subscribe again.
        self.subscriptions.remove(doc);
        Some((ERROR_PROTOCOL, "subscription ended; subscribe again"))
    }
}
