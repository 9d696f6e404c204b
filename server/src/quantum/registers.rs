//! Register documents (`lww`, `manual`) over Quantum: the live channel's protocol
//! (`/api/v1/docs/{name}/live`) in envelopes.
//!
//! Subscribing to a register document sends `event "state"` with the live channel's first
//! frame (`{"type":"state","register":..,"lock":..}`, plus `"conflicts"` for manual
//! documents), then every event of the document as `event NAME` with the SSE/live JSON
//! (`updated`, `conflict_detected`, `conflict_resolved`, `lock_*`, `user_joined`,
//! `user_left`, `lagged`, `deleted`). A `register` envelope goes through the HTTP write path
//! (`api::registers::write`: token permission, lock holder, event announcements,
//! persistence) and is answered, in the order the envelopes came, by exactly one
//! `event "result"` (the HTTP route's outcome JSON) or one `error` envelope.
//!
//! Each subscription applies its commands in a task of its own, one after the other, so a
//! write waiting for its commit holds up neither the connection's other documents nor its
//! Yjs traffic; that task drains its queue even after an unsubscribe, so a command that was
//! accepted is also announced.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use aetherflow_crdt::DocName;
use aetherflow_crdt::code::Code;
use aetherflow_crdt::envelope::{Control, Envelope, Payload};
use aetherflow_crdt::register::{Command, Kind};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{QuantumContext, error};
use crate::api::events::next_event;
use crate::auth::{Grant, Permission};
use crate::connection::CloseReason;
use crate::events::{DocEvent, Events};
use crate::registers::{RegisterChange, RegisterError, RegisterWrite, Resolution, outcome_json};

/// Error code: the token is read-only.
pub const ERROR_READ_ONLY: u32 = Code::Forbidden.as_u32();
/// Error code: no such document or open conflict.
pub const ERROR_NOT_FOUND: u32 = Code::NotFound.as_u32();
/// Error code: the operation does not fit the document's kind (an LWW write on a manual
/// document, a register operation on a Yjs document, a Yjs message on a register document).
pub const ERROR_WRONG_KIND: u32 = Code::WrongKind.as_u32();
/// Error code: an LWW write's stamp is too far ahead of the relay's clock (HTTP 422
/// `stamp_too_far_ahead`); nothing was stored.
pub const ERROR_CLOCK_AHEAD: u32 = Code::ClockAhead.as_u32();
/// Error code: the document is locked by someone else.
pub const ERROR_LOCKED: u32 = Code::Locked.as_u32();

/// Register commands a subscription may have waiting for their answers. The session never
/// waits for room in this queue (its writer may be waiting for the session to send an
/// answer), so a client that sends more without reading answers is closed with 1008; the
/// SDK keeps at most 32 in flight.
pub const MAX_WAITING_COMMANDS: usize = 256;

/// A connection's subscription to a register document: the task forwarding its events and
/// the queue of its commands. Dropping it stops the forwarding and announces `user_left`.
pub(super) struct RegisterSubscription {
    doc: DocName,
    user: String,
    conn: u64,
    events: Events,
    forward: tokio::task::JoinHandle<()>,
    commands: mpsc::Sender<Queued>,
}

/// What a subscription's writer answers, in order: a command, or the reason an envelope
/// for this document could not be read as one.
pub(super) type Queued = Result<Command, String>;

impl Drop for RegisterSubscription {
    fn drop(&mut self) {
        self.forward.abort();
        let left = DocEvent::UserLeft {
            user: self.user.clone(),
            conn: self.conn,
        };
        self.events.publish(&self.doc, left);
    }
}

/// Sends `doc`'s state, then forwards its events until it is dropped. `kind` is the
/// document's (`lww` or `manual`).
pub(super) async fn subscribe(
    doc: &DocName,
    kind: Kind,
    grant: Grant,
    ctx: &QuantumContext,
    peer: &super::subscriptions::Peer<'_>,
) -> Result<RegisterSubscription, (u32, String)> {
    let app = &ctx.app;
    let events = app.sessions.rooms.events().clone();
    // Listening before the state is read, so no change falls between the two.
    let listener = events.subscribe(doc);
    let greeting = app.registers.state(doc).await.map_err(|e| refusal(&e))?;
    // Straight to the connection: the session awaits this, and only it drains its queue.
    if !peer.reply(event(doc, "state", greeting)).await {
        return Err((
            u32::from(CloseReason::INTERNAL_ERROR),
            "connection closing".into(),
        ));
    }
    let conn = ctx.app.next_conn.fetch_add(1, Ordering::Relaxed);
    let joined = DocEvent::UserJoined {
        user: grant.user.clone(),
        conn,
    };
    events.publish(doc, joined);
    let forward = tokio::spawn(forward(
        doc.clone(),
        listener,
        peer.queue.clone(),
        app.sessions.shutdown.clone(),
    ));
    let (commands, queue) = mpsc::channel(MAX_WAITING_COMMANDS);
    let writer = Writer {
        doc: doc.clone(),
        kind,
        grant: grant.clone(),
        ctx: ctx.clone(),
    };
    // Tracked, so shutdown lets queued commands finish before the store's last commit.
    ctx.app.tracker.spawn(writer.run(queue, peer.queue.clone()));
    Ok(RegisterSubscription {
        doc: doc.clone(),
        user: grant.user,
        conn,
        events,
        forward,
        commands,
    })
}

