//! Presence (awareness) shared between the relays of a cluster: each relay publishes the
//! awareness updates its own connections send, and applies those of the others as if they
//! came from connections of its own (one per remote connection), so presence crosses relays
//! with the y-protocols rules intact. When a relay stops being heard from, the connections it
//! stood for are gone, and their states are removed everywhere.
//!
//! [`Presence`] is the interface; cluster mode implements it on NATS
//! (`jetstream/presence.rs`). A single relay has none.

use std::pin::Pin;

use aetherflow_crdt::{ConnId, DocName};

use crate::storage::Pending;

/// What another relay's connections did to a document's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceEvent {
    /// An awareness update, sent by `origin` (another relay's connection, given an id that
    /// no connection of this relay has).
    Update {
        /// The connection it came from.
        origin: ConnId,
        /// The y-protocols awareness update.
        payload: Vec<u8>,
    },
    /// These connections are gone: their relay stopped being heard from.
    Gone {
        /// The connections.
        origins: Vec<ConnId>,
    },
    /// Another relay just loaded the document and asks for everyone's presence: this relay
    /// publishes the states its own connections control again.
    Asked,
}

/// A document's presence events from other relays.
pub type PresenceFeed = Pin<Box<dyn futures_util::Stream<Item = PresenceEvent> + Send>>;

/// Presence shared with the other relays.
pub trait Presence: Send + Sync {
    /// Tells the other relays about an awareness update from this relay's connection `conn`
    /// on `doc`. Best effort: presence is ephemeral, and clients renew it.
    fn publish(&self, doc: &DocName, conn: ConnId, payload: Vec<u8>);

    /// The presence events of `doc` from other relays, from now on; the other relays are
    /// asked for the states their connections control, which arrive as updates.
    fn follow(&self, doc: DocName) -> Pending<'_, PresenceFeed>;
}

/// The first id of connections that stand for another relay's: above every id this relay
/// gives its own connections, below the ids rooms use for HTTP writers.
pub const REMOTE_CONN_BASE: u64 = 1 << 62;

/// The id standing for connection `conn` of the relay `relay` (any stable name).
pub fn remote_conn(relay: &str, conn: u64) -> ConnId {
    // FNV-1a: stable across processes (the std hasher is randomised).
    let hash = relay.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    ConnId(REMOTE_CONN_BASE | ((hash & 0xFF_FFFF) << 32) | (conn & 0xFFFF_FFFF))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_ids_are_stable_distinct_and_apart_from_local_and_http_ones() {
        let a = remote_conn("relay-a", 7);
        assert_eq!(a, remote_conn("relay-a", 7));
        assert_ne!(a, remote_conn("relay-b", 7));
        assert_ne!(a, remote_conn("relay-a", 8));
        assert!(a.0 >= REMOTE_CONN_BASE && a.0 < u64::MAX - 100_000);
    }
}
