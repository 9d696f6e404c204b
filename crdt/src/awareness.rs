//! Per-room awareness (presence) state, following y-protocols `awareness.js` and the y-websocket
//! server.
//!
//! An awareness update payload is `varuint count` then `count` × (`varuint clientID`,
//! `varuint clock`, `varstring stateJSON`); a removed client's state is the JSON `null`.
//!
//! Rules, as in `applyAwarenessUpdate`: an entry replaces the stored one if its clock is higher
//! (a client the room does not know counts as clock 0, so a new client's first state, the
//! empty state y-protocols sets at clock 0, is not news), or if the clocks are equal and it
//! removes a live state. Every accepted entry is broadcast, even when only the clock moved
//! (y-websocket forwards `update` events, which count clock renewals).
//!
//! Two rules of the relay's own keep one connection from hurting the rest:
//! - **Ownership.** A client id belongs to the connection that introduced it until it is
//!   removed; entries about it from any other connection are ignored. (Stock y-websocket
//!   providers send back every awareness change they receive, and a provider that thinks a
//!   remote client timed out sends its removal: neither may change someone else's presence.)
//! - **Limits.** A connection holds at most [`MAX_CLIENTS_PER_CONNECTION`] client ids and
//!   [`MAX_BYTES_PER_CONNECTION`] bytes of state, a room at most [`MAX_CLIENTS_PER_ROOM`] and
//!   [`MAX_BYTES_PER_ROOM`]. An update that would pass one is refused whole.
//!
//! Removed clients are forgotten rather than kept as tombstones: memory stays bounded by the live
//! clients, and a client that reconnects with its old clock is visible again at once. The cost is
//! that a stale re-add that arrives after a removal is accepted; over ordered WebSocket
//! connections this only happens when a client really comes back.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::ConnId;
use crate::lib0::{Reader, write_var_string, write_var_uint};
use crate::protocol::{DecodeError, truncate_reason};

/// Most entries accepted in one awareness update.
pub const MAX_ENTRIES_PER_UPDATE: u64 = 10_000;
/// Largest accepted state JSON, in bytes.
pub const MAX_STATE_BYTES: usize = 1024 * 1024;
/// Most client ids one connection may have live at once (a provider has one per document).
pub const MAX_CLIENTS_PER_CONNECTION: usize = 16;
/// Most state bytes one connection may have live at once.
pub const MAX_BYTES_PER_CONNECTION: usize = MAX_STATE_BYTES;
/// Most live clients in one room.
pub const MAX_CLIENTS_PER_ROOM: usize = 10_000;
/// Most state bytes live in one room.
pub const MAX_BYTES_PER_ROOM: usize = 32 * 1024 * 1024;

/// Why an awareness update was refused. Nothing of a refused update is applied.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AwarenessError {
    /// The payload is not a well-formed awareness update.
    #[error("malformed awareness update: {0}")]
    Decode(#[from] DecodeError),
    /// The update declares more than [`MAX_ENTRIES_PER_UPDATE`] entries.
    #[error("awareness update has {count} entries, the limit is {limit}")]
    TooManyEntries {
        /// Declared number of entries.
        count: u64,
        /// The limit.
        limit: u64,
    },
    /// A state is larger than [`MAX_STATE_BYTES`].
    #[error("awareness state of client {client} is {size} bytes, the limit is {limit}")]
    StateTooLarge {
        /// The client whose state is too large.
        client: u64,
        /// Size of the state JSON.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A state is not valid JSON (browsers would throw on `JSON.parse`).
    #[error("awareness state of client {client} is not valid JSON")]
    InvalidState {
        /// The client whose state is invalid.
        client: u64,
    },
    /// Applying the update would pass a presence limit of the connection or of the room.
    #[error("presence limit: {what} would be {value}, the limit is {limit}")]
    OverLimit {
        /// Which limit, e.g. "this connection's clients".
        what: &'static str,
        /// What it would have been.
        value: usize,
        /// The limit.
        limit: usize,
    },
}

impl AwarenessError {
    /// Short human text (at most 120 bytes), suitable for a WebSocket close reason.
    pub fn reason(&self) -> String {
        truncate_reason(self.to_string())
    }

    /// Whether the update was well-formed but over a presence limit (a policy refusal, not
    /// bad bytes).
    pub fn is_limit(&self) -> bool {
        matches!(self, AwarenessError::OverLimit { .. })
    }
}

/// One decoded entry of an awareness update.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    client: u64,
    clock: u64,
    /// `None` for the JSON `null` (client removed).
    state: Option<String>,
}

