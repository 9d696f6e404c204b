//! The receiving half of a connection: out-of-order buffering, reassembly and SACK blocks.

use std::collections::BTreeMap;

use crate::packet::MAX_SACK_BLOCKS;

/// What became of one arriving data packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// New and exactly the next one expected.
    InOrder,
    /// New, but a gap lies before it.
    OutOfOrder,
    /// Already received.
    Duplicate,
    /// Too far ahead of the window; dropped.
    BeyondWindow,
}

/// Something the buffer delivered, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// A whole message.
    Message(Vec<u8>),
    /// The peer's FIN: no messages follow.
    Fin,
}

/// A reassembled message would exceed the configured maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MessageTooLarge;

#[derive(Debug)]
struct Segment {
    payload: Vec<u8>,
    last: bool,
    fin: bool,
}

/// Receiver state of one connection.
#[derive(Debug)]
pub(crate) struct RecvBuffer {
    /// The next sequence number expected in order.
    next: u64,
    /// How far beyond `next` packets are buffered.
    window: u64,
    /// Largest message reassembled.
    max_message: usize,
    /// Received beyond a gap.
    pending: BTreeMap<u64, Segment>,
    /// Fragments of the message being reassembled.
    assembling: Vec<u8>,
    /// Most recently received out-of-order sequence number; its block is reported first.
    latest: Option<u64>,
    /// The FIN was delivered; nothing after it is accepted.
    finished: bool,
}

impl RecvBuffer {
    /// Expects `first` next.
    pub fn new(first: u64, window: u64, max_message: usize) -> RecvBuffer {
        RecvBuffer {
            next: first,
            window,
            max_message,
            pending: BTreeMap::new(),
            assembling: Vec::new(),
            latest: None,
            finished: false,
        }
    }

    /// The cumulative acknowledgement: everything below has arrived.
    pub fn ack(&self) -> u64 {
        self.next
    }

    /// Whether out-of-order data is waiting, which makes acknowledgements urgent.
    pub fn has_gap(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether the peer's FIN was delivered.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Accepts one data packet.
    pub fn insert(&mut self, seq: u64, payload: Vec<u8>, last: bool, fin: bool) -> Arrival {
        if seq < self.next || self.pending.contains_key(&seq) || self.finished {
            return Arrival::Duplicate;
        }
        if seq >= self.next + self.window {
            return Arrival::BeyondWindow;
        }
        self.pending.insert(seq, Segment { payload, last, fin });
        if seq == self.next {
            Arrival::InOrder
        } else {
            self.latest = Some(seq);
            Arrival::OutOfOrder
        }
    }

    /// Moves everything contiguous out of the buffer into `out`.
    pub fn deliver(&mut self, out: &mut Vec<Delivery>) -> Result<(), MessageTooLarge> {
        while let Some(segment) = self.pending.remove(&self.next) {
            self.next += 1;
            if segment.fin {
                self.finished = true;
                self.pending.clear();
                out.push(Delivery::Fin);
                return Ok(());
            }
            if self.assembling.len() + segment.payload.len() > self.max_message {
                return Err(MessageTooLarge);
            }
            self.assembling.extend_from_slice(&segment.payload);
            if segment.last {
                out.push(Delivery::Message(std::mem::take(&mut self.assembling)));
            }
        }
        Ok(())
    }

    /// Up to eight `[start, end)` ranges held beyond the gap: the block holding the most recent
    /// arrival first (as RFC 2018 asks), then the others from the highest down, so the sender
    /// learns the newest state even when more blocks exist than fit.
    pub fn sack_blocks(&self) -> Vec<(u64, u64)> {
        let mut blocks: Vec<(u64, u64)> = Vec::new();
        for &seq in self.pending.keys() {
            match blocks.last_mut() {
                Some((_, end)) if *end == seq => *end += 1,
                _ => blocks.push((seq, seq + 1)),
            }
        }
        let recent = self
            .latest
            .and_then(|latest| blocks.iter().position(|&(s, e)| (s..e).contains(&latest)));
        let mut ordered = Vec::with_capacity(MAX_SACK_BLOCKS);
        if let Some(index) = recent {
            ordered.push(blocks.remove(index));
        }
        ordered.extend(blocks.into_iter().rev());
        ordered.truncate(MAX_SACK_BLOCKS);
        ordered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reassembles_across_gaps_and_reports_sack() {
        let mut buf = RecvBuffer::new(10, 64, 100);
        assert_eq!(
            buf.insert(12, b"c".to_vec(), true, false),
            Arrival::OutOfOrder
        );
        assert_eq!(
            buf.insert(11, b"b".to_vec(), false, false),
            Arrival::OutOfOrder
        );
        assert_eq!(buf.sack_blocks(), vec![(11, 13)]);
        let mut out = Vec::new();
        buf.deliver(&mut out).expect("small");
        assert!(out.is_empty());
        assert_eq!(
            buf.insert(10, b"a".to_vec(), false, false),
            Arrival::InOrder
        );
        buf.deliver(&mut out).expect("small");
        assert_eq!(out, vec![Delivery::Message(b"abc".to_vec())]);
        assert_eq!(buf.ack(), 13);
        assert_eq!(
            buf.insert(11, b"b".to_vec(), false, false),
            Arrival::Duplicate
        );
    }

    #[test]
    fn sack_lists_recent_block_first_and_caps_at_eight() {
        let mut buf = RecvBuffer::new(0, 1000, 100);
        for seq in (2..40).step_by(2) {
            buf.insert(seq, vec![], true, false);
        }
        buf.insert(9, vec![], true, false);
        let blocks = buf.sack_blocks();
        assert_eq!(blocks.len(), MAX_SACK_BLOCKS);
        assert_eq!(blocks[0], (8, 11));
        assert_eq!(blocks[1], (38, 39));
    }

    #[test]
    fn oversized_messages_and_far_packets_are_refused() {
        let mut buf = RecvBuffer::new(0, 4, 3);
        assert_eq!(buf.insert(4, vec![1], true, false), Arrival::BeyondWindow);
        buf.insert(0, vec![1, 2], false, false);
        buf.insert(1, vec![3, 4], true, false);
        assert_eq!(buf.deliver(&mut Vec::new()), Err(MessageTooLarge));
    }
}
