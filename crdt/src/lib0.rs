//! lib0 v1 encoding primitives, as used by Yjs and y-protocols.
//!
//! Only what the sync protocol needs: variable-length unsigned integers (7 bits per byte, least
//! significant group first, high bit = "more bytes follow"), length-prefixed byte arrays and
//! length-prefixed UTF-8 strings. The [`Reader`] never allocates based on a declared length: it
//! hands out borrowed slices after checking that the bytes are actually there.

use crate::decode::DecodeError;

/// Longest valid varuint encoding of a `u64` (10 × 7 bits ≥ 64 bits).
const MAX_VARUINT_BYTES: usize = 10;

/// Appends `value` as a lib0 varuint.
pub fn write_var_uint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        // Truncation is the point: keep the low 7 bits and set the continuation bit.
        buf.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// Appends `bytes` prefixed with their length as a varuint.
pub fn write_var_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    write_var_uint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// Appends `s` as a lib0 var string (varuint byte length, then UTF-8 bytes).
pub fn write_var_string(buf: &mut Vec<u8>, s: &str) {
    write_var_bytes(buf, s.as_bytes());
}

/// A cursor over a byte slice that decodes lib0 v1 values.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Reads one byte.
    pub fn read_u8(&mut self) -> Result<u8, DecodeError> {
        let byte = *self.buf.get(self.pos).ok_or(DecodeError::Truncated {
            needed: 1,
            available: 0,
        })?;
        self.pos += 1;
        Ok(byte)
    }

    /// Reads a varuint; more than 10 bytes or a value above `u64::MAX` is
    /// [`DecodeError::VarIntOverflow`].
    pub fn read_var_uint(&mut self) -> Result<u64, DecodeError> {
        let mut value: u64 = 0;
        for i in 0..MAX_VARUINT_BYTES {
            let byte = self.read_u8()?;
            let bits = u64::from(byte & 0x7f);
            let shift = 7 * i as u32;
            // The tenth byte may only carry the single top bit of a u64.
            if i == MAX_VARUINT_BYTES - 1 && bits > 1 {
                return Err(DecodeError::VarIntOverflow);
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::VarIntOverflow)
    }

    /// Reads exactly `len` bytes, borrowing them from the input.
    pub fn read_exact(&mut self, len: u64) -> Result<&'a [u8], DecodeError> {
        let available = self.remaining();
        let Some(len) = usize::try_from(len).ok().filter(|&l| l <= available) else {
            return Err(DecodeError::Truncated {
                needed: len,
                available: available as u64,
            });
        };
        let slice = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(slice)
    }

    /// Reads a varuint length followed by that many bytes.
    pub fn read_var_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.read_var_uint()?;
        self.read_exact(len)
    }

    /// Reads a var string; invalid UTF-8 is [`DecodeError::InvalidUtf8`].
    pub fn read_var_string(&mut self) -> Result<&'a str, DecodeError> {
        let bytes = self.read_var_bytes()?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)
    }

    /// Succeeds only if every byte has been consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varuint_known_encodings() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0]),
            (1, &[1]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for &(value, bytes) in cases {
            let mut buf = Vec::new();
            write_var_uint(&mut buf, value);
            assert_eq!(buf, bytes, "encoding {value}");
            let mut r = Reader::new(bytes);
            assert_eq!(r.read_var_uint().unwrap(), value);
            assert_eq!(r.remaining(), 0);
        }
    }

    #[test]
    fn varuint_overflow_is_an_error() {
        // Eleven bytes with continuation bits.
        let mut r = Reader::new(&[0xff; 11]);
        assert_eq!(r.read_var_uint(), Err(DecodeError::VarIntOverflow));
        // Ten bytes whose last one carries more than the top bit of a u64.
        let mut bytes = [0xff; 10];
        bytes[9] = 0x02;
        assert_eq!(
            Reader::new(&bytes).read_var_uint(),
            Err(DecodeError::VarIntOverflow)
        );
    }

    #[test]
    fn varuint_truncated_is_an_error() {
        let mut r = Reader::new(&[0x80, 0x80]);
        assert!(matches!(
            r.read_var_uint(),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn declared_length_beyond_input_is_truncated() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2]);
        assert_eq!(
            r.read_var_bytes(),
            Err(DecodeError::Truncated {
                needed: 0xffff_ffff,
                available: 2
            })
        );
    }

    #[test]
    fn var_string_rejects_invalid_utf8() {
        let mut r = Reader::new(&[2, 0xc3, 0x28]);
        assert_eq!(r.read_var_string(), Err(DecodeError::InvalidUtf8));
    }

    proptest! {
        #[test]
        fn varuint_round_trip(value: u64) {
            let mut buf = Vec::new();
            write_var_uint(&mut buf, value);
            let mut r = Reader::new(&buf);
            prop_assert_eq!(r.read_var_uint().unwrap(), value);
            prop_assert!(r.finish().is_ok());
        }

        #[test]
        fn var_string_round_trip(s in ".*") {
            let mut buf = Vec::new();
            write_var_string(&mut buf, &s);
            let mut r = Reader::new(&buf);
            prop_assert_eq!(r.read_var_string().unwrap(), s.as_str());
            prop_assert!(r.finish().is_ok());
        }
    }
}
