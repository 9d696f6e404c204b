//! Log entries larger than a NATS message (1 MiB by default, while the relay accepts edits of
//! up to 16 MiB): the bytes go to the object store `{prefix}_snapshots` as `{hex}.entry.{id}`
//! (objects are chunked, so any size), and the log holds a pointer in their place, an empty
//! message whose [`OBJECT_HEADER`] names the object. The object is stored before the pointer
//! is sent, so a pointer always leads to its bytes; an object whose pointer never made it (a
//! relay died in between) is garbage nobody reads. Objects go when their pointers do
//! (thinning, deletion).

use async_nats::HeaderMap;

use super::{JetStreamEngine, failed, key};
use crate::storage::StoreError;
use aetherflow_crdt::DocName;

/// Names the object holding a log entry's bytes.
pub(super) const OBJECT_HEADER: &str = "Aetherflow-Object";

/// Room left in a message for its headers (message id, origin, pointer).
const HEADROOM: usize = 8 * 1024;

/// A log message as stored: its sequence, its payload, and the object it points to, if any.
pub(super) struct RawEntry {
    /// The stream sequence.
    pub seq: u64,
    /// The message's payload (empty for a pointer).
    pub payload: bytes::Bytes,
    /// The object holding the entry's bytes, for a pointer.
    pub object: Option<String>,
}

impl RawEntry {
    /// A log message with `headers` and `payload` at `seq`.
    pub fn new(seq: u64, headers: Option<&HeaderMap>, payload: bytes::Bytes) -> RawEntry {
        let object = headers
            .and_then(|h| h.get(OBJECT_HEADER))
            .map(|name| name.as_str().to_owned());
        RawEntry {
            seq,
            payload,
            object,
        }
    }
}

impl JetStreamEngine {
    /// Whether `update` is too large to travel in one message.
    pub(super) fn too_large_for_a_message(&self, update: &[u8]) -> bool {
        let max_payload = self.inner.js.client().server_info().max_payload;
        update.len() + HEADROOM > max_payload
    }

    /// Stores a large entry of `doc` (message id `id`) as an object; its name.
    pub(super) async fn put_large(
        &self,
        doc: &DocName,
        id: &str,
        update: &[u8],
    ) -> Result<String, StoreError> {
        let name = format!("{}.entry.{id}", key(doc));
        let mut reader = update;
        self.inner
            .snapshots
            .put(name.as_str(), &mut reader)
            .await
            .map_err(failed)?;
        Ok(name)
    }

    /// The entry's bytes: its payload, or the object its pointer names.
    pub(super) async fn bytes_of(&self, entry: RawEntry) -> Result<Vec<u8>, StoreError> {
        match entry.object {
            Some(object) => self.read_object(&object).await,
            None => Ok(entry.payload.to_vec()),
        }
    }

    /// Deletes the objects of pointers that were purged (best effort: an object left behind
    /// is garbage nobody reads).
    pub(super) async fn drop_objects(&self, purged: impl IntoIterator<Item = RawEntry>) {
        for object in purged.into_iter().filter_map(|entry| entry.object) {
            if let Err(e) = self.inner.snapshots.delete(&object).await {
                tracing::debug!(error = %e, "a purged entry's object stays behind");
            }
        }
    }
}
