//! The delivery task: reads due outbox rows, sends each one, and records what happened
//! through the store's writer (delivered: removed; failed: retried later, or parked past
//! the retry horizon).
//!
//! Delivery is at least once: a row is removed only after its receiver answered 2xx, so a
//! crash between the answer and that commit sends it again, with the same idempotency id.
//! At shutdown attempts in flight are abandoned; their rows stay due and go out after the
//! restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aetherflow_crdt::webhook::{EventBody, EventKind};
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Webhooks;
use super::client::{Attempt, AttemptError, Client};
use super::target::Target;
use crate::metrics::WebhookMetrics;
use crate::store::outbox::{EndpointRecord, OutboxOp, OutboxRow, RowRef};
use crate::store::{Store, WriteOp};
use crate::wall_clock::now_ms;

/// Attempts in flight at once, over every endpoint.
pub const MAX_IN_FLIGHT: usize = 16;
/// Document loads for `include_content` running at once: each holds a blocking thread and a
/// copy of the document.
const CONTENT_READS: usize = 2;
/// Due rows of each endpoint read per look at the outbox.
const PER_ENDPOINT: usize = 4;
/// Longest wait between two looks at the outbox.
const POLL: Duration = Duration::from_secs(1);
/// Longest delay between two attempts of one event.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// The attempts in flight, and the endpoints that failed their last attempt.
///
/// While an endpoint fails, one of its rows at a time is attempted (the earliest due, once the
/// failed attempt's retry time has come): a receiver that is down gets one probe per backoff
/// step instead of one request per event, and its other rows are left unattempted, so that a
/// document's `document.changed` row keeps growing instead of a new one opening every window.
#[derive(Default)]
struct Flights {
    /// Attempt task → (row sequence, endpoint).
    running: HashMap<tokio::task::Id, (u64, String)>,
    /// Endpoint → when its failed row is retried, ms since the Unix epoch.
    failing: HashMap<String, u64>,
}

impl Flights {
    fn may_start(&self, seq: u64, endpoint: &str, now_ms: u64) -> bool {
        if self.running.values().any(|(s, _)| *s == seq) {
            return false;
        }
        match self.failing.get(endpoint) {
            Some(&until) => now_ms >= until && !self.running.values().any(|(_, e)| e == endpoint),
            None => true,
        }
    }

    fn finished(&mut self, id: tokio::task::Id, outcome: Option<Outcome>) {
        let Some((_, endpoint)) = self.running.remove(&id) else {
            return;
        };
        match outcome {
            Some(Outcome::Delivered) => {
                self.failing.remove(&endpoint);
            }
            Some(Outcome::Failed { retry_at }) => {
                self.failing.insert(endpoint, retry_at);
            }
            // The task panicked; the row is untouched and due again.
            None => {}
        }
    }
}

/// How an attempt ended.
enum Outcome {
    Delivered,
    Failed {
        /// When the endpoint may be tried again.
        retry_at: u64,
    },
}

