//! Register documents (`lww`, `manual`) on the client: [`crate::Client::register`] opens a
//! [`RegisterHandle`].
//!
//! - **LWW** ([`RegisterHandle::write`]): the SDK stamps the value with a hybrid logical
//!   clock and this client's id ([`crate::Client::client_id`]) as writer. The write shows in
//!   [`RegisterHandle::value`] at once, online or not, and is stored with the register's
//!   pending commands; since the highest stamp wins on every replica whatever the order,
//!   sending it later (on reconnect) converges to the same value.
//! - **Manual** ([`RegisterHandle::write_based_on`], [`RegisterHandle::resolve`]): a write
//!   names the version it was based on. Made offline, it is stored and sent on reconnect with
//!   that version, so if someone else wrote meanwhile it becomes a conflict record on the
//!   relay ([`RegisterHandle::conflicts`]), which anyone may resolve. The value is the
//!   relay's current revision: a manual write counts once the relay has accepted it.
//!
//! Every command returns a [`WriteTicket`]; [`WriteTicket::outcome`] waits for the relay's
//! answer ([`WriteOutcome`], or a typed [`RegisterError`] such as
//! [`RegisterError::ReadOnly`] or [`RegisterError::Locked`]). A refused command is dropped
//! (an LWW value falls back to the relay's). [`RegisterHandle::events`] streams value
//! changes, conflicts, lock events and refusals.
//!
//! Over Quantum, registers use `register` envelopes and `event`s on the shared connection;
//! after a fallback to WebSocket, the relay's live channel (`/api/v1/docs/{name}/live`)
//! with the same semantics. Commands are sent at least once: one whose answer was lost with
//! the connection is sent again (an LWW write then answers `duplicate`; a manual write may
//! then be recorded a second time, as a conflict). A handle that fell behind the relay's
//! events (`lagged`) subscribes again to get a fresh state.
//!
//! A register must exist on the relay (`POST /api/v1/docs` with its kind): opening one that
//! does not, or a Yjs document, leaves the handle offline with [`RegisterState::denied`]
//! set (409 over Quantum, 404 or 409 over WebSocket).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use aetherflow_client::{Client, ClientConfig};
//! use serde_json::json;
//!
//! let dir = tempfile::tempdir()?;
//! // No relay: the write is applied locally and waits in the database.
//! let client = Client::open(ClientConfig::new(dir.path()))?;
//! let title = client.register("title").await?;
//! title.write(json!("Draft"))?;
//! assert_eq!(title.value(), Some(json!("Draft")));
//! assert_eq!(title.pending(), 1);
//! client.close().await?;
//!
//! // Reopened: still there, still to be sent.
//! let client = Client::open(ClientConfig::new(dir.path()))?;
//! let title = client.register("title").await?;
//! assert_eq!(title.value(), Some(json!("Draft")));
//! assert_eq!(title.pending(), 1);
//! # client.close().await?;
//! # Ok(())
//! # }
//! ```

mod replica;
pub(crate) mod task;

use aetherflow_crdt::code::Code;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use aetherflow_crdt::register::lww::WriteStamp;
use aetherflow_crdt::register::manual::{Conflict, Revision};
use aetherflow_crdt::register::{Command, Kind};
use serde_json::Value;
use tokio::sync::{Notify, broadcast, oneshot, watch};
use tracing::warn;

use crate::doc::{Connection, lock};
use crate::error::ClientError;
use crate::store::{StoredRegister, WriteOp};
pub(crate) use replica::{Confirmed, Effects, Replica};

/// How many events a slow [`RegisterEvents`] reader may fall behind before it misses some.
const EVENTS_CAPACITY: usize = 1024;