/// A live client's stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ClientState {
    clock: u64,
    json: String,
    /// The connection that introduced the client; only it may change the state.
    owner: ConnId,
}

/// The awareness of one room: every live client's state, and which connection controls which
/// clients (so that their states can be removed when the connection goes away).
#[derive(Debug, Default, Clone)]
pub struct Awareness {
    /// Live clients by client id.
    states: BTreeMap<u64, ClientState>,
    /// Client ids each connection has live.
    controlled: HashMap<ConnId, BTreeSet<u64>>,
    /// Sum of the live states' JSON lengths.
    bytes: usize,
}

impl Awareness {
    /// An awareness with no clients.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies an awareness update received from `conn`; returns the awareness update payload to
    /// broadcast (re-encoded from the entries that changed: added, updated or removed), or `None`
    /// if nothing changed. A malformed update, or one that would pass a presence limit, is
    /// refused as a whole.
    pub fn apply(
        &mut self,
        conn: ConnId,
        update: &[u8],
    ) -> Result<Option<Vec<u8>>, AwarenessError> {
        let entries = decode_update(update)?;
        // What the update changes, by client: the new state (`None`: removed) and its clock.
        let mut changed: BTreeMap<u64, (u64, Option<String>)> = BTreeMap::new();
        for entry in entries {
            let current = match changed.get(&entry.client) {
                Some((clock, Some(_))) => Some((*clock, conn)),
                Some((_, None)) => None,
                None => self.states.get(&entry.client).map(|s| (s.clock, s.owner)),
            };
            if accepts(current, conn, &entry) {
                changed.insert(entry.client, (entry.clock, entry.state));
            }
        }
        self.check_limits(conn, &changed)?;
        for (&client, (clock, state)) in &changed {
            self.set(conn, client, *clock, state.clone());
        }
        Ok(encode_entries(&changed))
    }

    /// Refuses `changed` from `conn` if it would pass a limit.
    fn check_limits(
        &self,
        conn: ConnId,
        changed: &BTreeMap<u64, (u64, Option<String>)>,
    ) -> Result<(), AwarenessError> {
        let (mut room_clients, mut room_bytes) = (self.states.len(), self.bytes);
        let owned = self.controlled.get(&conn);
        let mut conn_clients = owned.map_or(0, BTreeSet::len);
        let mut conn_bytes: usize = owned
            .into_iter()
            .flatten()
            .filter_map(|id| self.states.get(id))
            .map(|s| s.json.len())
            .sum();
        for (client, (_, state)) in changed {
            if let Some(old) = self.states.get(client) {
                room_clients -= 1;
                conn_clients -= 1;
                room_bytes -= old.json.len();
                conn_bytes -= old.json.len();
            }
            if let Some(json) = state {
                room_clients += 1;
                conn_clients += 1;
                room_bytes += json.len();
                conn_bytes += json.len();
            }
        }
        let limits = [
            (
                "this connection's clients",
                conn_clients,
                MAX_CLIENTS_PER_CONNECTION,
            ),
            (
                "this connection's state bytes",
                conn_bytes,
                MAX_BYTES_PER_CONNECTION,
            ),
            ("the document's clients", room_clients, MAX_CLIENTS_PER_ROOM),
            ("the document's state bytes", room_bytes, MAX_BYTES_PER_ROOM),
        ];
        for (what, value, limit) in limits {
            // Only growth is refused: a connection may always shrink or remove its presence.
            if value > limit && !changed.values().all(|(_, state)| state.is_none()) {
                return Err(AwarenessError::OverLimit { what, value, limit });
            }
        }
        Ok(())
    }

