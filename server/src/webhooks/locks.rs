//! Lock and version-history events into the outbox. Locks live in memory (a restart frees
//! them), and labels and restores are announced by the HTTP routes once done, so these events
//! do not come from the change's own store commit: the relay's event bus passes them here
//! through a tap, and each is recorded in the outbox by its own commit; from then on it is
//! delivered like any other event.

use aetherflow_crdt::webhook::EventKind;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::events::{DocEvent, Events};
use crate::store::outbox::OutboxOp;
use crate::store::{StoreWriter, WriteOp};

/// The webhook event type and details of a lock or version event; `None` for other events.
fn lock_event(event: &DocEvent) -> Option<(EventKind, serde_json::Value)> {
    match event {
        DocEvent::LockAcquired { holder, expires_ms } => Some((
            EventKind::LockAcquired,
            json!({ "holder": holder, "expires_ms": expires_ms }),
        )),
        DocEvent::LockRenewed { holder, expires_ms } => Some((
            EventKind::LockRenewed,
            json!({ "holder": holder, "expires_ms": expires_ms }),
        )),
        DocEvent::LockReleased { holder } => {
            Some((EventKind::LockReleased, json!({ "holder": holder })))
        }
        DocEvent::LockExpired { holder } => {
            Some((EventKind::LockExpired, json!({ "holder": holder })))
        }
        DocEvent::VersionLabelled { version, label, by } => Some((
            EventKind::VersionLabelled,
            json!({ "version": version, "label": label, "by": by }),
        )),
        DocEvent::VersionRestored { version, by } => Some((
            EventKind::VersionRestored,
            json!({ "version": version, "by": by }),
        )),
        _ => None,
    }
}

/// Records every lock and version event published on `events` until `shutdown`.
pub async fn record(events: Events, writer: StoreWriter, shutdown: CancellationToken) {
    let mut tap = events.tap(|event| lock_event(event).is_some());
    loop {
        let (doc, event) = tokio::select! {
            () = shutdown.cancelled() => break,
            next = tap.recv() => match next {
                Some(next) => next,
                None => break,
            },
        };
        let Some((kind, data)) = lock_event(&event) else {
            continue;
        };
        let op = WriteOp::Webhook(OutboxOp::Record { doc, kind, data });
        if let Err(e) = writer.commit(op).await {
            tracing::warn!(error = %e, "cannot record a lock or version event for webhooks");
        }
    }
}
