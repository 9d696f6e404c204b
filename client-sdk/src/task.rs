//! The sync task of one document: connect, run a session, reconnect with backoff.

use std::sync::Arc;

use aetherflow_crdt::protocol::{Message, SyncMessage};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::config::Backoff;
use crate::doc::{Connection, Outgoing, Shared};
use crate::error::TransportError;
use crate::sync::SyncSession;
use crate::transport::{Link, Transport};

/// What a sync task needs besides its document.
pub(crate) struct TaskContext {
    pub transport: Arc<dyn Transport>,
    pub connect_timeout: std::time::Duration,
    pub backoff: Backoff,
    pub cancel: CancellationToken,
}

/// Runs until `ctx.cancel` fires.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut outbox: mpsc::UnboundedReceiver<Outgoing>,
    ctx: TaskContext,
) {
    let mut failures: u32 = 0;
    loop {
        shared.state.send_modify(|s| {
            s.connection = Connection::Connecting {
                attempt: failures + 1,
            };
        });
        let connect =
            tokio::time::timeout(ctx.connect_timeout, ctx.transport.connect(&shared.name));
        let connected = tokio::select! {
            result = connect => result.unwrap_or(Err(TransportError::Timeout)),
            () = ctx.cancel.cancelled() => break,
        };
        match connected {
            Ok(link) => {
                info!(doc = %shared.name, transport = %link.kind, "connected");
                // Only a connection that got as far as a full sync resets the backoff, so a
                // relay that accepts and then refuses us is not hammered.
                if session(&shared, link, &mut outbox, &ctx.cancel).await {
                    failures = 0;
                }
                info!(doc = %shared.name, "disconnected");
            }
            Err(TransportError::Refused { status, reason }) => {
                info!(doc = %shared.name, status, %reason, "relay refused the connection");
                shared
                    .state
                    .send_modify(|s| s.denied = Some(format!("{status} {reason}")));
            }
            Err(TransportError::NotConfigured) => {
                shared
                    .state
                    .send_modify(|s| s.connection = Connection::Offline);
                ctx.cancel.cancelled().await;
                break;
            }
            Err(e) => debug!(doc = %shared.name, error = %e, "connection failed"),
        }
        shared.state.send_modify(|s| {
            s.connection = Connection::Offline;
            s.synced = false;
        });
        tokio::select! {
            () = tokio::time::sleep(ctx.backoff.jittered(failures, shared.doc.client_id().get())) => {}
            () = ctx.cancel.cancelled() => break,
        }
        failures = failures.saturating_add(1);
    }
    shared.state.send_modify(|s| {
        s.connection = Connection::Offline;
        s.synced = false;
    });
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
