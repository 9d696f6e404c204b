//! Relay metrics, served as Prometheus/OpenMetrics text on `GET /metrics`.
//!
//! One [`Metrics`] is built at start-up and handed to what records into it: the session
//! registry (messages and bytes per transport), the rooms (updates, apply and broadcast
//! latency, compactions, rejections), the store writer (commit latency and batch size) and
//! the Quantum listener ([`QuantumMetrics`]) and webhook delivery ([`WebhookMetrics`]). Recording is an atomic add on a counter that
//! was resolved when [`Metrics`] was built, never a lock or a label lookup per message;
//! histograms are observed once per batch. Gauges that describe sessions are rendered from a
//! census of the session registry taken at scrape time, so connections cost nothing extra. A
//! leaf: it names nothing of the relay but [`crate::connection`]'s words.
//!
//! ```
//! use aetherflow_server::metrics::{Metrics, Rejection};
//!
//! let metrics = Metrics::new();
//! metrics.reject(Rejection::MessageTooBig);
//! let text = metrics.render(&[]);
//! assert!(text.contains("aetherflow_rejected_total{reason=\"message_too_big\"} 1"));
//! assert!(text.ends_with("# EOF\n"));
//! ```

mod quantum;
mod webhooks;

use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry as PromRegistry, Unit};

pub use quantum::{QuantumConnectionMetrics, QuantumMetrics, QuantumStats};
pub use webhooks::WebhookMetrics;

use crate::connection::{SessionState, Transport};

/// Why the relay refused a client's input or connection; the `reason` label of
/// `aetherflow_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// A binary frame that is not a well-formed y-protocols message (close 1002).
    MalformedMessage,
    /// A text frame where y-websocket sends binary (close 1003).
    TextFrame,
    /// A well-formed message with an invalid payload: a bad Yjs update or awareness (1007).
    InvalidPayload,
    /// A message over `--max-message-bytes` (close 1009).
    MessageTooBig,
    /// A session over its message rate (close 1008).
    MessageRate,
    /// An update from a read-only token (answered with permission-denied).
    ReadOnly,
    /// A connection over the per-address connection rate (HTTP 429).
    ConnectionRate,
    /// A WebSocket request without a token where one is required (HTTP 401).
    AuthMissing,
    /// A malformed, expired or wrongly signed token (HTTP 401).
    AuthInvalid,
    /// A valid token that does not cover the document (HTTP 403).
    AuthForbidden,
    /// A bad document name (HTTP 400).
    InvalidDocName,
    /// An awareness update over a connection's or a document's presence limits (close 1008).
    PresenceLimit,
    /// A write refused while the storage cannot be written (HTTP 507, permission-denied).
    StorageUnavailable,
    /// A TCP connection over `--max-connections` (a minimal 503, then closed), or a request
    /// other than `/healthz` on a connection kept for health checks (503 `over_capacity`).
    ConnectionLimit,
    /// A connection without a complete request head, closed to make room for a newer one
    /// while every place was taken.
    ConnectionCut,
    /// A heavy document read over `--max-content-reads` (HTTP 503 `busy`).
    ContentBusy,
    /// A `GET .../content` whose JSON is over `--max-content-json-bytes` (HTTP 422).
    ContentTooLarge,
    /// A Quantum subscription over `--quantum-max-documents` (error 4413).
    TooManyDocuments,
    /// An update over a document's or an update's size limits (`--max-doc-bytes`,
    /// `--max-doc-items`, `--max-update-items`): close 1009, HTTP 413.
    DocumentLimit,
}

