//! Document metadata and register documents in the store.
//!
//! `documents` maps a name to its [`DocumentMeta`] (kind, creation time); Yjs documents made
//! implicitly by a first connection have none, and count as existing once they hold data.
//! `registers` maps an `lww` or `manual` document to its [`Register`] as JSON, conflicts
//! included, so they survive restarts. Changes run inside the writer's transaction: read,
//! apply the pure rules of [`aetherflow_crdt::register`], write back, in one commit.

use crate::wall_clock::now_ms;
use aetherflow_crdt::DocName;
use aetherflow_crdt::register::{Command, Kind, Outcome, Register};
use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{SNAPSHOTS, UPDATE_LOG};
use crate::storage::{DocumentMeta, RegisterFailure, StoreError};

/// Document name → [`DocumentMeta`] as JSON.
pub(super) const DOCUMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("documents");
/// Register document name → [`Register`] as JSON.
pub(super) const REGISTERS: TableDefinition<&str, &[u8]> = TableDefinition::new("registers");
/// Document name → time of its last change, milliseconds since the Unix epoch.
pub(super) const MODIFIED: TableDefinition<&str, u64> = TableDefinition::new("modified");

/// The tables a write transaction works on.
pub(super) struct Tables<'txn> {
    pub(super) log: Table<'txn, (&'static str, u64), &'static [u8]>,
    pub(super) snapshots: Table<'txn, &'static str, &'static [u8]>,
    log_sums: Table<'txn, (&'static str, u64), u32>,
    /// Each entry's time, size and authors (see [`super::history`]).
    pub(super) meta: Table<'txn, (&'static str, u64), &'static [u8]>,
    snapshot_sums: Table<'txn, &'static str, u32>,
    documents: Table<'txn, &'static str, &'static [u8]>,
    registers: Table<'txn, &'static str, &'static [u8]>,
    modified: Table<'txn, &'static str, u64>,
}

