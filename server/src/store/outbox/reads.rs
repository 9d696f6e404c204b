//! The outbox's reads: endpoints, due rows for the delivery task, rows and depth for the
//! admin.

use redb::{ReadableDatabase, ReadableTable};

use super::{DUE, ENDPOINTS, EndpointRecord, OUTBOX, OutboxRow};
use crate::store::documents::from_json;
use crate::store::{Store, StoreError};

/// Due rows by sequence, and when the earliest pending row is due.
pub type DueRows = (Vec<(u64, OutboxRow)>, Option<u64>);

/// How many rows wait: pending (to be sent or retried) and parked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxDepth {
    /// Rows to be sent or retried.
    pub pending: u64,
    /// Rows given up on, waiting for a replay.
    pub parked: u64,
}

impl Store {
    /// Every webhook endpoint. Blocking.
    pub fn webhook_endpoints(&self) -> Result<Vec<EndpointRecord>, StoreError> {
        self.contained(|| {
            let txn = self.db()?.begin_read()?;
            let table = txn.open_table(ENDPOINTS)?;
            let mut out = Vec::new();
            for entry in table.iter()? {
                let (_, value) = entry?;
                out.push(from_json(value.value())?);
            }
            Ok(out)
        })
    }

    /// Up to `per_endpoint` pending rows of each endpoint due at `now_ms` or before, each
    /// endpoint's earliest first, and when the earliest pending row of any endpoint is due.
    /// Blocking.
    pub fn due_webhooks(&self, now_ms: u64, per_endpoint: usize) -> Result<DueRows, StoreError> {
        self.contained(|| {
            let txn = self.db()?.begin_read()?;
            let endpoints = txn.open_table(ENDPOINTS)?;
            let due = txn.open_table(DUE)?;
            let rows = txn.open_table(OUTBOX)?;
            let mut out = Vec::new();
            let mut next: Option<u64> = None;
            for endpoint in endpoints.iter()? {
                let (id, _) = endpoint?;
                let id = id.value();
                let mut pending = due.range((id, 0, 0)..=(id, u64::MAX, u64::MAX))?;
                let mut taken = 0;
                while let Some(entry) = pending.next().transpose()? {
                    let (_, due_ms, seq) = entry.0.value();
                    next = Some(next.map_or(due_ms, |n| n.min(due_ms)));
                    if due_ms > now_ms || taken >= per_endpoint {
                        break;
                    }
                    if let Some(value) = rows.get(seq)? {
                        out.push((seq, from_json(value.value())?));
                        taken += 1;
                    }
                }
            }
            Ok((out, next))
        })
    }

    /// Up to `limit` rows after sequence `after` that pass `keep`, and the outbox's depth.
    /// Blocking.
    pub fn webhook_rows(
        &self,
        after: Option<u64>,
        limit: usize,
        keep: impl Fn(&OutboxRow) -> bool,
    ) -> Result<(Vec<(u64, OutboxRow)>, OutboxDepth), StoreError> {
        self.contained(|| {
            let txn = self.db()?.begin_read()?;
            let rows = txn.open_table(OUTBOX)?;
            let start = after.map_or(0, |a| a.saturating_add(1));
            let mut out = Vec::new();
            if limit > 0 {
                for entry in rows.range(start..)? {
                    let (key, value) = entry?;
                    let row: OutboxRow = from_json(value.value())?;
                    if keep(&row) {
                        out.push((key.value(), row));
                    }
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok((out, depth_of(&rows, &txn.open_table(DUE)?)?))
        })
    }
}

/// Pending rows are those in the `due` index; the others are parked. Both lengths are kept
/// by redb, so this reads no row.
fn depth_of(
    rows: &impl redb::ReadableTableMetadata,
    due: &impl redb::ReadableTableMetadata,
) -> Result<OutboxDepth, StoreError> {
    let pending = due.len()?;
    Ok(OutboxDepth {
        pending,
        parked: rows.len()?.saturating_sub(pending),
    })
}
