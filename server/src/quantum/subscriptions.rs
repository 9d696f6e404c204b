//! One Quantum connection's subscriptions: authorising and joining documents, handing
//! their messages to the rooms (Yjs) or the register write path (`lww`, `manual`, see
//! [`super::registers`]), and wrapping what comes back in envelopes.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use aetherflow_crdt::envelope::{Control, Envelope, EnvelopeError, EnvelopeLimits, Payload};
use aetherflow_crdt::register::Kind;
use aetherflow_crdt::{ConnId, DocName};
use tokio::sync::mpsc;
use tracing::warn;

use super::registers::{self, ERROR_WRONG_KIND, RegisterSubscription};
use super::{ERROR_PROTOCOL, ERROR_TOO_MANY_DOCUMENTS, QuantumContext, error};
use crate::auth::Permission;
use crate::connection::CloseReason;
use crate::metrics::Rejection;
use crate::rooms::{Membership, Outbound};
use crate::sessions::SessionHandle;

/// A subscribed document.
pub(super) enum Subscription {
    /// A Yjs document: the room membership and the task forwarding the room's frames.
    Room(Membership, tokio::task::JoinHandle<()>),
    /// A register document (`lww`, `manual`).
    Register(RegisterSubscription),
}

impl Subscription {
    /// Leaves the room or stops the event forwarding.
    pub(super) fn close(self) {
        match self {
            Subscription::Room(membership, forward) => {
                forward.abort();
                drop(membership);
            }
            Subscription::Register(subscription) => drop(subscription),
        }
    }
}

/// A connection's subscriptions by document.
pub(super) type Subscriptions = HashMap<DocName, Subscription>;

/// The ways back to the client. The session is the only reader of `queue`, so whatever the
/// session itself answers goes straight to the connection ([`Peer::reply`]): waiting for
/// room in its own queue, which the forwarding tasks may have filled, would wait forever.
pub(super) struct Peer<'a> {
    /// The connection: for the session's own answers.
    pub(super) conn: &'a aetherflow_quantum::QuantumConnection,
    /// The session's outgoing queue: for the tasks that forward rooms' frames and events.
    pub(super) queue: &'a mpsc::Sender<Vec<u8>>,
    /// The session's registry entry, which counts the bytes sent.
    pub(super) handle: &'a SessionHandle,
}

impl Peer<'_> {
    /// Sends one of the session's answers; `false` once the connection is gone.
    pub(super) async fn reply(&self, bytes: Vec<u8>) -> bool {
        self.handle.sent(bytes.len());
        self.conn.send(bytes).await.is_ok()
    }
}

/// What to do after one incoming envelope.
pub(super) enum Next {
    Continue,
    Close(u32, String),
}

/// Handles one envelope after the hello: subscriptions and the messages of subscribed
/// documents. Refusals that keep the connection go to `to_peer` as error envelopes.
pub(super) async fn on_envelope(
    bytes: &[u8],
    ctx: &QuantumContext,
    limits: &EnvelopeLimits,
    token: Option<&str>,
    subscriptions: &mut Subscriptions,
    peer: &Peer<'_>,
) -> Next {
    let envelope = match Envelope::decode(bytes, limits) {
        Ok(envelope) => envelope,
        Err(e) => return malformed(bytes, &e, ctx, subscriptions, peer).await,
    };
    // Decoding checked the name of every envelope that is not connection-level.
    let doc = DocName::parse(&envelope.doc).ok();
    let reply = match (envelope.payload, doc) {
        (Payload::Control(Control::Subscribe), Some(doc)) => {
            if let Some(old) = subscriptions.remove(&doc) {
                old.close();
            }
            if subscriptions.len() >= ctx.max_documents {
                ctx.app
                    .sessions
                    .rooms
                    .metrics()
                    .reject(Rejection::TooManyDocuments);
                let reason = format!(
                    "too many documents on this connection (limit {}); unsubscribe from one first",
                    ctx.max_documents
                );
                return reply(peer, error(doc.as_str(), ERROR_TOO_MANY_DOCUMENTS, &reason)).await;
            }
            match subscribe(&doc, ctx, token, peer).await {
                Ok(subscription) => {
                    peer.handle.add_document(doc.as_str());
                    subscriptions.insert(doc, subscription);
                    None
                }
                Err((code, reason)) => Some(error(doc.as_str(), code, &reason)),
            }
        }
        (Payload::Control(Control::Unsubscribe), Some(doc)) => {
            if let Some(old) = subscriptions.remove(&doc) {
                old.close();
            }
            None
        }
        (Payload::Yjs(message), Some(doc)) => forward_to_room(doc, message, subscriptions)
            .await
            .map(|(doc, code, reason)| error(&doc, code, &reason)),
        (Payload::Register(command), Some(doc)) => {
            match register_command(&doc, command, subscriptions).await {
                Ok(reply) => reply,
                Err((code, reason)) => return Next::Close(code, reason),
            }
        }
        // A second hello, or errors and events from the client: nothing to do.
        _ => None,
    };
    match reply {
        Some(answer) => self::reply(peer, answer).await,
        None => Next::Continue,
    }
}