impl<'txn> Tables<'txn> {
    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<Tables<'txn>, StoreError> {
        Ok(Tables {
            log: txn.open_table(UPDATE_LOG)?,
            snapshots: txn.open_table(SNAPSHOTS)?,
            log_sums: txn.open_table(super::checksum::LOG_SUMS)?,
            meta: txn.open_table(super::history::ENTRY_META)?,
            snapshot_sums: txn.open_table(super::checksum::SNAPSHOT_SUMS)?,
            documents: txn.open_table(DOCUMENTS)?,
            registers: txn.open_table(REGISTERS)?,
            modified: txn.open_table(MODIFIED)?,
        })
    }

    /// Appends `update` to `doc`'s log at `seq`, with its checksum.
    pub(super) fn append(
        &mut self,
        doc: &DocName,
        seq: u64,
        update: &[u8],
    ) -> Result<(), StoreError> {
        self.log.insert((doc.as_str(), seq), update)?;
        self.log_sums
            .insert((doc.as_str(), seq), super::checksum::sum(update))?;
        Ok(())
    }

    /// Records who made entry `seq` of `doc` and when.
    pub(super) fn record(
        &mut self,
        doc: &DocName,
        seq: u64,
        time_ms: u64,
        bytes: usize,
        authors: &[String],
    ) -> Result<(), StoreError> {
        let record = super::history::encode_meta(time_ms, bytes as u64, authors);
        self.meta.insert((doc.as_str(), seq), record.as_slice())?;
        Ok(())
    }

    /// Replaces entry `seq` of `doc` by `update` (with its checksum), keeping its time and
    /// authors.
    pub(super) fn replace_entry(
        &mut self,
        doc: &DocName,
        seq: u64,
        update: &[u8],
    ) -> Result<(), StoreError> {
        self.append(doc, seq, update)?;
        let name = doc.as_str();
        let kept = self
            .meta
            .get((name, seq))?
            .and_then(|v| super::history::decode_meta(seq, v.value()));
        if let Some(entry) = kept {
            self.record(doc, seq, entry.time_ms, update.len(), &entry.authors)?;
        }
        Ok(())
    }

    /// Removes entry `seq` of `doc`, its checksum and its metadata.
    pub(super) fn remove_entry(&mut self, doc: &DocName, seq: u64) -> Result<(), StoreError> {
        let key = (doc.as_str(), seq);
        self.log.remove(key)?;
        self.log_sums.remove(key)?;
        self.meta.remove(key)?;
        Ok(())
    }

    /// Replaces `doc`'s snapshot (with its checksum). The log stays: it is the document's
    /// history (see [`super::history`]).
    pub(super) fn compact(&mut self, doc: &DocName, snapshot: &[u8]) -> Result<(), StoreError> {
        self.snapshots.insert(doc.as_str(), snapshot)?;
        self.snapshot_sums
            .insert(doc.as_str(), super::checksum::sum(snapshot))?;
        Ok(())
    }

    /// Removes `doc`'s log entries, their checksums and metadata.
    fn clear_log(&mut self, doc: &DocName) -> Result<(), StoreError> {
        let name = doc.as_str();
        self.log
            .retain_in((name, 0)..=(name, u64::MAX), |_, _| false)?;
        self.log_sums
            .retain_in((name, 0)..=(name, u64::MAX), |_, _| false)?;
        self.meta
            .retain_in((name, 0)..=(name, u64::MAX), |_, _| false)?;
        Ok(())
    }

    /// Records that `doc` changed at `at_ms`.
    pub(super) fn touch(&mut self, doc: &DocName, at_ms: u64) -> Result<(), StoreError> {
        self.modified.insert(doc.as_str(), at_ms)?;
        Ok(())
    }

    /// Removes everything stored for `doc`: snapshot, log, metadata, register (with its
    /// conflicts). Returns whether there was anything.
    pub(super) fn delete(&mut self, doc: &DocName) -> Result<bool, StoreError> {
        let existed = self.meta(doc)?.is_some();
        let name = doc.as_str();
        self.snapshots.remove(name)?;
        self.snapshot_sums.remove(name)?;
        self.clear_log(doc)?;
        self.documents.remove(name)?;
        self.registers.remove(name)?;
        self.modified.remove(name)?;
        Ok(existed)
    }

    /// Creates `doc` as `meta.kind` unless a document of that name exists.
    pub(super) fn create(
        &mut self,
        doc: &DocName,
        meta: DocumentMeta,
    ) -> Result<super::writer::WriteResult, StoreError> {
        use super::writer::WriteResult;
        if let Some(existing) = self.meta(doc)? {
            return Ok(WriteResult::Exists(existing));
        }
        if let Some(at_ms) = meta.created_ms {
            self.touch(doc, at_ms)?;
        }
        self.documents
            .insert(doc.as_str(), to_json(&meta)?.as_slice())?;
        if let Some(register) = Register::new(meta.kind) {
            self.registers
                .insert(doc.as_str(), to_json(&register)?.as_slice())?;
        }
        Ok(WriteResult::Created(meta))
    }

    /// Applies `command` to register `doc` and stores the result.
    pub(super) fn apply_command(
        &mut self,
        doc: &DocName,
        command: Command,
    ) -> Result<Result<Outcome, RegisterFailure>, StoreError> {
        let Some(bytes) = self
            .registers
            .get(doc.as_str())?
            .map(|v| v.value().to_vec())
        else {
            return Ok(Err(match self.meta(doc)? {
                Some(meta) => RegisterFailure::NotARegister(meta.kind),
                None => RegisterFailure::NotFound,
            }));
        };
        let mut register: Register = from_json(&bytes)?;
        let outcome = match register.apply(command) {
            Ok(outcome) => outcome,
            Err(e) => return Ok(Err(e.into())),
        };
        self.registers
            .insert(doc.as_str(), to_json(&register)?.as_slice())?;
        if changes_register(&outcome) {
            self.touch(doc, now_ms())?;
        }
        Ok(Ok(outcome))
    }

    fn meta(&self, doc: &DocName) -> Result<Option<DocumentMeta>, StoreError> {
        meta_in(&self.documents, &self.snapshots, &self.log, doc)
    }
}

/// Whether an outcome changed the stored register (a stale or duplicate LWW write did not).
fn changes_register(outcome: &Outcome) -> bool {
    use aetherflow_crdt::register::lww;
    !matches!(
        outcome,
        Outcome::Lww(lww::Outcome::Duplicate | lww::Outcome::Stale { .. })
    )
}

/// A document's metadata, reading the given tables (of a read or a write transaction).
pub(super) fn meta_in(
    documents: &impl ReadableTable<&'static str, &'static [u8]>,
    snapshots: &impl ReadableTable<&'static str, &'static [u8]>,
    log: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    doc: &DocName,
) -> Result<Option<DocumentMeta>, StoreError> {
    if let Some(meta) = documents.get(doc.as_str())? {
        return Ok(Some(from_json(meta.value())?));
    }
    let name = doc.as_str();
    let has_data =
        snapshots.get(name)?.is_some() || log.range((name, 0)..=(name, u64::MAX))?.next().is_some();
    Ok(has_data.then_some(DocumentMeta {
        kind: Kind::Yjs,
        created_ms: None,
    }))
}

pub(super) fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Record(std::sync::Arc::new(e)))
}

pub(super) fn from_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Record(std::sync::Arc::new(e)))
}
