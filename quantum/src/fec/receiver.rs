//! The receiving side of FEC: recent data shards, groups waiting for enough shards, and
//! reconstruction of missing data packets.
//!
//! Memory is bounded: data shards are kept only from [`MAX_DATA_SHARDS`] below the cumulative
//! acknowledgement up to the receive window (a group missing a packet cannot start lower),
//! and at most [`MAX_PENDING_GROUPS`] groups wait for shards, the oldest dropped first.

use std::collections::BTreeMap;

use super::FecError;
use super::group::{DataShard, FecHeader, MAX_DATA_SHARDS, reconstruct};
use crate::packet::expand_sequence;

/// Groups waiting for shards at once; a hostile peer announcing more only evicts its own.
pub const MAX_PENDING_GROUPS: usize = 32;

/// A data packet rebuilt from parity, ready for the normal receive path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Repaired {
    /// Its sequence number.
    pub seq: u64,
    /// Its flags and payload.
    pub shard: DataShard,
}

#[derive(Debug)]
struct PendingGroup {
    data: usize,
    /// Length of every shard of the group (the parity shards' length).
    len: usize,
    parity: Vec<Option<Vec<u8>>>,
}

/// Receiver state of FEC for one connection.
#[derive(Debug, Default)]
pub(crate) struct FecReceiver {
    /// Unpadded shards of data packets received, by sequence number.
    history: BTreeMap<u64, Vec<u8>>,
    /// Groups with at least one parity shard, by first sequence number.
    groups: BTreeMap<u64, PendingGroup>,
}

impl FecReceiver {
    /// Remembers a data packet's shard (see [`super::group::shard_bytes`]).
    pub fn on_data(&mut self, seq: u64, shard: Vec<u8>, ack: u64) {
        self.history.insert(seq, shard);
        self.forget_below(ack);
    }

    fn forget_below(&mut self, ack: u64) {
        let floor = ack.saturating_sub(MAX_DATA_SHARDS as u64);
        self.history = self.history.split_off(&floor);
        // A group wholly below the acknowledgement has nothing left to repair.
        self.groups.retain(|&first, g| first + g.data as u64 > ack);
    }

    /// Takes one parity packet's payload. `ack` is the cumulative acknowledgement and `window`
    /// the receive window, which bound where a group may start.
    pub fn on_parity(&mut self, payload: &[u8], ack: u64, window: u64) -> Result<(), FecError> {
        let (header, shard) = FecHeader::decode(payload)?;
        let first = expand_sequence(header.first, ack);
        let (data, parity) = (usize::from(header.data), usize::from(header.parity));
        if first >= ack + window {
            return Err(FecError::OutOfWindow);
        }
        self.forget_below(ack);
        if first + data as u64 <= ack {
            return Ok(());
        }
        let group = self.groups.entry(first).or_insert_with(|| PendingGroup {
            data,
            len: shard.len(),
            parity: vec![None; parity],
        });
        if group.data != data || group.parity.len() != parity || group.len != shard.len() {
            return Err(FecError::Inconsistent);
        }
        group.parity[usize::from(header.index)] = Some(shard.to_vec());
        while self.groups.len() > MAX_PENDING_GROUPS {
            self.groups.pop_first();
        }
        Ok(())
    }

    /// Rebuilds what the held shards allow. Groups that turn out inconsistent are dropped and
    /// reported as errors, one per group, alongside the repairs.
    pub fn repair(&mut self) -> (Vec<Repaired>, Vec<FecError>) {
        let mut repaired = Vec::new();
        let mut errors = Vec::new();
        let mut finished = Vec::new();
        for (&first, group) in &self.groups {
            let seqs = first..first + group.data as u64;
            // Count before copying anything: this runs after every data packet.
            let missing = seqs
                .clone()
                .filter(|seq| !self.history.contains_key(seq))
                .count();
            let parity_held = group.parity.iter().filter(|s| s.is_some()).count();
            if missing == 0 {
                finished.push(first);
                continue;
            }
            if missing > parity_held {
                continue;
            }
            finished.push(first);
            let data = seqs.map(|seq| self.history.get(&seq).cloned());
            let shards = data.chain(group.parity.iter().cloned()).collect();
            match reconstruct(shards, group.data, group.len) {
                Ok(rebuilt) => {
                    repaired.extend(rebuilt.into_iter().map(|(index, shard)| Repaired {
                        seq: first + index as u64,
                        shard,
                    }))
                }
                Err(error) => errors.push(error),
            }
        }
        for first in finished {
            self.groups.remove(&first);
        }
        (repaired, errors)
    }