/// Why a register command failed. Refusals by the relay carry its reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The token only allows reading (relay code 4403).
    #[error("read-only: {reason}")]
    ReadOnly {
        /// The relay's text.
        reason: String,
    },
    /// Someone else holds the document's lock (4423).
    #[error("locked: {reason}")]
    Locked {
        /// The relay's text (who holds it).
        reason: String,
    },
    /// No such document, or no such open conflict (4404).
    #[error("not found: {reason}")]
    NotFound {
        /// The relay's text.
        reason: String,
    },
    /// The operation does not fit the register's kind: an LWW write on a manual register or
    /// the other way round, or a register operation on a Yjs document (4409).
    #[error("wrong kind: {reason}")]
    WrongKind {
        /// What did not fit.
        reason: String,
    },
    /// An LWW write's stamp is more than a minute ahead of the relay's clock (4422): this
    /// machine's clock is far ahead of the relay's. Nothing was stored.
    #[error("stamp too far ahead: {reason}")]
    ClockAhead {
        /// The relay's text (how far ahead, and the bound).
        reason: String,
    },
    /// Any other refusal (4400 a bad command, 4401 a bad token, ...).
    #[error("refused by the relay ({code}): {reason}")]
    Refused {
        /// The relay's error code.
        code: u32,
        /// Its text.
        reason: String,
    },
    /// The relay's answer could not be read.
    #[error("unexpected answer from the relay: {0}")]
    BadAnswer(String),
    /// The client closed before the relay answered (the command stays stored and is sent
    /// when the register is opened again), or a command was made after it closed.
    #[error("the client closed before the relay answered")]
    Closed,
}

impl RegisterError {
    /// The error for a relay refusal with `code`.
    pub fn from_code(code: u32, reason: String) -> RegisterError {
        match Code::from_u32(code) {
            Some(Code::Forbidden) => RegisterError::ReadOnly { reason },
            Some(Code::Locked) => RegisterError::Locked { reason },
            Some(Code::NotFound) => RegisterError::NotFound { reason },
            Some(Code::WrongKind) => RegisterError::WrongKind { reason },
            Some(Code::ClockAhead) => RegisterError::ClockAhead { reason },
            _ => RegisterError::Refused { code, reason },
        }
    }
}

pub use aetherflow_crdt::register::wire::WriteOutcome;

/// Reads the outcome JSON the relay answers with.
fn outcome_from_json(data: Value) -> Result<WriteOutcome, RegisterError> {
    let shown = data.to_string();
    serde_json::from_value(data).map_err(|e| RegisterError::BadAnswer(format!("{e}: {shown}")))
}

/// A change of a document's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockEvent {
    /// Someone took the lock.
    Acquired {
        /// Who holds it.
        holder: String,
        /// When it expires unless renewed, ms since the Unix epoch.
        expires_ms: u64,
    },
    /// The holder extended it.
    Renewed {
        /// Who holds it.
        holder: String,
        /// The new expiry.
        expires_ms: u64,
    },
    /// The holder released it.
    Released {
        /// Who held it.
        holder: String,
    },
    /// Its time ran out.
    Expired {
        /// Who held it.
        holder: String,
    },
}

/// Something that happened to a register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterEvent {
    /// A connection delivered the relay's whole state.
    State,
    /// The value changed (a local write, someone else's write, a resolution, a refusal).
    Changed {
        /// The new value.
        value: Option<Value>,
    },
    /// A manual write on a stale version became a conflict.
    ConflictDetected(Conflict),
    /// A conflict was resolved with this revision.
    ConflictResolved {
        /// The conflict's id.
        conflict: u64,
        /// The revision the resolution made.
        revision: Revision,
    },
    /// The lock changed.
    Lock(LockEvent),
    /// Someone opened the document's live channel or subscribed over Quantum.
    UserJoined {
        /// The token's subject.
        user: String,
    },
    /// Someone left.
    UserLeft {
        /// The token's subject.
        user: String,
    },
    /// The relay refused one of this client's commands.
    Refused(RegisterError),
    /// The document was deleted on the relay.
    Deleted,
}

/// A register's connection, published on [`RegisterHandle::state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterState {
    /// The connection.
    pub connection: Connection,
    /// Commands waiting for the relay's answer (kept in the local database).
    pub pending: usize,
    /// Why the relay last refused the connection, or why the TLS handshake with it failed
    /// (`TLS: ...`), if it did.
    pub denied: Option<String>,
}

