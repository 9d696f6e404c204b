//! The webhook outbox: endpoints and the events owed to them, in the same database as the
//! documents, written only by the [`super::writer`] task.
//!
//! An event is recorded in the same write transaction as the change that caused it, so a
//! crash never loses one (the change and its event commit together) nor invents one (neither
//! commits). Each row is one event for one endpoint, keyed by a sequence number, with its
//! idempotency id, its next attempt time and its attempts so far; the `due` table orders
//! pending rows by time so the delivery task reads only what is due. A `document.changed` row
//! stays open for the endpoint's debounce window: further changes to that document within it
//! extend the same row (`windows` names it), so one row is sent per document, endpoint and
//! window.
//!
//! The rules of delivery (signing, retries, parking) live in `webhooks`; this file only keeps
//! the records.

use std::collections::BTreeSet;

use aetherflow_crdt::DocName;
use aetherflow_crdt::register::{Command, Outcome, lww, manual};
use aetherflow_crdt::webhook::EventKind;
use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::StoreError;
use super::documents::{from_json, to_json};

/// Endpoint id → [`EndpointRecord`] as JSON.
pub(super) const ENDPOINTS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("webhook_endpoints");
/// Sequence → [`OutboxRow`] as JSON.
pub(super) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("webhook_outbox");
/// (endpoint id, due time in ms, sequence) of every pending row: each endpoint's rows in
/// time order, so one endpoint's backlog never hides another's due rows.
pub(super) const DUE: TableDefinition<(&str, u64, u64), ()> = TableDefinition::new("webhook_due");
/// (endpoint id, document) → sequence of its open `document.changed` row.
pub(super) const WINDOWS: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("webhook_windows");

/// Most authors one `document.changed` event lists; more are counted, not named.
pub const MAX_AUTHORS: usize = 100;

/// A webhook endpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// Its id (a UUIDv7).
    pub id: String,
    /// Where events are posted.
    pub url: String,
    /// The event types it wants.
    pub events: BTreeSet<EventKind>,
    /// Only documents whose names start with this (every document if `None`).
    pub prefix: Option<String>,
    /// The HMAC-SHA256 key of its signatures.
    pub secret: String,
    /// Whether its events carry the document's content.
    pub include_content: bool,
    /// Its `document.changed` debounce window, in milliseconds.
    pub debounce_ms: u64,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: u64,
}

impl EndpointRecord {
    /// Whether the endpoint wants `kind` events of `doc`.
    pub fn wants(&self, kind: EventKind, doc: &str) -> bool {
        self.events.contains(&kind) && self.prefix.as_deref().is_none_or(|p| doc.starts_with(p))
    }
}

/// The time range and authors of a `document.changed` event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeWindow {
    /// The first change in the window, ms since the Unix epoch.
    pub from_ms: u64,
    /// The last change in the window.
    pub to_ms: u64,
    /// Log entries committed in the window (each one batch of client updates).
    pub updates: u64,
    /// Who made them (token subjects), at most [`MAX_AUTHORS`].
    pub authors: BTreeSet<String>,
}

/// One event owed to one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxRow {
    /// The idempotency id (a UUIDv7): the same on every attempt.
    pub id: String,
    /// The endpoint's id.
    pub endpoint: String,
    /// What happened.
    pub kind: EventKind,
    /// The document.
    pub doc: String,
    /// When it was recorded, ms since the Unix epoch.
    pub created_ms: u64,
    /// When the next attempt is due (for an open change window: when the window closes).
    pub due_ms: u64,
    /// Attempts made so far.
    pub attempts: u32,
    /// Retries are counted from here (the first due time, or the admin's replay): past the
    /// retry horizon a failed row is parked.
    pub retry_from_ms: u64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Given up on after the retry horizon; waits for an admin's replay.
    pub parked: bool,
    /// The event's details.
    pub data: Value,
    /// For `document.changed`: the window it covers.
    pub window: Option<ChangeWindow>,
}

/// A change to the webhook records, applied by the writer.
#[derive(Debug)]
pub enum OutboxOp {
    /// Create or replace an endpoint.
    PutEndpoint(EndpointRecord),
    /// Remove an endpoint and every event owed to it.
    DeleteEndpoint(String),
    /// Record an event that did not come from a store change (lock events).
    Record {
        /// The document.
        doc: DocName,
        /// What happened.
        kind: EventKind,
        /// Its details.
        data: Value,
    },
    /// The row was delivered: remove it.
    Delivered(RowRef),
    /// An attempt failed: try again at `due_ms`.
    Retry {
        /// The row.
        row: RowRef,
        /// The next attempt.
        due_ms: u64,
        /// Why it failed.
        error: String,
    },
    /// Attempts failed for longer than the retry horizon: park the row.
    Park {
        /// The row.
        row: RowRef,
        /// Why the last attempt failed.
        error: String,
    },
    /// An admin asks for a parked row to be sent again now.
    Replay(u64),
    /// An admin gives up on a parked row: it is removed, never sent.
    Discard(u64),
}

