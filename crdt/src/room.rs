//! The room: one loaded document, its awareness, and the sync rules of the y-websocket server.
//!
//! A room is a pure state machine. The server feeds it decoded messages and gets back the bytes
//! to store and to send; it never touches a socket or a clock. Call order for a connection:
//! [`Room::greeting`] when it joins, then [`Room::apply_updates`] / [`Room::answer_step1`] /
//! [`Room::apply_awareness`] / [`Room::query_awareness`] as its messages arrive, and
//! [`Room::disconnect`] when it leaves.
//!
//! yrs is not hardened against hostile bytes. Two failure modes cannot be caught at all: `Any`
//! values decode recursively with no depth limit (a deep one overflows the stack and aborts the
//! process), and declared counts reserve memory before anything checks the elements exist (a
//! few dozen bytes can pin gigabytes). So every update, from a peer or from the store, first
//! passes [`check_update_v1`], a non-recursive walk over the whole v1 structure that refuses
//! nesting beyond [`MAX_NESTING`](crate::update_check::MAX_NESTING) levels, counts that cannot
//! fit in the input, and the ids and clocks yrs asserts against; an update that fails it is
//! refused as [`RoomError::InvalidUpdate`] without reaching yrs, so the room stays clean.
//!
//! **Decoded size.** An update's encoded size says little about the memory it takes: yrs
//! holds every item as a block of its own, so an update of small map entries grows about 40
//! times once integrated. A room therefore counts items and content bytes
//! ([`UpdateSize`], measured by the same walk) and refuses, before yrs sees it, an update
//! that holds more than [`DocLimits::max_update_items`] items or would take the document past
//! [`DocLimits::max_doc_items`] items or [`DocLimits::max_doc_bytes`] content bytes
//! ([`RoomError::TooLarge`]; nothing of it is applied and the room stays clean). The
//! document's totals are approximate and err high: [`Room::load`] measures the stored snapshot
//! and log, and each accepted update adds its own measure (deletions subtract nothing). Before
//! refusing an update for the document's totals, a room whose totals grew since they were
//! last exact re-measures its whole state once, so a long-lived, much-edited document is not
//! refused for items that yrs has since merged.
//!
//! What remains (panics in yrs' integration of a well-formed update) is contained by running
//! every call into yrs with peer-supplied data under [`std::panic::catch_unwind`]. A panic while
//! applying marks the room tainted; the server then drops it and reloads it from the store.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use yrs::updates::decoder::Decode;
use yrs::updates::encoder::{Encode, Encoder, EncoderV1};
use yrs::{ClientID, Doc, Options, ReadTxn, StateVector, Transact, TransactionMut, Update};

use crate::awareness::{Awareness, AwarenessError};
use crate::protocol::truncate_reason;
use crate::protocol::{encode_awareness, encode_sync_step1, encode_sync_step2, encode_sync_update};
#[cfg(doc)]
use crate::update_check::check_update_v1;
use crate::update_check::{UpdateSize, measure_update_v1};
use crate::{ConnId, lib0};

/// Client id of the room's own document. The relay never edits, so it never appears in updates;
/// fixing it keeps the room free of randomness.
const RELAY_CLIENT_ID: u64 = 0;

/// Why the room refused something.
#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    /// An update failed [`check_update_v1`] or could not be decoded as a Yjs v1 update; nothing
    /// of it was applied.
    #[error("invalid update: {0}")]
    InvalidUpdate(String),
    /// A decoded update could not be integrated (yrs `UpdateError`); the room is tainted.
    #[error("update could not be applied: {0}")]
    ApplyFailed(String),
    /// yrs panicked on the input; the room is tainted.
    #[error("update crashed the document engine")]
    Panicked,
    /// A state vector (sync step 1) could not be decoded.
    #[error("invalid state vector: {0}")]
    InvalidStateVector(String),
    /// An awareness update was refused.
    #[error(transparent)]
    Awareness(#[from] AwarenessError),
    /// The stored snapshot could not be decoded or applied.
    #[error("stored snapshot is invalid: {0}")]
    InvalidSnapshot(String),
    /// A stored update log entry could not be decoded or applied.
    #[error("stored log entry {index} is invalid: {reason}")]
    InvalidLogEntry {
        /// Position of the entry in the log given to [`Room::load`].
        index: usize,
        /// What was wrong with it.
        reason: String,
    },
    /// The update is over a size limit (see [`DocLimits`]); nothing of it was applied and the
    /// room is clean.
    #[error("{0}")]
    TooLarge(SizeLimit),
    /// Accepted updates could not be merged into one log entry (a yrs defect); the room is
    /// tainted and the updates are refused so that their senders resend them after reconnecting.
    #[error("updates could not be merged")]
    MergeFailed,
}

