//! The room task: owns one document's [`Room`] and its subscribers.
//!
//! Each turn takes what waits in the inbox as one batch: the batch's updates are applied in one
//! yrs transaction and appended to the store. In durable mode the batch then joins the commit
//! [`Pipeline`] and is broadcast (encoded once, shared by every subscriber) when its commit is
//! done, while the room goes on applying later batches; in relaxed mode it is broadcast at once.
//! Step 1 answers, awareness and joins wait until every batch before them is committed, so
//! nobody is ever shown an update that is not yet on disk.

use std::collections::HashMap;
use std::time::Instant;

use aetherflow_crdt::protocol::{AuthMessage, Message, SyncMessage};
use aetherflow_crdt::{ConnId, DocName, EMPTY_UPDATE, Room, RoomError};
use bytes::Bytes;
use futures_util::future::OptionFuture;
use tokio::sync::oneshot;
use tracing::instrument::Instrumented;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::inbox::InboxReceiver;
use super::outbox::{OutboxSender, TrySendError};
use super::pipeline::{HttpWaiter, InFlight, Pipeline};
use super::{ApplyError, Join, Outbound, RoomCommand, Rooms};
use crate::config::Durability;
use crate::connection::CloseReason;
use crate::events::DocEvent;
use crate::metrics::Rejection;
use crate::storage::StoreError;

/// Most commands taken as one turn. Also bounds what the room holds besides its inbox.
const MAX_COMMANDS_PER_TURN: usize = 4096;
/// Batches whose commit may be in flight at once (durable mode). More only deepens the
/// writer's queue: it folds every waiting append into its next commit anyway.
const MAX_IN_FLIGHT: usize = 4;
/// While a commit is in flight, a new batch starts only once this many commands wait: small
/// batches cost a frame to every subscriber each, and the commit's completion starts one
/// anyway.
const BUSY_BATCH: usize = 256;

/// A connection subscribed to the room.
struct Subscriber {
    /// Where its frames go.
    outbox: OutboxSender,
    /// Whether its updates may be applied.
    can_write: bool,
    /// The token's subject, for presence events.
    user: String,
}

pub(super) struct RoomTask {
    name: DocName,
    id: u64,
    inbox: InboxReceiver<RoomCommand>,
    rooms: Rooms,
    subscribers: HashMap<ConnId, Subscriber>,
    /// Commands taken from the inbox for the next turn.
    waiting: Vec<RoomCommand>,
    /// Durable mode: applied batches waiting for their commit, oldest first.
    pipeline: Pipeline,
    /// Entries in the store's log since the last snapshot.
    log_entries: usize,
    /// Bytes of those entries.
    log_bytes: usize,
    /// Set when the room must stop serving (storage failure, tainted document).
    failed: bool,
    /// Set with `failed` when a commit failed on storage I/O (a full disk).
    storage_failed: bool,
    /// Writers whose edits were refused while the storage could not be written; asked for
    /// them again (a sync step 1) once it can.
    unsaved: Vec<ConnId>,
    /// Set once the document is deleted: the room unloads without another turn.
    deleted: bool,
}

/// Why edits are refused, and connections closed, while the storage cannot be written.
const STORAGE_FAILED: &str =
    "storage unavailable: edits not saved, kept on your device; retry later";

/// Connection ids at and above this one stand for HTTP API writers inside one turn; sessions
/// count up from 0 and never get near it.
const HTTP_CONN_BASE: u64 = u64::MAX - MAX_COMMANDS_PER_TURN as u64;

/// The connection id entries from other relays are applied as (cluster mode).
const REMOTE_CONN: ConnId = ConnId(HTTP_CONN_BASE - 1);

impl RoomTask {
    pub(super) fn new(
        name: DocName,
        id: u64,
        inbox: InboxReceiver<RoomCommand>,
        rooms: Rooms,
    ) -> RoomTask {
        RoomTask {
            name,
            id,
            inbox,
            rooms,
            subscribers: HashMap::new(),
            waiting: Vec::new(),
            pipeline: Pipeline::default(),
            log_entries: 0,
            log_bytes: 0,
            failed: false,
            storage_failed: false,
            unsaved: Vec::new(),
            deleted: false,
        }
    }

