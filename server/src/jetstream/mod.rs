//! Cluster mode's storage engine: NATS JetStream, implementing the interfaces of
//! [`crate::storage`] so that several relays share the same documents.
//!
//! Layout, under a prefix (`--cluster-prefix`, default `AETHERFLOW`) so several deployments can
//! share one NATS system:
//!
//! - the stream `{prefix}_LOG` holds every Yjs document's log, one subject per document,
//!   `{prefix}.log.{hex of the name}` (names may hold any character a subject may not);
//!   each append carries a `Nats-Msg-Id`, so a publish retried after a lost acknowledgement
//!   is stored once (within the stream's duplicate window);
//! - the object store `{prefix}_snapshots` holds snapshots (any size: objects are chunked),
//!   named `{hex}.{through}`; the key-value bucket `{prefix}_snapshot_index` maps a document
//!   to its current snapshot, the last log sequence it folds in (`through`) and the
//!   snapshots kept as history checkpoints. Compaction swaps the index entry with a
//!   conditional update on its revision, so of two concurrent compactors one wins and the
//!   other's object is dropped; the folded entries stay in the log as the document's version
//!   history (`history.rs`, with labels in `{prefix}_history_labels`);
//! - the buckets `{prefix}_documents` (metadata) and `{prefix}_registers` (register state,
//!   changed by read, apply, conditional update, retried on a lost race);
//! - the bucket `{prefix}_locks`, document locks across relays ([`locks`]); document events
//!   between relays on core NATS, `{prefix}.events.*` ([`events`]).
//!
//! Durable here means: JetStream acknowledged the write. With the streams' replicas at 3 (the
//! default) and the servers' `sync_interval: always`, an acknowledgement means the write is on
//! a majority of the servers' disks; with the servers' default sync interval it means it is in
//! a majority of the servers' memory, and written to disk within two minutes (see the
//! example configurations in `deploy/nats/`).

pub mod admin;
mod catalog;
pub mod events;
mod history;
mod large;
pub mod locks;
mod log;
pub mod presence;
mod scan;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aetherflow_crdt::DocName;
use async_nats::jetstream::{self, kv, object_store, stream};
use tokio::sync::Notify;

use crate::storage::StoreError;

/// How to reach and lay out the cluster's storage.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// NATS server URLs, comma-separated (`nats://host:4222,nats://other:4222`).
    pub url: String,
    /// Prefix of every stream, bucket and subject.
    pub prefix: String,
    /// Replicas of every stream and bucket (1, 3 or 5; at most the number of servers).
    pub replicas: usize,
}

/// The JetStream engine; cheap to clone.
#[derive(Clone)]
pub struct JetStreamEngine {
    inner: Arc<Inner>,
}

struct Inner {
    js: jetstream::Context,
    prefix: String,
    log: stream::Stream,
    snapshots: object_store::ObjectStore,
    index: kv::Store,
    documents: kv::Store,
    registers: kv::Store,
    /// Version labels, one JSON record per document (see `history.rs`).
    labels: kv::Store,
    /// Appends of this handle per document, so a compaction knows which entries it folds.
    appends: Mutex<HashMap<DocName, Arc<Appends>>>,
    /// Acknowledged writes since the engine connected.
    commits: AtomicU64,
    /// This handle's id, in the [`ORIGIN_HEADER`] of its appends, so that following a log
    /// skips its own.
    origin: String,
}

/// The header naming the engine handle that appended an entry.
const ORIGIN_HEADER: &str = "Aetherflow-Origin";

/// One document's appends through this handle.
#[derive(Default)]
struct Appends {
    state: Mutex<AppendState>,
    settled: Notify,
}

#[derive(Default)]
struct AppendState {
    in_flight: u32,
    last_seq: u64,
}

/// How long a publish waits for its acknowledgement before it is sent again (same message id).
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an append keeps being sent again (same message id) before it fails: long enough
/// for the servers to elect a new stream leader after one died.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(20);
/// How long start-up keeps trying to set up the stream and buckets.
const SETUP_PATIENCE: Duration = Duration::from_secs(30);
/// Retries of a conditional update that lost a race.
const CAS_ATTEMPTS: u32 = 32;

