//! What every connection is, whichever transport serves it: how the client is connected, where
//! its session is in its life, and why the relay closes it. A leaf: the session registry, the
//! rooms, the transports and the metrics all name these, and it names none of them.

use aetherflow_crdt::code::Code;
use serde::{Deserialize, Serialize};

/// How a client is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// y-websocket over a WebSocket.
    Websocket,
    /// The Quantum reliable-UDP transport for native clients.
    Quantum,
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SessionState {
    /// Accepted, not yet joined to its document.
    Connecting,
    /// Joined and heard from within the last heartbeat interval.
    Active,
    /// Left the last heartbeat unanswered; closed if the next one goes unanswered too.
    Idle,
    /// Closing: the close frame is on its way.
    Disconnecting,
    /// Gone; the session registry lists it a few seconds more.
    Closed,
}

impl SessionState {
    pub(crate) const ALL: [SessionState; 5] = [
        SessionState::Connecting,
        SessionState::Active,
        SessionState::Idle,
        SessionState::Disconnecting,
        SessionState::Closed,
    ];

    pub(crate) fn from_u8(value: u8) -> SessionState {
        Self::ALL
            .get(usize::from(value))
            .copied()
            .unwrap_or(SessionState::Closed)
    }

    pub(crate) fn as_u8(self) -> u8 {
        self as u8
    }
}

/// Why the relay closes a connection: a WebSocket close code and a short reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// RFC 6455 close code.
    pub code: u16,
    /// Human-readable reason (at most 123 bytes on the wire).
    pub reason: String,
}

impl CloseReason {
    /// 1001: the relay is shutting down.
    pub const GOING_AWAY: u16 = Code::GoingAway.as_u16();
    /// 1002: the bytes are not a well-formed y-protocols message.
    pub const PROTOCOL_ERROR: u16 = Code::ProtocolError.as_u16();
    /// 1003: a text frame, where y-websocket sends binary.
    pub const UNSUPPORTED_DATA: u16 = Code::UnsupportedData.as_u16();
    /// 1007: a well-formed message whose payload is invalid (not a Yjs update, bad awareness).
    pub const INVALID_PAYLOAD: u16 = Code::InvalidPayload.as_u16();
    /// 1008: the client broke a policy (message rate limit) or an admin disconnected it.
    pub const POLICY_VIOLATION: u16 = Code::PolicyViolation.as_u16();
    /// 1009: the message is larger than `--max-message-bytes`.
    pub const MESSAGE_TOO_BIG: u16 = Code::MessageTooBig.as_u16();
    /// 1011: the relay could not serve the document (storage failure, reload).
    pub const INTERNAL_ERROR: u16 = Code::InternalError.as_u16();
    /// 1013: the connection fell too far behind; reconnect to resync.
    pub const TRY_AGAIN_LATER: u16 = Code::TryAgainLater.as_u16();
    /// 4401: the session's token expired; reconnect with a fresh one.
    pub const TOKEN_EXPIRED: u16 = Code::Unauthorized.as_u16();
    /// 4410: the document was deleted through the API.
    pub const DOCUMENT_DELETED: u16 = Code::DocumentDeleted.as_u16();

    /// A close reason, with the text cut to fit a close frame.
    pub fn new(code: u16, reason: impl Into<String>) -> CloseReason {
        let mut reason = reason.into();
        if reason.len() > 123 {
            let mut end = 120;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
            reason.push_str("...");
        }
        CloseReason { code, reason }
    }
}
