//! The Hocuspocus wire protocol, as `@hocuspocus/provider` 4 and `@hocuspocus/server` 4 speak
//! it: many documents over one WebSocket, every message prefixed with the name it is about.
//!
//! ```text
//! frame          = ping | pong | message
//! ping           = 0x09                 (exactly one byte: the server asks for a pong)
//! pong           = 0x0a                 (exactly one byte: the provider's answer)
//! message        = varstring address, varuint type, payload
//!   address      = document name, or `name \0 session` with the provider's sessionAwareness
//! type 0 (sync)            = a y-websocket sync message without its type (see `protocol`)
//! type 1 (awareness)       = varbytes awareness update
//! type 2 (auth)            = varuint auth type, then
//!                              0 token:             varstring token [, varstring provider version]
//!                              1 permission denied: varstring reason
//!                              2 authenticated:     varstring scope ("read-write" | "readonly")
//! type 3 (query awareness) = nothing
//! type 5 (stateless)       = varstring payload
//! type 7 (close)           = [varstring reason]  (client: leave this document; server: left)
//! type 8 (sync status)     = varint 1 (the update was applied and saved) or 0 (refused)
//! ```
//!
//! Types 0, 1 and 3 after the address are byte for byte a y-websocket message, so the relay's
//! rooms serve them unchanged: [`encode_prefixed`] turns a room's frame into a Hocuspocus
//! message. Types 4 (sync reply) and 6 (broadcast stateless) are server-internal in
//! Hocuspocus and refused here like any unknown type. Decoding is strict, as in
//! [`crate::protocol`]: one message per frame, no trailing bytes, lengths checked before
//! anything is copied, addresses at most [`MAX_ADDRESS_BYTES`].
//!
//! ```
//! use aetherflow_crdt::hocuspocus::{Auth, Frame, Payload, encode_prefixed};
//! use aetherflow_crdt::protocol::{Limits, encode_sync_update};
//!
//! let token = Frame::decode(&[5, b'n', b'o', b't', b'e', b's', 2, 0, 2, b'j', b'w'], &Limits::default());
//! let Ok(Frame::Message(message)) = token else { panic!("a message") };
//! assert_eq!(message.address, "notes");
//! assert_eq!(message.payload, Payload::Auth(Auth::Token { token: "jw".into(), provider_version: None }));
//!
//! // A room's y-websocket frame, addressed to the document it came from.
//! let frame = encode_prefixed("notes", &encode_sync_update(&[0, 0]));
//! assert_eq!(frame, [5, b'n', b'o', b't', b'e', b's', 0, 2, 2, 0, 0]);
//! ```

use crate::decode::DecodeError;
use crate::lib0::{Reader, write_var_string, write_var_uint};
use crate::protocol::{self, Limits};

/// Message type: a y-protocols sync message.
pub const TYPE_SYNC: u64 = 0;
/// Message type: an awareness update.
pub const TYPE_AWARENESS: u64 = 1;
/// Message type: authentication.
pub const TYPE_AUTH: u64 = 2;
/// Message type: a request for everyone's awareness.
pub const TYPE_QUERY_AWARENESS: u64 = 3;
/// Message type: an application message that is not part of the document.
pub const TYPE_STATELESS: u64 = 5;
/// Message type: the document's connection closes (client: leave it; server: it was left).
pub const TYPE_CLOSE: u64 = 7;
/// Message type: whether an update from the client was applied.
pub const TYPE_SYNC_STATUS: u64 = 8;
/// The one-byte frame the server sends to ask for a pong.
pub const PING: u8 = 9;
/// The one-byte frame the provider answers a ping with.
pub const PONG: u8 = 10;

/// Auth sub-type: the client's token.
pub const AUTH_TOKEN: u64 = 0;
/// Auth sub-type: the server refuses the document.
pub const AUTH_PERMISSION_DENIED: u64 = 1;
/// Auth sub-type: the server accepts the document, with the scope granted.
pub const AUTH_AUTHENTICATED: u64 = 2;

