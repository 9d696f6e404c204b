//! Sparse FEC: app-limited traffic gets a parity packet a few milliseconds after its newest
//! packet, paid from a byte budget that grows with the measured loss, so a lost message is
//! rebuilt one one-way delay after it was sent, before any retransmission timer fires.

use std::time::{Duration, Instant};

use aetherflow_quantum::fec::{FecConfig, FecHeader};
use aetherflow_quantum::{ConnectionId, ConnectionStats};

use crate::harness::{Link, Sim, data_seq, numbered, parity_header};

fn stats(sim: &Sim, id: ConnectionId, server: bool) -> ConnectionStats {
    let endpoint = if server { &sim.server } else { &sim.client };
    endpoint.connection(id).expect("open").stats()
}

/// Parity bytes over all other bytes the client sent.
fn overhead(stats: &ConnectionStats) -> f64 {
    stats.fec_bytes_sent as f64 / (stats.bytes_sent - stats.fec_bytes_sent) as f64
}

/// The client's transmissions of data sequence numbers and parity packets after `since`.
fn client_sent_since(sim: &Sim, since: Instant) -> Vec<(Instant, Option<u32>, Option<FecHeader>)> {
    sim.sent
        .iter()
        .filter(|(t, d)| d.from == sim.client_addr && *t >= since)
        .map(|(t, d)| (*t, data_seq(&d.plain), parity_header(&d.plain)))
        .collect()
}

/// 40 sparse messages with every 10th data packet lost, so the sender measures 10 % loss,
/// then 20 more on a clean link of which the data packet with sequence `victim` (if any) is
/// dropped once. Returns the simulation, the connection, and when the second phase began.
fn scenario(victim: Option<u32>) -> (Sim, ConnectionId, Instant) {
    let mut sim = Sim::new(71, Link::clean(25));
    let id = sim.establish();
    let client_addr = sim.client_addr;
    sim.drop_client_data(|seen| seen % 10 == 0);
    for n in 0..40 {
        sim.client.send(id, &numbered(n, 100)).expect("open");
        sim.run_exactly(Duration::from_millis(50));
    }
    assert!(sim.run_until(Duration::from_secs(10), |s| s.server_message_count() == 40));
    sim.run_for(Duration::from_millis(500));
    let mut dropped = false;
    sim.drop_rule = Some(Box::new(move |_, d| {
        let hit = !dropped && d.from == client_addr && data_seq(&d.plain) == victim;
        dropped |= hit;
        hit && victim.is_some()
    }));
    let phase = sim.now;
    for n in 40..60 {
        sim.client.send(id, &numbered(n, 100)).expect("open");
        sim.run_exactly(Duration::from_millis(50));
    }
    (sim, id, phase)
}

#[test]
fn a_lost_sparse_message_is_rebuilt_from_parity_before_any_retransmission_timer() {
    // A dry run finds which packet the first sparse parity of the clean phase covers last;
    // the simulation is deterministic, so the real run drops exactly that packet.
    let (dry, dry_id, phase) = scenario(None);
    let sent = client_sent_since(&dry, phase);
    let header = sent
        .iter()
        .find_map(|(_, _, h)| *h)
        .expect("at 10 % measured loss sparse traffic gets parity");
    let victim = header.first.wrapping_add(u32::from(header.data) - 1);

    let (mut sim, id, phase) = scenario(Some(victim));
    assert!(sim.run_until(Duration::from_secs(10), |s| s.server_message_count() == 60));
    assert_eq!(
        sim.server_messages(),
        (0..60).map(|n| numbered(n, 100)).collect::<Vec<_>>()
    );
    let sent = client_sent_since(&sim, phase);
    let transmissions: Vec<Instant> = sent
        .iter()
        .filter(|(_, seq, _)| *seq == Some(victim))
        .map(|(t, ..)| *t)
        .collect();
    assert_eq!(transmissions.len(), 1, "the lost packet was never resent");
    let parity_at = sent
        .iter()
        .find(|(_, _, h)| h.is_some_and(|h| h.first == header.first))
        .map(|(t, ..)| *t)
        .expect("its parity went out");
    // The parity followed the lost packet by the 5 ms flush delay, long before the tail loss
    // probe (SRTT + SRTT/8 = 56 ms) or the RTO could resend it.
    assert_eq!(
        parity_at - transmissions[0],
        FecConfig::default().flush_delay
    );
    let (dry_server, server) = (stats(&dry, dry_id, true), stats(&sim, id, true));
    assert_eq!(
        server.fec_repaired,
        dry_server.fec_repaired + 1,
        "rebuilt from parity"
    );
    let (dry_client, client) = (stats(&dry, dry_id, false), stats(&sim, id, false));
    assert_eq!(
        client.tail_probes, dry_client.tail_probes,
        "no probe fired for it"
    );
    assert_eq!(client.retransmits, dry_client.retransmits);
}

#[test]
fn without_measured_loss_sparse_traffic_gets_no_parity() {
    let mut sim = Sim::new(72, Link::clean(25));
    let id = sim.establish();
    for n in 0..400 {
        sim.client.send(id, &numbered(n, 100)).expect("open");
        sim.run_exactly(Duration::from_millis(50));
    }
    assert!(sim.run_until(Duration::from_secs(10), |s| s.server_message_count() == 400));
    let client = stats(&sim, id, false);
    assert_eq!(client.fec_packets_sent, 0, "{client:?}");
    assert_eq!(client.fec_bytes_sent, 0);
}

#[test]
fn sparse_parity_stays_within_budget_at_five_percent_loss_and_repairs_losses() {
    for seed in [73, 74, 75] {
        println!("seed {seed}");
        let link = Link {
            loss: 0.05,
            ..Link::clean(25)
        };
        let mut sim = Sim::new(seed, link);
        let id = sim.establish();
        for n in 0..1000 {
            sim.client.send(id, &numbered(n, 100)).expect("open");
            sim.run_exactly(Duration::from_millis(50));
        }
        assert!(
            sim.run_until(Duration::from_secs(30), |s| s.server_message_count()
                == 1000),
            "seed {seed}"
        );
        assert_eq!(
            sim.server_messages(),
            (0..1000).map(|n| numbered(n, 100)).collect::<Vec<_>>(),
            "seed {seed}"
        );
        let client = stats(&sim, id, false);
        let server = stats(&sim, id, true);
        let ratio = overhead(&client);
        println!(
            "seed {seed}: overhead {ratio:.3}, {client:?}, repaired {}",
            server.fec_repaired
        );
        // The byte budget at 5 % loss is 35 %; the sparse budget is 30 % of data.
        assert!(ratio <= 0.35, "seed {seed}: overhead {ratio}");
        assert!(
            ratio >= 0.15,
            "seed {seed}: sparse parity barely ran ({ratio})"
        );
        assert!(
            server.fec_repaired >= 5,
            "seed {seed}: {} repairs",
            server.fec_repaired
        );
    }
}