/// A row as an attempt sent it: an answer about a row that was removed meanwhile (its
/// endpoint deleted) must not touch a later row that took its sequence number, and an
/// answer about a change window that grew while the attempt was in flight must not drop what
/// the receiver has not seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowRef {
    /// The row's sequence number.
    pub seq: u64,
    /// Its idempotency id.
    pub id: String,
    /// The row's [`OutboxRow::revision`] when it was sent.
    pub revision: u64,
}

/// The webhook tables within one write transaction, with the endpoints read once.
pub(super) struct Outbox<'txn> {
    endpoints: Vec<EndpointRecord>,
    endpoint_table: Table<'txn, &'static str, &'static [u8]>,
    rows: Table<'txn, u64, &'static [u8]>,
    due: Table<'txn, (&'static str, u64, u64), ()>,
    windows: Table<'txn, (&'static str, &'static str), u64>,
    /// Rows recorded or made due in this transaction: the delivery task is woken if any.
    pub(super) woken: bool,
}

impl<'txn> Outbox<'txn> {
    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<Outbox<'txn>, StoreError> {
        let endpoint_table = txn.open_table(ENDPOINTS)?;
        let mut endpoints = Vec::new();
        for entry in endpoint_table.iter()? {
            let (_, value) = entry?;
            endpoints.push(from_json(value.value())?);
        }
        Ok(Outbox {
            endpoints,
            endpoint_table,
            rows: txn.open_table(OUTBOX)?,
            due: txn.open_table(DUE)?,
            windows: txn.open_table(WINDOWS)?,
            woken: false,
        })
    }

    /// Whether any endpoint exists (after this transaction's changes so far).
    pub(super) fn has_endpoints(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// Records `kind` for every endpoint that wants it of `doc`.
    pub(super) fn record(
        &mut self,
        doc: &str,
        kind: EventKind,
        data: &Value,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let wanting: Vec<String> = self
            .endpoints
            .iter()
            .filter(|e| e.wants(kind, doc))
            .map(|e| e.id.clone())
            .collect();
        for endpoint in wanting {
            let row = OutboxRow::new(endpoint, kind, doc, now_ms, data.clone());
            self.insert(row)?;
        }
        Ok(())
    }

    /// A Yjs update by `authors` was committed to `doc`: extend each wanting endpoint's open
    /// window, or open one that closes after the endpoint's debounce time.
    pub(super) fn changed(
        &mut self,
        doc: &str,
        authors: &[String],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let kind = EventKind::DocumentChanged;
        let wanting: Vec<(String, u64)> = self
            .endpoints
            .iter()
            .filter(|e| e.wants(kind, doc))
            .map(|e| (e.id.clone(), e.debounce_ms))
            .collect();
        for (endpoint, debounce_ms) in wanting {
            let open = match self.windows.get((endpoint.as_str(), doc))? {
                Some(seq) => self.row(seq.value())?.map(|row| (seq.value(), row)),
                None => None,
            };
            match open {
                // Still open: never attempted (or its first attempt is in flight: the answer
                // then sees the row grew, see `RowRef::revision`). While an endpoint fails,
                // the delivery task attempts one row of it at a time, so its other documents
                // keep one open row each instead of one per window.
                Some((seq, mut row)) if row.attempts == 0 && !row.parked => {
                    if let Some(window) = &mut row.window {
                        window.extend(authors, now_ms);
                    }
                    self.rows.insert(seq, to_json(&row)?.as_slice())?;
                }
                _ => {
                    let mut row = OutboxRow::new(endpoint.clone(), kind, doc, now_ms, json!({}));
                    row.due_ms = now_ms.saturating_add(debounce_ms);
                    row.retry_from_ms = row.due_ms;
                    let mut window = ChangeWindow {
                        from_ms: now_ms,
                        ..ChangeWindow::default()
                    };
                    window.extend(authors, now_ms);
                    row.window = Some(window);
                    let seq = self.insert(row)?;
                    self.windows.insert((endpoint.as_str(), doc), seq)?;
                }
            }
        }
        Ok(())
    }

    /// A register command was applied with `outcome`: `register.updated`, and for manual
    /// registers `conflict.detected` / `conflict.resolved`.
    pub(super) fn register_changed(
        &mut self,
        doc: &str,
        command: &ResolveOf,
        outcome: &Outcome,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        match outcome {
            Outcome::Lww(lww::Outcome::Applied) => {
                let data = json!({ "kind": "lww" });
                self.record(doc, EventKind::RegisterUpdated, &data, now_ms)
            }
            Outcome::Lww(_) => Ok(()),
            Outcome::Manual(manual::Outcome::Applied(revision)) => {
                let data = json!({ "kind": "manual", "version": revision.version, "author": revision.author });
                self.record(doc, EventKind::RegisterUpdated, &data, now_ms)
            }
            Outcome::Manual(manual::Outcome::Conflict(conflict)) => {
                let data = json!({ "conflict": conflict.id, "base_version": conflict.base_version,
                    "author": conflict.proposed.author });
                self.record(doc, EventKind::ConflictDetected, &data, now_ms)
            }
            Outcome::Resolved(revision) => {
                let data = json!({ "conflict": command.0, "version": revision.version, "author": revision.author });
                self.record(doc, EventKind::ConflictResolved, &data, now_ms)?;
                let data = json!({ "kind": "manual", "version": revision.version, "author": revision.author });
                self.record(doc, EventKind::RegisterUpdated, &data, now_ms)
            }
        }
    }

    /// `doc` was deleted: its open windows close (their rows are still delivered).
    pub(super) fn deleted(&mut self, doc: &str, now_ms: u64) -> Result<(), StoreError> {
        let ids: Vec<String> = self.endpoints.iter().map(|e| e.id.clone()).collect();
        for id in ids {
            self.windows.remove((id.as_str(), doc))?;
        }
        self.record(doc, EventKind::DocumentDeleted, &json!({}), now_ms)
    }

    /// Applies an [`OutboxOp`]; returns whether the endpoint or row it names was found.
    pub(super) fn apply(&mut self, op: OutboxOp, now_ms: u64) -> Result<bool, StoreError> {
        match op {
            OutboxOp::PutEndpoint(record) => {
                let existed = self.endpoint_table.get(record.id.as_str())?.is_some();
                self.endpoint_table
                    .insert(record.id.as_str(), to_json(&record)?.as_slice())?;
                self.endpoints.retain(|e| e.id != record.id);
                self.endpoints.push(record);
                Ok(existed)
            }
            OutboxOp::DeleteEndpoint(id) => self.delete_endpoint(&id),
            OutboxOp::Record { doc, kind, data } => {
                self.record(doc.as_str(), kind, &data, now_ms)?;
                Ok(true)
            }
            OutboxOp::Delivered(row) => {
                let Some(mut found) = self.matching(&row)? else {
                    return Ok(false);
                };
                if found.revision() == row.revision {
                    self.remove(row.seq, &found)?;
                } else {
                    let due_ms = now_ms.saturating_add(self.debounce_ms(&found.endpoint));
                    self.reschedule(row.seq, &mut found, |r| r.renew(due_ms))?;
                }
                Ok(true)
            }
            OutboxOp::Retry { row, due_ms, error } => {
                let Some(mut found) = self.matching(&row)? else {
                    return Ok(false);
                };
                let grew = found.revision() != row.revision;
                self.reschedule(row.seq, &mut found, |r| {
                    if grew {
                        // What the receiver never saw goes out as a new event.
                        r.renew(due_ms);
                    } else {
                        r.attempts += 1;
                        r.due_ms = due_ms;
                    }
                    r.last_error = Some(error);
                })?;
                Ok(true)
            }
            OutboxOp::Park { row, error } => {
                let Some(mut found) = self.matching(&row)? else {
                    return Ok(false);
                };
                let grew = found.revision() != row.revision;
                self.due
                    .remove((found.endpoint.as_str(), found.due_ms, row.seq))?;
                if grew {
                    // What the receiver never saw goes out as a new event.
                    found.renew(now_ms);
                    self.due
                        .insert((found.endpoint.as_str(), found.due_ms, row.seq), ())?;
                } else {
                    found.attempts += 1;
                    found.parked = true;
                    found.last_error = Some(error);
                }
                self.rows.insert(row.seq, to_json(&found)?.as_slice())?;
                Ok(true)
            }
            OutboxOp::Discard(seq) => {
                let Some(found) = self.row(seq)?.filter(|r| r.parked) else {
                    return Ok(false);
                };
                self.remove(seq, &found)?;
                Ok(true)
            }
            OutboxOp::Replay(seq) => {
                let Some(mut found) = self.row(seq)?.filter(|r| r.parked) else {
                    return Ok(false);
                };
                found.parked = false;
                found.attempts = 0;
                found.due_ms = now_ms;
                found.retry_from_ms = now_ms;
                self.due
                    .insert((found.endpoint.as_str(), now_ms, seq), ())?;
                self.rows.insert(seq, to_json(&found)?.as_slice())?;
                self.woken = true;
                Ok(true)
            }
        }
    }

    /// Changes a pending row with `change`, keeping the `due` index in step.
    fn reschedule(
        &mut self,
        seq: u64,
        row: &mut OutboxRow,
        change: impl FnOnce(&mut OutboxRow),
    ) -> Result<(), StoreError> {
        self.due.remove((row.endpoint.as_str(), row.due_ms, seq))?;
        change(row);
        self.due
            .insert((row.endpoint.as_str(), row.due_ms, seq), ())?;
        self.rows.insert(seq, to_json(row)?.as_slice())?;
        self.woken = true;
        Ok(())
    }

    fn debounce_ms(&self, endpoint: &str) -> u64 {
        self.endpoints
            .iter()
            .find(|e| e.id == endpoint)
            .map_or(0, |e| e.debounce_ms)
    }

    fn delete_endpoint(&mut self, id: &str) -> Result<bool, StoreError> {
        let existed = self.endpoint_table.remove(id)?.is_some();
        self.endpoints.retain(|e| e.id != id);
        let mut owed = Vec::new();
        for entry in self.rows.iter()? {
            let (seq, value) = entry?;
            let row: OutboxRow = from_json(value.value())?;
            if row.endpoint == id {
                owed.push((seq.value(), row));
            }
        }
        for (seq, row) in owed {
            self.remove(seq, &row)?;
        }
        Ok(existed)
    }

    fn row(&self, seq: u64) -> Result<Option<OutboxRow>, StoreError> {
        match self.rows.get(seq)? {
            Some(value) => from_json(value.value()).map(Some),
            None => Ok(None),
        }
    }

    fn matching(&self, row: &RowRef) -> Result<Option<OutboxRow>, StoreError> {
        Ok(self.row(row.seq)?.filter(|found| found.id == row.id))
    }

    fn insert(&mut self, row: OutboxRow) -> Result<u64, StoreError> {
        let seq = match self.rows.last()? {
            Some((key, _)) => key.value() + 1,
            None => 0,
        };
        self.due
            .insert((row.endpoint.as_str(), row.due_ms, seq), ())?;
        self.rows.insert(seq, to_json(&row)?.as_slice())?;
        self.woken = true;
        Ok(seq)
    }

    fn remove(&mut self, seq: u64, row: &OutboxRow) -> Result<(), StoreError> {
        self.rows.remove(seq)?;
        self.due.remove((row.endpoint.as_str(), row.due_ms, seq))?;
        let window = (row.endpoint.as_str(), row.doc.as_str());
        if self.windows.get(window)?.map(|s| s.value()) == Some(seq) {
            self.windows.remove(window)?;
        }
        Ok(())
    }
}

