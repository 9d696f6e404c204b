//! The Quantum packet: flags, sequence, acknowledgement, up to 8 SACK blocks, then the payload.
//!
//! A [`Packet`] is what the connection state machine reads and writes; on the wire it travels
//! inside a datagram framed by the `wire` module (which also holds [`Packet::to_bytes`] and
//! [`Packet::decode`], the clear form): in clear for the handshake packets (SYN,
//! SYN-ACK, retry cookie, refusal), sealed with the connection's keys for everything else.
//! The byte layout is described in the crate overview. Decoding never panics: every way a
//! datagram can be malformed maps to a [`DecodeError`] variant, and the endpoint drops and
//! counts such datagrams.

use std::fmt;

use thiserror::Error;
use uuid::Uuid;

/// The four bytes every Quantum datagram starts with.
pub const MAGIC: [u8; 4] = *b"AFQM";
/// The protocol version this crate speaks: 2, authenticated encryption (1 was plaintext and
/// is refused).
pub const VERSION: u8 = 2;
/// Length of the packet's own header (flags, sequence, acknowledgement, payload length),
/// inside the datagram framing.
pub const INNER_HEADER_LEN: usize = 11;
/// Every datagram's prefix: magic, version, kind and connection id.
pub const PREFIX_LEN: usize = 22;
/// A sealed datagram's prefix with its 8-byte packet number: the associated data.
pub const PROTECTED_PREFIX_LEN: usize = PREFIX_LEN + 8;
/// Length of the AEAD tag that ends every sealed datagram.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed datagram spends besides SACK blocks and payload: framing with the packet
/// number, the packet's header and the AEAD tag.
pub const HEADER_LEN: usize = PROTECTED_PREFIX_LEN + INNER_HEADER_LEN + TAG_LEN;
/// Length of one SACK block in bytes (start and end sequence numbers).
pub const SACK_BLOCK_LEN: usize = 8;
/// Most SACK blocks a packet may carry.
pub const MAX_SACK_BLOCKS: usize = 8;
/// Longest possible packet overhead: header plus a full set of SACK blocks.
pub const MAX_OVERHEAD: usize = HEADER_LEN + MAX_SACK_BLOCKS * SACK_BLOCK_LEN;

/// The 64-bit sequence number whose low 32 bits are `truncated`, nearest to `expected`: the
/// wire carries sequence numbers truncated to 32 bits.
pub(crate) fn expand_sequence(truncated: u32, expected: u64) -> u64 {
    const SPAN: u64 = 1 << 32;
    let candidate = (expected & !(SPAN - 1)) | u64::from(truncated);
    if candidate + SPAN / 2 <= expected {
        candidate + SPAN
    } else if candidate > expected + SPAN / 2 && candidate >= SPAN {
        candidate - SPAN
    } else {
        candidate
    }
}

/// The header's flag byte: SYN ACK FIN RST FEC PSH URG ECE, from the lowest bit up.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u8);

impl Flags {
    /// No flag set.
    pub const NONE: Flags = Flags(0);
    /// Opens a connection; its sequence number is the sender's initial sequence number.
    pub const SYN: Flags = Flags(0x01);
    /// The acknowledgement field (and any SACK blocks) are meaningful.
    pub const ACK: Flags = Flags(0x02);
    /// The sender has no more messages; consumes one sequence number.
    pub const FIN: Flags = Flags(0x04);
    /// Aborts the connection at once.
    pub const RST: Flags = Flags(0x08);
    /// The payload is forward-error-correction parity (see the `fec` module).
    pub const FEC: Flags = Flags(0x10);
    /// This data packet carries the last fragment of a message.
    pub const PSH: Flags = Flags(0x20);
    /// The payload is a [`Control`] frame rather than message data.
    pub const URG: Flags = Flags(0x40);
    /// Congestion experienced was echoed (reserved; not yet produced).
    pub const ECE: Flags = Flags(0x80);

    /// Builds flags from the raw byte; every byte is a valid combination.
    pub const fn from_bits(bits: u8) -> Flags {
        Flags(bits)
    }

