//! Webhooks: endpoints an admin registers, and the delivery of document events to them, at
//! least once, from the durable outbox in the store (`store::outbox`).
//!
//! The store's writer records each event in the same transaction as the change that caused
//! it. [`delivery`] reads due rows, signs each body ([`client::signature`], HMAC-SHA256 over
//! `"{timestamp}.{body}"` with the endpoint's secret), posts it with a timeout and without
//! following redirects to addresses checked against server-side request forgery
//! ([`target`]), and records the outcome through the writer: delivered rows are removed,
//! failed ones are retried with exponential backoff and jitter until the retry horizon, then
//! parked for the admin, who can list and replay them. [`Webhooks`] holds the rules of the
//! admin routes (`/api/v1/webhooks`): what an endpoint may be.

pub mod client;
pub mod delivery;
pub mod locks;
pub mod target;

use std::collections::BTreeSet;
use std::time::Duration;

use aetherflow_crdt::webhook::EventKind;
use serde::Deserialize;

use crate::config::Config;
use crate::storage::StoreError;
use crate::store::outbox::{EndpointRecord, OutboxDepth, OutboxOp, OutboxRow};
use crate::store::{Store, StoreWriter, WriteOp, WriteResult};
use target::{Target, TargetError};

/// Most endpoints the relay keeps.
pub const MAX_ENDPOINTS: usize = 100;
/// Longest document-name prefix filter, in bytes.
pub const MAX_PREFIX_BYTES: usize = 255;
/// Longest debounce window an endpoint may ask for: an hour.
pub const MAX_DEBOUNCE_MS: u64 = 3_600_000;

/// Delivery settings, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Default `document.changed` debounce window of a new endpoint.
    pub debounce: Duration,
    /// Delay before the first retry; each later one doubles it (with jitter).
    pub retry_initial: Duration,
    /// How long failed attempts are retried before the event is parked.
    pub retry_horizon: Duration,
    /// Deadline of one attempt, connecting included.
    pub timeout: Duration,
    /// Whether endpoints may be on loopback, private or link-local addresses.
    pub allow_private: bool,
}

impl From<&Config> for WebhookSettings {
    fn from(config: &Config) -> WebhookSettings {
        WebhookSettings {
            debounce: config.webhook_debounce,
            retry_initial: config.webhook_retry_initial,
            retry_horizon: config.webhook_retry_horizon,
            timeout: config.webhook_timeout,
            allow_private: config.webhook_allow_private_addresses,
        }
    }
}

/// Why an admin's webhook request was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The request is not acceptable (empty event list, too long a prefix, ...).
    #[error("{0}")]
    Invalid(String),
    /// The URL is refused (see [`target`]).
    #[error(transparent)]
    Target(#[from] TargetError),
    /// No endpoint or outbox row has that id.
    #[error("no such webhook {0}")]
    NotFound(String),
    /// [`MAX_ENDPOINTS`] exist already.
    #[error("at most {MAX_ENDPOINTS} webhook endpoints")]
    TooMany,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an admin sends to create an endpoint, or to change one (every field optional then).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// Where events are posted.
    pub url: Option<String>,
    /// Event type names, such as `document.changed`.
    pub events: Option<Vec<String>>,
    /// Only documents whose names start with this; empty for every document.
    pub prefix: Option<String>,
    /// Whether events carry the document's content.
    pub include_content: Option<bool>,
    /// The `document.changed` debounce window, in milliseconds.
    pub debounce_ms: Option<u64>,
    /// On update: make a new signing secret.
    #[serde(default)]
    pub rotate_secret: bool,
}

/// The webhook service: endpoint rules and the outbox's admin view. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    store: Store,
    writer: StoreWriter,
    /// Delivery settings.
    pub settings: WebhookSettings,
}

impl Webhooks {
    /// The service over the relay's store.
    pub fn new(store: Store, writer: StoreWriter, settings: WebhookSettings) -> Webhooks {
        Webhooks {
            store,
            writer,
            settings,
        }
    }

    /// Every endpoint.
    pub async fn list(&self) -> Result<Vec<EndpointRecord>, WebhookError> {
        let store = self.store.clone();
        Ok(blocking(move || store.webhook_endpoints()).await?)
    }

    /// One endpoint.
    pub async fn get(&self, id: &str) -> Result<EndpointRecord, WebhookError> {
        self.list()
            .await?
            .into_iter()
            .find(|e| e.id == id)
            .ok_or_else(|| WebhookError::NotFound(id.to_owned()))
    }

    /// Creates an endpoint from `spec` (`url` and `events` required) with a new secret.
    pub async fn create(&self, spec: EndpointSpec) -> Result<EndpointRecord, WebhookError> {
        if spec.rotate_secret {
            return Err(WebhookError::Invalid(
                "rotate_secret applies to an update".into(),
            ));
        }
        let (Some(url), Some(events)) = (spec.url.clone(), spec.events.clone()) else {
            return Err(WebhookError::Invalid("url and events are required".into()));
        };
        if self.list().await?.len() >= MAX_ENDPOINTS {
            return Err(WebhookError::TooMany);
        }
        let mut record = EndpointRecord {
            id: uuid::Uuid::now_v7().to_string(),
            url,
            events: parse_events(&events)?,
            prefix: None,
            secret: new_secret(),
            include_content: false,
            debounce_ms: millis(self.settings.debounce),
            created_ms: crate::wall_clock::now_ms(),
        };
        self.apply(&mut record, spec).await?;
        self.put(record).await
    }

