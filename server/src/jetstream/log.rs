//! Yjs documents' logs in the stream, snapshots in the object store (see the module docs).

use std::sync::Arc;

use aetherflow_crdt::DocName;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::RawMessageErrorKind;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

use super::history::EntryMeta;
use super::large::{OBJECT_HEADER, RawEntry};
use super::{
    ACK_TIMEOUT, Appends, JetStreamEngine, ORIGIN_HEADER, PUBLISH_PATIENCE, failed, key,
    unreachable,
};
use crate::storage::{
    Committing, DocumentLog, Following, LogEntry, Pending, StoreError, StoredDoc,
};
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures_util::StreamExt;
use std::time::Duration;

/// Where a document's snapshot is, and which log entries it holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SnapshotIndex {
    /// The object holding the snapshot.
    pub object: String,
    /// The last log sequence folded into it.
    pub through: u64,
    /// Earlier snapshots kept as history checkpoints, by the last sequence each folds in,
    /// oldest first; each is the object [`snapshot_object`] names.
    #[serde(default)]
    pub checkpoints: Vec<u64>,
    /// Bytes of the log entries folded in since the newest checkpoint.
    #[serde(default)]
    pub since_checkpoint: u64,
}

/// The object holding `doc`'s snapshot (or checkpoint) through sequence `through`.
pub(super) fn snapshot_object(doc: &DocName, through: u64) -> String {
    format!("{}.{through}", key(doc))
}

/// One log message on its way: sent again, the same, until it is acknowledged.
struct Outgoing {
    subject: String,
    /// The `Nats-Msg-Id`, by which a message sent again is stored once.
    id: String,
    /// The entry's bytes, or nothing for a pointer.
    payload: bytes::Bytes,
    /// The object holding the bytes of an entry too large for a message.
    object: Option<String>,
    /// The entry's history metadata: its authors and size (see [`super::history`]).
    meta: EntryMeta,
}

impl JetStreamEngine {
    /// The document's snapshot index and its revision, if it was ever compacted.
    pub(super) async fn index(
        &self,
        doc: &DocName,
    ) -> Result<Option<(SnapshotIndex, u64)>, StoreError> {
        super::versioned(&self.inner.index, doc).await
    }

    /// Log messages of `doc` from sequence `from` on, at most `limit`, as stored (pointers
    /// not followed).
    pub(super) async fn read_raw(
        &self,
        doc: &DocName,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RawEntry>, StoreError> {
        let subject = self.subject(doc);
        let mut entries = Vec::new();
        let mut next = from.max(1);
        while entries.len() < limit {
            let found = self
                .inner
                .log
                .raw_message_builder()
                .sequence(next)
                .next_by_subject(subject.clone())
                .send()
                .await;
            match found {
                Ok(message) => {
                    next = message.sequence + 1;
                    let headers = Some(&message.headers);
                    entries.push(RawEntry::new(message.sequence, headers, message.payload));
                }
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(failed(e)),
            }
        }
        Ok(entries)
    }

    /// Log entries of `doc` from sequence `from` on, at most `limit`.
    async fn read_entries(
        &self,
        doc: &DocName,
        from: u64,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let mut entries = Vec::new();
        for raw in self.read_raw(doc, from, limit).await? {
            let seq = raw.seq;
            let update = self.bytes_of(raw).await?;
            entries.push(LogEntry { seq, update });
        }
        Ok(entries)
    }

    /// The log entries after the document's snapshot.
    pub(super) async fn entries_after_snapshot(
        &self,
        doc: &DocName,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let through = self.index(doc).await?.map_or(0, |(index, _)| index.through);
        self.read_entries(doc, through + 1, usize::MAX).await
    }

    /// An object's bytes (a snapshot, or a log entry too large for a message).
    pub(super) async fn read_object(&self, object: &str) -> Result<Vec<u8>, StoreError> {
        let mut reader = self.inner.snapshots.get(object).await.map_err(failed)?;
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| StoreError::Io(e.to_string()))?;
        Ok(bytes)
    }

    /// Stores `snapshot` as `doc`'s snapshot (or checkpoint) through `through`; its object's
    /// name ([`snapshot_object`]).
    pub(super) async fn put_snapshot(
        &self,
        doc: &DocName,
        through: u64,
        snapshot: &[u8],
    ) -> Result<String, StoreError> {
        let object = snapshot_object(doc, through);
        let mut reader = snapshot;
        self.inner
            .snapshots
            .put(object.as_str(), &mut reader)
            .await
            .map_err(failed)?;
        Ok(object)
    }

