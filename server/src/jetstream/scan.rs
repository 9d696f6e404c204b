//! Reading a stretch of a document's log in one pass: an ordered consumer on the stream's
//! leader delivers the messages in order, instead of one request per message. History reads
//! whole logs (the timeline, a deletion's pointers) and long stretches (replaying from a
//! checkpoint), where a request per message would cost a round trip per edit.

use std::time::Duration;

use aetherflow_crdt::DocName;
use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use futures_util::StreamExt;

use super::{JetStreamEngine, failed, unreachable};
use crate::storage::StoreError;

/// How long a scan waits for its next message before it gives up (the cluster lost its
/// leader, or the last message it counted on was deleted meanwhile).
const SCAN_PATIENCE: Duration = Duration::from_secs(10);

/// A log message as a scan delivers it.
pub(super) struct Scanned {
    /// The stream sequence.
    pub seq: u64,
    /// When the stream stored it, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Its headers (message id, origin, pointer, history metadata).
    pub headers: Option<HeaderMap>,
    /// Its payload; empty in a headers-only scan.
    pub payload: bytes::Bytes,
}

/// How much of each message a scan delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// Headers and payload.
    Whole,
    /// Headers only (the payload's size is in the `Nats-Msg-Size` header).
    HeadersOnly,
}

impl JetStreamEngine {
    /// `doc`'s log messages with sequence numbers from `from` through `through`, oldest first.
    pub(super) async fn scan(
        &self,
        doc: &DocName,
        from: u64,
        through: u64,
        scope: Scope,
    ) -> Result<Vec<Scanned>, StoreError> {
        let from = from.max(1);
        // Read up to the subject's last message as the stream's leader knows it now (a
        // consumer's pending count can lag behind deletions, so it is no end marker).
        let subject = self.subject(doc);
        let last = match self
            .inner
            .log
            .get_last_raw_message_by_subject(&subject)
            .await
        {
            Ok(message) => message.sequence,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(Vec::new()),
            Err(e) => return Err(failed(e)),
        };
        let through = through.min(last);
        if from > through {
            return Ok(Vec::new());
        }
        let consumer = self
            .inner
            .log
            .create_consumer(pull::OrderedConfig {
                filter_subject: subject,
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                headers_only: scope == Scope::HeadersOnly,
                ..Default::default()
            })
            .await
            .map_err(failed)?;
        let mut messages = consumer.messages().await.map_err(failed)?;
        let mut out = Vec::new();
        loop {
            let next = tokio::time::timeout(SCAN_PATIENCE, messages.next())
                .await
                .map_err(|_| unreachable("a log scan got no message in time"))?;
            let Some(message) = next else { break };
            let message = message.map_err(failed)?;
            let info = message.info().map_err(unreachable)?;
            let seq = info.stream_sequence;
            let time_ms = info.published.unix_timestamp_nanos() / 1_000_000;
            if seq > through {
                break;
            }
            out.push(Scanned {
                seq,
                time_ms: u64::try_from(time_ms).unwrap_or(0),
                headers: message.headers.clone(),
                payload: message.payload.clone(),
            });
            if seq == through {
                break;
            }
        }
        Ok(out)
    }
}