impl Rejection {
    /// Every reason, in declaration order (which indexes the counters).
    pub const ALL: [Rejection; 19] = [
        Rejection::MalformedMessage,
        Rejection::TextFrame,
        Rejection::InvalidPayload,
        Rejection::MessageTooBig,
        Rejection::MessageRate,
        Rejection::ReadOnly,
        Rejection::ConnectionRate,
        Rejection::AuthMissing,
        Rejection::AuthInvalid,
        Rejection::AuthForbidden,
        Rejection::InvalidDocName,
        Rejection::PresenceLimit,
        Rejection::StorageUnavailable,
        Rejection::ConnectionLimit,
        Rejection::ConnectionCut,
        Rejection::ContentBusy,
        Rejection::ContentTooLarge,
        Rejection::TooManyDocuments,
        Rejection::DocumentLimit,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::MalformedMessage => "malformed_message",
            Rejection::TextFrame => "text_frame",
            Rejection::InvalidPayload => "invalid_payload",
            Rejection::MessageTooBig => "message_too_big",
            Rejection::MessageRate => "message_rate",
            Rejection::ReadOnly => "read_only",
            Rejection::ConnectionRate => "connection_rate",
            Rejection::AuthMissing => "auth_missing",
            Rejection::AuthInvalid => "auth_invalid",
            Rejection::AuthForbidden => "auth_forbidden",
            Rejection::InvalidDocName => "invalid_doc_name",
            Rejection::PresenceLimit => "presence_limit",
            Rejection::StorageUnavailable => "storage_unavailable",
            Rejection::ConnectionLimit => "connection_limit",
            Rejection::ConnectionCut => "connection_cut",
            Rejection::ContentBusy => "content_busy",
            Rejection::ContentTooLarge => "content_too_large",
            Rejection::TooManyDocuments => "too_many_documents",
            Rejection::DocumentLimit => "document_limit",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl From<&crate::auth::AuthError> for Rejection {
    fn from(error: &crate::auth::AuthError) -> Rejection {
        use crate::auth::AuthError;
        match error {
            AuthError::Missing => Rejection::AuthMissing,
            AuthError::WrongDocument => Rejection::AuthForbidden,
            AuthError::Malformed
            | AuthError::Expired
            | AuthError::NotYetValid
            | AuthError::BadSignature => Rejection::AuthInvalid,
        }
    }
}

impl EncodeLabelValue for Rejection {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// `reason` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: Rejection,
}

/// `transport` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransportLabel {
    transport: &'static str,
}

/// `transport` and `state` labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SessionLabels {
    transport: &'static str,
    state: &'static str,
}

const TRANSPORTS: [Transport; 2] = [Transport::Websocket, Transport::Quantum];
const STATES: [SessionState; 5] = [
    SessionState::Connecting,
    SessionState::Active,
    SessionState::Idle,
    SessionState::Disconnecting,
    SessionState::Closed,
];

fn transport_name(transport: Transport) -> &'static str {
    match transport {
        Transport::Websocket => "websocket",
        Transport::Quantum => "quantum",
    }
}

fn state_name(state: SessionState) -> &'static str {
    match state {
        SessionState::Connecting => "connecting",
        SessionState::Active => "active",
        SessionState::Idle => "idle",
        SessionState::Disconnecting => "disconnecting",
        SessionState::Closed => "closed",
    }
}

/// Message and byte counters of one transport; each session's handle holds a clone.
#[derive(Clone, Default)]
pub struct Traffic {
    messages_in: Counter,
    messages_out: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
}

impl Traffic {
    /// One data message of `bytes` payload bytes came in.
    pub fn received(&self, bytes: usize) {
        self.messages_in.inc();
        self.bytes_in.inc_by(bytes as u64);
    }

    /// One data message of `bytes` payload bytes went out.
    pub fn sent(&self, bytes: usize) {
        self.messages_out.inc();
        self.bytes_out.inc_by(bytes as u64);
    }
}

/// Seconds, from 10 µs to about 2.6 s in steps of 4×.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_01, 4.0, 10))
}

struct Inner {
    registry: PromRegistry,
    /// Serialises scrapes: each one rewrites the session gauges before encoding.
    scrape: Mutex<()>,
    sessions: Family<SessionLabels, Gauge>,
    connections: Family<TransportLabel, Gauge>,
    documents_loaded: Gauge,
    updates_in: Counter,
    updates_redundant: Counter,
    storage_failures: Counter,
    damaged_loads: Counter,
    damaged_at_start: Gauge,
    storage_engine_failures: Counter,
    content_reads_shared: Counter,
    updates_out: Counter,
    traffic: [Traffic; 2],
    apply: Histogram,
    commit: Histogram,
    broadcast: Histogram,
    commit_batch: Histogram,
    compactions: Counter,
    rejected: Vec<Counter>,
    quantum: QuantumMetrics,
    webhooks: WebhookMetrics,
}