impl JetStreamEngine {
    /// Connects to the cluster and creates (or finds) the stream and buckets, trying again
    /// for up to 30 s while the servers have no leaders (just after one died).
    pub async fn connect(settings: &ClusterSettings) -> Result<JetStreamEngine, StoreError> {
        let open = |e: &dyn std::fmt::Display| StoreError::Open {
            path: settings.url.clone(),
            reason: e.to_string(),
        };
        let servers = servers(&settings.url).map_err(|e| open(&e))?;
        let client = async_nats::ConnectOptions::new()
            .name("aetherflow")
            .retry_on_initial_connect()
            .connect(servers)
            .await
            .map_err(|e| open(&e))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(ACK_TIMEOUT)
            .build(client);
        let deadline = tokio::time::Instant::now() + SETUP_PATIENCE;
        loop {
            match JetStreamEngine::set_up(js.clone(), settings).await {
                Ok(engine) => return Ok(engine),
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "JetStream not ready; trying again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Creates (or finds) the stream and buckets.
    async fn set_up(
        js: jetstream::Context,
        settings: &ClusterSettings,
    ) -> Result<JetStreamEngine, StoreError> {
        let open = |e: &dyn std::fmt::Display| StoreError::Open {
            path: settings.url.clone(),
            reason: e.to_string(),
        };
        let prefix = settings.prefix.clone();
        let replicas = settings.replicas;
        let log = js
            .get_or_create_stream(stream::Config {
                name: format!("{prefix}_LOG"),
                subjects: vec![format!("{prefix}.log.>")],
                num_replicas: replicas,
                storage: stream::StorageType::File,
                duplicate_window: Duration::from_secs(120),
                allow_direct: true,
                ..Default::default()
            })
            .await
            .map_err(|e| open(&e))?;
        let bucket = |name: &str| kv::Config {
            bucket: format!("{prefix}_{name}"),
            history: 1,
            num_replicas: replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let index = create_bucket(&js, bucket("snapshot_index"))
            .await
            .map_err(|e| open(&e))?;
        let documents = create_bucket(&js, bucket("documents"))
            .await
            .map_err(|e| open(&e))?;
        let registers = create_bucket(&js, bucket("registers"))
            .await
            .map_err(|e| open(&e))?;
        let labels = create_bucket(&js, bucket("history_labels"))
            .await
            .map_err(|e| open(&e))?;
        let snapshots = js
            .create_object_store(object_store::Config {
                bucket: format!("{prefix}_snapshots"),
                num_replicas: replicas,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| open(&e))?;
        // Ready means answerable: every stream the relay reads from has a leader (just after
        // the streams were created, or a server died, an election may still be running).
        let probe = DocName::parse("probe").map_err(|e| open(&e))?;
        for bucket in [&index, &documents, &registers, &labels] {
            last_record(bucket, &probe).await.map_err(|e| open(&e))?;
        }
        let subject = format!("{prefix}.log.{}", key(&probe));
        match log.get_last_raw_message_by_subject(&subject).await {
            Ok(_) => {}
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {}
            Err(e) => return Err(open(&e)),
        }
        Ok(JetStreamEngine {
            inner: Arc::new(Inner {
                js,
                prefix,
                log,
                snapshots,
                index,
                documents,
                registers,
                labels,
                appends: Mutex::default(),
                commits: AtomicU64::new(0),
                origin: uuid::Uuid::now_v7().to_string(),
            }),
        })
    }

    /// Presence shared with the other relays over the same NATS connection.
    pub fn presence(&self) -> presence::NatsPresence {
        presence::NatsPresence::start(self.inner.js.client(), self.inner.prefix.clone())
    }

    /// The log subject of `doc`.
    fn subject(&self, doc: &DocName) -> String {
        format!("{}.log.{}", self.inner.prefix, key(doc))
    }

    /// This handle's appends of `doc`.
    fn appends(&self, doc: &DocName) -> Arc<Appends> {
        let mut all = self.inner.appends.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(doc.clone()).or_default().clone()
    }

    fn committed(&self) {
        self.inner.commits.fetch_add(1, Ordering::AcqRel);
    }
}

/// The servers of a comma-separated URL list.
pub(crate) fn servers(urls: &str) -> Result<Vec<async_nats::ServerAddr>, std::io::Error> {
    urls.split(',')
        .map(|url| {
            url.trim()
                .parse()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
        })
        .collect()
}

/// The JSON record `bucket` holds for `doc`, with its revision (for a conditional update);
/// `None` if there is none or it was deleted.
///
/// Read from the bucket stream's leader, not with the key-value client's `get`: buckets allow
/// direct gets, which any replica answers, and a follower may lag behind the leader (right
/// after a failover, by whole seconds). A stale snapshot index would send a load to log
/// entries a newer compaction already purged, and the document would come back without them.
async fn versioned<T: serde::de::DeserializeOwned>(
    bucket: &kv::Store,
    doc: &DocName,
) -> Result<Option<(T, u64)>, StoreError> {
    let Some(message) = last_record(bucket, doc).await.map_err(failed)? else {
        return Ok(None);
    };
    if is_deletion(&message) {
        return Ok(None);
    }
    let value =
        serde_json::from_slice(&message.payload).map_err(|e| StoreError::Record(Arc::new(e)))?;
    Ok(Some((value, message.sequence)))
}

/// The last message `bucket` holds for `doc`'s key (a value or a deletion marker), read from
/// the bucket stream's leader (see [`versioned`]); `None` if the key was never written.
async fn last_record(
    bucket: &kv::Store,
    doc: &DocName,
) -> Result<Option<async_nats::jetstream::message::StreamMessage>, stream::LastRawMessageError> {
    let subject = format!("{}{}", bucket.prefix, key(doc));
    match bucket
        .stream
        .get_last_raw_message_by_subject(&subject)
        .await
    {
        Ok(message) => Ok(Some(message)),
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The value of header `name` among `headers`, if there is one.
fn header<'a>(headers: Option<&'a async_nats::HeaderMap>, name: &str) -> Option<&'a str> {
    headers.and_then(|h| h.get(name)).map(|v| v.as_str())
}

/// Whether a bucket's message is a deletion or purge marker (a `KV-Operation` header, no
/// value).
fn is_deletion(message: &async_nats::jetstream::message::StreamMessage) -> bool {
    message.headers.get("KV-Operation").is_some()
}

/// Whether a conditional update lost its race: the record changed since it was read. Servers
/// say so with error 10071 or, since 2.12, 10164, which this client leaves unclassified.
fn lost_race(e: &kv::UpdateError) -> bool {
    if e.kind() == kv::UpdateErrorKind::WrongLastRevision {
        return true;
    }
    let mut cause = std::error::Error::source(e);
    while let Some(error) = cause {
        if let Some(refusal) = error.downcast_ref::<jetstream::Error>() {
            return matches!(
                refusal.error_code(),
                jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE
                    | jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT
            );
        }
        cause = error.source();
    }
    false
}

/// Creates a key-value bucket, or opens it if it exists.
async fn create_bucket(
    js: &jetstream::Context,
    config: kv::Config,
) -> Result<kv::Store, async_nats::Error> {
    let name = config.bucket.clone();
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        Err(_) => Ok(js.get_key_value(name).await?),
    }
}

/// A document's name as a subject token and key: the hex of its bytes.
pub(crate) fn key(doc: &DocName) -> String {
    doc.as_str().bytes().map(|b| format!("{b:02x}")).collect()
}

/// The document a key names; `None` for a key that is not one.
pub(crate) fn name_of(key: &str) -> Option<DocName> {
    if !key.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..key.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(key.get(i..i + 2)?, 16).ok())
        .collect();
    DocName::parse(&String::from_utf8(bytes?).ok()?).ok()
}

/// A request the cluster did not answer as asked (no leader during an election, a timeout,
/// a server gone): transient, so callers answer "unavailable, retry" rather than fail hard.
fn failed(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Unreachable(Arc::new(e))
}

/// Tries of an idempotent request the cluster does not answer.
const UNANSWERED_ATTEMPTS: u32 = 4;

/// Runs the idempotent request `request`, again (after 250 ms, 500 ms, 750 ms) while the
/// cluster does not answer it: just after the streams were created, or while a leader
/// changes, a replica may not answer yet, and a client's first connection should not be
/// refused for it. Any other outcome is returned at once.
async fn unless_unanswered<T, F, Fut>(mut request: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 1;
    loop {
        match request().await {
            Err(e) if e.is_io() && attempt < UNANSWERED_ATTEMPTS => {
                tracing::debug!(error = %e, attempt, "not answered; trying again");
                tokio::time::sleep(Duration::from_millis(250) * attempt).await;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

/// A failure to reach the cluster: writes are impossible until it is back.
fn unreachable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(format!("cluster unreachable: {e}"))
}