impl RegisterSubscription {
    /// Queues a command (or a command that could not be read, answered with 4400); its
    /// answer follows those of the commands before it. Never waits: the error is the close
    /// code and reason when [`MAX_WAITING_COMMANDS`] are waiting already (or the writer is
    /// gone).
    pub(super) fn queue(&self, command: Queued) -> Result<(), (u32, String)> {
        self.commands.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => (
                u32::from(CloseReason::POLICY_VIOLATION),
                format!(
                    "over {MAX_WAITING_COMMANDS} register commands on {} wait for their answers; read them before sending more",
                    self.doc
                ),
            ),
            mpsc::error::TrySendError::Closed(_) => (
                u32::from(CloseReason::INTERNAL_ERROR),
                "register writer stopped".to_owned(),
            ),
        })
    }
}

/// Applies one subscription's commands in order and answers each.
struct Writer {
    doc: DocName,
    kind: Kind,
    grant: Grant,
    ctx: QuantumContext,
}

impl Writer {
    async fn run(self, mut queue: mpsc::Receiver<Queued>, to_peer: mpsc::Sender<Vec<u8>>) {
        while let Some(queued) = queue.recv().await {
            let answer = match queued {
                Ok(command) => self.apply(command).await,
                Err(reason) => error(self.doc.as_str(), super::ERROR_PROTOCOL, &reason),
            };
            // A connection that is gone misses the answer; the write itself stands.
            let _ = to_peer.send(answer).await;
        }
    }

    /// Runs one command through the HTTP write path; returns the envelope answering it.
    async fn apply(&self, command: Command) -> Vec<u8> {
        let doc = &self.doc;
        let fits = matches!(
            (self.kind, &command),
            (Kind::Lww, Command::LwwWrite(_))
                | (
                    Kind::Manual,
                    Command::ManualWrite(_) | Command::Resolve { .. }
                )
        );
        if !fits {
            let reason = format!(
                "{doc} is a {} document; this operation does not apply to it",
                kind_name(self.kind)
            );
            return error(doc.as_str(), ERROR_WRONG_KIND, &reason);
        }
        if self.grant.permission != Permission::Write {
            let reason = "this token is read-only";
            return error(doc.as_str(), ERROR_READ_ONLY, reason);
        }
        let registers = &self.ctx.app.registers;
        match registers.change(doc, &self.grant, change(command)).await {
            Ok(outcome) => event(doc, "result", outcome_json(outcome)),
            Err(e) => {
                let (code, reason) = refusal(&e);
                debug!(code, %reason, "register operation refused");
                error(doc.as_str(), code, &reason)
            }
        }
    }
}

/// The HTTP API's form of an envelope's command. An empty author means "the token's subject"
/// (another name is refused, as on HTTP); the relay stamps manual revisions with its own
/// clock, as on HTTP.
fn change(command: Command) -> RegisterChange {
    let author = |a: String| (!a.is_empty()).then_some(a);
    match command {
        Command::LwwWrite(w) => RegisterChange::Write(RegisterWrite::Lww {
            value: w.value,
            stamp: w.stamp,
        }),
        Command::ManualWrite(w) => RegisterChange::Write(RegisterWrite::Manual {
            value: w.value,
            base_version: w.base_version,
            author: author(w.author),
        }),
        Command::Resolve {
            conflict,
            value,
            author: by,
            ..
        } => RegisterChange::Resolve {
            conflict,
            resolution: Resolution {
                value,
                author: author(by),
            },
        },
    }
}

/// The error code and client-facing text for a refused register operation (internal details
/// stay in the log).
fn refusal(e: &RegisterError) -> (u32, String) {
    let code = match e {
        RegisterError::NotTheSubject(_) => ERROR_READ_ONLY,
        RegisterError::Locked(_) => ERROR_LOCKED,
        RegisterError::ClockAhead(_) => ERROR_CLOCK_AHEAD,
        RegisterError::NotFound(_) | RegisterError::UnknownConflict(_) => ERROR_NOT_FOUND,
        RegisterError::WrongKind(_) => ERROR_WRONG_KIND,
        RegisterError::Invalid(_) => super::ERROR_PROTOCOL,
        RegisterError::Store(_) => {
            tracing::error!(error = %e, "register operation failed");
            let code = u32::from(CloseReason::INTERNAL_ERROR);
            return (code, "the relay could not run the operation".into());
        }
    };
    (code, e.to_string())
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Yjs => "yjs",
        Kind::Lww => "lww",
        Kind::Manual => "manual",
    }
}

