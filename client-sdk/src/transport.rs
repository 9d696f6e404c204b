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

/// Opens links to the relay.
pub trait Transport: Send + Sync + 'static {
    /// Connects document `doc`. The link is open (the relay accepted it) when this resolves.
    fn connect<'a>(&'a self, doc: &'a str) -> BoxFuture<'a, Result<Link, TransportError>>;
}

/// A transport that never connects: the client works offline only.
#[derive(Debug, Clone, Copy, Default)]
pub struct Offline;

impl Transport for Offline {
    fn connect<'a>(&'a self, _doc: &'a str) -> BoxFuture<'a, Result<Link, TransportError>> {
        Box::pin(async { Err(TransportError::NotConfigured) })
    }
}