/// Runs until `shutdown`.
pub async fn run(hooks: Webhooks, metrics: WebhookMetrics, shutdown: CancellationToken) {
    let client = Client::new(hooks.settings.allow_private, hooks.settings.timeout);
    let reads = Arc::new(Semaphore::new(CONTENT_READS));
    let mut attempts = JoinSet::new();
    let mut flights = Flights::default();
    let mut last_depth = tokio::time::Instant::now() - POLL;
    loop {
        let started = start_due(
            &hooks,
            &client,
            &metrics,
            &reads,
            &mut flights,
            &mut attempts,
        );
        let wait = match started.await {
            Ok(wait) => wait,
            Err(e) => {
                warn!(error = %e, "cannot read the webhook outbox");
                POLL
            }
        };
        if last_depth.elapsed() >= POLL {
            last_depth = tokio::time::Instant::now();
            record_depth(&hooks.store, &metrics).await;
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = hooks.store.webhooks_recorded() => {}
            Some(done) = attempts.join_next_with_id(), if !attempts.is_empty() => {
                match done {
                    Ok((id, outcome)) => flights.finished(id, Some(outcome)),
                    Err(e) => flights.finished(e.id(), None),
                }
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
    attempts.abort_all();
    debug!("webhook delivery stopped");
}

/// Starts an attempt for each due row that [`Flights::may_start`], as far as
/// [`MAX_IN_FLIGHT`] allows; returns how long to wait before looking again.
async fn start_due(
    hooks: &Webhooks,
    client: &Client,
    metrics: &WebhookMetrics,
    reads: &Arc<Semaphore>,
    flights: &mut Flights,
    attempts: &mut JoinSet<Outcome>,
) -> Result<Duration, crate::storage::StoreError> {
    let now = now_ms();
    let store = hooks.store.clone();
    let (due, next, endpoints) = tokio::task::spawn_blocking(move || {
        let (due, next) = store.due_webhooks(now, PER_ENDPOINT)?;
        let endpoints = store.webhook_endpoints()?;
        Ok::<_, crate::storage::StoreError>((due, next, endpoints))
    })
    .await
    .map_err(|e| crate::storage::StoreError::Unreadable(e.to_string()))??;
    // Forget endpoints deleted since they failed.
    flights
        .failing
        .retain(|id, _| endpoints.iter().any(|e| &e.id == id));
    for (seq, row) in due {
        if attempts.len() >= MAX_IN_FLIGHT || !flights.may_start(seq, &row.endpoint, now) {
            continue;
        }
        // Rows of a deleted endpoint were removed with it; one read before that is skipped.
        let Some(endpoint) = endpoints.iter().find(|e| e.id == row.endpoint).cloned() else {
            continue;
        };
        let job = Job {
            hooks: hooks.clone(),
            client: client.clone(),
            metrics: metrics.clone(),
            reads: reads.clone(),
            seq,
            row,
            endpoint,
        };
        let name = job.endpoint.id.clone();
        let handle = attempts.spawn(job.run());
        flights.running.insert(handle.id(), (seq, name));
    }
    Ok(match next {
        Some(due) if due > now => Duration::from_millis(due - now).min(POLL),
        // Something is due but in flight, held back or over the in-flight bound: an
        // attempt's end wakes the loop; look again within the poll interval in any case.
        Some(_) => POLL / 4,
        None => POLL,
    })
}

async fn record_depth(store: &Store, metrics: &WebhookMetrics) {
    let store = store.clone();
    let depth = tokio::task::spawn_blocking(move || store.webhook_rows(None, 0, |_| false)).await;
    if let Ok(Ok((_, depth))) = depth {
        metrics.outbox_depth(depth.pending, depth.parked);
    }
}

/// One attempt of one row.
struct Job {
    hooks: Webhooks,
    client: Client,
    metrics: WebhookMetrics,
    /// Permits for content reads ([`CONTENT_READS`]).
    reads: Arc<Semaphore>,
    seq: u64,
    row: OutboxRow,
    endpoint: EndpointRecord,
}

impl Job {
    async fn run(self) -> Outcome {
        let number = self.row.attempts + 1;
        let result = self.send(number).await;
        let row = RowRef {
            seq: self.seq,
            id: self.row.id.clone(),
            revision: self.row.revision(),
        };
        let now = now_ms();
        let mut outcome = Outcome::Delivered;
        let op = match result {
            Ok(()) => {
                self.metrics.delivered();
                debug!(id = %row.id, kind = self.row.kind.as_str(), "webhook delivered");
                OutboxOp::Delivered(row)
            }
            Err(e) => {
                let error = e.to_string();
                let horizon = self.hooks.settings.retry_horizon;
                let delay = backoff(self.hooks.settings.retry_initial, self.row.attempts);
                let retry_at = now.saturating_add(millis(delay));
                outcome = Outcome::Failed { retry_at };
                if retry_at.saturating_sub(self.row.retry_from_ms) > millis(horizon) {
                    warn!(id = %row.id, endpoint = %self.endpoint.id, attempts = number, %error,
                        "webhook parked: failing past the retry horizon");
                    self.metrics.parked();
                    OutboxOp::Park { row, error }
                } else {
                    info!(id = %row.id, endpoint = %self.endpoint.id, attempt = number, %error,
                        retry_in_ms = millis(delay), "webhook attempt failed");
                    self.metrics.retried();
                    OutboxOp::Retry {
                        row,
                        due_ms: retry_at,
                        error,
                    }
                }
            }
        };
        if let Err(e) = self.hooks.writer.commit(WriteOp::Webhook(op)).await {
            // The row stays as it was: it is sent again (at least once).
            warn!(error = %e, "cannot record a webhook attempt");
        }
        outcome
    }

    async fn send(&self, number: u32) -> Result<(), AttemptError> {
        let allow_private = self.hooks.settings.allow_private;
        let target = Target::parse(&self.endpoint.url, allow_private)?;
        let content = match self.endpoint.include_content {
            true => Some(self.content().await?),
            false => None,
        };
        let body = body(&self.row, content);
        self.client
            .send(Attempt {
                target: &target,
                secret: &self.endpoint.secret,
                id: &self.row.id,
                kind: self.row.kind.as_str(),
                number,
                body,
            })
            .await
    }

    /// The document's content now: a Yjs document's state as one base64 v1 update, or a
    /// register's state.
    async fn content(&self) -> Result<Value, AttemptError> {
        let store = self.hooks.store.clone();
        let doc = aetherflow_crdt::DocName::parse(&self.row.doc)
            .map_err(|e| AttemptError::Content(format!("document name: {e}")))?;
        let kind = self.row.kind;
        let _permit = self
            .reads
            .acquire()
            .await
            .map_err(|e| AttemptError::Content(e.to_string()))?;
        let read = tokio::task::spawn_blocking(move || content_of(&store, &doc, kind)).await;
        match read {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(AttemptError::Content(e)),
            Err(e) => Err(AttemptError::Content(e.to_string())),
        }
    }
}

fn content_of(
    store: &Store,
    doc: &aetherflow_crdt::DocName,
    kind: EventKind,
) -> Result<Value, String> {
    use base64::Engine;
    if let Some(register) = store.register(doc).map_err(|e| e.to_string())? {
        return Ok(json!({ "register": register }));
    }
    if kind == EventKind::DocumentDeleted {
        return Ok(Value::Null);
    }
    let stored = store.load(doc).map_err(|e| e.to_string())?;
    let parts: Vec<Vec<u8>> = stored.snapshot.into_iter().chain(stored.log).collect();
    let state = match parts.len() {
        0 => Vec::new(),
        1 => parts.into_iter().next().unwrap_or_default(),
        _ => yrs::merge_updates_v1(&parts).map_err(|e| e.to_string())?,
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(state);
    Ok(json!({ "update_base64": encoded }))
}

/// The JSON body of `row`: its details, the change window's fields for `document.changed`,
/// and `content` only when given (the endpoint asked for it).
fn body(row: &OutboxRow, content: Option<Value>) -> Vec<u8> {
    let mut data = match &row.data {
        Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    if let Some(window) = &row.window {
        data.insert("kind".into(), json!("yjs"));
        data.insert("from_ms".into(), json!(window.from_ms));
        data.insert("to_ms".into(), json!(window.to_ms));
        data.insert("updates".into(), json!(window.updates));
        data.insert("authors".into(), json!(window.authors));
    }
    if let Some(content) = content {
        data.insert("content".into(), content);
    }
    let event = EventBody {
        id: row.id.clone(),
        kind: row.kind,
        created_ms: row.created_ms,
        document: row.doc.clone(),
        data: Value::Object(data),
    };
    // Plain strings, numbers and maps: serializing cannot fail.
    serde_json::to_vec(&event).unwrap_or_default()
}

/// The delay before retry `attempts + 1`: `initial · 2^attempts`, at most [`MAX_BACKOFF`],
/// drawn uniformly from its upper half (jitter, so that many failed events do not retry in
/// step).
pub fn backoff(initial: Duration, attempts: u32) -> Duration {
    let full = initial
        .saturating_mul(1u32 << attempts.min(20))
        .min(MAX_BACKOFF);
    let half = full / 2;
    let jitter = rand::rng().random_range(0..=millis(half));
    half + Duration::from_millis(jitter)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_jitter_and_is_capped() {
        let initial = Duration::from_secs(1);
        for attempts in 0..6 {
            let full = Duration::from_secs(1 << attempts);
            let delay = backoff(initial, attempts);
            assert!(delay >= full / 2 && delay <= full, "{attempts}: {delay:?}");
        }
        assert!(backoff(initial, 40) <= MAX_BACKOFF);
    }

    #[test]
    fn bodies_carry_no_content_unless_given() {
        let row = OutboxRow {
            id: "id".into(),
            endpoint: "e".into(),
            kind: EventKind::RegisterUpdated,
            doc: "notes".into(),
            created_ms: 1,
            due_ms: 1,
            attempts: 0,
            retry_from_ms: 1,
            last_error: None,
            parked: false,
            data: json!({ "kind": "lww" }),
            window: None,
        };
        let plain: Value = serde_json::from_slice(&body(&row, None)).expect("json");
        assert_eq!(plain["data"], json!({ "kind": "lww" }));
        assert_eq!(plain["type"], "register.updated");
        let full: Value =
            serde_json::from_slice(&body(&row, Some(json!({ "register": 1 })))).expect("json");
        assert_eq!(full["data"]["content"]["register"], 1);
    }
}
