//! Forward error correction in the simulator: repair without retransmission, sparse traffic,
//! adaptation to loss, repair reports, hostile parity, and exactly-once delivery under loss.

use std::time::Duration;

use aetherflow_quantum::fec::{FecConfig, FecHeader};
use aetherflow_quantum::packet::{Flags, Header};
use aetherflow_quantum::{Config, ConnectionId, ConnectionStats, Packet};
use proptest::prelude::*;

use crate::harness::{Link, Sim, config, data_seq, numbered, parity_header};

fn client_stats(sim: &Sim, id: ConnectionId) -> ConnectionStats {
    sim.client.connection(id).expect("open").stats()
}

fn server_stats(sim: &Sim, id: ConnectionId) -> ConnectionStats {
    sim.server.connection(id).expect("open").stats()
}

/// Drops the client's data packets whose 1-based count since the rule was set is in `victims`.
fn drop_nth_client_data(sim: &mut Sim, victims: Vec<usize>) {
    sim.drop_client_data(move |n| victims.contains(&n));
}

/// Drops every `n`th data packet from the client, retransmissions included.
fn drop_every_nth_client_data(sim: &mut Sim, n: usize) {
    sim.drop_client_data(move |seen| seen % n == 0);
}

/// Sends `count` messages of 100 bytes at 20 per second, starting at message number `from`.
fn send_sparse(sim: &mut Sim, id: ConnectionId, from: u32, count: u32) {
    for n in from..from + count {
        sim.client.send(id, &numbered(n, 100)).expect("open");
        sim.run_exactly(Duration::from_millis(50));
    }
}

#[test]
fn a_lost_data_packet_is_repaired_without_retransmission() {
    let mut sim = Sim::new(40, Link::clean(25));
    let id = sim.establish();
    // A first loss, repaired by retransmission, gives the sender a measured loss rate.
    drop_nth_client_data(&mut sim, vec![1]);
    for n in 0..8 {
        sim.client.send(id, &numbered(n, 100)).expect("open");
    }
    assert!(sim.run_until(Duration::from_secs(10), |s| s.server_messages().len() == 8));
    let before = client_stats(&sim, id);
    assert_eq!(before.retransmits, 1);
    assert_eq!(
        before.fec_packets_sent, 0,
        "no loss was measured when that group closed"
    );

    // Now a full group goes out with parity, and its third packet is lost.
    drop_nth_client_data(&mut sim, vec![3]);
    for n in 8..18 {
        sim.client.send(id, &numbered(n, 100)).expect("open");
    }
    assert!(sim.run_until(Duration::from_secs(10), |s| s.server_messages().len() == 18));
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        sim.server_messages(),
        (0..18).map(|n| numbered(n, 100)).collect::<Vec<_>>()
    );
    let client = client_stats(&sim, id);
    assert_eq!(
        client.retransmits, before.retransmits,
        "FEC, not retransmission, repaired it"
    );
    assert_eq!(client.fec_packets_sent, 3, "10 + 3 at the measured loss");
    assert_eq!(server_stats(&sim, id).fec_repaired, 1);
    assert_eq!(
        client.fec_repairs_reported, 1,
        "the repair was reported back"
    );
    assert_eq!(
        server_stats(&sim, id).messages_delivered,
        18,
        "delivered once"
    );
}

#[test]
fn sparse_traffic_is_protected_by_small_groups_right_after_their_newest_packet() {
    let mut sim = Sim::new(41, Link::clean(25));
    let id = sim.establish();
    drop_every_nth_client_data(&mut sim, 10);
    send_sparse(&mut sim, id, 0, 200);
    assert!(
        sim.run_until(Duration::from_secs(30), |s| s.server_messages().len()
            == 200)
    );
    assert_eq!(
        sim.server_messages(),
        (0..200).map(|n| numbered(n, 100)).collect::<Vec<_>>()
    );

    let client_addr = sim.client_addr;
    let mut groups = 0;
    for (at, datagram) in sim.sent.iter().filter(|(_, d)| d.from == client_addr) {
        let Some(header) = parity_header(&datagram.plain) else {
            continue;
        };
        groups += 1;
        // Sparse packets (one per 50 ms) never fill a group of 10. A sparse group holds only
        // packets whose tail loss probe is not yet due (sent within about one RTT), so one or
        // two; its parity follows the newest packet by the flush delay.
        assert!(
            header.data <= 2,
            "group at {} holds {}",
            header.first,
            header.data
        );
        assert_eq!(header.parity, 1);
        let last_seq = header.first.wrapping_add(u32::from(header.data) - 1);
        let last_sent = sim
            .sent
            .iter()
            .find(|(_, d)| d.from == client_addr && data_seq(&d.plain) == Some(last_seq))
            .map(|(t, _)| *t)
            .expect("the group's data went out before its parity");
        assert_eq!(*at - last_sent, FecConfig::default().flush_delay);
    }
    assert!(groups > 10, "only {groups} groups had parity");
    let repaired = server_stats(&sim, id).fec_repaired;
    assert!(repaired > 0, "parity repaired nothing");
    assert_eq!(client_stats(&sim, id).fec_repairs_reported, repaired);
}

