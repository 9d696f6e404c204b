//! Stateless messages between the Hocuspocus connections of one document.
//!
//! A stateless message is an application string (a "someone is typing" signal, a comment
//! notification) that is relayed to the document's other Hocuspocus connections and never
//! stored. Each open document of a connection registers its room outbox here; a message goes
//! into every other registered outbox of the document, as the room's own frames do, so it
//! is bounded by the same `--outbox-max-bytes` and a reader that falls behind is closed
//! (1013) like one that falls behind on updates. y-websocket connections are not registered:
//! their protocol has no stateless messages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use aetherflow_crdt::{ConnId, DocName};
use bytes::Bytes;

use crate::rooms::{Outbound, OutboxSender};

/// Each document's registered outboxes, by the connection that registered them.
type Outboxes = HashMap<DocName, Vec<(ConnId, OutboxSender)>>;

/// The registered outboxes of every document; cheap to clone.
#[derive(Clone, Default)]
pub struct StatelessChannels {
    inner: Arc<Mutex<Outboxes>>,
}

/// One document's registration on one connection; dropping it unregisters.
pub struct Registration {
    channels: StatelessChannels,
    doc: DocName,
    conn: ConnId,
}

impl StatelessChannels {
    fn lock(&self) -> MutexGuard<'_, Outboxes> {
        // Single pushes and removals cannot leave the map inconsistent.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers `conn`'s outbox for `doc` until the returned registration is dropped.
    pub fn register(&self, doc: &DocName, conn: ConnId, outbox: OutboxSender) -> Registration {
        self.lock()
            .entry(doc.clone())
            .or_default()
            .push((conn, outbox));
        Registration {
            channels: self.clone(),
            doc: doc.clone(),
            conn,
        }
    }

    /// Queues `frame` (a stateless message without its address) for every connection of
    /// `doc` but `from`; returns how many took it. An outbox that cannot take it is full (its
    /// reader is closed as fallen behind) or gone.
    pub fn relay(&self, doc: &DocName, from: ConnId, frame: Bytes) -> usize {
        let map = self.lock();
        let Some(outboxes) = map.get(doc) else {
            return 0;
        };
        outboxes
            .iter()
            .filter(|(conn, _)| *conn != from)
            .filter(|(_, outbox)| outbox.try_send(Outbound::Frame(frame.clone())).is_ok())
            .count()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self.channels.lock();
        if let Some(outboxes) = map.get_mut(&self.doc) {
            outboxes.retain(|(conn, _)| *conn != self.conn);
            if outboxes.is_empty() {
                map.remove(&self.doc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::outbox;

    #[tokio::test]
    async fn a_stateless_message_reaches_the_documents_other_connections_only() {
        let channels = StatelessChannels::default();
        let doc = DocName::parse("d").expect("name");
        let other = DocName::parse("e").expect("name");
        let (a, mut a_rx) = outbox::channel(1 << 20);
        let (b, mut b_rx) = outbox::channel(1 << 20);
        let (c, _c_rx) = outbox::channel(1 << 20);
        let _a = channels.register(&doc, ConnId(1), a);
        let b_registration = channels.register(&doc, ConnId(2), b);
        let _c = channels.register(&other, ConnId(3), c);
        assert_eq!(
            channels.relay(&doc, ConnId(1), Bytes::from_static(b"hi")),
            1
        );
        assert!(matches!(b_rx.recv().await, Some(Outbound::Frame(f)) if f == "hi"));
        drop(b_registration);
        assert_eq!(channels.relay(&doc, ConnId(1), Bytes::from_static(b"x")), 0);
        assert_eq!(channels.relay(&doc, ConnId(2), Bytes::from_static(b"y")), 1);
        assert!(matches!(a_rx.recv().await, Some(Outbound::Frame(f)) if f == "y"));
        assert!(channels.lock().get(&other).is_some());
    }
}
