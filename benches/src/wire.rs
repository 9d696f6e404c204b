//! The two framings the load generator speaks, as pure functions from bytes to meaning.
//!
//! - **y-websocket** (AetherFlow, the y-websocket reference server): one y-protocols message per
//!   WebSocket frame; the URL names the document. Decoded with `aetherflow-crdt`'s codec.
//! - **Hocuspocus**: every frame starts with the document name as a lib0 var-string, then a
//!   Hocuspocus message type. Types 0 (sync) and 1 (awareness) match y-protocols; 4 (sync reply)
//!   carries the answer to a client's step 1; 2 (auth) must open every document: the client
//!   sends a token, the server answers "authenticated" or "permission denied". The server
//!   queues a document's other messages until the token arrives.
//!
//! ```
//! use aetherflow_benches::wire::{Dialect, Incoming};
//! let frame = Dialect::Hocuspocus.frame("doc", &[0, 0, 1, 0]);
//! assert_eq!(frame[..4], [3, b'd', b'o', b'c']);
//! assert!(matches!(Dialect::Hocuspocus.decode(&frame), Ok(Incoming::Sync(_))));
//! ```

use aetherflow_crdt::protocol::{DecodeError, Limits, Message, SyncMessage};

/// Hocuspocus message type of sync messages (same payload as y-protocols sync).
const HP_SYNC: u8 = 0;
/// Hocuspocus message type of authentication messages.
const HP_AUTH: u8 = 2;
/// Hocuspocus message type of the server's answer to a client's sync step 1.
const HP_SYNC_REPLY: u8 = 4;
/// Hocuspocus's one-byte ping frame.
const HP_PING: u8 = 9;
/// Hocuspocus's one-byte pong frame.
const HP_PONG: u8 = 10;
/// Hocuspocus auth sub-type: a client's token.
const HP_AUTH_TOKEN: u8 = 0;
/// Hocuspocus auth sub-type: the server refuses the document.
const HP_AUTH_DENIED: u8 = 1;
/// Hocuspocus auth sub-type: the server accepts the token.
const HP_AUTH_OK: u8 = 2;

/// Which framing a server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Plain y-websocket: one y-protocols message per frame.
    YWebsocket,
    /// Hocuspocus: document-name prefix, auth handshake, extra message types.
    Hocuspocus,
}

/// What a server frame means to a load-generating client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A y-protocols sync message (step 1, step 2 or update).
    Sync(SyncMessage),
    /// Hocuspocus accepted the client's token for this document.
    Authenticated,
    /// The server refused access to the document.
    Denied(String),
    /// Anything the load generator does not act on (awareness, Hocuspocus sync status, ...).
    Other,
}

/// Why a server frame could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// The y-protocols part of the frame is malformed.
    #[error("malformed y-protocols message: {0}")]
    Message(#[from] DecodeError),
    /// The Hocuspocus envelope (document name, type, auth) is malformed.
    #[error("malformed Hocuspocus envelope")]
    Envelope,
}

impl Dialect {
    /// Wraps one y-protocols message for `doc`.
    pub fn frame(self, doc: &str, message: &[u8]) -> Vec<u8> {
        match self {
            Dialect::YWebsocket => message.to_vec(),
            Dialect::Hocuspocus => {
                let mut buf = Vec::with_capacity(doc.len() + message.len() + 4);
                write_var_uint(&mut buf, doc.len() as u64);
                buf.extend_from_slice(doc.as_bytes());
                buf.extend_from_slice(message);
                buf
            }
        }
    }

    /// The frame that opens `doc` before any sync message, if the dialect needs one.
    pub fn hello(self, doc: &str, token: &str) -> Option<Vec<u8>> {
        match self {
            Dialect::YWebsocket => None,
            Dialect::Hocuspocus => {
                let mut message = vec![HP_AUTH, HP_AUTH_TOKEN];
                write_var_uint(&mut message, token.len() as u64);
                message.extend_from_slice(token.as_bytes());
                Some(self.frame(doc, &message))
            }
        }
    }

    /// Whether a Hocuspocus frame is about `doc` (always, for y-websocket).
    pub fn is_for(self, frame: &[u8], doc: &str) -> bool {
        self == Dialect::YWebsocket || read_var_string(frame) == Some(doc)
    }

    /// Reads one server frame.
    pub fn decode(self, frame: &[u8]) -> Result<Incoming, WireError> {
        let limits = Limits::default();
        // Hocuspocus's one-byte ping (AetherFlow's /hocuspocus sends one each interval) and
        // pong carry no document.
        if self == Dialect::Hocuspocus && matches!(frame, [HP_PING | HP_PONG]) {
            return Ok(Incoming::Other);
        }
        let message = match self {
            Dialect::YWebsocket => frame,
            Dialect::Hocuspocus => skip_var_string(frame).ok_or(WireError::Envelope)?,
        };
        if self == Dialect::Hocuspocus {
            match message.first() {
                Some(&HP_SYNC) => {}
                Some(&HP_SYNC_REPLY) => {
                    // Same payload as a sync message; only the type byte differs.
                    let mut copy = message.to_vec();
                    copy[0] = HP_SYNC;
                    return to_incoming(Message::decode(&copy, &limits)?);
                }
                Some(&HP_AUTH) => return decode_hocuspocus_auth(&message[1..]),
                Some(_) => return Ok(Incoming::Other),
                None => return Err(WireError::Envelope),
            }
        }
        to_incoming(Message::decode(message, &limits)?)
    }
}

