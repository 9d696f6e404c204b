//! Reads of a whole document (`GET .../content` as JSON, `GET .../update` as one binary
//! update): the gate they pass, and the JSON form ([`json`]).
//!
//! A read loads the document from the store on a blocking thread (the store holds everything
//! any client has been shown) and renders it there, so neither runs on an async worker. At most
//! `--max-content-reads` loads run at once (503 `busy` with `Retry-After` beyond), and JSON is
//! capped at `--max-content-json-bytes`.
//!
//! Reads of the same document in the same form share one load and one answer: a read that
//! arrives while another is in flight, with no commit in between, waits for that one's answer
//! instead of loading a copy of its own, and takes no place at the gate. So a burst of reads
//! of one large document holds one copy of it, not one per request. A commit in between starts
//! a new load, so a read never misses a write acknowledged before it began.
//!
//! Why a copy at all, rather than the room's loaded document: yrs's document lock blocks, and a
//! long read holding it on the room's document would stall that room's writes, which run on an
//! async worker.

pub mod json;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use aetherflow_crdt::register::Kind;
use aetherflow_crdt::{DocName, Room};
use axum::body::Bytes;
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};

use self::json::TooLarge;
use crate::error::AppError;
use crate::metrics::{Metrics, Rejection};
use crate::storage::{Storage, StoredDoc};

/// The forms a document is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Form {
    /// The root types as JSON.
    Json,
    /// One binary Yjs v1 update of the whole state.
    Update,
}

/// A read's answer, shared by the reads that waited for it: the bytes, or the JSON's refusal
/// for size.
pub type Answer = Result<Bytes, TooLarge>;

/// A read in flight, as the reads arriving after it find it.
struct Flight {
    /// [`DocumentLog::commits`](crate::storage::DocumentLog::commits) when it began: only reads arriving at the same count may share it.
    commits: u64,
    /// Its answer, once there; gone when every read sharing it has finished.
    answer: Weak<OnceCell<Answer>>,
}

/// The gate; cheap to clone.
#[derive(Clone)]
pub struct HeavyReads {
    permits: Arc<Semaphore>,
    max_json_bytes: usize,
    flights: Arc<Mutex<HashMap<(DocName, Form), Flight>>>,
}

impl HeavyReads {
    /// A gate letting `concurrent` loads run at once, answering JSON of at most
    /// `max_json_bytes`.
    pub fn new(concurrent: usize, max_json_bytes: usize) -> HeavyReads {
        HeavyReads {
            permits: Arc::new(Semaphore::new(concurrent)),
            max_json_bytes,
            flights: Arc::default(),
        }
    }

    /// Reads `doc` in `form`, sharing a read of it in flight when there is one (see the
    /// module docs): 404 if it does not exist, 409 if it is a register, 503 `busy` when this
    /// read must load and the gate is full.
    pub async fn read(
        &self,
        storage: &Storage,
        metrics: &Metrics,
        doc: &DocName,
        form: Form,
    ) -> Result<Answer, AppError> {
        let answer = self.flight(doc, form, storage.log.commits());
        let led = AtomicBool::new(false);
        let shared = answer
            .get_or_try_init(|| {
                led.store(true, Ordering::Relaxed);
                self.load(metrics, storage, doc.clone(), form)
            })
            .await?;
        if !led.load(Ordering::Relaxed) {
            metrics.content_read_shared();
        }
        Ok(shared.clone())
    }

    /// The answer cell of the read of `doc` in `form` in flight at `commits`, or a new one.
    fn flight(&self, doc: &DocName, form: Form, commits: u64) -> Arc<OnceCell<Answer>> {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        // Finished flights are dropped here, so the map holds at most the reads in flight.
        flights.retain(|_, flight| flight.answer.strong_count() > 0);
        let key = (doc.clone(), form);
        if let Some(flight) = flights.get(&key)
            && flight.commits == commits
            && let Some(answer) = flight.answer.upgrade()
        {
            return answer;
        }
        let answer = Arc::new(OnceCell::new());
        let flight = Flight {
            commits,
            answer: Arc::downgrade(&answer),
        };
        flights.insert(key, flight);
        answer
    }

