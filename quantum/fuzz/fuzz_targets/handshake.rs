//! The handshake path under attack: a genuine client and relay (retry cookie, then Noise NK)
//! exchange their datagrams while the fuzzer, byte by byte, drops, corrupts, replays or
//! injects datagrams in either direction, including SYNs and SYN-ACKs whose Noise messages
//! are arbitrary bytes. Nothing may panic; the relay may never send more than three times
//! what it received from an address before the handshake completed; and if both sides
//! report the handshake done, a message still gets through.

#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use aetherflow_quantum::crypto::Keypair;
use aetherflow_quantum::packet::{Flags, Header};
use aetherflow_quantum::wire::syn_payload;
use aetherflow_quantum::{Config, ConnectionId, Endpoint, Event, Packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| run(data));

fn clear(flags: Flags, id: ConnectionId, payload: Vec<u8>) -> Vec<u8> {
    Packet {
        header: Header {
            flags,
            connection_id: id,
            sequence: 1,
            acknowledgement: 2,
        },
        sack: Vec::new(),
        payload,
    }
    .to_bytes()
    .expect("a short packet encodes")
}

fn run(data: &[u8]) {
    let start = Instant::now();
    let relay = Keypair::from_seed(1);
    let retry = data.first().is_some_and(|b| b & 1 == 0);
    let server_config = Config {
        seed: 2,
        accept_incoming: true,
        require_retry: retry,
        static_secret: Some(relay.secret.clone()),
        ..Config::default()
    };
    let client_config = Config {
        seed: 3,
        server_public_key: Some(relay.public),
        ..Config::default()
    };
    let wall = SystemTime::UNIX_EPOCH;
    let (Ok(mut server), Ok(mut client)) = (
        Endpoint::new(server_config, start, wall),
        Endpoint::new(client_config, start, wall),
    ) else {
        panic!("valid configs");
    };
    let client_addr = SocketAddr::from(([10, 0, 0, 1], 1000));
    let server_addr = SocketAddr::from(([10, 0, 0, 2], 2000));
    let id = client.connect(start, server_addr);
    let mut now = start;
    let mut to_server: Vec<Vec<u8>> = Vec::new();
    let mut to_client: Vec<Vec<u8>> = Vec::new();
    let mut heard_from_client = 0usize;
    let mut sent_to_client = 0usize;
    let mut rest = data.get(1..).unwrap_or_default();
    while let Some((&op, tail)) = rest.split_first() {
        let (len, tail) = tail.split_first().map_or((0, tail), |(&l, t)| (usize::from(l % 64), t));
        let (chunk, tail) = tail.split_at(len.min(tail.len()));
        rest = tail;
        now += Duration::from_millis(u64::from(op >> 4) * 20);
        match op % 8 {
            0 => {
                if let Some(d) = to_server.pop() {
                    heard_from_client += d.len();
                    server.handle(now, client_addr, &d);
                }
            }
            1 => {
                if let Some(d) = to_client.pop() {
                    client.handle(now, server_addr, &d);
                }
            }
            2 => {
                // Corrupt the next datagram to the server with the chunk.
                if let Some(mut d) = to_server.pop() {
                    let len = d.len().max(1);
                    for (i, b) in chunk.iter().enumerate() {
                        if let Some(slot) = d.get_mut(usize::from(*b) % len + i % 2) {
                            *slot ^= b | 1;
                        }
                    }
                    heard_from_client += d.len();
                    server.handle(now, client_addr, &d);
                }
            }
            3 => {
                // A SYN whose Noise message (and cookie) are the fuzzer's.
                let cookie: Option<[u8; 20]> = chunk.get(..20).and_then(|c| c.try_into().ok());
                let datagram = clear(Flags::SYN, id, syn_payload(cookie.as_ref(), chunk));
                heard_from_client += datagram.len();
                server.handle(now, client_addr, &datagram);
            }
            4 => {
                // A SYN-ACK whose Noise message is the fuzzer's.
                let datagram = clear(Flags::SYN | Flags::ACK, id, chunk.to_vec());
                client.handle(now, server_addr, &datagram);
            }
            5 => server.handle(now, client_addr, chunk),
            6 => client.handle(now, server_addr, chunk),
            _ => {
                // Replay what the server last sent, or drop it.
                if let Some(d) = to_client.last().cloned() {
                    client.handle(now, server_addr, &d);
                }
            }
        }
        client.handle_timeout(now);
        server.handle_timeout(now);
        while let Some(t) = client.poll_transmit(now) {
            to_server.push(t.contents);
        }
        let established = server.connection(id).is_some_and(|c| c.is_established());
        while let Some(t) = server.poll_transmit(now) {
            if t.destination == client_addr && !established {
                sent_to_client += t.contents.len();
            }
            to_client.push(t.contents);
        }
        assert!(
            sent_to_client <= 3 * heard_from_client,
            "amplification: {sent_to_client} sent for {heard_from_client} received"
        );
        while client.poll_event().is_some() {}
        while server.poll_event().is_some() {}
        to_server.truncate(64);
        to_client.truncate(64);
    }
    // Let a clean network finish whatever is left, then check a message gets through.
    let both_up = |c: &Endpoint, s: &Endpoint| {
        c.connection(id).is_some_and(|c| c.is_established())
            && s.connection(id).is_some_and(|c| c.is_established())
    };
    if both_up(&client, &server) && client.send(id, b"after the storm").is_ok() {
        let mut got = false;
        for _ in 0..200 {
            now += Duration::from_millis(10);
            while let Some(t) = client.poll_transmit(now) {
                server.handle(now, client_addr, &t.contents);
            }
            while let Some(t) = server.poll_transmit(now) {
                client.handle(now, server_addr, &t.contents);
            }
            while let Some((_, event)) = server.poll_event() {
                got |= event == Event::Message(b"after the storm".to_vec());
            }
            while client.poll_event().is_some() {}
            client.handle_timeout(now);
            server.handle_timeout(now);
        }
        let alive = both_up(&client, &server);
        assert!(got || !alive, "an established connection delivers");
    }
}