    /// The raw byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every flag in `other` is set in `self`.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for Flags {
    fn bitor_assign(&mut self, rhs: Flags) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 8] = ["SYN", "ACK", "FIN", "RST", "FEC", "PSH", "URG", "ECE"];
        let set: Vec<&str> = (0..8)
            .filter(|bit| self.0 & (1 << bit) != 0)
            .map(|bit| NAMES[bit])
            .collect();
        write!(f, "Flags({})", set.join("|"))
    }
}

/// Identifies a connection independently of addresses; the client draws it as a UUIDv7.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ConnectionId(pub Uuid);

impl ConnectionId {
    /// Builds a UUIDv7 from a Unix time in milliseconds and ten random bytes.
    pub fn new_v7(unix_millis: u64, random: [u8; 10]) -> ConnectionId {
        ConnectionId(uuid::Builder::from_unix_timestamp_millis(unix_millis, &random).into_uuid())
    }

    /// The sixteen bytes as they go on the wire.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A half-open range `[start, end)` of sequence numbers the receiver holds beyond the
/// cumulative acknowledgement.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SackBlock {
    /// First sequence number held.
    pub start: u32,
    /// One past the last sequence number held.
    pub end: u32,
}

/// The fixed part of every packet.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Header {
    /// What kind of packet this is.
    pub flags: Flags,
    /// The connection this packet belongs to.
    pub connection_id: ConnectionId,
    /// The sender's sequence number (low 32 bits).
    pub sequence: u32,
    /// The next sequence number the sender expects from its peer (low 32 bits).
    pub acknowledgement: u32,
}

/// A whole decoded packet.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Packet {
    /// The fixed header.
    pub header: Header,
    /// Selective acknowledgements, at most [`MAX_SACK_BLOCKS`]; only with [`Flags::ACK`].
    pub sack: Vec<SackBlock>,
    /// Message data, a control frame (with [`Flags::URG`]) or a retry cookie (with SYN).
    pub payload: Vec<u8>,
}

/// Why a datagram is not a valid Quantum packet.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Shorter than its header.
    #[error("datagram of {len} bytes is shorter than its header")]
    TooShort {
        /// The datagram's length.
        len: usize,
    },
    /// The first four bytes are not [`MAGIC`].
    #[error("bad magic")]
    BadMagic,
    /// A version this crate does not speak.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// A framing kind byte that is neither clear nor sealed.
    #[error("unknown datagram kind {0}")]
    UnknownKind(u8),
    /// A sealed datagram, which only the connection holding its keys can read.
    #[error("sealed datagram")]
    Sealed,
    /// A SYN payload that is neither a cookie marker with a Noise message nor empty.
    #[error("malformed SYN payload")]
    BadSyn,
    /// The payload length field claims more bytes than the datagram holds.
    #[error("payload length {declared} exceeds the {available} bytes after the header")]
    PayloadTooLong {
        /// The header's payload length.
        declared: usize,
        /// Bytes after the header.
        available: usize,
    },
    /// The bytes between header and payload are not a whole number of SACK blocks.
    #[error("{0} bytes between header and payload are not whole SACK blocks")]
    RaggedSack(usize),
    /// More than [`MAX_SACK_BLOCKS`] SACK blocks.
    #[error("{0} SACK blocks, at most 8 allowed")]
    TooManySackBlocks(usize),
    /// SACK blocks on a packet without the ACK flag.
    #[error("SACK blocks without the ACK flag")]
    SackWithoutAck,
    /// A SACK block that covers nothing or more than half the sequence space.
    #[error("invalid SACK block {start}..{end}")]
    InvalidSackBlock {
        /// The block's start.
        start: u32,
        /// The block's end.
        end: u32,
    },
}

/// Why a packet cannot be encoded; only a bug in the caller produces these.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// More than [`MAX_SACK_BLOCKS`] blocks.
    #[error("{0} SACK blocks, at most 8 allowed")]
    TooManySackBlocks(usize),
    /// SACK blocks on a packet without the ACK flag.
    #[error("SACK blocks without the ACK flag")]
    SackWithoutAck,
    /// Payload longer than the 16-bit length field.
    #[error("payload of {0} bytes exceeds 65535")]
    PayloadTooLong(usize),
}

