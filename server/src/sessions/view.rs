//! What the registry shows of a session: its transport and state, an admin's view of it, the
//! listing's filter and pages, and why a disconnect was refused.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

pub use crate::connection::{SessionState, Transport};
use uuid::Uuid;

/// A snapshot of one session, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionView {
    /// UUIDv7: sorts by creation time.
    pub id: Uuid,
    /// Token subject, or `anonymous` when the relay runs open.
    pub user: String,
    /// How the client is connected.
    pub transport: Transport,
    /// The client's address: the TCP peer's, or behind a trusted proxy the forwarded one
    /// (port 0 when the proxy gave none).
    pub remote_addr: SocketAddr,
    /// Documents the session is on.
    pub documents: Vec<String>,
    /// Where the session is in its life.
    pub state: SessionState,
    /// When it connected, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// When the client last sent anything (a pong counts), milliseconds since the Unix epoch.
    pub last_active_ms: u64,
    /// Payload bytes received from the client.
    pub bytes_in: u64,
    /// Payload bytes sent to the client.
    pub bytes_out: u64,
    /// Data messages received from the client.
    pub messages_in: u64,
    /// Data messages sent to the client.
    pub messages_out: u64,
    /// How the session ended, once it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close: Option<CloseView>,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CloseView {
    /// The close code sent, if a close frame went out.
    pub code: Option<u16>,
    /// The reason sent with it.
    pub reason: Option<String>,
    /// When, milliseconds since the Unix epoch.
    pub closed_ms: u64,
}

/// Which sessions a listing wants; `None` fields match everything.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Filter {
    /// Exact user.
    pub user: Option<String>,
    /// Sessions on this document.
    pub document: Option<String>,
    /// This transport.
    pub transport: Option<Transport>,
    /// This state.
    pub state: Option<SessionState>,
}

/// One page of a listing.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// Up to the requested number of sessions, oldest first.
    pub sessions: Vec<SessionView>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<Uuid>,
}

/// Why an admin's disconnect did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DisconnectError {
    /// No session with this id (or it closed longer than [`CLOSED_GRACE`](super::CLOSED_GRACE) ago).
    #[error("no session {0}")]
    NotFound(Uuid),
    /// The session is already closing or closed.
    #[error("session {0} is already closing or closed")]
    AlreadyClosing(Uuid),
}
