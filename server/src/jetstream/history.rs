//! Version history in cluster mode: the log keeps its entries after compaction, each message
//! tagged with its authors and size, and labels live in the bucket `{prefix}_history_labels`.
//!
//! - A state at entry `seq` is the newest stored snapshot at or below it (a checkpoint, or the
//!   current snapshot), plus the log entries after it up to `seq`, read in one pass.
//!   Compaction keeps checkpoints by the same rule as the embedded engine
//!   ([`crate::history::CHECKPOINT_FACTOR`]).
//! - Messages cannot be rewritten, so thinning cannot merge a run of dropped versions into
//!   the next kept entry as the embedded engine does. It folds the run into a checkpoint at
//!   the run's last entry instead and deletes the run's messages, when that saves space (the
//!   run outweighs the checkpoint); smaller runs stay. Later states start from that
//!   checkpoint, so no kept version changes.
//! - A snapshot holds whatever its compacting relay had applied, which may include another
//!   relay's edit stored just after the snapshot's sequence: a state produced from a snapshot
//!   may show such an edit a version early. With one relay writing a document, states are
//!   exact.

use std::collections::BTreeMap;
use std::sync::Arc;

use aetherflow_crdt::DocName;
use async_nats::HeaderMap;
use async_nats::jetstream::kv;
use async_nats::jetstream::message::PublishMessage;

use super::large::RawEntry;
use super::log::snapshot_object;
use super::scan::Scope;
use super::{CAS_ATTEMPTS, JetStreamEngine, failed, key, lost_race};
use crate::history::Retention;
use crate::history::thinning::{Merge, plan};
use crate::storage::{DocumentHistory, HistoryEntry, Pending, StoreError, StoredDoc, Timeline};

/// The header listing an entry's authors: a JSON array of token subjects, ASCII only.
const AUTHORS_HEADER: &str = "Aetherflow-Authors";
/// The header giving an entry's size in bytes (a pointer's payload is empty).
const BYTES_HEADER: &str = "Aetherflow-Bytes";
/// The size of a message's payload, in a headers-only delivery.
const SIZE_HEADER: &str = "Nats-Msg-Size";
/// Most runs one thinning folds; the rest wait for the next compaction.
const MAX_FOLDS: usize = 64;

/// What the history keeps of an entry besides its update, carried in its message's headers.
pub(super) struct EntryMeta {
    authors: Vec<String>,
    bytes: usize,
}

impl EntryMeta {
    /// The metadata of an update of `bytes` bytes by `authors`.
    pub fn new(mut authors: Vec<String>, bytes: usize) -> EntryMeta {
        authors.sort();
        authors.dedup();
        EntryMeta { authors, bytes }
    }

    /// `message` with this metadata in its headers.
    pub fn tag(&self, message: PublishMessage) -> PublishMessage {
        let message = message.header(BYTES_HEADER, self.bytes.to_string().as_str());
        if self.authors.is_empty() {
            return message;
        }
        message.header(AUTHORS_HEADER, ascii_json(&self.authors).as_str())
    }

    /// The history record of the message at `seq`, stored at `time_ms` with `headers`.
    /// Messages from before history was kept have no authors and count their payload.
    fn read(seq: u64, time_ms: u64, headers: Option<&HeaderMap>) -> HistoryEntry {
        let header = |name: &str| super::header(headers, name);
        let authors = header(AUTHORS_HEADER)
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_default();
        let bytes = header(BYTES_HEADER)
            .or_else(|| header(SIZE_HEADER))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        HistoryEntry {
            seq,
            time_ms,
            authors,
            bytes,
        }
    }
}