    /// Groups waiting for shards, for tests of the memory bound.
    #[cfg(test)]
    pub fn pending_groups(&self) -> usize {
        self.groups.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fec::group::{encode_parity, shard_bytes};

    fn parity_payloads(first: u32, data: &[Vec<u8>], m: usize) -> Vec<Vec<u8>> {
        let parity = encode_parity(data, m).expect("valid");
        (0u8..)
            .zip(parity)
            .map(|(index, shard)| {
                let header = FecHeader {
                    first,
                    data: data.len() as u8,
                    parity: m as u8,
                    index,
                };
                header.encode(&shard)
            })
            .collect()
    }

    #[test]
    fn rebuilds_a_missing_packet_once_enough_shards_arrive() {
        let data: Vec<Vec<u8>> = (0..4u8)
            .map(|i| shard_bytes(true, false, &[i; 9]))
            .collect();
        let mut rx = FecReceiver::default();
        for seq in [10, 11, 13] {
            rx.on_data(seq, data[(seq - 10) as usize].clone(), 10);
        }
        assert_eq!(rx.repair(), (vec![], vec![]), "no parity yet");
        let payloads = parity_payloads(10, &data, 2);
        rx.on_parity(&payloads[1], 10, 1024).expect("valid");
        let (repaired, errors) = rx.repair();
        assert!(errors.is_empty());
        assert_eq!(repaired.len(), 1);
        assert_eq!(repaired[0].seq, 12);
        assert_eq!(repaired[0].shard.payload, vec![2; 9]);
        assert_eq!(rx.pending_groups(), 0, "a repaired group is done");
    }

    #[test]
    fn hostile_parity_is_refused_without_panicking() {
        let data: Vec<Vec<u8>> = (0..3u8)
            .map(|i| shard_bytes(true, false, &[i; 5]))
            .collect();
        let payloads = parity_payloads(100, &data, 2);
        let mut rx = FecReceiver::default();
        rx.on_parity(&payloads[0], 100, 1024).expect("valid");
        // Same group, different shape.
        let mut other = payloads[1].clone();
        other[4] = 4;
        assert_eq!(rx.on_parity(&other, 100, 1024), Err(FecError::Inconsistent));
        let mut longer = payloads[1].clone();
        longer.push(0);
        assert_eq!(
            rx.on_parity(&longer, 100, 1024),
            Err(FecError::Inconsistent)
        );
        let far = parity_payloads(100 + 5000, &data, 2);
        assert_eq!(rx.on_parity(&far[0], 100, 1024), Err(FecError::OutOfWindow));
        // A data packet longer than the group's shards cannot be part of it.
        rx.on_data(100, shard_bytes(true, false, &[0; 50]), 100);
        let (repaired, errors) = rx.repair();
        assert!(repaired.is_empty());
        assert!(errors.is_empty(), "still waiting: two missing, one parity");
        rx.on_parity(&payloads[1], 100, 1024).expect("valid");
        let (repaired, errors) = rx.repair();
        assert!(repaired.is_empty());
        assert_eq!(errors, vec![FecError::Inconsistent]);
    }

    #[test]
    fn pending_groups_are_bounded() {
        let data = vec![shard_bytes(true, false, b"x"); 2];
        let mut rx = FecReceiver::default();
        for group in 0..100u32 {
            let payload = &parity_payloads(group * 2, &data, 1)[0];
            rx.on_parity(payload, 0, 1024).expect("valid");
        }
        assert_eq!(rx.pending_groups(), MAX_PENDING_GROUPS);
    }

    #[test]
    fn history_keeps_only_what_a_group_could_still_need() {
        let mut rx = FecReceiver::default();
        for seq in 0..1000 {
            rx.on_data(seq, vec![0, 0, 0], seq + 1);
        }
        assert!(rx.history.len() <= MAX_DATA_SHARDS + 1);
    }
}