    /// Loads and renders on a blocking thread, holding a place at the gate until done (even if
    /// the client has gone meanwhile), or answers 503 `busy` at once when the gate is full.
    async fn load(
        &self,
        metrics: &Metrics,
        storage: &Storage,
        doc: DocName,
        form: Form,
    ) -> Result<Answer, AppError> {
        let permit = self.permit(metrics)?;
        let stored = read_yjs(storage, &doc).await?;
        self.render_with(permit, doc, stored, form).await
    }

    /// Renders a stored state of `doc` that the caller read (a past version, say) in `form`,
    /// through the gate: 503 `busy` when it is full. Not shared with other reads.
    pub async fn render(
        &self,
        metrics: &Metrics,
        doc: DocName,
        stored: StoredDoc,
        form: Form,
    ) -> Result<Answer, AppError> {
        let permit = self.permit(metrics)?;
        self.render_with(permit, doc, stored, form).await
    }

    /// A place at the gate, or 503 `busy`.
    pub fn permit(&self, metrics: &Metrics) -> Result<OwnedSemaphorePermit, AppError> {
        self.permits.clone().try_acquire_owned().map_err(|_| {
            metrics.reject(Rejection::ContentBusy);
            AppError::Busy("too many document reads are running; retry shortly".into())
        })
    }

    async fn render_with(
        &self,
        permit: OwnedSemaphorePermit,
        doc: DocName,
        stored: StoredDoc,
        form: Form,
    ) -> Result<Answer, AppError> {
        let cap = self.max_json_bytes;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let room = Room::load(
                stored.snapshot.as_deref(),
                stored.log.iter().map(Vec::as_slice),
            )
            .map_err(|e| AppError::internal(format!("stored document does not load: {e}")))?;
            Ok(match form {
                Form::Json => json::render(room.doc(), doc.as_str(), cap).map(Bytes::from),
                Form::Update => Ok(Bytes::from(room.snapshot())),
            })
        })
        .await
        .map_err(AppError::internal)?
    }
}

/// Reads a Yjs document's stored form; 404 if it does not exist, 409 if it is a register.
async fn read_yjs(storage: &Storage, doc: &DocName) -> Result<StoredDoc, AppError> {
    ensure_yjs(storage, doc).await?;
    Ok(storage.log.load(doc.clone()).await?)
}

/// 404 if `doc` does not exist, 409 if it is a register.
pub async fn ensure_yjs(storage: &Storage, doc: &DocName) -> Result<(), AppError> {
    let Some(meta) = storage.catalog.document(doc.clone()).await? else {
        return Err(AppError::NotFound(format!("no document {doc}")));
    };
    if meta.kind != Kind::Yjs {
        return Err(not_yjs(doc, meta.kind));
    }
    Ok(())
}

/// The 409 for a Yjs read or write of a register document.
pub fn not_yjs(doc: &DocName, kind: Kind) -> AppError {
    AppError::Conflict(format!(
        "{doc} is a {kind:?} document; use /api/v1/docs/{doc}/register"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> DocName {
        DocName::parse(s).expect("a valid name")
    }

    #[test]
    fn reads_share_a_flight_only_of_the_same_document_form_and_commit_count() {
        let reads = HeavyReads::new(1, 1024);
        let first = reads.flight(&name("a"), Form::Json, 7);
        assert!(Arc::ptr_eq(
            &first,
            &reads.flight(&name("a"), Form::Json, 7)
        ));
        assert!(!Arc::ptr_eq(
            &first,
            &reads.flight(&name("a"), Form::Update, 7)
        ));
        assert!(!Arc::ptr_eq(
            &first,
            &reads.flight(&name("b"), Form::Json, 7)
        ));
        // A commit in between: a new load, which later reads at that count share.
        let after_commit = reads.flight(&name("a"), Form::Json, 8);
        assert!(!Arc::ptr_eq(&first, &after_commit));
        assert!(Arc::ptr_eq(
            &after_commit,
            &reads.flight(&name("a"), Form::Json, 8)
        ));
    }

    #[test]
    fn a_finished_flight_is_forgotten() {
        let reads = HeavyReads::new(1, 1024);
        let first = reads.flight(&name("a"), Form::Json, 7);
        let weak = Arc::downgrade(&first);
        drop(first);
        assert!(weak.upgrade().is_none(), "the map keeps no answer alive");
        let _other = reads.flight(&name("b"), Form::Json, 7);
        assert_eq!(
            reads.flights.lock().expect("not poisoned").len(),
            1,
            "the finished one is gone"
        );
    }
}