/// An `event` envelope.
fn event(doc: &DocName, name: &str, data: Value) -> Vec<u8> {
    let control = Control::Event {
        name: name.to_owned(),
        data,
    };
    Envelope::new(doc.as_str(), Payload::Control(control)).encode()
}

/// Forwards `doc`'s events until the relay shuts down, the document is deleted (then an
/// error 4410 ends the subscription) or the connection goes away.
async fn forward(
    doc: DocName,
    mut listener: broadcast::Receiver<Arc<DocEvent>>,
    to_peer: mpsc::Sender<Vec<u8>>,
    shutdown: CancellationToken,
) {
    while let Some(next) = next_event(&mut listener, &shutdown).await {
        let deleted = next == DocEvent::Deleted;
        if to_peer
            .send(event(&doc, next.name(), next.to_json()))
            .await
            .is_err()
        {
            return;
        }
        if deleted {
            let code = u32::from(CloseReason::DOCUMENT_DELETED);
            let _ = to_peer
                .send(error(doc.as_str(), code, "document deleted"))
                .await;
            return;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use aetherflow_crdt::register::clock::HlcStamp;
    use aetherflow_crdt::register::lww::LwwWrite;
    use aetherflow_crdt::register::manual::ManualWrite;
    use serde_json::json;

    #[test]
    fn envelope_commands_become_api_changes_with_empty_authors_left_to_the_token() {
        let lww = Command::LwwWrite(LwwWrite::new(json!("t"), HlcStamp::default(), "w"));
        assert!(matches!(
            change(lww),
            RegisterChange::Write(RegisterWrite::Lww { stamp, .. }) if stamp.writer == "w"
        ));
        let manual = Command::ManualWrite(ManualWrite {
            base_version: 3,
            value: json!(1),
            author: String::new(),
            at_ms: 0,
        });
        assert!(matches!(
            change(manual),
            RegisterChange::Write(RegisterWrite::Manual {
                base_version: 3,
                author: None,
                ..
            })
        ));
        let resolve = Command::Resolve {
            conflict: 2,
            value: json!(2),
            author: "ann".into(),
            at_ms: 0,
        };
        assert!(matches!(
            change(resolve),
            RegisterChange::Resolve { conflict: 2, resolution } if resolution.author.as_deref() == Some("ann")
        ));
    }

    #[tokio::test]
    async fn a_full_command_queue_closes_with_1008_and_a_stopped_writer_with_1011() {
        let (commands, mut queue) = mpsc::channel(1);
        let subscription = RegisterSubscription {
            doc: DocName::parse("title").expect("a valid name"),
            user: "ann".into(),
            conn: 1,
            events: Events::new(),
            forward: tokio::spawn(async {}),
            commands,
        };
        assert!(subscription.queue(Err("first".into())).is_ok());
        let (code, reason) = subscription.queue(Err("second".into())).unwrap_err();
        assert_eq!(code, 1008);
        assert!(reason.contains("wait for their answers"), "{reason}");
        assert_eq!(queue.recv().await, Some(Err("first".into())));
        queue.close();
        assert_eq!(subscription.queue(Err("third".into())).unwrap_err().0, 1011);
    }

    #[test]
    fn register_errors_map_to_documented_codes() {
        let subject = RegisterError::NotTheSubject("eve".into());
        assert_eq!(refusal(&subject).0, ERROR_READ_ONLY);
        assert_eq!(refusal(&RegisterError::Locked("x".into())).0, ERROR_LOCKED);
        assert_eq!(
            refusal(&RegisterError::NotFound("x".into())).0,
            ERROR_NOT_FOUND
        );
        assert_eq!(
            refusal(&RegisterError::UnknownConflict(3)).0,
            ERROR_NOT_FOUND
        );
        assert_eq!(
            refusal(&RegisterError::WrongKind("x".into())).0,
            ERROR_WRONG_KIND
        );
        let ahead = aetherflow_crdt::register::clock::ClockError::TooFarAhead {
            stamp_ms: u64::MAX,
            ahead_ms: 1,
            max_drift_ms: 0,
        };
        assert_eq!(
            refusal(&RegisterError::ClockAhead(ahead)).0,
            ERROR_CLOCK_AHEAD
        );
        let failed = RegisterError::Store(crate::storage::StoreError::Io("disk on fire".into()));
        let (code, text) = refusal(&failed);
        assert_eq!(code, 1011);
        assert!(!text.contains("disk"), "{text}");
    }
}
