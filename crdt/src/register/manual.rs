//! The manual register: a versioned JSON value whose concurrent writes are not merged by a
//! rule but shown to people, who decide.
//!
//! A write names the version it was based on. On the current version it is applied and the
//! version advances. On an older version it becomes a [`Conflict`] holding both sides (values,
//! authors, times, the base version) and the value stays as it was until someone resolves the
//! conflict with a chosen or merged value.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One version of the value: what it was, who wrote it, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// The version number; the first write makes version 1.
    pub version: u64,
    /// The value.
    pub value: Value,
    /// Who wrote it.
    pub author: String,
    /// When, in milliseconds since the Unix epoch (as the relay saw it).
    pub at_ms: u64,
}

/// A write to a manual register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManualWrite {
    /// The version the writer saw when it made this value (0: the register was empty).
    pub base_version: u64,
    /// The proposed value.
    pub value: Value,
    /// Who proposes it.
    pub author: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// Two writes from the same version: the one applied first, and the one that came too late.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// Identifies the conflict within its register.
    pub id: u64,
    /// The version both writers started from.
    pub base_version: u64,
    /// The value that was current when the late write arrived.
    pub current: Revision,
    /// The late write, not applied.
    pub proposed: ManualWrite,
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The value is now this revision.
    Applied(Revision),
    /// The write was based on an old version: recorded as this conflict, value unchanged.
    Conflict(Conflict),
}

/// Refusals of the manual register.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManualError {
    /// The write names a version the register never had.
    #[error("base version {base} is ahead of the current version {current}")]
    FutureVersion {
        /// The write's base version.
        base: u64,
        /// The register's version.
        current: u64,
    },
    /// No open conflict has this id (never existed, or already resolved).
    #[error("no open conflict {0}")]
    UnknownConflict(u64),
}

/// A versioned register with its open conflicts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManualRegister {
    current: Option<Revision>,
    /// Open conflicts, by increasing id. A list rather than a map: open conflicts are few,
    /// and integer map keys do not survive serde's internally tagged enums (see
    /// [`super::Register`]).
    conflicts: Vec<Conflict>,
    next_conflict: u64,
}

impl ManualRegister {
    /// The current revision, if anything was written.
    pub fn current(&self) -> Option<&Revision> {
        self.current.as_ref()
    }

    /// The current version (0 before the first write).
    pub fn version(&self) -> u64 {
        self.current.as_ref().map_or(0, |r| r.version)
    }

    /// Open conflicts, oldest first.
    pub fn conflicts(&self) -> impl Iterator<Item = &Conflict> {
        self.conflicts.iter()
    }

    /// One open conflict.
    pub fn conflict(&self, id: u64) -> Option<&Conflict> {
        self.conflicts.iter().find(|c| c.id == id)
    }

    /// Applies a write on the current version, or records a conflict for one on an older
    /// version.
    pub fn write(&mut self, write: ManualWrite) -> Result<Outcome, ManualError> {
        let version = self.version();
        if write.base_version > version {
            return Err(ManualError::FutureVersion {
                base: write.base_version,
                current: version,
            });
        }
        match &self.current {
            Some(current) if write.base_version < version => {
                let conflict = Conflict {
                    id: self.next_conflict,
                    base_version: write.base_version,
                    current: current.clone(),
                    proposed: write,
                };
                self.next_conflict += 1;
                self.conflicts.push(conflict.clone());
                Ok(Outcome::Conflict(conflict))
            }
            _ => Ok(Outcome::Applied(self.advance(
                write.value,
                write.author,
                write.at_ms,
            ))),
        }
    }

    /// Resolves an open conflict with `value` (either side's, or a merge of both): it becomes
    /// the next version and the conflict is closed.
    pub fn resolve(
        &mut self,
        id: u64,
        value: Value,
        author: impl Into<String>,
        at_ms: u64,
    ) -> Result<Revision, ManualError> {
        let Some(index) = self.conflicts.iter().position(|c| c.id == id) else {
            return Err(ManualError::UnknownConflict(id));
        };
        self.conflicts.remove(index);
        Ok(self.advance(value, author.into(), at_ms))
    }

