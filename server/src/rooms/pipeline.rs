//! Durable mode's commit pipeline: a room's batches whose log appends are queued at the store
//! writer but not yet fsync'd, oldest first.
//!
//! Why it exists: a room that awaited each batch's fsync before taking its next batch sat idle
//! for the whole fsync and made at most one inbox-full of updates durable per fsync, so the
//! disk's latency (several times longer on a busy machine) set the ingest rate. With the
//! pipeline the room applies the next batch while earlier ones are being made durable, and the
//! writer folds every append queued meanwhile into its next commit: the slower the disk, the
//! larger the commits, and the fewer fsyncs per update.
//!
//! The durability contract does not change: a batch's frame is broadcast, and its HTTP writers
//! are answered, only once its own commit is done. The writer commits in queue order and the
//! pipeline releases batches in the same order, so every batch released has every earlier
//! batch on disk too. Whatever is not a plain update (a step 1 answer, a join's greeting, an
//! awareness change) is handled only once the pipeline is empty, so nobody is shown document
//! state that is not yet on disk.

use std::collections::VecDeque;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::ApplyError;
use crate::storage::{Committing, StoreError};

/// Where an HTTP writer is told what became of its update.
pub(super) type HttpWaiter = oneshot::Sender<Result<(), ApplyError>>;

/// One applied batch waiting for its commit.
pub(super) struct InFlight {
    /// Resolves once the batch's log entry is fsync'd.
    committing: Committing,
    /// The batch's broadcast frame, released once committed.
    pub frame: Bytes,
    /// Size of the batch's log entry, for the update event.
    pub bytes: usize,
    /// HTTP writers whose updates are in this batch (or were already known to the room when
    /// it was in flight), answered once it is committed.
    pub http: Vec<HttpWaiter>,
}

/// A room's batches in flight, oldest first.
#[derive(Default)]
pub(super) struct Pipeline {
    batches: VecDeque<InFlight>,
}

impl Pipeline {
    /// Adds a batch whose append was just queued at the writer.
    pub fn push(
        &mut self,
        committing: Committing,
        frame: Bytes,
        bytes: usize,
        http: Vec<HttpWaiter>,
    ) {
        self.batches.push_back(InFlight {
            committing,
            frame,
            bytes,
            http,
        });
    }

    /// Batches in flight.
    pub fn len(&self) -> usize {
        self.batches.len()
    }

    /// Whether no batch is in flight.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Hands `waiters` to the newest batch in flight, to be answered when it commits; gives
    /// them back if nothing is in flight. For HTTP updates the room already held: they are
    /// durable once everything applied before them is.
    pub fn answer_with_last(&mut self, waiters: Vec<HttpWaiter>) -> Vec<HttpWaiter> {
        match self.batches.back_mut() {
            Some(last) => {
                last.http.extend(waiters);
                Vec::new()
            }
            None => waiters,
        }
    }

    /// Waits for the oldest batch's commit and takes it out, with the commit's outcome;
    /// `None` if nothing is in flight. Cancel safe: dropped before the commit is done, the
    /// batch stays first in line.
    pub async fn next(&mut self) -> Option<(InFlight, Result<(), StoreError>)> {
        let oldest = self.batches.front_mut()?;
        let result = (&mut oldest.committing).await;
        self.batches.pop_front().map(|batch| (batch, result))
    }

