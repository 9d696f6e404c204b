//! Cluster mode's wiring: what [`crate::run`] opens when `--cluster` is set, and the one task
//! that joins the other relays' events to this relay's listeners and rooms.
//!
//! The JetStream engine ([`crate::jetstream`]) gives the storage, presence, the events link and
//! the locks bucket; here they become the relay's [`Storage`], [`Events`] (shared: what this
//! relay publishes reaches every relay's listeners) and [`Locks`] (one holder across relays).
//! A `deleted` event from another relay also closes this relay's room of that document, with
//! the same close reason as a deletion through this relay.

use std::sync::Arc;

use crate::events::Events;
use crate::jetstream::events::RemoteEvents;
use crate::jetstream::presence::NatsPresence;
use crate::jetstream::{ClusterSettings, JetStreamEngine};
use crate::locks::Locks;
use crate::presence::Presence;
use crate::rooms::Rooms;
use crate::storage::{Storage, StoreError};

/// What cluster mode opens.
pub struct Cluster {
    /// The documents, in JetStream.
    pub storage: Storage,
    /// Presence shared with the other relays.
    pub presence: Arc<dyn Presence>,
    /// This relay's link to the others (its id, who is alive), for the admin's cluster-wide
    /// view of sessions.
    pub link: NatsPresence,
    /// The event bus, shared with the other relays.
    pub events: Events,
    /// Locks, held across relays.
    pub locks: Locks,
    /// The other relays' events, subscribed to; [`Cluster::follow`] delivers them.
    pub remote: RemoteEvents,
}

impl Cluster {
    /// Connects to the cluster and opens everything a relay shares with the others. Events
    /// the others publish from when this returns are kept for [`Cluster::follow`].
    pub async fn open(settings: &ClusterSettings) -> Result<Cluster, StoreError> {
        let engine = JetStreamEngine::connect(settings).await?;
        let (sending, remote) = engine.events().await?;
        let events = Events::shared(Arc::new(sending));
        let locks = Locks::kept_in(Arc::new(engine.locks(events.clone()).await?));
        let link = engine.presence();
        let presence: Arc<dyn Presence> = Arc::new(link.clone());
        Ok(Cluster {
            storage: Storage::with_history(engine),
            presence,
            link,
            events,
            locks,
            remote,
        })
    }

    /// Delivers the other relays' events to this relay's listeners on `events`, and closes
    /// the rooms of documents they delete, for as long as the relay runs.
    pub fn follow(remote: RemoteEvents, events: Events, rooms: Rooms) {
        tokio::spawn(remote.run(events, move |doc| {
            let rooms = rooms.clone();
            tokio::spawn(async move { rooms.deleted_elsewhere(&doc).await });
        }));
    }
}