fn to_incoming(message: Message) -> Result<Incoming, WireError> {
    Ok(match message {
        Message::Sync(sync) => Incoming::Sync(sync),
        Message::Auth(aetherflow_crdt::protocol::AuthMessage::PermissionDenied { reason }) => {
            Incoming::Denied(reason)
        }
        Message::Awareness(_) | Message::QueryAwareness => Incoming::Other,
    })
}

fn decode_hocuspocus_auth(rest: &[u8]) -> Result<Incoming, WireError> {
    match rest.first() {
        Some(&HP_AUTH_OK) => Ok(Incoming::Authenticated),
        Some(&HP_AUTH_DENIED) => {
            let reason = read_var_string(&rest[1..]).ok_or(WireError::Envelope)?;
            Ok(Incoming::Denied(reason.to_owned()))
        }
        Some(_) => Ok(Incoming::Other),
        None => Err(WireError::Envelope),
    }
}

fn write_var_uint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// Reads a lib0 var-uint; returns it and the bytes after it.
fn read_var_uint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f).checked_shl(7 * i as u32)?;
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// Reads a lib0 var-string; returns it (as UTF-8) without what follows.
fn read_var_string(bytes: &[u8]) -> Option<&str> {
    let (len, rest) = read_var_uint(bytes)?;
    let text = rest.get(..usize::try_from(len).ok()?)?;
    std::str::from_utf8(text).ok()
}

/// Skips a lib0 var-string; returns the bytes after it.
fn skip_var_string(bytes: &[u8]) -> Option<&[u8]> {
    let (len, rest) = read_var_uint(bytes)?;
    rest.get(usize::try_from(len).ok()?..)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use aetherflow_crdt::protocol::{encode_sync_step1, encode_sync_update};

    #[test]
    fn y_websocket_frames_are_the_message_itself() {
        let update = encode_sync_update(&[0, 0]);
        assert_eq!(Dialect::YWebsocket.frame("d", &update), update);
        assert_eq!(
            Dialect::YWebsocket.decode(&update).unwrap(),
            Incoming::Sync(SyncMessage::Update(vec![0, 0]))
        );
        assert_eq!(Dialect::YWebsocket.hello("d", "t"), None);
    }

    #[test]
    fn hocuspocus_sync_reply_reads_as_sync() {
        let mut frame = Dialect::Hocuspocus.frame("doc", &encode_sync_step1(&[0]));
        // Type byte right after the 4-byte name: sync (0) becomes sync reply (4).
        frame[4] = HP_SYNC_REPLY;
        assert_eq!(
            Dialect::Hocuspocus.decode(&frame).unwrap(),
            Incoming::Sync(SyncMessage::Step1(vec![0]))
        );
    }

    #[test]
    fn hocuspocus_auth_answers_are_recognised() {
        let ok = Dialect::Hocuspocus.frame("doc", &[HP_AUTH, HP_AUTH_OK, 2, b'r', b'w']);
        assert_eq!(
            Dialect::Hocuspocus.decode(&ok).unwrap(),
            Incoming::Authenticated
        );
        let no = Dialect::Hocuspocus.frame("doc", &[HP_AUTH, HP_AUTH_DENIED, 2, b'n', b'o']);
        assert_eq!(
            Dialect::Hocuspocus.decode(&no).unwrap(),
            Incoming::Denied("no".into())
        );
        let hello = Dialect::Hocuspocus.hello("doc", "tok").unwrap();
        assert_eq!(hello, [3, b'd', b'o', b'c', 2, 0, 3, b't', b'o', b'k']);
    }

    #[test]
    fn truncated_envelopes_are_errors_not_panics() {
        for frame in [
            &[][..],
            &[5, b'a'],
            &[1, b'a'],
            &[0x80],
            &[1, b'a', HP_AUTH],
        ] {
            assert!(Dialect::Hocuspocus.decode(frame).is_err(), "{frame:?}");
        }
        assert_eq!(
            Dialect::Hocuspocus.decode(&[1, b'a', 9]).unwrap(),
            Incoming::Other
        );
        assert_eq!(
            Dialect::Hocuspocus.decode(&[HP_PING]).unwrap(),
            Incoming::Other
        );
    }

    #[test]
    fn hocuspocus_frames_name_their_document() {
        let frame = Dialect::Hocuspocus.frame("doc", &encode_sync_step1(&[0]));
        assert!(Dialect::Hocuspocus.is_for(&frame, "doc"));
        assert!(!Dialect::Hocuspocus.is_for(&frame, "other"));
        assert!(Dialect::YWebsocket.is_for(&frame, "other"));
    }
}
