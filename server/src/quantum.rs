//! The relay's Quantum listener: one reliable-UDP connection carries many documents, each
//! message an [`Envelope`] naming its document (see [`aetherflow_crdt::envelope`]).
//!
//! A connection starts with `hello` (client version and token). The client then subscribes to
//! documents; each subscription joins the document's room exactly as a WebSocket session does
//! (the room greets with sync step 1 and answers step 1s after the updates sent before them),
//! and the room's frames come back wrapped in `yjs` envelopes. Refusals are `error` envelopes:
//!
//! | code | meaning | connection |
//! |---:|---|---|
//! | 1001 | the relay is shutting down | closed |
//! | 1002 | malformed envelope | closed |
//! | 1011 | the document is unavailable (storage failure, reload); subscribe again | kept |
//! | 1013 | the subscription fell behind; subscribe again to resync | kept |
//! | 4400 | protocol misuse: no hello first, a message for an unsubscribed document | kept (closed without hello) |
//! | 4401, 4403 | the token is missing/invalid, or does not cover the document (`reason` is the auth error code, e.g. `token_expired`) | kept |
//! | 4409 | a register document (lww, manual), which has no Yjs content | kept |
//! | 4501 | register operations over Quantum are not supported yet (use `/api/v1`) | kept |
//!
//! Permission-denied for read-only tokens is the y-protocols auth message inside a `yjs`
//! envelope, as on the WebSocket.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aetherflow_crdt::envelope::{Control, Envelope, EnvelopeLimits, Payload};
use aetherflow_crdt::register::Kind;
use aetherflow_crdt::{ConnId, DocName};
use aetherflow_quantum::{QuantumConnection, QuantumEndpoint};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

use crate::auth::{Auth, Permission};
use crate::rooms::{CloseReason, Membership, OUTBOX_CAPACITY, Outbound};
use crate::session::SessionContext;

/// How long a new connection may take to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Error code: protocol misuse (no hello first, a message for an unsubscribed document).
pub const ERROR_PROTOCOL: u32 = 4400;
/// Error code: a register document, which has no Yjs content to sync.
pub const ERROR_REGISTER_DOCUMENT: u32 = 4409;
/// Error code: register operations are not served over Quantum yet.
pub const ERROR_NOT_SUPPORTED: u32 = 4501;

/// What the listener needs besides its endpoint.
#[derive(Clone)]
pub struct QuantumContext {
    /// Rooms, limits and the shutdown signal, shared with WebSocket sessions.
    pub sessions: SessionContext,
    /// Token verification.
    pub auth: Auth,
    /// Source of connection ids, shared with WebSocket sessions.
    pub next_conn: Arc<AtomicU64>,
    /// Tracks connection tasks so shutdown waits for them.
    pub tracker: TaskTracker,
}

impl QuantumContext {
    fn limits(&self) -> EnvelopeLimits {
        EnvelopeLimits {
            max_envelope_bytes: self.sessions.limits.max_message_bytes + 1024,
            ..EnvelopeLimits::default()
        }
    }
}

/// Accepts connections until the relay shuts down.
pub async fn serve(endpoint: QuantumEndpoint, ctx: QuantumContext) {
    loop {
        tokio::select! {
            conn = endpoint.accept() => match conn {
                Some(conn) => {
                    let ctx2 = ctx.clone();
                    let span = info_span!("quantum", remote = %conn.remote_addr());
                    ctx.tracker.spawn(connection(conn, ctx2).instrument(span));
                }
                None => break,
            },
            () = ctx.sessions.shutdown.cancelled() => break,
        }
    }
}

/// What to do after one incoming envelope.
enum Next {
    Continue,
    Close(u32, String),
}

