//! The sending half of a connection: fragments waiting, in flight, lost and acknowledged.
//!
//! Sequence numbers are 64-bit inside the core and truncated to 32 bits on the wire. Loss
//! detection follows RACK (RFC 8985) in spirit: every transmission gets an order number, and a
//! packet is lost once a packet transmitted after it has been acknowledged and either three
//! later transmissions were acknowledged (the duplicate-acknowledgement threshold of RFC 6675)
//! or a time threshold of 9/8 RTT has passed (so mild reordering is not mistaken for loss).
//! Ordering by transmission rather than by sequence number lets a lost retransmission be
//! detected the same way as a lost original.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::congestion::RateSample;
use crate::congestion::delivery::{AckSampler, DeliveryRate, SendState};

/// Acknowledged later transmissions after which an earlier one counts as lost.
pub const DUP_THRESHOLD: u64 = 3;

/// One sequence number's worth of data.
#[derive(Debug, Clone)]
pub(crate) struct Fragment {
    /// Message bytes.
    pub payload: Vec<u8>,
    /// Last fragment of its message (sent with PSH).
    pub last: bool,
    /// The sender's FIN; carries no payload.
    pub fin: bool,
}

#[derive(Debug)]
struct Outstanding {
    fragment: Fragment,
    /// When it was last transmitted; `None` before the first transmission.
    sent_at: Option<Instant>,
    /// Order number of the latest transmission.
    tx_order: u64,
    /// Transmitted more than once, so its acknowledgement gives no RTT sample (Karn).
    retransmitted: bool,
    /// Counted in `bytes_in_flight`.
    in_flight: bool,
    /// Bytes on the wire of the latest transmission.
    size: u64,
    /// Delivery-rate snapshot of the latest transmission.
    rate: Option<SendState>,
    /// FEC parity covering this transmission went out at this instant with this order
    /// number; loss is judged from there, giving the receiver time to repair it.
    loss_anchor: Option<(Instant, u64)>,
    /// Time since the previous data transmission when this one went out; `None` for the
    /// first. A gap longer than the peer's ACK delay means the peer acknowledges it at once.
    gap_before: Option<Duration>,
}

/// What an acknowledgement changed.
#[derive(Debug, Default)]
pub(crate) struct AckResult {
    /// Bytes newly acknowledged.
    pub acked_bytes: u64,
    /// Packets newly acknowledged.
    pub acked_packets: u64,
    /// RTT sample from the newest newly acknowledged packet, if never retransmitted.
    pub rtt_sample: Option<Duration>,
    /// Delivery rate measured by this acknowledgement.
    pub rate: Option<RateSample>,
}

/// Packets newly declared lost.
#[derive(Debug, Default)]
pub(crate) struct LossResult {
    /// How many.
    pub packets: u64,
    /// Their bytes on the wire.
    pub bytes: u64,
    /// When the newest of them was sent.
    pub newest_sent: Option<Instant>,
}

/// Sender state of one connection.
#[derive(Debug)]
pub(crate) struct SendBuffer {
    /// Next sequence number to assign.
    next_seq: u64,
    /// Lowest sequence number never transmitted.
    next_new: u64,
    /// Everything below is cumulatively acknowledged.
    acked_below: u64,
    /// Assigned and not yet acknowledged.
    packets: BTreeMap<u64, Outstanding>,
    /// Declared lost and waiting for retransmission.
    lost: BTreeSet<u64>,
    /// Order number for the next transmission.
    next_tx: u64,
    /// Highest order number among acknowledged transmissions.
    largest_acked_tx: Option<u64>,
    /// Bytes of transmissions neither acknowledged nor declared lost.
    bytes_in_flight: u64,
    /// Sequence number of our FIN, once queued.
    fin_seq: Option<u64>,
    /// When the time threshold will declare the next packet lost.
    loss_time: Option<Instant>,
    /// Delivery-rate estimation state.
    delivery: DeliveryRate,
    /// When the latest data transmission went out.
    last_tx_at: Option<Instant>,
}

impl SendBuffer {
    /// An empty buffer whose first fragment gets `first_seq`.
    pub fn new(first_seq: u64) -> SendBuffer {
        SendBuffer {
            next_seq: first_seq,
            next_new: first_seq,
            acked_below: first_seq,
            packets: BTreeMap::new(),
            lost: BTreeSet::new(),
            next_tx: 0,
            largest_acked_tx: None,
            bytes_in_flight: 0,
            fin_seq: None,
            loss_time: None,
            delivery: DeliveryRate::default(),
            last_tx_at: None,
        }
    }

