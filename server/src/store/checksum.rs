//! Checksums of stored Yjs data, kept beside it and verified on every load.
//!
//! redb checks its own pages only when asked (`check_integrity`), and a flipped byte inside a
//! value can decode as a valid update with different content: served as if nothing happened,
//! it would keep every replica that holds the original from converging. So every snapshot and
//! log entry gets a CRC-32 in a table of its own, written in the same transaction, and
//! [`Store::load`](super::Store::load) refuses a document whose bytes no longer match.
//! Entries written before checksums existed have none and are loaded unverified.

use redb::{ReadableTable, TableDefinition};

/// CRC-32 of each update log entry, by the entry's key.
pub(super) const LOG_SUMS: TableDefinition<(&str, u64), u32> =
    TableDefinition::new("update_log_crc32");
/// CRC-32 of each document's snapshot.
pub(super) const SNAPSHOT_SUMS: TableDefinition<&str, u32> =
    TableDefinition::new("snapshots_crc32");

/// The checksum stored for `bytes`.
pub(super) fn sum(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

pub(super) use crate::storage::Damage;

/// Checks `bytes` against the stored sum, if there is one.
pub(super) fn verify(stored: Option<u32>, bytes: &[u8], what: Damage) -> Result<(), Damage> {
    match stored {
        Some(expected) if expected != sum(bytes) => Err(what),
        _ => Ok(()),
    }
}

/// The stored sum of log entry `(name, seq)`.
pub(super) fn log_sum(
    table: &impl ReadableTable<(&'static str, u64), u32>,
    name: &str,
    seq: u64,
) -> Result<Option<u32>, redb::StorageError> {
    Ok(table.get((name, seq))?.map(|v| v.value()))
}
