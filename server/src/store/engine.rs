//! redb as the relay's storage engine: [`RedbEngine`] implements the interfaces of
//! [`crate::storage`] over a [`Store`] (reads, on blocking threads) and its [`StoreWriter`]
//! (every write, group-committed by the one writer task).
//!
//! Durable here means: committed by redb with `Durability::Immediate`, so fsync'd on this
//! machine's disk.

use aetherflow_crdt::DocName;
use aetherflow_crdt::register::{Command, Outcome, Register};

use super::{Store, StoreWriter, WriteOp, WriteResult};
use crate::history::Retention;
use crate::storage::{
    Catalog, Committing, Created, DocStats, DocumentHistory, DocumentLog, DocumentMeta, LogEntry,
    NameFilter, Pending, RegisterFailure, RegisterStore, StoreError, StoredDoc, Timeline,
};

/// The embedded redb database seen through the storage interfaces. Cheap to clone.
#[derive(Clone)]
pub struct RedbEngine {
    store: Store,
    writer: StoreWriter,
}

impl RedbEngine {
    /// The engine over an open `store` and its running `writer`.
    pub fn new(store: Store, writer: StoreWriter) -> RedbEngine {
        RedbEngine { store, writer }
    }

    /// Runs a blocking read of the store on a blocking thread.
    fn read<T, F>(&self, read: F) -> Pending<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || read(&store))
                .await
                .map_err(|e| StoreError::Unreadable(format!("read task failed: {e}")))?
        })
    }

    /// Commits `op` and waits for what it did.
    fn commit<T, F>(&self, op: WriteOp, answer: F) -> Pending<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(WriteResult) -> Option<T> + Send + 'static,
    {
        Box::pin(async move {
            let result = self.writer.commit(op).await?;
            let shown = format!("{result:?}");
            answer(result)
                .ok_or_else(|| StoreError::Unreadable(format!("unexpected write result {shown}")))
        })
    }
}

impl DocumentLog for RedbEngine {
    fn append(
        &self,
        doc: DocName,
        update: Vec<u8>,
        authors: Vec<String>,
    ) -> Pending<'_, Committing> {
        Box::pin(async move {
            let append = WriteOp::Append {
                doc,
                update,
                authors,
            };
            let queued = self.writer.enqueue(append).await?;
            Ok(Committing::new(async move { queued.await.map(drop) }))
        })
    }

    fn append_relaxed(
        &self,
        doc: DocName,
        update: Vec<u8>,
        authors: Vec<String>,
    ) -> Pending<'_, ()> {
        Box::pin(self.writer.submit(WriteOp::Append {
            doc,
            update,
            authors,
        }))
    }

    fn compact(&self, doc: DocName, snapshot: Vec<u8>) -> Pending<'_, ()> {
        // The writer applies ops in queue order: every append queued before is in `snapshot`.
        Box::pin(self.writer.submit(WriteOp::Compact { doc, snapshot }))
    }

    fn load(&self, doc: DocName) -> Pending<'_, StoredDoc> {
        self.read(move |store| store.load(&doc))
    }

    fn entries(&self, doc: DocName, from: u64, limit: usize) -> Pending<'_, Vec<LogEntry>> {
        self.read(move |store| store.entries(&doc, from, limit))
    }

    fn flush(&self) -> Pending<'_, ()> {
        Box::pin(self.writer.flush())
    }

    fn is_writable(&self) -> bool {
        self.store.is_writable()
    }

    fn commits(&self) -> u64 {
        self.store.commits()
    }
}

impl DocumentHistory for RedbEngine {
    fn timeline(&self, doc: DocName) -> Pending<'_, Timeline> {
        self.read(move |store| store.timeline(&doc))
    }

    fn at(&self, doc: DocName, seq: u64) -> Pending<'_, Option<StoredDoc>> {
        self.read(move |store| store.at(&doc, seq))
    }

    fn label(&self, doc: DocName, seq: u64, label: Option<String>) -> Pending<'_, bool> {
        self.commit(WriteOp::Label { doc, seq, label }, |result| match result {
            WriteResult::Found(found) => Some(found),
            _ => None,
        })
    }

    fn thin(&self, doc: DocName, retention: Retention, now_ms: u64) -> Pending<'_, usize> {
        Box::pin(async move {
            // Planned from a read, off the writer task; the writer only applies the merges.
            // The read must see every entry queued before the call (the room queues its
            // appends and compaction without waiting for them).
            self.writer.flush().await?;
            let planned = doc.clone();
            let merges = self
                .read(move |store| store.thin_plan(&planned, retention, now_ms))
                .await?;
            if merges.is_empty() {
                return Ok(0);
            }
            let thin = WriteOp::Thin { doc, merges };
            self.commit(thin, |result| match result {
                WriteResult::Thinned(dropped) => Some(dropped),
                _ => None,
            })
            .await
        })
    }
}