    /// Queues one fragment under the next sequence number.
    pub fn push(&mut self, fragment: Fragment) {
        if fragment.fin {
            self.fin_seq = Some(self.next_seq);
        }
        let outstanding = Outstanding {
            fragment,
            sent_at: None,
            tx_order: 0,
            retransmitted: false,
            in_flight: false,
            size: 0,
            rate: None,
            loss_anchor: None,
            gap_before: None,
        };
        self.packets.insert(self.next_seq, outstanding);
        self.next_seq += 1;
    }

    /// Whether our FIN was queued and has been acknowledged.
    pub fn fin_acked(&self) -> bool {
        self.fin_seq
            .is_some_and(|fin| fin < self.next_new && !self.packets.contains_key(&fin))
    }

    /// Whether everything queued has been acknowledged.
    #[cfg(test)]
    pub fn all_acked(&self) -> bool {
        self.packets.is_empty()
    }

    /// Cumulative acknowledgement point.
    pub fn acked_below(&self) -> u64 {
        self.acked_below
    }

    /// Next sequence number to be assigned; a pure ACK carries it as its sequence.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes in flight.
    pub fn bytes_in_flight(&self) -> u64 {
        self.bytes_in_flight
    }

    /// When the time threshold will next declare a loss.
    pub fn loss_time(&self) -> Option<Instant> {
        self.loss_time
    }

    /// Whether nothing waits to be sent: no lost packet to resend and no new data.
    pub fn nothing_to_send(&self) -> bool {
        self.lost.is_empty() && self.next_new == self.next_seq
    }

    /// The application has run out of data with room left in the window: delivery-rate
    /// samples until the current flight is delivered measure the application, not the path.
    pub fn mark_app_limited(&mut self) {
        self.delivery.mark_app_limited(self.bytes_in_flight);
    }

    /// The next sequence number to transmit: lost ones first, then new ones below `limit`.
    pub fn next_to_send(&self, limit: u64) -> Option<u64> {
        if let Some(&seq) = self.lost.first() {
            return Some(seq);
        }
        (self.next_new < self.next_seq && self.next_new < limit).then_some(self.next_new)
    }

    /// The fragment under `seq`, if it is still outstanding.
    pub fn fragment(&self, seq: u64) -> Option<&Fragment> {
        self.packets.get(&seq).map(|p| &p.fragment)
    }

    /// Records a transmission of `seq` of `size` bytes; returns whether it was a retransmission.
    pub fn on_transmit(&mut self, seq: u64, now: Instant, size: u64) -> bool {
        self.lost.remove(&seq);
        let Some(packet) = self.packets.get_mut(&seq) else {
            return false;
        };
        let retransmission = packet.sent_at.is_some();
        let others_in_flight =
            self.bytes_in_flight - if packet.in_flight { packet.size } else { 0 };
        packet.rate = Some(self.delivery.on_send(now, others_in_flight));
        packet.retransmitted |= retransmission;
        packet.sent_at = Some(now);
        packet.loss_anchor = None;
        packet.tx_order = self.next_tx;
        self.next_tx += 1;
        packet.gap_before = self.last_tx_at.map(|at| now.saturating_duration_since(at));
        self.last_tx_at = Some(now);
        if packet.in_flight {
            self.bytes_in_flight -= packet.size;
        }
        packet.in_flight = true;
        packet.size = size;
        self.bytes_in_flight += size;
        if seq == self.next_new {
            self.next_new += 1;
        }
        retransmission
    }

    /// FEC parity protecting `range` goes out at `now`: judge those packets' loss as if they
    /// had been sent now, after everything sent so far, so a repair can arrive first.
    pub fn defer_loss(&mut self, range: std::ops::Range<u64>, now: Instant) {
        let order = self.next_tx;
        self.next_tx += 1;
        for packet in self.packets.range_mut(range).map(|(_, p)| p) {
            if packet.in_flight {
                packet.loss_anchor = Some((now, order));
            }
        }
    }

    /// The lowest-numbered packet in flight, the one a tail loss probe resends: its
    /// sequence number, when it was sent, and the gap before that transmission.
    pub fn tail_candidate(&self) -> Option<(u64, Instant, Option<Duration>)> {
        self.packets
            .iter()
            .find(|(_, p)| p.in_flight)
            .and_then(|(&seq, p)| Some((seq, p.sent_at?, p.gap_before)))
    }

    /// Tail loss probe: queues `seq` to be sent again ahead of new data. The packet stays
    /// counted in flight and nothing is declared lost, so congestion control is not told of a
    /// loss that may not have happened.
    pub fn queue_probe(&mut self, seq: u64) {
        if self.packets.get(&seq).is_some_and(|p| p.in_flight) {
            self.lost.insert(seq);
        }
    }

