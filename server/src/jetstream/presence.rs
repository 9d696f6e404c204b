//! Presence between relays over core NATS (not JetStream: presence is ephemeral).
//!
//! Subjects, under the cluster's prefix: `{prefix}.presence.{hex of the name}` carries a
//! document's awareness updates, each with the sending relay and connection in its headers,
//! and the question a relay asks when it loads the document (a message with the query header
//! and no connection), which the others answer with their connections' current states;
//! `{prefix}.relays` carries each relay's heartbeat, its id, every [`HEARTBEAT`]. A relay not
//! heard from for [`RELAY_TIMEOUT`] is gone: the connections it stood for leave every
//! document's presence.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aetherflow_crdt::{ConnId, DocName};
use async_nats::HeaderMap;
use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::key;
use crate::presence::{Presence, PresenceEvent, PresenceFeed, remote_conn};
use crate::storage::Pending;

/// How often a relay says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a relay may be silent before its connections leave everyone's presence.
pub const RELAY_TIMEOUT: Duration = Duration::from_secs(4);

const RELAY_HEADER: &str = "Aetherflow-Relay";
const CONN_HEADER: &str = "Aetherflow-Conn";
const QUERY_HEADER: &str = "Aetherflow-Presence-Query";

/// Presence shared over NATS; cheap to clone.
#[derive(Clone)]
pub struct NatsPresence {
    client: async_nats::Client,
    prefix: String,
    /// This relay's id.
    relay: String,
    /// Relays found silent, as they are found.
    gone: broadcast::Sender<String>,
    /// When each other relay was last heard from (a heartbeat or a presence update).
    seen: Arc<Mutex<HashMap<String, Instant>>>,
}

impl NatsPresence {
    /// Starts this relay's heartbeat and the watch on the others'.
    pub(super) fn start(client: async_nats::Client, prefix: String) -> NatsPresence {
        let (gone, _) = broadcast::channel(64);
        let presence = NatsPresence {
            client,
            prefix,
            relay: uuid::Uuid::now_v7().to_string(),
            gone,
            seen: Arc::default(),
        };
        tokio::spawn(presence.clone().beat());
        tokio::spawn(presence.clone().watch());
        presence
    }

    /// This relay's id in the cluster.
    pub fn relay_id(&self) -> &str {
        &self.relay
    }

    /// How many other relays were heard from within [`RELAY_TIMEOUT`].
    pub(super) fn others_alive(&self) -> usize {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The NATS connection and the cluster's prefix, for other relay-to-relay exchanges.
    pub(super) fn link(&self) -> (&async_nats::Client, &str) {
        (&self.client, &self.prefix)
    }

    /// `relay` was heard from now.
    fn heard(&self, relay: String) {
        if relay != self.relay {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.insert(relay, Instant::now());
        }
    }

    fn relays_subject(&self) -> String {
        format!("{}.relays", self.prefix)
    }

    /// Says this relay is alive, every [`HEARTBEAT`], for as long as the process runs.
    async fn beat(self) {
        let mut ticks = tokio::time::interval(HEARTBEAT);
        loop {
            ticks.tick().await;
            let id = self.relay.clone().into_bytes().into();
            let _ = self.client.publish(self.relays_subject(), id).await;
        }
    }

    /// Follows the other relays' heartbeats; announces each one that falls silent.
    async fn watch(self) {
        let Ok(mut beats) = self.client.subscribe(self.relays_subject()).await else {
            tracing::error!("cannot follow the relays' heartbeats; presence of dead relays stays");
            return;
        };
        let mut sweep = tokio::time::interval(HEARTBEAT / 2);
        loop {
            tokio::select! {
                beat = beats.next() => {
                    let Some(beat) = beat else { return };
                    let relay = String::from_utf8_lossy(&beat.payload).into_owned();
                    self.heard(relay);
                }
                _ = sweep.tick() => {
                    let now = Instant::now();
                    let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                    seen.retain(|relay, at| {
                        let alive = now.duration_since(*at) < RELAY_TIMEOUT;
                        if !alive {
                            tracing::info!(%relay, "a relay fell silent; its clients leave presence");
                            let _ = self.gone.send(relay.clone());
                        }
                        alive
                    });
                }
            }
        }
    }
}

impl Presence for NatsPresence {
    fn publish(&self, doc: &DocName, conn: ConnId, payload: Vec<u8>) {
        let subject = format!("{}.presence.{}", self.prefix, key(doc));
        let mut headers = HeaderMap::new();
        headers.insert(RELAY_HEADER, self.relay.as_str());
        headers.insert(CONN_HEADER, conn.0.to_string().as_str());
        let client = self.client.clone();
        tokio::spawn(async move {
            let _ = client
                .publish_with_headers(subject, headers, payload.into())
                .await;
        });
    }

    fn follow(&self, doc: DocName) -> Pending<'_, PresenceFeed> {
        Box::pin(async move {
            let subject = format!("{}.presence.{}", self.prefix, key(&doc));
            let updates = self
                .client
                .subscribe(subject)
                .await
                .map_err(super::unreachable)?;
            // Subscribed first, so no answer to the question is missed.
            let mut question = HeaderMap::new();
            question.insert(RELAY_HEADER, self.relay.as_str());
            question.insert(QUERY_HEADER, "1");
            let subject = format!("{}.presence.{}", self.prefix, key(&doc));
            if let Err(e) = self
                .client
                .publish_with_headers(subject, question, bytes::Bytes::new())
                .await
            {
                tracing::debug!(error = %e, "cannot ask the other relays for their presence");
            }
            let own = self.relay.clone();
            let presence = self.clone();
            // The connections each other relay stood for on this document.
            let known: Arc<Mutex<HashMap<String, HashSet<ConnId>>>> = Arc::default();
            let on_update = known.clone();
            let updates = updates.filter_map(move |message| {
                let header =
                    |name: &str| super::header(message.headers.as_ref(), name).map(str::to_owned);
                let event = match (header(RELAY_HEADER), header(CONN_HEADER)) {
                    (Some(relay), None) if relay != own && header(QUERY_HEADER).is_some() => {
                        Some(PresenceEvent::Asked)
                    }
                    (Some(relay), Some(conn)) if relay != own => {
                        presence.heard(relay.clone());
                        conn.parse::<u64>().ok().map(|conn| {
                            let origin = remote_conn(&relay, conn);
                            let mut known = on_update.lock().unwrap_or_else(|p| p.into_inner());
                            known.entry(relay).or_default().insert(origin);
                            PresenceEvent::Update {
                                origin,
                                payload: message.payload.to_vec(),
                            }
                        })
                    }
                    _ => None,
                };
                std::future::ready(event)
            });
            let gone = tokio_stream_of(self.gone.subscribe()).filter_map(move |relay| {
                let origins = known
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&relay)
                    .map(|origins| origins.into_iter().collect::<Vec<_>>());
                std::future::ready(origins.map(|origins| PresenceEvent::Gone { origins }))
            });
            Ok(Box::pin(futures_util::stream::select(updates, gone)) as PresenceFeed)
        })
    }
}

/// A broadcast receiver as a stream of what it receives (missed values are skipped).
fn tokio_stream_of(
    receiver: broadcast::Receiver<String>,
) -> impl futures_util::Stream<Item = String> + Send {
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(relay) => return Some((relay, receiver)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}
