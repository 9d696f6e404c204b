//! Arbitrary bytes into the packet decoder and into a server endpoint.
//!
//! The decoder must never panic, and whatever it accepts must encode back to a packet that
//! decodes to the same value. The same input, cut into datagrams, is then fed to an endpoint
//! that accepts connections without a retry cookie (so fuzzed SYNs reach its Noise handshake),
//! with the clock advanced and the endpoint polled between datagrams, as a driver would.
//! `handshake` drives a genuine handshake with fuzzed interference.

#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use aetherflow_quantum::crypto::Keypair;
use aetherflow_quantum::{Config, Endpoint, Packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_round_trip(data);
    drive_endpoint(data);
});

fn check_round_trip(data: &[u8]) {
    let Ok(packet) = Packet::decode(data) else {
        return;
    };
    if let Ok(bytes) = packet.to_bytes() {
        let again = Packet::decode(&bytes).expect("an encoded packet decodes");
        assert_eq!(again, packet, "decode(encode(p)) == p");
    }
}

/// Splits `data` into datagrams: each starts with a length byte, then that many bytes.
fn datagrams(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        let len = usize::from(len).min(rest.len());
        let (datagram, tail) = rest.split_at(len);
        out.push(datagram);
        data = tail;
    }
    out
}

fn drive_endpoint(data: &[u8]) {
    let start = Instant::now();
    let config = Config {
        seed: 7,
        accept_incoming: true,
        require_retry: false,
        static_secret: Some(Keypair::from_seed(1).secret),
        ..Config::default()
    };
    let mut endpoint =
        Endpoint::new(config, start, SystemTime::UNIX_EPOCH).expect("the default config is valid");
    let peers: [SocketAddr; 2] = [
        SocketAddr::from(([10, 0, 0, 1], 1000)),
        SocketAddr::from(([10, 0, 0, 2], 2000)),
    ];
    let mut now = start;
    for (i, datagram) in datagrams(data).into_iter().enumerate() {
        now += Duration::from_millis(u64::from(datagram.first().copied().unwrap_or(0)));
        endpoint.handle(now, peers[i % 2], datagram);
        while endpoint.poll_transmit(now).is_some() {}
        while endpoint.poll_event().is_some() {}
        if endpoint.poll_timeout().is_some_and(|t| t <= now) {
            endpoint.handle_timeout(now);
        }
    }
}
