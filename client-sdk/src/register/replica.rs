//! The pure core of a register handle: what the relay last said, the commands it has not
//! answered yet, and how each message of the relay changes them. No I/O, no clock: the time
//! is an argument, and every change comes back as [`Effects`] for the driver to carry out
//! (events to publish, tickets to answer, database writes).

use aetherflow_crdt::code::Code;
use std::collections::{BTreeMap, VecDeque};

use aetherflow_crdt::register::clock::{HlcStamp, HybridClock};
use aetherflow_crdt::register::lww::{LwwRegister, LwwWrite};
use aetherflow_crdt::register::manual::{Conflict, ManualWrite, Revision};
use aetherflow_crdt::register::{Command, Kind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{LockEvent, RegisterError, RegisterEvent, WriteOutcome, outcome_from_json};
use aetherflow_crdt::event::DocEvent;
use aetherflow_crdt::register::wire::RegisterView;

/// Commands sent without their answers at most: the relay closes a connection that has more
/// than 256 of one document waiting, and an offline backlog goes out in steps of this size.
pub(crate) const MAX_IN_FLIGHT: usize = 32;

/// The relay's view of the register as last heard; stored locally so a register opened
/// offline knows its kind, value and conflicts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Confirmed {
    /// The document's kind, once the relay has told us.
    pub kind: Option<Kind>,
    /// An LWW document's winning write.
    pub lww: LwwRegister,
    /// A manual document's current revision.
    pub revision: Option<Revision>,
    /// Open conflicts of a manual document, oldest first.
    pub conflicts: Vec<Conflict>,
    /// The document's lock (`{"holder":..,"expires_ms":..}`), if held.
    pub lock: Option<Value>,
}

/// What a change asks the driver to do.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Events for the handle's listeners.
    pub events: Vec<RegisterEvent>,
    /// Answers for the tickets of these commands.
    pub answers: Vec<(u64, Result<WriteOutcome, RegisterError>)>,
    /// Commands answered for good: remove them from the database.
    pub done: Vec<u64>,
    /// [`Confirmed`] changed: store it.
    pub save: bool,
}

/// A register replica.
#[derive(Debug)]
pub(crate) struct Replica {
    confirmed: Confirmed,
    /// Commands not answered yet, by local sequence number.
    pending: BTreeMap<u64, Command>,
    /// Commands sent on the current link, oldest first: the relay answers in this order.
    in_flight: VecDeque<u64>,
    /// Pending commands from this sequence number on are not sent on the current link yet.
    send_from: u64,
    next_seq: u64,
    clock: HybridClock,
    writer: String,
}

impl Replica {
    /// A replica from what the database held; `writer` stamps this client's LWW writes.
    pub fn load(confirmed: Confirmed, pending: BTreeMap<u64, Command>, writer: String) -> Replica {
        let mut clock = HybridClock::new();
        let stamps = confirmed
            .lww
            .stamp()
            .into_iter()
            .chain(pending.values().filter_map(|c| match c {
                Command::LwwWrite(w) => Some(&w.stamp),
                _ => None,
            }));
        for stamp in stamps {
            observe(&mut clock, stamp.clock);
        }
        let next_seq = pending.keys().next_back().map_or(0, |last| last + 1);
        Replica {
            confirmed,
            pending,
            in_flight: VecDeque::new(),
            send_from: 0,
            next_seq,
            clock,
            writer,
        }
    }

    /// The relay's view as last heard.
    pub fn confirmed(&self) -> &Confirmed {
        &self.confirmed
    }

    /// Commands waiting for the relay's answer.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The value as this client sees it: for LWW, the relay's value merged with this
    /// client's unanswered writes (LWW converges whatever the order); for manual, the
    /// relay's current revision (a manual write counts once the relay accepted it).
    pub fn value(&self) -> Option<Value> {
        if self.confirmed.kind == Some(Kind::Manual) {
            return self.confirmed.revision.as_ref().map(|r| r.value.clone());
        }
        let mut merged = self.confirmed.lww.clone();
        for command in self.pending.values() {
            if let Command::LwwWrite(write) = command {
                merged.apply(write.clone());
            }
        }
        merged.value().cloned()
    }

    /// Queues an LWW write of `value`, stamped at `now_ms` by this client.
    pub fn lww_write(
        &mut self,
        value: Value,
        now_ms: u64,
    ) -> Result<(u64, Command), RegisterError> {
        self.expect_kind(Kind::Lww)?;
        let stamp = self.clock.tick(now_ms);
        let write = LwwWrite::new(value, stamp, self.writer.clone());
        Ok(self.queue(Command::LwwWrite(write)))
    }