/// Which size limit an update is over, with the figures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeLimit {
    /// The update alone holds more items than [`DocLimits::max_update_items`].
    #[error("update holds {items} items, over the limit of {limit} per update")]
    UpdateItems {
        /// Items in the update.
        items: u64,
        /// The limit.
        limit: u64,
    },
    /// The document would hold more items than [`DocLimits::max_doc_items`].
    #[error("document would hold {items} items, over the limit of {limit}")]
    DocItems {
        /// The document's items with the update.
        items: u64,
        /// The limit.
        limit: u64,
    },
    /// The document would hold more content bytes than [`DocLimits::max_doc_bytes`].
    #[error("document would hold {bytes} bytes of content, over the limit of {limit}")]
    DocBytes {
        /// The document's content bytes with the update.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
}

/// Limits on what a room holds, in the measure of [`UpdateSize`]. The default is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocLimits {
    /// Most items one update may hold.
    pub max_update_items: u64,
    /// Most items a document may hold.
    pub max_doc_items: u64,
    /// Most content bytes a document may hold.
    pub max_doc_bytes: u64,
}

impl Default for DocLimits {
    fn default() -> Self {
        DocLimits {
            max_update_items: u64::MAX,
            max_doc_items: u64::MAX,
            max_doc_bytes: u64::MAX,
        }
    }
}

impl DocLimits {
    /// Whether a document holding `totals` may take `update`.
    pub fn admit(&self, totals: UpdateSize, update: UpdateSize) -> Result<(), SizeLimit> {
        if update.items > self.max_update_items {
            return Err(SizeLimit::UpdateItems {
                items: update.items,
                limit: self.max_update_items,
            });
        }
        let after = totals.plus(update);
        if after.items > self.max_doc_items {
            return Err(SizeLimit::DocItems {
                items: after.items,
                limit: self.max_doc_items,
            });
        }
        if after.content_bytes > self.max_doc_bytes {
            return Err(SizeLimit::DocBytes {
                bytes: after.content_bytes,
                limit: self.max_doc_bytes,
            });
        }
        Ok(())
    }
}

impl RoomError {
    /// Short human text (at most 120 bytes), suitable for a WebSocket close reason.
    pub fn reason(&self) -> String {
        truncate_reason(self.to_string())
    }
}

/// What [`Room::apply_updates`] did with a batch.
#[derive(Debug, Default)]
pub struct UpdateBatch {
    /// Merged v1 update of every accepted update (one entry for the update log), `None` if none
    /// was accepted.
    pub log_entry: Option<Vec<u8>>,
    /// Encoded y-websocket sync update message carrying `log_entry`, to send to every connection
    /// of the room (sender included: y-websocket echoes). `None` if none was accepted.
    pub broadcast: Option<Vec<u8>>,
    /// Updates that were refused, with why; the server closes these connections.
    pub rejected: Vec<(ConnId, RoomError)>,
    /// Number of accepted updates.
    pub accepted: usize,
    /// Accepted updates that added nothing to the document (neither logged nor broadcast):
    /// all of the batch's, or none. A batch of several updates, some new, logs and broadcasts
    /// only what the document did not hold yet; a single partly new update is logged and
    /// relayed whole.
    pub redundant: usize,
}

/// One loaded document with its awareness.
#[derive(Debug)]
pub struct Room {
    /// The document; only remote updates are ever applied to it.
    doc: Doc,
    /// Presence of the connected clients.
    awareness: Awareness,
    /// Taint, limits and totals, boxed: every loaded document's task holds its room inline
    /// (see the relay's `an_idle_room_future_stays_small`), and these are touched once per
    /// batch.
    sizing: Box<Sizing>,
}

/// A room's health, its size limits and what it holds in their measure.
#[derive(Debug, Default)]
struct Sizing {
    /// Set once applying an update failed half-way: the in-memory document may differ from
    /// the store and must be reloaded.
    tainted: bool,
    /// The size limits updates are held to.
    limits: DocLimits,
    /// What the document holds, approximately (see the module docs): never below the truth.
    size: UpdateSize,
    /// Whether `size` is exactly the measure of the current state.
    exact: bool,
}