/// Scope of an [`Auth::Authenticated`] answer for a client that may write.
pub const SCOPE_READ_WRITE: &str = "read-write";
/// Scope of an [`Auth::Authenticated`] answer for a read-only client: its updates are
/// answered with a sync status of 0 and not applied.
pub const SCOPE_READ_ONLY: &str = "readonly";

/// Longest accepted address: a document name (255 bytes) plus a separator and a session id
/// of up to 64 bytes.
pub const MAX_ADDRESS_BYTES: usize = 320;

/// One WebSocket frame of the Hocuspocus protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The server's application-level ping.
    Ping,
    /// The provider's answer to a ping.
    Pong,
    /// A message about one document.
    Message(Message),
}

/// A message about one document (one address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The document name, or `name\0session` (see [`Message::document`]).
    pub address: String,
    /// What the message says.
    pub payload: Payload,
}

/// What a [`Message`] carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Sync (0), awareness (1) or query awareness (3): a y-websocket message, never
    /// [`protocol::Message::Auth`].
    Yjs(protocol::Message),
    /// Authentication (2).
    Auth(Auth),
    /// A stateless message (5): an application string relayed, never stored.
    Stateless(String),
    /// Close (7), with the server's reason.
    Close(Option<String>),
    /// Sync status (8): whether the update was applied.
    SyncStatus(bool),
}

/// The authentication messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// The client's token for the document (empty: none).
    Token {
        /// The token, as the application's `token` option gave it.
        token: String,
        /// The provider's version, which provider 4 appends.
        provider_version: Option<String>,
    },
    /// The server refuses the document.
    PermissionDenied {
        /// Why.
        reason: String,
    },
    /// The server accepts the document.
    Authenticated {
        /// [`SCOPE_READ_WRITE`] or [`SCOPE_READ_ONLY`].
        scope: String,
    },
}

/// Why a frame is not a Hocuspocus message.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum HocuspocusError {
    /// The bytes after the address are not a valid message (or the frame is cut short).
    #[error("{0}")]
    Decode(#[from] DecodeError),
    /// The address is longer than [`MAX_ADDRESS_BYTES`].
    #[error("document address of {0} bytes is too long")]
    AddressTooLong(u64),
}

impl HocuspocusError {
    /// Short human text (at most 120 bytes), suitable for a WebSocket close reason.
    pub fn reason(&self) -> String {
        protocol::truncate_reason(self.to_string())
    }
}

impl Message {
    /// The document name: the address up to a `\0` (the provider's session separator).
    pub fn document(&self) -> &str {
        document_of(&self.address)
    }

    /// Encodes the message as one frame.
    pub fn encode(&self) -> Vec<u8> {
        match &self.payload {
            Payload::Yjs(message) => encode_prefixed(&self.address, &message.encode()),
            Payload::Auth(auth) => encode_auth(&self.address, auth),
            Payload::Stateless(payload) => encode_stateless(&self.address, payload),
            Payload::Close(reason) => {
                let mut buf = address_header(&self.address, TYPE_CLOSE, 0);
                if let Some(reason) = reason {
                    write_var_string(&mut buf, reason);
                }
                buf
            }
            Payload::SyncStatus(applied) => encode_sync_status(&self.address, *applied),
        }
    }
}

/// The document name of an address: the part before a `\0`.
pub fn document_of(address: &str) -> &str {
    address.split('\0').next().unwrap_or(address)
}

