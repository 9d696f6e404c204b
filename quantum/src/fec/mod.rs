//! Forward error correction: Reed-Solomon parity over groups of data packets, so a receiver
//! rebuilds a lost packet from the packets and parity that did arrive, without waiting a round
//! trip for a retransmission.
//!
//! # Groups
//!
//! The sender groups the *first* transmissions of data packets, which have consecutive
//! sequence numbers; a group is the `k` packets from `first` to `first + k − 1`
//! ([`FecConfig::data_shards`] at most, 10 by default). Retransmissions join no group. Each
//! data packet contributes its *shard*: its protected bytes with a length prefix, zero-padded
//! to the group's longest shard, since packets differ in length:
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 2 | payload length `L` |
//! | 2 | 1 | flags: bit 0 PSH (last fragment of a message), bit 1 FIN; other bits zero |
//! | 3 | `L` | the packet's payload |
//! | 3 + `L` | … | zeros up to the group's shard length |
//!
//! When the group closes, `m` parity shards are computed over GF(2⁸) with
//! `reed-solomon-erasure` and sent as parity packets: header flags `FEC` (plus `ACK` and SACK
//! blocks, as on any packet), and a payload of this sub-header followed by the shard:
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | `first`: sequence number (low 32 bits) of the group's first data packet; the group's id |
//! | 4 | 1 | `k`: data packets in the group, 1 to 64 |
//! | 5 | 1 | `m`: parity packets of the group, 1 to 16 |
//! | 6 | 1 | index of this parity shard, `0..m` |
//! | 7 | … | the parity shard; every parity packet of a group has the same length |
//!
//! # Numbering and acknowledgement
//!
//! A parity packet does not consume a sequence number: like a pure ACK, its header carries
//! the next unassigned one, and receivers treat it as no data at all. It is never
//! acknowledged, never retransmitted and not counted in flight, so SACK ranges and loss
//! detection see only data. A data packet the receiver rebuilds is fed through the normal
//! receive path as if it had arrived, so it is acknowledged (and the sender stops tracking it),
//! reassembled and delivered once, in order. So that the sender's loss detection does not
//! retransmit a packet parity is about to repair, the data packets of a group with parity are
//! judged lost from the moment the parity went out rather than from their own transmission
//! (the private `send` module's `defer_loss`).
//!
//! # Repairs are losses
//!
//! A repaired packet was lost on the wire, which the sender cannot see, because it is
//! acknowledged. The receiver therefore counts repairs and sends the running total (modulo
//! 2³²) in a control frame (`URG`, type `4`, a 4-byte count) whenever it grows. The sender
//! turns the increase into one call of the congestion controller's `on_loss` (in
//! `connection/fec.rs`, the one place FEC talks to congestion control) and into its loss
//! measurement. A lost report is made good by the next one, since it carries the total.
//!
//! # Closing groups early, and sizing parity
//!
//! A group closes as soon as it holds `k` packets, which bulk traffic does at once. Other
//! groups close at a deadline, under one of two rules.
//!
//! **Sparse groups.** A group is sparse when the application had nothing more to send after
//! its newest packet (the connection is app-limited) and it holds fewer than `ceil(k/m)`
//! packets. (Before a packet joins any group, packets whose tail loss probe is already due,
//! sent longer than the probe timeout SRTT + max(2·RTTVAR, SRTT/8) ago, leave the group's
//! front: parity sent from then on would arrive after the probe's resend, so covering them
//! would cost bytes and buy nothing.) A sparse group closes [`FecConfig::flush_delay`] (at
//! most an eighth of the probe timeout) after its newest packet if the *sparse credit* pays
//! for at least one parity packet, and otherwise waits for the next packet. It gets one
//! parity packet per data packet (at most `m`) as far as the credit pays: a group of two
//! small messages sent together (an SDK edit and its barrier) with a single parity packet
//! would leave its first message to the probe whenever a second of its three packets is
//! lost too. Every first
//! transmission earns credit worth its bytes times the sparse budget,
//! [`FecConfig::sparse_budget_percent`] (30 %) at 2 % measured loss or more
//! ([`SPARSE_FULL_BUDGET_LOSS`]), growing linearly from none at 1 % ([`SPARSE_MIN_LOSS`]:
//! below it parity cannot move the p99, and jitter can fake that much); credit is capped
//! at `m` (at least two) parity packets, and each sparse parity packet spends its own size. Sparse parity so
//! costs at most the budget, and nothing while no loss is measured.
//!
//! **Other groups** (the sender was held back by pacing or the window, not the application)
//! close `flush_delay` after their newest packet once they hold `ceil(k/m)` packets (4 by
//! default), or once their oldest packet is [`FecConfig::max_group_span`] (200 ms) old.
//! `Connection::poll_timeout` includes the deadline of either rule.
//!
//! Sizing the parity of non-sparse groups:
//!
//! - Adaptation. The sender measures loss as (packets declared lost + packets the peer
//!   repaired) / first transmissions, halving both counts every 512 packets. Below 0.5 %
//!   measured loss it sends no parity at all (0 % overhead at 0 % loss); above, the fewest
//!   parity packets (up to `m`) that keep the chance of a group losing more than its parity
//!   below 1 %: 3 for a full group at 5 %, 1 at 1 %.
//! - Overhead. Parity per group is capped at `k·m/k` of its size (at least one), so a small
//!   group never costs more than a full one. A parity packet is about as long as the data
//!   packets it protects (32-byte header, 7-byte sub-header, 3-byte shard prefix).
//!
//! For the target case of 20 messages of 100 bytes per second over a 50 ms round trip (data
//! packets of 132 bytes every 50 ms, parity packets of 142 bytes): the probe timeout is about
//! 56 ms, so a sparse group holds the newest packet and sometimes the one before; with a 30 %
//! budget about one packet in 3.6 is followed by parity, for about 27 % overhead at 5 % loss.
//! A lost packet that parity covers is rebuilt one one-way delay plus 5 ms after it was sent
//! (30 ms), instead of the probe's SRTT + SRTT/8 + one-way delay (81 ms).
//!
//! # The limit
//!
//! The sparse budget buys coverage, not a shorter probe: with messages 50 ms apart and a
//! probe due 56 ms after each, a parity packet can arrive before the probe's resend only for
//! the packet just sent (and the one before, whose probe is nearly due), and it is as large as
//! what it covers. So a budget `b` covers in time about a fraction `b × 132/142` of the
//! packets, and the rest of the losses wait for the probe. For the p99 to leave the probe tier
//! at loss rate `p`, fewer than 1 % of messages may wait for it: `p × (1 − coverage) < 0.01`,
//! i.e. coverage above 80 % at 5 % loss, a budget of about 90–100 % of the data bytes. That
//! is the price of a p99 near the one-way delay on such traffic, whatever the code (a
//! sliding-window code or XOR parity carries the same bytes per covered packet). Within the
//! default 30 % the sparse FEC repairs about half the losses at 5 % on arrival of the parity,
//! which moves the p95 from the probe tier to about one one-way delay, but the p99 stays at
//! the probe tier (about 81 ms simulated); a budget of 200 % brings the p99 to 30 ms at
//! about 100 % overhead. Measured figures are in `benches/RESULTS.md`
//! (`examples/fec_sparse.rs` sweeps budgets).
//!
//! # Hostile input
//!
//! Parity packets with a short payload, `k` or `m` out of range, an index not below `m`, a
//! group starting beyond the receive window, or a shape or shard length that disagrees with
//! earlier parity of the same group are dropped and counted (`fec_rejected` in
//! [`crate::ConnectionStats`]); so is a group whose rebuilt shards do not parse (bad length
//! prefix, unknown flags, non-zero padding). Nothing a peer sends can make this panic.

