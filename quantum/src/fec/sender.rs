//! The sending side of FEC: grouping first transmissions, closing groups (full, on the flush
//! deadline, or sparse ones as soon as their credit pays for parity), sizing parity from the
//! measured loss rate, and queueing parity payloads.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::{Duration, Instant};

use super::FecConfig;
use super::group::{FEC_HEADER_LEN, FecHeader, SHARD_PREFIX_LEN, encode_parity, shard_bytes};
use crate::packet::HEADER_LEN;

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

/// Measured loss rate below which sparse traffic gets no parity. Below it fewer than one
/// message in a hundred is lost, so sparse parity cannot move the p99; and on a loaded host
/// jitter alone made a lossless link measure up to about 1 % (spurious probe "recoveries"
/// and time-threshold losses, see `benches/RESULTS.md`), which must not buy parity.
pub const SPARSE_MIN_LOSS: f64 = 0.01;
/// Measured loss rate at which sparse parity gets its whole budget
/// ([`FecConfig::sparse_budget_percent`]); from [`SPARSE_MIN_LOSS`] up to here the budget
/// grows linearly, since a parity packet's worth is the chance that what it covers was lost.
pub const SPARSE_FULL_BUDGET_LOSS: f64 = 0.02;

/// What the connection knows about a first transmission besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct SendContext {
    /// Nothing else waits to be sent after it: the application, not the path, sets the pace,
    /// so no further packet may join its group soon.
    pub app_limited: bool,
    /// How long after a packet leaves the tail loss probe would resend it, once an RTT is
    /// measured. Parity sent later than that cannot beat the probe, so packets that old leave
    /// an open group rather than make it wait.
    pub probe_timeout: Option<Duration>,
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
    /// When each shard's packet left, oldest first.
    sent: Vec<Instant>,
    newest: Instant,
    /// Its newest packet was app-limited (see [`SendContext::app_limited`]).
    app_limited: bool,
}

impl OpenGroup {
    fn oldest(&self) -> Instant {
        self.sent.first().copied().unwrap_or(self.newest)
    }

    /// Bytes on the wire of one parity packet for this group (without SACK blocks).
    fn parity_cost(&self) -> f64 {
        let longest = self.shards.iter().map(Vec::len).max().unwrap_or(0);
        (HEADER_LEN + FEC_HEADER_LEN + longest) as f64
    }
}

