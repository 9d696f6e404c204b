//! The y-websocket wire protocol: one y-protocols message per WebSocket frame.
//!
//! ```text
//! message        = varuint type, payload
//! type 0 (sync)  = varuint sync type, varbytes
//!                    sync type 0: step 1, varbytes = encoded state vector
//!                    sync type 1: step 2, varbytes = v1 update
//!                    sync type 2: update, varbytes = v1 update
//! type 1 (awareness)       = varbytes awareness update
//! type 2 (auth)            = varuint auth type (0 = permission denied), varstring reason
//! type 3 (query awareness) = nothing
//! ```
//!
//! Decoding is strict: a frame holds exactly one message and bytes left over after it are an
//! error ([`DecodeError::TrailingBytes`]). Declared lengths are checked against the bytes actually
//! present before anything is copied, so a hostile length prefix costs nothing.

pub use crate::decode::DecodeError;
pub(crate) use crate::decode::truncate_reason;
use crate::lib0::{Reader, write_var_bytes, write_var_string, write_var_uint};

/// Message type of sync messages (step 1, step 2, update).
pub const MESSAGE_SYNC: u64 = 0;
/// Message type of awareness updates.
pub const MESSAGE_AWARENESS: u64 = 1;
/// Message type of auth messages.
pub const MESSAGE_AUTH: u64 = 2;
/// Message type of a request for everyone's awareness state.
pub const MESSAGE_QUERY_AWARENESS: u64 = 3;

/// Sync sub-type: step 1 (state vector).
pub const SYNC_STEP1: u64 = 0;
/// Sync sub-type: step 2 (diff answering a step 1).
pub const SYNC_STEP2: u64 = 1;
/// Sync sub-type: incremental update.
pub const SYNC_UPDATE: u64 = 2;
/// Auth sub-type: permission denied.
pub const AUTH_PERMISSION_DENIED: u64 = 0;

/// One decoded y-websocket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A sync protocol message.
    Sync(SyncMessage),
    /// An awareness update payload (see the `awareness` module).
    Awareness(Vec<u8>),
    /// An auth protocol message.
    Auth(AuthMessage),
    /// A request for the awareness state of every client.
    QueryAwareness,
}

/// The y-protocols sync messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncMessage {
    /// Step 1: the sender's encoded state vector; answer with step 2.
    Step1(Vec<u8>),
    /// Step 2: a v1 update with what the receiver lacked.
    Step2(Vec<u8>),
    /// An incremental v1 update.
    Update(Vec<u8>),
}

/// The y-protocols auth messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMessage {
    /// The server refuses access to the document.
    PermissionDenied {
        /// Human-readable explanation.
        reason: String,
    },
}

/// Bounds applied while decoding.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted message (the whole frame), in bytes.
    pub max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 16 * 1024 * 1024,
        }
    }
}

impl Message {
    /// Decodes exactly one message from `bytes`.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Message, DecodeError> {
        if bytes.is_empty() {
            return Err(DecodeError::Empty);
        }
        if bytes.len() > limits.max_message_bytes {
            return Err(DecodeError::TooLarge {
                size: bytes.len(),
                limit: limits.max_message_bytes,
            });
        }
        let mut r = Reader::new(bytes);
        let message = match r.read_var_uint()? {
            MESSAGE_SYNC => Message::Sync(decode_sync(&mut r)?),
            MESSAGE_AWARENESS => Message::Awareness(r.read_var_bytes()?.to_vec()),
            MESSAGE_AUTH => Message::Auth(decode_auth(&mut r)?),
            MESSAGE_QUERY_AWARENESS => Message::QueryAwareness,
            other => return Err(DecodeError::UnknownMessageType(other)),
        };
        r.finish()?;
        Ok(message)
    }

    /// Encodes the message as one frame.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Sync(SyncMessage::Step1(sv)) => encode_sync_step1(sv),
            Message::Sync(SyncMessage::Step2(update)) => encode_sync_step2(update),
            Message::Sync(SyncMessage::Update(update)) => encode_sync_update(update),
            Message::Awareness(update) => encode_awareness(update),
            Message::Auth(AuthMessage::PermissionDenied { reason }) => {
                let mut buf = Vec::with_capacity(reason.len() + 8);
                write_var_uint(&mut buf, MESSAGE_AUTH);
                write_var_uint(&mut buf, AUTH_PERMISSION_DENIED);
                write_var_string(&mut buf, reason);
                buf
            }
            Message::QueryAwareness => vec![MESSAGE_QUERY_AWARENESS as u8],
        }
    }
}

fn decode_sync(r: &mut Reader<'_>) -> Result<SyncMessage, DecodeError> {
    let kind = r.read_var_uint()?;
    let wrap = match kind {
        SYNC_STEP1 => SyncMessage::Step1,
        SYNC_STEP2 => SyncMessage::Step2,
        SYNC_UPDATE => SyncMessage::Update,
        other => return Err(DecodeError::UnknownSyncType(other)),
    };
    Ok(wrap(r.read_var_bytes()?.to_vec()))
}

fn decode_auth(r: &mut Reader<'_>) -> Result<AuthMessage, DecodeError> {
    match r.read_var_uint()? {
        AUTH_PERMISSION_DENIED => Ok(AuthMessage::PermissionDenied {
            reason: r.read_var_string()?.to_owned(),
        }),
        other => Err(DecodeError::UnknownAuthType(other)),
    }
}

fn encode_with_header(kind: &[u64], payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(payload.len() + 2 * kind.len() + 10);
    for &k in kind {
        write_var_uint(&mut buf, k);
    }
    write_var_bytes(&mut buf, payload);
    buf
}

