//! The per-document event bus: who joined or left, what changed, conflicts, locks.
//!
//! Rooms, register writes and locks publish [`DocEvent`]s (typed in `aetherflow_crdt::event`); the SSE stream
//! (`GET /api/v1/docs/{name}/events`) and the live WebSocket channel
//! (`/api/v1/docs/{name}/live`) subscribe. An event is JSON with a `type` field; it never
//! carries a token. Publishing to a document nobody listens to costs one map lookup.
//!
//! In cluster mode the bus is [`Events::shared`]: what this relay publishes also goes to the
//! other relays through an [`EventShare`], and what they publish arrives through
//! [`Events::deliver`], for this relay's listeners only (never passed on again, so an event
//! reaches every relay's listeners once).
//!
//! ```
//! use aetherflow_crdt::DocName;
//! use aetherflow_server::events::{DocEvent, Events};
//! let events = Events::new();
//! let doc = DocName::parse("notes").unwrap();
//! let mut listener = events.subscribe(&doc);
//! events.publish(&doc, DocEvent::Deleted);
//! let event = listener.try_recv().unwrap();
//! assert_eq!(event.to_json()["type"], "deleted");
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aetherflow_crdt::DocName;
use tokio::sync::{broadcast, mpsc};

/// Events a listener may fall behind by before it is told it missed some (`lagged`).
pub const EVENT_BUFFER: usize = 256;

pub use aetherflow_crdt::event::DocEvent;

/// The registry of per-document channels; cheap to clone.
#[derive(Clone, Default)]
pub struct Events {
    channels: Arc<Mutex<HashMap<DocName, broadcast::Sender<Arc<DocEvent>>>>>,
    /// One listener to the events of every document that pass its filter (webhooks' lock
    /// events), if any.
    tap: Arc<Mutex<Option<Tap>>>,
    /// Where this relay's events go to the other relays (cluster mode).
    share: Option<Arc<dyn EventShare>>,
}

/// Passes a relay's events on to the other relays of a cluster.
pub trait EventShare: Send + Sync {
    /// Sends `event` of `doc`, published on this relay, to the other relays. Must not wait:
    /// publishers are rooms and request handlers.
    fn share(&self, doc: &DocName, event: &DocEvent);
}

/// What [`Events::tap`] set up.
struct Tap {
    keep: fn(&DocEvent) -> bool,
    tx: mpsc::Sender<(DocName, Arc<DocEvent>)>,
}

/// Events of every document that a tap holds before it drops new ones.
pub const TAP_BUFFER: usize = 1024;

impl Events {
    /// An empty bus.
    pub fn new() -> Events {
        Events::default()
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<DocName, broadcast::Sender<Arc<DocEvent>>>> {
        // Single inserts and removes cannot leave the map inconsistent.
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A bus whose events also go to the other relays through `share` (cluster mode).
    pub fn shared(share: Arc<dyn EventShare>) -> Events {
        Events {
            share: Some(share),
            ..Events::default()
        }
    }

    /// Listens to `doc`'s events from now on.
    pub fn subscribe(&self, doc: &DocName) -> broadcast::Receiver<Arc<DocEvent>> {
        let mut channels = self.lock();
        channels.retain(|_, tx| tx.receiver_count() > 0);
        channels
            .entry(doc.clone())
            .or_insert_with(|| broadcast::channel(EVENT_BUFFER).0)
            .subscribe()
    }

    /// Listens to the events of every document that pass `keep`, replacing any earlier tap.
    /// Up to [`TAP_BUFFER`] events wait for the receiver; beyond that new ones are dropped
    /// (and logged), so a slow receiver never holds up a publisher.
    pub fn tap(&self, keep: fn(&DocEvent) -> bool) -> mpsc::Receiver<(DocName, Arc<DocEvent>)> {
        let (tx, rx) = mpsc::channel(TAP_BUFFER);
        *self.tap.lock().unwrap_or_else(|p| p.into_inner()) = Some(Tap { keep, tx });
        rx
    }

    /// Tells `doc`'s listeners, if any, and in cluster mode the other relays'.
    pub fn publish(&self, doc: &DocName, event: DocEvent) {
        if let Some(share) = &self.share {
            share.share(doc, &event);
        }
        let event = Arc::new(event);
        if let Some(tap) = &*self.tap.lock().unwrap_or_else(|p| p.into_inner())
            && (tap.keep)(&event)
            && tap.tx.try_send((doc.clone(), event.clone())).is_err()
        {
            tracing::warn!(doc = %doc, "event tap full or closed: event not passed on");
        }
        self.deliver(doc, event);
    }

    /// Tells this relay's listeners of `doc` about an event another relay published (cluster
    /// mode): not shared again, and not tapped (the publishing relay's tap saw it).
    pub fn deliver(&self, doc: &DocName, event: Arc<DocEvent>) {
        let mut channels = self.lock();
        if let Some(tx) = channels.get(doc)
            && tx.send(event).is_err()
        {
            // Nobody listens any more.
            channels.remove(doc);
        }
    }

    /// Tells every listener of every document that it may have missed `missed` events (events
    /// from another relay were lost on the way, and which documents they were for is unknown).
    pub fn lagged_everywhere(&self, missed: u64) {
        let event = Arc::new(DocEvent::Lagged { missed });
        for tx in self.lock().values() {
            let _ = tx.send(event.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_with_a_type_and_no_empty_fields() {
        let event = DocEvent::Updated {
            kind: aetherflow_crdt::register::Kind::Yjs,
            bytes: Some(12),
            register: None,
        };
        assert_eq!(
            event.to_json(),
            serde_json::json!({ "type": "updated", "kind": "yjs", "bytes": 12 })
        );
        assert_eq!(event.name(), "updated");
    }

    #[test]
    fn listeners_hear_only_their_document() {
        let events = Events::new();
        let a = DocName::parse("a").expect("valid name");
        let b = DocName::parse("b").expect("valid name");
        let mut on_a = events.subscribe(&a);
        events.publish(&b, DocEvent::Deleted);
        events.publish(
            &a,
            DocEvent::LockReleased {
                holder: "ann".into(),
            },
        );
        let got = on_a.try_recv().expect("one event");
        assert_eq!(
            *got,
            DocEvent::LockReleased {
                holder: "ann".into()
            }
        );
        assert!(on_a.try_recv().is_err());
    }
}