/// `authors` as a JSON array with every non-ASCII character escaped, so that it fits in a
/// header whatever the token subjects hold.
fn ascii_json(authors: &[String]) -> String {
    let json = serde_json::to_string(authors).unwrap_or_else(|_| "[]".into());
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// A document's labels as stored: version id → label.
type Labels = BTreeMap<u64, String>;

impl JetStreamEngine {
    /// `doc`'s labels with the revision of their record.
    async fn labels(&self, doc: &DocName) -> Result<Option<(Labels, u64)>, StoreError> {
        super::versioned(&self.inner.labels, doc).await
    }

    /// Whether `doc`'s log holds an entry `seq`.
    async fn has_entry(&self, doc: &DocName, seq: u64) -> Result<bool, StoreError> {
        use async_nats::jetstream::stream::RawMessageErrorKind;
        match self.inner.log.get_raw_message(seq).await {
            Ok(message) => Ok(message.subject.as_str() == self.subject(doc)),
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(false),
            Err(e) => Err(failed(e)),
        }
    }

    /// `doc` just after entry `seq` (which exists): the newest stored snapshot at or below
    /// it and the entries after it; retried when a compaction or thinning moved the
    /// snapshots meanwhile.
    async fn state_at(&self, doc: &DocName, seq: u64) -> Result<StoredDoc, StoreError> {
        let mut last_error = None;
        for _ in 0..CAS_ATTEMPTS {
            let index = self.index(doc).await?;
            let base = index.as_ref().and_then(|(index, _)| {
                let current = Some(index.through).filter(|t| *t <= seq);
                let checkpoint = index.checkpoints.iter().copied().filter(|c| *c <= seq);
                checkpoint.chain(current).max()
            });
            let snapshot = match base {
                Some(through) => match self.read_object(&snapshot_object(doc, through)).await {
                    Ok(bytes) => Some(bytes),
                    Err(e) => {
                        last_error = Some(e); // replaced since the index was read
                        continue;
                    }
                },
                None => None,
            };
            let from = base.map_or(1, |through| through + 1);
            let mut log = Vec::new();
            for message in self.scan(doc, from, seq, Scope::Whole).await? {
                let raw = RawEntry::new(message.seq, message.headers.as_ref(), message.payload);
                log.push(self.bytes_of(raw).await?);
            }
            // Thinning deletes entries once a checkpoint holds them: the index must not have
            // moved while they were read.
            let now = self.index(doc).await?.map(|(_, revision)| revision);
            if now == index.as_ref().map(|(_, revision)| *revision) {
                return Ok(StoredDoc {
                    snapshot,
                    log,
                    last_seq: seq,
                });
            }
        }
        Err(last_error.unwrap_or_else(|| {
            StoreError::Io("the document kept being compacted while its history was read".into())
        }))
    }

    /// Sets or removes a label by a conditional update of `doc`'s labels record.
    async fn set_label(
        &self,
        doc: &DocName,
        seq: u64,
        label: Option<String>,
    ) -> Result<bool, StoreError> {
        for _ in 0..CAS_ATTEMPTS {
            let current = self.labels(doc).await?;
            let mut labels = current.as_ref().map(|(l, _)| l.clone()).unwrap_or_default();
            let changed = match &label {
                Some(label) => labels
                    .insert(seq, label.clone())
                    .is_none_or(|old| old != *label),
                None => labels.remove(&seq).is_some(),
            };
            if !changed {
                return Ok(label.is_some());
            }
            let value = serde_json::to_vec(&labels).map_err(|e| StoreError::Record(Arc::new(e)))?;
            let written = match &current {
                Some((_, revision)) => {
                    let update = self.inner.labels.update(key(doc), value.into(), *revision);
                    match update.await {
                        Ok(_) => true,
                        Err(e) if lost_race(&e) => false,
                        Err(e) => return Err(failed(e)),
                    }
                }
                None => match self.inner.labels.create(key(doc), value.into()).await {
                    Ok(_) => true,
                    // Another relay wrote the first label meanwhile: read it again.
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => false,
                    Err(e) => return Err(failed(e)),
                },
            };
            if written {
                self.committed();
                return Ok(true);
            }
        }
        Err(StoreError::Io("the labels kept changing".into()))
    }

    /// Folds the run `merge.gone` into a checkpoint at its last entry and deletes its
    /// messages, if that saves space; whether it did.
    async fn fold(
        &self,
        doc: &DocName,
        merge: &Merge,
        timeline: &Timeline,
    ) -> Result<bool, StoreError> {
        let (Some(&first), Some(&last)) = (merge.gone.first(), merge.gone.last()) else {
            return Ok(false);
        };
        let labels = self.labels(doc).await?.map(|(l, _)| l).unwrap_or_default();
        if merge.gone.iter().any(|seq| labels.contains_key(seq)) {
            return Ok(false); // labelled since the plan was made: kept
        }
        let run_bytes: u64 = timeline
            .entries
            .iter()
            .filter(|e| (first..=last).contains(&e.seq))
            .map(|e| e.bytes)
            .sum();
        let state = self.state_at(doc, last).await?;
        let parts = state.snapshot.into_iter().chain(state.log).collect();
        let merged = super::log::fold_updates(parts).await?;
        if merged.len() as u64 >= run_bytes {
            return Ok(false); // the checkpoint would weigh more than the run it replaces
        }
        self.put_snapshot(doc, last, &merged).await?;
        if !self.add_checkpoint(doc, last).await? {
            return Ok(false);
        }
        let pointers = self.scan(doc, first, last, Scope::HeadersOnly).await?;
        for seq in &merge.gone {
            if let Err(e) = self.inner.log.delete_message(*seq).await {
                tracing::debug!(error = %e, seq, "a thinned entry stays (deleted already?)");
            }
        }
        let gone = pointers
            .into_iter()
            .filter(|m| merge.gone.contains(&m.seq))
            .map(|m| RawEntry::new(m.seq, m.headers.as_ref(), m.payload));
        self.drop_objects(gone).await;
        Ok(true)
    }

    /// Records a checkpoint at `through` in `doc`'s snapshot index; `false` if the index is
    /// gone (the document was deleted) or does not cover `through` yet.
    async fn add_checkpoint(&self, doc: &DocName, through: u64) -> Result<bool, StoreError> {
        for _ in 0..CAS_ATTEMPTS {
            let Some((mut index, revision)) = self.index(doc).await? else {
                return Ok(false);
            };
            if index.through < through {
                return Ok(false);
            }
            if index.checkpoints.contains(&through) {
                return Ok(true);
            }
            index.checkpoints.push(through);
            index.checkpoints.sort_unstable();
            let value = serde_json::to_vec(&index).map_err(|e| StoreError::Record(Arc::new(e)))?;
            match self
                .inner
                .index
                .update(key(doc), value.into(), revision)
                .await
            {
                Ok(_) => {
                    self.committed();
                    return Ok(true);
                }
                Err(e) if lost_race(&e) => continue,
                Err(e) => return Err(failed(e)),
            }
        }
        Err(StoreError::Io("the snapshot index kept changing".into()))
    }
}

impl DocumentHistory for JetStreamEngine {
    fn timeline(&self, doc: DocName) -> Pending<'_, Timeline> {
        Box::pin(async move {
            let messages = self.scan(&doc, 1, u64::MAX, Scope::HeadersOnly).await?;
            let entries = messages
                .iter()
                .map(|m| EntryMeta::read(m.seq, m.time_ms, m.headers.as_ref()))
                .collect();
            let labels = self.labels(&doc).await?.map(|(l, _)| l).unwrap_or_default();
            Ok(Timeline { entries, labels })
        })
    }

    fn at(&self, doc: DocName, seq: u64) -> Pending<'_, Option<StoredDoc>> {
        Box::pin(async move {
            if !self.has_entry(&doc, seq).await? {
                return Ok(None);
            }
            self.state_at(&doc, seq).await.map(Some)
        })
    }

    fn label(&self, doc: DocName, seq: u64, label: Option<String>) -> Pending<'_, bool> {
        Box::pin(async move {
            if label.is_some() && !self.has_entry(&doc, seq).await? {
                return Ok(false);
            }
            self.set_label(&doc, seq, label).await
        })
    }

    fn thin(&self, doc: DocName, retention: Retention, now_ms: u64) -> Pending<'_, usize> {
        Box::pin(async move {
            let timeline = self.timeline(doc.clone()).await?;
            let through = self
                .index(&doc)
                .await?
                .map_or(0, |(index, _)| index.through);
            let mut dropped = 0;
            for merge in plan(&timeline, retention, now_ms).iter().take(MAX_FOLDS) {
                // Entries after the snapshot are what a load replays: they stay.
                if merge.gone.last().is_none_or(|last| *last > through) {
                    break;
                }
                if self.fold(&doc, merge, &timeline).await? {
                    dropped += merge.versions;
                }
            }
            Ok(dropped)
        })
    }
}
