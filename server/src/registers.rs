//! Register documents (`lww` and `manual`): the one place their rules live, whichever
//! transport a change arrives on (the HTTP API, the `/live` WebSocket channel, Quantum).
//!
//! A change runs through [`Registers::change`]: the author of a manual write or resolution is
//! the token's subject (another name is refused; an open relay records the name given, or
//! `anonymous`); an LWW stamp more than [`MAX_DRIFT_MS`] ahead of the relay's clock is refused
//! before anything is stored; while a manual document is locked only the lock's holder may
//! change it; the command runs in the store writer (read, change and write in one
//! transaction); and what it did is announced on the event bus. Failures are a typed
//! [`RegisterError`], which each transport maps to its own codes.

use aetherflow_crdt::DocName;
use aetherflow_crdt::register::clock::{ClockError, MAX_DRIFT_MS, check_drift};
use aetherflow_crdt::register::lww::{self, LwwWrite, WriteStamp};
use aetherflow_crdt::register::manual::{self, ManualWrite};
use aetherflow_crdt::register::wire::{RegisterView, WriteOutcome};
use aetherflow_crdt::register::{Command, CommandError, Kind, Outcome, Register};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Auth, Grant};
use crate::events::{DocEvent, Events};
use crate::locks::{LockError, Locks};
use crate::storage::{RegisterFailure, Storage, StoreError};
use crate::wall_clock::now_ms;

/// An LWW write carries its stamp; a manual write names its base version.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RegisterWrite {
    /// A write to an `lww` register.
    Lww {
        /// The new value.
        value: Value,
        /// Its hybrid logical clock stamp and writer id.
        stamp: WriteStamp,
    },
    /// A write to a `manual` register.
    Manual {
        /// The new value.
        value: Value,
        /// The version the writer saw.
        base_version: u64,
        /// Who writes: the token's subject (another name is refused); on an open relay this
        /// name, or `anonymous`.
        #[serde(default)]
        author: Option<String>,
    },
}

/// A resolution of a manual conflict.
#[derive(Debug, Deserialize)]
pub struct Resolution {
    /// The value that ends the conflict.
    pub value: Value,
    /// Who resolves it: the token's subject (another name is refused); on an open relay this
    /// name, or `anonymous`.
    #[serde(default)]
    pub author: Option<String>,
}

/// A change to a register document.
#[derive(Debug)]
pub enum RegisterChange {
    /// A write.
    Write(RegisterWrite),
    /// A conflict resolution.
    Resolve {
        /// The conflict.
        conflict: u64,
        /// The resolution.
        resolution: Resolution,
    },
}

/// Why a register read or change failed; each transport maps it to its own codes.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// No document of that name exists.
    #[error("{0}")]
    NotFound(String),
    /// The document is of another kind (a Yjs document, or the other register kind): what
    /// does not fit.
    #[error("{0}")]
    WrongKind(String),
    /// No open conflict of that id.
    #[error("no open conflict {0}")]
    UnknownConflict(u64),
    /// The register refused the command as malformed.
    #[error("{0}")]
    Invalid(CommandError),
    /// The change names another author than the token's subject.
    #[error("{0:?} is not the token's subject")]
    NotTheSubject(String),
    /// The LWW stamp is too far ahead of the relay's clock; nothing was stored.
    #[error("{0}")]
    ClockAhead(ClockError),
    /// The manual document is locked by someone else.
    #[error("{0}")]
    Locked(String),
    /// The store failed (storage unavailable, damaged data, an engine error).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The register service; cheap to clone. Built once at start-up.
#[derive(Clone)]
pub struct Registers {
    storage: Storage,
    events: Events,
    locks: Locks,
    /// Token rules: who an author is.
    auth: Auth,
}

impl Registers {
    /// The service over `storage`, announcing on `events`, checking `locks`,
    /// settling authors by `auth`.
    pub fn new(storage: Storage, events: Events, locks: Locks, auth: Auth) -> Self {
        Registers {
            storage,
            events,
            locks,
            auth,
        }
    }

    /// The register of `doc`.
    pub async fn load(&self, doc: &DocName) -> Result<Register, RegisterError> {
        let register = self.storage.registers.register(doc.clone()).await?;
        let meta = match register {
            None => self.storage.catalog.document(doc.clone()).await?,
            Some(_) => None,
        };
        match (register, meta) {
            (Some(register), _) => Ok(register),
            (None, Some(meta)) => Err(RegisterError::WrongKind(format!(
                "{doc} is a {:?} document, not a register",
                meta.kind
            ))),
            (None, None) => Err(RegisterError::NotFound(format!("no document {doc}"))),
        }
    }

    /// What a listener is sent first: the register as it is now, the lock, and for a manual
    /// document its open conflicts (so a client can list them without a second request). The
    /// `/live` channel sends it as its first message, Quantum as its `state` event.
    pub async fn state(&self, doc: &DocName) -> Result<Value, RegisterError> {
        let register = self.load(doc).await?;
        let mut state = json!({
            "type": "state",
            "register": register_json(&register),
            "lock": self.locks.current(doc).await.map_err(lock_failure)?,
        });
        if let Register::Manual(manual) = &register {
            state["conflicts"] = json!(manual.conflicts().collect::<Vec<_>>());
        }
        Ok(state)
    }