    /// Changes the fields `spec` names.
    pub async fn update(
        &self,
        id: &str,
        spec: EndpointSpec,
    ) -> Result<EndpointRecord, WebhookError> {
        let mut record = self.get(id).await?;
        if let Some(url) = &spec.url {
            url.clone_into(&mut record.url);
        }
        if let Some(events) = &spec.events {
            record.events = parse_events(events)?;
        }
        if spec.rotate_secret {
            record.secret = new_secret();
        }
        self.apply(&mut record, spec).await?;
        self.put(record).await
    }

    /// Removes an endpoint and every event still owed to it.
    pub async fn delete(&self, id: &str) -> Result<(), WebhookError> {
        match self.write(OutboxOp::DeleteEndpoint(id.to_owned())).await? {
            true => Ok(()),
            false => Err(WebhookError::NotFound(id.to_owned())),
        }
    }

    /// Up to `limit` outbox rows after `after` that pass `keep`, and the outbox's depth.
    pub async fn rows(
        &self,
        after: Option<u64>,
        limit: usize,
        keep: impl Fn(&OutboxRow) -> bool + Send + 'static,
    ) -> Result<(Vec<(u64, OutboxRow)>, OutboxDepth), WebhookError> {
        let store = self.store.clone();
        Ok(blocking(move || store.webhook_rows(after, limit, keep)).await?)
    }

    /// Records lock events from `events` in the outbox until `shutdown`.
    pub async fn record_lock_events(
        self,
        events: crate::events::Events,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        locks::record(events, self.writer, shutdown).await;
    }

    /// How many outbox rows are pending and parked.
    pub async fn depth(&self) -> Result<(u64, u64), WebhookError> {
        let (_, depth) = self.rows(None, 0, |_| false).await?;
        Ok((depth.pending, depth.parked))
    }

    /// Sends a parked row again now, with a fresh retry horizon.
    pub async fn replay(&self, seq: u64) -> Result<(), WebhookError> {
        match self.write(OutboxOp::Replay(seq)).await? {
            true => Ok(()),
            false => Err(WebhookError::NotFound(format!("parked delivery {seq}"))),
        }
    }

    /// Removes a parked row without sending it.
    pub async fn discard(&self, seq: u64) -> Result<(), WebhookError> {
        match self.write(OutboxOp::Discard(seq)).await? {
            true => Ok(()),
            false => Err(WebhookError::NotFound(format!("parked delivery {seq}"))),
        }
    }

    /// Checks the URL, prefix, content flag and debounce of `spec` into `record`.
    async fn apply(
        &self,
        record: &mut EndpointRecord,
        spec: EndpointSpec,
    ) -> Result<(), WebhookError> {
        let target = Target::parse(&record.url, self.settings.allow_private)?;
        target.resolve_if_named(self.settings.allow_private).await?;
        if let Some(prefix) = spec.prefix {
            if prefix.len() > MAX_PREFIX_BYTES {
                return Err(WebhookError::Invalid(format!(
                    "prefix must be at most {MAX_PREFIX_BYTES} bytes"
                )));
            }
            record.prefix = (!prefix.is_empty()).then_some(prefix);
        }
        if let Some(include) = spec.include_content {
            record.include_content = include;
        }
        if let Some(debounce_ms) = spec.debounce_ms {
            if debounce_ms > MAX_DEBOUNCE_MS {
                return Err(WebhookError::Invalid(format!(
                    "debounce_ms must be at most {MAX_DEBOUNCE_MS}"
                )));
            }
            record.debounce_ms = debounce_ms;
        }
        Ok(())
    }

    async fn put(&self, record: EndpointRecord) -> Result<EndpointRecord, WebhookError> {
        self.write(OutboxOp::PutEndpoint(record.clone())).await?;
        Ok(record)
    }

    async fn write(&self, op: OutboxOp) -> Result<bool, WebhookError> {
        match self.writer.commit(WriteOp::Webhook(op)).await? {
            WriteResult::Found(found) => Ok(found),
            other => Err(WebhookError::Store(StoreError::Unreadable(format!(
                "unexpected write result {other:?}"
            )))),
        }
    }
}

fn parse_events(names: &[String]) -> Result<BTreeSet<EventKind>, WebhookError> {
    if names.is_empty() {
        return Err(WebhookError::Invalid(
            "events must name at least one event type".into(),
        ));
    }
    names
        .iter()
        .map(|name| {
            EventKind::parse(name)
                .ok_or_else(|| WebhookError::Invalid(format!("unknown event type {name:?}")))
        })
        .collect()
}

/// A new signing secret: `whsec_` and 32 random bytes in hex.
fn new_secret() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    // The system's generator does not fail on the platforms the relay runs on; a failure
    // here would leave the bytes zero, so it is refused loudly instead.
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random generator works");
    format!("whsec_{}", aetherflow_crdt::webhook::to_hex(&bytes))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Unreadable(format!("webhook read failed: {e}")))?
}
