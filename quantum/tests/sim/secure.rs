//! Authenticated encryption (issue 15): forged, tampered, truncated, replayed and reordered
//! datagrams are dropped without effect while the connection delivers everything; a forged
//! reset closes nothing; a wrong pinned key fails the handshake with a clear error; FEC and
//! key updates work on sealed traffic under loss; a new address needs an authenticated
//! datagram before it is even challenged.

use std::net::SocketAddr;
use std::time::Duration;

use aetherflow_quantum::crypto::Keypair;
use aetherflow_quantum::packet::{Flags, Header};
use aetherflow_quantum::{CloseReason, Config, ConnectionId, Event, Packet};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::harness::{Datagram, Link, Sim, config, numbered};

/// Whether `bytes` is a sealed datagram (kind byte odd).
fn sealed(bytes: &[u8]) -> bool {
    bytes.get(5).is_some_and(|kind| kind & 1 == 1)
}

fn closed(events: &[(ConnectionId, Event)]) -> Option<CloseReason> {
    events.iter().find_map(|(_, e)| match e {
        Event::Closed(reason) => Some(*reason),
        _ => None,
    })
}

/// Sends `count` numbered messages each way and runs until all arrived.
fn exchange(sim: &mut Sim, id: ConnectionId, count: u32, limit: Duration) {
    for n in 0..count {
        sim.client.send(id, &numbered(n, 300)).expect("open");
        sim.server.send(id, &numbered(n, 200)).expect("open");
    }
    let total = count as usize;
    assert!(
        sim.run_until(limit, |s| s.server_message_count() == total
            && s.client_messages().len() == total),
        "seed {}: {} of {total} to the server, {} to the client",
        sim.seed,
        sim.server_message_count(),
        sim.client_messages().len()
    );
    let expected: Vec<Vec<u8>> = (0..count).map(|n| numbered(n, 300)).collect();
    assert_eq!(sim.server_messages(), expected, "in order, exactly once");
    let expected: Vec<Vec<u8>> = (0..count).map(|n| numbered(n, 200)).collect();
    assert_eq!(sim.client_messages(), expected, "in order, exactly once");
}

#[test]
fn tampered_truncated_and_replayed_datagrams_are_dropped_and_everything_arrives() {
    let seed = 60;
    let link = Link {
        loss: 0.02,
        jitter: Duration::from_millis(10),
        duplicate: 0.02,
        ..Link::clean(20)
    };
    let mut sim = Sim::new(seed, link);
    let id = sim.establish();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut history: Vec<Vec<u8>> = Vec::new();
    sim.mangler = Some(Box::new(move |d: &Datagram| {
        if !sealed(&d.bytes) {
            return Vec::new();
        }
        let mut tampered = d.bytes.clone();
        let at = rng.random_range(0..tampered.len());
        tampered[at] ^= 1 << rng.random_range(0..8);
        let cut = rng.random_range(0..d.bytes.len());
        let truncated = d.bytes[..cut].to_vec();
        let replayed = if history.is_empty() {
            d.bytes.clone()
        } else {
            history[rng.random_range(0..history.len())].clone()
        };
        history.push(d.bytes.clone());
        vec![tampered, truncated, replayed]
    }));
    exchange(&mut sim, id, 200, Duration::from_secs(120));
    assert_eq!(closed(&sim.server_events), None);
    assert_eq!(closed(&sim.client_events), None);
    for side in [&sim.server, &sim.client] {
        let stats = side.connection(id).expect("open").stats();
        assert!(stats.auth_failures > 100, "{stats:?}");
        assert!(stats.replays_dropped > 100, "{stats:?}");
        assert_eq!(stats.path_resets, 0, "nothing moved the path");
    }
}

#[test]
fn a_forged_reset_closes_nothing() {
    let mut sim = Sim::new(61, Link::clean(10));
    let id = sim.establish();
    let reset = |flags| Packet {
        header: Header {
            flags,
            connection_id: id,
            sequence: 0,
            acknowledgement: 0,
        },
        sack: Vec::new(),
        payload: Vec::new(),
    };
    // In clear, as version 1 allowed, from the client's own address...
    let clear = reset(Flags::RST).to_bytes().expect("valid");
    sim.server.handle(sim.now, sim.client_addr, &clear);
    // ... and shaped like a sealed one, with a guessed tag.
    let mut forged = clear.clone();
    forged[5] = 1;
    forged.extend_from_slice(&[0; 24]);
    sim.server.handle(sim.now, sim.client_addr, &forged);
    // A replay of the client's latest genuine datagram changes nothing either.
    let last = sim
        .sent
        .iter()
        .rev()
        .find(|(_, d)| d.from == sim.client_addr)
        .expect("traffic")
        .1
        .bytes
        .clone();
    sim.server.handle(sim.now, sim.client_addr, &last);
    let stats = sim.server.connection(id).expect("still there").stats();
    assert_eq!(
        (
            stats.clear_dropped,
            stats.auth_failures,
            stats.replays_dropped
        ),
        (1, 1, 1)
    );
    assert!(sim.server.connection(id).expect("open").is_established());
    exchange(&mut sim, id, 3, Duration::from_secs(5));
    assert_eq!(closed(&sim.server_events), None);
}