    /// Loads `doc`; retried when a compaction moved the snapshot in the middle of it.
    async fn load_doc(&self, doc: &DocName) -> Result<StoredDoc, StoreError> {
        let mut last_error = None;
        for _ in 0..super::CAS_ATTEMPTS {
            let index = self.index(doc).await?;
            let (snapshot, through) = match &index {
                Some((index, _)) => match self.read_object(&index.object).await {
                    Ok(bytes) => (Some(bytes), index.through),
                    Err(e) => {
                        // Replaced and deleted by a compaction since the index was read.
                        last_error = Some(e);
                        continue;
                    }
                },
                None => (None, 0),
            };
            let entries = self.read_entries(doc, through + 1, usize::MAX).await?;
            // Entries up to a newer snapshot may be purged already: the index must not
            // have moved while they were read.
            let now = self.index(doc).await?.map(|(_, revision)| revision);
            if now == index.as_ref().map(|(_, revision)| *revision) {
                let last_seq = entries.last().map_or(through, |e| e.seq);
                let log = entries.into_iter().map(|e| e.update).collect();
                return Ok(StoredDoc {
                    snapshot,
                    log,
                    last_seq,
                });
            }
        }
        Err(last_error.unwrap_or_else(|| {
            StoreError::Io("the document kept being compacted while it loaded".into())
        }))
    }

    /// Sends one entry, tagged with its message id and this relay's origin; the future
    /// resolves to the acknowledgement.
    async fn send(&self, outgoing: &Outgoing) -> Result<PublishAckFuture, StoreError> {
        let mut message = PublishMessage::build()
            .message_id(&outgoing.id)
            .header(ORIGIN_HEADER, self.inner.origin.as_str())
            .payload(outgoing.payload.clone());
        if let Some(object) = &outgoing.object {
            message = message.header(OBJECT_HEADER, object.as_str());
        }
        message = outgoing.meta.tag(message);
        self.inner
            .js
            .send_publish(outgoing.subject.clone(), message)
            .await
            .map_err(unreachable)
    }

    /// Waits for the acknowledgement of an entry `sent` already; sends it again with the same
    /// message id while the acknowledgement is lost or the stream has no leader (an election
    /// after a server died), so it is stored once. The entry's sequence. Gives up after
    /// [`PUBLISH_PATIENCE`].
    async fn confirm(
        &self,
        mut sent: Result<PublishAckFuture, StoreError>,
        outgoing: Outgoing,
    ) -> Result<u64, StoreError> {
        let deadline = tokio::time::Instant::now() + PUBLISH_PATIENCE;
        let mut pause = Duration::from_millis(50);
        loop {
            let error = match sent {
                Ok(ack) => match tokio::time::timeout(ACK_TIMEOUT, ack.into_future()).await {
                    Ok(Ok(ack)) => return Ok(ack.sequence),
                    Ok(Err(e)) => unreachable(e),
                    Err(_) => unreachable("no acknowledgement in time"),
                },
                Err(e) => e,
            };
            if tokio::time::Instant::now() + pause >= deadline {
                return Err(error);
            }
            tracing::debug!(error = %error, "publish not acknowledged; sending it again");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
            sent = self.send(&outgoing).await;
        }
    }

    /// Folds `snapshot` (and whatever else the log holds up to `through`) into a new
    /// snapshot and swaps it in if no other compactor got further. The entries stay in the
    /// log as history; the snapshot it replaces goes, unless it is the first or history
    /// keeps it as a checkpoint ([`crate::history::CHECKPOINT_FACTOR`]).
    async fn compact_doc(
        &self,
        doc: &DocName,
        snapshot: Vec<u8>,
        through: u64,
    ) -> Result<(), StoreError> {
        for _ in 0..super::CAS_ATTEMPTS {
            let current = self.index(doc).await?;
            if current
                .as_ref()
                .is_some_and(|(index, _)| index.through >= through)
            {
                return Ok(()); // another compactor already folded these entries
            }
            if self.try_compact(doc, &snapshot, through, current).await? {
                return Ok(());
            }
            // The index changed meanwhile (another compactor, or thinning adding a
            // checkpoint): read it again.
        }
        Err(StoreError::Io(
            "the snapshot index kept changing during a compaction".into(),
        ))
    }