impl Frame {
    /// Decodes exactly one frame from `bytes`.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Frame, HocuspocusError> {
        match bytes {
            [] => return Err(DecodeError::Empty.into()),
            [PING] => return Ok(Frame::Ping),
            [PONG] => return Ok(Frame::Pong),
            _ => {}
        }
        if bytes.len() > limits.max_message_bytes {
            return Err(DecodeError::TooLarge {
                size: bytes.len(),
                limit: limits.max_message_bytes,
            }
            .into());
        }
        let declared = Reader::new(bytes).read_var_uint()?;
        if declared > MAX_ADDRESS_BYTES as u64 {
            return Err(HocuspocusError::AddressTooLong(declared));
        }
        let mut r = Reader::new(bytes);
        let address = r.read_var_string()?.to_owned();
        let rest = r.read_exact(r.remaining() as u64)?;
        let mut r = Reader::new(rest);
        let payload = match r.read_var_uint()? {
            TYPE_SYNC | TYPE_AWARENESS | TYPE_QUERY_AWARENESS => {
                return Ok(Frame::Message(Message {
                    address,
                    payload: Payload::Yjs(protocol::Message::decode(rest, limits)?),
                }));
            }
            TYPE_AUTH => Payload::Auth(decode_auth(&mut r)?),
            TYPE_STATELESS => Payload::Stateless(r.read_var_string()?.to_owned()),
            TYPE_CLOSE if r.remaining() == 0 => Payload::Close(None),
            TYPE_CLOSE => Payload::Close(Some(r.read_var_string()?.to_owned())),
            TYPE_SYNC_STATUS => Payload::SyncStatus(read_var_int(&mut r)? == 1),
            other => return Err(DecodeError::UnknownMessageType(other).into()),
        };
        r.finish()?;
        Ok(Frame::Message(Message { address, payload }))
    }

    /// Encodes the frame.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Frame::Ping => vec![PING],
            Frame::Pong => vec![PONG],
            Frame::Message(message) => message.encode(),
        }
    }
}

/// The address of a frame that starts like a message, even if the rest does not decode (to
/// name the document in a log line); `None` if not even the address reads.
pub fn address_of(bytes: &[u8]) -> Option<&str> {
    let mut r = Reader::new(bytes);
    let address = r.read_var_string().ok()?;
    (address.len() <= MAX_ADDRESS_BYTES).then_some(address)
}

fn decode_auth(r: &mut Reader<'_>) -> Result<Auth, DecodeError> {
    match r.read_var_uint()? {
        AUTH_TOKEN => {
            let token = r.read_var_string()?.to_owned();
            let provider_version = if r.remaining() > 0 {
                Some(r.read_var_string()?.to_owned())
            } else {
                None
            };
            Ok(Auth::Token {
                token,
                provider_version,
            })
        }
        AUTH_PERMISSION_DENIED => Ok(Auth::PermissionDenied {
            reason: r.read_var_string()?.to_owned(),
        }),
        AUTH_AUTHENTICATED => Ok(Auth::Authenticated {
            scope: r.read_var_string()?.to_owned(),
        }),
        other => Err(DecodeError::UnknownAuthType(other)),
    }
}

/// lib0's signed varint: the first byte holds a continuation bit, the sign and 6 bits; each
/// further byte a continuation bit and 7 bits.
fn read_var_int(r: &mut Reader<'_>) -> Result<i64, DecodeError> {
    let first = r.read_u8()?;
    let negative = first & 0x40 != 0;
    let mut value = u64::from(first & 0x3f);
    let mut shift = 6u32;
    let mut byte = first;
    while byte & 0x80 != 0 {
        byte = r.read_u8()?;
        if shift > 56 {
            return Err(DecodeError::VarIntOverflow);
        }
        value |= u64::from(byte & 0x7f) << shift;
        shift += 7;
    }
    let value = i64::try_from(value).map_err(|_| DecodeError::VarIntOverflow)?;
    Ok(if negative { -value } else { value })
}

fn address_header(address: &str, kind: u64, extra: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(address.len() + extra + 12);
    write_var_string(&mut buf, address);
    write_var_uint(&mut buf, kind);
    buf
}

/// Addresses a y-websocket frame (sync, awareness, query awareness) to `address`: the
/// Hocuspocus message carrying the same thing.
pub fn encode_prefixed(address: &str, frame: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(address.len() + frame.len() + 3);
    write_var_string(&mut buf, address);
    buf.extend_from_slice(frame);
    buf
}

/// Encodes an auth message for `address`.
pub fn encode_auth(address: &str, auth: &Auth) -> Vec<u8> {
    let mut buf = address_header(address, TYPE_AUTH, 16);
    match auth {
        Auth::Token {
            token,
            provider_version,
        } => {
            write_var_uint(&mut buf, AUTH_TOKEN);
            write_var_string(&mut buf, token);
            if let Some(version) = provider_version {
                write_var_string(&mut buf, version);
            }
        }
        Auth::PermissionDenied { reason } => {
            write_var_uint(&mut buf, AUTH_PERMISSION_DENIED);
            write_var_string(&mut buf, reason);
        }
        Auth::Authenticated { scope } => {
            write_var_uint(&mut buf, AUTH_AUTHENTICATED);
            write_var_string(&mut buf, scope);
        }
    }
    buf
}