    /// Gives up on every batch in flight (a commit failed, so the document is closing): their
    /// frames are never sent and their HTTP writers are told the document is unavailable.
    pub fn abandon(&mut self, why: &str) {
        for batch in self.batches.drain(..) {
            for waiter in batch.http {
                let _ = waiter.send(Err(ApplyError::Unavailable(why.to_owned())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::storage::Storage;
    use crate::store::{self, Store, WriteMode};
    use aetherflow_crdt::DocName;

    async fn append(storage: &Storage, doc: &DocName, byte: u8) -> Result<Committing, StoreError> {
        storage
            .log
            .append(doc.clone(), vec![byte], Vec::new())
            .await
    }

    #[tokio::test]
    async fn batches_are_released_in_order_and_each_is_on_disk_when_released() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("db.redb")).expect("store");
        let (storage, _, _task) = store::start(store.clone(), WriteMode::Durable, Metrics::new());
        let doc = DocName::parse("pipelined").expect("valid name");
        let mut pipeline = Pipeline::default();
        for n in 0..3u8 {
            let committing = append(&storage, &doc, n).await.expect("queued");
            pipeline.push(committing, Bytes::from(vec![n]), 1, Vec::new());
        }
        assert_eq!(pipeline.len(), 3);
        for n in 0..3u8 {
            let (batch, result) = pipeline.next().await.expect("a batch in flight");
            assert!(result.is_ok(), "commit {n}: {result:?}");
            assert_eq!(&batch.frame[..], &[n], "released in the order queued");
            let stored = store.load(&doc).expect("readable");
            assert!(
                stored.log.len() > usize::from(n),
                "batch {n} released with only {} entries stored",
                stored.log.len()
            );
        }
        assert!(pipeline.next().await.is_none());
    }

    #[tokio::test]
    async fn http_writers_of_known_updates_are_answered_with_the_last_batch() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("db.redb")).expect("store");
        let (storage, _, _task) = store::start(store, WriteMode::Durable, Metrics::new());
        let doc = DocName::parse("known").expect("valid name");
        let mut pipeline = Pipeline::default();
        let (idle, idle_answer) = oneshot::channel();
        // Nothing in flight: the caller answers at once.
        assert_eq!(pipeline.answer_with_last(vec![idle]).len(), 1);
        drop(idle_answer);
        let committing = append(&storage, &doc, 1).await.expect("queued");
        pipeline.push(committing, Bytes::new(), 1, Vec::new());
        let (done, mut answer) = oneshot::channel();
        assert!(pipeline.answer_with_last(vec![done]).is_empty());
        assert!(answer.try_recv().is_err(), "not answered before the commit");
        let (batch, result) = pipeline.next().await.expect("in flight");
        assert!(result.is_ok());
        assert_eq!(batch.http.len(), 1, "the waiter rides with the batch");
    }

    #[tokio::test]
    async fn abandoned_batches_tell_their_http_writers_the_document_is_unavailable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("db.redb")).expect("store");
        let (storage, _, _task) = store::start(store, WriteMode::Durable, Metrics::new());
        let doc = DocName::parse("abandoned").expect("valid name");
        let mut pipeline = Pipeline::default();
        let (done, answer) = oneshot::channel();
        let committing = append(&storage, &doc, 1).await.expect("queued");
        pipeline.push(committing, Bytes::new(), 1, vec![done]);
        pipeline.abandon("commit failed");
        assert!(pipeline.is_empty());
        assert_eq!(
            answer.await.expect("answered"),
            Err(ApplyError::Unavailable("commit failed".into()))
        );
    }

    #[tokio::test]
    async fn a_stopped_writer_fails_the_batch_instead_of_hanging() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("db.redb")).expect("store");
        let (storage, _, task) = store::start(store, WriteMode::Durable, Metrics::new());
        let doc = DocName::parse("orphan").expect("valid name");
        let committing = append(&storage, &doc, 1).await.expect("queued");
        task.abort();
        let _ = task.await;
        let mut pipeline = Pipeline::default();
        pipeline.push(committing, Bytes::new(), 1, Vec::new());
        let (_, result) = pipeline.next().await.expect("in flight");
        // The single-threaded test runtime never ran the writer before the abort.
        assert!(
            matches!(result, Err(StoreError::WriterGone)),
            "expected WriterGone, got {result:?}"
        );
        assert!(append(&storage, &doc, 2).await.is_err());
    }
}
