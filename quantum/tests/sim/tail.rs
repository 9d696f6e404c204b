//! Sparse-traffic latency mechanisms: immediate acknowledgement of a message that follows a
//! silence, the tail loss probe, and FEC never holding back loss recovery.

use std::time::{Duration, Instant};

use aetherflow_quantum::{ConnectionId, ConnectionStats};

use crate::harness::{Link, Sim, data_seq, numbered};

fn client_stats(sim: &Sim, id: ConnectionId) -> ConnectionStats {
    sim.client.connection(id).expect("open").stats()
}

/// One message every 50 ms, numbered from `from`.
fn send_sparse(sim: &mut Sim, id: ConnectionId, from: u32, count: u32) {
    for n in from..from + count {
        sim.client.send(id, &numbered(n, 100)).expect("open");
        sim.run_exactly(Duration::from_millis(50));
    }
}

/// Every transmission of each data sequence number the client sent, in order.
fn client_data_times(sim: &Sim) -> Vec<(u32, Instant)> {
    sim.sent
        .iter()
        .filter(|(_, d)| d.from == sim.client_addr)
        .filter_map(|(t, d)| data_seq(&d.plain).map(|seq| (seq, *t)))
        .collect()
}

#[test]
fn a_sparse_message_is_acknowledged_at_once() {
    // With a delayed ACK the sender would measure RTT + max_ack_delay (75 ms) per sample.
    let mut sim = Sim::new(61, Link::clean(25));
    let id = sim.establish();
    send_sparse(&mut sim, id, 0, 20);
    assert!(sim.run_until(Duration::from_secs(5), |s| s.server_messages().len() == 20));
    let stats = client_stats(&sim, id);
    assert_eq!(stats.srtt, Some(Duration::from_millis(50)), "{stats:?}");
    assert_eq!(stats.retransmits, 0, "no probe on a clean link: {stats:?}");
}

#[test]
fn a_lone_lost_message_is_probed_within_about_one_rtt() {
    let mut sim = Sim::new(62, Link::clean(25));
    let id = sim.establish();
    send_sparse(&mut sim, id, 0, 10);
    // The next message's first transmission is lost, and nothing follows it.
    let client_addr = sim.client_addr;
    let mut dropped = false;
    sim.drop_rule = Some(Box::new(move |_, d| {
        let drop = !dropped && d.from == client_addr && data_seq(&d.plain).is_some();
        dropped |= drop;
        drop
    }));
    sim.client.send(id, &numbered(10, 100)).expect("open");
    assert!(sim.run_until(Duration::from_secs(5), |s| {
        s.server_messages().len() == 11
            && s.client.connection(id).expect("open").unacked_fragments() == 0
    }));
    let times = client_data_times(&sim);
    let (lost_seq, first) = times[10];
    let (probe_seq, probe) = times[11];
    assert_eq!(probe_seq, lost_seq, "the probe resends the lost message");
    let stats = client_stats(&sim, id);
    let srtt = stats.srtt.expect("measured");
    // SRTT plus the margin of max(2·RTTVAR, SRTT/8); RTTVAR decayed on a clean link.
    assert!(
        probe - first <= srtt * 5 / 4,
        "probe after {:?}",
        probe - first
    );
    assert!(
        probe - first < stats.rto,
        "before the RTO ({:?})",
        stats.rto
    );
    assert_eq!((stats.tail_probes, stats.rto_expiries), (1, 0), "{stats:?}");
    assert_eq!(
        stats.tail_probe_recoveries, 1,
        "the probe repaired a real loss"
    );
}

#[test]
fn fec_never_delays_loss_recovery_past_the_retransmission_time() {
    // Every 10th data packet is lost; FEC measures the loss and adds parity, whose groups
    // close long after their first packet on sparse traffic. Recovery must not wait for them.
    let mut sim = Sim::new(63, Link::clean(25));
    let id = sim.establish();
    sim.drop_client_data(|seen| seen % 10 == 0);
    send_sparse(&mut sim, id, 0, 200);
    assert!(
        sim.run_until(Duration::from_secs(10), |s| s.server_messages().len()
            == 200)
    );
    assert_eq!(
        sim.server_messages(),
        (0..200).map(|n| numbered(n, 100)).collect::<Vec<_>>()
    );
    let stats = client_stats(&sim, id);
    assert!(stats.fec_packets_sent > 0, "FEC was active: {stats:?}");
    let times = client_data_times(&sim);
    let rtt = Duration::from_millis(50);
    let mut resent = 0;
    for (i, &(seq, at)) in times.iter().enumerate() {
        let Some(&(_, first)) = times[..i].iter().find(|(s, _)| *s == seq) else {
            continue;
        };
        resent += 1;
        assert!(
            at - first < rtt * 2,
            "seq {seq} resent after {:?}",
            at - first
        );
    }
    let repaired = sim
        .server
        .connection(id)
        .expect("open")
        .stats()
        .fec_repaired;
    // A packet may be both (the probe leaves before the parity arrives), never neither.
    assert!(
        resent as u64 + repaired >= 20,
        "{resent} resent, {repaired} repaired"
    );
}
