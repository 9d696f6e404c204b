//! Document events between the relays of a cluster, over core NATS (events are
//! notifications, not state: nothing here is stored).
//!
//! Each relay publishes the events its own rooms, register writes and locks announce on
//! `{prefix}.events.{hex of the name}`, JSON as SSE shows it, with its relay id and a
//! sequence number (one counter per relay, across documents) in the headers. Every relay
//! subscribes to `{prefix}.events.*` once, before it says it is ready, and passes what the
//! other relays publish to its own listeners only ([`Events::deliver`]); its own events come
//! back from NATS and are skipped, so an event reaches each relay's listeners once.
//!
//! The promise: at most once across relays, in the order its relay published it. An event is
//! lost when a relay's outgoing queue is full ([`OUTBOX`]) or NATS drops it (a relay cut off
//! from its server, a slow subscriber); the next event of that relay shows a gap in its
//! sequence, and every listener on the receiving relay is then sent `lagged` (which document
//! the lost events were for is unknown), the same event a listener gets when it falls behind
//! on one relay: refetch what you show. Events lost after the last one a relay sends are not
//! noticed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aetherflow_crdt::DocName;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{JetStreamEngine, key, name_of, unreachable};
use crate::events::{DocEvent, EventShare, Events};
use crate::storage::StoreError;

/// Events a relay queues for NATS before it drops new ones (and the others see a gap).
pub const OUTBOX: usize = 4096;

const RELAY_HEADER: &str = "Aetherflow-Relay";
const SEQ_HEADER: &str = "Aetherflow-Seq";

/// What one relay publishes, queued in order for the NATS connection.
type Outgoing = (String, HeaderMap, Bytes);

/// This relay's side of the events link: passes its events to the others.
pub struct NatsEvents {
    prefix: String,
    relay: String,
    /// The last sequence number given out.
    seq: AtomicU64,
    outbox: mpsc::Sender<Outgoing>,
}

/// The other relays' events, subscribed to; [`RemoteEvents::run`] delivers them.
pub struct RemoteEvents {
    subscriber: async_nats::Subscriber,
    relay: String,
    prefix: String,
}

impl JetStreamEngine {
    /// The events link of this relay: the sending side, and the other relays' events, already
    /// subscribed to when this returns (so none published afterwards is missed).
    pub async fn events(&self) -> Result<(NatsEvents, RemoteEvents), StoreError> {
        let client = self.inner.js.client();
        let prefix = self.inner.prefix.clone();
        let relay = uuid::Uuid::now_v7().to_string();
        let subscriber = client
            .subscribe(format!("{prefix}.events.*"))
            .await
            .map_err(unreachable)?;
        client.flush().await.map_err(unreachable)?;
        let (outbox, queued) = mpsc::channel(OUTBOX);
        tokio::spawn(send_all(client, queued));
        let sending = NatsEvents {
            prefix: prefix.clone(),
            relay: relay.clone(),
            seq: AtomicU64::new(0),
            outbox,
        };
        let remote = RemoteEvents {
            subscriber,
            relay,
            prefix,
        };
        Ok((sending, remote))
    }
}

/// Publishes what is queued, in order, for as long as the relay runs.
async fn send_all(client: async_nats::Client, mut queued: mpsc::Receiver<Outgoing>) {
    while let Some((subject, headers, payload)) = queued.recv().await {
        if let Err(e) = client.publish_with_headers(subject, headers, payload).await {
            tracing::debug!(error = %e, "an event did not reach NATS");
        }
    }
}

impl EventShare for NatsEvents {
    fn share(&self, doc: &DocName, event: &DocEvent) {
        // Taken even when the event is dropped below: the others see the gap.
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(payload) = serde_json::to_vec(event) else {
            return;
        };
        let mut headers = HeaderMap::new();
        headers.insert(RELAY_HEADER, self.relay.as_str());
        headers.insert(SEQ_HEADER, seq.to_string().as_str());
        let subject = format!("{}.events.{}", self.prefix, key(doc));
        if self
            .outbox
            .try_send((subject, headers, payload.into()))
            .is_err()
        {
            tracing::warn!(doc = %doc, "events to other relays queued past {OUTBOX}: event dropped");
        }
    }
}

impl RemoteEvents {
    /// Delivers the other relays' events to this relay's listeners on `events`, and calls
    /// `deleted` for each document another relay deleted; returns when NATS closes the
    /// subscription (the relay is stopping).
    pub async fn run(mut self, events: Events, deleted: impl Fn(DocName) + Send) {
        let mut sequences = Sequences::default();
        let topic = format!("{}.events.", self.prefix);
        while let Some(message) = self.subscriber.next().await {
            let header = |name: &str| super::header(message.headers.as_ref(), name);
            let (Some(relay), Some(seq)) = (header(RELAY_HEADER), header(SEQ_HEADER)) else {
                continue;
            };
            if relay == self.relay {
                continue;
            }
            let missed = sequences.observe(relay, seq.parse().unwrap_or(0));
            if missed > 0 {
                tracing::warn!(%relay, missed, "events from another relay were lost; listeners told they lagged");
                events.lagged_everywhere(missed);
            }
            let doc = message
                .subject
                .as_str()
                .strip_prefix(&topic)
                .and_then(name_of);
            let event = serde_json::from_slice::<DocEvent>(&message.payload);
            let (Some(doc), Ok(event)) = (doc, event) else {
                tracing::debug!(subject = %message.subject, "an unreadable event from another relay");
                continue;
            };
            if event == DocEvent::Deleted {
                deleted(doc.clone());
            }
            events.deliver(&doc, Arc::new(event));
        }
    }
}

/// The sequence numbers seen from each other relay, to notice lost events. Pure.
#[derive(Debug, Default)]
pub struct Sequences {
    last: HashMap<String, u64>,
}

/// Relays remembered before the oldest-numbered ones are forgotten (relays come and go: each
/// start is a new id).
const MAX_RELAYS: usize = 1024;

impl Sequences {
    /// Records `seq` from `relay`; returns how many of its events were skipped since the
    /// last one seen (0 for the first one seen from a relay, or one out of order).
    pub fn observe(&mut self, relay: &str, seq: u64) -> u64 {
        if !self.last.contains_key(relay) && self.last.len() >= MAX_RELAYS {
            self.last.clear();
        }
        let last = self.last.entry(relay.to_owned()).or_insert(seq);
        let missed = seq.saturating_sub(*last).saturating_sub(1);
        *last = (*last).max(seq);
        missed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_in_a_relays_sequence_counts_the_missing_events_once() {
        let mut seen = Sequences::default();
        assert_eq!(seen.observe("a", 7), 0, "first seen: no gap");
        assert_eq!(seen.observe("a", 8), 0);
        assert_eq!(seen.observe("b", 1), 0, "another relay counts apart");
        assert_eq!(seen.observe("a", 11), 2, "9 and 10 lost");
        assert_eq!(seen.observe("a", 10), 0, "late, not a new gap");
        assert_eq!(seen.observe("a", 12), 0);
    }
}
