//! Where the connection meets packet protection: sealing what goes out, opening what comes
//! in, and the short list of packets allowed in clear. Nothing that fails here changes any
//! state but a counter.

use std::net::SocketAddr;
use std::time::Instant;

use super::{Connection, Role, State};
use crate::crypto::OpenError;
use crate::packet::{Control, Flags, Packet};
use crate::wire::{self, Datagram, KEY_PHASE, KIND_SEALED, PROTECTED_PREFIX_LEN, Sealed};

impl Connection {
    /// Feeds one datagram that arrived from `remote`. Malformed datagrams are counted and
    /// dropped; nothing a peer sends can make this panic.
    pub fn handle(&mut self, now: Instant, remote: SocketAddr, datagram: &[u8]) {
        match wire::parse(datagram) {
            Ok(parsed) if parsed.connection_id() == self.id => {
                self.handle_datagram(now, remote, parsed, datagram.len());
            }
            Ok(_) => {}
            Err(_) => self.stats.malformed += 1,
        }
    }

    /// Handles a parsed datagram of `len` bytes addressed to this connection: a sealed one
    /// only if it authenticates and is no replay, one in clear only if it is a handshake
    /// packet this state expects.
    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        datagram: Datagram<'_>,
        len: usize,
    ) {
        match datagram {
            Datagram::Clear(packet) => {
                if self.clear_allowed(remote, &packet) {
                    self.handle_packet(now, remote, packet, len);
                } else {
                    self.stats.clear_dropped += 1;
                }
            }
            Datagram::Sealed(sealed) => {
                if let Some(packet) = self.open(now, &sealed) {
                    self.handle_packet(now, remote, packet, len);
                }
            }
        }
    }

    /// Authenticates, decrypts and decodes a sealed datagram.
    fn open(&mut self, now: Instant, sealed: &Sealed<'_>) -> Option<Packet> {
        let Some(keys) = self.keys.as_mut() else {
            self.stats.auth_failures += 1;
            return None;
        };
        // Datagrams reordered across a key update open with the old key this long.
        let lifetime = self.rtt.rto() * 3;
        let mut plain = std::mem::take(&mut self.open_buf);
        let opened = keys.open(
            now,
            sealed.header,
            sealed.associated_data,
            sealed.ciphertext,
            &mut plain,
            lifetime,
        );
        let packet = match opened {
            Ok(()) => Packet::decode_inner(self.id, &plain)
                .inspect_err(|_| self.stats.malformed += 1)
                .ok(),
            Err(OpenError::Forged) => {
                self.stats.auth_failures += 1;
                None
            }
            Err(OpenError::Replayed) => {
                self.stats.replays_dropped += 1;
                None
            }
        };
        self.open_buf = plain;
        packet
    }

    /// Which packets may arrive in clear: the handshake's, from the peer's address, in the
    /// state that expects them. A SYN-ACK repeated after the handshake counts only if it is
    /// the very one that completed it (our acknowledgement of it was lost).
    fn clear_allowed(&self, remote: SocketAddr, packet: &Packet) -> bool {
        if remote != self.remote {
            return false;
        }
        let flags = packet.header.flags;
        let syn_ack = Flags::SYN | Flags::ACK;
        match (self.role, self.state) {
            (Role::Server, State::SynReceived) => flags == Flags::SYN,
            (Role::Client, State::SynSent) if flags == syn_ack => true,
            (Role::Client, State::SynSent) if flags == Flags::URG => matches!(
                Control::decode(&packet.payload),
                Ok(Control::Retry(_) | Control::Refused)
            ),
            (Role::Client, State::Established) => {
                flags == syn_ack && packet.payload == self.peer_hello
            }
            _ => false,
        }
    }

    /// The wire form of `packet`: handshake packets in clear, everything else sealed. `None`
    /// if the packet needs keys this side does not have yet.
    pub(super) fn seal(&mut self, now: Instant, packet: &Packet) -> Option<Vec<u8>> {
        if packet.header.flags.contains(Flags::SYN) {
            return Some(
                packet
                    .to_bytes()
                    .expect("the core builds packets within the format's limits"),
            );
        }
        let keys = self.keys.as_mut()?;
        let header = keys.next_header(now);
        let kind = if header.phase {
            KIND_SEALED | KEY_PHASE
        } else {
            KIND_SEALED
        };
        let mut out = Vec::with_capacity(packet.encoded_len());
        wire::write_prefix(&mut out, kind, self.id);
        out.extend_from_slice(&header.number.to_be_bytes());
        packet
            .encode_inner(&mut out)
            .expect("the core builds packets within the format's limits");
        let (ad, body) = out.split_at_mut(PROTECTED_PREFIX_LEN);
        let tag = keys.seal(header.number, ad, body);
        out.extend_from_slice(&tag);
        Some(out)
    }

    /// Seals a hand-built packet exactly as this connection seals its own (taking the next
    /// packet number), without sending or recording it: for tests and fuzzing that play a
    /// misbehaving but authenticated peer. Sending the result can break the protocol.
    #[doc(hidden)]
    pub fn seal_raw(&mut self, now: Instant, packet: &Packet) -> Option<Vec<u8>> {
        self.seal(now, packet)
    }

    /// Reads a datagram this connection sent, for diagnostics and tests: what a key log
    /// shows. Changes nothing.
    pub fn inspect_sent(&self, datagram: &[u8]) -> Option<Packet> {
        match wire::parse(datagram).ok()? {
            Datagram::Clear(packet) => Some(packet),
            Datagram::Sealed(sealed) => {
                let keys = self.keys.as_ref()?;
                let plain =
                    keys.inspect_sent(sealed.header, sealed.associated_data, sealed.ciphertext)?;
                Packet::decode_inner(self.id, &plain).ok()
            }
        }
    }
}
