//! The Noise handshake that opens every connection, on top of the stateless retry cookie.
//!
//! # Pattern
//!
//! Relay connections use `Noise_NK_25519_AESGCM_BLAKE2s`: the client knows (pins) the
//! relay's static public key, the relay knows nothing of the client.
//!
//! ```text
//! NK:  <- s
//!      ...
//!      -> e, es        (the SYN, after the retry cookie)
//!      <- e, ee        (the SYN-ACK)
//! ```
//!
//! Why NK rather than IK or XX: clients prove who they are with their token, which now
//! travels inside the encrypted channel, so a client static key would authenticate nothing
//! the relay checks; IK would add a client key per install to manage and two more
//! Diffie-Hellman operations per handshake (es, ss and se instead of es), and XX takes an
//! extra round trip and needs no pinning, which is exactly the weakness pinning removes. NK is
//! one round trip, the relay does two DH operations per handshake (and only after the cookie
//! proved the client's address), and the first message is already encrypted to the relay.
//! The trade-off: the client's first message has no forward secrecy against a later theft of
//! the relay's static key, which is why it carries only the initial sequence number.
//!
//! SDK peer links share a secret instead of a static key and use
//! `Noise_NNpsk0_25519_AESGCM_BLAKE2s`: both sides mix the secret in before the first
//! message, so the secret never travels and a peer that does not hold it fails the handshake.
//!
//! The prologue binds the handshake to the protocol version and the connection id, so a
//! message cannot be replayed under another connection. Ephemeral keys come from the
//! connection's seeded random generator, so the simulator stays reproducible.

use rand::RngCore;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use snow::params::NoiseParams;
use snow::resolvers::{CryptoResolver, DefaultResolver, FallbackResolver};
use snow::types::Random;
use snow::{Builder, HandshakeState};
use thiserror::Error;

use super::Secret;
use crate::packet::{ConnectionId, VERSION};

/// The pattern of relay connections.
pub const RELAY_PATTERN: &str = "Noise_NK_25519_AESGCM_BLAKE2s";
/// The pattern of connections between peers sharing a secret.
pub const PSK_PATTERN: &str = "Noise_NNpsk0_25519_AESGCM_BLAKE2s";
/// Longest handshake message this crate sends or accepts.
pub const MAX_MESSAGE_LEN: usize = 256;

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HandshakeError {
    /// A message did not authenticate: the client pinned another key than the relay holds,
    /// or the peers' pre-shared secrets differ (or a message was forged).
    #[error("handshake did not authenticate: wrong pinned key or pre-shared secret")]
    Rejected,
    /// This side has no key to run the handshake with.
    #[error(
        "no key: a client needs the relay's public key or a pre-shared secret, a server its static key or the secret"
    )]
    NoKey,
    /// A message of the wrong size or an internal state error.
    #[error("malformed handshake message")]
    Malformed,
}

/// How this side authenticates the handshake.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// Client: the relay's pinned static public key (NK).
    PinnedServer([u8; 32]),
    /// Server: its static private key (NK).
    ServerStatic(Secret),
    /// Either side: a pre-shared secret (NNpsk0).
    Psk(Secret),
}

/// Keys a finished handshake yields: what this side sends with, what it receives with.
#[derive(Debug)]
pub struct SplitKeys {
    /// Protects datagrams this side sends.
    pub send: [u8; 32],
    /// Opens datagrams the peer sends.
    pub recv: [u8; 32],
}

/// A client's handshake after its first message.
pub struct Initiator {
    state: HandshakeState,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Initiator(..)")
    }
}

struct SeededRandom(ChaCha20Rng);

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

/// Draws snow's randomness (the ephemeral keys) from a seed, leaving the primitives to the
/// default resolver.
struct SeededResolver(u64);

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRandom(ChaCha20Rng::seed_from_u64(self.0))))
    }
    fn resolve_dh(&self, _: &snow::params::DHChoice) -> Option<Box<dyn snow::types::Dh>> {
        None
    }
    fn resolve_hash(&self, _: &snow::params::HashChoice) -> Option<Box<dyn snow::types::Hash>> {
        None
    }
    fn resolve_cipher(
        &self,
        _: &snow::params::CipherChoice,
    ) -> Option<Box<dyn snow::types::Cipher>> {
        None
    }
}

fn builder(pattern: &str, seed: u64) -> Result<Builder<'static>, HandshakeError> {
    let params: NoiseParams = pattern.parse().map_err(|_| HandshakeError::Malformed)?;
    let resolver = FallbackResolver::new(Box::new(SeededResolver(seed)), Box::new(DefaultResolver));
    Ok(Builder::with_resolver(params, Box::new(resolver)))
}

fn prologue(id: ConnectionId) -> Vec<u8> {
    let mut prologue = b"AetherFlow Quantum".to_vec();
    prologue.push(VERSION);
    prologue.extend_from_slice(id.as_bytes());
    prologue
}

fn build(
    credentials: &Credentials,
    id: ConnectionId,
    seed: u64,
    initiator: bool,
) -> Result<HandshakeState, HandshakeError> {
    let prologue = prologue(id);
    let fail = |_| HandshakeError::Malformed;
    let state = match credentials {
        Credentials::PinnedServer(public) if initiator => builder(RELAY_PATTERN, seed)?
            .prologue(&prologue)
            .map_err(fail)?
            .remote_public_key(public)
            .map_err(fail)?
            .build_initiator(),
        Credentials::ServerStatic(secret) if !initiator => builder(RELAY_PATTERN, seed)?
            .prologue(&prologue)
            .map_err(fail)?
            .local_private_key(secret.as_bytes())
            .map_err(fail)?
            .build_responder(),
        Credentials::Psk(secret) => {
            let builder = builder(PSK_PATTERN, seed)?
                .prologue(&prologue)
                .map_err(fail)?
                .psk(0, secret.as_bytes())
                .map_err(fail)?;
            if initiator {
                builder.build_initiator()
            } else {
                builder.build_responder()
            }
        }
        _ => return Err(HandshakeError::NoKey),
    };
    state.map_err(fail)
}

