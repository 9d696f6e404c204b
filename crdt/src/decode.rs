//! Why bytes from a peer do not decode as a y-protocols message: the one error of the codecs
//! (`lib0`'s readers, `protocol`, `awareness`), below all of them.

/// Longest close reason we produce: WebSocket close frames allow 123 bytes of reason.
const MAX_REASON_BYTES: usize = 120;

/// Why a frame is not a valid y-websocket message.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame holds no bytes at all.
    #[error("empty message")]
    Empty,
    /// A value or declared length runs past the end of the frame.
    #[error("message truncated: needed {needed} bytes, {available} available")]
    Truncated {
        /// Bytes the value claimed to need.
        needed: u64,
        /// Bytes that were left in the frame.
        available: u64,
    },
    /// A varuint is longer than 10 bytes or does not fit in a u64.
    #[error("variable-length integer overflows u64")]
    VarIntOverflow,
    /// The message type is none of sync, awareness, auth, query awareness.
    #[error("unknown message type {0}")]
    UnknownMessageType(u64),
    /// The sync sub-type is none of step 1, step 2, update.
    #[error("unknown sync message type {0}")]
    UnknownSyncType(u64),
    /// The auth sub-type is not permission denied.
    #[error("unknown auth message type {0}")]
    UnknownAuthType(u64),
    /// The frame is longer than the message its own payload describes.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// The frame exceeds `Limits::max_message_bytes`.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the frame.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A string is not valid UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
}

impl DecodeError {
    /// Short human text (at most 120 bytes), suitable for a WebSocket close reason.
    pub fn reason(&self) -> String {
        truncate_reason(self.to_string())
    }
}

/// Cuts `text` to at most 120 bytes on a character boundary.
pub(crate) fn truncate_reason(mut text: String) -> String {
    if text.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}
