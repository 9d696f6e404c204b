//! Seeded simulations of two Quantum endpoints; each prints its seed.

mod congestion;
mod fec;
mod harness;
mod hostile;
mod reliability;
mod secure;
mod sparse_fec;
mod tail;

use std::time::Duration;

use aetherflow_quantum::{CloseReason, Config, Event, Packet};
use harness::{Link, Sim, config, numbered};

#[test]
fn handshake_with_retry_cookie_connects_both_sides() {
    let mut sim = Sim::new(1, Link::clean(25));
    let id = sim.establish();
    assert_eq!(sim.server.stats().retries_sent, 1);
    assert_eq!(sim.server.stats().accepted, 1);
    assert_eq!(id.0.get_version_num(), 7, "connection ids are UUIDv7");
    // SYN, Retry, SYN+cookie, SYN-ACK reach the client after two round trips; its ACK
    // reaches the server half a round trip later.
    assert_eq!(sim.now - sim.start, Duration::from_millis(125));
    let flags: Vec<u8> = sim.sent.iter().map(|(_, d)| d.plain[22]).collect();
    assert_eq!(&flags[..4], &[0x01, 0x40, 0x01, 0x03]);
}

#[test]
fn handshake_survives_lost_syn_ack() {
    let mut sim = Sim::new(2, Link::clean(25));
    let mut dropped = false;
    sim.drop_rule = Some(Box::new(move |_, d| {
        let syn_ack = Packet::decode(&d.plain).is_ok_and(|p| p.header.flags.bits() == 0x03);
        let drop = syn_ack && !dropped;
        dropped |= drop;
        drop
    }));
    sim.establish();
    assert!(
        sim.now - sim.start >= Duration::from_secs(1),
        "waited for the handshake timer"
    );
}

#[test]
fn handshake_survives_its_retry_cookie_expiring() {
    // The client's SYNs carrying its cookie are lost for longer than a cookie lives, so it
    // echoes an expired one at last; the server answers with a fresh cookie (still keeping no
    // state) instead of ignoring it, and the handshake completes.
    let server = Config {
        accept_incoming: true,
        cookie_lifetime: Duration::from_millis(500),
        ..config(9 ^ 0x5eed)
    };
    let mut sim = Sim::with_configs(9, Link::clean(25), config(9), server);
    let start = sim.start;
    sim.drop_rule = Some(Box::new(move |now, d| {
        let syn_with_cookie = Packet::decode(&d.plain)
            .is_ok_and(|p| p.header.flags.bits() == 0x01 && p.payload.first() == Some(&1));
        syn_with_cookie && now - start < Duration::from_secs(2)
    }));
    sim.establish();
    assert!(
        sim.server.stats().invalid_cookies >= 1,
        "an expired cookie came back"
    );
    assert!(
        sim.server.stats().retries_sent >= 2,
        "and earned a fresh one"
    );
    assert_eq!(sim.server.stats().accepted, 1);
}

#[test]
fn messages_flow_both_ways_including_fragmented_ones() {
    let mut sim = Sim::new(3, Link::clean(10));
    let id = sim.establish();
    let big = numbered(0, 50_000);
    sim.client.send(id, &big).expect("within limit");
    sim.client
        .send(id, b"")
        .expect("empty messages are messages too");
    sim.server.send(id, b"pong").expect("open");
    assert!(
        sim.run_until(Duration::from_secs(10), |s| s.server_messages().len() == 2
            && s.client_messages().len() == 1)
    );
    assert_eq!(sim.server_messages(), vec![big, Vec::new()]);
    assert_eq!(sim.client_messages(), vec![b"pong".to_vec()]);
}

#[test]
fn graceful_close_reaches_both_sides() {
    let mut sim = Sim::new(4, Link::clean(10));
    let id = sim.establish();
    sim.client.send(id, b"last words").expect("open");
    sim.client.connection_mut(id).expect("open").close();
    assert!(sim.run_until(Duration::from_secs(5), |s| {
        s.server_events.iter().any(|(_, e)| *e == Event::Finished)
    }));
    assert_eq!(sim.server_messages(), vec![b"last words".to_vec()]);
    sim.server.connection_mut(id).expect("half open").close();
    sim.run_for(Duration::from_secs(10));
    let graceful = Event::Closed(CloseReason::Graceful);
    assert!(sim.client_events.iter().any(|(_, e)| *e == graceful));
    assert!(sim.server_events.iter().any(|(_, e)| *e == graceful));
    assert_eq!(sim.client.connection_count(), 0, "drained and forgotten");
    assert_eq!(sim.server.connection_count(), 0);
}

#[test]
fn abort_resets_the_peer() {
    let mut sim = Sim::new(5, Link::clean(10));
    let id = sim.establish();
    sim.client.connection_mut(id).expect("open").abort();
    sim.run_for(Duration::from_secs(1));
    assert!(
        sim.client_events
            .contains(&(id, Event::Closed(CloseReason::LocalAbort)))
    );
    assert!(
        sim.server_events
            .contains(&(id, Event::Closed(CloseReason::PeerReset)))
    );
}

#[test]
fn keepalive_holds_an_idle_connection_open() {
    let mut sim = Sim::new(6, Link::clean(10));
    let id = sim.establish();
    sim.run_for(Duration::from_secs(120));
    assert!(
        sim.client
            .connection(id)
            .is_some_and(|c| c.is_established())
    );
    assert!(
        sim.server
            .connection(id)
            .is_some_and(|c| c.is_established())
    );
}