impl Default for Room {
    fn default() -> Self {
        Self::new()
    }
}

impl Room {
    /// An empty room.
    pub fn new() -> Room {
        let options = Options::with_guid_and_client_id(
            Arc::from("aetherflow-room"),
            ClientID::new(RELAY_CLIENT_ID),
        );
        Room {
            doc: Doc::with_options(options),
            awareness: Awareness::new(),
            sizing: Box::new(Sizing {
                exact: true,
                ..Sizing::default()
            }),
        }
    }

    /// Holds later updates to `limits`. What the room already holds stays, even if over them.
    pub fn set_limits(&mut self, limits: DocLimits) {
        self.sizing.limits = limits;
    }

    /// What the document holds, in the measure of the limits (approximate, never below the
    /// truth; see the module docs).
    pub fn size(&self) -> UpdateSize {
        self.sizing.size
    }

    /// Rebuilds a room from its stored snapshot (a v1 update) and the update log entries after
    /// it, each in a yrs transaction of its own: yrs integrates many updates in one
    /// transaction far more slowly (the automerge-paper trace stored as 312 entries: 4.3 s in
    /// one transaction, 0.13 s in one per entry; see `benches/RESULTS.md`).
    pub fn load<'a>(
        snapshot: Option<&[u8]>,
        log: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Room, RoomError> {
        let mut room = Room::new();
        let mut size = UpdateSize::default();
        let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<(), RoomError> {
            if let Some(snapshot) = snapshot {
                size = decode_and_apply(&mut room.doc.transact_mut(), snapshot)
                    .map_err(|e| RoomError::InvalidSnapshot(e.to_string()))?;
            }
            for (index, entry) in log.into_iter().enumerate() {
                let mut txn = room.doc.transact_mut();
                let entry_size =
                    decode_and_apply(&mut txn, entry).map_err(|e| RoomError::InvalidLogEntry {
                        index,
                        reason: e.to_string(),
                    })?;
                size = size.plus(entry_size);
            }
            Ok(())
        }));
        room.sizing.size = size;
        match outcome {
            Ok(Ok(())) => Ok(room),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(RoomError::InvalidSnapshot(
                "document engine panicked".into(),
            )),
        }
    }

    /// Applies a batch of v1 updates, in arrival order, in one yrs transaction.
    ///
    /// Updates that fail [`check_update_v1`] or do not decode are refused and not applied. If integrating a decoded update fails
    /// (or yrs panics on it) that update is refused and the room is marked tainted: its
    /// in-memory document may hold part of it. Later updates of the batch are still applied, and
    /// everything accepted is logged and broadcast, except what the room already held: a batch
    /// that adds nothing (no insertion, no deletion, nothing pending) is neither logged nor
    /// broadcast (see [`UpdateBatch::redundant`]).
    pub fn apply_updates(&mut self, batch: Vec<(ConnId, Vec<u8>)>) -> UpdateBatch {
        let mut result = UpdateBatch::default();
        let batch = self.measure(batch, &mut result.rejected);
        let limits = self.sizing.limits;
        let size_before = self.sizing.size;
        let mut size = size_before;
        let mut accepted: Vec<(ConnId, Vec<u8>)> = Vec::new();
        let mut tainted = false;
        // What the transaction integrated, encoded by yrs itself: exact and cheap. Only valid
        // when nothing is left pending (an update waiting for a missing dependency is in no
        // transaction's diff), so it is taken only then.
        let mut integrated: Option<Vec<u8>> = None;
        let mut redundant = false;
        let committed = catch_unwind(AssertUnwindSafe(|| {
            let mut txn = self.doc.transact_mut();
            let pending_before = txn.has_missing_updates();
            for (conn, bytes, update_size) in batch {
                if let Err(limit) = limits.admit(size, update_size) {
                    result.rejected.push((conn, RoomError::TooLarge(limit)));
                    continue;
                }
                match apply_checked(&mut txn, &bytes) {
                    Ok(()) => {
                        size = size.plus(update_size);
                        accepted.push((conn, bytes));
                    }
                    Err(e) => {
                        tainted |= !matches!(e, RoomError::InvalidUpdate(_));
                        result.rejected.push((conn, e));
                    }
                }
            }
            // An update that integrates nothing new (an echo of what the room holds, as
            // pycrdt's provider sends back every update it applies) leaves the transaction
            // without insertions or deletions. Updates held back for missing dependencies do
            // not show there, so once any are pending the batch counts as new.
            let pending_after = txn.has_missing_updates();
            redundant = !txn.has_changes() && !pending_before && !pending_after;
            if accepted.len() > 1 && !pending_before && !pending_after {
                integrated = Some(txn.encode_update_v1());
            }
            // Dropping the transaction commits it, which runs yrs' cleanup: keep it in here.
            drop(txn);
        }));
        self.sizing.tainted |= tainted || committed.is_err();
        if accepted.is_empty() {
            return result;
        }
        if !redundant {
            self.sizing.size = size;
            self.sizing.exact &= size == size_before;
        }
        let count = accepted.len();
        if redundant {
            // Nothing to store or to show anyone: every client that could see it has it.
            result.accepted = count;
            result.redundant = count;
            return result;
        }
        let entry = match (integrated, count) {
            (Some(update), _) => Some(update),
            // A single update is logged and relayed byte for byte.
            (None, 1) => accepted.pop().map(|(_, bytes)| bytes),
            // Pending updates involved: merging keeps them. yrs' merge is quadratic in the
            // number of updates, so this is the slow path.
            (None, _) => {
                catch_unwind(|| yrs::merge_updates_v1(accepted.iter().map(|(_, b)| b.as_slice())))
                    .ok()
                    .and_then(Result::ok)
            }
        };
        match entry {
            Some(entry) => {
                result.accepted = count;
                if entry != EMPTY_UPDATE {
                    result.broadcast = Some(encode_sync_update(&entry));
                    result.log_entry = Some(entry);
                }
            }
            None => {
                self.sizing.tainted = true;
                let refused = accepted
                    .into_iter()
                    .map(|(c, _)| (c, RoomError::MergeFailed));
                result.rejected.extend(refused);
            }
        }
        result
    }

    /// Measures each update of `batch` (refusing into `rejected` those that fail the check),
    /// drops empty ones (every sync handshake answers step 1 with one when it has nothing to
    /// add), and re-measures the document first if the batch would pass its limits on
    /// approximate totals.
    fn measure(
        &mut self,
        batch: Vec<(ConnId, Vec<u8>)>,
        rejected: &mut Vec<(ConnId, RoomError)>,
    ) -> Vec<(ConnId, Vec<u8>, UpdateSize)> {
        let mut measured = Vec::with_capacity(batch.len());
        let mut total = self.sizing.size;
        for (conn, bytes) in batch {
            if bytes == EMPTY_UPDATE {
                continue;
            }
            match measure_update_v1(&bytes) {
                Ok(size) => {
                    total = total.plus(size);
                    measured.push((conn, bytes, size));
                }
                Err(e) => rejected.push((conn, RoomError::InvalidUpdate(e.to_string()))),
            }
        }
        let limits = self.sizing.limits;
        let over = total.items > limits.max_doc_items || total.content_bytes > limits.max_doc_bytes;
        if over && !self.sizing.exact {
            if let Ok(size) = measure_update_v1(&self.snapshot()) {
                self.sizing.size = size;
            }
            self.sizing.exact = true;
        }
        measured
    }

    /// Answers a sync step 1: the encoded step 2 message with everything the peer lacks given
    /// its encoded state vector.
    ///
    /// Like Yjs' `encodeStateAsUpdate(doc, sv)`, the answer includes updates the room holds but
    /// could not integrate yet (their dependencies are missing), so no peer depends on the room
    /// having a complete history.
    pub fn answer_step1(&self, state_vector: &[u8]) -> Result<Vec<u8>, RoomError> {
        let sv = decode_state_vector(state_vector)?;
        let txn = self.doc.transact();
        let diff = catch_unwind(AssertUnwindSafe(|| txn.encode_state_as_update_v1(&sv)))
            .unwrap_or_else(|_| txn.encode_diff_v1(&sv));
        Ok(encode_sync_step2(&diff))
    }

    /// Messages a new connection receives first, in order: sync step 1 with the room's state
    /// vector, then everyone's awareness if anyone is present (as the y-websocket server does).
    pub fn greeting(&self) -> Vec<Vec<u8>> {
        let mut messages = vec![encode_sync_step1(&self.state_vector())];
        messages.extend(self.query_awareness());
        messages
    }

    /// Applies an awareness update from `conn`; returns the encoded awareness message to
    /// broadcast to every connection, if anything changed.
    pub fn apply_awareness(
        &mut self,
        conn: ConnId,
        update: &[u8],
    ) -> Result<Option<Vec<u8>>, RoomError> {
        let changed = self.awareness.apply(conn, update)?;
        Ok(changed.map(|payload| encode_awareness(&payload)))
    }

    /// The encoded awareness message with every live state, `None` if nobody is present.
    pub fn query_awareness(&self) -> Option<Vec<u8>> {
        self.awareness
            .encode_all()
            .map(|payload| encode_awareness(&payload))
    }

    /// `conn` went away; returns the encoded awareness message removing its clients, if any.
    pub fn disconnect(&mut self, conn: ConnId) -> Option<Vec<u8>> {
        self.awareness
            .disconnect(conn)
            .map(|payload| encode_awareness(&payload))
    }

    /// The full document as one v1 update, for compaction. Includes updates that are held but
    /// not integrated yet (missing dependencies), so nothing is lost when the log is folded.
    pub fn snapshot(&self) -> Vec<u8> {
        let txn = self.doc.transact();
        let empty = StateVector::default();
        catch_unwind(AssertUnwindSafe(|| txn.encode_state_as_update_v1(&empty))).unwrap_or_else(
            |_| {
                // Only reachable through a yrs defect while merging pending updates: fall back
                // to the integrated state rather than failing compaction outright.
                let mut encoder = EncoderV1::new();
                txn.encode_state_as_update(&empty, &mut encoder);
                encoder.to_vec()
            },
        )
    }

    /// The room's encoded state vector.
    pub fn state_vector(&self) -> Vec<u8> {
        self.doc.transact().state_vector().encode_v1()
    }

    /// True once applying an update failed half-way; the server should reload the room.
    pub fn is_tainted(&self) -> bool {
        self.sizing.tainted
    }

    /// The document, for tests and tools.
    pub fn doc(&self) -> &Doc {
        &self.doc
    }

    /// The room's awareness.
    pub fn awareness(&self) -> &Awareness {
        &self.awareness
    }
}