/// The state shared by the handle and the register's task.
pub(crate) struct RegisterShared {
    pub name: String,
    replica: Mutex<Replica>,
    tickets: Mutex<HashMap<u64, oneshot::Sender<Result<WriteOutcome, RegisterError>>>>,
    events: broadcast::Sender<RegisterEvent>,
    pub state: watch::Sender<RegisterState>,
    /// Woken when there are commands to send.
    pub wake: Notify,
    store: std::sync::mpsc::Sender<WriteOp>,
    /// Set when the client closes: no more commands are accepted.
    closed: AtomicBool,
}

/// A register document opened with [`crate::Client::register`]. Cheap to clone.
#[derive(Clone)]
pub struct RegisterHandle {
    pub(crate) shared: Arc<RegisterShared>,
}

impl std::fmt::Debug for RegisterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterHandle")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

/// The relay's answer to one command; see [`WriteTicket::outcome`].
#[derive(Debug)]
pub struct WriteTicket(oneshot::Receiver<Result<WriteOutcome, RegisterError>>);

impl WriteTicket {
    /// Waits for the relay's answer. Offline, that is after the next connection.
    pub async fn outcome(self) -> Result<WriteOutcome, RegisterError> {
        self.0.await.unwrap_or(Err(RegisterError::Closed))
    }
}

/// A stream of [`RegisterEvent`]s.
#[derive(Debug)]
pub struct RegisterEvents(broadcast::Receiver<RegisterEvent>);

