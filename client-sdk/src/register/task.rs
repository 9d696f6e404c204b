//! The task of one register document: connect, send what is pending, apply what the relay
//! says, reconnect with backoff.

use std::sync::Arc;

use tracing::{debug, info};

use super::RegisterShared;
use crate::doc::Connection;
use crate::error::TransportError;
use crate::task::TaskContext;
use crate::transport::{RegisterLink, RegisterMessage};

/// Runs until `ctx.cancel` fires.
pub(crate) async fn run(shared: Arc<RegisterShared>, ctx: TaskContext) {
    let seed = shared
        .name
        .bytes()
        .fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b));
    let mut failures: u32 = 0;
    loop {
        shared.state.send_modify(|s| {
            s.connection = Connection::Connecting {
                attempt: failures + 1,
            };
        });
        let connect = tokio::time::timeout(
            ctx.connect_timeout,
            ctx.transport.connect_register(&shared.name),
        );
        let connected = tokio::select! {
            result = connect => result.unwrap_or(Err(TransportError::Timeout)),
            () = ctx.cancel.cancelled() => break,
        };
        match connected {
            Ok(link) => {
                info!(register = %shared.name, transport = %link.kind, "connected");
                if session(&shared, link, &ctx).await {
                    failures = 0;
                }
                info!(register = %shared.name, "disconnected");
            }
            Err(TransportError::Refused { status, reason }) => {
                info!(register = %shared.name, status, %reason, "relay refused the connection");
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
            Err(e) => debug!(register = %shared.name, error = %e, "connection failed"),
        }
        shared
            .state
            .send_modify(|s| s.connection = Connection::Offline);
        tokio::select! {
            () = tokio::time::sleep(ctx.backoff.jittered(failures, seed)) => {}
            () = ctx.cancel.cancelled() => break,
        }
        failures = failures.saturating_add(1);
    }
    shared
        .state
        .send_modify(|s| s.connection = Connection::Offline);
}

/// One link's life; returns whether the relay's state arrived.
async fn session(shared: &RegisterShared, mut link: RegisterLink, ctx: &TaskContext) -> bool {
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
                    if code == 4410 {
                        return true;
                    }
                }
                None => return true,
            },
            () = shared.wake.notified() => {}
            () = ctx.cancel.cancelled() => return true,
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
