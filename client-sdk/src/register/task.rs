//! The task of one register document: connect, send what is pending, apply what the relay
//! says, reconnect with backoff.

use aetherflow_crdt::code::Code;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::RegisterShared;
use crate::doc::Connection;
use crate::error::TransportError;
use crate::reconnect::{HasKind, Reconnecting};
use crate::transport::{RegisterLink, RegisterMessage, Transport, TransportKind};

/// A register kept connected by the reconnect loop.
pub(crate) struct RegisterLoop(pub Arc<RegisterShared>);

impl HasKind for RegisterLink {
    fn kind(&self) -> TransportKind {
        self.kind
    }
}

impl Reconnecting for RegisterLoop {
    type Link = RegisterLink;

    fn name(&self) -> &str {
        &self.0.name
    }

    fn seed(&self) -> u64 {
        self.0
            .name
            .bytes()
            .fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b))
    }

    async fn connect(&self, transport: &dyn Transport) -> Result<RegisterLink, TransportError> {
        transport.connect_register(&self.0.name).await
    }

    async fn session(&mut self, link: RegisterLink, cancel: &CancellationToken) -> bool {
        session(&self.0, link, cancel).await
    }

    fn set_connection(&self, connection: Connection) {
        self.0.state.send_modify(|s| s.connection = connection);
    }

    fn set_denied(&self, reason: String) {
        self.0.state.send_modify(|s| s.denied = Some(reason));
    }
}

/// One link's life; returns whether the relay's state arrived.
async fn session(
    shared: &RegisterShared,
    mut link: RegisterLink,
    cancel: &CancellationToken,
) -> bool {
    let Some(RegisterMessage::Event { name, data }) = link.incoming.recv().await else {
        return false;
    };
    if name != "state" {
        debug!(register = %shared.name, %name, "the link did not start with the state");
        return false;
    }
    let _ = shared.change(|replica| Ok::<_, ()>(replica.connected(&data)));
    let kind = link.kind;
    shared.state.send_modify(|s| {
        s.connection = Connection::Online(kind);
        s.denied = None;
    });
    loop {
        if !send_unsent(shared, &link).await {
            return true;
        }
        tokio::select! {
            incoming = link.incoming.recv() => match incoming {
                Some(RegisterMessage::Event { name, data }) => {
                    let _ = shared.change(|replica| Ok::<_, ()>(replica.on_event(&name, data)));
                    if name == "lagged" {
                        // The relay dropped events for us: subscribe again for a fresh state.
                        debug!(register = %shared.name, "fell behind the relay's events; resubscribing");
                        return true;
                    }
                }
                Some(RegisterMessage::Error { code, reason }) => {
                    debug!(register = %shared.name, code, %reason, "relay error");
                    let _ = shared.change(|replica| Ok::<_, ()>(replica.on_error(code, reason)));
                    if code == Code::DocumentDeleted.as_u32() {
                        return true;
                    }
                }
                None => return true,
            },
            () = shared.wake.notified() => {}
            () = cancel.cancelled() => return true,
        }
    }
}

/// Sends every command not sent on this link yet; false if the link is gone.
async fn send_unsent(shared: &RegisterShared, link: &RegisterLink) -> bool {
    for command in shared.take_unsent() {
        if link.outgoing.send(command).await.is_err() {
            return false;
        }
    }
    true
}
