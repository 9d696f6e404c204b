//! One version of a Yjs document's history as the relay lists it (`GET
//! /api/v1/docs/{name}/history`), typed once here for the relay that writes it and the SDK
//! that reads it. The relay's rule for which changes form a version is in its
//! `history` module.
//!
//! ```
//! use aetherflow_crdt::version::Version;
//!
//! let json = r#"{"id":7,"first_seq":5,"time_ms":2000,"started_ms":1000,
//!                "authors":["ada"],"bytes":42,"entries":3,"label":null}"#;
//! let version: Version = serde_json::from_str(json).unwrap();
//! assert_eq!((version.id, version.entries), (7, 3));
//! assert_eq!(serde_json::from_str::<Version>(&serde_json::to_string(&version).unwrap()).unwrap(), version);
//! ```

use serde::{Deserialize, Serialize};

/// Name shown for changes whose authors are unknown.
pub const ANONYMOUS: &str = "anonymous";

/// One version: consecutive changes by the same people, close together in time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Its id: the log sequence number of its last change. Every id but the newest one's is
    /// final.
    pub id: u64,
    /// The sequence number of its first change.
    pub first_seq: u64,
    /// Time of its last change, milliseconds since the Unix epoch (the relay's clock).
    pub time_ms: u64,
    /// Time of its first change.
    pub started_ms: u64,
    /// Who made it: token subjects, or [`ANONYMOUS`].
    pub authors: Vec<String>,
    /// Bytes of its updates.
    pub bytes: u64,
    /// How many changes (log entries) it spans.
    pub entries: u64,
    /// Its label, if it has one.
    pub label: Option<String>,
}