/// Serves one connection: hello, then subscriptions and their messages.
async fn connection(conn: QuantumConnection, ctx: QuantumContext) {
    let limits = ctx.limits();
    let token = match hello(&conn, &limits).await {
        Ok(token) => token,
        Err(Some((code, reason))) => {
            let _ = conn.send(error("", code, &reason)).await;
            conn.close().await;
            return;
        }
        Err(None) => return,
    };
    debug!("hello received");
    let (to_peer, mut outgoing) = mpsc::channel::<Vec<u8>>(OUTBOX_CAPACITY);
    let mut subscriptions: HashMap<DocName, (Membership, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    let closing = loop {
        tokio::select! {
            biased;
            () = ctx.sessions.shutdown.cancelled() => {
                break Some((u32::from(CloseReason::GOING_AWAY), "server shutting down".to_owned()));
            }
            Some(bytes) = outgoing.recv() => {
                if conn.send(bytes).await.is_err() {
                    break None;
                }
            }
            incoming = conn.recv() => {
                let Ok(Some(bytes)) = incoming else { break None };
                let next = on_envelope(&bytes, &ctx, &limits, token.as_deref(), &mut subscriptions, &to_peer).await;
                if let Next::Close(code, reason) = next {
                    break Some((code, reason));
                }
            }
        }
    };
    for (_, (membership, forward)) in subscriptions.drain() {
        forward.abort();
        drop(membership);
    }
    if let Some((code, reason)) = closing {
        debug!(code, %reason, "closing");
        let _ = conn.send(error("", code, &reason)).await;
    }
    conn.close().await;
}

/// Waits for the hello; returns its token. `Err(Some)` is a refusal to send, `Err(None)` a
/// connection that went away.
async fn hello(
    conn: &QuantumConnection,
    limits: &EnvelopeLimits,
) -> Result<Option<String>, Option<(u32, String)>> {
    let bytes = match tokio::time::timeout(HELLO_TIMEOUT, conn.recv()).await {
        Ok(Ok(Some(bytes))) => bytes,
        Ok(_) => return Err(None),
        Err(_) => return Err(Some((ERROR_PROTOCOL, "no hello in time".into()))),
    };
    match Envelope::decode(&bytes, limits) {
        Ok(Envelope {
            payload: Payload::Control(Control::Hello { token, .. }),
            ..
        }) => Ok(token),
        Ok(_) => Err(Some((
            ERROR_PROTOCOL,
            "the first message must be hello".into(),
        ))),
        Err(e) => {
            warn!(error = %e, "malformed envelope");
            Err(Some((
                u32::from(CloseReason::PROTOCOL_ERROR),
                e.to_string(),
            )))
        }
    }
}

/// An error envelope.
fn error(doc: &str, code: u32, reason: &str) -> Vec<u8> {
    let reason: String = reason.chars().take(120).collect();
    Envelope::new(doc, Payload::Control(Control::Error { code, reason })).encode()
}

async fn on_envelope(
    bytes: &[u8],
    ctx: &QuantumContext,
    limits: &EnvelopeLimits,
    token: Option<&str>,
    subscriptions: &mut HashMap<DocName, (Membership, tokio::task::JoinHandle<()>)>,
    to_peer: &mpsc::Sender<Vec<u8>>,
) -> Next {
    let envelope = match Envelope::decode(bytes, limits) {
        Ok(envelope) => envelope,
        Err(e) => {
            warn!(error = %e, "malformed envelope");
            return Next::Close(u32::from(CloseReason::PROTOCOL_ERROR), e.to_string());
        }
    };
    // Decoding checked the name of every envelope that is not connection-level.
    let doc = DocName::parse(&envelope.doc).ok();
    let reply = match (envelope.payload, doc) {
        (Payload::Control(Control::Subscribe), Some(doc)) => {
            subscriptions.remove(&doc);
            match subscribe(&doc, ctx, token, to_peer).await {
                Ok(subscription) => {
                    subscriptions.insert(doc, subscription);
                    None
                }
                Err((code, reason)) => Some((doc.to_string(), code, reason)),
            }
        }
        (Payload::Control(Control::Unsubscribe), Some(doc)) => {
            subscriptions.remove(&doc);
            None
        }
        (Payload::Yjs(message), Some(doc)) => forward_to_room(doc, message, subscriptions).await,
        (Payload::Register(_), _) => Some((
            envelope.doc,
            ERROR_NOT_SUPPORTED,
            "register operations over Quantum are not supported yet; use /api/v1".into(),
        )),
        // A second hello, or errors and events from the client: nothing to do.
        _ => None,
    };
    if let Some((doc, code, reason)) = reply
        && to_peer.send(error(&doc, code, &reason)).await.is_err()
    {
        return Next::Close(
            u32::from(CloseReason::INTERNAL_ERROR),
            "connection closing".into(),
        );
    }
    Next::Continue
}

/// Hands a y-protocols message to the room of a subscribed document; returns the error to
/// send otherwise.
async fn forward_to_room(
    doc: DocName,
    message: aetherflow_crdt::protocol::Message,
    subscriptions: &mut HashMap<DocName, (Membership, tokio::task::JoinHandle<()>)>,
) -> Option<(String, u32, String)> {
    let Some((membership, _)) = subscriptions.get(&doc) else {
        return Some((doc.to_string(), ERROR_PROTOCOL, "not subscribed".into()));
    };
    if membership.send(message).await.is_ok() {
        return None;
    }
    subscriptions.remove(&doc);
    let code = u32::from(CloseReason::INTERNAL_ERROR);
    Some((
        doc.to_string(),
        code,
        "document reloading, subscribe again".into(),
    ))
}

/// Authorises and joins `doc`; spawns the task that wraps the room's frames in envelopes.
async fn subscribe(
    doc: &DocName,
    ctx: &QuantumContext,
    token: Option<&str>,
    to_peer: &mpsc::Sender<Vec<u8>>,
) -> Result<(Membership, tokio::task::JoinHandle<()>), (u32, String)> {
    let grant = ctx
        .auth
        .authorize(token, doc)
        .map_err(|e| (4000 + u32::from(e.status()), e.code().to_owned()))?;
    let store = ctx.sessions.rooms.store().clone();
    let lookup = doc.clone();
    match tokio::task::spawn_blocking(move || store.document(&lookup)).await {
        Ok(Ok(Some(meta))) if meta.kind != Kind::Yjs => {
            return Err((
                ERROR_REGISTER_DOCUMENT,
                format!("{doc} is a {:?} register document", meta.kind),
            ));
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            warn!(error = %e, "document lookup failed");
            return Err((
                u32::from(CloseReason::INTERNAL_ERROR),
                "document unavailable".into(),
            ));
        }
        Err(e) => {
            warn!(error = %e, "document lookup panicked");
            return Err((
                u32::from(CloseReason::INTERNAL_ERROR),
                "document unavailable".into(),
            ));
        }
    }
    let conn = ConnId(ctx.next_conn.fetch_add(1, Ordering::Relaxed));
    let (outbox, from_room) = crate::rooms::outbox::channel(OUTBOX_CAPACITY);
    let can_write = grant.permission == Permission::Write;
    let membership = ctx
        .sessions
        .rooms
        .join(doc, conn, &grant.user, can_write, outbox)
        .await
        .map_err(|e| {
            warn!(error = %e, "join failed");
            (
                u32::from(CloseReason::INTERNAL_ERROR),
                "document unavailable".to_owned(),
            )
        })?;
    let forward = tokio::spawn(forward(doc.to_string(), from_room, to_peer.clone()));
    Ok((membership, forward))
}

/// Wraps the room's frames for `doc` in envelopes until the room or the connection stops.
async fn forward(
    doc: String,
    mut from_room: crate::rooms::OutboxReceiver,
    to_peer: mpsc::Sender<Vec<u8>>,
) {
    let last = loop {
        match from_room.recv().await {
            Some(Outbound::Frame(bytes)) => {
                if to_peer
                    .send(Envelope::encode_yjs_frame(&doc, &bytes))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Some(Outbound::Close(reason)) => break (u32::from(reason.code), reason.reason),
            None => {
                break (
                    u32::from(CloseReason::TRY_AGAIN_LATER),
                    "subscription fell behind; subscribe again to resync".into(),
                );
            }
        }
    };
    let _ = to_peer.send(error(&doc, last.0, &last.1)).await;
}