impl Packet {
    /// Bytes this packet occupies on the wire once sealed (the clear handshake forms are
    /// shorter): what congestion control and the amplification limit count.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.sack.len() * SACK_BLOCK_LEN + self.payload.len()
    }

    /// Appends the packet's own bytes (flags onwards, without the datagram framing) to `out`.
    pub fn encode_inner(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.sack.len() > MAX_SACK_BLOCKS {
            return Err(EncodeError::TooManySackBlocks(self.sack.len()));
        }
        if !self.sack.is_empty() && !self.header.flags.contains(Flags::ACK) {
            return Err(EncodeError::SackWithoutAck);
        }
        let payload_len = u16::try_from(self.payload.len())
            .map_err(|_| EncodeError::PayloadTooLong(self.payload.len()))?;
        out.reserve(INNER_HEADER_LEN + self.sack.len() * SACK_BLOCK_LEN + self.payload.len());
        out.push(self.header.flags.bits());
        out.extend_from_slice(&self.header.sequence.to_be_bytes());
        out.extend_from_slice(&self.header.acknowledgement.to_be_bytes());
        out.extend_from_slice(&payload_len.to_be_bytes());
        for block in &self.sack {
            out.extend_from_slice(&block.start.to_be_bytes());
            out.extend_from_slice(&block.end.to_be_bytes());
        }
        out.extend_from_slice(&self.payload);
        Ok(())
    }

    /// Parses the packet's own bytes (flags onwards) of connection `connection_id`.
    pub fn decode_inner(connection_id: ConnectionId, bytes: &[u8]) -> Result<Packet, DecodeError> {
        let (fixed, rest) = bytes
            .split_first_chunk::<INNER_HEADER_LEN>()
            .ok_or(DecodeError::TooShort { len: bytes.len() })?;
        let flags = Flags::from_bits(fixed[0]);
        let header = Header {
            flags,
            connection_id,
            sequence: u32::from_be_bytes(array_at(fixed, 1)),
            acknowledgement: u32::from_be_bytes(array_at(fixed, 5)),
        };
        let declared = usize::from(u16::from_be_bytes(array_at(fixed, 9)));
        let sack_len = rest
            .len()
            .checked_sub(declared)
            .ok_or(DecodeError::PayloadTooLong {
                declared,
                available: rest.len(),
            })?;
        let (sack_bytes, payload) = rest.split_at(sack_len);
        let sack = decode_sack(flags, sack_bytes)?;
        Ok(Packet {
            header,
            sack,
            payload: payload.to_vec(),
        })
    }
}

fn decode_sack(flags: Flags, bytes: &[u8]) -> Result<Vec<SackBlock>, DecodeError> {
    if !bytes.chunks_exact(SACK_BLOCK_LEN).remainder().is_empty() {
        return Err(DecodeError::RaggedSack(bytes.len()));
    }
    let count = bytes.len() / SACK_BLOCK_LEN;
    if count > MAX_SACK_BLOCKS {
        return Err(DecodeError::TooManySackBlocks(count));
    }
    if count > 0 && !flags.contains(Flags::ACK) {
        return Err(DecodeError::SackWithoutAck);
    }
    bytes
        .chunks_exact(SACK_BLOCK_LEN)
        .map(|chunk| {
            let start = u32::from_be_bytes(array_at(chunk, 0));
            let end = u32::from_be_bytes(array_at(chunk, 4));
            let span = end.wrapping_sub(start);
            if span == 0 || span > 1 << 31 {
                return Err(DecodeError::InvalidSackBlock { start, end });
            }
            Ok(SackBlock { start, end })
        })
        .collect()
}

/// Copies `N` bytes at `at`; callers pass offsets inside a slice whose length they checked.
pub(crate) fn array_at<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

/// Length of a retry cookie: a 4-byte time bucket and a 16-byte keyed hash.
pub const COOKIE_LEN: usize = 20;

/// A control frame, the payload of a packet with [`Flags::URG`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Control {
    /// The server's stateless answer to a SYN without a valid cookie: echo this in the next SYN.
    Retry([u8; COOKIE_LEN]),
    /// Asks the peer to prove it receives packets at the address this came from.
    PathChallenge(u64),
    /// Answers a [`Control::PathChallenge`] with its token.
    PathResponse(u64),
    /// How many data packets the receiver has rebuilt from FEC parity so far (modulo 2^32),
    /// so the sender can count them as losses.
    FecRepaired(u32),
    /// The relay's answer in clear to a SYN whose Noise message did not authenticate: the
    /// client pinned another key (or holds another pre-shared secret).
    Refused,
}

