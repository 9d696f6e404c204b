//! Hostile networks: SYN floods, amplification, garbage.

use std::net::SocketAddr;
use std::time::Duration;

use aetherflow_quantum::crypto::handshake::{Credentials, Initiator};
use aetherflow_quantum::packet::{COOKIE_LEN, Control, Flags, Header};
use aetherflow_quantum::wire::syn_payload;
use aetherflow_quantum::{Config, ConnectionId, Endpoint, Packet};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::harness::{Link, Sim, config, relay_key};

fn server(seed: u64) -> (Endpoint, std::time::Instant) {
    let now = std::time::Instant::now();
    let config = Config {
        accept_incoming: true,
        ..config(seed)
    };
    (
        Endpoint::new(config, now, std::time::SystemTime::UNIX_EPOCH).expect("valid"),
        now,
    )
}

/// A genuine first Noise message for connection `id`, as a client pinning the relay's key
/// writes it.
fn hello(id: ConnectionId) -> Vec<u8> {
    let credentials = Credentials::PinnedServer(relay_key().public);
    Initiator::start(&credentials, id, 1, &77u32.to_be_bytes())
        .expect("valid credentials")
        .1
}

fn syn(id: ConnectionId, cookie: Option<&[u8; COOKIE_LEN]>, hello: &[u8]) -> Vec<u8> {
    let payload = syn_payload(cookie, hello);
    let header = Header {
        flags: Flags::SYN,
        connection_id: id,
        sequence: 77,
        acknowledgement: 0,
    };
    Packet {
        header,
        sack: Vec::new(),
        payload,
    }
    .to_bytes()
    .expect("valid")
}

#[test]
fn spoofed_syn_flood_leaves_no_per_connection_state() {
    let seed = 30;
    println!("simulation seed = {seed}");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut server, now) = server(seed);
    for _ in 0..10_000 {
        let from = SocketAddr::from((rng.random::<[u8; 4]>(), rng.random::<u16>()));
        let id = ConnectionId::new_v7(1, rng.random());
        let datagram = syn(id, None, &[0; 48]);
        server.handle(now, from, &datagram);
        let retry = server.poll_transmit(now).expect("a retry answers each SYN");
        assert!(retry.contents.len() <= 3 * datagram.len());
        // A forged cookie does not help either: it only earns another retry.
        let forged = syn(id, Some(&[0; 20]), &[0; 48]);
        server.handle(now, from, &forged);
        let retry = server
            .poll_transmit(now)
            .expect("a retry answers a bad cookie");
        assert!(retry.contents.len() <= 3 * forged.len());
    }
    assert_eq!(server.connection_count(), 0);
    assert_eq!(server.stats().retries_sent, 20_000);
    assert_eq!(server.stats().invalid_cookies, 10_000);
    assert_eq!(server.poll_timeout(), None, "no timers either");
}

#[test]
fn server_sends_at_most_three_times_what_it_received_before_the_handshake() {
    let seed = 31;
    println!("simulation seed = {seed}");
    let (mut server, start) = server(seed);
    let client: SocketAddr = "192.0.2.7:9".parse().expect("literal");
    let id = ConnectionId::new_v7(1, [5; 10]);
    let hello = hello(id);
    server.handle(start, client, &syn(id, None, &hello));
    let retry = server.poll_transmit(start).expect("retry");
    let Ok(Control::Retry(cookie)) =
        Control::decode(&Packet::decode(&retry.contents).expect("valid").payload)
    else {
        panic!("expected a retry");
    };
    let syn_with_cookie = syn(id, Some(&cookie), &hello);
    server.handle(start, client, &syn_with_cookie);
    assert_eq!(server.connection_count(), 1);
    // The client never answers; the server repeats its SYN-ACK only within its budget.
    let mut sent = 0;
    let mut now = start;
    while let Some(transmit) = server.poll_transmit(now) {
        sent += transmit.contents.len();
    }
    while let Some(deadline) = server.poll_timeout() {
        now = deadline;
        server.handle_timeout(now);
        while let Some(transmit) = server.poll_transmit(now) {
            sent += transmit.contents.len();
        }
        while server.poll_event().is_some() {}
    }
    assert!(sent > 0);
    assert!(
        sent <= 3 * syn_with_cookie.len(),
        "sent {sent} for {} received",
        syn_with_cookie.len()
    );
    assert!(
        now - start >= Duration::from_secs(30),
        "gave up by idle timeout"
    );
    assert_eq!(server.connection_count(), 0);
}

#[test]
fn garbage_datagrams_are_counted_and_dropped() {
    let mut sim = Sim::new(32, Link::clean(10));
    let id = sim.establish();
    let mut rng = ChaCha8Rng::seed_from_u64(32);
    for len in 0..500 {
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if len >= 32 && len % 2 == 0 {
            // Sealed datagrams of the live connection that do not authenticate.
            bytes[..6].copy_from_slice(b"AFQM\x02\x01");
            bytes[6..22].copy_from_slice(id.as_bytes());
        }
        sim.server.handle(sim.now, sim.client_addr, &bytes);
    }
    assert!(sim.server.stats().malformed > 200);
    let stats = sim.server.connection(id).expect("open").stats();
    assert!(stats.auth_failures > 200, "{stats:?}");
    sim.client.send(id, b"still fine").expect("open");
    assert!(
        sim.run_until(Duration::from_secs(5), |s| s.server_messages()
            == vec![b"still fine".to_vec()])
    );
}