    /// Queues a manual write of `value` on `base_version`.
    pub fn manual_write(
        &mut self,
        value: Value,
        base_version: u64,
        now_ms: u64,
    ) -> Result<(u64, Command), RegisterError> {
        self.expect_kind(Kind::Manual)?;
        let write = ManualWrite {
            base_version,
            value,
            // Empty: the relay records the token's subject.
            author: String::new(),
            at_ms: now_ms,
        };
        Ok(self.queue(Command::ManualWrite(write)))
    }

    /// Queues the resolution of conflict `conflict` with `value`.
    pub fn resolve(
        &mut self,
        conflict: u64,
        value: Value,
        now_ms: u64,
    ) -> Result<(u64, Command), RegisterError> {
        self.expect_kind(Kind::Manual)?;
        let command = Command::Resolve {
            conflict,
            value,
            author: String::new(),
            at_ms: now_ms,
        };
        Ok(self.queue(command))
    }

    fn expect_kind(&self, wanted: Kind) -> Result<(), RegisterError> {
        match self.confirmed.kind {
            Some(kind) if kind != wanted => Err(RegisterError::WrongKind {
                reason: format!("this is a {kind:?} register; the operation needs {wanted:?}"),
            }),
            _ => Ok(()),
        }
    }

    fn queue(&mut self, command: Command) -> (u64, Command) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.insert(seq, command.clone());
        (seq, command)
    }

    /// Commands not sent on the current link yet, in order, at most [`MAX_IN_FLIGHT`] in
    /// flight; from now on they are in flight.
    pub fn take_unsent(&mut self) -> Vec<Command> {
        let room = MAX_IN_FLIGHT.saturating_sub(self.in_flight.len());
        let unsent: Vec<(u64, Command)> = self
            .pending
            .range(self.send_from..)
            .take(room)
            .map(|(seq, command)| (*seq, command.clone()))
            .collect();
        if let Some((last, _)) = unsent.last() {
            self.send_from = last + 1;
        }
        self.in_flight.extend(unsent.iter().map(|(seq, _)| *seq));
        unsent.into_iter().map(|(_, command)| command).collect()
    }

    /// A new link delivered the relay's `state`: it replaces our view, and every unanswered
    /// command is to be sent (again) on this link.
    pub fn connected(&mut self, state: &Value) -> Effects {
        self.in_flight.clear();
        self.send_from = 0;
        let mut effects = Effects::default();
        self.confirmed = Confirmed {
            lock: state.get("lock").filter(|l| !l.is_null()).cloned(),
            conflicts: state
                .get("conflicts")
                .and_then(|c| serde_json::from_value(c.clone()).ok())
                .unwrap_or_default(),
            ..Confirmed::default()
        };
        if let Ok(register) = serde_json::from_value(state["register"].clone()) {
            self.take_register(register);
        }
        effects.save = true;
        effects.events.push(RegisterEvent::State);
        effects
    }

    /// Takes in a register as the relay shows it.
    fn take_register(&mut self, register: RegisterView) {
        match register {
            RegisterView::Lww { value, stamp } => {
                self.confirmed.kind = Some(Kind::Lww);
                if let Some(stamp) = stamp {
                    observe(&mut self.clock, stamp.clock);
                    let value = value.unwrap_or_default();
                    self.confirmed.lww.apply(LwwWrite { value, stamp });
                }
            }
            RegisterView::Manual { revision, .. } => {
                self.confirmed.kind = Some(Kind::Manual);
                if let Some(revision) = revision {
                    self.take_revision(revision);
                }
            }
        }
    }

    /// A newer revision replaces ours; an older one (a late event) is ignored.
    fn take_revision(&mut self, revision: Revision) {
        let ours = self.confirmed.revision.as_ref().map_or(0, |r| r.version);
        if revision.version > ours {
            self.confirmed.revision = Some(revision);
        }
    }

    /// An event from the relay: `result` (a command's answer) or a [`DocEvent`] named `name`.
    pub fn on_event(&mut self, name: &str, mut data: Value) -> Effects {
        let mut effects = Effects {
            save: true,
            ..Effects::default()
        };
        if name == "result" {
            self.answer(Ok(data), &mut effects);
            return effects;
        }
        if name == "updated" {
            // Only the register matters here, whatever else the event holds.
            let register = data.get_mut("register").map(Value::take);
            if let Some(Ok(register)) = register.map(serde_json::from_value::<RegisterView>) {
                self.take_register(register);
            }
            return effects;
        }
        if let Some(fields) = data.as_object_mut() {
            fields
                .entry("type")
                .or_insert_with(|| Value::from(name.to_owned()));
        }
        // An event this SDK does not know (a newer relay's) changes nothing.
        let Ok(event) = serde_json::from_value::<DocEvent>(data) else {
            effects.save = false;
            return effects;
        };
        match event {
            DocEvent::ConflictDetected { conflict } => {
                self.add_conflict(conflict.clone());
                effects
                    .events
                    .push(RegisterEvent::ConflictDetected(conflict));
            }
            DocEvent::ConflictResolved { conflict, revision } => {
                self.confirmed.conflicts.retain(|c| c.id != conflict);
                self.take_revision(revision.clone());
                effects
                    .events
                    .push(RegisterEvent::ConflictResolved { conflict, revision });
            }
            other => {
                effects.save = false;
                self.other_event(other, &mut effects);
            }
        }
        effects
    }

    /// Lock, presence and deletion events.
    fn other_event(&mut self, event: DocEvent, effects: &mut Effects) {
        let lock = match event {
            DocEvent::LockAcquired { holder, expires_ms } => {
                LockEvent::Acquired { holder, expires_ms }
            }
            DocEvent::LockRenewed { holder, expires_ms } => {
                LockEvent::Renewed { holder, expires_ms }
            }
            DocEvent::LockReleased { holder } => LockEvent::Released { holder },
            DocEvent::LockExpired { holder } => LockEvent::Expired { holder },
            DocEvent::UserJoined { user, .. } => {
                return effects.events.push(RegisterEvent::UserJoined { user });
            }
            DocEvent::UserLeft { user, .. } => {
                return effects.events.push(RegisterEvent::UserLeft { user });
            }
            DocEvent::Deleted => return effects.events.push(RegisterEvent::Deleted),
            _ => return,
        };
        self.confirmed.lock = match &lock {
            LockEvent::Acquired { holder, expires_ms }
            | LockEvent::Renewed { holder, expires_ms } => {
                Some(serde_json::json!({ "holder": holder, "expires_ms": expires_ms }))
            }
            LockEvent::Released { .. } | LockEvent::Expired { .. } => None,
        };
        effects.save = true;
        effects.events.push(RegisterEvent::Lock(lock));
    }

    fn add_conflict(&mut self, conflict: Conflict) {
        if !self.confirmed.conflicts.iter().any(|c| c.id == conflict.id) {
            self.confirmed.conflicts.push(conflict);
        }
    }

    /// An error from the relay on this document: the answer to the oldest command in flight.
    /// A relay failure (1011) keeps the command for the next connection; any other refusal
    /// is final. 4410 (deleted) ends the link and answers nothing.
    pub fn on_error(&mut self, code: u32, reason: String) -> Effects {
        let mut effects = Effects::default();
        if code == Code::DocumentDeleted.as_u32() {
            return effects;
        }
        if code == Code::InternalError.as_u32() {
            self.in_flight.pop_front();
            return effects;
        }
        if self.in_flight.is_empty() {
            // Nothing to answer: a confused relay; the error changes nothing.
            return effects;
        }
        let error = RegisterError::from_code(code, reason);
        effects.events.push(RegisterEvent::Refused(error.clone()));
        self.answer(Err(error), &mut effects);
        effects
    }

    /// Settles the oldest command in flight with the relay's answer.
    fn answer(&mut self, answer: Result<Value, RegisterError>, effects: &mut Effects) {
        let Some(seq) = self.in_flight.pop_front() else {
            return;
        };
        let Some(command) = self.pending.remove(&seq) else {
            return;
        };
        effects.done.push(seq);
        let outcome = answer.and_then(outcome_from_json);
        if let Ok(outcome) = &outcome {
            self.take_outcome(command, outcome);
        }
        effects.answers.push((seq, outcome));
    }

    /// What an accepted command changed in the relay's view.
    fn take_outcome(&mut self, command: Command, outcome: &WriteOutcome) {
        match (command, outcome) {
            (Command::LwwWrite(write), WriteOutcome::Applied { .. }) => {
                self.confirmed.lww.apply(write);
            }
            (Command::Resolve { conflict, .. }, WriteOutcome::Applied { revision }) => {
                self.confirmed.conflicts.retain(|c| c.id != conflict);
                if let Some(revision) = revision {
                    self.take_revision(revision.clone());
                }
            }
            (
                _,
                WriteOutcome::Applied {
                    revision: Some(revision),
                },
            ) => {
                self.take_revision(revision.clone());
            }
            (_, WriteOutcome::Conflict { conflict }) => self.add_conflict(conflict.clone()),
            _ => {}
        }
    }
}

