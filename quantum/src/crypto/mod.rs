//! Authenticated encryption for Quantum: the Noise handshake ([`handshake`]), packet
//! protection with key updates ([`keys`]) and the replay window ([`replay`]).
//!
//! There is no plaintext mode. Only three kinds of datagram travel in clear: the client's
//! SYN (a retry cookie and the first Noise message), the relay's retry cookie or refusal,
//! and the SYN-ACK (the second Noise message). Everything after is sealed; see the crate
//! docs for the byte layout and the threat model.
//!
//! ```
//! use aetherflow_quantum::crypto::Keypair;
//!
//! let relay = Keypair::from_seed(7);
//! assert_eq!(Keypair::from_secret(relay.secret.clone()).public, relay.public);
//! assert_eq!(relay.public_hex().len(), 64);
//! ```

pub mod handshake;
pub mod keys;
pub mod replay;

pub use handshake::{Credentials, HandshakeError};
pub use keys::{OpenError, PacketKeys, TAG_LEN};

use rand::{RngCore, SeedableRng};
use snow::params::DHChoice;
use snow::resolvers::{CryptoResolver, DefaultResolver};

/// A 32-byte secret (a static private key or a pre-shared key); its `Debug` shows nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; 32]);

impl Secret {
    /// Wraps raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Secret {
        Secret(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A Curve25519 static key pair, the relay's identity.
#[derive(Debug, Clone)]
pub struct Keypair {
    /// The private half; keep it in a file only its owner reads.
    pub secret: Secret,
    /// The public half, which clients pin.
    pub public: [u8; 32],
}

impl Keypair {
    /// A key pair from a secret (any 32 bytes are a valid X25519 private key).
    pub fn from_secret(secret: Secret) -> Keypair {
        let mut public = [0u8; 32];
        if let Some(mut dh) = DefaultResolver.resolve_dh(&DHChoice::Curve25519) {
            dh.set(secret.as_bytes());
            public.copy_from_slice(dh.pubkey());
        }
        Keypair { secret, public }
    }

    /// A fresh key pair from a random generator.
    pub fn generate(rng: &mut impl RngCore) -> Keypair {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        Keypair::from_secret(Secret(secret))
    }

    /// A key pair derived from a number: for tests and examples only.
    pub fn from_seed(seed: u64) -> Keypair {
        Keypair::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(seed))
    }

    /// The public key as 64 lower-case hex digits, the form the relay prints and serves.
    pub fn public_hex(&self) -> String {
        to_hex(&self.public)
    }
}

/// The pre-shared key of a group of peers that share `secret` (a passphrase of any length):
/// BLAKE2s-256 of a label and the secret. The handshake mixes it in through HKDF, so the
/// secret itself never travels.
pub fn psk_from_secret(secret: &[u8]) -> Secret {
    let mut out = [0u8; 32];
    if let Some(mut hash) = DefaultResolver.resolve_hash(&snow::params::HashChoice::Blake2s) {
        hash.reset();
        hash.input(b"aetherflow quantum peer psk v1\0");
        hash.input(secret);
        let mut digest = [0u8; 64];
        hash.result(&mut digest);
        out.copy_from_slice(&digest[..32]);
    }
    Secret(out)
}

/// 32 bytes as 64 lower-case hex digits.
pub fn to_hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits (either case) into 32 bytes.
pub fn from_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (index, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * index..2 * index + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::{from_hex, psk_from_secret, to_hex};

    #[test]
    fn peer_secrets_map_to_distinct_keys() {
        assert_eq!(psk_from_secret(b"a"), psk_from_secret(b"a"));
        assert_ne!(psk_from_secret(b"a"), psk_from_secret(b"a "));
        assert_ne!(psk_from_secret(b"").as_bytes(), &[0; 32]);
    }

    #[test]
    fn hex_round_trips_and_rejects_junk() {
        let bytes = [0xab; 32];
        assert_eq!(from_hex(&to_hex(&bytes)), Some(bytes));
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex(&"g".repeat(64)), None);
        assert_eq!(from_hex(&"é".repeat(32)), None);
    }
}