/// Sender state of FEC for one connection.
#[derive(Debug)]
pub(crate) struct FecSender {
    config: FecConfig,
    open: Option<OpenGroup>,
    queue: VecDeque<ParityPayload>,
    /// Parity bytes sparse groups may still spend: first transmissions earn their bytes times
    /// the sparse budget, each sparse parity packet spends its own.
    credit: f64,
    /// The latest [`SendContext::probe_timeout`].
    probe_timeout: Option<Duration>,
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
            credit: 0.0,
            probe_timeout: None,
            meter: LossMeter::default(),
        }
    }

    /// The smallest group the flush deadline closes: the size at which one parity packet stays
    /// within the configured ratio `m/k`. Smaller groups wait, up to the span limit, for more
    /// packets, unless they are sparse (see [`FecSender::deadline`]).
    fn min_sparse_group(&self) -> usize {
        self.config
            .data_shards
            .div_ceil(self.config.parity_shards)
            .min(self.config.data_shards)
    }

    /// Parity bytes per data byte that sparse groups may spend at the measured loss rate.
    fn sparse_budget(&self) -> f64 {
        let p = self.meter.rate();
        let ramp = (p - SPARSE_MIN_LOSS) / (SPARSE_FULL_BUDGET_LOSS - SPARSE_MIN_LOSS);
        f64::from(self.config.sparse_budget_percent) / 100.0 * ramp.clamp(0.0, 1.0)
    }

    /// A data packet went out for the first time under `seq`. Returns the sequence range of a
    /// group this closed with parity queued, so loss detection can wait for the parity.
    pub fn on_data_sent(
        &mut self,
        now: Instant,
        seq: u64,
        (last, fin, payload): (bool, bool, &[u8]),
        context: SendContext,
    ) -> Option<Range<u64>> {
        self.meter.on_sent();
        if !self.config.enabled {
            return None;
        }
        self.probe_timeout = context.probe_timeout;
        let mut closed = None;
        // Groups are consecutive sequence numbers; anything else starts a new group.
        if self
            .open
            .as_ref()
            .is_some_and(|g| g.first + g.shards.len() as u64 != seq)
        {
            closed = self.close(false);
        }
        self.drop_stale(now);
        let shard = shard_bytes(last, fin, payload);
        self.earn_credit(&shard);
        let group = self.open.get_or_insert_with(|| OpenGroup {
            first: seq,
            shards: Vec::new(),
            sent: Vec::new(),
            newest: now,
            app_limited: false,
        });
        group.shards.push(shard);
        group.sent.push(now);
        group.newest = now;
        group.app_limited = context.app_limited;
        if group.shards.len() >= self.config.data_shards {
            closed = self.close(false).or(closed);
        }
        closed
    }

    /// A first transmission with `shard` earns sparse credit, up to `m` (at least two) parity
    /// packets' worth so a long quiet or bulk stretch cannot save up a burst of parity.
    fn earn_credit(&mut self, shard: &[u8]) {
        let data_bytes = (HEADER_LEN + shard.len().saturating_sub(SHARD_PREFIX_LEN)) as f64;
        let packets = self.config.parity_shards.max(2) as f64;
        let cap = packets * (HEADER_LEN + FEC_HEADER_LEN + shard.len()) as f64;
        self.credit = (self.credit + self.sparse_budget() * data_bytes).min(cap.max(self.credit));
    }

    /// Removes from the front of the open group the packets whose tail loss probe is due by
    /// `now`: parity sent from now on would arrive after the probe's resend.
    fn drop_stale(&mut self, now: Instant) {
        let (Some(group), Some(timeout)) = (self.open.as_mut(), self.probe_timeout) else {
            return;
        };
        let stale = group
            .sent
            .iter()
            .take_while(|&&t| t + timeout <= now)
            .count();
        if stale == 0 {
            return;
        }
        if stale == group.shards.len() {
            self.open = None;
            return;
        }
        group.shards.drain(..stale);
        group.sent.drain(..stale);
        group.first += stale as u64;
    }

    /// Whether the open group is sparse: app-limited and smaller than a group the flush
    /// deadline closes anyway.
    fn is_sparse(&self, group: &OpenGroup) -> bool {
        group.app_limited && group.shards.len() < self.min_sparse_group()
    }

    /// When the open group closes early if no more data joins it. A sparse group closes a
    /// short flush (at most an eighth of the probe timeout) after its newest packet if the
    /// credit pays for at least one parity packet, and otherwise waits for more packets;
    /// other groups close at the flush deadline once they hold `ceil(k/m)` packets or their
    /// oldest is [`FecConfig::max_group_span`] old.
    pub fn deadline(&self) -> Option<Instant> {
        let group = self.open.as_ref()?;
        let flush = group.newest + self.config.flush_delay;
        if self.is_sparse(group) {
            let flush = match self.probe_timeout {
                Some(timeout) => flush.min(group.newest + timeout / 8),
                None => flush,
            };
            return (self.credit >= group.parity_cost()).then_some(flush);
        }
        if group.shards.len() >= self.min_sparse_group() {
            Some(flush)
        } else {
            Some(flush.max(group.oldest() + self.config.max_group_span))
        }
    }

    /// Closes the open group if its deadline passed; returns its range if parity was queued.
    pub fn on_timeout(&mut self, now: Instant) -> Option<Range<u64>> {
        if self.deadline().is_none_or(|d| d > now) {
            return None;
        }
        let sparse = self.open.as_ref().is_some_and(|g| self.is_sparse(g));
        self.close(sparse)
    }

    /// The next parity payload to send.
    pub fn poll(&mut self) -> Option<ParityPayload> {
        self.queue.pop_front()
    }

    /// Closes the open group: a sparse one with a parity packet per data packet (at most `m`)
    /// as far as the credit pays, any other with parity sized by the loss rate.
    fn close(&mut self, sparse: bool) -> Option<Range<u64>> {
        let group = self.open.take()?;
        let k = group.shards.len();
        let m = if sparse {
            // One parity packet per data packet, as many as the credit pays for: a sparse
            // group of two (an edit and its barrier, say) with one parity packet loses its
            // first packet to the probe whenever a second of its three packets is lost too
            // (about 0.5 % of groups at 5 % loss), with two it takes three losses of four.
            let cost = group.parity_cost();
            let affordable = (self.credit / cost).floor() as usize;
            let m = k.min(affordable).min(self.config.parity_shards);
            if m == 0 {
                return None;
            }
            self.credit -= cost * m as f64;
            m
        } else {
            parity_for(&self.config, k, self.meter.rate())
        };
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
    use crate::fec::MAX_SPARSE_BUDGET_PERCENT;

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
            assert_eq!(
                sender.on_data_sent(t0, seq, (true, false, b"abc"), SendContext::default()),
                None
            );
        }
        assert_eq!(
            sender.on_data_sent(t0, 109, (true, false, b"abcdef"), SendContext::default()),
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
    fn packets_that_are_not_app_limited_share_a_group_until_the_span_or_size_allows_closing() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut sender = lossy_sender(5);
        let config = FecConfig::default();
        sender.on_data_sent(t0, 1, (true, false, b"a"), SendContext::default());
        // One packet alone waits for the span limit.
        assert_eq!(sender.deadline(), Some(t0 + config.max_group_span));
        assert_eq!(sender.on_timeout(t0 + config.flush_delay), None);
        for (i, seq) in (2..=4).enumerate() {
            sender.on_data_sent(
                t0 + ms(50 * (i as u64 + 1)),
                seq,
                (true, false, b"b"),
                SendContext::default(),
            );
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
            sender.on_data_sent(t0, seq, (true, false, b"x"), SendContext::default());
        }
        assert_eq!(sender.poll(), None);
    }

    #[test]
    fn a_gap_in_sequence_numbers_starts_a_new_group() {
        let t0 = Instant::now();
        let mut sender = lossy_sender(5);
        for seq in 0..4 {
            sender.on_data_sent(t0, seq, (true, false, b"x"), SendContext::default());
        }
        assert_eq!(
            sender.on_data_sent(t0, 9, (true, false, b"x"), SendContext::default()),
            Some(0..4)
        );
    }

    /// One 100-byte message every 50 ms, app-limited, with a 56 ms probe timeout.
    fn sparse() -> SendContext {
        SendContext {
            app_limited: true,
            probe_timeout: Some(Duration::from_millis(56)),
        }
    }

    /// Sends sparse packets `seqs` one per 50 ms from `t0` with the measured loss held at
    /// `lost_per_thousand`; returns the parity payloads and when each went out (closed by the
    /// deadline right after the packet that earned it).
    fn send_sparse(
        sender: &mut FecSender,
        t0: Instant,
        seqs: Range<u64>,
        lost_per_thousand: u64,
    ) -> Vec<(Instant, Vec<u8>)> {
        let mut parity = Vec::new();
        for (i, seq) in seqs.enumerate() {
            sender.meter = LossMeter {
                sent: 1000,
                lost: lost_per_thousand,
            };
            let at = t0 + Duration::from_millis(50 * i as u64);
            assert_eq!(
                sender.on_data_sent(at, seq, (true, false, &[7; 100]), sparse()),
                None
            );
            if let Some(deadline) = sender
                .deadline()
                .filter(|&d| d < at + Duration::from_millis(50))
            {
                assert!(sender.on_timeout(deadline).is_some());
                parity.extend(std::iter::from_fn(|| sender.poll()).map(|p| (deadline, p.payload)));
            }
        }
        parity
    }

    #[test]
    fn sparse_parity_follows_its_newest_packet_within_an_eighth_of_the_probe_timeout() {
        let t0 = Instant::now();
        let mut sender = FecSender::new(FecConfig::default());
        let parity = send_sparse(&mut sender, t0, 1000..1100, 50);
        assert!(!parity.is_empty());
        for (at, payload) in &parity {
            let (header, _) = FecHeader::decode(payload).expect("valid parity");
            let newest = header.first as u64 + u64::from(header.data) - 1;
            let newest_sent = t0 + Duration::from_millis(50 * (newest - 1000));
            assert_eq!(
                *at - newest_sent,
                Duration::from_millis(5),
                "flush after the newest packet"
            );
            // Only packets whose probe is not yet due (sent less than 56 ms before) are covered.
            assert!(header.data <= 2, "group of {}", header.data);
            assert_eq!(header.parity, 1);
        }
    }

    #[test]
    fn sparse_parity_stays_within_its_budget() {
        let t0 = Instant::now();
        let mut sender = FecSender::new(FecConfig::default());
        let parity = send_sparse(&mut sender, t0, 0..1000, 50);
        let data_bytes = 1000.0 * (HEADER_LEN + 100) as f64;
        let parity_bytes: f64 = parity
            .iter()
            .map(|(_, p)| (HEADER_LEN + p.len()) as f64)
            .sum();
        let ratio = parity_bytes / data_bytes;
        let budget = f64::from(FecConfig::default().sparse_budget_percent) / 100.0;
        assert!(ratio <= budget, "spent {ratio} of a {budget} budget");
        assert!(
            ratio >= budget * 0.9,
            "spent only {ratio} of a {budget} budget"
        );
    }

    #[test]
    fn sparse_parity_grows_with_the_measured_loss_and_is_off_without_loss() {
        let t0 = Instant::now();
        // 0 %, 0.9 % (below SPARSE_MIN_LOSS), 1.5 %, and 5 % measured loss.
        let counts: Vec<usize> = [0, 9, 15, 50]
            .into_iter()
            .map(|per_thousand| {
                let mut sender = FecSender::new(FecConfig::default());
                send_sparse(&mut sender, t0, 0..200, per_thousand).len()
            })
            .collect();
        assert_eq!(counts[..2], [0, 0], "no parity below the minimum loss rate");
        assert!(counts[2] > 0 && counts[2] < counts[3], "{counts:?}");
        let off = FecConfig {
            sparse_budget_percent: 0,
            ..FecConfig::default()
        };
        let mut sender = FecSender::new(off);
        assert!(
            send_sparse(&mut sender, t0, 0..200, 50).is_empty(),
            "a zero budget sends none"
        );
    }

    #[test]
    fn a_sparse_group_of_two_gets_a_parity_packet_for_each_when_the_credit_pays() {
        // An edit and its barrier go out together every 50 ms: with one parity packet the
        // edit is left to the probe whenever the barrier or the parity is lost as well.
        let t0 = Instant::now();
        let mut sender = FecSender::new(FecConfig {
            sparse_budget_percent: MAX_SPARSE_BUDGET_PERCENT,
            ..FecConfig::default()
        });
        let mut shapes = Vec::new();
        for i in 0..50u64 {
            sender.meter = LossMeter {
                sent: 1000,
                lost: 50,
            };
            let at = t0 + Duration::from_millis(50 * i);
            for seq in [2 * i, 2 * i + 1] {
                assert_eq!(
                    sender.on_data_sent(at, seq, (true, false, &[7; 60]), sparse()),
                    None
                );
            }
            let deadline = sender
                .deadline()
                .expect("a sparse group with credit closes");
            assert!(sender.on_timeout(deadline).is_some());
            for payload in std::iter::from_fn(|| sender.poll()) {
                let (header, _) = FecHeader::decode(&payload.payload).expect("valid parity");
                shapes.push((header.first, header.data, header.parity, header.index));
            }
        }
        let expected: Vec<_> = (0..50u32)
            .flat_map(|i| [(2 * i, 2, 2, 0), (2 * i, 2, 2, 1)])
            .collect();
        assert_eq!(shapes, expected);
    }

    #[test]
    fn a_sparse_group_gets_no_more_parity_than_its_credit_pays_for() {
        let t0 = Instant::now();
        let mut sender = FecSender::new(FecConfig {
            sparse_budget_percent: 100,
            ..FecConfig::default()
        });
        sender.meter = LossMeter {
            sent: 1000,
            lost: 50,
        };
        // Two packets at 100 % earn a bit less than two parity packets (parity carries a
        // sub-header and shard prefix): one parity packet now, the rest saved.
        for seq in 0..2 {
            sender.on_data_sent(t0, seq, (true, false, &[7; 60]), sparse());
        }
        let deadline = sender.deadline().expect("credit for one parity packet");
        assert!(sender.on_timeout(deadline).is_some());
        let parity: Vec<_> = std::iter::from_fn(|| sender.poll()).collect();
        assert_eq!(parity.len(), 1);
        assert!(sender.credit >= 0.0);
    }

    #[test]
    fn a_whole_budget_covers_every_sparse_packet_on_its_own() {
        let t0 = Instant::now();
        let mut sender = FecSender::new(FecConfig {
            sparse_budget_percent: MAX_SPARSE_BUDGET_PERCENT,
            ..FecConfig::default()
        });
        let parity = send_sparse(&mut sender, t0, 0..100, 50);
        // The first packets earn the credit for the first parity; from then on each has one.
        assert!(parity.len() >= 98, "{} parity packets", parity.len());
    }
}