/// The relay's metrics. Cheap to clone; every clone records into the same registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Builds and registers every metric, at zero.
    pub fn new() -> Metrics {
        let mut registry = PromRegistry::with_prefix("aetherflow");
        let sessions = Family::<SessionLabels, Gauge>::default();
        registry.register(
            "sessions",
            "Sessions by transport and state (closed ones stay listed a few seconds)",
            sessions.clone(),
        );
        let connections = Family::<TransportLabel, Gauge>::default();
        registry.register(
            "connections",
            "Open client connections (sessions not yet closed) by transport",
            connections.clone(),
        );
        let documents_loaded = Gauge::default();
        registry.register(
            "documents_loaded",
            "Documents loaded in memory (one room task each)",
            documents_loaded.clone(),
        );
        let updates_in = Counter::default();
        registry.register(
            "updates_received",
            "Yjs updates received for applying (WebSocket and HTTP API)",
            updates_in.clone(),
        );
        let updates_redundant = Counter::default();
        registry.register(
            "updates_redundant",
            "Yjs updates that added nothing the document did not hold (echoes): neither stored nor broadcast",
            updates_redundant.clone(),
        );
        let storage_failures = Counter::default();
        registry.register(
            "storage_failures",
            "Commits that failed on storage I/O (a full disk, an I/O error); while they fail, /healthz is not ready",
            storage_failures.clone(),
        );
        let damaged_loads = Counter::default();
        registry.register(
            "damaged_loads",
            "Document loads refused because stored data failed its checksum (see `aetherflow check`)",
            damaged_loads.clone(),
        );
        let damaged_at_start = Gauge::default();
        registry.register(
            "damaged_documents_at_start",
            "Documents the start-up integrity check found damaged (0 when it was skipped)",
            damaged_at_start.clone(),
        );
        let storage_engine_failures = Counter::default();
        registry.register(
            "storage_engine_failures",
            "Store operations that failed inside redb (a panic on damaged pages), each contained to itself (see `aetherflow check`)",
            storage_engine_failures.clone(),
        );
        let content_reads_shared = Counter::default();
        registry.register(
            "content_reads_shared",
            "Document reads (GET content or update) answered by a read of the same document in flight, without a load of their own",
            content_reads_shared.clone(),
        );
        let updates_out = Counter::default();
        registry.register(
            "updates_sent",
            "Yjs update frames queued to subscribers (one per subscriber per broadcast)",
            updates_out.clone(),
        );
        let traffic = Self::register_traffic(&mut registry);
        let (apply, commit, broadcast, commit_batch) = Self::register_histograms(&mut registry);
        let compactions = Counter::default();
        registry.register(
            "compactions",
            "Update logs folded into a snapshot",
            compactions.clone(),
        );
        let family = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "rejected",
            "Refused client input or connections, by reason",
            family.clone(),
        );
        let rejected = Rejection::ALL
            .iter()
            .map(|&reason| family.get_or_create(&ReasonLabel { reason }).clone())
            .collect();
        let quantum = QuantumMetrics::register(&mut registry);
        let webhooks = WebhookMetrics::register(&mut registry);
        Metrics {
            inner: Arc::new(Inner {
                registry,
                scrape: Mutex::new(()),
                sessions,
                connections,
                documents_loaded,
                updates_in,
                updates_redundant,
                storage_failures,
                damaged_loads,
                damaged_at_start,
                storage_engine_failures,
                content_reads_shared,
                updates_out,
                traffic,
                apply,
                commit,
                broadcast,
                commit_batch,
                compactions,
                rejected,
                quantum,
                webhooks,
            }),
        }
    }

    fn register_traffic(registry: &mut PromRegistry) -> [Traffic; 2] {
        let families: [Family<TransportLabel, Counter>; 4] = Default::default();
        let names = [
            ("messages_received", "Data messages received from clients"),
            ("messages_sent", "Data messages sent to clients"),
            ("received", "Payload bytes received from clients"),
            ("sent", "Payload bytes sent to clients"),
        ];
        for (i, ((name, help), family)) in names.iter().zip(&families).enumerate() {
            if i < 2 {
                registry.register(*name, *help, family.clone());
            } else {
                registry.register_with_unit(*name, *help, Unit::Bytes, family.clone());
            }
        }
        TRANSPORTS.map(|transport| {
            let label = TransportLabel {
                transport: transport_name(transport),
            };
            let [messages_in, messages_out, bytes_in, bytes_out] =
                families.each_ref().map(|f| f.get_or_create(&label).clone());
            Traffic {
                messages_in,
                messages_out,
                bytes_in,
                bytes_out,
            }
        })
    }

    fn register_histograms(
        registry: &mut PromRegistry,
    ) -> (Histogram, Histogram, Histogram, Histogram) {
        let apply = latency_histogram();
        registry.register_with_unit(
            "apply_duration",
            "Applying one batch of updates in one yrs transaction",
            Unit::Seconds,
            apply.clone(),
        );
        let commit = latency_histogram();
        registry.register_with_unit(
            "commit_duration",
            "One group commit of the store writer (fsync'd when durable)",
            Unit::Seconds,
            commit.clone(),
        );
        let broadcast = latency_histogram();
        registry.register_with_unit(
            "broadcast_duration",
            "Queueing one update frame to every subscriber of a document",
            Unit::Seconds,
            broadcast.clone(),
        );
        let commit_batch = Histogram::new(exponential_buckets(1.0, 2.0, 13));
        registry.register(
            "commit_batch_updates",
            "Updates (log appends) per store commit",
            commit_batch.clone(),
        );
        (apply, commit, broadcast, commit_batch)
    }

    /// The message and byte counters of `transport`.
    pub fn traffic(&self, transport: Transport) -> Traffic {
        let index = TRANSPORTS
            .iter()
            .position(|&t| t == transport)
            .unwrap_or_default();
        self.inner.traffic[index].clone()
    }

    /// What the Quantum listener records into.
    pub fn quantum(&self) -> &QuantumMetrics {
        &self.inner.quantum
    }

    /// What webhook delivery records into.
    pub fn webhooks(&self) -> &WebhookMetrics {
        &self.inner.webhooks
    }

    /// A document is loaded until the returned guard is dropped.
    pub fn document_loaded(&self) -> LoadedDocument {
        self.inner.documents_loaded.inc();
        LoadedDocument {
            gauge: self.inner.documents_loaded.clone(),
        }
    }

    /// A batch of `updates` updates was applied in `took`.
    pub fn applied(&self, updates: usize, took: Duration) {
        self.inner.updates_in.inc_by(updates as u64);
        self.inner.apply.observe(took.as_secs_f64());
    }

    /// `updates` accepted updates added nothing to their document.
    pub fn redundant(&self, updates: usize) {
        self.inner.updates_redundant.inc_by(updates as u64);
    }

    /// A document's load was refused: its stored data fails its checksum.
    pub fn damaged_load(&self) {
        self.inner.damaged_loads.inc();
    }

    /// The start-up integrity check found `documents` damaged documents.
    pub fn damaged_at_start(&self, documents: usize) {
        self.inner.damaged_at_start.set(documents as i64);
    }

    /// redb failed inside a store operation (damaged pages); the failure was contained.
    pub fn storage_engine_failed(&self) {
        self.inner.storage_engine_failures.inc();
    }

    /// A document read shared the answer of another read in flight.
    pub fn content_read_shared(&self) {
        self.inner.content_reads_shared.inc();
    }

    /// A commit failed on storage I/O.
    pub fn storage_failed(&self) {
        self.inner.storage_failures.inc();
    }

    /// One update frame went to `subscribers` subscribers in `took`.
    pub fn broadcast(&self, subscribers: usize, took: Duration) {
        self.inner.updates_out.inc_by(subscribers as u64);
        self.inner.broadcast.observe(took.as_secs_f64());
    }

    /// The store writer committed `updates` log appends in `took`.
    pub fn committed(&self, updates: usize, took: Duration) {
        self.inner.commit.observe(took.as_secs_f64());
        self.inner.commit_batch.observe(updates as f64);
    }

    /// A document's log was folded into a snapshot.
    pub fn compacted(&self) {
        self.inner.compactions.inc();
    }

    /// A client's input or connection was refused for `reason`.
    pub fn reject(&self, reason: Rejection) {
        if let Some(counter) = self.inner.rejected.get(reason.index()) {
            counter.inc();
        }
    }

    /// The metrics as OpenMetrics text (which Prometheus scrapes), with the session gauges
    /// read from `sessions` now.
    pub fn render(&self, census: &[(Transport, SessionState)]) -> String {
        let _scrape = self
            .inner
            .scrape
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for transport in TRANSPORTS {
            let mut open = 0;
            for state in STATES {
                let count = census
                    .iter()
                    .filter(|(t, s)| *t == transport && *s == state)
                    .count();
                if state != SessionState::Closed {
                    open += count;
                }
                let labels = SessionLabels {
                    transport: transport_name(transport),
                    state: state_name(state),
                };
                self.inner
                    .sessions
                    .get_or_create(&labels)
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
            }
            let label = TransportLabel {
                transport: transport_name(transport),
            };
            self.inner
                .connections
                .get_or_create(&label)
                .set(i64::try_from(open).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        // Writing into a String cannot fail; an encoding error would be a bug in a label.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.inner.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        text
    }
}

/// Counts a loaded document in `aetherflow_documents_loaded` while it lives.
pub struct LoadedDocument {
    gauge: Gauge<i64, AtomicI64>,
}

impl Drop for LoadedDocument {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::Registry;

    fn value(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map(str::to_owned)
    }

    #[test]
    fn traffic_lands_on_its_transport() {
        let metrics = Metrics::new();
        metrics.traffic(Transport::Quantum).received(100);
        metrics.traffic(Transport::Websocket).sent(7);
        let text = metrics.render(&[]);
        let q = "aetherflow_received_bytes_total{transport=\"quantum\"}";
        let w = "aetherflow_sent_bytes_total{transport=\"websocket\"}";
        assert_eq!(value(&text, q).as_deref(), Some("100"));
        assert_eq!(value(&text, w).as_deref(), Some("7"));
        let m = "aetherflow_messages_received_total{transport=\"websocket\"}";
        assert_eq!(value(&text, m).as_deref(), Some("0"));
    }

    #[test]
    fn session_gauges_follow_the_registry() {
        let metrics = Metrics::new();
        let registry = Registry::new();
        let addr = "127.0.0.1:1".parse().expect("a literal address");
        let a = registry.open("a", Transport::Websocket, addr, vec![]);
        let b = registry.open("b", Transport::Websocket, addr, vec![]);
        b.set_state(SessionState::Active);
        let text = metrics.render(&registry.census());
        let open = "aetherflow_connections{transport=\"websocket\"}";
        assert_eq!(value(&text, open).as_deref(), Some("2"));
        drop(a);
        let text = metrics.render(&registry.census());
        assert_eq!(value(&text, open).as_deref(), Some("1"));
        let closed = "aetherflow_sessions{transport=\"websocket\",state=\"closed\"}";
        assert_eq!(value(&text, closed).as_deref(), Some("1"));
    }

    #[test]
    fn a_loaded_document_counts_until_dropped() {
        let metrics = Metrics::new();
        let guard = metrics.document_loaded();
        let text = metrics.render(&[]);
        assert_eq!(
            value(&text, "aetherflow_documents_loaded").as_deref(),
            Some("1")
        );
        drop(guard);
        let text = metrics.render(&[]);
        assert_eq!(
            value(&text, "aetherflow_documents_loaded").as_deref(),
            Some("0")
        );
    }

    #[test]
    fn every_rejection_reason_is_exposed_from_zero() {
        let text = Metrics::new().render(&[]);
        for reason in Rejection::ALL {
            let series = format!(
                "aetherflow_rejected_total{{reason=\"{}\"}}",
                reason.as_str()
            );
            assert_eq!(value(&text, &series).as_deref(), Some("0"), "{series}");
        }
    }
}
