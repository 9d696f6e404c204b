//! The history half of the redb engine: log entries outlive compaction, with their time and
//! authors, checkpoints to rebuild any state quickly, and labels.
//!
//! - Compaction writes the new snapshot with the sequence number it covers
//!   (table `snapshot_next`: every entry below it is in the snapshot) and keeps the entries;
//!   [`Store::load`] reads the snapshot and only the entries from that number on, so loading
//!   stays proportional to the document, not its history. Appends pay one small metadata
//!   record each (table `history_entries`).
//! - Sequence numbers never restart while a document exists: the next one is past both the
//!   log's last entry and the snapshot's covered number.
//! - A checkpoint is a snapshot kept at the number it covers (table `history_checkpoints`). A compaction
//!   keeps its snapshot as one once the entries since the previous checkpoint weigh more than
//!   [`CHECKPOINT_FACTOR`] times the snapshot, so checkpoints cost at most a
//!   `1 / CHECKPOINT_FACTOR` share of the update bytes, and rebuilding a state replays at most
//!   about that many times the document's size (plus one compaction interval).
//! - The state at entry `seq` is the nearest checkpoint (or the snapshot) covering at most
//!   `seq + 1` entries, plus the entries after it up to `seq`. Entries are Yjs updates, so
//!   applying one that a base already holds changes nothing: thinning may merge entries
//!   across a checkpoint safely.
//! - Thinning folds the entries of dropped versions into the first entry of the next kept
//!   version (which keeps its time and authors): later states never change. See
//!   `store/thinning.rs` (the folding, planned by [`Store::thin_plan`]).
//!
//! Documents compacted before history existed keep their old snapshot: it becomes the
//! checkpoint at 0 at the next compaction, and their earlier entries are gone.

use std::collections::BTreeMap;

use aetherflow_crdt::DocName;
use redb::{ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::documents::Tables;
use super::{Store, checksum};
use crate::history::CHECKPOINT_FACTOR;
use crate::storage::{Damage, HistoryEntry, StoreError, StoredDoc, Timeline};

/// Document name → sequence number its snapshot covers: every entry below it is in it.
pub(super) const SNAPSHOT_NEXT: TableDefinition<&str, u64> = TableDefinition::new("snapshot_next");
/// (name, sequence) → the entry's time, size and authors (see [`encode_meta`]).
pub(super) const ENTRY_META: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("history_entries");
/// (name, n) → v1 update of the document holding every entry below `n`.
const CHECKPOINTS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("history_checkpoints");
/// CRC-32 of each checkpoint.
const CHECKPOINT_SUMS: TableDefinition<(&str, u64), u32> =
    TableDefinition::new("history_checkpoints_crc32");
/// (name, sequence) → label of the version ending at that entry.
pub(super) const LABELS: TableDefinition<(&str, u64), &str> =
    TableDefinition::new("history_labels");

/// Creates the history tables (at open).
pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(SNAPSHOT_NEXT)?;
    txn.open_table(ENTRY_META)?;
    txn.open_table(CHECKPOINTS)?;
    txn.open_table(CHECKPOINT_SUMS)?;
    txn.open_table(LABELS)?;
    Ok(())
}

/// An entry's metadata record: time (u64), size (u64), then each author as a u16 length
/// and its UTF-8 bytes, all little-endian.
pub(super) fn encode_meta(time_ms: u64, bytes: u64, authors: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + authors.iter().map(|a| a.len() + 2).sum::<usize>());
    out.extend_from_slice(&time_ms.to_le_bytes());
    out.extend_from_slice(&bytes.to_le_bytes());
    for author in authors {
        // Token subjects are short; a longer one is cut at a character boundary.
        let mut end = author.len().min(u16::MAX as usize);
        while !author.is_char_boundary(end) {
            end -= 1;
        }
        out.extend_from_slice(&(end as u16).to_le_bytes());
        out.extend_from_slice(&author.as_bytes()[..end]);
    }
    out
}

/// Reads a metadata record; `None` if it is malformed.
pub(super) fn decode_meta(seq: u64, record: &[u8]) -> Option<HistoryEntry> {
    let time_ms = u64::from_le_bytes(record.get(0..8)?.try_into().ok()?);
    let bytes = u64::from_le_bytes(record.get(8..16)?.try_into().ok()?);
    let mut rest = record.get(16..)?;
    let mut authors = Vec::new();
    while !rest.is_empty() {
        let len = u16::from_le_bytes(rest.get(0..2)?.try_into().ok()?) as usize;
        let name = std::str::from_utf8(rest.get(2..2 + len)?).ok()?;
        authors.push(name.to_owned());
        rest = rest.get(2 + len..)?;
    }
    Some(HistoryEntry {
        seq,
        time_ms,
        authors,
        bytes,
    })
}

