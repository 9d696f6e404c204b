//! One document's link to one peer, from either end: the side that connected (a task per
//! configured peer address, like the relay's sync task) and the side that serves it (a task per
//! subscription on a [`crate::Peer`] listener).
//!
//! Both ends run the same exchange: the connecting side drives a [`SyncSession`] (step 1,
//! answer to the greeting, barriers), the serving side answers with [`sync::serve`], as the
//! relay does. Every local edit and every update from the relay or another peer is forwarded
//! to the link (except the link's own updates), so edits hop across a chain of peers; an
//! update a replica already holds applies as a no-op and is not forwarded again, so forwarding
//! in a cycle of peers cannot loop.

use std::net::SocketAddr;
use std::sync::Arc;

use aetherflow_crdt::envelope::{Envelope, Payload};
use aetherflow_crdt::protocol::{Message, SyncMessage};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::config::Backoff;
use crate::doc::{PeerState, Shared};
use crate::error::TransportError;
use crate::sync::{self, LocalDoc, SyncSession};
use crate::transport::{Link, Transport};

/// Where the messages of a link go.
pub(crate) enum Sink {
    /// The connecting side: the transport's link.
    Link(mpsc::Sender<Message>),
    /// The serving side: envelopes for the shared connection's writer.
    Envelopes {
        /// The document, named in every envelope.
        doc: String,
        /// The connection's outgoing queue.
        to_peer: mpsc::Sender<Vec<u8>>,
    },
}

impl Sink {
    async fn send(&self, messages: Vec<Message>) -> bool {
        for message in messages {
            let sent = match self {
                Sink::Link(link) => link.send(message).await.is_ok(),
                Sink::Envelopes { doc, to_peer } => {
                    let envelope = Envelope::new(doc.as_str(), Payload::Yjs(message));
                    to_peer.send(envelope.encode()).await.is_ok()
                }
            };
            if !sent {
                return false;
            }
        }
        true
    }
}

/// Which end of the link we are.
pub(crate) enum Role {
    /// We connected to the peer at this address.
    Connecting(SyncSession, SocketAddr),
    /// We serve a peer that subscribed.
    Serving,
}

/// Why an exchange ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LinkEnd {
    /// The link or the document went away.
    Closed,
    /// The peer sent an update that does not decode or apply.
    BadInput,
    /// The client is closing.
    Cancelled,
}

/// Runs one link until it ends. The first messages (step 1 or greeting, presence) are sent
/// here, after subscribing to the change streams, so no change falls between the state read
/// for them and the stream.
pub(crate) async fn exchange(
    shared: &Shared,
    role: &mut Role,
    incoming: &mut mpsc::Receiver<Message>,
    sink: &Sink,
    cancel: &CancellationToken,
) -> LinkEnd {
    let link = shared.new_link_id();
    let mut changes = shared.forward.subscribe();
    let mut presence = shared.presence_out.subscribe();
    let mut first = vec![Message::Sync(SyncMessage::Step1(shared.doc.state_vector()))];
    first.extend(shared.presence_message());
    if !sink.send(first).await {
        return LinkEnd::Closed;
    }
    if let Role::Connecting(_, addr) = role {
        set_peer(shared, *addr, |p| {
            p.online = true;
            p.denied = None;
        });
    }
    loop {
        let out = tokio::select! {
            message = incoming.recv() => {
                let Some(message) = message else { return LinkEnd::Closed };
                match receive(shared, role, message, link) {
                    Some(out) => out,
                    None => return LinkEnd::BadInput,
                }
            }
            change = changes.recv() => match change {
                // Its own updates, back from the document: the peer has them.
                Ok((Some(from), _)) if from == link => continue,
                Ok((_, update)) => vec![Message::Sync(SyncMessage::Update(update))],
                // Missed changes: send everything; the peer keeps what it lacks.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    vec![Message::Sync(SyncMessage::Update(shared.full_state()))]
                }
                Err(broadcast::error::RecvError::Closed) => return LinkEnd::Closed,
            },
            update = presence.recv() => match update {
                Ok(update) => vec![Message::Awareness(update)],
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    shared.presence_message().into_iter().collect()
                }
                Err(broadcast::error::RecvError::Closed) => return LinkEnd::Closed,
            },
            () = cancel.cancelled() => return LinkEnd::Cancelled,
        };
        if !sink.send(out).await {
            return LinkEnd::Closed;
        }
    }
}