    /// Stores (or, for `None`, removes) `client`'s state on behalf of `conn`, its owner.
    fn set(&mut self, conn: ConnId, client: u64, clock: u64, state: Option<String>) {
        if let Some(old) = self.states.remove(&client) {
            self.bytes -= old.json.len();
        }
        match state {
            Some(json) => {
                self.bytes += json.len();
                self.controlled.entry(conn).or_default().insert(client);
                let owner = conn;
                self.states
                    .insert(client, ClientState { clock, json, owner });
            }
            None => {
                if let Some(set) = self.controlled.get_mut(&conn) {
                    set.remove(&client);
                    if set.is_empty() {
                        self.controlled.remove(&conn);
                    }
                }
            }
        }
    }

    /// The connection went away: every client it controlled is removed (clock + 1, state `null`)
    /// and forgotten. Returns the update payload to broadcast, if any client was still live.
    pub fn disconnect(&mut self, conn: ConnId) -> Option<Vec<u8>> {
        let ids = self.controlled.remove(&conn)?;
        let mut changed = BTreeMap::new();
        for id in ids {
            if let Some(state) = self.states.remove(&id) {
                self.bytes -= state.json.len();
                changed.insert(id, (state.clock.saturating_add(1), None));
            }
        }
        encode_entries(&changed)
    }

    /// All live states as one update payload (for a new connection or a query), `None` if there
    /// are none.
    pub fn encode_all(&self) -> Option<Vec<u8>> {
        if self.states.is_empty() {
            return None;
        }
        let mut buf = Vec::new();
        write_var_uint(&mut buf, self.states.len() as u64);
        for (&client, state) in &self.states {
            write_entry(&mut buf, client, state.clock, Some(&state.json));
        }
        Some(buf)
    }

    /// The live states `conn` controls as one update payload, `None` if it has none (for
    /// another relay asking which clients this relay's connections stand for).
    pub fn encode_controlled(&self, conn: ConnId) -> Option<Vec<u8>> {
        let clients = self.controlled.get(&conn)?;
        let live: Vec<(u64, &ClientState)> = clients
            .iter()
            .filter_map(|client| self.states.get(client).map(|state| (*client, state)))
            .collect();
        if live.is_empty() {
            return None;
        }
        let mut buf = Vec::new();
        write_var_uint(&mut buf, live.len() as u64);
        for (client, state) in live {
            write_entry(&mut buf, client, state.clock, Some(&state.json));
        }
        Some(buf)
    }

    /// Number of live clients.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// True if no client is live.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Bytes of live state held (the JSON of every live client).
    pub fn state_bytes(&self) -> usize {
        self.bytes
    }
}

/// Whether `entry` from `conn` changes a client whose current clock and owner are `current`
/// (`None`: not live), by the y-protocols clock rule and the ownership rule.
fn accepts(current: Option<(u64, ConnId)>, conn: ConnId, entry: &Entry) -> bool {
    match (current, &entry.state) {
        // Unknown (or already removed) client: a removal changes nothing, and a state is news
        // only past clock 0 (what y-protocols counts for a client it has not seen).
        (None, None) => false,
        (None, Some(_)) => entry.clock > 0,
        (Some((_, owner)), _) if owner != conn => false,
        (Some((clock, _)), state) => {
            entry.clock > clock || (entry.clock == clock && state.is_none())
        }
    }
}

/// Decodes and validates a whole update before anything is applied.
fn decode_update(update: &[u8]) -> Result<Vec<Entry>, AwarenessError> {
    let mut r = Reader::new(update);
    let count = r.read_var_uint()?;
    if count > MAX_ENTRIES_PER_UPDATE {
        return Err(AwarenessError::TooManyEntries {
            count,
            limit: MAX_ENTRIES_PER_UPDATE,
        });
    }
    // Each entry takes at least three bytes, so `count` is bounded by the input here.
    let mut entries = Vec::with_capacity((count as usize).min(r.remaining() / 3));
    for _ in 0..count {
        let client = r.read_var_uint()?;
        let clock = r.read_var_uint()?;
        let json = r.read_var_string()?;
        if json.len() > MAX_STATE_BYTES {
            return Err(AwarenessError::StateTooLarge {
                client,
                size: json.len(),
                limit: MAX_STATE_BYTES,
            });
        }
        // `Option` tells `null` apart from every other valid JSON value.
        let parsed = serde_json::from_str::<Option<serde::de::IgnoredAny>>(json)
            .map_err(|_| AwarenessError::InvalidState { client })?;
        entries.push(Entry {
            client,
            clock,
            state: parsed.map(|_| json.to_owned()),
        });
    }
    r.finish()?;
    Ok(entries)
}

