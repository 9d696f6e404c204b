//! Loaded documents: one task per document (its room) and the registry that finds or starts
//! it.
//!
//! Sessions talk to a room only through its inbox ([`RoomCommand`]) and hear back through
//! their own outbox ([`Outbound`]); no lock is held across an await. A room loads its
//! document on first use and unloads itself after an idle period.

mod inbox;
pub mod outbox;
mod pipeline;
mod remote;
mod senders;
mod task;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aetherflow_crdt::protocol::Message;
use aetherflow_crdt::room::DocLimits;
use aetherflow_crdt::{ConnId, DocName};
use bytes::Bytes;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::inbox::{InboxReceiver, InboxSender, TrySendError};
pub use self::outbox::{OutboxReceiver, OutboxSender};
use crate::config::{Config, Durability};
use crate::connection::CloseReason;
use crate::events::Events;
use crate::metrics::Metrics;
use crate::presence::{Presence, PresenceEvent};
use crate::storage::Storage;

/// Commands a room's inbox holds before senders wait.
const INBOX_CAPACITY: usize = 1024;
/// Attempts to join a room that is unloading or failed to load, before giving up.
const JOIN_ATTEMPTS: usize = 5;

/// A connection's request to subscribe to a room.
#[derive(Debug)]
pub struct Join {
    /// The connection.
    pub conn: ConnId,
    /// The token's subject, for `user_joined`/`user_left` events.
    pub user: String,
    /// Whether its updates may be applied.
    pub can_write: bool,
    /// Where the room sends this connection's frames.
    pub outbox: OutboxSender,
    /// Told once the connection is subscribed; dropped if the room is going away.
    pub joined: oneshot::Sender<()>,
}

/// What a session asks of its room.
#[derive(Debug)]
pub enum RoomCommand {
    /// Subscribe a connection; the room answers on `joined` once the greeting is queued.
    /// Boxed because it is the largest command and rare: every slot of every room's inbox
    /// is as large as the largest command.
    Join(Box<Join>),
    /// A decoded y-protocols message from a connection.
    Message {
        /// The sender.
        conn: ConnId,
        /// The message.
        message: Message,
    },
    /// The connection has gone.
    Leave {
        /// The connection.
        conn: ConnId,
    },
    /// A v1 update from the HTTP API: applied like a writer's update; `done` is told once it
    /// is committed (and broadcast), or why it was refused.
    Apply {
        /// The update.
        update: Vec<u8>,
        /// Who applies it, named as its author in the history (a restore's token subject);
        /// `None` for HTTP writes, which name no author.
        by: Option<String>,
        /// The answer.
        done: oneshot::Sender<Result<(), ApplyError>>,
    },
    /// An entry another relay appended to the document's log (cluster mode): durable
    /// already, so applied and broadcast without being stored again. `Err`: following the log
    /// failed, and the room, which may now miss entries, reloads.
    Remote(Result<Vec<u8>, String>),
    /// Presence from another relay's connections (cluster mode).
    RemotePresence(PresenceEvent),
    /// Queue `frame` in the connection's outbox `times` times, once every update the
    /// connection sent before this command is committed and broadcast: a transport's
    /// acknowledgement that its client's updates are saved (Hocuspocus's sync status). A
    /// connection whose updates the room holds back (storage unwritable) gets none.
    Acknowledge {
        /// The connection.
        conn: ConnId,
        /// The acknowledgement, in the connection's own framing.
        frame: &'static [u8],
        /// How many updates it acknowledges.
        times: u32,
    },
    /// Delete the document: close every connection, remove it from the store, unload.
    /// `done` is told whether it existed.
    Delete {
        /// The answer.
        done: oneshot::Sender<Result<bool, ApplyError>>,
    },
    /// Another relay deleted the document (cluster mode): close every connection as
    /// [`RoomCommand::Delete`] does and unload, storing and announcing nothing (that relay
    /// did both).
    DeletedElsewhere,
}

/// Why the room did not apply an update from the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The bytes are not an acceptable Yjs v1 update; nothing was applied.
    #[error("{0}")]
    Invalid(String),
    /// The update is over a size limit (`--max-update-items`, `--max-doc-items`,
    /// `--max-doc-bytes`); nothing was applied.
    #[error("{0}")]
    TooLarge(String),
    /// The storage cannot be written (a full disk, an I/O error); nothing was applied.
    #[error("storage unavailable")]
    Storage,
    /// The room could not commit (another storage failure) or is gone.
    #[error("document unavailable: {0}")]
    Unavailable(String),
}

