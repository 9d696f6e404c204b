//! What happened to a document, as the relay tells its listeners (SSE, the `/live` channel,
//! Quantum `event` messages): JSON objects with a `type` field, typed once here for the relay
//! that writes them and the SDK that reads them. An event never carries a token.
//!
//! ```
//! use aetherflow_crdt::event::DocEvent;
//!
//! let event = DocEvent::LockReleased { holder: "ada".into() };
//! let json = serde_json::to_value(&event).unwrap();
//! assert_eq!(json, serde_json::json!({ "type": "lock_released", "holder": "ada" }));
//! assert_eq!(event.name(), "lock_released");
//! ```

use serde::{Deserialize, Serialize};

use crate::register::Kind;
use crate::register::manual::{Conflict, Revision};
use crate::register::wire::RegisterView;

/// Something that happened to a document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DocEvent {
    /// A client joined the document's room (or its live channel).
    UserJoined {
        /// The token's subject (`anonymous` when the relay runs open).
        user: String,
        /// The connection's id, to tell apart two tabs of one user.
        conn: u64,
    },
    /// A client left.
    UserLeft {
        /// The token's subject.
        user: String,
        /// The connection's id.
        conn: u64,
    },
    /// The content changed: a Yjs update was committed, or a register write was applied.
    Updated {
        /// The document's kind.
        kind: Kind,
        /// Bytes of the committed Yjs update (Yjs documents only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bytes: Option<usize>,
        /// The register after the write (register documents only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        register: Option<RegisterView>,
    },
    /// A write on a stale version of a manual document became a conflict.
    ConflictDetected {
        /// The conflict record.
        conflict: Conflict,
    },
    /// A conflict was resolved.
    ConflictResolved {
        /// The conflict's id.
        conflict: u64,
        /// The revision the resolution made.
        revision: Revision,
    },
    /// Someone took the document's lock.
    LockAcquired {
        /// Who holds it.
        holder: String,
        /// When it expires unless renewed, ms since the Unix epoch.
        expires_ms: u64,
    },
    /// The holder extended the lock.
    LockRenewed {
        /// Who holds it.
        holder: String,
        /// The new expiry, ms since the Unix epoch.
        expires_ms: u64,
    },
    /// The holder released the lock.
    LockReleased {
        /// Who held it.
        holder: String,
    },
    /// The lock's time ran out.
    LockExpired {
        /// Who held it.
        holder: String,
    },
    /// A version was labelled (`label` set) or its label removed (`label` null).
    VersionLabelled {
        /// The version's id (the sequence number of its last log entry).
        version: u64,
        /// The new label, or `None` when it was removed.
        label: Option<String>,
        /// Who did it (the token's subject).
        by: String,
    },
    /// A version was restored: its content was applied as a new change.
    VersionRestored {
        /// The version restored.
        version: u64,
        /// Who did it (the token's subject).
        by: String,
    },
    /// The document was deleted; listeners are disconnected after this event.
    Deleted,
    /// This listener fell behind and missed `missed` events (sent only to that listener).
    Lagged {
        /// How many.
        missed: u64,
    },
}

impl DocEvent {
    /// The event's `type`, which is also the SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            DocEvent::UserJoined { .. } => "user_joined",
            DocEvent::UserLeft { .. } => "user_left",
            DocEvent::Updated { .. } => "updated",
            DocEvent::ConflictDetected { .. } => "conflict_detected",
            DocEvent::ConflictResolved { .. } => "conflict_resolved",
            DocEvent::LockAcquired { .. } => "lock_acquired",
            DocEvent::LockRenewed { .. } => "lock_renewed",
            DocEvent::LockReleased { .. } => "lock_released",
            DocEvent::LockExpired { .. } => "lock_expired",
            DocEvent::VersionLabelled { .. } => "version_labelled",
            DocEvent::VersionRestored { .. } => "version_restored",
            DocEvent::Deleted => "deleted",
            DocEvent::Lagged { .. } => "lagged",
        }
    }

    /// The event as a JSON object with its `type`.
    pub fn to_json(&self) -> serde_json::Value {
        // Plain data with string keys: serializing cannot fail.
        serde_json::to_value(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_is_named_by_its_json_type() {
        let events = [
            DocEvent::UserJoined {
                user: "u".into(),
                conn: 1,
            },
            DocEvent::UserLeft {
                user: "u".into(),
                conn: 1,
            },
            DocEvent::Updated {
                kind: Kind::Yjs,
                bytes: Some(3),
                register: None,
            },
            DocEvent::LockAcquired {
                holder: "h".into(),
                expires_ms: 1,
            },
            DocEvent::LockRenewed {
                holder: "h".into(),
                expires_ms: 1,
            },
            DocEvent::LockReleased { holder: "h".into() },
            DocEvent::LockExpired { holder: "h".into() },
            DocEvent::VersionLabelled {
                version: 4,
                label: Some("sent".into()),
                by: "ada".into(),
            },
            DocEvent::VersionRestored {
                version: 4,
                by: "ada".into(),
            },
            DocEvent::Deleted,
            DocEvent::Lagged { missed: 2 },
        ];
        for event in events {
            let json = event.to_json();
            assert_eq!(json["type"], event.name());
            assert_eq!(
                serde_json::from_value::<DocEvent>(json).expect("reads back"),
                event
            );
        }
    }
}