/// The conflict a resolving command names, kept before the command is consumed.
#[derive(Debug, Clone, Copy)]
pub(super) struct ResolveOf(pub(super) Option<u64>);

impl ResolveOf {
    pub(super) fn of(command: &Command) -> ResolveOf {
        match command {
            Command::Resolve { conflict, .. } => ResolveOf(Some(*conflict)),
            _ => ResolveOf(None),
        }
    }
}

impl ChangeWindow {
    fn extend(&mut self, authors: &[String], now_ms: u64) {
        self.to_ms = self.to_ms.max(now_ms);
        self.updates += 1;
        for author in authors {
            if self.authors.len() >= MAX_AUTHORS {
                break;
            }
            self.authors.insert(author.clone());
        }
    }
}

impl OutboxRow {
    /// How many commits a change window holds (0 for other events): it grows while the row
    /// waits, and tells an answer about an older state of the row from one about this one.
    pub fn revision(&self) -> u64 {
        self.window.as_ref().map_or(0, |w| w.updates)
    }

    /// The row grew while an attempt of an older state was in flight: it becomes a new event
    /// (a new id, so a receiver that saw the old state does not discard it) covering the
    /// whole window again, due after the endpoint's debounce time.
    fn renew(&mut self, due_ms: u64) {
        self.id = uuid::Uuid::now_v7().to_string();
        self.attempts = 0;
        self.due_ms = due_ms;
        self.retry_from_ms = due_ms;
        self.last_error = None;
    }

    fn new(endpoint: String, kind: EventKind, doc: &str, now_ms: u64, data: Value) -> OutboxRow {
        OutboxRow {
            id: uuid::Uuid::now_v7().to_string(),
            endpoint,
            kind,
            doc: doc.to_owned(),
            created_ms: now_ms,
            due_ms: now_ms,
            attempts: 0,
            retry_from_ms: now_ms,
            last_error: None,
            parked: false,
            data,
            window: None,
        }
    }
}

mod reads;
pub use reads::OutboxDepth;

/// Creates the webhook tables (in `open_database`'s first transaction).
pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(ENDPOINTS)?;
    txn.open_table(OUTBOX)?;
    txn.open_table(DUE)?;
    txn.open_table(WINDOWS)?;
    Ok(())
}

#[cfg(test)]
mod tests;