/// What a room sends a session.
#[derive(Debug)]
pub enum Outbound {
    /// One encoded y-protocols message: one WebSocket binary frame.
    Frame(Bytes),
    /// Close the connection.
    Close(CloseReason),
}

/// Settings a room needs, taken from [`Config`].
#[derive(Debug, Clone, Copy)]
pub struct RoomSettings {
    /// Broadcast after commit, or before.
    pub durability: Durability,
    /// Idle time before unloading.
    pub unload_after: Duration,
    /// Log length that triggers compaction.
    pub compact_after_updates: usize,
    /// Log bytes since the snapshot that trigger compaction (whatever the entry count).
    pub compact_after_bytes: usize,
    /// Which versions of the history thinning keeps (run after each compaction).
    pub history_retention: crate::history::Retention,
    /// What one update and one document may hold.
    pub doc_limits: DocLimits,
}

impl From<&Config> for RoomSettings {
    fn from(config: &Config) -> Self {
        RoomSettings {
            durability: config.durability,
            unload_after: config.unload_after,
            compact_after_updates: config.compact_after_updates,
            compact_after_bytes: config.compact_after_bytes,
            history_retention: config.history_retention,
            doc_limits: DocLimits {
                max_update_items: config.max_update_items,
                max_doc_items: config.max_doc_items,
                max_doc_bytes: config.max_doc_bytes,
            },
        }
    }
}

/// A room's inbox, with an id telling apart successive rooms of one document.
#[derive(Clone)]
struct RoomHandle {
    id: u64,
    inbox: InboxSender<RoomCommand>,
}

/// The registry of loaded documents; cheap to clone.
#[derive(Clone)]
pub struct Rooms {
    inner: Arc<RoomsInner>,
}

struct RoomsInner {
    loaded: Mutex<HashMap<DocName, RoomHandle>>,
    next_id: AtomicU64,
    storage: Storage,
    /// Presence shared with the other relays (cluster mode).
    presence: Option<Arc<dyn Presence>>,
    settings: RoomSettings,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    events: Events,
    metrics: Metrics,
}

/// A session's membership of a room: where to send its messages.
pub struct Membership {
    inbox: InboxSender<RoomCommand>,
    conn: ConnId,
}

/// Joining a room failed.
#[derive(Debug, thiserror::Error)]
#[error("document {0} is unavailable")]
pub struct JoinError(pub DocName);

/// The room stopped (storage failure or reload) while the session was in it.
#[derive(Debug, thiserror::Error)]
#[error("the document's room has stopped")]
pub struct RoomGone;

impl Rooms {
    /// A registry whose rooms keep their documents in `storage`, share presence through
    /// `presence` (cluster mode; `None` for one relay) and announce on `events`; room tasks
    /// are tracked by `tracker` and stop once `shutdown` is cancelled and their connections
    /// have left. They record into `metrics`.
    pub fn new(
        storage: Storage,
        presence: Option<Arc<dyn Presence>>,
        events: Events,
        settings: RoomSettings,
        tracker: TaskTracker,
        shutdown: CancellationToken,
        metrics: Metrics,
    ) -> Rooms {
        let inner = RoomsInner {
            loaded: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            storage,
            presence,
            settings,
            tracker,
            shutdown,
            events,
            metrics,
        };
        Rooms {
            inner: Arc::new(inner),
        }
    }

    /// Subscribes `conn` to document `doc`, loading it if needed. The room's greeting is in
    /// `outbox` when this returns. Unless `can_write`, the connection's updates are refused
    /// with y-protocols' permission-denied message.
    pub async fn join(
        &self,
        doc: &DocName,
        conn: ConnId,
        user: &str,
        can_write: bool,
        outbox: OutboxSender,
    ) -> Result<Membership, JoinError> {
        for _ in 0..JOIN_ATTEMPTS {
            let handle = self.find_or_start(doc);
            let (joined, answer) = oneshot::channel();
            let join = RoomCommand::Join(Box::new(Join {
                conn,
                user: user.to_owned(),
                can_write,
                outbox: outbox.clone(),
                joined,
            }));
            if handle.inbox.send(join).await.is_ok() && answer.await.is_ok() {
                return Ok(Membership {
                    inbox: handle.inbox,
                    conn,
                });
            }
            // The room was unloading or failed to load; the next attempt starts a new one.
            tokio::task::yield_now().await;
        }
        Err(JoinError(doc.clone()))
    }