    /// Applies a cumulative acknowledgement `cum` and selective ranges `[start, end)`.
    /// Acknowledgements of data never sent are ignored.
    pub fn on_ack(&mut self, now: Instant, cum: u64, sacks: &[(u64, u64)]) -> AckResult {
        let mut result = AckResult::default();
        let mut newest: Option<(u64, Option<Duration>)> = None;
        let mut sampler = AckSampler::default();
        let sent_limit = self.next_new;
        let mut ranges = vec![(self.acked_below, cum.min(sent_limit))];
        ranges.extend(
            sacks
                .iter()
                .map(|&(start, end)| (start.max(self.acked_below), end.min(sent_limit))),
        );
        for (start, end) in ranges {
            if start >= end {
                continue;
            }
            let acked: Vec<u64> = self.packets.range(start..end).map(|(&s, _)| s).collect();
            for seq in acked {
                let Some(packet) = self.packets.remove(&seq) else {
                    continue;
                };
                self.lost.remove(&seq);
                if packet.in_flight {
                    self.bytes_in_flight -= packet.size;
                }
                result.acked_bytes += packet.size;
                result.acked_packets += 1;
                if let Some(state) = &packet.rate {
                    self.delivery
                        .on_packet_acked(now, state, packet.size, &mut sampler);
                }
                if packet.sent_at.is_some() {
                    let tx = packet.tx_order;
                    self.largest_acked_tx = Some(self.largest_acked_tx.map_or(tx, |l| l.max(tx)));
                }
                let sample = (!packet.retransmitted)
                    .then(|| packet.sent_at.map(|at| now.saturating_duration_since(at)))
                    .flatten();
                if newest.is_none_or(|(s, _)| seq > s) {
                    newest = Some((seq, sample));
                }
            }
        }
        self.acked_below = self.acked_below.max(cum.min(sent_limit));
        result.rtt_sample = newest.and_then(|(_, sample)| sample);
        result.rate = self.delivery.finish(now, sampler);
        result
    }

    /// Declares lost what the packet and time thresholds say is lost.
    pub fn detect_losses(&mut self, now: Instant, loss_delay: Duration) -> LossResult {
        let mut result = LossResult::default();
        self.loss_time = None;
        let Some(largest) = self.largest_acked_tx else {
            return result;
        };
        // Only what was ever transmitted: everything from `next_new` on is queued, unsent.
        for (&seq, packet) in self.packets.range_mut(..self.next_new) {
            let Some(sent_at) = packet.sent_at else {
                continue;
            };
            // Parity that left after the packet's own time threshold would have expired
            // cannot repair it sooner than a retransmission: judge it on its own send then.
            let anchor = packet
                .loss_anchor
                .filter(|&(parity_at, _)| parity_at < sent_at + loss_delay);
            let (sent_at, tx_order) = anchor.unwrap_or((sent_at, packet.tx_order));
            if !packet.in_flight || tx_order >= largest {
                continue;
            }
            let deadline = sent_at + loss_delay;
            if tx_order + DUP_THRESHOLD <= largest || deadline <= now {
                packet.in_flight = false;
                self.bytes_in_flight -= packet.size;
                self.lost.insert(seq);
                result.packets += 1;
                result.bytes += packet.size;
                result.newest_sent = Some(result.newest_sent.map_or(sent_at, |t| t.max(sent_at)));
            } else {
                self.loss_time = Some(self.loss_time.map_or(deadline, |t| t.min(deadline)));
            }
        }
        result
    }