    /// One attempt of [`Self::compact_doc`] from the index `current`; `false` if the index
    /// changed before the swap (nothing is left behind).
    async fn try_compact(
        &self,
        doc: &DocName,
        snapshot: &[u8],
        through: u64,
        current: Option<(SnapshotIndex, u64)>,
    ) -> Result<bool, StoreError> {
        // Whatever the log holds up to `through` goes in too: merging updates is idempotent,
        // and an entry another relay appended that this room had not seen yet is kept.
        let from = current.as_ref().map_or(0, |(index, _)| index.through) + 1;
        let mut parts = vec![snapshot.to_vec()];
        let mut folded = 0u64;
        for raw in self.read_raw(doc, from, usize::MAX).await? {
            if raw.seq > through {
                break;
            }
            let bytes = self.bytes_of(raw).await?;
            folded += bytes.len() as u64;
            parts.push(bytes);
        }
        let merged = fold_updates(parts).await?;
        let object = self.put_snapshot(doc, through, &merged).await?;
        let current_index = current.as_ref().map(|(index, _)| index);
        let index = next_index(current_index, object.clone(), through, folded, &merged);
        let value = serde_json::to_vec(&index).map_err(|e| StoreError::Record(Arc::new(e)))?;
        let swapped = match &current {
            Some((_, revision)) => self
                .inner
                .index
                .update(key(doc), value.into(), *revision)
                .await
                .is_ok(),
            None => self
                .inner
                .index
                .create(key(doc), value.into())
                .await
                .is_ok(),
        };
        if !swapped {
            let _ = self.inner.snapshots.delete(&object).await;
            return Ok(false);
        }
        self.committed();
        if let Some((old, _)) = current
            && !index.checkpoints.contains(&old.through)
        {
            let _ = self.inner.snapshots.delete(&old.object).await;
        }
        Ok(true)
    }
}

/// One snapshot holding every update of `parts` (a snapshot and log entries), encoded from a
/// document they were applied to, off the async workers. Not `yrs::merge_updates_v1`: a
/// merged update keeps every edit as a block of its own, and yrs integrates one holding a long
/// log far more slowly (the automerge-paper trace: 4.4 s, against 11 ms for its snapshot).
pub(super) async fn fold_updates(parts: Vec<Vec<u8>>) -> Result<Vec<u8>, StoreError> {
    let folded = tokio::task::spawn_blocking(move || {
        let (base, rest) = parts
            .split_first()
            .map_or((None, &[][..]), |(b, r)| (Some(b), r));
        aetherflow_crdt::Room::load(base.map(Vec::as_slice), rest.iter().map(Vec::as_slice))
            .map(|room| room.snapshot())
    })
    .await
    .map_err(|e| StoreError::Engine(Arc::new(std::io::Error::other(e.to_string()))))?;
    folded.map_err(|e| StoreError::Engine(Arc::new(std::io::Error::other(e.to_string()))))
}

/// The snapshot index after a compaction through `through` that folded `folded` bytes of
/// entries into `merged`, replacing `current`. The replaced snapshot stays as a checkpoint
/// when it is the document's first (it may hold entries the log no longer has: documents
/// compacted before history existed had them purged); the new one becomes a checkpoint once
/// the entries since the last checkpoint outweigh it [`crate::history::CHECKPOINT_FACTOR`]
/// times.
fn next_index(
    current: Option<&SnapshotIndex>,
    object: String,
    through: u64,
    folded: u64,
    merged: &[u8],
) -> SnapshotIndex {
    let mut checkpoints = current.map(|c| c.checkpoints.clone()).unwrap_or_default();
    if let Some(old) = current
        && checkpoints.is_empty()
    {
        checkpoints.push(old.through);
    }
    let mut since_checkpoint = current.map_or(0, |c| c.since_checkpoint) + folded;
    if since_checkpoint > crate::history::CHECKPOINT_FACTOR * merged.len() as u64 {
        checkpoints.push(through);
        since_checkpoint = 0;
    }
    SnapshotIndex {
        object,
        through,
        checkpoints,
        since_checkpoint,
    }
}

impl Appends {
    fn begin(&self) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .in_flight += 1;
    }

    fn end(&self, seq: Option<u64>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.in_flight -= 1;
        if let Some(seq) = seq {
            state.last_seq = state.last_seq.max(seq);
        }
        if state.in_flight == 0 {
            self.settled.notify_waiters();
        }
    }

    /// The last sequence acknowledged once no append is in flight.
    async fn settled(&self) -> u64 {
        loop {
            let notified = self.settled.notified();
            {
                let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if state.in_flight == 0 {
                    return state.last_seq;
                }
            }
            notified.await;
        }
    }
}