    /// Applies a v1 update to `doc` through its room (loading it if needed), as a writer's
    /// WebSocket update would be: checked, committed, then broadcast to every connection.
    pub async fn apply(&self, doc: &DocName, update: Vec<u8>) -> Result<(), ApplyError> {
        self.apply_as(doc, update, None).await
    }

    /// [`Rooms::apply`], naming `by` as the update's author (in the log's history and
    /// webhooks' `document.changed`).
    pub async fn apply_as(
        &self,
        doc: &DocName,
        update: Vec<u8>,
        by: Option<String>,
    ) -> Result<(), ApplyError> {
        for _ in 0..JOIN_ATTEMPTS {
            let handle = self.find_or_start(doc);
            let (done, answer) = oneshot::channel();
            let command = RoomCommand::Apply {
                update: update.clone(),
                by: by.clone(),
                done,
            };
            // A room answers every command it takes; an unanswered one was dropped unapplied
            // by a room that was unloading (or deleting the document), so a retry is safe.
            if handle.inbox.send(command).await.is_ok()
                && let Ok(result) = answer.await
            {
                return result;
            }
            tokio::task::yield_now().await;
        }
        Err(ApplyError::Unavailable("room did not start".into()))
    }

    /// Deletes `doc` through its room: its connections are closed with
    /// [`CloseReason::DOCUMENT_DELETED`] and everything stored is removed. Returns whether
    /// the document existed.
    pub async fn delete(&self, doc: &DocName) -> Result<bool, ApplyError> {
        for _ in 0..JOIN_ATTEMPTS {
            let handle = self.find_or_start(doc);
            let (done, answer) = oneshot::channel();
            if handle
                .inbox
                .send(RoomCommand::Delete { done })
                .await
                .is_ok()
                && let Ok(result) = answer.await
            {
                return result;
            }
            tokio::task::yield_now().await;
        }
        Err(ApplyError::Unavailable("room did not start".into()))
    }

    /// Another relay deleted `doc` (cluster mode): if it is loaded here, its connections are
    /// closed with [`CloseReason::DOCUMENT_DELETED`] and the room unloads, so the next
    /// connection loads what is stored now (nothing).
    pub async fn deleted_elsewhere(&self, doc: &DocName) {
        let loaded = self.lock().get(doc).map(|handle| handle.inbox.clone());
        if let Some(inbox) = loaded {
            let _ = inbox.send(RoomCommand::DeletedElsewhere).await;
        }
    }

    /// The per-document event bus.
    pub fn events(&self) -> &Events {
        &self.inner.events
    }

    /// What rooms and their sessions record into.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Number of documents loaded now.
    pub fn loaded(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DocName, RoomHandle>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts
        // and removes), so a poisoned lock is still usable.
        self.inner
            .loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn find_or_start(&self, doc: &DocName) -> RoomHandle {
        let mut loaded = self.lock();
        if let Some(handle) = loaded.get(doc)
            && !handle.inbox.is_closed()
        {
            return handle.clone();
        }
        let (tx, rx) = inbox::channel(INBOX_CAPACITY);
        let handle = RoomHandle {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            inbox: tx,
        };
        loaded.insert(doc.clone(), handle.clone());
        let room = task::RoomTask::new(doc.clone(), handle.id, rx, self.clone());
        self.inner.tracker.spawn(room.run());
        handle
    }

    /// A sender into room `id` of `doc`'s inbox, while it is the registered one.
    fn sender_of(&self, doc: &DocName, id: u64) -> Option<InboxSender<RoomCommand>> {
        let loaded = self.lock();
        let handle = loaded.get(doc).filter(|handle| handle.id == id)?;
        Some(handle.inbox.clone())
    }

    /// Removes room `id` of `doc` from the registry, if it is still the registered one, and
    /// closes its inbox, all under the registry lock: a session either found the room before
    /// (and its join fails, so it retries) or finds no room and starts a new one. Unless
    /// `force`, a room with commands waiting stays.
    fn retire(
        &self,
        doc: &DocName,
        id: u64,
        inbox: &mut InboxReceiver<RoomCommand>,
        force: bool,
    ) -> bool {
        let mut loaded = self.lock();
        if !force && !inbox.is_empty() {
            return false;
        }
        if loaded.get(doc).is_some_and(|h| h.id == id) {
            loaded.remove(doc);
        }
        inbox.close();
        true
    }
}

impl Membership {
    /// Hands a message to the room; waits while the room's inbox is full.
    pub async fn send(&self, message: Message) -> Result<(), RoomGone> {
        let command = RoomCommand::Message {
            conn: self.conn,
            message,
        };
        // The waiting send is boxed: its future (the command plus a semaphore wait) would
        // otherwise be part of every session's future, idle or not, and it is only needed
        // when the room is behind.
        match self.inbox.try_send(command) {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(_)) => Err(RoomGone),
            Err(TrySendError::Full(command)) => Box::pin(self.inbox.send(command))
                .await
                .map_err(|_| RoomGone),
        }
    }
}

