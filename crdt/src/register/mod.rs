//! Documents that are not CRDTs: registers holding one JSON value.
//!
//! - [`lww`]: last writer wins. Every write carries a [`clock::HlcStamp`] and its writer's id; the
//!   highest `(stamp, writer)` wins on every replica alike, whatever the arrival order.
//! - [`manual`]: a versioned value. A write names the version it was based on; a write on a
//!   stale version becomes a [`manual::Conflict`] and changes nothing until someone resolves it.
//!
//! The relay, the SDK and the tests share these rules, so a value never depends on where it was
//! merged.
//!
//! ```
//! use aetherflow_crdt::register::clock::HybridClock;
//! use aetherflow_crdt::register::lww::{LwwRegister, LwwWrite, Outcome};
//! use serde_json::json;
//!
//! let mut alice = HybridClock::new();
//! let mut bob = HybridClock::new();
//! let early = LwwWrite::new(json!("Draft"), alice.tick(1_000), "alice");
//! let late = LwwWrite::new(json!("Final"), bob.tick(2_000), "bob");
//!
//! // Whatever order the relay sees them in, "Final" wins, and the stale write is reported.
//! let mut register = LwwRegister::default();
//! assert_eq!(register.apply(late.clone()), Outcome::Applied);
//! assert!(matches!(register.apply(early), Outcome::Stale { .. }));
//! assert_eq!(register.value(), Some(&json!("Final")));
//! ```

pub mod clock;
pub mod lww;
pub mod manual;
pub mod wire;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a document is, fixed when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A Yjs CRDT document (the default; created on first connection).
    Yjs,
    /// A last-writer-wins register.
    Lww,
    /// A versioned register with manual conflict resolution.
    Manual,
}

/// A register document's state, whichever its kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Register {
    /// Last writer wins.
    Lww(lww::LwwRegister),
    /// Manual resolution.
    Manual(manual::ManualRegister),
}

/// A change asked of a register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Write to an LWW register.
    LwwWrite(lww::LwwWrite),
    /// Write to a manual register.
    ManualWrite(manual::ManualWrite),
    /// Resolve a manual register's conflict.
    Resolve {
        /// The conflict.
        conflict: u64,
        /// The chosen or merged value.
        value: Value,
        /// Who resolves it.
        author: String,
        /// When, in milliseconds since the Unix epoch.
        at_ms: u64,
    },
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The LWW write's fate.
    Lww(lww::Outcome),
    /// The manual write's fate.
    Manual(manual::Outcome),
    /// The conflict is resolved by this revision.
    Resolved(manual::Revision),
}

/// A command that does not fit the register.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// An LWW command on a manual register, or the other way round.
    #[error("this command does not apply to a {0:?} register")]
    WrongKind(Kind),
    /// The manual register refused it.
    #[error(transparent)]
    Manual(#[from] manual::ManualError),
}

impl Register {
    /// An empty register of `kind`; `None` for [`Kind::Yjs`], which is not a register.
    pub fn new(kind: Kind) -> Option<Register> {
        match kind {
            Kind::Yjs => None,
            Kind::Lww => Some(Register::Lww(lww::LwwRegister::default())),
            Kind::Manual => Some(Register::Manual(manual::ManualRegister::default())),
        }
    }

    /// The register's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Register::Lww(_) => Kind::Lww,
            Register::Manual(_) => Kind::Manual,
        }
    }

    /// Applies `command`.
    pub fn apply(&mut self, command: Command) -> Result<Outcome, CommandError> {
        match (self, command) {
            (Register::Lww(r), Command::LwwWrite(w)) => Ok(Outcome::Lww(r.apply(w))),
            (Register::Manual(r), Command::ManualWrite(w)) => Ok(Outcome::Manual(r.write(w)?)),
            (
                Register::Manual(r),
                Command::Resolve {
                    conflict,
                    value,
                    author,
                    at_ms,
                },
            ) => Ok(Outcome::Resolved(
                r.resolve(conflict, value, author, at_ms)?,
            )),
            (register, _) => Err(CommandError::WrongKind(register.kind())),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn commands_of_the_other_kind_are_refused() {
        let mut lww = Register::new(Kind::Lww).unwrap();
        let write = manual::ManualWrite {
            base_version: 0,
            value: json!(1),
            author: "a".into(),
            at_ms: 0,
        };
        assert_eq!(
            lww.apply(Command::ManualWrite(write)),
            Err(CommandError::WrongKind(Kind::Lww))
        );
        assert!(Register::new(Kind::Yjs).is_none());
    }

    #[test]
    fn registers_round_trip_through_json_with_their_kind() {
        let mut manual = Register::new(Kind::Manual).unwrap();
        let write = manual::ManualWrite {
            base_version: 0,
            value: json!({"notes": "v1"}),
            author: "a".into(),
            at_ms: 5,
        };
        manual.apply(Command::ManualWrite(write.clone())).unwrap();
        // A stale write: the conflict must survive the round trip too.
        let outcome = manual.apply(Command::ManualWrite(write)).unwrap();
        assert!(matches!(
            outcome,
            Outcome::Manual(manual::Outcome::Conflict(_))
        ));
        let text = serde_json::to_string(&manual).unwrap();
        assert!(text.contains("\"kind\":\"manual\""), "{text}");
        assert_eq!(serde_json::from_str::<Register>(&text).unwrap(), manual);
    }
}