/// The v1 encoding of an update that carries nothing: no client blocks, no deletions.
pub const EMPTY_UPDATE: &[u8] = &[0, 0];

/// Checks, decodes and integrates one v1 update inside `txn`, turning check failures, yrs errors
/// and panics into [`RoomError`]s. Only [`RoomError::InvalidUpdate`] guarantees that nothing was
/// applied.
fn decode_and_apply(txn: &mut TransactionMut<'_>, bytes: &[u8]) -> Result<UpdateSize, RoomError> {
    let size = measure_update_v1(bytes).map_err(|e| RoomError::InvalidUpdate(e.to_string()))?;
    apply_checked(txn, bytes)?;
    Ok(size)
}

/// [`decode_and_apply`] for bytes that already passed [`check_update_v1`].
fn apply_checked(txn: &mut TransactionMut<'_>, bytes: &[u8]) -> Result<(), RoomError> {
    let update = catch_unwind(|| Update::decode_v1(bytes))
        .map_err(|_| RoomError::InvalidUpdate("document engine panicked while decoding".into()))?
        .map_err(|e| RoomError::InvalidUpdate(e.to_string()))?;
    catch_unwind(AssertUnwindSafe(|| txn.apply_update(update)))
        .map_err(|_| RoomError::Panicked)?
        .map_err(|e| RoomError::ApplyFailed(e.to_string()))
}

/// Decodes a state vector after checking its declared entry count against the input, so that a
/// few hostile bytes cannot make yrs reserve a huge hash map.
fn decode_state_vector(bytes: &[u8]) -> Result<StateVector, RoomError> {
    let invalid = |e: String| RoomError::InvalidStateVector(e);
    let mut reader = lib0::Reader::new(bytes);
    let count = reader.read_var_uint().map_err(|e| invalid(e.to_string()))?;
    // Every entry takes at least two bytes (client id and clock).
    if count > (reader.remaining() / 2) as u64 {
        return Err(invalid(format!(
            "declares {count} entries in {} bytes",
            bytes.len()
        )));
    }
    catch_unwind(|| StateVector::decode_v1(bytes))
        .map_err(|_| invalid("document engine panicked".into()))?
        .map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests;