impl Membership {
    /// Asks the room to send `frame` `times` times once every update this membership sent
    /// so far is committed (see [`RoomCommand::Acknowledge`]).
    pub async fn acknowledge(&self, frame: &'static [u8], times: u32) -> Result<(), RoomGone> {
        let command = RoomCommand::Acknowledge {
            conn: self.conn,
            frame,
            times,
        };
        match self.inbox.try_send(command) {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(_)) => Err(RoomGone),
            Err(TrySendError::Full(command)) => Box::pin(self.inbox.send(command))
                .await
                .map_err(|_| RoomGone),
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let leave = RoomCommand::Leave { conn: self.conn };
        // A full inbox must not lose the leave (the room would keep the connection's presence).
        // Without a runtime (teardown) the room is going away too, and nothing is lost.
        if let Err(TrySendError::Full(leave)) = self.inbox.try_send(leave)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let inbox = self.inbox.clone();
            runtime.spawn(async move {
                let _ = inbox.send(leave).await;
            });
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Durability;
    use crate::metrics::Metrics;
    use crate::store::{self, Store, WriteMode};

    /// Rooms on a fresh durable store in `dir`, stopping when `shutdown` is cancelled. Needs
    /// a runtime: the store's writer task is spawned.
    pub(crate) fn test_rooms(dir: &std::path::Path, shutdown: CancellationToken) -> Rooms {
        let store = Store::open(&dir.join("db.redb")).expect("store");
        let (storage, _, _) = store::start(store, WriteMode::Durable, Metrics::new());
        let settings = RoomSettings {
            durability: Durability::Durable,
            unload_after: Duration::from_secs(30),
            compact_after_updates: 1000,
            compact_after_bytes: usize::MAX,
            history_retention: crate::history::Retention::DEFAULT,
            doc_limits: DocLimits::default(),
        };
        Rooms::new(
            storage,
            None,
            Events::new(),
            settings,
            TaskTracker::new(),
            shutdown,
            Metrics::new(),
        )
    }

    /// A room task for document "d" on a fresh store in `dir`. Needs a runtime.
    fn room_task(dir: &std::path::Path) -> task::RoomTask {
        let rooms = test_rooms(dir, CancellationToken::new());
        let (_inbox, commands) = inbox::channel(INBOX_CAPACITY);
        let name = DocName::parse("d").expect("name");
        task::RoomTask::new(name, 0, commands, rooms)
    }

    #[tokio::test]
    async fn an_idle_room_future_stays_small() {
        let dir = tempfile::tempdir().expect("temp dir");
        let room = room_task(dir.path()).run();
        // The future is what every loaded document's task holds, however idle: 1,416 bytes
        // before issue 7's third round (`run` and `serve` as `async fn`s kept the room's
        // state three times, and the unload timer sat in the select), 800 after.
        let bytes = std::mem::size_of_val(&room);
        assert!(bytes <= 850, "an idle room's future grew to {bytes} bytes");
    }

    #[tokio::test]
    async fn a_room_span_is_not_a_child_of_the_session_that_started_it() {
        use tracing_subscriber::registry::{LookupSpan, Registry};
        // The room outlives the first session that joins it: as that session span's child,
        // it would keep the session's span alive and log under it.
        let dir = tempfile::tempdir().expect("temp dir");
        let task = room_task(dir.path());
        let dispatch = tracing::Dispatch::new(Registry::default());
        tracing::dispatcher::with_default(&dispatch, || {
            let session = tracing::info_span!("session", conn = 1);
            let _inside = session.enter();
            let room = task.run();
            let id = room.span().id().expect("the room's span is enabled");
            let registry = dispatch.downcast_ref::<Registry>().expect("a registry");
            let span = registry.span(&id).expect("the room's span is live");
            assert_eq!(span.name(), "room");
            assert!(span.parent().is_none(), "the room's span has a parent");
        });
    }
}
