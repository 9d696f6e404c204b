//! One Quantum connection's subscriptions: authorising and joining documents, handing
//! their messages to the rooms, and wrapping the rooms' frames in envelopes.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use aetherflow_crdt::envelope::{Control, Envelope, EnvelopeLimits, Payload};
use aetherflow_crdt::register::Kind;
use aetherflow_crdt::{ConnId, DocName};
use tokio::sync::mpsc;
use tracing::warn;

use super::{ERROR_NOT_SUPPORTED, ERROR_PROTOCOL, ERROR_REGISTER_DOCUMENT, QuantumContext, error};
use crate::auth::Permission;
use crate::metrics::Rejection;
use crate::registry::SessionHandle;
use crate::rooms::{CloseReason, Membership, OUTBOX_CAPACITY, Outbound};

/// A joined document: the room membership and the task forwarding the room's frames.
pub(super) type Subscription = (Membership, tokio::task::JoinHandle<()>);

/// A connection's subscriptions by document.
pub(super) type Subscriptions = HashMap<DocName, Subscription>;

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
    to_peer: &mpsc::Sender<Vec<u8>>,
    handle: &SessionHandle,
) -> Next {
    let envelope = match Envelope::decode(bytes, limits) {
        Ok(envelope) => envelope,
        Err(e) => {
            ctx.sessions
                .rooms
                .metrics()
                .reject(Rejection::MalformedMessage);
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
                    handle.add_document(doc.as_str());
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
    subscriptions: &mut Subscriptions,
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
) -> Result<Subscription, (u32, String)> {
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