mod group;
pub(crate) mod receiver;
pub(crate) mod sender;

use std::time::Duration;

use thiserror::Error;

pub use group::{FEC_HEADER_LEN, FecHeader, MAX_DATA_SHARDS, MAX_PARITY_SHARDS};
pub use sender::{
    MIN_LOSS_RATE, RESIDUAL_TARGET, SPARSE_FULL_BUDGET_LOSS, SPARSE_MIN_LOSS, parity_for,
};

/// FEC settings, part of [`crate::Config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FecConfig {
    /// Whether this side sends parity; a receiver always repairs from parity it gets.
    pub enabled: bool,
    /// Most data packets per group (`k`), 1 to [`MAX_DATA_SHARDS`].
    pub data_shards: usize,
    /// Most parity packets per group (`m`), 1 to [`MAX_PARITY_SHARDS`]; `m/k` is also the
    /// most parity a smaller group gets per data packet.
    pub parity_shards: usize,
    /// How long after its newest packet a group that is not full closes, if it holds at
    /// least `ceil(k/m)` packets. Keep it small against the round trip.
    pub flush_delay: Duration,
    /// A group whose oldest packet is this old closes at the flush deadline whatever its
    /// size. Sparse groups (app-limited, see "Sparse traffic" above) follow their own rule.
    pub max_group_span: Duration,
    /// Most parity bytes per 100 data bytes that sparse (app-limited) traffic costs, reached
    /// at 2 % measured loss ([`SPARSE_FULL_BUDGET_LOSS`]), none below 1 %
    /// ([`SPARSE_MIN_LOSS`]); 0 turns sparse parity off, up to
    /// [`MAX_SPARSE_BUDGET_PERCENT`]. Each parity packet covers the packets sent since the
    /// previous one whose tail loss probe is not yet due, so a higher budget protects more
    /// of them in time.
    pub sparse_budget_percent: u16,
}

