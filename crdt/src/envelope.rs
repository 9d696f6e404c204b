//! The envelope: how one Quantum connection carries many documents.
//!
//! Each message on a Quantum connection is one envelope naming its document and the kind of
//! payload it carries. The payload of a `yjs` envelope is exactly a y-websocket frame (see
//! [`crate::protocol`]), so a relay can hand it to the same room logic as a WebSocket frame.
//!
//! Byte layout (varuint, varbytes and varstring as in lib0 v1, see [`crate::protocol`]):
//!
//! ```text
//! envelope = u8 version (= 1), varstring doc, u8 kind, body
//!   doc: a valid document name (see DocName), or "" for connection-level control only
//!   kind 0 (yjs)      body = varbytes y-protocols message (one y-websocket frame)
//!   kind 1 (register) body = varbytes JSON of register::Command
//!                            ({"op":"lww_write"|"manual_write"|"resolve", ...})
//!   kind 2 (control)  body = u8 control type, then
//!     0 hello        varstring client version, varstring token ("" = no token)
//!     1 subscribe    nothing
//!     2 unsubscribe  nothing
//!     3 error        varuint code, varstring reason
//!     4 event        varstring name, varbytes JSON data
//! ```
//!
//! Decoding is strict: the whole input is one envelope, trailing bytes are an error, every
//! declared length is checked against the bytes present before anything is copied, and the
//! sizes in [`EnvelopeLimits`] bound the whole envelope, tokens, reasons and event names.
//! Only `hello` and `error` may have an empty document name.
//!
//! ```
//! use aetherflow_crdt::envelope::{Control, Envelope, EnvelopeLimits, Payload};
//! use aetherflow_crdt::protocol::{Message, SyncMessage};
//!
//! let envelope = Envelope::new("notes", Payload::Yjs(Message::Sync(SyncMessage::Step1(vec![0]))));
//! let bytes = envelope.encode();
//! assert_eq!(bytes, [1, 5, b'n', b'o', b't', b'e', b's', 0, 4, 0, 0, 1, 0]);
//! assert_eq!(Envelope::decode(&bytes, &EnvelopeLimits::default()), Ok(envelope));
//!
//! let hello = Envelope::connection(Control::Hello { client_version: "0.1.0".into(), token: None });
//! assert!(Envelope::decode(&hello.encode(), &EnvelopeLimits::default()).is_ok());
//! ```

use crate::doc_name::{DocName, DocNameError};
use crate::lib0::{Reader, write_var_bytes, write_var_string, write_var_uint};
use crate::protocol::{DecodeError, Limits, Message};
use crate::register::Command;

/// The only envelope version this codec speaks.
pub const ENVELOPE_VERSION: u8 = 1;

const KIND_YJS: u8 = 0;
const KIND_REGISTER: u8 = 1;
const KIND_CONTROL: u8 = 2;

const CONTROL_HELLO: u8 = 0;
const CONTROL_SUBSCRIBE: u8 = 1;
const CONTROL_UNSUBSCRIBE: u8 = 2;
const CONTROL_ERROR: u8 = 3;
const CONTROL_EVENT: u8 = 4;

/// One message on a multi-document connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The document it concerns; `""` for connection-level control (hello, error).
    pub doc: String,
    /// What it carries.
    pub payload: Payload,
}

/// The kinds of payload an envelope carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A y-protocols message, byte for byte as on the WebSocket.
    Yjs(Message),
    /// An operation on a register document (LWW write, manual write, resolve).
    Register(Command),
    /// Connection and subscription control.
    Control(Control),
}

/// Control messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// The client's first message: who it is and its credentials.
    Hello {
        /// The client library's version, for diagnostics and compatibility checks.
        client_version: String,
        /// A JWT client token, when the relay requires one.
        token: Option<String>,
    },
    /// Start receiving the named document's messages.
    Subscribe,
    /// Stop receiving the named document's messages.
    Unsubscribe,
    /// A refusal or failure, for the connection (empty doc) or one document.
    Error {
        /// Machine-readable code (the relay's WebSocket close codes are reused: 1008 policy,
        /// 1007 invalid payload, 1011 internal, 4403 permission denied, ...).
        code: u32,
        /// Short human text; never contains internals.
        reason: String,
    },
    /// Something happened to the document (a register changed, a conflict appeared, ...).
    Event {
        /// The event's name: for register documents the relay sends `state`, `result` and
        /// its document events (`updated`, `conflict_detected`, `lock_acquired`, ...).
        name: String,
        /// Its data, as JSON.
        data: serde_json::Value,
    },
}