    /// The retransmission timer expired: everything in flight is presumed lost, as Linux does
    /// on entering its loss state, and will be resent in order as the window allows.
    pub fn on_rto(&mut self) -> u64 {
        let mut count = 0;
        for (&seq, packet) in self.packets.range_mut(..self.next_new) {
            if packet.in_flight {
                packet.in_flight = false;
                self.lost.insert(seq);
                count += 1;
            }
        }
        self.bytes_in_flight = 0;
        self.loss_time = None;
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fragment(n: u8) -> Fragment {
        Fragment {
            payload: vec![n; 10],
            last: true,
            fin: false,
        }
    }

    fn sent_buffer(now: Instant, count: u8) -> SendBuffer {
        let mut buf = SendBuffer::new(100);
        for n in 0..count {
            buf.push(fragment(n));
            let seq = buf.next_to_send(u64::MAX).expect("queued");
            buf.on_transmit(seq, now, 42);
        }
        buf
    }

    #[test]
    fn three_later_acks_declare_a_hole_lost() {
        let t0 = Instant::now();
        let mut buf = sent_buffer(t0, 5);
        let t1 = t0 + Duration::from_millis(10);
        let ack = buf.on_ack(t1, 100, &[(101, 103)]);
        assert_eq!(ack.acked_packets, 2);
        assert_eq!(buf.detect_losses(t1, Duration::from_secs(1)).packets, 0);
        assert!(buf.loss_time().is_some(), "the time threshold is armed");
        buf.on_ack(t1, 100, &[(101, 104)]);
        let lost = buf.detect_losses(t1, Duration::from_secs(1));
        assert_eq!(lost.packets, 1);
        assert_eq!(buf.next_to_send(u64::MAX), Some(100));
        assert!(buf.on_transmit(100, t1, 42), "a retransmission");
        let ack = buf.on_ack(t1 + Duration::from_millis(10), 105, &[]);
        // The newest packet acknowledged (104) was sent once, at t0: a clean sample.
        assert_eq!(ack.rtt_sample, Some(Duration::from_millis(20)));
        assert!(buf.all_acked());
    }

    #[test]
    fn time_threshold_catches_a_lone_hole() {
        let t0 = Instant::now();
        let mut buf = sent_buffer(t0, 2);
        let t1 = t0 + Duration::from_millis(10);
        buf.on_ack(t1, 100, &[(101, 102)]);
        assert_eq!(buf.detect_losses(t1, Duration::from_millis(50)).packets, 0);
        assert_eq!(buf.loss_time(), Some(t0 + Duration::from_millis(50)));
        let lost = buf.detect_losses(t0 + Duration::from_millis(50), Duration::from_millis(50));
        assert_eq!(lost.packets, 1);
    }

    #[test]
    fn acks_beyond_what_was_sent_are_ignored() {
        let t0 = Instant::now();
        let mut buf = sent_buffer(t0, 2);
        buf.push(fragment(9));
        let ack = buf.on_ack(t0, 1_000, &[(500, 600)]);
        assert_eq!(ack.acked_packets, 2);
        assert_eq!(buf.acked_below(), 102);
        assert_eq!(buf.next_to_send(u64::MAX), Some(102));
    }

    #[test]
    fn parity_defers_loss_detection_of_the_packets_it_protects() {
        let t0 = Instant::now();
        let mut buf = sent_buffer(t0, 2);
        // Parity for 100 and 101 goes out after them; then three more packets are sent.
        let t1 = t0 + Duration::from_millis(5);
        buf.defer_loss(100..102, t1);
        for n in 0..3 {
            buf.push(fragment(n));
            let seq = buf.next_to_send(u64::MAX).expect("queued");
            buf.on_transmit(seq, t1, 42);
        }
        // 101 arrives, 100 does not: 101 went out before the parity, so it says nothing yet.
        buf.on_ack(t1, 100, &[(101, 102)]);
        let late = t0 + Duration::from_millis(60);
        assert_eq!(
            buf.detect_losses(late, Duration::from_millis(50)).packets,
            0
        );
        assert_eq!(buf.loss_time(), None);
        // A packet sent after the parity arrives: the time threshold runs from the parity.
        buf.on_ack(t1, 100, &[(101, 103)]);
        assert_eq!(buf.detect_losses(t1, Duration::from_millis(50)).packets, 0);
        assert_eq!(buf.loss_time(), Some(t1 + Duration::from_millis(50)));
        // Once three transmissions after the parity are acknowledged, 100 is lost after all.
        buf.on_ack(t1, 100, &[(101, 105)]);
        assert_eq!(buf.detect_losses(t1, Duration::from_millis(50)).packets, 1);
    }

    #[test]
    fn late_parity_does_not_defer_loss_detection() {
        let t0 = Instant::now();
        let mut buf = sent_buffer(t0, 2);
        let loss_delay = Duration::from_millis(50);
        // The group's parity leaves only after 100's own time threshold has run out: it could
        // not repair 100 sooner than a retransmission, so 100 is judged on its own send.
        buf.defer_loss(100..102, t0 + loss_delay);
        buf.on_ack(t0 + loss_delay, 100, &[(101, 102)]);
        assert_eq!(buf.detect_losses(t0 + loss_delay, loss_delay).packets, 1);
        assert_eq!(buf.next_to_send(u64::MAX), Some(100));
    }

    #[test]
    fn a_tail_probe_resends_the_oldest_packet_in_flight_without_declaring_loss() {
        let t0 = Instant::now();
        let mut buf = sent_buffer(t0, 3);
        let (seq, sent, gap) = buf.tail_candidate().expect("in flight");
        assert_eq!((seq, sent, gap), (100, t0, None));
        let before = buf.bytes_in_flight();
        buf.queue_probe(seq);
        assert_eq!(buf.next_to_send(u64::MAX), Some(100));
        assert_eq!(buf.bytes_in_flight(), before, "still counted in flight");
        assert!(buf.on_transmit(100, t0 + Duration::from_millis(60), 42));
        assert_eq!(buf.bytes_in_flight(), before);
    }

    #[test]
    fn rto_marks_everything_in_flight_lost() {
        let t0 = Instant::now();
        let mut buf = sent_buffer(t0, 3);
        assert_eq!(buf.on_rto(), 3);
        assert_eq!(buf.bytes_in_flight(), 0);
        assert_eq!(buf.next_to_send(0), Some(100));
    }
}