#[test]
fn idle_timeout_closes_when_the_peer_vanishes() {
    let mut sim = Sim::new(7, Link::clean(10));
    let id = sim.establish();
    sim.drop_rule = Some(Box::new(|_, _| true));
    sim.run_for(Duration::from_secs(40));
    assert!(
        sim.client_events
            .contains(&(id, Event::Closed(CloseReason::TimedOut)))
    );
    assert!(
        sim.server_events
            .contains(&(id, Event::Closed(CloseReason::TimedOut)))
    );
}

#[test]
fn migration_after_nat_rebinding_keeps_the_connection() {
    let mut sim = Sim::new(8, Link::clean(10));
    let id = sim.establish();
    sim.client.send(id, b"before").expect("open");
    sim.run_for(Duration::from_secs(1));
    let new_addr = "203.0.113.9:6000".parse().expect("literal");
    sim.client_addr = new_addr;
    sim.client.send(id, b"after").expect("open");
    sim.server.send(id, b"reply").expect("open");
    assert!(sim.run_until(Duration::from_secs(10), |s| s.client_messages().len() == 1));
    assert!(sim.server_events.contains(&(id, Event::Migrated(new_addr))));
    assert_eq!(
        sim.server_messages(),
        vec![b"before".to_vec(), b"after".to_vec()]
    );
    assert_eq!(
        sim.server.connection(id).map(|c| c.remote()),
        Some(new_addr)
    );
}

#[test]
fn an_unproven_address_does_not_take_over_the_connection() {
    let mut sim = Sim::new(9, Link::clean(10));
    let id = sim.establish();
    // An attacker replays a captured client packet from its own address; it never answers the
    // challenge, so the server keeps talking to the real client.
    let captured = sim
        .sent
        .iter()
        .rev()
        .find(|(_, d)| d.from == sim.client_addr)
        .expect("traffic")
        .1
        .clone();
    let attacker = "203.0.113.66:1".parse().expect("literal");
    sim.server.handle(sim.now, attacker, &captured.bytes);
    sim.server.send(id, b"for the client").expect("open");
    assert!(sim.run_until(Duration::from_secs(5), |s| s.client_messages().len() == 1));
    assert_eq!(
        sim.server.connection(id).map(|c| c.remote()),
        Some(sim.client_addr)
    );
    let to_attacker: usize = sim
        .sent
        .iter()
        .filter(|(_, d)| d.to == attacker)
        .map(|(_, d)| d.bytes.len())
        .sum();
    assert_eq!(
        to_attacker, 0,
        "a replayed datagram is dropped before it can start a path challenge"
    );
    let stats = sim.server.connection(id).expect("open").stats();
    assert_eq!(stats.replays_dropped, 1);
}

/// Grows the server's view of the path: 40 replies of 1 KiB to the client over `sim`'s link.
fn warm_server_path(sim: &mut Sim, id: aetherflow_quantum::ConnectionId) {
    for n in 0..40 {
        sim.server.send(id, &numbered(n, 1024)).expect("open");
    }
    assert!(sim.run_until(Duration::from_secs(10), |s| s.client_messages().len() == 40));
    sim.run_for(Duration::from_millis(500));
}

#[test]
fn migration_to_a_new_ip_measures_the_new_path_afresh() {
    let mut sim = Sim::new(10, Link::clean(10));
    let id = sim.establish();
    warm_server_path(&mut sim, id);
    let before = sim.server.connection(id).expect("open").stats();
    assert_eq!(before.srtt, Some(Duration::from_millis(20)));
    let fresh = Config::default();
    // The client moves to a new network whose path is five times longer.
    sim.link.delay = Duration::from_millis(50);
    let new_addr = "203.0.113.9:5000".parse().expect("literal");
    sim.client_addr = new_addr;
    sim.client.send(id, b"from the new network").expect("open");
    assert!(sim.run_until(Duration::from_secs(10), |s| {
        s.server_events.contains(&(id, Event::Migrated(new_addr)))
    }));
    let moved = sim.server.connection(id).expect("open").stats();
    assert_eq!(moved.path_resets, 1);
    assert_eq!(moved.srtt, None, "the old path's RTT is not reused");
    assert!(
        moved.cwnd < before.cwnd,
        "{} vs {}",
        moved.cwnd,
        before.cwnd
    );
    assert_eq!(moved.rto, fresh.initial_rto);
    // The first sample on the new path sets the estimate outright (RFC 6298), rather than
    // moving an eighth of the way from the old path's 20 ms.
    sim.server.send(id, b"reply").expect("open");
    assert!(sim.run_until(Duration::from_secs(10), |s| {
        s.client_messages().len() == 41
            && s.server
                .connection(id)
                .is_some_and(|c| c.unacked_fragments() == 0)
    }));
    let after = sim.server.connection(id).expect("open").stats();
    assert_eq!(after.srtt, Some(Duration::from_millis(100)));
}

#[test]
fn nat_rebinding_to_a_new_port_keeps_the_path_state() {
    let mut sim = Sim::new(11, Link::clean(10));
    let id = sim.establish();
    warm_server_path(&mut sim, id);
    let before = sim.server.connection(id).expect("open").stats();
    let new_addr = "192.0.2.1:6001".parse().expect("literal");
    sim.client_addr = new_addr;
    sim.client.send(id, b"rebound").expect("open");
    assert!(sim.run_until(Duration::from_secs(10), |s| {
        s.server_events.contains(&(id, Event::Migrated(new_addr)))
    }));
    let after = sim.server.connection(id).expect("open").stats();
    assert_eq!(after.path_resets, 0);
    assert_eq!(after.srtt, before.srtt);
    assert_eq!(after.cwnd, before.cwnd);
}
