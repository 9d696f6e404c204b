//! How a document reaches the relay: a [`Transport`] opens a [`Link`] per document.
//!
//! A link is a pair of channels carrying y-protocols [`Message`]s, so the sync logic does not
//! know whether bytes travel as WebSocket frames or as Quantum envelopes. A transport that
//! multiplexes documents over one connection (Quantum) opens one link per document and routes
//! envelopes by their document name.

use std::fmt;

use aetherflow_crdt::protocol::Message;
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use crate::error::TransportError;

/// Which transport carries a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// The y-websocket protocol at `/ws/{doc}`.
    WebSocket,
    /// Envelopes over the Quantum reliable-UDP transport.
    Quantum,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::WebSocket => "websocket",
            TransportKind::Quantum => "quantum",
        })
    }
}

/// One open connection for one document. Dropping `outgoing` closes it; `incoming` ends
/// (returns `None`) when the relay or the network closes it.
#[derive(Debug)]
pub struct Link {
    /// Which transport this link uses.
    pub kind: TransportKind,
    /// Messages to the relay, in order.
    pub outgoing: mpsc::Sender<Message>,
    /// Messages from the relay, in order.
    pub incoming: mpsc::Receiver<Message>,
}

/// What the relay sends a register document's link: the live channel's messages.
#[derive(Debug, Clone, PartialEq)]
pub enum RegisterMessage {
    /// An event: `state` (first, once per link), `result` (the answer to one command, in
    /// order), or a document event (`updated`, `conflict_detected`, `lock_acquired`, ...) with
    /// the relay's JSON.
    Event {
        /// The event's name.
        name: String,
        /// Its JSON (for `result`, the outcome: `{"outcome":"applied",...}`).
        data: serde_json::Value,
    },
    /// A refusal: the answer to one command (4403 read-only, 4423 locked, 4404 not found,
    /// 4409 wrong kind, 4400 bad command, 1011 relay failure), or 4410 when the document was
    /// deleted, which ends the link.
    Error {
        /// The relay's Quantum error code (the live channel's text codes are mapped to it).
        code: u32,
        /// Its text.
        reason: String,
    },
}

/// One open connection for one register document (`lww`, `manual`). The first incoming
/// message is the `state` event. Every command sent is answered, in order, by one `result`
/// event or one error.
#[derive(Debug)]
pub struct RegisterLink {
    /// Which transport this link uses.
    pub kind: TransportKind,
    /// Commands to the relay, in order.
    pub outgoing: mpsc::Sender<aetherflow_crdt::register::Command>,
    /// The relay's events and answers, in order.
    pub incoming: mpsc::Receiver<RegisterMessage>,
}

/// Opens links to the relay.
pub trait Transport: Send + Sync + 'static {
    /// Connects document `doc`. The link is open (the relay accepted it) when this resolves.
    fn connect<'a>(&'a self, doc: &'a str) -> BoxFuture<'a, Result<Link, TransportError>>;

    /// Connects register document `doc`; open once the relay's `state` arrived. Transports
    /// without registers (the default) answer [`TransportError::NotConfigured`], which keeps
    /// the register offline: its writes wait in the local database.
    fn connect_register<'a>(
        &'a self,
        doc: &'a str,
    ) -> BoxFuture<'a, Result<RegisterLink, TransportError>> {
        let _ = doc;
        Box::pin(async { Err(TransportError::NotConfigured) })
    }
}

/// A transport that never connects: the client works offline only.
#[derive(Debug, Clone, Copy, Default)]
pub struct Offline;

impl Transport for Offline {
    fn connect<'a>(&'a self, _doc: &'a str) -> BoxFuture<'a, Result<Link, TransportError>> {
        Box::pin(async { Err(TransportError::NotConfigured) })
    }
}
