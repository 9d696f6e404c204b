//! Datagram framing: which datagrams travel in clear and how sealed ones are laid out.
//!
//! Every datagram starts with a 22-byte prefix: magic, version, kind, connection id. A clear
//! datagram (kind 0) follows it with a [`Packet`]'s own bytes; only handshake packets may be
//! clear. A sealed datagram (kind 1, bit 1 the key phase) follows it with the 8-byte packet
//! number and then the packet's bytes encrypted, with a 16-byte tag; the first 30 bytes are
//! the associated data. The layout table is in the crate overview.

use uuid::Uuid;

use crate::crypto::keys::SealHeader;
use crate::packet::{
    COOKIE_LEN, ConnectionId, DecodeError, EncodeError, MAGIC, Packet, VERSION, array_at,
};

pub use crate::packet::{PREFIX_LEN, PROTECTED_PREFIX_LEN};
/// Kind byte of a clear handshake datagram.
pub const KIND_CLEAR: u8 = 0;
/// Kind byte of a sealed datagram (with [`KEY_PHASE`] for the odd key phases).
pub const KIND_SEALED: u8 = 1;
/// The key phase bit of the kind byte.
pub const KEY_PHASE: u8 = 2;

/// A sealed datagram, still encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed<'a> {
    /// The connection it names.
    pub connection_id: ConnectionId,
    /// Packet number and key phase.
    pub header: SealHeader,
    /// The first 30 bytes, authenticated with the ciphertext.
    pub associated_data: &'a [u8],
    /// The encrypted packet and its tag.
    pub ciphertext: &'a [u8],
}

/// A parsed datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// A handshake packet in clear.
    Clear(Packet),
    /// A packet sealed with the connection's keys.
    Sealed(Sealed<'a>),
}

impl Datagram<'_> {
    /// The connection the datagram names.
    pub fn connection_id(&self) -> ConnectionId {
        match self {
            Datagram::Clear(packet) => packet.header.connection_id,
            Datagram::Sealed(sealed) => sealed.connection_id,
        }
    }
}

impl Packet {
    /// The packet as a datagram in clear, the form of the handshake packets.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(PREFIX_LEN + self.encoded_len());
        write_prefix(&mut out, KIND_CLEAR, self.header.connection_id);
        self.encode_inner(&mut out)?;
        Ok(out)
    }

    /// Parses a datagram in clear (a sealed one is [`DecodeError::Sealed`]).
    pub fn decode(datagram: &[u8]) -> Result<Packet, DecodeError> {
        match parse(datagram)? {
            Datagram::Clear(packet) => Ok(packet),
            Datagram::Sealed(_) => Err(DecodeError::Sealed),
        }
    }
}

/// Writes the prefix of a datagram of `kind` for connection `id`.
pub fn write_prefix(out: &mut Vec<u8>, kind: u8, id: ConnectionId) {
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(id.as_bytes());
}

/// Parses the framing of one datagram; a clear one is decoded whole.
pub fn parse(datagram: &[u8]) -> Result<Datagram<'_>, DecodeError> {
    let too_short = DecodeError::TooShort {
        len: datagram.len(),
    };
    let (prefix, rest) = datagram
        .split_first_chunk::<PREFIX_LEN>()
        .ok_or(too_short.clone())?;
    if prefix[0..4] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if prefix[4] != VERSION {
        return Err(DecodeError::UnsupportedVersion(prefix[4]));
    }
    let connection_id = ConnectionId(Uuid::from_bytes(array_at(prefix, 6)));
    match prefix[5] {
        KIND_CLEAR => Ok(Datagram::Clear(Packet::decode_inner(connection_id, rest)?)),
        kind if kind & !KEY_PHASE == KIND_SEALED => {
            let (number, ciphertext) = rest.split_first_chunk::<8>().ok_or(too_short)?;
            Ok(Datagram::Sealed(Sealed {
                connection_id,
                header: SealHeader {
                    number: u64::from_be_bytes(*number),
                    phase: kind & KEY_PHASE != 0,
                },
                associated_data: &datagram[..PROTECTED_PREFIX_LEN],
                ciphertext,
            }))
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

/// The payload of a client's SYN: a marker byte (0 none, 1 a retry cookie follows), the
/// cookie if any, then the first Noise message.
pub fn syn_payload(cookie: Option<&[u8; COOKIE_LEN]>, hello: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + COOKIE_LEN + hello.len());
    match cookie {
        Some(cookie) => {
            out.push(1);
            out.extend_from_slice(cookie);
        }
        None => out.push(0),
    }
    out.extend_from_slice(hello);
    out
}

/// Splits a SYN payload into its cookie (if any) and Noise message.
pub fn parse_syn_payload(payload: &[u8]) -> Result<(Option<[u8; COOKIE_LEN]>, &[u8]), DecodeError> {
    match payload.split_first() {
        Some((0, hello)) => Ok((None, hello)),
        Some((1, rest)) => {
            let (cookie, hello) = rest
                .split_first_chunk::<COOKIE_LEN>()
                .ok_or(DecodeError::BadSyn)?;
            Ok((Some(*cookie), hello))
        }
        _ => Err(DecodeError::BadSyn),
    }
}

#[cfg(test)]
mod tests {
    use super::{Datagram, parse, parse_syn_payload, syn_payload};
    use crate::packet::{ConnectionId, DecodeError};

    #[test]
    fn sealed_framing_and_syn_payloads_parse() {
        let id = ConnectionId::new_v7(1, [3; 10]);
        let mut bytes = Vec::new();
        super::write_prefix(&mut bytes, 3, id);
        bytes.extend_from_slice(&7u64.to_be_bytes());
        bytes.extend_from_slice(&[9; 20]);
        let Ok(Datagram::Sealed(sealed)) = parse(&bytes) else {
            panic!("sealed");
        };
        assert_eq!(sealed.connection_id, id);
        assert_eq!((sealed.header.number, sealed.header.phase), (7, true));
        assert_eq!(sealed.associated_data, &bytes[..30]);
        assert_eq!(sealed.ciphertext, &[9; 20]);
        bytes[5] = 9;
        assert_eq!(parse(&bytes), Err(DecodeError::UnknownKind(9)));
        assert_eq!(
            parse_syn_payload(&syn_payload(Some(&[4; 20]), b"hi")),
            Ok((Some([4; 20]), &b"hi"[..]))
        );
        assert_eq!(
            parse_syn_payload(&syn_payload(None, b"hi")),
            Ok((None, &b"hi"[..]))
        );
        assert_eq!(parse_syn_payload(&[1, 2]), Err(DecodeError::BadSyn));
        assert_eq!(parse_syn_payload(&[]), Err(DecodeError::BadSyn));
    }
}