/// Parity packets per first transmission of a data packet, sending 300 messages in bursts
/// of ten with every `drop_every`th data packet lost (never, if `None`).
fn parity_ratio(seed: u64, drop_every: Option<usize>) -> f64 {
    let mut sim = Sim::new(seed, Link::clean(25));
    let id = sim.establish();
    if let Some(n) = drop_every {
        drop_every_nth_client_data(&mut sim, n);
    }
    for burst in 0..30 {
        for n in burst * 10..burst * 10 + 10 {
            sim.client.send(id, &numbered(n, 100)).expect("open");
        }
        sim.run_for(Duration::from_millis(200));
    }
    assert!(
        sim.run_until(Duration::from_secs(30), |s| s.server_messages().len()
            == 300)
    );
    assert_eq!(
        sim.server_messages(),
        (0..300).map(|n| numbered(n, 100)).collect::<Vec<_>>()
    );
    let stats = client_stats(&sim, id);
    println!("drop every {drop_every:?}: {stats:?}");
    stats.fec_packets_sent as f64 / 300.0
}

#[test]
fn parity_adapts_to_the_measured_loss_rate() {
    let clean = parity_ratio(42, None);
    let light = parity_ratio(43, Some(100));
    let heavy = parity_ratio(44, Some(8));
    assert_eq!(clean, 0.0, "no loss, no parity");
    assert!(light > 0.0, "1% loss gets some parity");
    assert!(heavy > light, "more loss, more parity: {heavy} vs {light}");
    assert!(heavy <= 0.3 + 1e-9, "never beyond m/k: {heavy}");
}

/// A parity packet the client's connection seals: a misbehaving but authenticated peer.
fn forged_parity(sim: &mut Sim, id: ConnectionId, payload: Vec<u8>) -> Vec<u8> {
    let packet = Packet {
        header: Header {
            flags: Flags::FEC,
            connection_id: id,
            sequence: 0,
            acknowledgement: 0,
        },
        sack: Vec::new(),
        payload,
    };
    let now = sim.now;
    let conn = sim.client.connection_mut(id).expect("open");
    conn.seal_raw(now, &packet).expect("established")
}

#[test]
fn hostile_parity_is_dropped_and_counted() {
    let mut sim = Sim::new(45, Link::clean(10));
    let id = sim.establish();
    let header = |first, data, parity, index| FecHeader {
        first,
        data,
        parity,
        index,
    };
    let hostile = [
        vec![1, 2, 3],                                  // shorter than the sub-header
        header(0, 0, 3, 0).encode(&[0; 10]),            // k = 0
        header(0, 65, 3, 0).encode(&[0; 10]),           // k beyond 64
        header(0, 10, 17, 0).encode(&[0; 10]),          // m beyond 16
        header(0, 10, 3, 3).encode(&[0; 10]),           // index not below m
        header(0x4000_0000, 10, 3, 0).encode(&[0; 10]), // beyond the receive window
    ];
    let client_addr = sim.client_addr;
    for payload in &hostile {
        let datagram = forged_parity(&mut sim, id, payload.clone());
        sim.server.handle(sim.now, client_addr, &datagram);
    }
    assert_eq!(server_stats(&sim, id).fec_rejected, hostile.len() as u64);

    // A forged parity packet for the group about to be sent, then a conflicting one: the
    // second disagrees with the first and is refused.
    let next = {
        let probe = sim.sent.iter().rev().find(|(_, d)| d.from == client_addr);
        let packet = probe.and_then(|(_, d)| Packet::decode(&d.plain).ok());
        packet.expect("the client sent something").header.sequence
    };
    let first = header(next, 2, 1, 0).encode(&[0; 30]);
    let conflicting = header(next, 2, 1, 0).encode(&[0; 31]);
    let first = forged_parity(&mut sim, id, first);
    sim.server.handle(sim.now, client_addr, &first);
    let conflicting = forged_parity(&mut sim, id, conflicting);
    sim.server.handle(sim.now, client_addr, &conflicting);
    assert_eq!(
        server_stats(&sim, id).fec_rejected,
        hostile.len() as u64 + 1
    );

    // The connection still works, and the forged group, whose shards cannot match the real
    // data, repairs nothing.
    sim.client.send(id, b"still fine").expect("open");
    sim.client.send(id, b"and again").expect("open");
    assert!(sim.run_until(Duration::from_secs(5), |s| s.server_messages().len() == 2));
    assert_eq!(
        sim.server_messages(),
        vec![b"still fine".to_vec(), b"and again".to_vec()]
    );
    assert_eq!(server_stats(&sim, id).fec_repaired, 0);
}

