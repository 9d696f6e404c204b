//! The connection's hooks into forward error correction (see [`crate::fec`]): parity out
//! after first transmissions, parity in, repairs fed through the normal receive path, and
//! repair reports turned into losses for congestion control.

use std::time::Instant;

use super::{Connection, Transmit};
use crate::fec::FecConfig;
use crate::fec::receiver::FecReceiver;
use crate::fec::sender::{FecSender, SendContext};
use crate::packet::{Control, Flags, Header, Packet};

/// Most repairs one report may announce; a larger jump is capped, so a confused or hostile
/// peer cannot make one report collapse the congestion window by an absurd amount.
const MAX_REPAIRS_PER_REPORT: u32 = 1024;

/// FEC state of one connection, both directions.
#[derive(Debug)]
pub(super) struct FecLink {
    /// Groups our first transmissions and sizes parity.
    pub tx: FecSender,
    /// Rebuilds the peer's lost data packets.
    rx: FecReceiver,
    /// Data packets rebuilt so far, modulo 2³², as reported to the peer.
    repaired_total: u32,
    /// `repaired_total` grew since the last report.
    report_due: bool,
    /// The peer's latest reported total.
    peer_total: u32,
}

impl FecLink {
    pub fn new(config: FecConfig) -> FecLink {
        FecLink {
            tx: FecSender::new(config),
            rx: FecReceiver::default(),
            repaired_total: 0,
            report_due: false,
            peer_total: 0,
        }
    }

    /// Remembers an arriving data packet's shard, if it lies inside the receive window.
    pub fn record_data(&mut self, seq: u64, packet: &Packet, ack: u64, window: u64) {
        if seq >= ack + window {
            return;
        }
        let flags = packet.header.flags;
        let shard = crate::fec::group_shard(
            flags.contains(Flags::PSH),
            flags.contains(Flags::FIN),
            &packet.payload,
        );
        self.rx.on_data(seq, shard, ack);
    }
}

impl Connection {
    /// A data packet went out for the first time: add it to the open group.
    pub(super) fn fec_on_first_transmit(&mut self, now: Instant, seq: u64, packet: &Packet) {
        let flags = packet.header.flags;
        let context = SendContext {
            app_limited: self.send.nothing_to_send(),
            probe_timeout: self.probe_timeout(),
        };
        let closed = self.fec.tx.on_data_sent(
            now,
            seq,
            (
                flags.contains(Flags::PSH),
                flags.contains(Flags::FIN),
                &packet.payload,
            ),
            context,
        );
        if let Some(range) = closed {
            self.send.defer_loss(range, now);
        }
    }

    /// Closes the open group if its flush deadline passed.
    pub(super) fn fec_timeout(&mut self, now: Instant) {
        if let Some(range) = self.fec.tx.on_timeout(now) {
            self.send.defer_loss(range, now);
        }
    }

    /// Queued parity first, then a repair report.
    pub(super) fn poll_fec(&mut self, now: Instant) -> Option<Transmit> {
        if let Some(parity) = self.fec.tx.poll() {
            let packet = self.packet(Flags::FEC, self.send.next_seq(), parity.payload);
            let transmit = self.emit(now, self.remote, &packet)?;
            self.stats.fec_packets_sent += 1;
            self.stats.fec_bytes_sent += transmit.contents.len() as u64;
            return Some(transmit);
        }
        if self.fec.report_due {
            self.fec.report_due = false;
            // Receivers ignore the acknowledgement on control frames, so the report carries
            // none and leaves any acknowledgement due to the next packet.
            let packet = Packet {
                header: Header {
                    flags: Flags::URG,
                    connection_id: self.id,
                    sequence: self.send.next_seq() as u32,
                    acknowledgement: 0,
                },
                sack: Vec::new(),
                payload: Control::FecRepaired(self.fec.repaired_total).to_bytes(),
            };
            return self.emit(now, self.remote, &packet);
        }
        None
    }

    /// A parity packet arrived.
    pub(super) fn handle_parity(&mut self, now: Instant, payload: &[u8]) {
        let Some(recv) = self.recv.as_ref() else {
            return;
        };
        let accepted = self
            .fec
            .rx
            .on_parity(payload, recv.ack(), self.config.window_packets);
        if accepted.is_err() {
            self.stats.fec_rejected += 1;
            return;
        }
        self.fec_repair(now);
    }

    /// Feeds every packet the held shards can rebuild through the normal receive path.
    pub(super) fn fec_repair(&mut self, now: Instant) {
        loop {
            let (repaired, errors) = self.fec.rx.repair();
            self.stats.fec_rejected += errors.len() as u64;
            if repaired.is_empty() {
                return;
            }
            for packet in repaired {
                let mut flags = Flags::NONE;
                if packet.shard.last {
                    flags |= Flags::PSH;
                }
                if packet.shard.fin {
                    flags |= Flags::FIN;
                }
                let header = Header {
                    flags,
                    connection_id: self.id,
                    sequence: packet.seq as u32,
                    acknowledgement: 0,
                };
                let rebuilt = Packet {
                    header,
                    sack: Vec::new(),
                    payload: packet.shard.payload,
                };
                if self.handle_data(now, rebuilt) {
                    self.stats.fec_repaired += 1;
                    self.fec.repaired_total = self.fec.repaired_total.wrapping_add(1);
                    self.fec.report_due = true;
                }
            }
        }
    }

    /// The peer reported its running total of repairs.
    pub(super) fn on_repairs_reported(&mut self, now: Instant, total: u32) {
        let new = total.wrapping_sub(self.fec.peer_total);
        // An older report overtaken by a newer one looks like a huge jump: ignore it.
        if new == 0 || new > 1 << 31 {
            return;
        }
        self.fec.peer_total = total;
        let new = new.min(MAX_REPAIRS_PER_REPORT);
        self.stats.fec_repairs_reported += u64::from(new);
        self.fec.tx.meter.on_lost(u64::from(new));
        self.repairs_as_congestion(now, u64::from(new));
    }

    /// The one place FEC tells congestion control anything: repaired packets were lost on the
    /// wire. Their exact send times are unknown (they were acknowledged normally), so they
    /// count as sent one round trip ago, the most recent send time they can have had.
    fn repairs_as_congestion(&mut self, now: Instant, packets: u64) {
        let rtt = self.rtt.smoothed().unwrap_or(self.config.initial_rto);
        let sent = now.checked_sub(rtt).unwrap_or(now);
        let bytes = packets * self.config.mtu as u64;
        self.cc.on_loss(now, bytes, sent);
    }
}