/// Sends the session's answer and goes on, or closes if the connection is gone.
async fn reply(peer: &Peer<'_>, answer: Vec<u8>) -> Next {
    if peer.reply(answer).await {
        return Next::Continue;
    }
    Next::Close(
        u32::from(CloseReason::INTERNAL_ERROR),
        "connection closing".into(),
    )
}

/// Queues a register command with its subscription's writer, which answers it. `Ok` holds
/// the error envelope to send instead, if any; `Err` the code and reason to close with.
async fn register_command(
    doc: &DocName,
    command: aetherflow_crdt::register::Command,
    subscriptions: &Subscriptions,
) -> Result<Option<Vec<u8>>, (u32, String)> {
    match subscriptions.get(doc) {
        Some(Subscription::Register(subscription)) => {
            subscription.queue(Ok(command)).map(|()| None)
        }
        Some(Subscription::Room(..)) => {
            let reason = format!(
                "{doc} is a Yjs document; register operations need an lww or manual document"
            );
            Ok(Some(error(doc.as_str(), ERROR_WRONG_KIND, &reason)))
        }
        None => Ok(Some(error(doc.as_str(), ERROR_PROTOCOL, "not subscribed"))),
    }
}

/// An envelope that does not decode. A register command that is not valid JSON is answered
/// with 4400 on its document, in order with the document's other answers (the connection
/// and everything else stay as they were); any other malformed envelope closes the
/// connection.
async fn malformed(
    bytes: &[u8],
    e: &EnvelopeError,
    ctx: &QuantumContext,
    subscriptions: &Subscriptions,
    peer: &Peer<'_>,
) -> Next {
    ctx.app
        .sessions
        .rooms
        .metrics()
        .reject(Rejection::MalformedMessage);
    warn!(error = %e, "malformed envelope");
    let doc = Envelope::doc_of(bytes).and_then(|doc| DocName::parse(doc).ok());
    let bad_command = matches!(
        e,
        EnvelopeError::Json {
            what: "register operation",
            ..
        }
    );
    if let (true, Some(doc)) = (bad_command, doc) {
        let reason = format!("invalid register command: {e}");
        if let Some(Subscription::Register(subscription)) = subscriptions.get(&doc) {
            return match subscription.queue(Err(reason)) {
                Ok(()) => Next::Continue,
                Err((code, reason)) => Next::Close(code, reason),
            };
        }
        let answer = error(doc.as_str(), ERROR_PROTOCOL, &reason);
        if peer.reply(answer).await {
            return Next::Continue;
        }
    }
    Next::Close(u32::from(CloseReason::PROTOCOL_ERROR), e.to_string())
}

/// Hands a y-protocols message to the room of a subscribed document; returns the error to
/// send otherwise.
async fn forward_to_room(
    doc: DocName,
    message: aetherflow_crdt::protocol::Message,
    subscriptions: &mut Subscriptions,
) -> Option<(String, u32, String)> {
    let membership = match subscriptions.get(&doc) {
        Some(Subscription::Room(membership, _)) => membership,
        Some(Subscription::Register(_)) => {
            let reason = format!("{doc} is a register document, which has no Yjs content");
            return Some((doc.to_string(), ERROR_WRONG_KIND, reason));
        }
        None => return Some((doc.to_string(), ERROR_PROTOCOL, "not subscribed".into())),
    };
    if membership.send(message).await.is_ok() {
        return None;
    }
    if let Some(gone) = subscriptions.remove(&doc) {
        gone.close();
    }
    let code = u32::from(CloseReason::INTERNAL_ERROR);
    Some((
        doc.to_string(),
        code,
        "document reloading, subscribe again".into(),
    ))
}

/// Authorises `doc` and subscribes: a Yjs document joins its room (and a task wraps the
/// room's frames in envelopes), a register document gets its state and events.
async fn subscribe(
    doc: &DocName,
    ctx: &QuantumContext,
    token: Option<&str>,
    peer: &Peer<'_>,
) -> Result<Subscription, (u32, String)> {
    let grant = ctx
        .app
        .auth
        .authorize(token, doc)
        .map_err(|e| (4000 + u32::from(e.status()), e.code().to_owned()))?;
    let unavailable = || {
        (
            u32::from(CloseReason::INTERNAL_ERROR),
            "document unavailable".to_owned(),
        )
    };
    match ctx.app.storage.catalog.document(doc.clone()).await {
        Ok(Some(meta)) if meta.kind != Kind::Yjs => {
            let subscription = registers::subscribe(doc, meta.kind, grant, ctx, peer).await?;
            return Ok(Subscription::Register(subscription));
        }
        Ok(_) => {}
        Err(e) => {
            warn!(error = %e, "document lookup failed");
            return Err(unavailable());
        }
    }
    let conn = ConnId(ctx.app.next_conn.fetch_add(1, Ordering::Relaxed));
    let (outbox, from_room) = crate::rooms::outbox::channel(ctx.app.sessions.outbox_max_bytes);
    let can_write = grant.permission == Permission::Write;
    let membership = ctx
        .app
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
    let forward = tokio::spawn(forward(doc.to_string(), from_room, peer.queue.clone()));
    Ok(Subscription::Room(membership, forward))
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
