//! The codes of the wire, typed once for the relay, the SDK and the tests: WebSocket close codes
//! (RFC 6455's 1xxx and AetherFlow's 4xxx) and the `code` of error envelopes (Quantum, SDK
//! peers) and `/live` errors, which use the same numbers. AetherFlow's 44xx codes mirror the
//! HTTP status of the same refusal (4404: not found, 4423: locked).
//!
//! ```
//! use aetherflow_crdt::code::Code;
//!
//! assert_eq!(Code::Locked.as_u32(), 4423);
//! assert_eq!(Code::from_u32(4410), Some(Code::DocumentDeleted));
//! assert_eq!(Code::from_u32(4999), None);
//! ```

/// A close or error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Code {
    /// 1001: the relay (or peer) is shutting down.
    GoingAway = 1001,
    /// 1002: the bytes are not a well-formed message.
    ProtocolError = 1002,
    /// 1003: a text frame where binary is spoken, or the other way round.
    UnsupportedData = 1003,
    /// 1007: a well-formed message whose payload is invalid (not a Yjs update, bad awareness).
    InvalidPayload = 1007,
    /// 1008: a policy was broken (message rate, presence limits) or an admin disconnected it.
    PolicyViolation = 1008,
    /// 1009: the message is larger than the relay accepts.
    MessageTooBig = 1009,
    /// 1011: the relay could not serve the document (storage failure, damaged data).
    InternalError = 1011,
    /// 1013: try again later: the connection fell behind, or the storage cannot be written.
    TryAgainLater = 1013,
    /// 4400: protocol misuse (no hello first, a message for a document not subscribed, a
    /// command that is not acceptable).
    BadRequest = 4400,
    /// 4401: no token, or one that does not verify or has expired.
    Unauthorized = 4401,
    /// 4403: the token does not allow this (read-only, another document, another author).
    Forbidden = 4403,
    /// 4404: no such document or conflict.
    NotFound = 4404,
    /// 4409: the operation does not fit the document's kind.
    WrongKind = 4409,
    /// 4410: the document was deleted.
    DocumentDeleted = 4410,
    /// 4413: the connection holds as many documents as the relay allows.
    TooManyDocuments = 4413,
    /// 4422: an LWW stamp too far ahead of the relay's clock.
    ClockAhead = 4422,
    /// 4423: the document is locked by someone else.
    Locked = 4423,
    /// 4429: over the per-address connection rate.
    ConnectionRate = 4429,
    /// 4501: not served here (an SDK peer does not serve register operations).
    NotSupported = 4501,
}

impl Code {
    /// Every code, in numeric order.
    pub const ALL: [Code; 19] = [
        Code::GoingAway,
        Code::ProtocolError,
        Code::UnsupportedData,
        Code::InvalidPayload,
        Code::PolicyViolation,
        Code::MessageTooBig,
        Code::InternalError,
        Code::TryAgainLater,
        Code::BadRequest,
        Code::Unauthorized,
        Code::Forbidden,
        Code::NotFound,
        Code::WrongKind,
        Code::DocumentDeleted,
        Code::TooManyDocuments,
        Code::ClockAhead,
        Code::Locked,
        Code::ConnectionRate,
        Code::NotSupported,
    ];

    /// As a WebSocket close code.
    pub const fn as_u16(self) -> u16 {
        self as u16
    }

    /// As the `code` of an error envelope.
    pub const fn as_u32(self) -> u32 {
        self as u16 as u32
    }

    /// The code numbered `code`, if it is one of ours.
    pub fn from_u32(code: u32) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.as_u32() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_all_is_complete_and_ordered() {
        for code in Code::ALL {
            assert_eq!(Code::from_u32(code.as_u32()), Some(code));
        }
        assert!(Code::ALL.windows(2).all(|w| w[0].as_u16() < w[1].as_u16()));
    }
}