impl RegisterStore for RedbEngine {
    fn register(&self, doc: DocName) -> Pending<'_, Option<Register>> {
        self.read(move |store| store.register(&doc))
    }

    fn apply(
        &self,
        doc: DocName,
        command: Command,
    ) -> Pending<'_, Result<Outcome, RegisterFailure>> {
        self.commit(WriteOp::Register { doc, command }, |result| match result {
            WriteResult::Register(outcome) => Some(outcome),
            _ => None,
        })
    }
}

impl Catalog for RedbEngine {
    fn create(&self, doc: DocName, meta: DocumentMeta) -> Pending<'_, Created> {
        self.commit(
            WriteOp::CreateDocument { doc, meta },
            |result| match result {
                WriteResult::Created(meta) => Some(Created::New(meta)),
                WriteResult::Exists(meta) => Some(Created::Exists(meta)),
                _ => None,
            },
        )
    }

    fn document(&self, doc: DocName) -> Pending<'_, Option<DocumentMeta>> {
        self.read(move |store| store.document(&doc))
    }

    fn stats(&self, doc: DocName) -> Pending<'_, DocStats> {
        self.read(move |store| store.stats(&doc))
    }

    fn list(
        &self,
        after: Option<String>,
        limit: usize,
        keep: NameFilter,
    ) -> Pending<'_, Vec<(DocName, DocumentMeta)>> {
        self.read(move |store| store.list(after.as_deref(), limit, keep))
    }

    fn delete(&self, doc: DocName) -> Pending<'_, bool> {
        self.commit(WriteOp::DeleteDocument { doc }, |result| match result {
            WriteResult::Deleted(existed) => Some(existed),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Storage;
    use crate::storage::conformance::{self, Engine};
    use crate::store::WriteMode;
    use futures_util::future::BoxFuture;

    /// A redb file in a temporary directory, reopened as a restarted relay would.
    struct RedbFile {
        dir: tempfile::TempDir,
        writer_task: Option<tokio::task::JoinHandle<()>>,
    }

    impl RedbFile {
        fn new() -> RedbFile {
            RedbFile {
                dir: tempfile::tempdir().expect("temp dir"),
                writer_task: None,
            }
        }
    }

    impl Engine for RedbFile {
        fn open(&mut self) -> BoxFuture<'_, Storage> {
            Box::pin(async move {
                if let Some(task) = self.writer_task.take() {
                    // The previous handles were dropped: the writer ends after a final commit.
                    task.await.expect("the writer ends cleanly");
                }
                let store = Store::open(&self.dir.path().join("db.redb")).expect("store");
                let (writer, task) = StoreWriter::spawn(store.clone(), WriteMode::Durable);
                self.writer_task = Some(task);
                Storage::with_history(RedbEngine::new(store, writer))
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redb_passes_the_storage_conformance_suite() {
        conformance::run(&mut RedbFile::new())
            .await
            .expect("redb keeps the storage contract");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redb_passes_the_history_conformance_suite() {
        crate::history::conformance::run(&mut RedbFile::new())
            .await
            .expect("redb keeps the history contract");
    }

    /// A deliberately broken log: it acknowledges an append at once and loses it (the bug of
    /// acknowledging before storing, at its worst). Everything else is redb's.
    struct Forgetful(std::sync::Arc<dyn DocumentLog>);

    impl DocumentLog for Forgetful {
        fn append(&self, _: DocName, _: Vec<u8>, _: Vec<String>) -> Pending<'_, Committing> {
            Box::pin(async { Ok(Committing::new(async { Ok(()) })) })
        }
        fn append_relaxed(
            &self,
            doc: DocName,
            update: Vec<u8>,
            by: Vec<String>,
        ) -> Pending<'_, ()> {
            self.0.append_relaxed(doc, update, by)
        }
        fn compact(&self, doc: DocName, snapshot: Vec<u8>) -> Pending<'_, ()> {
            self.0.compact(doc, snapshot)
        }
        fn load(&self, doc: DocName) -> Pending<'_, StoredDoc> {
            self.0.load(doc)
        }
        fn entries(&self, doc: DocName, from: u64, limit: usize) -> Pending<'_, Vec<LogEntry>> {
            self.0.entries(doc, from, limit)
        }
        fn flush(&self) -> Pending<'_, ()> {
            self.0.flush()
        }
        fn is_writable(&self) -> bool {
            self.0.is_writable()
        }
        fn commits(&self) -> u64 {
            self.0.commits()
        }
    }

    struct ForgetfulFile(RedbFile);

    impl Engine for ForgetfulFile {
        fn open(&mut self) -> BoxFuture<'_, Storage> {
            Box::pin(async move {
                let storage = self.0.open().await;
                Storage {
                    log: std::sync::Arc::new(Forgetful(storage.log)),
                    ..storage
                }
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_suite_catches_a_log_that_acknowledges_before_storing() {
        let broken = conformance::run(&mut ForgetfulFile(RedbFile::new())).await;
        let violation = broken.expect_err("a log that loses acknowledged appends must fail");
        assert!(violation.0.contains("appended 5 entries"), "{violation:?}");
    }
}