    /// The room's task. Plain functions returning futures rather than `async fn`s: an
    /// `async fn` moves its arguments into locals of its own and its future keeps both
    /// copies, so `run` and `serve` as `async fn`s held the room's state three times for as
    /// long as the document is loaded (issue 7).
    pub(super) fn run(self) -> Instrumented<impl Future<Output = ()> + Send + 'static> {
        // No parent: this runs inside the first joining session's span, and a child would
        // tie that session's span (and its memory) to the room's life and nest the room's
        // logs under one of its sessions.
        let span = info_span!(parent: None, "room", doc = %self.name);
        self.serve().instrument(span)
    }

    /// The room's life. Its future lives as long as the document is loaded, so every step
    /// that awaits something big (load, a turn, unload) is boxed: its state is on the heap
    /// only while it runs instead of in every idle room (issue 7's memory per connection).
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn would store the room's state twice"
    )]
    fn serve(mut self) -> impl Future<Output = ()> + Send + 'static {
        async move {
            let Some((mut room, last_seq)) = Box::pin(self.load()).await else {
                // Waiting joins are dropped unanswered: their sessions retry, then give up.
                self.rooms
                    .retire(&self.name, self.id, &mut self.inbox, true);
                return;
            };
            let _loaded = self.rooms.inner.metrics.document_loaded();
            // Cluster mode: what other relays append from here on, and their presence.
            let _follower = Box::pin(self.follow(last_seq)).await;
            let _presence = Box::pin(self.follow_presence()).await;
            let unload_after = self.rooms.inner.settings.unload_after;
            let shutdown = self.rooms.inner.shutdown.clone();
            loop {
                let stopping = shutdown.is_cancelled();
                if self.failed {
                    // Batches committed before the failure still reach everyone.
                    Box::pin(self.settle_all(&mut room)).await;
                    self.close_all(if self.storage_failed {
                        // Not an invitation to reconnect at once: the storage is what fails.
                        CloseReason::new(CloseReason::TRY_AGAIN_LATER, STORAGE_FAILED)
                    } else {
                        CloseReason::new(
                            CloseReason::INTERNAL_ERROR,
                            "document reloading, reconnect",
                        )
                    });
                    Box::pin(self.unload(true)).await;
                    return;
                }
                if self.deleted {
                    Box::pin(self.unload(true)).await;
                    return;
                }
                let quiet = self.waiting.is_empty() && self.pipeline.is_empty();
                if stopping
                    && quiet
                    && self.subscribers.is_empty()
                    && Box::pin(self.unload(false)).await
                {
                    return;
                }
                let idle = quiet && self.subscribers.is_empty();
                // Boxed, and made only when the room is idle: a timer in the select itself
                // would be part of every loaded room's future.
                let unload_timer = idle.then(|| Box::pin(tokio::time::sleep(unload_after)));
                tokio::select! {
                    // Commits first: they release broadcasts and make room in the pipeline.
                    biased;
                    Some((batch, result)) = self.pipeline.next(), if !self.pipeline.is_empty() => {
                        self.settle(&mut room, batch, result);
                    }
                    command = self.inbox.recv(), if self.waiting.len() < MAX_COMMANDS_PER_TURN => {
                        let Some(command) = command else {
                            Box::pin(self.settle_all(&mut room)).await;
                            return;
                        };
                        self.take_waiting(command);
                    }
                    Some(()) = OptionFuture::from(unload_timer) => {
                        if Box::pin(self.unload(false)).await {
                            return;
                        }
                        continue;
                    }
                    () = shutdown.cancelled(), if !stopping => continue,
                }
                if self.ready_for_turn() {
                    let commands = std::mem::take(&mut self.waiting);
                    Box::pin(self.turn(&mut room, commands)).await;
                }
            }
        }
    }

    /// Takes `first` and whatever else waits in the inbox, up to a turn's worth.
    fn take_waiting(&mut self, first: RoomCommand) {
        self.waiting.push(first);
        let room = MAX_COMMANDS_PER_TURN.saturating_sub(self.waiting.len());
        self.inbox.take_into(&mut self.waiting, room);
    }

    /// Whether to run a turn now: always when no commit is in flight; while one is, only for
    /// a batch worth its own frame, and only while the pipeline has room.
    fn ready_for_turn(&self) -> bool {
        !self.waiting.is_empty()
            && (self.pipeline.is_empty()
                || (self.waiting.len() >= BUSY_BATCH && self.pipeline.len() < MAX_IN_FLIGHT))
    }

    async fn load(&mut self) -> Option<(Room, u64)> {
        let stored = match self.rooms.inner.storage.log.load(self.name.clone()).await {
            Ok(stored) => stored,
            Err(e) => {
                if let StoreError::Damaged { .. } | StoreError::Unreadable(_) = e {
                    self.rooms.inner.metrics.damaged_load();
                }
                error!(error = %e, "cannot load document");
                return None;
            }
        };
        let last_seq = stored.last_seq;
        // Replaying the log is CPU work: off the async workers.
        let loaded = tokio::task::spawn_blocking(move || {
            let entries = (stored.log.len(), stored.log.iter().map(Vec::len).sum());
            let room = Room::load(
                stored.snapshot.as_deref(),
                stored.log.iter().map(Vec::as_slice),
            )
            .map_err(|e| e.to_string())?;
            Ok::<_, String>((room, entries))
        })
        .await;
        match loaded {
            Ok(Ok((mut room, entries))) => {
                room.set_limits(self.rooms.inner.settings.doc_limits);
                debug!(
                    log_entries = entries.0,
                    log_bytes = entries.1,
                    items = room.size().items,
                    "document loaded"
                );
                (self.log_entries, self.log_bytes) = entries;
                Some((room, last_seq))
            }
            Ok(Err(e)) => {
                error!(error = %e, "cannot load document");
                None
            }
            Err(e) => {
                error!(error = %e, "document load panicked");
                None
            }
        }
    }

    /// One turn: the batch's updates first (applied, then committed and broadcast), then,
    /// once every batch in flight is committed, everything else in arrival order, then
    /// deletions.
    async fn turn(&mut self, room: &mut Room, commands: Vec<RoomCommand>) {
        let mut updates = Vec::new();
        let mut denied = Vec::new();
        let mut others = Vec::new();
        let mut http = Vec::new();
        // HTTP writers named as authors (restores).
        let mut named = Vec::new();
        let mut deletes = Vec::new();
        let mut held = Vec::new();
        let mut remote = Vec::new();
        let mut deleted_elsewhere = false;
        let writable = self.rooms.inner.storage.log.is_writable();
        if writable && !self.unsaved.is_empty() {
            self.ask_for_unsaved(room);
        }
        for command in commands {
            match command {
                RoomCommand::Message {
                    conn,
                    message: Message::Sync(SyncMessage::Step2(update) | SyncMessage::Update(update)),
                } => match self.subscribers.get(&conn) {
                    // Nothing can be stored: the edit stays with its writer until it can.
                    Some(sub) if sub.can_write && !writable && update != EMPTY_UPDATE => {
                        held.push(conn);
                    }
                    Some(sub) if sub.can_write => updates.push((conn, update)),
                    // A read-only peer's empty handshake answer is no write attempt.
                    Some(_) if update != EMPTY_UPDATE => denied.push(conn),
                    _ => {}
                },
                RoomCommand::Apply { done, .. } if !writable => {
                    let _ = done.send(Err(ApplyError::Storage));
                }
                RoomCommand::Apply { update, by, done } => {
                    let conn = ConnId(HTTP_CONN_BASE + http.len() as u64);
                    updates.push((conn, update));
                    http.push((conn, done));
                    if let Some(by) = by {
                        named.push((conn, by));
                    }
                }
                RoomCommand::Delete { done } => deletes.push(done),
                RoomCommand::DeletedElsewhere => deleted_elsewhere = true,
                RoomCommand::Remote(Ok(update)) => remote.push(update),
                RoomCommand::Remote(Err(why)) => {
                    error!(error = %why, "following the log failed; reloading the document");
                    self.failed = true;
                }
                other => others.push(other),
            }
        }
        for conn in denied {
            self.rooms.inner.metrics.reject(Rejection::ReadOnly);
            let refusal = Message::Auth(AuthMessage::PermissionDenied {
                reason: "read-only access: updates are not accepted".into(),
            });
            self.send_to(room, conn, refusal.encode());
        }
        for conn in held {
            self.rooms
                .inner
                .metrics
                .reject(Rejection::StorageUnavailable);
            let refusal = Message::Auth(AuthMessage::PermissionDenied {
                reason: STORAGE_FAILED.into(),
            });
            self.send_to(room, conn, refusal.encode());
            if !self.unsaved.contains(&conn) {
                self.unsaved.push(conn);
            }
        }
        if !remote.is_empty() {
            self.apply_remote(room, remote);
        }
        if !updates.is_empty() {
            self.apply_updates(room, updates, http, &named).await;
        }
        if !others.is_empty() || !deletes.is_empty() || deleted_elsewhere {
            // They may show the document's state (step 2, a join's greeting): only what is
            // on disk.
            self.settle_all(room).await;
        }
        for command in others {
            self.handle(room, command);
        }
        if !deletes.is_empty() {
            self.delete(deletes).await;
        } else if deleted_elsewhere {
            info!("document deleted through another relay");
            self.close_all(deletion());
            self.deleted = true;
        }
    }

    /// The users (token subjects) of the subscribers among `updates` with an edit, each once,
    /// for webhooks and the history; HTTP writers are named only when `named` says who they
    /// are (restores).
    fn authors_of(&self, updates: &[(ConnId, Vec<u8>)], named: &[(ConnId, String)]) -> Vec<String> {
        // A batch holds many updates from few people: names are copied once each.
        let mut authors: Vec<&str> = Vec::new();
        for (conn, update) in updates {
            let user = match self.subscribers.get(conn) {
                Some(sub) => Some(sub.user.as_str()),
                None => named
                    .iter()
                    .find(|(c, _)| c == conn)
                    .map(|(_, by)| by.as_str()),
            };
            if let Some(user) = user
                && update != EMPTY_UPDATE
                && !authors.contains(&user)
            {
                authors.push(user);
            }
        }
        authors.sort_unstable();
        authors.into_iter().map(str::to_owned).collect()
    }

    /// Closes every connection, removes the document from the store and marks the room for
    /// unloading; a later connection starts an empty document of the same name.
    async fn delete(&mut self, waiters: Vec<oneshot::Sender<Result<bool, ApplyError>>>) {
        self.close_all(deletion());
        let answer = match self
            .rooms
            .inner
            .storage
            .catalog
            .delete(self.name.clone())
            .await
        {
            Ok(existed) => Ok(existed),
            Err(e) if e.is_io() => {
                warn!(error = %e, "deletion failed: storage unavailable");
                Err(ApplyError::Storage)
            }
            Err(e) => Err(ApplyError::Unavailable(e.to_string())),
        };
        if answer.is_ok() {
            info!("document deleted");
            self.rooms.events().publish(&self.name, DocEvent::Deleted);
        }
        for done in waiters {
            let _ = done.send(answer.clone());
        }
        self.deleted = true;
    }

    /// Follows the document's log after `last_seq` for what other relays append, if the
    /// engine is shared (cluster mode).
    async fn follow(&mut self, last_seq: u64) -> Option<super::remote::Follower> {
        let log = &self.rooms.inner.storage.log;
        let following = match log.follow(self.name.clone(), last_seq).await {
            Ok(following) => following?,
            Err(e) => {
                error!(error = %e, "cannot follow the document's log");
                self.failed = true;
                return None;
            }
        };
        let inbox = self.rooms.sender_of(&self.name, self.id)?;
        Some(super::remote::start(following, inbox))
    }

    /// Follows the presence of the other relays' connections (cluster mode).
    async fn follow_presence(&mut self) -> Option<super::remote::Follower> {
        let presence = self.rooms.inner.presence.clone()?;
        let feed = match presence.follow(self.name.clone()).await {
            Ok(feed) => feed,
            Err(e) => {
                warn!(error = %e, "cannot follow presence from other relays");
                return None;
            }
        };
        let inbox = self.rooms.sender_of(&self.name, self.id)?;
        Some(super::remote::start_presence(feed, inbox))
    }

    /// Tells the other relays that `conn`'s clients left (cluster mode).
    fn share_removal(&self, conn: ConnId, removal: &[u8]) {
        let Some(presence) = &self.rooms.inner.presence else {
            return;
        };
        let limits = aetherflow_crdt::protocol::Limits::default();
        if let Ok(Message::Awareness(payload)) = Message::decode(removal, &limits) {
            presence.publish(&self.name, conn, payload);
        }
    }

    /// Applies presence from another relay's connections and passes on what changed.
    fn remote_presence(&mut self, room: &mut Room, event: crate::presence::PresenceEvent) {
        use crate::presence::PresenceEvent;
        match event {
            PresenceEvent::Update { origin, payload } => {
                match room.apply_awareness(origin, &payload) {
                    Ok(Some(frame)) => self.broadcast(room, frame),
                    Ok(None) => {}
                    Err(e) => debug!(reason = %e.reason(), "presence from another relay refused"),
                }
            }
            PresenceEvent::Gone { origins } => {
                for origin in origins {
                    if let Some(removal) = room.disconnect(origin) {
                        self.broadcast(room, removal);
                    }
                }
            }
            PresenceEvent::Asked => {
                let Some(presence) = &self.rooms.inner.presence else {
                    return;
                };
                for conn in self.subscribers.keys() {
                    if let Some(states) = room.awareness().encode_controlled(*conn) {
                        presence.publish(&self.name, *conn, states);
                    }
                }
            }
        }
    }

    /// Applies entries other relays stored and broadcasts what they add. They are durable
    /// already, so not stored again; one the room refuses makes it reload.
    fn apply_remote(&mut self, room: &mut Room, updates: Vec<Vec<u8>>) {
        let count = updates.len();
        self.log_bytes += updates.iter().map(Vec::len).sum::<usize>();
        let batch = room.apply_updates(updates.into_iter().map(|u| (REMOTE_CONN, u)).collect());
        for (_, err) in &batch.rejected {
            error!(reason = %err.reason(), "a stored entry from another relay was refused; reloading");
            self.failed = true;
        }
        if room.is_tainted() {
            self.failed = true;
        }
        self.log_entries += count;
        // Not announced: the relay that stored it did, to every relay's listeners.
        if let Some(frame) = batch.broadcast {
            self.broadcast_update(room, Bytes::from(frame));
        }
    }

    /// Applies a batch of updates and queues its log entry. Durable mode puts the batch in
    /// the pipeline, to be broadcast once committed; relaxed mode broadcasts it now. `http`
    /// are the HTTP writers among `updates`, answered when their fate is known; `named`, those
    /// of them with a known author.
    async fn apply_updates(
        &mut self,
        room: &mut Room,
        updates: Vec<(ConnId, Vec<u8>)>,
        mut http: Vec<(ConnId, HttpWaiter)>,
        named: &[(ConnId, String)],
    ) {
        // Handshake answers with nothing new (the empty update) are not edits.
        let count = updates.iter().filter(|(_, u)| u != EMPTY_UPDATE).count();
        let authors = self.authors_of(&updates, named);
        let started = Instant::now();
        let batch = room.apply_updates(updates);
        self.rooms.inner.metrics.applied(count, started.elapsed());
        if batch.redundant > 0 {
            self.rooms.inner.metrics.redundant(batch.redundant);
        }
        for (conn, err) in batch.rejected {
            warn!(conn = conn.0, reason = %err.reason(), "update rejected");
            // Over a size limit is a message too big for this document; anything else is
            // bad bytes.
            let (code, rejection, error) = match &err {
                RoomError::TooLarge(_) => (
                    CloseReason::MESSAGE_TOO_BIG,
                    Rejection::DocumentLimit,
                    ApplyError::TooLarge(err.reason()),
                ),
                _ => (
                    CloseReason::INVALID_PAYLOAD,
                    Rejection::InvalidPayload,
                    ApplyError::Invalid(err.reason()),
                ),
            };
            if let Some(at) = http.iter().position(|(c, _)| *c == conn) {
                let (_, done) = http.swap_remove(at);
                let _ = done.send(Err(error));
            }
            self.kick(room, conn, CloseReason::new(code, err.reason()), rejection);
        }
        if room.is_tainted() {
            // The in-memory document may hold part of a rejected update; the store does not.
            warn!("document tainted by a rejected update; reloading from the store");
            self.failed = true;
        }
        let waiters: Vec<HttpWaiter> = http.into_iter().map(|(_, done)| done).collect();
        let (Some(entry), Some(broadcast)) = (batch.log_entry, batch.broadcast) else {
            // Nothing new to store: every accepted update was already known, and is durable
            // once the batches in flight are.
            answer(self.pipeline.answer_with_last(waiters), Ok(()));
            return;
        };
        let bytes = entry.len();
        let log = self.rooms.inner.storage.log.clone();
        let queued = match self.rooms.inner.settings.durability {
            Durability::Durable => {
                log.append(self.name.clone(), entry, authors)
                    .await
                    .map(|committing| {
                        let frame = Bytes::from(broadcast);
                        self.pipeline.push(committing, frame, bytes, waiters);
                    })
            }
            Durability::Relaxed => {
                self.broadcast_update(room, Bytes::from(broadcast));
                let queued = log.append_relaxed(self.name.clone(), entry, authors).await;
                if queued.is_ok() {
                    self.announce_update(bytes, waiters);
                }
                queued
            }
        };
        if let Err(e) = queued {
            // Not on its way to disk, so nobody may see it: drop the room and its memory.
            error!(error = %e, "store writer gone; closing the document");
            self.failed = true;
            return;
        }
        self.log_entries += 1;
        self.log_bytes += bytes;
        let settings = &self.rooms.inner.settings;
        let due = self.log_entries >= settings.compact_after_updates
            || self.log_bytes >= settings.compact_after_bytes;
        if due && !self.failed {
            self.compact(room).await;
        }
    }

    /// A batch's commit is done: broadcast it, or, if the commit failed, close the document.
    fn settle(&mut self, room: &mut Room, batch: InFlight, result: Result<(), StoreError>) {
        match result {
            Ok(_) => {
                self.broadcast_update(room, batch.frame);
                self.announce_update(batch.bytes, batch.http);
            }
            Err(e) => {
                // Not on disk, so nobody may see it, nor anything applied after it.
                error!(error = %e, "commit failed; closing the document");
                self.failed = true;
                self.storage_failed = e.is_io();
                let refusal = if e.is_io() {
                    ApplyError::Storage
                } else {
                    ApplyError::Unavailable("commit failed".into())
                };
                answer(batch.http, Err(refusal));
                self.pipeline.abandon("commit failed");
            }
        }
    }

    /// Waits for every batch in flight and settles it.
    async fn settle_all(&mut self, room: &mut Room) {
        while let Some((batch, result)) = self.pipeline.next().await {
            self.settle(room, batch, result);
        }
    }

    /// An update of `bytes` is stored: tells its HTTP writers and the event bus.
    fn announce_update(&self, bytes: usize, http: Vec<HttpWaiter>) {
        answer(http, Ok(()));
        let event = DocEvent::Updated {
            kind: aetherflow_crdt::register::Kind::Yjs,
            bytes: Some(bytes),
            register: None,
        };
        self.rooms.events().publish(&self.name, event);
    }

    /// Folds the log into a snapshot. The writer applies it after this room's earlier
    /// appends, so the log entries it drops are all in the snapshot.
    async fn compact(&mut self, room: &Room) {
        let snapshot = room.snapshot();
        let bytes = snapshot.len();
        let log = &self.rooms.inner.storage.log;
        match log.compact(self.name.clone(), snapshot).await {
            Ok(()) => {
                self.rooms.inner.metrics.compacted();
                info!(
                    entries = self.log_entries,
                    snapshot_bytes = bytes,
                    "update log compacted"
                );
                self.log_entries = 0;
                self.log_bytes = 0;
                self.thin_history();
            }
            Err(e) => error!(error = %e, "compaction not queued"),
        }
    }

    /// Thins the document's history by the retention policy, off the room's task: the
    /// writer does it in a later commit, and the room does not wait for it.
    fn thin_history(&self) {
        let Some(history) = self.rooms.inner.storage.history.clone() else {
            return;
        };
        let doc = self.name.clone();
        let retention = self.rooms.inner.settings.history_retention;
        let thin = async move {
            let now_ms = crate::wall_clock::now_ms();
            match history.thin(doc, retention, now_ms).await {
                Ok(0) => {}
                Ok(dropped) => info!(dropped, "history thinned"),
                Err(e) => warn!(error = %e, "history not thinned"),
            }
        };
        let span = tracing::Span::current();
        self.rooms
            .inner
            .tracker
            .spawn(tracing::Instrument::instrument(thin, span));
    }

    fn handle(&mut self, room: &mut Room, command: RoomCommand) {
        match command {
            RoomCommand::Join(join) => {
                let Join {
                    conn,
                    user,
                    can_write,
                    outbox,
                    joined,
                } = *join;
                for frame in room.greeting() {
                    let _ = outbox.try_send(Outbound::Frame(Bytes::from(frame)));
                }
                let event = DocEvent::UserJoined {
                    user: user.clone(),
                    conn: conn.0,
                };
                self.subscribers.insert(
                    conn,
                    Subscriber {
                        outbox,
                        can_write,
                        user,
                    },
                );
                self.rooms.events().publish(&self.name, event);
                let _ = joined.send(());
            }
            RoomCommand::Leave { conn } => {
                if let Some(sub) = self.subscribers.remove(&conn) {
                    self.announce_left(conn, &sub);
                    if let Some(removal) = room.disconnect(conn) {
                        self.share_removal(conn, &removal);
                        self.broadcast(room, removal);
                    }
                }
            }
            RoomCommand::RemotePresence(event) => self.remote_presence(room, event),
            // Taken out of the batch in `turn`.
            RoomCommand::Apply { .. }
            | RoomCommand::Delete { .. }
            | RoomCommand::DeletedElsewhere
            | RoomCommand::Remote(_) => {}
            RoomCommand::Acknowledge { conn, frame, times } => {
                if self.unsaved.contains(&conn) {
                    return;
                }
                for _ in 0..times {
                    self.send_to(room, conn, Bytes::from_static(frame));
                }
            }
            RoomCommand::Message { conn, message } => {
                if self.subscribers.contains_key(&conn) {
                    self.handle_message(room, conn, message);
                }
            }
        }
    }

    fn handle_message(&mut self, room: &mut Room, conn: ConnId, message: Message) {
        match message {
            Message::Sync(SyncMessage::Step1(state_vector)) => {
                match room.answer_step1(&state_vector) {
                    Ok(step2) => self.send_to(room, conn, step2),
                    Err(e) => self.kick(
                        room,
                        conn,
                        CloseReason::new(CloseReason::INVALID_PAYLOAD, e.reason()),
                        Rejection::InvalidPayload,
                    ),
                }
            }
            Message::Awareness(update) => match room.apply_awareness(conn, &update) {
                Ok(Some(frame)) => {
                    if let Some(presence) = &self.rooms.inner.presence {
                        presence.publish(&self.name, conn, update);
                    }
                    self.broadcast(room, frame);
                }
                Ok(None) => {}
                Err(e) => {
                    // Over a presence limit is a policy refusal; anything else is bad bytes.
                    let (code, rejection) = if matches!(&e, RoomError::Awareness(a) if a.is_limit())
                    {
                        (CloseReason::POLICY_VIOLATION, Rejection::PresenceLimit)
                    } else {
                        (CloseReason::INVALID_PAYLOAD, Rejection::InvalidPayload)
                    };
                    self.kick(room, conn, CloseReason::new(code, e.reason()), rejection);
                }
            },
            Message::QueryAwareness => {
                if let Some(frame) = room.query_awareness() {
                    self.send_to(room, conn, frame);
                }
            }
            // Updates were taken out in `turn`; clients do not send auth messages.
            Message::Sync(_) | Message::Auth(_) => {}
        }
    }

    fn send_to(&mut self, room: &mut Room, conn: ConnId, frame: impl Into<Bytes>) {
        let Some(sub) = self.subscribers.get(&conn) else {
            return;
        };
        if let Err(e) = sub.outbox.try_send(Outbound::Frame(frame.into())) {
            self.drop_slow(room, vec![(conn, Departure::of(&e))]);
        }
    }

    /// Broadcasts a committed update, timed for the metrics.
    fn broadcast_update(&mut self, room: &mut Room, frame: Bytes) {
        let started = Instant::now();
        let subscribers = self.subscribers.len();
        self.broadcast_bytes(room, frame);
        let metrics = &self.rooms.inner.metrics;
        metrics.broadcast(subscribers, started.elapsed());
    }

    /// Sends one frame to every subscriber, sharing its bytes. Subscribers whose outbox is
    /// full, or whose connection is already gone, are removed (their awareness removal is
    /// broadcast in turn).
    fn broadcast(&mut self, room: &mut Room, frame: Vec<u8>) {
        self.broadcast_bytes(room, Bytes::from(frame));
    }

    fn broadcast_bytes(&mut self, room: &mut Room, bytes: Bytes) {
        let mut slow = Vec::new();
        for (conn, sub) in &self.subscribers {
            if let Err(e) = sub.outbox.try_send(Outbound::Frame(bytes.clone())) {
                slow.push((*conn, Departure::of(&e)));
            }
        }
        if !slow.is_empty() {
            self.drop_slow(room, slow);
        }
    }

    /// Removes subscribers a frame could not reach. Only one that stopped reading is worth a
    /// warning: a connection that left normally is often still subscribed for a moment (its
    /// leave command is on its way) after its outbox is gone.
    fn drop_slow(&mut self, room: &mut Room, conns: Vec<(ConnId, Departure)>) {
        for (conn, departure) in conns {
            // The overflowed outbox already tells the session it fell behind.
            if let Some(sub) = self.subscribers.remove(&conn) {
                match departure {
                    Departure::FellBehind => warn!(
                        conn = conn.0,
                        user = %sub.user,
                        "connection not reading: outbox over its byte bound; closing with 1013"
                    ),
                    Departure::Gone => debug!(conn = conn.0, "connection already gone"),
                }
                self.announce_left(conn, &sub);
            }
            if let Some(removal) = room.disconnect(conn) {
                self.broadcast(room, removal);
            }
        }
    }

    /// The storage is writable again: asks every writer whose edits were refused meanwhile
    /// for what the room lacks (a sync step 1; y-websocket answers with a step 2).
    fn ask_for_unsaved(&mut self, room: &mut Room) {
        let step1 = Message::Sync(SyncMessage::Step1(room.state_vector())).encode();
        for conn in std::mem::take(&mut self.unsaved) {
            if self.subscribers.contains_key(&conn) {
                self.send_to(room, conn, step1.clone());
            }
        }
    }

    /// Closes `conn` for invalid input or a limit, counting it under `why`.
    fn kick(&mut self, room: &mut Room, conn: ConnId, reason: CloseReason, why: Rejection) {
        self.rooms.inner.metrics.reject(why);
        if let Some(sub) = self.subscribers.remove(&conn) {
            let _ = sub.outbox.try_send(Outbound::Close(reason));
            self.announce_left(conn, &sub);
        }
        if let Some(removal) = room.disconnect(conn) {
            self.broadcast(room, removal);
        }
    }

    fn close_all(&mut self, reason: CloseReason) {
        let subscribers: Vec<_> = self.subscribers.drain().collect();
        for (conn, sub) in subscribers {
            let _ = sub.outbox.try_send(Outbound::Close(reason.clone()));
            self.announce_left(conn, &sub);
        }
    }

    fn announce_left(&self, conn: ConnId, sub: &Subscriber) {
        let event = DocEvent::UserLeft {
            user: sub.user.clone(),
            conn: conn.0,
        };
        self.rooms.events().publish(&self.name, event);
    }

    /// Makes every write of this room durable, then leaves the registry unless a command
    /// arrived meanwhile (or regardless, if `force`). Returns whether the room is gone.
    async fn unload(&mut self, force: bool) -> bool {
        // A later room of this document loads from the store: it must find every write.
        if let Err(e) = self.rooms.inner.storage.log.flush().await {
            error!(error = %e, "flush before unload failed");
        }
        if !self
            .rooms
            .retire(&self.name, self.id, &mut self.inbox, force)
        {
            return false;
        }
        // Joins that raced in before the inbox closed are dropped unanswered; their sessions
        // retry and start a fresh room.
        let mut raced = Vec::new();
        self.inbox.take_into(&mut raced, usize::MAX);
        drop(raced);
        info!("document unloaded");
        true
    }
}

/// Why a frame could not be queued for a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Departure {
    /// Its outbox is over its byte bound: the connection stopped reading.
    FellBehind,
    /// Its session has already ended.
    Gone,
}

impl Departure {
    fn of<T>(error: &TrySendError<T>) -> Departure {
        match error {
            TrySendError::Full(_) => Departure::FellBehind,
            TrySendError::Closed(_) => Departure::Gone,
        }
    }
}

/// How connections of a deleted document are closed, whichever relay deleted it.
fn deletion() -> CloseReason {
    CloseReason::new(CloseReason::DOCUMENT_DELETED, "document deleted")
}

/// Tells every HTTP writer in `waiters` the same answer.
fn answer(waiters: Vec<HttpWaiter>, result: Result<(), ApplyError>) {
    for done in waiters {
        let _ = done.send(result.clone());
    }
}