    /// The manual register of `doc` (its conflicts); an `lww` one is refused.
    pub async fn load_manual(
        &self,
        doc: &DocName,
    ) -> Result<manual::ManualRegister, RegisterError> {
        match self.load(doc).await? {
            Register::Manual(r) => Ok(r),
            Register::Lww(_) => Err(RegisterError::WrongKind(
                "an lww document has no conflicts: the highest stamp wins".into(),
            )),
        }
    }

    /// Applies `change` for `grant`'s user and announces it (see the module docs).
    pub async fn change(
        &self,
        doc: &DocName,
        grant: &Grant,
        change: RegisterChange,
    ) -> Result<Outcome, RegisterError> {
        let command = self.command(change, grant)?;
        let kind = match &command {
            Command::LwwWrite(write) => {
                check_drift(write.stamp.clock, now_ms(), MAX_DRIFT_MS)
                    .map_err(RegisterError::ClockAhead)?;
                Kind::Lww
            }
            Command::ManualWrite(ManualWrite { author, .. }) | Command::Resolve { author, .. } => {
                self.locks
                    .may_write(doc, author)
                    .await
                    .map_err(lock_failure)?;
                Kind::Manual
            }
        };
        let resolving = match &command {
            Command::Resolve { conflict, .. } => Some(*conflict),
            _ => None,
        };
        let outcome = self.run(doc, command).await?;
        self.announce(doc, kind, resolving, &outcome).await;
        Ok(outcome)
    }

    /// The store's command for `change`, with its author settled by `Registers::author`.
    fn command(&self, change: RegisterChange, grant: &Grant) -> Result<Command, RegisterError> {
        Ok(match change {
            RegisterChange::Write(RegisterWrite::Lww { value, stamp }) => {
                Command::LwwWrite(LwwWrite { value, stamp })
            }
            RegisterChange::Write(RegisterWrite::Manual {
                value,
                base_version,
                author,
            }) => Command::ManualWrite(ManualWrite {
                base_version,
                value,
                author: self.author(grant, author)?,
                at_ms: now_ms(),
            }),
            RegisterChange::Resolve {
                conflict,
                resolution,
            } => Command::Resolve {
                conflict,
                value: resolution.value,
                author: self.author(grant, resolution.author)?,
                at_ms: now_ms(),
            },
        })
    }

    /// Who a change is by (see [`Auth::actor`]).
    fn author(&self, grant: &Grant, claimed: Option<String>) -> Result<String, RegisterError> {
        self.auth
            .actor(grant, claimed)
            .map_err(|e| RegisterError::NotTheSubject(e.0))
    }

    async fn run(&self, doc: &DocName, command: Command) -> Result<Outcome, RegisterError> {
        match self.storage.registers.apply(doc.clone(), command).await? {
            Ok(outcome) => Ok(outcome),
            Err(failure) => Err(match failure {
                RegisterFailure::NotFound => RegisterError::NotFound(failure.to_string()),
                RegisterFailure::Command(CommandError::Manual(
                    manual::ManualError::UnknownConflict(id),
                )) => RegisterError::UnknownConflict(id),
                RegisterFailure::Command(other) => RegisterError::Invalid(other),
                RegisterFailure::NotARegister(_) => RegisterError::WrongKind(failure.to_string()),
            }),
        }
    }

    /// Publishes what a command did: `updated` with the register for applied changes,
    /// `conflict_detected` / `conflict_resolved` for manual conflicts.
    async fn announce(&self, doc: &DocName, kind: Kind, resolving: Option<u64>, outcome: &Outcome) {
        let applied = match outcome {
            Outcome::Lww(lww::Outcome::Applied) | Outcome::Manual(manual::Outcome::Applied(_)) => {
                true
            }
            Outcome::Resolved(revision) => {
                let event = DocEvent::ConflictResolved {
                    conflict: resolving.unwrap_or_default(),
                    revision: revision.clone(),
                };
                self.events.publish(doc, event);
                true
            }
            Outcome::Manual(manual::Outcome::Conflict(conflict)) => {
                let conflict = conflict.clone();
                self.events
                    .publish(doc, DocEvent::ConflictDetected { conflict });
                false
            }
            Outcome::Lww(_) => false,
        };
        if applied {
            // The register as stored now (a later write may already show; events only notify).
            let register = self.load(doc).await.ok().map(|r| RegisterView::from(&r));
            let event = DocEvent::Updated {
                kind,
                bytes: None,
                register,
            };
            self.events.publish(doc, event);
        }
    }
}

/// A lock refusal as a register error: held by someone else, or locks unreachable.
fn lock_failure(error: LockError) -> RegisterError {
    match error {
        LockError::Unavailable(why) => RegisterError::Store(StoreError::Io(why)),
        other => RegisterError::Locked(other.to_string()),
    }
}

/// A register as every transport shows it.
pub fn register_json(register: &Register) -> Value {
    serde_json::to_value(RegisterView::from(register)).unwrap_or_default()
}

/// An outcome as every transport shows it.
pub fn outcome_json(outcome: Outcome) -> Value {
    serde_json::to_value(WriteOutcome::from(outcome)).unwrap_or_default()
}