fn write_entry(buf: &mut Vec<u8>, client: u64, clock: u64, json: Option<&str>) {
    write_var_uint(buf, client);
    write_var_uint(buf, clock);
    write_var_string(buf, json.unwrap_or("null"));
}

/// Encodes an awareness update payload from `(client id, clock, state JSON)` entries, as
/// y-protocols' `encodeAwarenessUpdate` does (a removal's state is `"null"`). For clients and
/// tools that build presence by hand.
///
/// ```
/// use aetherflow_crdt::awareness::encode_update;
///
/// assert_eq!(encode_update(&[(1, 2, "{}")]), [1, 1, 2, 2, b'{', b'}']);
/// ```
pub fn encode_update(entries: &[(u64, u64, &str)]) -> Vec<u8> {
    let mut buf = Vec::new();
    write_var_uint(&mut buf, entries.len() as u64);
    for &(client, clock, json) in entries {
        write_entry(&mut buf, client, clock, Some(json));
    }
    buf
}

fn encode_entries(changed: &BTreeMap<u64, (u64, Option<String>)>) -> Option<Vec<u8>> {
    if changed.is_empty() {
        return None;
    }
    let mut buf = Vec::new();
    write_var_uint(&mut buf, changed.len() as u64);
    for (&client, (clock, json)) in changed {
        write_entry(&mut buf, client, *clock, json.as_deref());
    }
    Some(buf)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: ConnId = ConnId(1);
    const B: ConnId = ConnId(2);

    fn update(entries: &[(u64, u64, &str)]) -> Vec<u8> {
        encode_update(entries)
    }

    #[test]
    fn payload_matches_y_protocols_bytes() {
        // encodeAwarenessUpdate for client 1, clock 2, state {}.
        assert_eq!(update(&[(1, 2, "{}")]), [1, 1, 2, 2, b'{', b'}']);
    }

    #[test]
    fn add_then_update_then_stale_is_ignored() {
        let mut aw = Awareness::new();
        let add = update(&[(7, 1, r#"{"user":"ann"}"#)]);
        assert_eq!(aw.apply(A, &add).unwrap(), Some(add.clone()));
        assert_eq!(aw.len(), 1);
        // Same clock, non-null state: not newer, ignored.
        assert_eq!(
            aw.apply(A, &update(&[(7, 1, r#"{"user":"bob"}"#)]))
                .unwrap(),
            None
        );
        // Older clock: ignored.
        assert_eq!(aw.apply(A, &update(&[(7, 0, "{}")])).unwrap(), None);
        // Clock renewal with the same state is still broadcast.
        let renew = update(&[(7, 2, r#"{"user":"ann"}"#)]);
        assert_eq!(aw.apply(A, &renew).unwrap(), Some(renew.clone()));
        assert_eq!(aw.encode_all(), Some(renew));
    }

    #[test]
    fn null_with_equal_clock_removes_live_state() {
        let mut aw = Awareness::new();
        aw.apply(A, &update(&[(7, 3, "{}")])).unwrap();
        let remove = update(&[(7, 3, "null")]);
        assert_eq!(aw.apply(A, &remove).unwrap(), Some(remove.clone()));
        assert!(aw.is_empty());
        assert_eq!(aw.encode_all(), None);
        // Removing an unknown client changes nothing.
        assert_eq!(aw.apply(A, &update(&[(8, 1, "null")])).unwrap(), None);
        // A removed client's id is no longer controlled: disconnect broadcasts nothing.
        assert_eq!(aw.disconnect(A), None);
    }

    #[test]
    fn disconnect_removes_controlled_clients_only() {
        let mut aw = Awareness::new();
        aw.apply(A, &update(&[(1, 5, "{}"), (2, 1, "{}")])).unwrap();
        aw.apply(B, &update(&[(3, 9, "{}")])).unwrap();
        let expected = update(&[(1, 6, "null"), (2, 2, "null")]);
        assert_eq!(aw.disconnect(A), Some(expected));
        assert_eq!(aw.len(), 1);
        assert_eq!(aw.disconnect(A), None);
        assert_eq!(aw.encode_all(), Some(update(&[(3, 9, "{}")])));
    }

    #[test]
    fn a_connections_controlled_states_are_encoded_without_the_others() {
        let mut aw = Awareness::new();
        aw.apply(A, &update(&[(1, 5, "{\"a\":1}"), (2, 1, "{}")]))
            .unwrap();
        aw.apply(B, &update(&[(3, 9, "{}")])).unwrap();
        aw.apply(A, &update(&[(2, 2, "null")])).unwrap();
        assert_eq!(
            aw.encode_controlled(A),
            Some(update(&[(1, 5, "{\"a\":1}")]))
        );
        assert_eq!(aw.encode_controlled(B), Some(update(&[(3, 9, "{}")])));
        assert_eq!(aw.encode_controlled(ConnId(9)), None);
    }

    #[test]
    fn duplicate_ids_in_one_update_broadcast_the_final_state() {
        let mut aw = Awareness::new();
        let out = aw.apply(A, &update(&[(1, 1, "1"), (1, 2, "2")])).unwrap();
        assert_eq!(out, Some(update(&[(1, 2, "2")])));
    }

    #[test]
    fn invalid_updates_are_refused_whole() {
        let mut aw = Awareness::new();
        let bad = update(&[(1, 1, "{}"), (2, 1, "{not json")]);
        assert_eq!(
            aw.apply(A, &bad),
            Err(AwarenessError::InvalidState { client: 2 })
        );
        assert!(aw.is_empty());
        let mut many = Vec::new();
        write_var_uint(&mut many, MAX_ENTRIES_PER_UPDATE + 1);
        assert!(matches!(
            aw.apply(A, &many),
            Err(AwarenessError::TooManyEntries { .. })
        ));
        let big = format!("\"{}\"", "x".repeat(MAX_STATE_BYTES));
        assert!(matches!(
            aw.apply(A, &update(&[(1, 1, &big)])),
            Err(AwarenessError::StateTooLarge { client: 1, .. })
        ));
        let mut trailing = update(&[(1, 1, "{}")]);
        trailing.push(0);
        assert_eq!(
            aw.apply(A, &trailing),
            Err(AwarenessError::Decode(DecodeError::TrailingBytes(1)))
        );
        assert!(aw.apply(A, &[]).is_err());
        assert!(aw.apply(A, &[1, 1, 1, 5, b'{']).is_err());
        assert!(aw.is_empty());
        assert!(
            AwarenessError::InvalidState { client: u64::MAX }
                .reason()
                .len()
                <= 120
        );
    }

    #[test]
    fn a_new_clients_clock_zero_state_and_its_departure_are_not_news() {
        // y-protocols' Awareness sets `{}` at clock 0 when it is created; a peer that has not
        // seen the client counts it at clock 0, so neither that state nor its removal is news.
        let mut aw = Awareness::new();
        assert_eq!(aw.apply(A, &update(&[(7, 0, "{}")])).unwrap(), None);
        assert!(aw.is_empty());
        let leave = update(&[(7, 1, "null")]);
        assert_eq!(aw.apply(A, &leave).unwrap(), None);
        assert_eq!(aw.disconnect(A), None);
        // The first real state (clock 1) is.
        let named = update(&[(7, 1, r#"{"user":"ann"}"#)]);
        assert_eq!(aw.apply(A, &named).unwrap(), Some(named));
    }

    #[test]
    fn only_the_connection_that_introduced_a_client_may_change_it() {
        let mut aw = Awareness::new();
        let ann = update(&[(7, 1, r#"{"user":"ann"}"#)]);
        aw.apply(A, &ann).unwrap();
        // Another connection's overwrite, removal or echo changes nothing.
        assert_eq!(
            aw.apply(B, &update(&[(7, 9, r#"{"user":"eve"}"#)]))
                .unwrap(),
            None
        );
        assert_eq!(aw.apply(B, &update(&[(7, 1, "null")])).unwrap(), None);
        assert_eq!(aw.apply(B, &update(&[(7, 2, "null")])).unwrap(), None);
        assert_eq!(aw.apply(B, &ann).unwrap(), None);
        assert_eq!(aw.encode_all(), Some(ann));
        assert_eq!(aw.disconnect(B), None);
        // Once its owner is gone, the id is free again.
        assert!(aw.disconnect(A).is_some());
        assert!(aw.apply(B, &update(&[(7, 3, "{}")])).unwrap().is_some());
    }

    #[test]
    fn a_connection_cannot_hold_more_presence_than_its_limits() {
        let mut aw = Awareness::new();
        let ids: Vec<_> = (1..=MAX_CLIENTS_PER_CONNECTION as u64)
            .map(|id| (id, 1, "{}"))
            .collect();
        aw.apply(A, &update(&ids)).unwrap();
        let one_more = update(&[(99, 1, "{}")]);
        assert!(matches!(
            aw.apply(A, &one_more),
            Err(AwarenessError::OverLimit {
                what: "this connection's clients",
                ..
            })
        ));
        assert_eq!(aw.len(), MAX_CLIENTS_PER_CONNECTION);
        // Another connection is not affected by A's limit.
        assert!(aw.apply(B, &one_more).unwrap().is_some());
        // Bytes: two states of 600 KiB each pass the per-connection bound.
        let half = format!("\"{}\"", "x".repeat(600 * 1024));
        let mut c = Awareness::new();
        c.apply(A, &update(&[(1, 1, &half)])).unwrap();
        let err = c.apply(A, &update(&[(2, 1, &half)])).unwrap_err();
        assert!(err.is_limit(), "{err}");
        assert_eq!(c.state_bytes(), half.len());
        // Shrinking or leaving is always allowed.
        assert!(c.apply(A, &update(&[(1, 2, "{}")])).unwrap().is_some());
        assert_eq!(c.state_bytes(), 2);
    }

    #[test]
    fn a_room_cannot_hold_more_presence_than_its_limits() {
        let mut aw = Awareness::new();
        let big = format!("\"{}\"", "x".repeat(MAX_BYTES_PER_CONNECTION - 2));
        let per_room = MAX_BYTES_PER_ROOM / big.len();
        for conn in 0..per_room as u64 {
            aw.apply(ConnId(conn), &update(&[(conn + 1, 1, &big)]))
                .unwrap();
        }
        let err = aw
            .apply(ConnId(1_000_000), &update(&[(1_000_000, 1, &big)]))
            .unwrap_err();
        assert!(
            matches!(
                err,
                AwarenessError::OverLimit {
                    what: "the document's state bytes",
                    ..
                }
            ),
            "{err}"
        );
        assert!(aw.state_bytes() <= MAX_BYTES_PER_ROOM);
        // Once someone leaves there is room again.
        aw.disconnect(ConnId(0));
        assert!(
            aw.apply(ConnId(1_000_000), &update(&[(1_000_000, 1, &big)]))
                .is_ok()
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut aw = Awareness::new();
            let _ = aw.apply(A, &bytes);
            let _ = aw.disconnect(A);
        }

        #[test]
        fn applying_a_broadcast_elsewhere_reproduces_the_state(
            ops in proptest::collection::vec((0u64..4, 0u64..6, prop::bool::ANY), 0..20)
        ) {
            // A second awareness fed only the broadcasts ends with the same live states.
            let mut relay = Awareness::new();
            let mut mirror = Awareness::new();
            for (client, clock, live) in ops {
                let json = if live { "{}" } else { "null" };
                if let Some(out) = relay.apply(A, &update(&[(client, clock, json)])).unwrap() {
                    mirror.apply(B, &out).unwrap();
                }
            }
            if let Some(out) = relay.disconnect(A) {
                mirror.apply(B, &out).unwrap();
            }
            prop_assert_eq!(relay.encode_all(), mirror.encode_all());
        }
    }
}