    fn advance(&mut self, value: Value, author: String, at_ms: u64) -> Revision {
        let revision = Revision {
            version: self.version() + 1,
            value,
            author,
            at_ms,
        };
        self.current = Some(revision.clone());
        revision
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn write(base_version: u64, value: Value, author: &str) -> ManualWrite {
        ManualWrite {
            base_version,
            value,
            author: author.into(),
            at_ms: 1_000,
        }
    }

    #[test]
    fn writes_on_the_current_version_advance_it() {
        let mut register = ManualRegister::default();
        let Outcome::Applied(first) = register.write(write(0, json!("a"), "ann")).unwrap() else {
            panic!("first write applies");
        };
        assert_eq!(first.version, 1);
        register.write(write(1, json!("b"), "bob")).unwrap();
        assert_eq!(register.version(), 2);
        assert_eq!(register.current().unwrap().value, json!("b"));
    }

    #[test]
    fn concurrent_writes_from_one_version_become_a_conflict_and_change_nothing() {
        let mut register = ManualRegister::default();
        register.write(write(0, json!("v1"), "ann")).unwrap();
        register.write(write(1, json!("ann's"), "ann")).unwrap();
        let outcome = register.write(write(1, json!("bob's"), "bob")).unwrap();
        let Outcome::Conflict(conflict) = outcome else {
            panic!("a stale write conflicts");
        };
        assert_eq!(conflict.base_version, 1);
        assert_eq!(conflict.current.value, json!("ann's"));
        assert_eq!(conflict.proposed.value, json!("bob's"));
        assert_eq!(
            register.current().unwrap().value,
            json!("ann's"),
            "value unchanged"
        );
        assert_eq!(register.conflicts().count(), 1);
    }

    #[test]
    fn resolving_applies_the_chosen_value_once() {
        let mut register = ManualRegister::default();
        register.write(write(0, json!("x"), "ann")).unwrap();
        register.write(write(1, json!("ann"), "ann")).unwrap();
        let Outcome::Conflict(c) = register.write(write(1, json!("bob"), "bob")).unwrap() else {
            panic!("conflict expected");
        };
        let merged = register
            .resolve(c.id, json!("ann+bob"), "cy", 2_000)
            .unwrap();
        assert_eq!(merged.version, 3);
        assert_eq!(register.current().unwrap().value, json!("ann+bob"));
        assert_eq!(register.conflicts().count(), 0);
        assert_eq!(
            register.resolve(c.id, json!("again"), "cy", 3_000),
            Err(ManualError::UnknownConflict(c.id))
        );
    }

    #[test]
    fn a_write_from_a_future_version_is_refused() {
        let mut register = ManualRegister::default();
        let err = register.write(write(7, json!(1), "ann")).unwrap_err();
        assert_eq!(
            err,
            ManualError::FutureVersion {
                base: 7,
                current: 0
            }
        );
    }

    #[test]
    fn conflicts_survive_a_serde_round_trip() {
        let mut register = ManualRegister::default();
        register.write(write(0, json!(1), "ann")).unwrap();
        register.write(write(0, json!(2), "bob")).unwrap();
        let text = serde_json::to_string(&register).unwrap();
        let back: ManualRegister = serde_json::from_str(&text).unwrap();
        assert_eq!(back, register);
        assert_eq!(back.conflicts().count(), 1);
    }

    proptest! {
        #[test]
        fn the_value_changes_only_by_applied_writes_and_resolutions(
            ops in proptest::collection::vec((0u64..6, any::<i32>(), any::<bool>()), 1..40)
        ) {
            let mut register = ManualRegister::default();
            for (base, n, resolve) in ops {
                let before = register.current().cloned();
                if resolve {
                    let open = register.conflicts().next().map(|c| c.id);
                    if let Some(id) = open {
                        let r = register.resolve(id, json!(n), "r", 0).unwrap();
                        prop_assert_eq!(r.version, before.map_or(0, |b| b.version) + 1);
                        continue;
                    }
                }
                match register.write(write(base, json!(n), "w")) {
                    Ok(Outcome::Applied(r)) => {
                        prop_assert_eq!(base, before.as_ref().map_or(0, |b| b.version));
                        prop_assert_eq!(r.version, base + 1);
                    }
                    Ok(Outcome::Conflict(c)) => {
                        prop_assert!(c.base_version < register.version());
                        prop_assert_eq!(register.current().cloned(), before);
                    }
                    Err(ManualError::FutureVersion { .. }) => {
                        prop_assert_eq!(register.current().cloned(), before);
                    }
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                }
            }
        }
    }
}