/// Makes `clock`'s next tick exceed `stamp`. A stamp from the future is taken as it is: the
/// relay already accepted it, so beating it is the only way for a later write to win.
fn observe(clock: &mut HybridClock, stamp: HlcStamp) {
    let _ = clock.observe(stamp, stamp.wall_ms, 0);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lww_state(value: Value, wall_ms: u64, writer: &str) -> Value {
        json!({ "type": "state", "lock": null, "register": { "kind": "lww", "value": value,
            "stamp": { "clock": { "wall_ms": wall_ms, "counter": 0 }, "writer": writer } } })
    }

    #[test]
    fn an_offline_lww_write_shows_at_once_and_is_resent_on_every_connection() {
        let mut replica = Replica::load(Confirmed::default(), BTreeMap::new(), "me".into());
        let (seq, _) = replica.lww_write(json!("offline"), 1_000).unwrap();
        assert_eq!(replica.value(), Some(json!("offline")));
        replica.connected(&lww_state(json!("older"), 500, "them"));
        assert_eq!(replica.value(), Some(json!("offline")));
        assert_eq!(replica.take_unsent().len(), 1);
        // The link drops before the answer: the next one sends it again.
        replica.connected(&lww_state(json!("older"), 500, "them"));
        assert_eq!(replica.take_unsent().len(), 1);
        let effects = replica.on_event("result", json!({ "outcome": "applied" }));
        assert_eq!(effects.done, [seq]);
        assert_eq!(replica.pending(), 0);
        assert_eq!(replica.value(), Some(json!("offline")));
    }

    #[test]
    fn a_large_backlog_goes_out_a_window_at_a_time() {
        let mut replica = Replica::load(Confirmed::default(), BTreeMap::new(), "me".into());
        for n in 0..(MAX_IN_FLIGHT + 5) {
            replica.lww_write(json!(n), 1_000).unwrap();
        }
        replica.connected(&lww_state(json!("older"), 500, "them"));
        assert_eq!(replica.take_unsent().len(), MAX_IN_FLIGHT);
        assert!(replica.take_unsent().is_empty());
        replica.on_event("result", json!({ "outcome": "applied" }));
        replica.on_event("result", json!({ "outcome": "applied" }));
        assert_eq!(replica.take_unsent().len(), 2);
        assert_eq!(replica.pending(), MAX_IN_FLIGHT + 3);
    }

    #[test]
    fn a_later_remote_stamp_wins_and_the_next_local_write_beats_it() {
        let mut replica = Replica::load(Confirmed::default(), BTreeMap::new(), "me".into());
        replica.lww_write(json!("mine"), 1_000).unwrap();
        replica.connected(&lww_state(json!("theirs"), 9_000, "them"));
        assert_eq!(replica.value(), Some(json!("theirs")));
        // Our clock reads 2,000 but has seen 9,000: the new write still wins.
        replica.lww_write(json!("newer"), 2_000).unwrap();
        assert_eq!(replica.value(), Some(json!("newer")));
    }

    #[test]
    fn a_refused_write_is_dropped_and_the_value_reverts() {
        let mut replica = Replica::load(Confirmed::default(), BTreeMap::new(), "me".into());
        replica.connected(&lww_state(json!("kept"), 500, "them"));
        replica.lww_write(json!("mine"), 1_000).unwrap();
        replica.take_unsent();
        let effects = replica.on_error(4403, "this token is read-only".into());
        assert!(matches!(
            effects.answers.as_slice(),
            [(_, Err(RegisterError::ReadOnly { .. }))]
        ));
        assert_eq!(replica.value(), Some(json!("kept")));
        assert_eq!(replica.pending(), 0);
    }

    #[test]
    fn manual_conflicts_follow_the_relay_and_the_wrong_kind_is_refused_locally() {
        let mut replica = Replica::load(Confirmed::default(), BTreeMap::new(), "me".into());
        let state = json!({ "type": "state", "lock": null, "conflicts": [],
            "register": { "kind": "manual", "value": "v1", "version": 1,
                "revision": { "version": 1, "value": "v1", "author": "ann", "at_ms": 1 } } });
        replica.connected(&state);
        assert!(matches!(
            replica.lww_write(json!(1), 1),
            Err(RegisterError::WrongKind { .. })
        ));
        let conflict = json!({ "id": 0, "base_version": 0,
            "current": { "version": 1, "value": "v1", "author": "ann", "at_ms": 1 },
            "proposed": { "base_version": 0, "value": "late", "author": "bob", "at_ms": 2 } });
        replica.on_event("conflict_detected", json!({ "conflict": conflict }));
        assert_eq!(replica.confirmed().conflicts.len(), 1);
        let revision = json!({ "version": 2, "value": "merged", "author": "ann", "at_ms": 3 });
        replica.on_event(
            "conflict_resolved",
            json!({ "conflict": 0, "revision": revision }),
        );
        assert!(replica.confirmed().conflicts.is_empty());
        assert_eq!(replica.value(), Some(json!("merged")));
    }
}
