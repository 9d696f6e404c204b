//! The FEC group codec: shards of data packets, the parity sub-header, Reed-Solomon encoding
//! and reconstruction. Pure functions over bytes; the byte layouts are in the module docs of
//! [`crate::fec`].

use reed_solomon_erasure::galois_8::ReedSolomon;

use super::FecError;

/// Most data packets one group may hold (`k`); a protocol limit, not a default.
pub const MAX_DATA_SHARDS: usize = 64;
/// Most parity packets one group may carry (`m`); a protocol limit, not a default.
pub const MAX_PARITY_SHARDS: usize = 16;
/// Length of the FEC sub-header at the start of a parity packet's payload.
pub const FEC_HEADER_LEN: usize = 7;
/// Bytes a data shard spends before the payload: length (2) and flags (1).
pub const SHARD_PREFIX_LEN: usize = 3;

/// Shard flag: the data packet carried PSH (last fragment of a message).
const SHARD_LAST: u8 = 0x01;
/// Shard flag: the data packet carried FIN.
const SHARD_FIN: u8 = 0x02;

/// The sub-header of a parity packet: which group it protects and which parity shard it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FecHeader {
    /// Sequence number (low 32 bits) of the group's first data packet; the group is the `k`
    /// consecutive sequence numbers from there.
    pub first: u32,
    /// Data packets in the group.
    pub data: u8,
    /// Parity packets of the group.
    pub parity: u8,
    /// Which parity shard this is, `0..parity`.
    pub index: u8,
}

impl FecHeader {
    /// Prepends the sub-header to `shard`, giving a parity packet's payload.
    pub fn encode(&self, shard: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(FEC_HEADER_LEN + shard.len());
        out.extend_from_slice(&self.first.to_be_bytes());
        out.extend_from_slice(&[self.data, self.parity, self.index]);
        out.extend_from_slice(shard);
        out
    }

    /// Splits a parity packet's payload into its checked sub-header and its shard.
    pub fn decode(payload: &[u8]) -> Result<(FecHeader, &[u8]), FecError> {
        let (fixed, shard) = payload
            .split_first_chunk::<FEC_HEADER_LEN>()
            .ok_or(FecError::TooShort(payload.len()))?;
        let header = FecHeader {
            first: u32::from_be_bytes([fixed[0], fixed[1], fixed[2], fixed[3]]),
            data: fixed[4],
            parity: fixed[5],
            index: fixed[6],
        };
        let (k, m) = (usize::from(header.data), usize::from(header.parity));
        if !(1..=MAX_DATA_SHARDS).contains(&k) || !(1..=MAX_PARITY_SHARDS).contains(&m) {
            return Err(FecError::ShardCounts { data: k, parity: m });
        }
        if header.index >= header.parity {
            return Err(FecError::BadIndex {
                index: header.index,
                parity: header.parity,
            });
        }
        if shard.len() < SHARD_PREFIX_LEN {
            return Err(FecError::TooShort(payload.len()));
        }
        Ok((header, shard))
    }
}

/// One data packet's protected bytes, as the group codec sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataShard {
    /// The packet carried PSH.
    pub last: bool,
    /// The packet carried FIN.
    pub fin: bool,
    /// The packet's payload.
    pub payload: Vec<u8>,
}

/// The unpadded shard of a data packet: payload length (2), flags (1), payload.
pub fn shard_bytes(last: bool, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SHARD_PREFIX_LEN + payload.len());
    // Payloads come from packets whose length field is 16 bits, so this never saturates.
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    let mut flags = 0;
    if last {
        flags |= SHARD_LAST;
    }
    if fin {
        flags |= SHARD_FIN;
    }
    out.push(flags);
    out.extend_from_slice(payload);
    out
}

/// Reads a (padded) data shard back; padding must be zero so a forged shard cannot pass.
pub fn parse_shard(shard: &[u8]) -> Result<DataShard, FecError> {
    let (prefix, rest) = shard
        .split_first_chunk::<SHARD_PREFIX_LEN>()
        .ok_or(FecError::BadShard)?;
    let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
    let flags = prefix[2];
    if len > rest.len() || flags & !(SHARD_LAST | SHARD_FIN) != 0 {
        return Err(FecError::BadShard);
    }
    let (payload, padding) = rest.split_at(len);
    if padding.iter().any(|&b| b != 0) {
        return Err(FecError::BadShard);
    }
    Ok(DataShard {
        last: flags & SHARD_LAST != 0,
        fin: flags & SHARD_FIN != 0,
        payload: payload.to_vec(),
    })
}