impl DocumentLog for JetStreamEngine {
    fn append(
        &self,
        doc: DocName,
        update: Vec<u8>,
        authors: Vec<String>,
    ) -> Pending<'_, Committing> {
        Box::pin(async move {
            let meta = EntryMeta::new(authors, update.len());
            let appends = self.appends(&doc);
            appends.begin();
            let engine = self.clone();
            let id = uuid::Uuid::now_v7().to_string();
            // Larger than a message: the bytes go to the object store first, the log gets a
            // pointer (see `large.rs`).
            let (payload, object) = if self.too_large_for_a_message(&update) {
                match self.put_large(&doc, &id, &update).await {
                    Ok(object) => (bytes::Bytes::new(), Some(object)),
                    Err(e) => {
                        appends.end(None);
                        return Err(e);
                    }
                }
            } else {
                (bytes::Bytes::from(update), None)
            };
            let outgoing = Outgoing {
                subject: self.subject(&doc),
                id,
                payload,
                object,
                meta,
            };
            // Sent now, so entries go out in the order appended; acknowledged (or sent again)
            // by a task of its own, so the append settles whether or not anyone polls its
            // `Committing` (a compaction waits for every append to settle).
            let sent = self.send(&outgoing).await;
            let (done, committed) = oneshot::channel();
            tokio::spawn(async move {
                let stored = engine.confirm(sent, outgoing).await;
                appends.end(stored.as_ref().ok().copied());
                let _ = done.send(stored.map(|_| engine.committed()));
            });
            Ok(Committing::new(async move {
                committed.await.unwrap_or(Err(StoreError::WriterGone))
            }))
        })
    }

    fn append_relaxed(
        &self,
        doc: DocName,
        update: Vec<u8>,
        authors: Vec<String>,
    ) -> Pending<'_, ()> {
        Box::pin(async move {
            let committing = self.append(doc, update, authors).await?;
            tokio::spawn(async move {
                if let Err(e) = committing.await {
                    tracing::error!(error = %e, "relaxed append failed");
                }
            });
            Ok(())
        })
    }

    fn compact(&self, doc: DocName, snapshot: Vec<u8>) -> Pending<'_, ()> {
        Box::pin(async move {
            let through = self.appends(&doc).settled().await;
            if through == 0 {
                return Ok(()); // nothing appended through this handle: nothing to fold
            }
            self.compact_doc(&doc, snapshot, through).await
        })
    }

    fn load(&self, doc: DocName) -> Pending<'_, StoredDoc> {
        Box::pin(async move { super::unless_unanswered(|| self.load_doc(&doc)).await })
    }

    fn entries(&self, doc: DocName, from: u64, limit: usize) -> Pending<'_, Vec<LogEntry>> {
        Box::pin(async move {
            let through = self
                .index(&doc)
                .await?
                .map_or(0, |(index, _)| index.through);
            self.read_entries(&doc, from.max(through + 1), limit).await
        })
    }

    fn follow(&self, doc: DocName, after: u64) -> Pending<'_, Option<Following>> {
        Box::pin(async move {
            let deliver_policy = match after {
                0 => DeliverPolicy::All,
                seq => DeliverPolicy::ByStartSequence {
                    start_sequence: seq + 1,
                },
            };
            let consumer = self
                .inner
                .log
                .create_consumer(pull::OrderedConfig {
                    filter_subject: self.subject(&doc),
                    deliver_policy,
                    ..Default::default()
                })
                .await
                .map_err(unreachable)?;
            let messages = consumer.messages().await.map_err(unreachable)?;
            let engine = self.clone();
            let following = messages.filter_map(move |message| {
                let engine = engine.clone();
                async move {
                    let message = match message {
                        Err(e) => return Some(Err(unreachable(e))),
                        Ok(message) => message,
                    };
                    let headers = message.headers.as_ref();
                    let own = headers
                        .and_then(|h| h.get(ORIGIN_HEADER))
                        .is_some_and(|o| o.as_str() == engine.inner.origin);
                    let seq = match message.info() {
                        _ if own => return None,
                        Ok(info) => info.stream_sequence,
                        Err(e) => return Some(Err(unreachable(e))),
                    };
                    let raw = RawEntry::new(seq, headers, message.payload.clone());
                    Some(
                        engine
                            .bytes_of(raw)
                            .await
                            .map(|update| LogEntry { seq, update }),
                    )
                }
            });
            Ok(Some(Box::pin(following) as Following))
        })
    }

    fn flush(&self) -> Pending<'_, ()> {
        Box::pin(async move {
            let all: Vec<_> = self
                .inner
                .appends
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .cloned()
                .collect();
            for appends in all {
                appends.settled().await;
            }
            Ok(())
        })
    }

    fn is_writable(&self) -> bool {
        self.inner.js.client().connection_state() == async_nats::connection::State::Connected
    }

    fn commits(&self) -> u64 {
        self.inner
            .commits
            .load(std::sync::atomic::Ordering::Acquire)
    }
}