#[test]
fn forged_parity_that_rebuilds_garbage_is_refused() {
    let mut sim = Sim::new(46, Link::clean(10));
    let id = sim.establish();
    let client_addr = sim.client_addr;
    // Lose the only data packet, and forge the parity of a one-packet group for it: the
    // "rebuilt" shard claims a length beyond itself, so it is refused, and the retransmission
    // delivers the real message.
    drop_nth_client_data(&mut sim, vec![1]);
    sim.client.send(id, b"real").expect("open");
    sim.step();
    let seq = sim
        .sent
        .iter()
        .rev()
        .find_map(|(_, d)| {
            (d.from == client_addr)
                .then(|| data_seq(&d.plain))
                .flatten()
        })
        .expect("data went out");
    let shard = [0xff, 0xff, 0, 1, 2];
    let forged = FecHeader {
        first: seq,
        data: 1,
        parity: 1,
        index: 0,
    }
    .encode(&shard);
    let forged = forged_parity(&mut sim, id, forged);
    sim.server.handle(sim.now, client_addr, &forged);
    assert_eq!(server_stats(&sim, id).fec_rejected, 1);
    assert_eq!(server_stats(&sim, id).fec_repaired, 0);
    assert!(sim.run_until(Duration::from_secs(5), |s| s.server_messages().len() == 1));
    assert_eq!(sim.server_messages(), vec![b"real".to_vec()]);
}

fn exactly_once_with_fec(seed: u64, loss: f64) -> Result<(), TestCaseError> {
    let link = Link {
        loss,
        delay: Duration::from_millis(25),
        jitter: Duration::from_millis(10),
        duplicate: 0.02,
        ..Link::clean(25)
    };
    // As in the reliability proptest: a patient connection, so heavy loss in the handshake
    // does not end the experiment. The long cookie lifetime works around a handshake gap
    // outside FEC: a client that keeps losing the SYN-ACK echoes its first cookie until it
    // expires, and the server then rejects it without a fresh Retry (seed
    // 1710636289863649507 at 27% loss: 46 invalid cookies, never connected).
    let patient = |seed| Config {
        idle_timeout: Duration::from_secs(300),
        max_rto: Duration::from_secs(5),
        cookie_lifetime: Duration::from_secs(600),
        fec: FecConfig::default(),
        ..config(seed)
    };
    let server = Config {
        accept_incoming: true,
        ..patient(seed ^ 0x5eed)
    };
    let mut sim = Sim::with_configs(seed, link, patient(seed), server);
    println!("loss = {loss}");
    // Not `establish`: at 30% loss the handshake alone may take a while; messages queue.
    let id = sim.connect();
    // Bursts of small and fragmented messages with pauses, so groups both fill and close early.
    let sent: Vec<Vec<u8>> = (0..80)
        .map(|n| numbered(n, 1 + (n as usize * 173) % 1800))
        .collect();
    for chunk in sent.chunks(7) {
        for message in chunk {
            sim.client.send(id, message).expect("open");
        }
        sim.run_for(Duration::from_millis(40));
    }
    sim.run_until(Duration::from_secs(300), |s| {
        s.server_messages().len() >= sent.len()
    });
    sim.run_for(Duration::from_secs(1));
    let received = sim.server_messages();
    prop_assert_eq!(received.len(), sent.len(), "seed {}", seed);
    prop_assert!(received == sent, "seed {}: messages differ", seed);
    let stats = sim.server.connection(id).map(|c| c.stats());
    prop_assert_eq!(stats.map(|s| s.fec_rejected), Some(0), "seed {}", seed);
    Ok(())
}

#[test]
fn a_handshake_that_outlives_its_first_cookie_still_delivers_with_fec() {
    // A case the proptest found at 27% loss; see the cookie note in `exactly_once_with_fec`.
    exactly_once_with_fec(1_710_636_289_863_649_507, 0.273_762_338_298_559_17)
        .expect("every message, once, in order");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn with_fec_every_message_arrives_exactly_once_in_order(seed in any::<u64>(), loss in 0.0f64..0.3) {
        exactly_once_with_fec(seed, loss)?;
    }
}