impl RegisterEvents {
    /// The next event; `None` once the register is gone. A reader more than 1,024 events
    /// behind skips the ones it missed (the handle's state holds their result).
    pub async fn next(&mut self) -> Option<RegisterEvent> {
        loop {
            match self.0.recv().await {
                Ok(event) => return Some(event),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl RegisterHandle {
    /// Builds the handle from what the database held.
    pub(crate) fn load(
        name: String,
        stored: StoredRegister,
        writer: String,
        store: std::sync::mpsc::Sender<WriteOp>,
    ) -> Result<RegisterHandle, ClientError> {
        let corrupt = |e: serde_json::Error| ClientError::Corrupt {
            doc: name.clone(),
            reason: e.to_string(),
        };
        let confirmed = match &stored.state {
            Some(bytes) => serde_json::from_slice(bytes).map_err(corrupt)?,
            None => Confirmed::default(),
        };
        let mut pending = BTreeMap::new();
        for (seq, bytes) in &stored.pending {
            pending.insert(*seq, serde_json::from_slice(bytes).map_err(corrupt)?);
        }
        let replica = Replica::load(confirmed, pending, writer);
        let (state, _) = watch::channel(RegisterState {
            connection: Connection::Offline,
            pending: replica.pending(),
            denied: None,
        });
        let shared = RegisterShared {
            name,
            replica: Mutex::new(replica),
            tickets: Mutex::new(HashMap::new()),
            events: broadcast::channel(EVENTS_CAPACITY).0,
            state,
            wake: Notify::new(),
            store,
            closed: AtomicBool::new(false),
        };
        Ok(RegisterHandle {
            shared: Arc::new(shared),
        })
    }

    /// The document's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The register's kind, once the relay has told this client (now or in an earlier
    /// session); `None` before.
    pub fn kind(&self) -> Option<Kind> {
        lock(&self.shared.replica).confirmed().kind
    }

    /// The value as this client sees it (see the [module docs](self)).
    pub fn value(&self) -> Option<Value> {
        lock(&self.shared.replica).value()
    }

    /// A manual register's current revision (version, value, author), as the relay last said.
    pub fn revision(&self) -> Option<Revision> {
        lock(&self.shared.replica).confirmed().revision.clone()
    }

    /// An LWW register's winning stamp, as the relay last said.
    pub fn stamp(&self) -> Option<WriteStamp> {
        lock(&self.shared.replica).confirmed().lww.stamp().cloned()
    }

    /// A manual register's open conflicts, oldest first.
    pub fn conflicts(&self) -> Vec<Conflict> {
        lock(&self.shared.replica).confirmed().conflicts.clone()
    }

    /// The document's lock (`{"holder":..,"expires_ms":..}`), if held.
    pub fn lock(&self) -> Option<Value> {
        lock(&self.shared.replica).confirmed().lock.clone()
    }

    /// Commands waiting for the relay's answer.
    pub fn pending(&self) -> usize {
        lock(&self.shared.replica).pending()
    }

    /// A receiver of the register's connection state; `wait_for` on it to await a condition.
    pub fn state(&self) -> watch::Receiver<RegisterState> {
        self.shared.state.subscribe()
    }

    /// The register's events from now on.
    pub fn events(&self) -> RegisterEvents {
        RegisterEvents(self.shared.events.subscribe())
    }

    /// Writes `value` to an LWW register: applied locally at once, sent to the relay now or
    /// on reconnect. Fails at once only when the register is known to be manual.
    pub fn write(&self, value: Value) -> Result<WriteTicket, RegisterError> {
        self.command(|replica| replica.lww_write(value, now_ms()))
    }

    /// Writes `value` to a manual register, based on `base_version` (the version this client
    /// saw, see [`RegisterHandle::revision`]). On a stale version it becomes a conflict.
    pub fn write_based_on(
        &self,
        value: Value,
        base_version: u64,
    ) -> Result<WriteTicket, RegisterError> {
        self.command(|replica| replica.manual_write(value, base_version, now_ms()))
    }

    /// Resolves a manual register's conflict `conflict` with `value`.
    pub fn resolve(&self, conflict: u64, value: Value) -> Result<WriteTicket, RegisterError> {
        self.command(|replica| replica.resolve(conflict, value, now_ms()))
    }

    /// Queues a command: stored, then sent by the task.
    fn command(
        &self,
        make: impl FnOnce(&mut Replica) -> Result<(u64, Command), RegisterError>,
    ) -> Result<WriteTicket, RegisterError> {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(RegisterError::Closed);
        }
        let (tx, rx) = oneshot::channel();
        self.shared.change(|replica| {
            let (seq, command) = make(replica)?;
            let json = serde_json::to_vec(&command)
                .expect("a register command is plain data that always serialises");
            let op = WriteOp::RegisterCommand {
                doc: self.shared.name.clone(),
                seq,
                command: json,
            };
            if self.shared.store.send(op).is_err() {
                warn!(register = %self.shared.name, "client closed: command not stored");
            }
            lock(&self.shared.tickets).insert(seq, tx);
            Ok(Effects::default())
        })?;
        self.shared.wake.notify_one();
        Ok(WriteTicket(rx))
    }
}

impl RegisterShared {
    /// Runs `f` on the replica and carries out its effects, adding a `Changed` event when the
    /// value moved.
    pub(crate) fn change<E>(
        &self,
        f: impl FnOnce(&mut Replica) -> Result<Effects, E>,
    ) -> Result<(), E> {
        let (mut effects, value, pending, confirmed) = {
            let mut replica = lock(&self.replica);
            let before = replica.value();
            let effects = f(&mut replica)?;
            let after = replica.value();
            let confirmed = effects.save.then(|| replica.confirmed().clone());
            (
                (effects),
                (before != after).then_some(after),
                replica.pending(),
                confirmed,
            )
        };
        if let Some(value) = value {
            effects.events.push(RegisterEvent::Changed { value });
        }
        if let Some(confirmed) = confirmed
            && let Ok(state) = serde_json::to_vec(&confirmed)
        {
            let _ = self.store.send(WriteOp::RegisterState {
                doc: self.name.clone(),
                state,
            });
        }
        for seq in effects.done {
            let _ = self.store.send(WriteOp::RegisterDone {
                doc: self.name.clone(),
                seq,
            });
        }
        for (seq, answer) in effects.answers {
            if let Some(ticket) = lock(&self.tickets).remove(&seq) {
                let _ = ticket.send(answer);
            }
        }
        self.state.send_if_modified(|s| {
            let changed = s.pending != pending;
            s.pending = pending;
            changed
        });
        for event in effects.events {
            let _ = self.events.send(event);
        }
        Ok(())
    }

    /// The client closed: refuses further commands and answers every waiting ticket with
    /// [`RegisterError::Closed`] (the commands stay stored for the next session).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        lock(&self.tickets).clear();
    }

    /// Commands to send on the current link.
    pub(crate) fn take_unsent(&self) -> Vec<Command> {
        lock(&self.replica).take_unsent()
    }
}

/// Milliseconds since the Unix epoch, for HLC stamps.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
