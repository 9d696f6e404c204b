//! The room task: owns one document's [`Room`] and its subscribers.
//!
//! Each turn drains the inbox as one batch: the batch's updates are applied in one yrs
//! transaction, appended to the store and (in durable mode) committed, and only then
//! broadcast, encoded once and shared by every subscriber. Step 1 answers, awareness and
//! joins follow, so nobody is ever shown an update that is not yet on disk.

use std::collections::HashMap;
use std::time::Instant;

use aetherflow_crdt::protocol::{AuthMessage, Message, SyncMessage};
use aetherflow_crdt::{ConnId, DocName, EMPTY_UPDATE, Room};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::outbox::{OutboxSender, TrySendError};
use super::{ApplyError, CloseReason, Outbound, RoomCommand, Rooms};
use crate::config::Durability;
use crate::events::DocEvent;
use crate::metrics::Rejection;
use crate::store::writer::{WriteOp, WriteResult};

/// Commands taken from the inbox in one turn.
const MAX_COMMANDS_PER_TURN: usize = 1024;

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
    inbox: mpsc::Receiver<RoomCommand>,
    rooms: Rooms,
    subscribers: HashMap<ConnId, Subscriber>,
    /// Entries in the store's log since the last snapshot.
    log_entries: usize,
    /// Set when the room must stop serving (storage failure, tainted document).
    failed: bool,
    /// Set once the document is deleted: the room unloads without another turn.
    deleted: bool,
}

/// Connection ids at and above this one stand for HTTP API writers inside one turn; sessions
/// count up from 0 and never get near it.
const HTTP_CONN_BASE: u64 = u64::MAX - MAX_COMMANDS_PER_TURN as u64;

/// What became of a batch of updates.
#[derive(Default)]
struct Applied {
    /// Connections whose update was refused, and why.
    rejected: HashMap<ConnId, String>,
    /// Whether the batch's entry (if any) was committed.
    committed: bool,
}

impl RoomTask {
    pub(super) fn new(
        name: DocName,
        id: u64,
        inbox: mpsc::Receiver<RoomCommand>,
        rooms: Rooms,
    ) -> RoomTask {
        RoomTask {
            name,
            id,
            inbox,
            rooms,
            subscribers: HashMap::new(),
            log_entries: 0,
            failed: false,
            deleted: false,
        }
    }

    pub(super) async fn run(self) {
        let span = info_span!("room", doc = %self.name);
        self.serve().instrument(span).await;
    }

    async fn serve(mut self) {
        let Some(mut room) = self.load().await else {
            // Waiting joins are dropped unanswered: their sessions retry, then give up.
            self.rooms
                .retire(&self.name, self.id, &mut self.inbox, true);
            return;
        };
        let _loaded = self.rooms.inner.metrics.document_loaded();
        let settings = self.rooms.inner.settings;
        let shutdown = self.rooms.inner.shutdown.clone();
        loop {
            let stopping = shutdown.is_cancelled();
            if self.failed {
                self.close_all(CloseReason::new(
                    CloseReason::INTERNAL_ERROR,
                    "document reloading, reconnect",
                ));
                self.unload(true).await;
                return;
            }
            if self.deleted {
                self.unload(true).await;
                return;
            }
            if stopping && self.subscribers.is_empty() && self.unload(false).await {
                return;
            }
            let first = tokio::select! {
                command = self.inbox.recv() => command,
                () = tokio::time::sleep(settings.unload_after), if self.subscribers.is_empty() => {
                    if self.unload(false).await {
                        return;
                    }
                    continue;
                }
                () = shutdown.cancelled(), if !stopping => continue,
            };
            let Some(first) = first else { return };
            let mut commands = vec![first];
            while commands.len() < MAX_COMMANDS_PER_TURN {
                match self.inbox.try_recv() {
                    Ok(command) => commands.push(command),
                    Err(_) => break,
                }
            }
            self.turn(&mut room, commands).await;
        }
    }

