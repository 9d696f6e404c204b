//! The sending side of FEC: grouping first transmissions, closing groups (full or on the
//! flush deadline), sizing parity from the measured loss rate, and queueing parity payloads.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::Instant;

use super::FecConfig;
use super::group::{FecHeader, encode_parity, shard_bytes};

/// Below this measured loss rate no parity is sent: retransmission alone repairs rare losses
/// more cheaply than parity on every group.
pub const MIN_LOSS_RATE: f64 = 0.005;
/// Chance, at the measured loss rate, that a group loses more packets than its parity can
/// repair, which parity sizing aims to stay under.
pub const RESIDUAL_TARGET: f64 = 0.01;
/// First transmissions the loss meter remembers before halving its counts, so the measured
/// rate follows changes in the path within a few hundred packets.
const METER_WINDOW: u64 = 512;

/// The loss rate the sender measured: packets declared lost plus packets the peer repaired,
/// over first transmissions, with the counts halved every [`METER_WINDOW`] packets.
#[derive(Debug, Default, Clone)]
pub(crate) struct LossMeter {
    sent: u64,
    lost: u64,
}

impl LossMeter {
    /// One data packet went out for the first time.
    pub fn on_sent(&mut self) {
        self.sent += 1;
        if self.sent >= METER_WINDOW {
            self.sent /= 2;
            self.lost /= 2;
        }
    }

    /// `packets` were lost on the wire (declared lost, or repaired by the peer).
    pub fn on_lost(&mut self, packets: u64) {
        self.lost = self.lost.saturating_add(packets);
    }

    /// Lost over sent, at most 1.
    pub fn rate(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        (self.lost as f64 / self.sent as f64).min(1.0)
    }
}

/// Probability that more than `m` of `n` packets are lost, each independently with `p`.
fn tail(n: usize, p: f64, m: usize) -> f64 {
    let mut term = (1.0 - p).powi(n as i32);
    let mut at_most = term;
    for i in 0..m.min(n) {
        term *= (n - i) as f64 / (i + 1) as f64 * p / (1.0 - p);
        at_most += term;
    }
    (1.0 - at_most).max(0.0)
}

/// Parity packets for a group of `data` packets at loss rate `p`: none below
/// [`MIN_LOSS_RATE`]; otherwise the fewest that keep the chance of an unrepairable group under
/// [`RESIDUAL_TARGET`], but never more than the configured ratio `m/k` allows for a group this
/// size (at least one), so small groups do not cost more overhead than full ones.
pub fn parity_for(config: &FecConfig, data: usize, p: f64) -> usize {
    if !config.enabled || data == 0 || p < MIN_LOSS_RATE {
        return 0;
    }
    let cap = (data * config.parity_shards / config.data_shards).clamp(1, config.parity_shards);
    (1..=cap)
        .find(|&m| tail(data + m, p, m) <= RESIDUAL_TARGET)
        .unwrap_or(cap)
}

/// A parity packet waiting to go out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParityPayload {
    /// The payload: FEC sub-header then the parity shard.
    pub payload: Vec<u8>,
}

/// The group being filled.
#[derive(Debug)]
struct OpenGroup {
    first: u64,
    shards: Vec<Vec<u8>>,
    oldest: Instant,
    newest: Instant,
}

/// Sender state of FEC for one connection.
#[derive(Debug)]
pub(crate) struct FecSender {
    config: FecConfig,
    open: Option<OpenGroup>,
    queue: VecDeque<ParityPayload>,
    /// The measured loss rate that sizes parity.
    pub meter: LossMeter,
}

impl FecSender {
    /// A sender with nothing grouped yet.
    pub fn new(config: FecConfig) -> FecSender {
        FecSender {
            config,
            open: None,
            queue: VecDeque::new(),
            meter: LossMeter::default(),
        }
    }

    /// The smallest group the flush deadline closes: the size at which one parity packet stays
    /// within the configured ratio `m/k`. Smaller groups wait, up to the span limit, for more
    /// packets.
    fn min_sparse_group(&self) -> usize {
        self.config
            .data_shards
            .div_ceil(self.config.parity_shards)
            .min(self.config.data_shards)
    }

    /// A data packet went out for the first time under `seq`. Returns the sequence range of a
    /// group this closed with parity queued, so loss detection can wait for the parity.
    pub fn on_data_sent(
        &mut self,
        now: Instant,
        seq: u64,
        last: bool,
        fin: bool,
        payload: &[u8],
    ) -> Option<Range<u64>> {
        self.meter.on_sent();
        if !self.config.enabled {
            return None;
        }
        let mut closed = None;
        // Groups are consecutive sequence numbers; anything else starts a new group.
        if self
            .open
            .as_ref()
            .is_some_and(|g| g.first + g.shards.len() as u64 != seq)
        {
            closed = self.close();
        }
        let group = self.open.get_or_insert_with(|| OpenGroup {
            first: seq,
            shards: Vec::new(),
            oldest: now,
            newest: now,
        });
        group.shards.push(shard_bytes(last, fin, payload));
        group.newest = now;
        if group.shards.len() >= self.config.data_shards {
            closed = self.close().or(closed);
        }
        closed
    }

    /// When the open group closes early if no more data joins it.
    pub fn deadline(&self) -> Option<Instant> {
        let group = self.open.as_ref()?;
        let flush = group.newest + self.config.flush_delay;
        if group.shards.len() >= self.min_sparse_group() {
            Some(flush)
        } else {
            Some(flush.max(group.oldest + self.config.max_group_span))
        }
    }