/// Encodes a sync update message (`[0, 2, varbytes(update)]`) without building a [`Message`].
pub fn encode_sync_update(update: &[u8]) -> Vec<u8> {
    encode_with_header(&[MESSAGE_SYNC, SYNC_UPDATE], update)
}

/// Encodes a sync step 1 message carrying an encoded state vector.
pub fn encode_sync_step1(state_vector: &[u8]) -> Vec<u8> {
    encode_with_header(&[MESSAGE_SYNC, SYNC_STEP1], state_vector)
}

/// Encodes a sync step 2 message carrying a v1 update.
pub fn encode_sync_step2(update: &[u8]) -> Vec<u8> {
    encode_with_header(&[MESSAGE_SYNC, SYNC_STEP2], update)
}

/// Encodes an awareness message carrying an awareness update payload.
pub fn encode_awareness(update: &[u8]) -> Vec<u8> {
    encode_with_header(&[MESSAGE_AWARENESS], update)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        Message::decode(bytes, &Limits::default())
    }

    #[test]
    fn sync_step1_of_empty_state_vector() {
        // y-protocols writeSyncStep1 on a fresh Y.Doc: encodeStateVector(doc) is [0].
        let bytes = [0, 0, 1, 0];
        let msg = Message::Sync(SyncMessage::Step1(vec![0]));
        assert_eq!(decode(&bytes).unwrap(), msg);
        assert_eq!(msg.encode(), bytes);
        assert_eq!(encode_sync_step1(&[0]), bytes);
    }

    #[test]
    fn sync_step2_and_update_bytes() {
        // An empty v1 update is [0, 0]: no clients, empty delete set.
        let step2 = [0, 1, 2, 0, 0];
        let update = [0, 2, 2, 0, 0];
        assert_eq!(
            decode(&step2).unwrap(),
            Message::Sync(SyncMessage::Step2(vec![0, 0]))
        );
        assert_eq!(
            decode(&update).unwrap(),
            Message::Sync(SyncMessage::Update(vec![0, 0]))
        );
        assert_eq!(encode_sync_step2(&[0, 0]), step2);
        assert_eq!(encode_sync_update(&[0, 0]), update);
    }

    #[test]
    fn awareness_bytes() {
        // One client (id 1, clock 2) with state "{}".
        let payload = [1, 1, 2, 2, b'{', b'}'];
        let mut bytes = vec![1, 6];
        bytes.extend_from_slice(&payload);
        assert_eq!(
            decode(&bytes).unwrap(),
            Message::Awareness(payload.to_vec())
        );
        assert_eq!(encode_awareness(&payload), bytes);
    }

    #[test]
    fn auth_permission_denied_bytes() {
        let bytes = [2, 0, 2, b'n', b'o'];
        let msg = Message::Auth(AuthMessage::PermissionDenied {
            reason: "no".into(),
        });
        assert_eq!(decode(&bytes).unwrap(), msg);
        assert_eq!(msg.encode(), bytes);
    }

    #[test]
    fn query_awareness_bytes() {
        assert_eq!(decode(&[3]).unwrap(), Message::QueryAwareness);
        assert_eq!(Message::QueryAwareness.encode(), [3]);
    }

    #[test]
    fn each_error_variant() {
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        assert_eq!(
            decode(&[0, 0, 5, 1]),
            Err(DecodeError::Truncated {
                needed: 5,
                available: 1
            })
        );
        assert_eq!(decode(&[0xff; 11]), Err(DecodeError::VarIntOverflow));
        assert_eq!(decode(&[4]), Err(DecodeError::UnknownMessageType(4)));
        assert_eq!(decode(&[0, 3, 0]), Err(DecodeError::UnknownSyncType(3)));
        assert_eq!(decode(&[2, 1, 0]), Err(DecodeError::UnknownAuthType(1)));
        assert_eq!(decode(&[3, 0, 0]), Err(DecodeError::TrailingBytes(2)));
        assert_eq!(decode(&[0, 2, 0, 9]), Err(DecodeError::TrailingBytes(1)));
        assert_eq!(
            Message::decode(
                &[0, 2, 0],
                &Limits {
                    max_message_bytes: 2
                }
            ),
            Err(DecodeError::TooLarge { size: 3, limit: 2 })
        );
        assert_eq!(decode(&[2, 0, 1, 0xff]), Err(DecodeError::InvalidUtf8));
    }

    #[test]
    fn reasons_fit_a_close_frame() {
        let err = DecodeError::Truncated {
            needed: u64::MAX,
            available: u64::MAX,
        };
        assert!(err.reason().len() <= 120);
        assert_eq!(truncate_reason("é".repeat(100)).len(), 120);
    }

    fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..64)
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            arb_bytes().prop_map(|b| Message::Sync(SyncMessage::Step1(b))),
            arb_bytes().prop_map(|b| Message::Sync(SyncMessage::Step2(b))),
            arb_bytes().prop_map(|b| Message::Sync(SyncMessage::Update(b))),
            arb_bytes().prop_map(Message::Awareness),
            ".{0,40}".prop_map(|reason| Message::Auth(AuthMessage::PermissionDenied { reason })),
            Just(Message::QueryAwareness),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(msg in arb_message()) {
            prop_assert_eq!(decode(&msg.encode()).unwrap(), msg);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn truncation_is_an_error(msg in arb_message(), cut in 1usize..256) {
            let bytes = msg.encode();
            let keep = bytes.len().saturating_sub(cut);
            prop_assert!(decode(&bytes[..keep]).is_err());
        }
    }
}
