//! The sync session of one document over one link, run by the reconnect loop
//! ([`crate::reconnect`]).

use std::sync::Arc;

use aetherflow_crdt::protocol::{Message, SyncMessage};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::doc::{Connection, Outgoing, Shared};
use crate::error::TransportError;
use crate::reconnect::{HasKind, Reconnecting};
use crate::sync::SyncSession;
use crate::transport::{Link, Transport, TransportKind};

/// A document kept connected by the reconnect loop, with the queue of its local changes.
pub(crate) struct DocLink {
    pub shared: Arc<Shared>,
    pub outbox: mpsc::UnboundedReceiver<Outgoing>,
}

impl HasKind for Link {
    fn kind(&self) -> TransportKind {
        self.kind
    }
}

impl Reconnecting for DocLink {
    type Link = Link;

    fn name(&self) -> &str {
        &self.shared.name
    }

    fn seed(&self) -> u64 {
        self.shared.doc.client_id().get()
    }

    async fn connect(&self, transport: &dyn Transport) -> Result<Link, TransportError> {
        transport.connect(&self.shared.name).await
    }

    async fn session(&mut self, link: Link, cancel: &CancellationToken) -> bool {
        session(&self.shared, link, &mut self.outbox, cancel).await
    }

    fn set_connection(&self, connection: Connection) {
        self.shared.state.send_modify(|s| {
            s.synced &= connection != Connection::Offline;
            s.connection = connection;
        });
    }

    fn set_denied(&self, reason: String) {
        self.shared.state.send_modify(|s| s.denied = Some(reason));
    }
}

/// One connection's life. Returns when the link closes, the relay refuses us, or on cancel;
/// returns whether the session got synced.
async fn session(
    shared: &Shared,
    mut link: Link,
    outbox: &mut mpsc::UnboundedReceiver<Outgoing>,
    cancel: &CancellationToken,
) -> bool {
    let mut synced = false;
    let result = run_session(shared, &mut link, outbox, cancel, &mut synced).await;
    debug!(doc = %shared.name, ?result, "session ended");
    synced
}

/// Why a session ended.
#[derive(Debug)]
enum SessionEnd {
    /// The link closed (relay gone, network down, relay closed us).
    Closed,
    /// The relay sent something we could not apply.
    BadInput,
    /// The relay refused access.
    Denied,
    /// The client is closing.
    Cancelled,
}

async fn run_session(
    shared: &Shared,
    link: &mut Link,
    outbox: &mut mpsc::UnboundedReceiver<Outgoing>,
    cancel: &CancellationToken,
    synced: &mut bool,
) -> SessionEnd {
    // Updates queued while offline are all in our answer to the relay's step 1.
    while outbox.try_recv().is_ok() {}
    let (mut sync, step1) = SyncSession::start(&shared.doc);
    let mut first = vec![step1];
    first.extend(shared.presence_message());
    if !send_all(link, first).await {
        return SessionEnd::Closed;
    }
    let kind = link.kind;
    shared.state.send_modify(|s| {
        s.connection = Connection::Online(kind);
        s.denied = None;
    });
    loop {
        let out = tokio::select! {
            incoming = link.incoming.recv() => {
                let Some(message) = incoming else { return SessionEnd::Closed };
                match on_message(shared, &mut sync, message, synced) {
                    Ok(out) => out,
                    Err(end) => return end,
                }
            }
            outgoing = outbox.recv() => {
                let Some(first) = outgoing else { return SessionEnd::Cancelled };
                batch(shared, &mut sync, first, outbox)
            }
            () = cancel.cancelled() => return SessionEnd::Cancelled,
        };
        if !send_all(link, out).await {
            return SessionEnd::Closed;
        }
    }
}

/// Acts on one message from the relay; returns the messages to send back.
fn on_message(
    shared: &Shared,
    sync: &mut SyncSession,
    message: Message,
    synced: &mut bool,
) -> Result<Vec<Message>, SessionEnd> {
    let last_seq = shared.last_seq();
    let (actions, mut replies) = sync.receive(&shared.doc, message, last_seq);
    for update in &actions.apply {
        if !shared.apply_remote(update) {
            return Err(SessionEnd::BadInput);
        }
    }
    if let Some(upto) = actions.acked {
        shared.ack(upto);
    }
    if actions.synced {
        *synced = true;
        shared.state.send_modify(|s| s.synced = true);
    }
    if let Some(update) = actions.presence {
        shared.apply_presence(&update);
    }
    if let Some(reason) = actions.denied {
        shared.state.send_modify(|s| s.denied = Some(reason));
        return Err(SessionEnd::Denied);
    }
    if actions.send_presence {
        replies.extend(shared.presence_message());
    }
    Ok(replies)
}

/// Everything queued for the relay, then one barrier acknowledging all of its updates.
fn batch(
    shared: &Shared,
    sync: &mut SyncSession,
    first: Outgoing,
    outbox: &mut mpsc::UnboundedReceiver<Outgoing>,
) -> Vec<Message> {
    let mut messages = Vec::new();
    let mut last = None;
    for item in std::iter::once(first).chain(std::iter::from_fn(|| outbox.try_recv().ok())) {
        match item {
            Outgoing::Update { seq, update } => {
                last = Some(seq);
                messages.push(Message::Sync(SyncMessage::Update(update)));
            }
            Outgoing::Presence(update) => messages.push(Message::Awareness(update)),
        }
    }
    if let Some(upto) = last {
        messages.push(sync.barrier(&shared.doc, upto));
    }
    messages
}

async fn send_all(link: &Link, messages: Vec<Message>) -> bool {
    for message in messages {
        if link.outgoing.send(message).await.is_err() {
            return false;
        }
    }
    true
}