fn split(state: &mut HandshakeState, initiator: bool) -> SplitKeys {
    let (first, second) = state.dangerously_get_raw_split();
    if initiator {
        SplitKeys {
            send: first,
            recv: second,
        }
    } else {
        SplitKeys {
            send: second,
            recv: first,
        }
    }
}

impl Initiator {
    /// Starts a handshake for connection `id`; returns it and the first message, which
    /// carries `payload` encrypted (to the relay's key under NK).
    pub fn start(
        credentials: &Credentials,
        id: ConnectionId,
        seed: u64,
        payload: &[u8],
    ) -> Result<(Initiator, Vec<u8>), HandshakeError> {
        let mut state = build(credentials, id, seed, true)?;
        let mut message = vec![0u8; MAX_MESSAGE_LEN];
        let len = state
            .write_message(payload, &mut message)
            .map_err(|_| HandshakeError::Malformed)?;
        message.truncate(len);
        Ok((Initiator { state }, message))
    }

    /// Reads the responder's message; on success returns the keys and its payload. A
    /// message that does not authenticate leaves the handshake as it was, so a forged answer
    /// cannot spoil the real one.
    pub fn finish(&mut self, message: &[u8]) -> Result<(SplitKeys, Vec<u8>), HandshakeError> {
        if message.len() > MAX_MESSAGE_LEN {
            return Err(HandshakeError::Malformed);
        }
        let mut payload = vec![0u8; MAX_MESSAGE_LEN];
        let len = self
            .state
            .read_message(message, &mut payload)
            .map_err(|_| HandshakeError::Rejected)?;
        if !self.state.is_handshake_finished() {
            return Err(HandshakeError::Malformed);
        }
        payload.truncate(len);
        Ok((split(&mut self.state, true), payload))
    }
}

/// The responder's whole side: reads the first message, writes the answer carrying
/// `payload`. Returns the keys, the answer and the initiator's payload.
pub fn respond(
    credentials: &Credentials,
    id: ConnectionId,
    seed: u64,
    message: &[u8],
    payload: &[u8],
) -> Result<(SplitKeys, Vec<u8>, Vec<u8>), HandshakeError> {
    if message.len() > MAX_MESSAGE_LEN {
        return Err(HandshakeError::Malformed);
    }
    let mut state = build(credentials, id, seed, false)?;
    let mut theirs = vec![0u8; MAX_MESSAGE_LEN];
    let len = state
        .read_message(message, &mut theirs)
        .map_err(|_| HandshakeError::Rejected)?;
    theirs.truncate(len);
    let mut answer = vec![0u8; MAX_MESSAGE_LEN];
    let len = state
        .write_message(payload, &mut answer)
        .map_err(|_| HandshakeError::Malformed)?;
    answer.truncate(len);
    if !state.is_handshake_finished() {
        return Err(HandshakeError::Malformed);
    }
    Ok((split(&mut state, false), answer, theirs))
}

#[cfg(test)]
mod tests {
    use super::{Credentials, HandshakeError, Initiator, respond};
    use crate::crypto::Keypair;
    use crate::packet::ConnectionId;

    #[test]
    fn nk_agrees_on_keys_and_refuses_a_wrong_pin() {
        let relay = Keypair::from_seed(1);
        let id = ConnectionId::new_v7(1, [1; 10]);
        let client = Credentials::PinnedServer(relay.public);
        let server = Credentials::ServerStatic(relay.secret.clone());
        let (mut initiator, first) = Initiator::start(&client, id, 7, b"isn1").expect("start");
        let (server_keys, answer, payload) =
            respond(&server, id, 8, &first, b"isn2").expect("respond");
        assert_eq!(payload, b"isn1");
        let (client_keys, payload) = initiator.finish(&answer).expect("finish");
        assert_eq!(payload, b"isn2");
        assert_eq!(client_keys.send, server_keys.recv);
        assert_eq!(client_keys.recv, server_keys.send);

        let other = Keypair::from_seed(2);
        let wrong = Credentials::PinnedServer(other.public);
        let (_, first) = Initiator::start(&wrong, id, 7, b"isn1").expect("start");
        assert_eq!(
            respond(&server, id, 8, &first, b"").map(|_| ()),
            Err(HandshakeError::Rejected)
        );
        // Bound to the connection id: the same message under another id does not open.
        let (_, first) = Initiator::start(&client, id, 7, b"isn1").expect("start");
        let other_id = ConnectionId::new_v7(1, [2; 10]);
        assert!(respond(&server, other_id, 8, &first, b"").is_err());
    }

    #[test]
    fn psk_peers_need_the_same_secret() {
        let id = ConnectionId::new_v7(1, [1; 10]);
        let secret = Credentials::Psk(crate::crypto::Secret::from_bytes([9; 32]));
        let wrong = Credentials::Psk(crate::crypto::Secret::from_bytes([8; 32]));
        let (mut initiator, first) = Initiator::start(&secret, id, 1, b"").expect("start");
        let (_, answer, _) = respond(&secret, id, 2, &first, b"").expect("same secret");
        assert!(initiator.finish(&answer).is_ok());
        let (_, first) = Initiator::start(&wrong, id, 1, b"").expect("start");
        assert_eq!(
            respond(&secret, id, 2, &first, b"").map(|_| ()),
            Err(HandshakeError::Rejected)
        );
    }
}