    /// Closes the open group if its deadline passed; returns its range if parity was queued.
    pub fn on_timeout(&mut self, now: Instant) -> Option<Range<u64>> {
        if self.deadline().is_some_and(|d| d <= now) {
            self.close()
        } else {
            None
        }
    }

    /// The next parity payload to send.
    pub fn poll(&mut self) -> Option<ParityPayload> {
        self.queue.pop_front()
    }

    fn close(&mut self) -> Option<Range<u64>> {
        let group = self.open.take()?;
        let k = group.shards.len();
        let m = parity_for(&self.config, k, self.meter.rate());
        if m == 0 {
            return None;
        }
        // The config is validated against the protocol limits, so k and m fit the codec.
        let parity = encode_parity(&group.shards, m).ok()?;
        let (data, count) = (u8::try_from(k).ok()?, u8::try_from(m).ok()?);
        for (index, shard) in (0u8..).zip(parity) {
            let header = FecHeader {
                first: group.first as u32,
                data,
                parity: count,
                index,
            };
            self.queue.push_back(ParityPayload {
                payload: header.encode(&shard),
            });
        }
        Some(group.first..group.first + k as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn lossy_sender(lost_per_hundred: u64) -> FecSender {
        let mut sender = FecSender::new(FecConfig::default());
        for _ in 0..100 {
            sender.meter.on_sent();
        }
        sender.meter.on_lost(lost_per_hundred);
        sender
    }

    #[test]
    fn parity_adapts_to_loss_within_the_ratio() {
        let config = FecConfig::default();
        assert_eq!(parity_for(&config, 10, 0.0), 0, "no loss, no parity");
        assert_eq!(
            parity_for(&config, 10, 0.001),
            0,
            "rare loss is left to retransmission"
        );
        assert_eq!(parity_for(&config, 10, 0.01), 1);
        assert_eq!(parity_for(&config, 10, 0.05), 3);
        assert_eq!(parity_for(&config, 10, 0.5), 3, "capped at m");
        assert_eq!(
            parity_for(&config, 4, 0.05),
            1,
            "small groups keep the m/k ratio"
        );
        assert_eq!(
            parity_for(&config, 1, 0.05),
            1,
            "a lone packet still gets one"
        );
        let off = FecConfig {
            enabled: false,
            ..config
        };
        assert_eq!(parity_for(&off, 10, 0.05), 0);
    }

    #[test]
    fn meter_forgets_old_losses() {
        let mut meter = LossMeter::default();
        meter.on_sent();
        meter.on_lost(1);
        assert_eq!(meter.rate(), 1.0);
        for _ in 0..2 * METER_WINDOW {
            meter.on_sent();
        }
        assert_eq!(meter.rate(), 0.0);
    }

    #[test]
    fn full_group_closes_at_once_with_parity() {
        let t0 = Instant::now();
        let mut sender = lossy_sender(5);
        for seq in 100..109 {
            assert_eq!(sender.on_data_sent(t0, seq, true, false, b"abc"), None);
        }
        assert_eq!(
            sender.on_data_sent(t0, 109, true, false, b"abcdef"),
            Some(100..110)
        );
        let parity: Vec<_> = std::iter::from_fn(|| sender.poll()).collect();
        assert_eq!(parity.len(), 3);
        assert_eq!(&parity[2].payload[..7], &[0, 0, 0, 100, 10, 3, 2]);
        assert_eq!(
            parity[0].payload.len(),
            7 + 3 + 6,
            "padded to the longest shard"
        );
        assert_eq!(sender.deadline(), None);
    }

    #[test]
    fn sparse_packets_share_a_group_until_the_span_or_size_allows_closing() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut sender = lossy_sender(5);
        let config = FecConfig::default();
        sender.on_data_sent(t0, 1, true, false, b"a");
        // One packet alone waits for the span limit.
        assert_eq!(sender.deadline(), Some(t0 + config.max_group_span));
        assert_eq!(sender.on_timeout(t0 + config.flush_delay), None);
        for (i, seq) in (2..=4).enumerate() {
            sender.on_data_sent(t0 + ms(50 * (i as u64 + 1)), seq, true, false, b"b");
        }
        // Four packets meet the minimum: the flush deadline after the newest closes them.
        let newest = t0 + ms(150);
        assert_eq!(sender.deadline(), Some(newest + config.flush_delay));
        assert_eq!(sender.on_timeout(newest + config.flush_delay), Some(1..5));
        assert_eq!(std::iter::from_fn(|| sender.poll()).count(), 1);
    }

    #[test]
    fn without_measured_loss_groups_close_without_parity() {
        let t0 = Instant::now();
        let mut sender = FecSender::new(FecConfig::default());
        for seq in 0..10 {
            sender.on_data_sent(t0, seq, true, false, b"x");
        }
        assert_eq!(sender.poll(), None);
    }

    #[test]
    fn a_gap_in_sequence_numbers_starts_a_new_group() {
        let t0 = Instant::now();
        let mut sender = lossy_sender(5);
        for seq in 0..4 {
            sender.on_data_sent(t0, seq, true, false, b"x");
        }
        assert_eq!(sender.on_data_sent(t0, 9, true, false, b"x"), Some(0..4));
    }
}
