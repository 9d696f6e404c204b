//! The reconnect loop shared by documents and registers: connect with a deadline, run a
//! session until its link ends, then wait a jittered, growing backoff and try again, until
//! the client closes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Backoff;
use crate::doc::Connection;
use crate::error::TransportError;
use crate::transport::{Transport, TransportKind};

/// What a reconnect loop needs besides the thing it keeps connected.
pub(crate) struct TaskContext {
    pub transport: Arc<dyn Transport>,
    pub connect_timeout: Duration,
    pub backoff: Backoff,
    pub cancel: CancellationToken,
}

/// A link of either kind, for the loop's logs.
pub(crate) trait HasKind {
    fn kind(&self) -> TransportKind;
}

/// A document or register that a reconnect loop keeps connected.
pub(crate) trait Reconnecting {
    /// What `connect` yields.
    type Link: HasKind;

    /// The document's name, for logs.
    fn name(&self) -> &str;

    /// Seeds the backoff's jitter, so clients do not retry in step.
    fn seed(&self) -> u64;

    /// Opens a link through `transport`.
    fn connect(
        &self,
        transport: &dyn Transport,
    ) -> impl Future<Output = Result<Self::Link, TransportError>> + Send;

    /// One link's life; whether it got far enough (synced, or the relay's state arrived) to
    /// reset the backoff, so a relay that accepts and then refuses us is not hammered.
    fn session(
        &mut self,
        link: Self::Link,
        cancel: &CancellationToken,
    ) -> impl Future<Output = bool> + Send;

    /// Publishes the connection state (`Offline` also ends "synced" where there is one).
    fn set_connection(&self, connection: Connection);

    /// Publishes the relay's refusal.
    fn set_denied(&self, reason: String);
}

/// Runs until `ctx.cancel` fires.
pub(crate) async fn run<R: Reconnecting>(mut target: R, ctx: TaskContext) {
    let seed = target.seed();
    let mut failures: u32 = 0;
    loop {
        target.set_connection(Connection::Connecting {
            attempt: failures + 1,
        });
        let connect = tokio::time::timeout(ctx.connect_timeout, target.connect(&*ctx.transport));
        let connected = tokio::select! {
            result = connect => result.unwrap_or(Err(TransportError::Timeout)),
            () = ctx.cancel.cancelled() => break,
        };
        match connected {
            Ok(link) => {
                info!(doc = %target.name(), transport = %link.kind(), "connected");
                if target.session(link, &ctx.cancel).await {
                    failures = 0;
                }
                info!(doc = %target.name(), "disconnected");
            }
            Err(TransportError::Refused { status, reason }) => {
                info!(doc = %target.name(), status, %reason, "relay refused the connection");
                target.set_denied(format!("{status} {reason}"));
            }
            Err(TransportError::Tls(reason)) => {
                warn!(doc = %target.name(), %reason, "TLS handshake with the relay failed");
                target.set_denied(format!("TLS: {reason}"));
            }
            Err(TransportError::NotConfigured) => {
                target.set_connection(Connection::Offline);
                ctx.cancel.cancelled().await;
                break;
            }
            Err(e) => debug!(doc = %target.name(), error = %e, "connection failed"),
        }
        target.set_connection(Connection::Offline);
        tokio::select! {
            () = tokio::time::sleep(ctx.backoff.jittered(failures, seed)) => {}
            () = ctx.cancel.cancelled() => break,
        }
        failures = failures.saturating_add(1);
    }
    target.set_connection(Connection::Offline);
}