/// Encodes a stateless message for `address`.
pub fn encode_stateless(address: &str, payload: &str) -> Vec<u8> {
    let mut buf = address_header(address, TYPE_STATELESS, payload.len() + 4);
    write_var_string(&mut buf, payload);
    buf
}

/// Encodes a sync status for `address`: `applied` is 1, refused 0 (lib0 varints below 64
/// are one byte).
pub fn encode_sync_status(address: &str, applied: bool) -> Vec<u8> {
    let mut buf = address_header(address, TYPE_SYNC_STATUS, 1);
    buf.push(u8::from(applied));
    buf
}

/// The sync status frame without its address (`[8, 1]` or `[8, 0]`), for a transport that
/// prefixes addresses itself (see [`encode_prefixed`]).
pub const fn sync_status_body(applied: bool) -> [u8; 2] {
    [TYPE_SYNC_STATUS as u8, applied as u8]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::protocol::SyncMessage;
    use proptest::prelude::*;

    fn decode(bytes: &[u8]) -> Result<Frame, HocuspocusError> {
        Frame::decode(bytes, &Limits::default())
    }

    fn message(address: &str, payload: Payload) -> Frame {
        Frame::Message(Message {
            address: address.into(),
            payload,
        })
    }

    #[test]
    fn the_providers_token_message_with_its_version() {
        // writeVarString("d"), Auth, Token, writeVarString("t"), writeVarString("4.8.0")
        let bytes = [1, b'd', 2, 0, 1, b't', 5, b'4', b'.', b'8', b'.', b'0'];
        let frame = message(
            "d",
            Payload::Auth(Auth::Token {
                token: "t".into(),
                provider_version: Some("4.8.0".into()),
            }),
        );
        assert_eq!(decode(&bytes).unwrap(), frame);
        assert_eq!(frame.encode(), bytes);
    }

    #[test]
    fn sync_messages_are_y_websocket_messages_behind_the_address() {
        let bytes = [1, b'd', 0, 0, 1, 0];
        assert_eq!(
            decode(&bytes).unwrap(),
            message(
                "d",
                Payload::Yjs(protocol::Message::Sync(SyncMessage::Step1(vec![0])))
            )
        );
        assert_eq!(
            encode_prefixed("d", &protocol::encode_sync_step1(&[0])),
            bytes
        );
    }

    #[test]
    fn server_answers_bytes() {
        assert_eq!(encode_sync_status("d", true), [1, b'd', 8, 1]);
        assert_eq!(encode_sync_status("d", false), [1, b'd', 8, 0]);
        let ok = Auth::Authenticated {
            scope: SCOPE_READ_ONLY.into(),
        };
        let bytes = encode_auth("d", &ok);
        assert_eq!(&bytes[..4], [1, b'd', 2, 2]);
        assert_eq!(decode(&bytes).unwrap(), message("d", Payload::Auth(ok)));
        assert_eq!(encode_stateless("d", "hi"), [1, b'd', 5, 2, b'h', b'i']);
    }

    #[test]
    fn close_with_and_without_reason_and_pings() {
        assert_eq!(
            decode(&[1, b'd', 7]).unwrap(),
            message("d", Payload::Close(None))
        );
        assert_eq!(
            decode(&[1, b'd', 7, 1, b'x']).unwrap(),
            message("d", Payload::Close(Some("x".into())))
        );
        assert_eq!(decode(&[9]).unwrap(), Frame::Ping);
        assert_eq!(decode(&[10]).unwrap(), Frame::Pong);
    }

    #[test]
    fn the_document_is_the_address_before_the_session_separator() {
        let m = Message {
            address: "notes\0abc".into(),
            payload: Payload::Close(None),
        };
        assert_eq!(m.document(), "notes");
        assert_eq!(document_of("plain"), "plain");
    }

    #[test]
    fn each_error() {
        use DecodeError::*;
        assert_eq!(decode(&[]), Err(Empty.into()));
        assert_eq!(decode(&[1, b'd', 4, 0]), Err(UnknownMessageType(4).into()));
        assert_eq!(decode(&[1, b'd', 6, 0]), Err(UnknownMessageType(6).into()));
        assert_eq!(decode(&[1, b'd', 2, 9]), Err(UnknownAuthType(9).into()));
        assert_eq!(decode(&[1, b'd', 5, 0, 0]), Err(TrailingBytes(1).into()));
        assert!(decode(&[1, b'd', 2, 1]).is_err());
        assert_eq!(
            decode(&[1, b'd']),
            Err(Truncated {
                needed: 1,
                available: 0
            }
            .into())
        );
        assert_eq!(decode(&[1, b'd', 0, 2, 0, 9]), Err(TrailingBytes(1).into()));
        assert_eq!(decode(&[1, 0xff, 3]), Err(InvalidUtf8.into()));
        let mut long = Vec::new();
        write_var_string(&mut long, &"a".repeat(MAX_ADDRESS_BYTES + 1));
        long.push(3);
        assert_eq!(
            decode(&long),
            Err(HocuspocusError::AddressTooLong(
                MAX_ADDRESS_BYTES as u64 + 1
            ))
        );
        assert_eq!(
            Frame::decode(
                &[1, b'd', 3],
                &Limits {
                    max_message_bytes: 2
                }
            ),
            Err(TooLarge { size: 3, limit: 2 }.into())
        );
        assert!(
            decode(&[
                1, b'd', 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
            ])
            .is_err()
        );
    }

    #[test]
    fn address_of_names_the_document_of_a_broken_message() {
        assert_eq!(address_of(&[1, b'd', 99]), Some("d"));
        assert_eq!(address_of(&[5, b'd']), None);
    }

    fn arb_address() -> impl Strategy<Value = String> {
        "[a-z\\-]{1,20}(\u{0}[a-z0-9]{1,8})?"
    }

    fn arb_payload() -> impl Strategy<Value = Payload> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..48);
        prop_oneof![
            bytes().prop_map(|b| Payload::Yjs(protocol::Message::Sync(SyncMessage::Step1(b)))),
            bytes().prop_map(|b| Payload::Yjs(protocol::Message::Sync(SyncMessage::Update(b)))),
            bytes().prop_map(|b| Payload::Yjs(protocol::Message::Awareness(b))),
            Just(Payload::Yjs(protocol::Message::QueryAwareness)),
            (".{0,20}", proptest::option::of(".{0,8}")).prop_map(|(token, provider_version)| {
                Payload::Auth(Auth::Token {
                    token,
                    provider_version,
                })
            }),
            ".{0,20}".prop_map(|reason| Payload::Auth(Auth::PermissionDenied { reason })),
            ".{0,20}".prop_map(|scope| Payload::Auth(Auth::Authenticated { scope })),
            ".{0,40}".prop_map(Payload::Stateless),
            proptest::option::of(".{0,20}").prop_map(Payload::Close),
            any::<bool>().prop_map(Payload::SyncStatus),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(address in arb_address(), payload in arb_payload()) {
            let frame = message(&address, payload);
            prop_assert_eq!(decode(&frame.encode()).unwrap(), frame);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..160)) {
            let _ = decode(&bytes);
            let _ = address_of(&bytes);
        }

        #[test]
        fn truncation_is_an_error_or_a_shorter_close(address in arb_address(), payload in arb_payload(), cut in 1usize..64) {
            let bytes = message(&address, payload).encode();
            let keep = bytes.len().saturating_sub(cut);
            // A close without its reason, a token without its version and a one-byte ping or
            // pong are valid shorter frames; anything else cut short must not decode.
            if let Ok(Frame::Message(m)) = decode(&bytes[..keep]) {
                let shorter = matches!(
                    m.payload,
                    Payload::Close(None) | Payload::Auth(Auth::Token { provider_version: None, .. })
                );
                prop_assert!(shorter, "a cut frame decoded as {:?}", m);
            }
        }
    }
}