/// Bounds applied while decoding an envelope.
#[derive(Debug, Clone, Copy)]
pub struct EnvelopeLimits {
    /// Largest accepted envelope, in bytes.
    pub max_envelope_bytes: usize,
    /// Longest accepted token in a hello, in bytes.
    pub max_token_bytes: usize,
    /// Longest accepted client version, error reason or event name, in bytes.
    pub max_text_bytes: usize,
}

impl Default for EnvelopeLimits {
    fn default() -> Self {
        EnvelopeLimits {
            max_envelope_bytes: 16 * 1024 * 1024,
            max_token_bytes: 8 * 1024,
            max_text_bytes: 1024,
        }
    }
}

/// Why bytes are not a valid envelope.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The input holds no bytes.
    #[error("empty envelope")]
    Empty,
    /// The envelope exceeds [`EnvelopeLimits::max_envelope_bytes`].
    #[error("envelope of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the input.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The version byte is not [`ENVELOPE_VERSION`].
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u8),
    /// The payload kind is none of yjs, register, control.
    #[error("unknown payload kind {0}")]
    UnknownKind(u8),
    /// The control type is none of hello, subscribe, unsubscribe, error, event.
    #[error("unknown control type {0}")]
    UnknownControl(u8),
    /// The document name is invalid (or empty where a document is required).
    #[error("invalid document name: {0}")]
    DocName(#[from] DocNameError),
    /// A token, version, reason or event name is longer than the limits allow.
    #[error("{field} of {size} bytes exceeds the limit of {limit} bytes")]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// An error code does not fit in 32 bits.
    #[error("error code {0} does not fit in 32 bits")]
    CodeOutOfRange(u64),
    /// A register operation or event's data is not the expected JSON.
    #[error("invalid JSON in a {what}: {detail}")]
    Json {
        /// `register operation` or `event`.
        what: &'static str,
        /// What serde_json said.
        detail: String,
    },
    /// The embedded y-protocols message, or the envelope's own framing, is malformed
    /// (truncated, overlong varint, invalid UTF-8, trailing bytes, ...).
    #[error(transparent)]
    Wire(#[from] DecodeError),
}

impl Envelope {
    /// An envelope for document `doc`.
    pub fn new(doc: impl Into<String>, payload: Payload) -> Envelope {
        Envelope {
            doc: doc.into(),
            payload,
        }
    }

    /// A connection-level control envelope (empty document name).
    pub fn connection(control: Control) -> Envelope {
        Envelope::new("", Payload::Control(control))
    }

    /// Encodes the envelope.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.doc.len() + 16);
        buf.push(ENVELOPE_VERSION);
        write_var_string(&mut buf, &self.doc);
        match &self.payload {
            Payload::Yjs(message) => {
                buf.push(KIND_YJS);
                write_var_bytes(&mut buf, &message.encode());
            }
            Payload::Register(command) => {
                buf.push(KIND_REGISTER);
                let json = serde_json::to_vec(command)
                    .expect("a register command is plain data that always serialises");
                write_var_bytes(&mut buf, &json);
            }
            Payload::Control(control) => {
                buf.push(KIND_CONTROL);
                encode_control(&mut buf, control);
            }
        }
        buf
    }

    /// Encodes a `yjs` envelope around an already encoded y-websocket frame, without decoding
    /// it: the same bytes as `Envelope::new(doc, Payload::Yjs(message)).encode()`. A relay
    /// fans one encoded frame out to many connections this way.
    pub fn encode_yjs_frame(doc: &str, frame: &[u8]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(doc.len() + frame.len() + 16);
        buf.push(ENVELOPE_VERSION);
        write_var_string(&mut buf, doc);
        buf.push(KIND_YJS);
        write_var_bytes(&mut buf, frame);
        buf
    }

    /// The document name at the front of `bytes`, without decoding the rest: lets a relay
    /// answer an envelope whose payload is malformed (e.g. a register command that is not
    /// valid JSON) on that document instead of dropping the whole connection. `None` when
    /// even the version or the name is unreadable.
    pub fn doc_of(bytes: &[u8]) -> Option<&str> {
        let mut r = Reader::new(bytes);
        if r.read_u8().ok()? != ENVELOPE_VERSION {
            return None;
        }
        r.read_var_string().ok()
    }

    /// Decodes exactly one envelope from `bytes`.
    pub fn decode(bytes: &[u8], limits: &EnvelopeLimits) -> Result<Envelope, EnvelopeError> {
        if bytes.is_empty() {
            return Err(EnvelopeError::Empty);
        }
        if bytes.len() > limits.max_envelope_bytes {
            return Err(EnvelopeError::TooLarge {
                size: bytes.len(),
                limit: limits.max_envelope_bytes,
            });
        }
        let mut r = Reader::new(bytes);
        let version = r.read_u8()?;
        if version != ENVELOPE_VERSION {
            return Err(EnvelopeError::UnsupportedVersion(version));
        }
        let doc = r.read_var_string()?.to_owned();
        let payload = match r.read_u8()? {
            KIND_YJS => {
                let frame = r.read_var_bytes()?;
                let limits = Limits {
                    max_message_bytes: limits.max_envelope_bytes,
                };
                Payload::Yjs(Message::decode(frame, &limits)?)
            }
            KIND_REGISTER => {
                let json = r.read_var_bytes()?;
                let command = serde_json::from_slice(json).map_err(|e| EnvelopeError::Json {
                    what: "register operation",
                    detail: e.to_string(),
                })?;
                Payload::Register(command)
            }
            KIND_CONTROL => Payload::Control(decode_control(&mut r, limits)?),
            other => return Err(EnvelopeError::UnknownKind(other)),
        };
        r.finish()?;
        check_doc(&doc, &payload)?;
        Ok(Envelope { doc, payload })
    }
}