#[test]
fn a_wrong_pinned_key_fails_the_handshake_with_a_clear_error() {
    let seed = 62;
    let client = Config {
        server_public_key: Some(Keypair::from_seed(12345).public),
        ..config(seed)
    };
    let server = Config {
        accept_incoming: true,
        ..config(seed ^ 0x5eed)
    };
    let mut sim = Sim::with_configs(seed, Link::clean(10), client, server);
    sim.connect();
    assert!(sim.run_until(Duration::from_secs(5), |s| {
        closed(&s.client_events).is_some()
    }));
    assert_eq!(
        closed(&sim.client_events),
        Some(CloseReason::HandshakeFailed)
    );
    assert!(
        CloseReason::HandshakeFailed.to_string().contains("pinned"),
        "the error says what to check"
    );
    assert_eq!(sim.server.stats().handshakes_refused, 1);
    assert_eq!(sim.server.connection_count(), 0, "the relay kept nothing");
    assert!(sim.server_events.is_empty());
}

#[test]
fn fec_rebuilds_sealed_packets_under_loss() {
    let link = Link {
        loss: 0.05,
        ..Link::clean(25)
    };
    let mut sim = Sim::new(63, link);
    let id = sim.establish();
    exchange(&mut sim, id, 400, Duration::from_secs(120));
    let server = sim.server.connection(id).expect("open").stats();
    let client = sim.client.connection(id).expect("open").stats();
    assert!(client.fec_packets_sent > 0, "{client:?}");
    assert!(
        server.fec_repaired > 0,
        "parity rebuilt lost packets: {server:?}"
    );
    assert_eq!(
        server.auth_failures, 0,
        "rebuilt packets need no second opening"
    );
    // Parity travels sealed like everything else after the handshake.
    let parity = sim
        .sent
        .iter()
        .filter(|(_, d)| {
            Packet::decode(&d.plain).is_ok_and(|p| p.header.flags.contains(Flags::FEC))
        })
        .collect::<Vec<_>>();
    assert!(!parity.is_empty());
    assert!(parity.iter().all(|(_, d)| sealed(&d.bytes)));
}

#[test]
fn keys_update_under_loss_and_reordering() {
    let seed = 64;
    let rekeying = |seed| Config {
        key_update_packets: 64,
        ..config(seed)
    };
    let server = Config {
        accept_incoming: true,
        ..rekeying(seed ^ 0x5eed)
    };
    let link = Link {
        loss: 0.05,
        jitter: Duration::from_millis(15),
        ..Link::clean(20)
    };
    let mut sim = Sim::with_configs(seed, link, rekeying(seed), server);
    let id = sim.establish();
    exchange(&mut sim, id, 600, Duration::from_secs(300));
    let client = sim.client.connection(id).expect("open").stats();
    let server = sim.server.connection(id).expect("open").stats();
    assert!(client.key_updates_sent >= 5, "{client:?}");
    assert!(server.key_updates_sent >= 5, "{server:?}");
    assert_eq!(server.key_updates_received, client.key_updates_sent);
    assert_eq!(client.key_updates_received, server.key_updates_sent);
}

#[test]
fn a_new_address_is_not_even_challenged_without_an_authenticated_datagram() {
    let mut sim = Sim::new(65, Link::clean(10));
    let id = sim.establish();
    let attacker: SocketAddr = "203.0.113.66:1".parse().expect("literal");
    // A datagram naming the connection, sealed-looking but forged, from the attacker.
    let genuine = sim
        .sent
        .iter()
        .rev()
        .find(|(_, d)| d.from == sim.client_addr && sealed(&d.bytes))
        .expect("traffic")
        .1
        .bytes
        .clone();
    let mut forged = genuine.clone();
    let last = forged.len() - 1;
    forged[last] ^= 0xff;
    // Also one with a fresh packet number the replay window has not seen.
    let mut fresh = genuine;
    fresh[22..30].copy_from_slice(&u64::MAX.to_be_bytes());
    for datagram in [forged, fresh] {
        sim.server.handle(sim.now, attacker, &datagram);
    }
    sim.run_for(Duration::from_secs(2));
    assert!(
        sim.sent.iter().all(|(_, d)| d.to != attacker),
        "no challenge, nothing at all, to an address that proved nothing"
    );
    let stats = sim.server.connection(id).expect("open").stats();
    // The first reuses a packet number already accepted, so the replay window drops it
    // before any decryption; the second fails authentication.
    assert_eq!((stats.replays_dropped, stats.auth_failures), (1, 1));
    assert_eq!(
        sim.server.connection(id).map(|c| c.remote()),
        Some(sim.client_addr)
    );
    // The real client moving still works: its sealed datagrams from the new address earn a
    // challenge, and only the answer moves the path.
    let moved: SocketAddr = "203.0.113.9:5000".parse().expect("literal");
    sim.client_addr = moved;
    sim.client.send(id, b"from the new address").expect("open");
    assert!(sim.run_until(Duration::from_secs(10), |s| {
        s.server_events.contains(&(id, Event::Migrated(moved)))
    }));
    let challenged = sim.sent.iter().position(|(_, d)| {
        d.to == moved
            && Packet::decode(&d.plain).is_ok_and(|p| {
                p.header.flags == Flags::URG || p.header.flags == (Flags::URG | Flags::ACK)
            })
    });
    assert!(
        challenged.is_some(),
        "a challenge went to the new address first"
    );
}