/// Why a control frame is malformed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ControlError {
    /// An unknown type byte, or no bytes at all.
    #[error("unknown control frame type {0:?}")]
    UnknownType(Option<u8>),
    /// The body has the wrong length for its type.
    #[error("control frame type {kind} has {len} body bytes")]
    BadLength {
        /// The type byte.
        kind: u8,
        /// The body's length.
        len: usize,
    },
}

impl Control {
    const RETRY: u8 = 1;
    const PATH_CHALLENGE: u8 = 2;
    const PATH_RESPONSE: u8 = 3;
    const FEC_REPAIRED: u8 = 4;
    const REFUSED: u8 = 5;

    /// The frame's bytes: one type byte, then a fixed-length body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + COOKIE_LEN);
        match self {
            Control::Retry(cookie) => {
                out.push(Self::RETRY);
                out.extend_from_slice(cookie);
            }
            Control::PathChallenge(token) => {
                out.push(Self::PATH_CHALLENGE);
                out.extend_from_slice(&token.to_be_bytes());
            }
            Control::PathResponse(token) => {
                out.push(Self::PATH_RESPONSE);
                out.extend_from_slice(&token.to_be_bytes());
            }
            Control::FecRepaired(count) => {
                out.push(Self::FEC_REPAIRED);
                out.extend_from_slice(&count.to_be_bytes());
            }
            Control::Refused => out.push(Self::REFUSED),
        }
        out
    }

    /// Parses a frame.
    pub fn decode(bytes: &[u8]) -> Result<Control, ControlError> {
        let (&kind, body) = bytes.split_first().ok_or(ControlError::UnknownType(None))?;
        let bad_length = ControlError::BadLength {
            kind,
            len: body.len(),
        };
        match kind {
            Self::RETRY => body.try_into().map(Control::Retry).map_err(|_| bad_length),
            Self::PATH_CHALLENGE | Self::PATH_RESPONSE => {
                let token: [u8; 8] = body.try_into().map_err(|_| bad_length)?;
                let token = u64::from_be_bytes(token);
                Ok(if kind == Self::PATH_CHALLENGE {
                    Control::PathChallenge(token)
                } else {
                    Control::PathResponse(token)
                })
            }
            Self::FEC_REPAIRED => body
                .try_into()
                .map(|count| Control::FecRepaired(u32::from_be_bytes(count)))
                .map_err(|_| bad_length),
            Self::REFUSED if body.is_empty() => Ok(Control::Refused),
            Self::REFUSED => Err(bad_length),
            other => Err(ControlError::UnknownType(Some(other))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Packet {
        Packet {
            header: Header {
                flags: Flags::ACK | Flags::PSH,
                connection_id: ConnectionId::new_v7(1_700_000_000_000, [7; 10]),
                sequence: 0x0102_0304,
                acknowledgement: 0x0a0b_0c0d,
            },
            sack: vec![SackBlock { start: 10, end: 12 }],
            payload: b"hi".to_vec(),
        }
    }

    #[test]
    fn layout_matches_the_documented_offsets() {
        let packet = sample();
        let bytes = packet.to_bytes().expect("valid packet");
        assert_eq!(bytes.len(), 22 + 11 + 8 + 2);
        assert_eq!(&bytes[0..4], b"AFQM");
        assert_eq!(bytes[4], 2);
        assert_eq!(bytes[5], 0, "in clear");
        assert_eq!(&bytes[6..22], packet.header.connection_id.as_bytes());
        assert_eq!(bytes[22], 0x22);
        assert_eq!(&bytes[23..27], &[1, 2, 3, 4]);
        assert_eq!(&bytes[27..31], &[0x0a, 0x0b, 0x0c, 0x0d]);
        assert_eq!(&bytes[31..33], &[0, 2]);
        assert_eq!(&bytes[33..41], &[0, 0, 0, 10, 0, 0, 0, 12]);
        assert_eq!(&bytes[41..], b"hi");
        assert_eq!(packet.header.connection_id.0.get_version_num(), 7);
    }

    #[test]
    fn malformed_datagrams_map_to_typed_errors() {
        let good = sample().to_bytes().expect("valid packet");
        assert_eq!(
            Packet::decode(&good[..21]),
            Err(DecodeError::TooShort { len: 21 })
        );
        assert_eq!(
            Packet::decode(&good[..32]),
            Err(DecodeError::TooShort { len: 10 })
        );
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(Packet::decode(&bad), Err(DecodeError::BadMagic));
        let mut bad = good.clone();
        bad[4] = 1;
        assert_eq!(
            Packet::decode(&bad),
            Err(DecodeError::UnsupportedVersion(1)),
            "the plaintext version 1 is refused: no downgrade"
        );
        let mut bad = good.clone();
        bad[32] = 200;
        assert!(matches!(
            Packet::decode(&bad),
            Err(DecodeError::PayloadTooLong { declared: 200, .. })
        ));
        let mut bad = good.clone();
        bad.insert(35, 0);
        assert_eq!(Packet::decode(&bad), Err(DecodeError::RaggedSack(9)));
        let mut bad = good.clone();
        bad[22] = Flags::PSH.bits();
        assert_eq!(Packet::decode(&bad), Err(DecodeError::SackWithoutAck));
        let mut bad = good.clone();
        bad[40] = 10;
        assert_eq!(
            Packet::decode(&bad),
            Err(DecodeError::InvalidSackBlock { start: 10, end: 10 })
        );
        let mut bad = good;
        bad[5] = 1;
        assert_eq!(Packet::decode(&bad), Err(DecodeError::Sealed));
    }

    #[test]
    fn control_frames_round_trip_and_reject_bad_lengths() {
        for frame in [
            Control::Retry([3; COOKIE_LEN]),
            Control::PathChallenge(42),
            Control::PathResponse(u64::MAX),
            Control::FecRepaired(7),
            Control::Refused,
        ] {
            assert_eq!(Control::decode(&frame.to_bytes()), Ok(frame));
        }
        assert_eq!(Control::decode(&[]), Err(ControlError::UnknownType(None)));
        assert_eq!(
            Control::decode(&[2, 1]),
            Err(ControlError::BadLength { kind: 2, len: 1 })
        );
        assert_eq!(
            Control::decode(&[4, 0, 0, 1]),
            Err(ControlError::BadLength { kind: 4, len: 3 })
        );
    }

    fn arb_packet() -> impl Strategy<Value = Packet> {
        let sack = prop::collection::vec((any::<u32>(), 1u32..=1 << 31), 0..=MAX_SACK_BLOCKS);
        (
            any::<u8>(),
            any::<[u8; 16]>(),
            any::<u32>(),
            any::<u32>(),
            sack,
            prop::collection::vec(any::<u8>(), 0..1500),
        )
            .prop_map(|(flags, id, sequence, acknowledgement, sack, payload)| {
                let mut flags = Flags::from_bits(flags);
                if !sack.is_empty() {
                    flags |= Flags::ACK;
                }
                Packet {
                    header: Header {
                        flags,
                        connection_id: ConnectionId(Uuid::from_bytes(id)),
                        sequence,
                        acknowledgement,
                    },
                    sack: sack
                        .into_iter()
                        .map(|(start, span)| SackBlock {
                            start,
                            end: start.wrapping_add(span),
                        })
                        .collect(),
                    payload,
                }
            })
    }

    proptest! {
        #[test]
        fn round_trip(packet in arb_packet()) {
            let bytes = packet.to_bytes().expect("strategy builds valid packets");
            prop_assert_eq!(bytes.len() + HEADER_LEN - INNER_HEADER_LEN - 22, packet.encoded_len());
            prop_assert_eq!(Packet::decode(&bytes), Ok(packet));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = Packet::decode(&bytes);
            let _ = Control::decode(&bytes);
        }

        #[test]
        fn valid_headers_with_arbitrary_tails_never_panic(
            tail in prop::collection::vec(any::<u8>(), 0..120),
            flags in any::<u8>(),
            len in any::<u16>(),
        ) {
            let mut bytes = MAGIC.to_vec();
            bytes.push(VERSION);
            bytes.push(0);
            bytes.extend_from_slice(&[0; 16]);
            bytes.push(flags);
            bytes.extend_from_slice(&[0; 8]);
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.extend_from_slice(&tail);
            if let Ok(packet) = Packet::decode(&bytes) {
                prop_assert_eq!(packet.to_bytes().expect("decoded packets re-encode"), bytes);
            }
        }
    }
}