/// Only hello and error may be connection-level; everything else names a valid document.
fn check_doc(doc: &str, payload: &Payload) -> Result<(), EnvelopeError> {
    let connection_level = matches!(
        payload,
        Payload::Control(Control::Hello { .. } | Control::Error { .. })
    );
    if doc.is_empty() && connection_level {
        return Ok(());
    }
    DocName::parse(doc)?;
    Ok(())
}

fn encode_control(buf: &mut Vec<u8>, control: &Control) {
    match control {
        Control::Hello {
            client_version,
            token,
        } => {
            buf.push(CONTROL_HELLO);
            write_var_string(buf, client_version);
            write_var_string(buf, token.as_deref().unwrap_or(""));
        }
        Control::Subscribe => buf.push(CONTROL_SUBSCRIBE),
        Control::Unsubscribe => buf.push(CONTROL_UNSUBSCRIBE),
        Control::Error { code, reason } => {
            buf.push(CONTROL_ERROR);
            write_var_uint(buf, u64::from(*code));
            write_var_string(buf, reason);
        }
        Control::Event { name, data } => {
            buf.push(CONTROL_EVENT);
            write_var_string(buf, name);
            write_var_bytes(buf, data.to_string().as_bytes());
        }
    }
}

fn decode_control(r: &mut Reader<'_>, limits: &EnvelopeLimits) -> Result<Control, EnvelopeError> {
    let text = |r: &mut Reader<'_>, field, limit| -> Result<String, EnvelopeError> {
        let s = r.read_var_string()?;
        if s.len() > limit {
            return Err(EnvelopeError::FieldTooLong {
                field,
                size: s.len(),
                limit,
            });
        }
        Ok(s.to_owned())
    };
    match r.read_u8()? {
        CONTROL_HELLO => {
            let client_version = text(r, "client version", limits.max_text_bytes)?;
            let token = text(r, "token", limits.max_token_bytes)?;
            Ok(Control::Hello {
                client_version,
                token: (!token.is_empty()).then_some(token),
            })
        }
        CONTROL_SUBSCRIBE => Ok(Control::Subscribe),
        CONTROL_UNSUBSCRIBE => Ok(Control::Unsubscribe),
        CONTROL_ERROR => {
            let code = r.read_var_uint()?;
            let code = u32::try_from(code).map_err(|_| EnvelopeError::CodeOutOfRange(code))?;
            let reason = text(r, "reason", limits.max_text_bytes)?;
            Ok(Control::Error { code, reason })
        }
        CONTROL_EVENT => {
            let name = text(r, "event name", limits.max_text_bytes)?;
            let data =
                serde_json::from_slice(r.read_var_bytes()?).map_err(|e| EnvelopeError::Json {
                    what: "event",
                    detail: e.to_string(),
                })?;
            Ok(Control::Event { name, data })
        }
        other => Err(EnvelopeError::UnknownControl(other)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::protocol::SyncMessage;
    use crate::register::clock::HlcStamp;
    use crate::register::lww::LwwWrite;
    use crate::register::manual::ManualWrite;
    use proptest::prelude::*;
    use serde_json::json;

    fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        Envelope::decode(bytes, &EnvelopeLimits::default())
    }

    #[test]
    fn control_bytes() {
        let hello = Envelope::connection(Control::Hello {
            client_version: "1".into(),
            token: Some("t".into()),
        });
        assert_eq!(hello.encode(), [1, 0, 2, 0, 1, b'1', 1, b't']);
        let sub = Envelope::new("d", Payload::Control(Control::Subscribe));
        assert_eq!(sub.encode(), [1, 1, b'd', 2, 1]);
        let err = Envelope::connection(Control::Error {
            code: 1008,
            reason: "no".into(),
        });
        assert_eq!(err.encode(), [1, 0, 2, 3, 0xf0, 0x07, 2, b'n', b'o']);
        for e in [hello, sub, err] {
            assert_eq!(decode(&e.encode()).unwrap(), e);
        }
    }

    #[test]
    fn doc_of_reads_the_name_of_an_envelope_with_a_bad_payload() {
        let mut bytes = vec![ENVELOPE_VERSION];
        write_var_string(&mut bytes, "title");
        bytes.push(KIND_REGISTER);
        write_var_bytes(&mut bytes, b"{not json");
        assert!(matches!(decode(&bytes), Err(EnvelopeError::Json { .. })));
        assert_eq!(Envelope::doc_of(&bytes), Some("title"));
        assert_eq!(Envelope::doc_of(&[7, 1, b'x']), None);
        assert_eq!(Envelope::doc_of(&[ENVELOPE_VERSION, 9]), None);
    }

    #[test]
    fn hello_without_token_round_trips() {
        let hello = Envelope::connection(Control::Hello {
            client_version: "0.1.0".into(),
            token: None,
        });
        assert_eq!(decode(&hello.encode()).unwrap(), hello);
    }

    #[test]
    fn register_operations_are_json() {
        let write = Command::LwwWrite(LwwWrite::new(json!("x"), HlcStamp::default(), "w"));
        let bytes = Envelope::new("title", Payload::Register(write.clone())).encode();
        let json_start = bytes.len() - serde_json::to_vec(&write).unwrap().len();
        let json: serde_json::Value = serde_json::from_slice(&bytes[json_start..]).unwrap();
        assert_eq!(json["op"], "lww_write");
        assert_eq!(decode(&bytes).unwrap().payload, Payload::Register(write));
    }

    #[test]
    fn each_error_variant() {
        let limits = EnvelopeLimits::default();
        assert_eq!(decode(&[]), Err(EnvelopeError::Empty));
        let tiny = EnvelopeLimits {
            max_envelope_bytes: 2,
            ..limits
        };
        assert_eq!(
            Envelope::decode(&[1, 0, 2], &tiny),
            Err(EnvelopeError::TooLarge { size: 3, limit: 2 })
        );
        assert_eq!(decode(&[2, 0]), Err(EnvelopeError::UnsupportedVersion(2)));
        assert_eq!(decode(&[1, 1, b'd', 9]), Err(EnvelopeError::UnknownKind(9)));
        assert_eq!(
            decode(&[1, 1, b'd', 2, 9]),
            Err(EnvelopeError::UnknownControl(9))
        );
        assert_eq!(
            decode(&[1, 0, 2, 1]),
            Err(EnvelopeError::DocName(DocNameError::Empty))
        );
        assert_eq!(
            decode(&[1, 1, b'/', 2, 1]),
            Err(EnvelopeError::DocName(DocNameError::Slash))
        );
        let short = EnvelopeLimits {
            max_token_bytes: 1,
            ..limits
        };
        assert_eq!(
            Envelope::decode(&[1, 0, 2, 0, 0, 2, b'a', b'b'], &short),
            Err(EnvelopeError::FieldTooLong {
                field: "token",
                size: 2,
                limit: 1
            })
        );
        let mut big_code = vec![1, 0, 2, 3];
        write_var_uint(&mut big_code, 1 << 40);
        big_code.push(0);
        assert_eq!(
            decode(&big_code),
            Err(EnvelopeError::CodeOutOfRange(1 << 40))
        );
        assert!(matches!(
            decode(&[1, 1, b'd', 1, 1, b'{']),
            Err(EnvelopeError::Json {
                what: "register operation",
                ..
            })
        ));
        assert!(matches!(
            decode(&[1, 1, b'd', 2, 4, 1, b'e', 1, b'{']),
            Err(EnvelopeError::Json { what: "event", .. })
        ));
        assert_eq!(
            decode(&[1, 1, b'd', 0, 1, 9]),
            Err(EnvelopeError::Wire(DecodeError::UnknownMessageType(9)))
        );
        assert_eq!(
            decode(&[1, 1, b'd', 2, 1, 0]),
            Err(EnvelopeError::Wire(DecodeError::TrailingBytes(1)))
        );
        assert!(matches!(
            decode(&[1, 5, b'd']),
            Err(EnvelopeError::Wire(DecodeError::Truncated { .. }))
        ));
    }

    fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..48)
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            arb_bytes().prop_map(|b| Message::Sync(SyncMessage::Step1(b))),
            arb_bytes().prop_map(|b| Message::Sync(SyncMessage::Update(b))),
            arb_bytes().prop_map(Message::Awareness),
            Just(Message::QueryAwareness),
        ]
    }

    fn arb_command() -> impl Strategy<Value = Command> {
        prop_oneof![
            (".{0,12}", any::<u64>(), any::<u32>(), any::<i64>()).prop_map(
                |(writer, wall_ms, counter, n)| {
                    Command::LwwWrite(LwwWrite::new(
                        json!(n),
                        HlcStamp { wall_ms, counter },
                        writer,
                    ))
                }
            ),
            (any::<u64>(), ".{0,12}", any::<u64>()).prop_map(|(base_version, author, at_ms)| {
                Command::ManualWrite(ManualWrite {
                    base_version,
                    value: json!({"v": author.clone()}),
                    author,
                    at_ms,
                })
            }),
            (any::<u64>(), ".{0,12}").prop_map(|(conflict, author)| Command::Resolve {
                conflict,
                value: json!([1, 2]),
                author,
                at_ms: 7,
            }),
        ]
    }

    fn arb_control() -> impl Strategy<Value = Control> {
        prop_oneof![
            (".{0,12}", proptest::option::of(".{1,40}")).prop_map(|(client_version, token)| {
                Control::Hello {
                    client_version,
                    token,
                }
            }),
            Just(Control::Subscribe),
            Just(Control::Unsubscribe),
            (any::<u32>(), ".{0,40}").prop_map(|(code, reason)| Control::Error { code, reason }),
            (".{0,20}", any::<i64>()).prop_map(|(name, n)| Control::Event {
                name,
                data: json!({"n": n}),
            }),
        ]
    }

    fn arb_envelope() -> impl Strategy<Value = Envelope> {
        let doc = "[a-z0-9 .-]{1,30}";
        prop_oneof![
            (doc, arb_message()).prop_map(|(d, m)| Envelope::new(d, Payload::Yjs(m))),
            (doc, arb_command()).prop_map(|(d, c)| Envelope::new(d, Payload::Register(c))),
            (doc, arb_control()).prop_map(|(d, c)| Envelope::new(d, Payload::Control(c))),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(envelope in arb_envelope()) {
            prop_assert_eq!(decode(&envelope.encode()).unwrap(), envelope);
        }

        #[test]
        fn wrapping_an_encoded_frame_equals_encoding_the_message(doc in "[a-z]{1,20}", message in arb_message()) {
            let wrapped = Envelope::encode_yjs_frame(&doc, &message.encode());
            prop_assert_eq!(wrapped, Envelope::new(doc, Payload::Yjs(message)).encode());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..160)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn corrupted_envelopes_never_panic(envelope in arb_envelope(), at in any::<usize>(), byte: u8) {
            let mut bytes = envelope.encode();
            let i = at % bytes.len();
            bytes[i] = byte;
            let _ = decode(&bytes);
        }

        #[test]
        fn truncation_is_an_error(envelope in arb_envelope(), cut in 1usize..64) {
            let bytes = envelope.encode();
            let keep = bytes.len().saturating_sub(cut);
            prop_assert!(decode(&bytes[..keep]).is_err());
        }
    }
}