fn codec(data: usize, parity: usize) -> Result<ReedSolomon, FecError> {
    ReedSolomon::new(data, parity).map_err(|_| FecError::ShardCounts { data, parity })
}

/// Computes `parity` parity shards over unpadded data shards, each padded with zeros to the
/// longest; every parity shard has that length.
pub fn encode_parity(data: &[Vec<u8>], parity: usize) -> Result<Vec<Vec<u8>>, FecError> {
    let rs = codec(data.len(), parity)?;
    let len = data.iter().map(Vec::len).max().unwrap_or(0);
    let mut shards: Vec<Vec<u8>> = data
        .iter()
        .map(|shard| {
            let mut padded = shard.clone();
            padded.resize(len, 0);
            padded
        })
        .chain(std::iter::repeat_n(vec![0; len], parity))
        .collect();
    rs.encode(&mut shards).map_err(|_| FecError::ShardCounts {
        data: data.len(),
        parity,
    })?;
    Ok(shards.split_off(data.len()))
}

/// Rebuilds the missing data shards of a group. `shards` holds the `k` data shards (unpadded,
/// `None` if missing) followed by the `m` parity shards of length `len`. Returns the missing
/// data packets by index in the group.
pub fn reconstruct(
    mut shards: Vec<Option<Vec<u8>>>,
    data: usize,
    len: usize,
) -> Result<Vec<(usize, DataShard)>, FecError> {
    let parity = shards
        .len()
        .checked_sub(data)
        .ok_or(FecError::Inconsistent)?;
    let rs = codec(data, parity)?;
    let mut missing = Vec::new();
    for (index, shard) in shards.iter_mut().enumerate() {
        match shard {
            Some(bytes) if bytes.len() > len => return Err(FecError::Inconsistent),
            Some(bytes) if index < data => bytes.resize(len, 0),
            Some(bytes) if bytes.len() != len => return Err(FecError::Inconsistent),
            Some(_) => {}
            None if index < data => missing.push(index),
            None => {}
        }
    }
    rs.reconstruct_data(&mut shards)
        .map_err(|_| FecError::TooFewShards)?;
    missing
        .into_iter()
        .map(|index| {
            let shard = shards[index].as_deref().ok_or(FecError::TooFewShards)?;
            Ok((index, parse_shard(shard)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn group(k: usize) -> Vec<Vec<u8>> {
        (0..k)
            .map(|i| shard_bytes(i % 3 == 2, false, &vec![i as u8 + 1; 1 + i * 7 % 40]))
            .collect()
    }

    #[test]
    fn header_round_trips_and_rejects_bad_fields() {
        let header = FecHeader {
            first: 0xdead_beef,
            data: 10,
            parity: 3,
            index: 2,
        };
        let payload = header.encode(&[0, 1, 0, 9]);
        assert_eq!(&payload[..7], &[0xde, 0xad, 0xbe, 0xef, 10, 3, 2]);
        assert_eq!(FecHeader::decode(&payload), Ok((header, &[0, 1, 0, 9][..])));
        let bad = |data, parity, index| {
            FecHeader::decode(
                &FecHeader {
                    first: 1,
                    data,
                    parity,
                    index,
                }
                .encode(&[0; 3]),
            )
            .map(|(header, _)| header)
        };
        assert_eq!(
            bad(0, 3, 0),
            Err(FecError::ShardCounts { data: 0, parity: 3 })
        );
        assert_eq!(
            bad(65, 3, 0),
            Err(FecError::ShardCounts {
                data: 65,
                parity: 3
            })
        );
        assert_eq!(
            bad(10, 0, 0),
            Err(FecError::ShardCounts {
                data: 10,
                parity: 0
            })
        );
        assert_eq!(
            bad(10, 17, 0),
            Err(FecError::ShardCounts {
                data: 10,
                parity: 17
            })
        );
        assert_eq!(
            bad(10, 3, 3),
            Err(FecError::BadIndex {
                index: 3,
                parity: 3
            })
        );
        assert_eq!(FecHeader::decode(&[1, 2, 3]), Err(FecError::TooShort(3)));
        assert_eq!(FecHeader::decode(&payload[..9]), Err(FecError::TooShort(9)));
    }

    #[test]
    fn shard_round_trips_and_forged_shards_are_refused() {
        let shard = shard_bytes(true, false, b"hello");
        assert_eq!(&shard[..3], &[0, 5, 1]);
        let mut padded = shard.clone();
        padded.resize(20, 0);
        let parsed = parse_shard(&padded).expect("valid");
        assert_eq!(
            (parsed.last, parsed.fin, parsed.payload),
            (true, false, b"hello".to_vec())
        );
        assert_eq!(
            parse_shard(&[0, 9, 0, 1]),
            Err(FecError::BadShard),
            "length beyond shard"
        );
        assert_eq!(
            parse_shard(&[0, 0, 0x80]),
            Err(FecError::BadShard),
            "unknown flag"
        );
        assert_eq!(
            parse_shard(&[0, 0, 0, 7]),
            Err(FecError::BadShard),
            "non-zero padding"
        );
        assert_eq!(parse_shard(&[0]), Err(FecError::BadShard));
    }

    #[test]
    fn any_k_of_k_plus_m_recover_the_group() {
        let (k, m) = (6, 3);
        let data = group(k);
        let parity = encode_parity(&data, m).expect("valid counts");
        let len = parity[0].len();
        // Every way of losing up to m of the k + m shards.
        for lost_mask in 0u32..(1 << (k + m)) {
            if lost_mask.count_ones() as usize > m {
                continue;
            }
            let shards: Vec<Option<Vec<u8>>> = data
                .iter()
                .chain(&parity)
                .enumerate()
                .map(|(i, s)| (lost_mask & (1 << i) == 0).then(|| s.clone()))
                .collect();
            let repaired = reconstruct(shards, k, len).expect("enough shards");
            for (index, shard) in repaired {
                assert_eq!(
                    shard_bytes(shard.last, shard.fin, &shard.payload),
                    data[index]
                );
            }
        }
    }

    #[test]
    fn too_few_or_inconsistent_shards_are_errors() {
        let data = group(4);
        let parity = encode_parity(&data, 1).expect("valid");
        let len = parity[0].len();
        let two_lost = vec![
            None,
            None,
            Some(data[2].clone()),
            Some(data[3].clone()),
            Some(parity[0].clone()),
        ];
        assert_eq!(reconstruct(two_lost, 4, len), Err(FecError::TooFewShards));
        let long = vec![
            Some(vec![0; len + 1]),
            None,
            Some(data[2].clone()),
            Some(data[3].clone()),
            Some(parity[0].clone()),
        ];
        assert_eq!(reconstruct(long, 4, len), Err(FecError::Inconsistent));
        let short_parity = vec![
            None,
            Some(data[1].clone()),
            Some(data[2].clone()),
            Some(data[3].clone()),
            Some(vec![0; len - 1]),
        ];
        assert_eq!(
            reconstruct(short_parity, 4, len),
            Err(FecError::Inconsistent)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_parity_payloads_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
            if let Ok((header, shard)) = FecHeader::decode(&bytes) {
                let k = usize::from(header.data);
                let mut shards: Vec<Option<Vec<u8>>> = vec![None; k + usize::from(header.parity)];
                shards[k + usize::from(header.index)] = Some(shard.to_vec());
                let _ = reconstruct(shards, k, shard.len());
            }
            let _ = parse_shard(&bytes);
        }

        #[test]
        fn random_groups_round_trip(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..60), 1..12),
            m in 1usize..4,
            lost in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            let data: Vec<Vec<u8>> = payloads.iter().map(|p| shard_bytes(false, p.is_empty(), p)).collect();
            let parity = encode_parity(&data, m).expect("valid");
            let len = parity[0].len();
            let mut shards: Vec<Option<Vec<u8>>> = data.iter().chain(&parity).cloned().map(Some).collect();
            for index in lost.iter().take(m) {
                let total = shards.len();
                shards[index.index(total)] = None;
            }
            for (index, shard) in reconstruct(shards, data.len(), len).expect("at most m lost") {
                prop_assert_eq!(&shard.payload, &payloads[index]);
                prop_assert_eq!(shard.fin, payloads[index].is_empty());
            }
        }
    }
}
