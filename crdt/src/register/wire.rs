//! Registers as the wire shows them: the relay writes these types and the SDK reads them, so
//! both ends share one definition of the JSON.
//!
//! ```
//! use aetherflow_crdt::register::wire::WriteOutcome;
//! use aetherflow_crdt::register::{Outcome, lww};
//!
//! let outcome = WriteOutcome::from(Outcome::Lww(lww::Outcome::Applied));
//! let json = serde_json::to_value(&outcome).unwrap();
//! assert_eq!(json, serde_json::json!({ "outcome": "applied" }));
//! assert_eq!(serde_json::from_value::<WriteOutcome>(json).unwrap(), outcome);
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::lww::{self, WriteStamp};
use super::manual::{self, Conflict, Revision};
use super::{Outcome, Register};

/// What the relay did with a register command, as answered to its writer:
/// `{"outcome": "applied" | "duplicate" | "stale" | "conflict", ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum WriteOutcome {
    /// The value is the register's now; for a manual write or a resolution, as this revision.
    Applied {
        /// The new revision (manual registers).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revision: Option<Revision>,
    },
    /// The relay already had this very LWW write (it was sent again after a reconnect).
    Duplicate,
    /// A later LWW write had already won; this one changed nothing.
    Stale {
        /// The winning stamp.
        current: WriteStamp,
    },
    /// The manual write was based on an old version and became this conflict record.
    Conflict {
        /// The conflict.
        conflict: Conflict,
    },
}

impl From<Outcome> for WriteOutcome {
    fn from(outcome: Outcome) -> WriteOutcome {
        match outcome {
            Outcome::Lww(lww::Outcome::Applied) => WriteOutcome::Applied { revision: None },
            Outcome::Lww(lww::Outcome::Duplicate) => WriteOutcome::Duplicate,
            Outcome::Lww(lww::Outcome::Stale { current }) => WriteOutcome::Stale { current },
            Outcome::Manual(manual::Outcome::Applied(revision)) | Outcome::Resolved(revision) => {
                WriteOutcome::Applied {
                    revision: Some(revision),
                }
            }
            Outcome::Manual(manual::Outcome::Conflict(conflict)) => {
                WriteOutcome::Conflict { conflict }
            }
        }
    }
}

/// A register as listeners see it (the `register` of a `state` message or an `updated`
/// event): its value and what a writer needs to write next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RegisterView {
    /// A last-writer-wins register.
    Lww {
        /// The winning value (`null` before the first write).
        value: Option<Value>,
        /// The winning write's stamp (`None` too when it cannot be read: a reader takes the
        /// kind and leaves the write).
        #[serde(default, deserialize_with = "readable")]
        stamp: Option<WriteStamp>,
    },
    /// A manual register.
    Manual {
        /// The current value (`null` before the first write).
        value: Option<Value>,
        /// The current version: the base of the next write.
        #[serde(default)]
        version: u64,
        /// The current revision (`None` too when it cannot be read).
        #[serde(default, deserialize_with = "readable")]
        revision: Option<Revision>,
        /// How many conflicts are open.
        #[serde(default)]
        open_conflicts: usize,
    },
}

/// `Some` if the value reads as a `T`, else `None`: one unreadable field does not make a
/// whole register unreadable.
fn readable<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

impl From<&Register> for RegisterView {
    fn from(register: &Register) -> RegisterView {
        match register {
            Register::Lww(r) => RegisterView::Lww {
                value: r.value().cloned(),
                stamp: r.stamp().cloned(),
            },
            Register::Manual(r) => RegisterView::Manual {
                value: r.current().map(|c| c.value.clone()),
                version: r.version(),
                revision: r.current().cloned(),
                open_conflicts: r.conflicts().count(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::register::clock::HlcStamp;
    use serde_json::json;

    fn round_trip(outcome: WriteOutcome, json: Value) {
        assert_eq!(serde_json::to_value(&outcome).expect("serializes"), json);
        assert_eq!(
            serde_json::from_value::<WriteOutcome>(json).expect("reads back"),
            outcome
        );
    }

    #[test]
    fn outcomes_have_one_json_form() {
        let stamp = WriteStamp {
            clock: HlcStamp {
                wall_ms: 5,
                counter: 1,
            },
            writer: "w".into(),
        };
        round_trip(
            WriteOutcome::Applied { revision: None },
            json!({ "outcome": "applied" }),
        );
        round_trip(WriteOutcome::Duplicate, json!({ "outcome": "duplicate" }));
        round_trip(
            WriteOutcome::Stale {
                current: stamp.clone(),
            },
            json!({ "outcome": "stale", "current": stamp }),
        );
        let revision = Revision {
            version: 2,
            value: json!("v"),
            author: "a".into(),
            at_ms: 9,
        };
        round_trip(
            WriteOutcome::Applied {
                revision: Some(revision.clone()),
            },
            json!({ "outcome": "applied", "revision": revision }),
        );
    }

    #[test]
    fn an_empty_register_shows_null_values() {
        let view = RegisterView::from(
            &Register::new(super::super::Kind::Manual).expect("a register kind"),
        );
        assert_eq!(
            serde_json::to_value(view).expect("serializes"),
            json!({ "kind": "manual", "value": null, "version": 0, "revision": null, "open_conflicts": 0 })
        );
    }
}
