//! What webhook delivery records: deliveries, failed attempts, retries scheduled, rows parked,
//! and the outbox's depth (pending and parked rows), which `/metrics` sets at each scrape and
//! the delivery task once a second.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Webhook metrics. Cheap to clone.
#[derive(Clone)]
pub struct WebhookMetrics {
    delivered: Counter,
    failed: Counter,
    retried: Counter,
    parked: Counter,
    pending_rows: Gauge,
    parked_rows: Gauge,
}

impl WebhookMetrics {
    pub(super) fn register(registry: &mut Registry) -> WebhookMetrics {
        let metrics = WebhookMetrics {
            delivered: Counter::default(),
            failed: Counter::default(),
            retried: Counter::default(),
            parked: Counter::default(),
            pending_rows: Gauge::default(),
            parked_rows: Gauge::default(),
        };
        registry.register(
            "webhook_deliveries",
            "Webhook events delivered (answered 2xx)",
            metrics.delivered.clone(),
        );
        registry.register(
            "webhook_failures",
            "Webhook delivery attempts that failed (no answer, timeout, refused address, non-2xx)",
            metrics.failed.clone(),
        );
        registry.register(
            "webhook_retries",
            "Webhook retries scheduled after a failed attempt",
            metrics.retried.clone(),
        );
        registry.register(
            "webhook_parked",
            "Webhook events given up on after the retry horizon (replayable by an admin)",
            metrics.parked.clone(),
        );
        registry.register(
            "webhook_outbox_pending",
            "Webhook events in the outbox waiting to be sent or retried",
            metrics.pending_rows.clone(),
        );
        registry.register(
            "webhook_outbox_parked",
            "Webhook events in the outbox parked as failed",
            metrics.parked_rows.clone(),
        );
        metrics
    }

    /// An event was delivered.
    pub fn delivered(&self) {
        self.delivered.inc();
    }

    /// An attempt failed and will be retried.
    pub fn retried(&self) {
        self.failed.inc();
        self.retried.inc();
    }

    /// An attempt failed and its event was parked.
    pub fn parked(&self) {
        self.failed.inc();
        self.parked.inc();
    }

    /// The outbox holds `pending` rows to send and `parked` rows given up on.
    pub fn outbox_depth(&self, pending: u64, parked: u64) {
        self.pending_rows
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.parked_rows
            .set(i64::try_from(parked).unwrap_or(i64::MAX));
    }
}