/// Largest [`FecConfig::sparse_budget_percent`]: at 200 % every sparse packet can have a
/// parity packet of its own, and more would buy nothing.
pub const MAX_SPARSE_BUDGET_PERCENT: u16 = 200;

impl Default for FecConfig {
    fn default() -> FecConfig {
        FecConfig {
            enabled: true,
            data_shards: 10,
            parity_shards: 3,
            flush_delay: Duration::from_millis(5),
            max_group_span: Duration::from_millis(200),
            sparse_budget_percent: 30,
        }
    }
}

impl FecConfig {
    /// Checks the shard counts against the protocol limits.
    pub fn validate(&self) -> Result<(), FecError> {
        let (data, parity) = (self.data_shards, self.parity_shards);
        if !(1..=MAX_DATA_SHARDS).contains(&data) || !(1..=MAX_PARITY_SHARDS).contains(&parity) {
            return Err(FecError::ShardCounts { data, parity });
        }
        if self.sparse_budget_percent > MAX_SPARSE_BUDGET_PERCENT {
            return Err(FecError::SparseBudget(self.sparse_budget_percent));
        }
        Ok(())
    }
}

/// Why a parity packet, a rebuilt group or an FEC setting is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FecError {
    /// The parity payload is shorter than the sub-header plus a shard prefix.
    #[error("parity payload of {0} bytes is too short")]
    TooShort(usize),
    /// `k` or `m` is zero or beyond the protocol limits.
    #[error("{data} data and {parity} parity shards are out of range (1..=64, 1..=16)")]
    ShardCounts {
        /// Data shards claimed.
        data: usize,
        /// Parity shards claimed.
        parity: usize,
    },
    /// The sparse parity budget is above [`MAX_SPARSE_BUDGET_PERCENT`].
    #[error("sparse parity budget of {0} % is above the limit of 200 %")]
    SparseBudget(u16),
    /// The parity index is not below the group's parity count.
    #[error("parity index {index} of a group with {parity} parity shards")]
    BadIndex {
        /// The index.
        index: u8,
        /// The group's parity count.
        parity: u8,
    },
    /// The group starts beyond the receive window.
    #[error("group starts beyond the receive window")]
    OutOfWindow,
    /// Shapes or shard lengths of one group disagree.
    #[error("inconsistent group")]
    Inconsistent,
    /// Too few shards to rebuild the group.
    #[error("too few shards to rebuild the group")]
    TooFewShards,
    /// A rebuilt shard does not parse as a data packet.
    #[error("rebuilt shard is not a valid data packet")]
    BadShard,
}

/// The unpadded shard of a data packet (see the table above).
pub(crate) fn group_shard(last: bool, fin: bool, payload: &[u8]) -> Vec<u8> {
    group::shard_bytes(last, fin, payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, ConfigError};

    #[test]
    fn shard_counts_outside_the_protocol_limits_are_refused() {
        assert_eq!(FecConfig::default().validate(), Ok(()));
        for (data, parity) in [(0, 3), (65, 3), (10, 0), (10, 17)] {
            let config = Config {
                fec: FecConfig {
                    data_shards: data,
                    parity_shards: parity,
                    ..FecConfig::default()
                },
                ..Config::default()
            };
            assert_eq!(
                config.validate(),
                Err(ConfigError::Fec(FecError::ShardCounts { data, parity }))
            );
        }
    }

    #[test]
    fn a_sparse_budget_above_the_limit_is_refused() {
        let fec = |sparse_budget_percent| FecConfig {
            sparse_budget_percent,
            ..FecConfig::default()
        };
        assert_eq!(fec(0).validate(), Ok(()));
        assert_eq!(fec(MAX_SPARSE_BUDGET_PERCENT).validate(), Ok(()));
        assert_eq!(
            fec(MAX_SPARSE_BUDGET_PERCENT + 1).validate(),
            Err(FecError::SparseBudget(MAX_SPARSE_BUDGET_PERCENT + 1))
        );
    }
}
