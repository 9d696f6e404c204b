//! The webhook vocabulary: the event types a relay posts to webhook endpoints, the JSON body
//! of one delivery, and the headers and signature scheme a receiver checks.
//!
//! A delivery is `POST`ed with the body as JSON and these headers:
//!
//! - [`ID_HEADER`] (`Webhook-Id`): the event's idempotency id. A retry of the same event
//!   carries the same id (and the same body), so a receiver that saw it already answers 2xx
//!   and does nothing.
//! - [`EVENT_HEADER`] (`AetherFlow-Event`): the event type, as in the body.
//! - [`SIGNATURE_HEADER`] (`AetherFlow-Signature`): `t=<unix seconds>,v1=<hex>`, where the
//!   hex is HMAC-SHA256, keyed with the endpoint's secret, over [`signed_payload`]: the
//!   timestamp, a full stop, and the body's bytes (the scheme of Stripe's signatures).
//!
//! ```
//! use aetherflow_crdt::webhook::{EventKind, parse_signature, signed_payload};
//! assert_eq!(EventKind::parse("document.changed"), Some(EventKind::DocumentChanged));
//! assert_eq!(signed_payload(1700000000, b"{}"), b"1700000000.{}".to_vec());
//! let header = "t=1700000000,v1=00ff";
//! assert_eq!(parse_signature(header), Some((1700000000, vec![vec![0x00, 0xff]])));
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The idempotency id of a delivery's event.
pub const ID_HEADER: &str = "webhook-id";
/// The event type of a delivery.
pub const EVENT_HEADER: &str = "aetherflow-event";
/// The delivery's signature: `t=<unix seconds>,v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "aetherflow-signature";
/// The attempt number of a delivery (1 for the first).
pub const ATTEMPT_HEADER: &str = "aetherflow-attempt";

/// What happened, as a webhook endpoint subscribes to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventKind {
    /// A document was created explicitly (`POST /api/v1/docs`).
    #[serde(rename = "document.created")]
    DocumentCreated,
    /// A Yjs document's content changed: one event per debounce window.
    #[serde(rename = "document.changed")]
    DocumentChanged,
    /// A document was deleted.
    #[serde(rename = "document.deleted")]
    DocumentDeleted,
    /// A register document (`lww` or `manual`) took a new value.
    #[serde(rename = "register.updated")]
    RegisterUpdated,
    /// A write on a stale version of a manual document became a conflict.
    #[serde(rename = "conflict.detected")]
    ConflictDetected,
    /// A conflict was resolved.
    #[serde(rename = "conflict.resolved")]
    ConflictResolved,
    /// Someone took a document's lock.
    #[serde(rename = "lock.acquired")]
    LockAcquired,
    /// The holder extended the lock.
    #[serde(rename = "lock.renewed")]
    LockRenewed,
    /// The holder released the lock.
    #[serde(rename = "lock.released")]
    LockReleased,
    /// The lock's time ran out.
    #[serde(rename = "lock.expired")]
    LockExpired,
    /// A version of a Yjs document was labelled, or its label removed.
    #[serde(rename = "version.labelled")]
    VersionLabelled,
    /// A version of a Yjs document was restored as a new change.
    #[serde(rename = "version.restored")]
    VersionRestored,
}

impl EventKind {
    /// Every event type.
    pub const ALL: [EventKind; 12] = [
        EventKind::DocumentCreated,
        EventKind::DocumentChanged,
        EventKind::DocumentDeleted,
        EventKind::RegisterUpdated,
        EventKind::ConflictDetected,
        EventKind::ConflictResolved,
        EventKind::LockAcquired,
        EventKind::LockRenewed,
        EventKind::LockReleased,
        EventKind::LockExpired,
        EventKind::VersionLabelled,
        EventKind::VersionRestored,
    ];

    /// The type's name on the wire, such as `document.changed`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::DocumentCreated => "document.created",
            EventKind::DocumentChanged => "document.changed",
            EventKind::DocumentDeleted => "document.deleted",
            EventKind::RegisterUpdated => "register.updated",
            EventKind::ConflictDetected => "conflict.detected",
            EventKind::ConflictResolved => "conflict.resolved",
            EventKind::LockAcquired => "lock.acquired",
            EventKind::LockRenewed => "lock.renewed",
            EventKind::LockReleased => "lock.released",
            EventKind::LockExpired => "lock.expired",
            EventKind::VersionLabelled => "version.labelled",
            EventKind::VersionRestored => "version.restored",
        }
    }

    /// The type named `name`, if any.
    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

/// The JSON body of one delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBody {
    /// The idempotency id (a UUIDv7), also in [`ID_HEADER`].
    pub id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// When the relay recorded it, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// The document's name.
    pub document: String,
    /// The event's details (see the README's Webhooks section); never document content
    /// unless the endpoint asked for it (`include_content`).
    pub data: Value,
}

/// The bytes a signature covers: `"{timestamp}.{body}"`.
pub fn signed_payload(timestamp_secs: u64, body: &[u8]) -> Vec<u8> {
    let mut payload = format!("{timestamp_secs}.").into_bytes();
    payload.extend_from_slice(body);
    payload
}

/// The timestamp and every `v1` signature of a [`SIGNATURE_HEADER`] value; `None` if it is
/// malformed (no timestamp, or a `v1` that is not hex).
pub fn parse_signature(header: &str) -> Option<(u64, Vec<Vec<u8>>)> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part.trim().split_once('=')?;
        match key {
            "t" => timestamp = Some(value.parse().ok()?),
            "v1" => signatures.push(from_hex(value)?),
            _ => {}
        }
    }
    Some((timestamp?, signatures))
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_name_and_serde() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
            let json = serde_json::to_value(kind).expect("serializes");
            assert_eq!(json, Value::String(kind.as_str().to_owned()));
        }
        assert_eq!(EventKind::parse("document.exploded"), None);
    }

    #[test]
    fn malformed_signature_headers_are_refused() {
        assert_eq!(parse_signature("v1=00"), None);
        assert_eq!(parse_signature("t=1,v1=0g"), None);
        assert_eq!(parse_signature("t=x,v1=00"), None);
        assert_eq!(parse_signature("garbage"), None);
        assert_eq!(parse_signature("t=5"), Some((5, vec![])));
        assert_eq!(to_hex(&[0xab, 0x01]), "ab01");
    }
}