/// Acts on one message from the peer; returns the replies, or `None` on a bad update.
fn receive(shared: &Shared, role: &mut Role, message: Message, link: u64) -> Option<Vec<Message>> {
    let (actions, mut replies) = match role {
        Role::Connecting(session, _) => session.receive(&shared.doc, message, None),
        Role::Serving => sync::serve(&shared.doc, message),
    };
    for update in &actions.apply {
        if !shared.apply_from_peer(update, link) {
            return None;
        }
    }
    if let Some(update) = actions.presence {
        shared.apply_presence(&update);
    }
    if actions.send_presence {
        replies.extend(shared.presence_message());
    }
    if actions.synced
        && let Role::Connecting(_, addr) = role
    {
        set_peer(shared, *addr, |p| p.synced = true);
    }
    Some(replies)
}

fn set_peer(shared: &Shared, addr: SocketAddr, change: impl FnOnce(&mut PeerState)) {
    shared
        .state
        .send_modify(|s| change(s.peers.entry(addr).or_default()));
}

/// What the connecting task of one document and one peer needs.
pub(crate) struct LinkContext {
    /// The peer's address, as configured.
    pub addr: SocketAddr,
    /// A Quantum transport to that address.
    pub transport: Arc<dyn Transport>,
    /// Longest wait for the link to open.
    pub connect_timeout: std::time::Duration,
    /// Delays between attempts.
    pub backoff: Backoff,
    /// Fires when the client closes.
    pub cancel: CancellationToken,
}

/// Keeps document `shared` linked to one peer until the client closes: connect, exchange,
/// reconnect with backoff.
pub(crate) async fn run(shared: Arc<Shared>, ctx: LinkContext) {
    let addr = ctx.addr;
    set_peer(&shared, addr, |_| {});
    let mut failures: u32 = 0;
    loop {
        let connect =
            tokio::time::timeout(ctx.connect_timeout, ctx.transport.connect(&shared.name));
        let connected = tokio::select! {
            result = connect => result.unwrap_or(Err(TransportError::Timeout)),
            () = ctx.cancel.cancelled() => break,
        };
        match connected {
            Ok(Link {
                outgoing,
                mut incoming,
                ..
            }) => {
                info!(doc = %shared.name, %addr, "peer link up");
                // The session's first barrier stands for the step 1 `exchange` sends.
                let mut role = Role::Connecting(SyncSession::start(&shared.doc).0, addr);
                let sink = Sink::Link(outgoing);
                let end = exchange(&shared, &mut role, &mut incoming, &sink, &ctx.cancel).await;
                debug!(doc = %shared.name, %addr, ?end, "peer link down");
                if shared
                    .state
                    .borrow()
                    .peers
                    .get(&addr)
                    .is_some_and(|p| p.synced)
                {
                    failures = 0;
                }
            }
            Err(TransportError::Refused { status, reason }) => {
                info!(doc = %shared.name, %addr, status, %reason, "peer refused us");
                set_peer(&shared, addr, |p| {
                    p.denied = Some(format!("{status} {reason}"))
                });
            }
            Err(e) => debug!(doc = %shared.name, %addr, error = %e, "peer link failed"),
        }
        set_peer(&shared, addr, |p| {
            p.online = false;
            p.synced = false;
        });
        let delay = ctx.backoff.jittered(failures, shared.doc.client_id().get());
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = ctx.cancel.cancelled() => break,
        }
        failures = failures.saturating_add(1);
    }
    set_peer(&shared, addr, |p| {
        p.online = false;
        p.synced = false;
    });
}