/// The sequence number `doc`'s snapshot covers (0 without one, or for a snapshot made
/// before history existed, which holds only what precedes every kept entry).
pub(super) fn snapshot_next(
    table: &impl ReadableTable<&'static str, u64>,
    doc: &str,
) -> Result<u64, StoreError> {
    Ok(table.get(doc)?.map_or(0, |v| v.value()))
}

/// Compaction: stores `snapshot` as covering every entry below `next`, keeping it as a
/// checkpoint too when the entries since the last checkpoint are heavy enough.
pub(super) fn compact(
    txn: &WriteTransaction,
    tables: &mut Tables<'_>,
    doc: &DocName,
    next: u64,
    snapshot: &[u8],
) -> Result<(), StoreError> {
    let name = doc.as_str();
    let mut covered = txn.open_table(SNAPSHOT_NEXT)?;
    let mut checkpoints = txn.open_table(CHECKPOINTS)?;
    let mut sums = txn.open_table(CHECKPOINT_SUMS)?;
    let no_checkpoint = checkpoints
        .range((name, 0)..=(name, u64::MAX))?
        .next()
        .is_none();
    if covered.get(name)?.is_none() && no_checkpoint {
        // A snapshot from before history: it holds what precedes every kept entry.
        if let Some(old) = tables.snapshots.get(name)?.map(|v| v.value().to_vec()) {
            checkpoints.insert((name, 0), old.as_slice())?;
            sums.insert((name, 0), checksum::sum(&old))?;
        }
    }
    let last = checkpoints
        .range((name, 0)..=(name, next))?
        .next_back()
        .transpose()?
        .map_or(0, |(key, _)| key.value().1);
    let mut since = 0u64;
    for entry in tables.log.range((name, last)..(name, next))? {
        since += entry?.1.value().len() as u64;
    }
    if since > CHECKPOINT_FACTOR * snapshot.len() as u64 {
        checkpoints.insert((name, next), snapshot)?;
        sums.insert((name, next), checksum::sum(snapshot))?;
    }
    tables.compact(doc, snapshot)?;
    covered.insert(name, next)?;
    Ok(())
}

/// Removes `doc`'s checkpoints, labels and covered number (its entries and their metadata
/// go with its log).
pub(super) fn delete(txn: &WriteTransaction, doc: &DocName) -> Result<(), StoreError> {
    let name = doc.as_str();
    let all = (name, 0)..=(name, u64::MAX);
    txn.open_table(SNAPSHOT_NEXT)?.remove(name)?;
    txn.open_table(CHECKPOINTS)?
        .retain_in(all.clone(), |_, _| false)?;
    txn.open_table(CHECKPOINT_SUMS)?
        .retain_in(all.clone(), |_, _| false)?;
    txn.open_table(LABELS)?.retain_in(all, |_, _| false)?;
    Ok(())
}

/// Sets or removes the label of entry `seq`; whether there was an entry (setting) or a
/// label (removing).
pub(super) fn label(
    txn: &WriteTransaction,
    tables: &Tables<'_>,
    doc: &DocName,
    seq: u64,
    label: Option<&str>,
) -> Result<bool, StoreError> {
    let name = doc.as_str();
    let mut labels = txn.open_table(LABELS)?;
    Ok(match label {
        Some(label) => {
            let exists = tables.log.get((name, seq))?.is_some();
            if exists {
                labels.insert((name, seq), label)?;
            }
            exists
        }
        None => labels.remove((name, seq))?.is_some(),
    })
}