    async fn load(&mut self) -> Option<Room> {
        let store = self.rooms.inner.store.clone();
        let name = self.name.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let stored = store.load(&name).map_err(|e| e.to_string())?;
            let entries = stored.log.len();
            let room = Room::load(
                stored.snapshot.as_deref(),
                stored.log.iter().map(Vec::as_slice),
            )
            .map_err(|e| e.to_string())?;
            Ok::<_, String>((room, entries))
        })
        .await;
        match loaded {
            Ok(Ok((room, entries))) => {
                debug!(log_entries = entries, "document loaded");
                self.log_entries = entries;
                Some(room)
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

    /// One turn: the batch's updates first (commit, then broadcast), then everything else in
    /// arrival order, then deletions.
    async fn turn(&mut self, room: &mut Room, commands: Vec<RoomCommand>) {
        let mut updates = Vec::new();
        let mut denied = Vec::new();
        let mut others = Vec::new();
        let mut http = Vec::new();
        let mut deletes = Vec::new();
        for command in commands {
            match command {
                RoomCommand::Message {
                    conn,
                    message: Message::Sync(SyncMessage::Step2(update) | SyncMessage::Update(update)),
                } => match self.subscribers.get(&conn) {
                    Some(sub) if sub.can_write => updates.push((conn, update)),
                    // A read-only peer's empty handshake answer is no write attempt.
                    Some(_) if update != EMPTY_UPDATE => denied.push(conn),
                    _ => {}
                },
                RoomCommand::Apply { update, done } => {
                    let conn = ConnId(HTTP_CONN_BASE + http.len() as u64);
                    updates.push((conn, update));
                    http.push((conn, done));
                }
                RoomCommand::Delete { done } => deletes.push(done),
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
        let mut applied = Applied::default();
        if !updates.is_empty() {
            applied = self.apply_updates(room, updates).await;
        }
        for (conn, done) in http {
            let answer = match applied.rejected.remove(&conn) {
                Some(reason) => Err(ApplyError::Invalid(reason)),
                None if applied.committed => Ok(()),
                None => Err(ApplyError::Unavailable("commit failed".into())),
            };
            let _ = done.send(answer);
        }
        for command in others {
            self.handle(room, command);
        }
        if !deletes.is_empty() {
            self.delete(deletes).await;
        }
    }

    /// Closes every connection, removes the document from the store and marks the room for
    /// unloading; a later connection starts an empty document of the same name.
    async fn delete(&mut self, waiters: Vec<oneshot::Sender<Result<bool, ApplyError>>>) {
        self.close_all(CloseReason::new(
            CloseReason::DOCUMENT_DELETED,
            "document deleted",
        ));
        let op = WriteOp::DeleteDocument {
            doc: self.name.clone(),
        };
        let answer = match self.rooms.inner.writer.commit(op).await {
            Ok(WriteResult::Deleted(existed)) => Ok(existed),
            Ok(other) => Err(ApplyError::Unavailable(format!(
                "unexpected write result {other:?}"
            ))),
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

    async fn apply_updates(&mut self, room: &mut Room, updates: Vec<(ConnId, Vec<u8>)>) -> Applied {
        // Handshake answers with nothing new (the empty update) are not edits.
        let count = updates.iter().filter(|(_, u)| u != EMPTY_UPDATE).count();
        let started = Instant::now();
        let batch = room.apply_updates(updates);
        self.rooms.inner.metrics.applied(count, started.elapsed());
        let mut applied = Applied::default();
        for (conn, err) in batch.rejected {
            warn!(conn = conn.0, reason = %err.reason(), "update rejected");
            applied.rejected.insert(conn, err.reason());
            self.kick(
                room,
                conn,
                CloseReason::new(CloseReason::INVALID_PAYLOAD, err.reason()),
            );
        }
        if room.is_tainted() {
            // The in-memory document may hold part of a rejected update; the store does not.
            warn!("document tainted by a rejected update; reloading from the store");
            self.failed = true;
        }
        let (Some(entry), Some(broadcast)) = (batch.log_entry, batch.broadcast) else {
            // Nothing new to store: every accepted update was already known.
            applied.committed = true;
            return applied;
        };
        let bytes = entry.len();
        let writer = self.rooms.inner.writer.clone();
        let append = WriteOp::Append {
            doc: self.name.clone(),
            update: entry,
        };
        match self.rooms.inner.settings.durability {
            Durability::Durable => match writer.commit(append).await {
                Ok(_) => self.broadcast_update(room, broadcast),
                Err(e) => {
                    // Not on disk, so nobody may see it: drop the room and its memory.
                    error!(error = %e, "commit failed; closing the document");
                    self.failed = true;
                    return applied;
                }
            },
            Durability::Relaxed => {
                self.broadcast_update(room, broadcast);
                if let Err(e) = writer.submit(append).await {
                    error!(error = %e, "store writer gone; closing the document");
                    self.failed = true;
                    return applied;
                }
            }
        }
        applied.committed = true;
        let event = DocEvent::Updated {
            kind: "yjs".into(),
            bytes: Some(bytes),
            register: None,
        };
        self.rooms.events().publish(&self.name, event);
        self.log_entries += 1;
        if self.log_entries >= self.rooms.inner.settings.compact_after_updates && !self.failed {
            self.compact(room).await;
        }
        applied
    }
    /// Folds the log into a snapshot. The writer applies it after this room's earlier
    /// appends, so the log entries it drops are all in the snapshot.
    async fn compact(&mut self, room: &Room) {
        let snapshot = room.snapshot();
        let bytes = snapshot.len();
        let compact = WriteOp::Compact {
            doc: self.name.clone(),
            snapshot,
        };
        match self.rooms.inner.writer.submit(compact).await {
            Ok(()) => {
                self.rooms.inner.metrics.compacted();
                info!(
                    entries = self.log_entries,
                    snapshot_bytes = bytes,
                    "update log compacted"
                );
                self.log_entries = 0;
            }
            Err(e) => error!(error = %e, "compaction not queued"),
        }
    }

    fn handle(&mut self, room: &mut Room, command: RoomCommand) {
        match command {
            RoomCommand::Join {
                conn,
                user,
                can_write,
                outbox,
                joined,
            } => {
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
                        self.broadcast(room, removal);
                    }
                }
            }
            // Taken out of the batch in `turn`.
            RoomCommand::Apply { .. } | RoomCommand::Delete { .. } => {}
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
                    ),
                }
            }
            Message::Awareness(update) => match room.apply_awareness(conn, &update) {
                Ok(Some(frame)) => self.broadcast(room, frame),
                Ok(None) => {}
                Err(e) => self.kick(
                    room,
                    conn,
                    CloseReason::new(CloseReason::INVALID_PAYLOAD, e.reason()),
                ),
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

    fn send_to(&mut self, room: &mut Room, conn: ConnId, frame: Vec<u8>) {
        let Some(sub) = self.subscribers.get(&conn) else {
            return;
        };
        if sub
            .outbox
            .try_send(Outbound::Frame(Bytes::from(frame)))
            .is_err()
        {
            self.drop_slow(room, vec![conn]);
        }
    }

    /// Broadcasts a committed update, timed for the metrics.
    fn broadcast_update(&mut self, room: &mut Room, frame: Vec<u8>) {
        let started = Instant::now();
        let subscribers = self.subscribers.len();
        self.broadcast(room, frame);
        let metrics = &self.rooms.inner.metrics;
        metrics.broadcast(subscribers, started.elapsed());
    }

    /// Sends one frame to every subscriber, sharing its bytes. Subscribers whose outbox is
    /// full are disconnected (their awareness removal is broadcast in turn).
    fn broadcast(&mut self, room: &mut Room, frame: Vec<u8>) {
        let bytes = Bytes::from(frame);
        let mut slow = Vec::new();
        for (conn, sub) in &self.subscribers {
            match sub.outbox.try_send(Outbound::Frame(bytes.clone())) {
                Ok(()) => {}
                Err(TrySendError::Full(_) | TrySendError::Closed(_)) => slow.push(*conn),
            }
        }
        if !slow.is_empty() {
            self.drop_slow(room, slow);
        }
    }

    fn drop_slow(&mut self, room: &mut Room, conns: Vec<ConnId>) {
        for conn in conns {
            // Dropping the outbox sender tells the session it fell behind.
            if let Some(sub) = self.subscribers.remove(&conn) {
                warn!(conn = conn.0, "connection too slow or gone; disconnected");
                self.announce_left(conn, &sub);
            }
            if let Some(removal) = room.disconnect(conn) {
                self.broadcast(room, removal);
            }
        }
    }

    /// Closes `conn` for invalid input.
    fn kick(&mut self, room: &mut Room, conn: ConnId, reason: CloseReason) {
        self.rooms.inner.metrics.reject(Rejection::InvalidPayload);
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
        if let Err(e) = self.rooms.inner.writer.flush().await {
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
        while self.inbox.try_recv().is_ok() {}
        info!("document unloaded");
        true
    }
}