/// `doc`'s timeline, read from the given tables.
fn timeline_in(
    meta: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    labels: &impl ReadableTable<(&'static str, u64), &'static str>,
    name: &str,
) -> Result<Timeline, StoreError> {
    let mut timeline = Timeline::default();
    for entry in meta.range((name, 0)..=(name, u64::MAX))? {
        let (key, value) = entry?;
        // A malformed record is skipped: its entry still counts in the content.
        if let Some(entry) = decode_meta(key.value().1, value.value()) {
            timeline.entries.push(entry);
        }
    }
    let mut found = BTreeMap::new();
    for entry in labels.range((name, 0)..=(name, u64::MAX))? {
        let (key, value) = entry?;
        found.insert(key.value().1, value.value().to_owned());
    }
    timeline.labels = found;
    Ok(timeline)
}

/// A stored state: the number of entries it covers, its bytes and its stored checksum.
type Base = (u64, Vec<u8>, Option<u32>);

/// The nearest base covering at most `bound` entries of `name`: the latest checkpoint, or the
/// snapshot when it covers at least as much; `None` to start from an empty document.
pub(super) fn base_at(
    txn: &ReadTransaction,
    name: &str,
    bound: u64,
) -> Result<Option<Base>, StoreError> {
    let mut base = checkpoint_at(txn, name, bound)?;
    let covered = snapshot_next(&txn.open_table(SNAPSHOT_NEXT)?, name)?;
    if covered <= bound && base.as_ref().is_none_or(|(at, _, _)| *at <= covered) {
        base = snapshot(txn, name, covered)?.or(base);
    }
    Ok(base)
}

/// Like [`base_at`], but only a base that stays: a checkpoint, or a snapshot from before
/// history (it becomes the checkpoint at 0 at the next compaction); never the current
/// snapshot, which the next compaction replaces. What thinning folds against, so that every
/// state stays the replay of a kept base and kept entries.
pub(super) fn lasting_base_at(
    txn: &ReadTransaction,
    name: &str,
    bound: u64,
) -> Result<Option<Base>, StoreError> {
    match checkpoint_at(txn, name, bound)? {
        Some(checkpoint) => Ok(Some(checkpoint)),
        None if snapshot_next(&txn.open_table(SNAPSHOT_NEXT)?, name)? == 0 => {
            snapshot(txn, name, 0)
        }
        None => Ok(None),
    }
}

/// The latest checkpoint of `name` covering at most `bound` entries.
fn checkpoint_at(
    txn: &ReadTransaction,
    name: &str,
    bound: u64,
) -> Result<Option<Base>, StoreError> {
    let checkpoints = txn.open_table(CHECKPOINTS)?;
    let checkpoint = checkpoints
        .range((name, 0)..=(name, bound))?
        .next_back()
        .transpose()?;
    let Some((key, value)) = checkpoint else {
        return Ok(None);
    };
    let at = key.value().1;
    let sums = txn.open_table(CHECKPOINT_SUMS)?;
    let sum = sums.get((name, at))?.map(|v| v.value());
    Ok(Some((at, value.value().to_vec(), sum)))
}

/// `name`'s snapshot, as a base covering `covered` entries.
fn snapshot(txn: &ReadTransaction, name: &str, covered: u64) -> Result<Option<Base>, StoreError> {
    let snapshots = txn.open_table(super::SNAPSHOTS)?;
    let Some(snapshot) = snapshots.get(name)? else {
        return Ok(None);
    };
    let sums = txn.open_table(checksum::SNAPSHOT_SUMS)?;
    let sum = sums.get(name)?.map(|v| v.value());
    Ok(Some((covered, snapshot.value().to_vec(), sum)))
}

impl Store {
    /// Every kept entry's metadata and the labels of `doc`. Blocking.
    pub fn timeline(&self, doc: &DocName) -> Result<Timeline, StoreError> {
        self.contained(|| {
            let txn = self.database()?.begin_read()?;
            timeline_in(
                &txn.open_table(ENTRY_META)?,
                &txn.open_table(LABELS)?,
                doc.as_str(),
            )
        })
    }

    /// `doc` just after entry `seq`: the nearest base and the entries to replay on it,
    /// checked against their checksums; `None` if there is no entry `seq`. Blocking.
    pub fn at(&self, doc: &DocName, seq: u64) -> Result<Option<StoredDoc>, StoreError> {
        self.contained(|| self.at_uncontained(doc, seq))
    }

    fn at_uncontained(&self, doc: &DocName, seq: u64) -> Result<Option<StoredDoc>, StoreError> {
        let damaged = |damage| StoreError::Damaged {
            doc: doc.to_string(),
            damage,
        };
        let name = doc.as_str();
        let txn = self.database()?.begin_read()?;
        let log = txn.open_table(super::UPDATE_LOG)?;
        if log.get((name, seq))?.is_none() {
            return Ok(None);
        }
        let base = base_at(&txn, name, seq.saturating_add(1))?;
        let from = base.as_ref().map_or(0, |(at, _, _)| *at);
        if let Some((_, bytes, sum)) = &base {
            checksum::verify(*sum, bytes, Damage::Snapshot).map_err(damaged)?;
        }
        let sums = txn.open_table(checksum::LOG_SUMS)?;
        let mut entries = Vec::new();
        for entry in log.range((name, from)..=(name, seq))? {
            let (key, value) = entry?;
            let at = key.value().1;
            let stored = checksum::log_sum(&sums, name, at)?;
            checksum::verify(stored, value.value(), Damage::LogEntry(at)).map_err(damaged)?;
            entries.push(value.value().to_vec());
        }
        Ok(Some(StoredDoc {
            snapshot: base.map(|(_, bytes, _)| bytes),
            log: entries,
            last_seq: seq,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_records_round_trip_and_malformed_ones_are_refused() {
        let authors = vec!["ada".to_owned(), "bob@example".to_owned()];
        let record = encode_meta(1_700_000_000_000, 42, &authors);
        let entry = decode_meta(9, &record).expect("decodes");
        assert_eq!(entry.authors, authors);
        assert_eq!(
            (entry.seq, entry.time_ms, entry.bytes),
            (9, 1_700_000_000_000, 42)
        );
        assert!(decode_meta(9, &record[..record.len() - 1]).is_none());
        assert!(decode_meta(9, &record[..7]).is_none());
    }
}
