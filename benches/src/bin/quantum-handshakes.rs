//! The cost of Quantum's handshake on one core, in the sans-IO core (no sockets, virtual
//! time): full handshakes per second (retry cookie, Noise NK, first sealed ACK), and what a
//! flood of SYNs from spoofed addresses costs the relay (a stateless retry each, no key
//! agreement, no state).
//!
//! ```text
//! cargo build --release -p aetherflow-benches --bin quantum-handshakes
//! taskset -c 1 target/release/quantum-handshakes [--handshakes 5000] [--flood 200000]
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use aetherflow_quantum::crypto::Keypair;
use aetherflow_quantum::{Config, Endpoint, Event};
use anyhow::{Context, bail};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn main() -> anyhow::Result<()> {
    let mut handshakes = 5_000u32;
    let mut flood = 200_000u32;
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [flag, value] = pair else {
            bail!("flags take a value: {pair:?}");
        };
        let value: u32 = value.parse().with_context(|| format!("{flag} {value}"))?;
        match flag.as_str() {
            "--handshakes" => handshakes = value,
            "--flood" => flood = value,
            _ => bail!("unknown flag {flag}"),
        }
    }
    let relay = Keypair::from_seed(0x5e4e);
    let server_config = Config {
        seed: 2,
        accept_incoming: true,
        static_secret: Some(relay.secret.clone()),
        cookie_key: [9; 16],
        ..Config::default()
    };
    let start = Instant::now();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    let mut server = Endpoint::new(server_config, start, wall)?;
    let server_addr: SocketAddr = "198.51.100.1:443".parse()?;

    // Full handshakes, each from its own client endpoint and address.
    let clock = Instant::now();
    for n in 0..handshakes {
        let config = Config {
            seed: u64::from(n) + 10,
            server_public_key: Some(relay.public),
            ..Config::default()
        };
        let mut client = Endpoint::new(config, start, wall)?;
        let client_addr = SocketAddr::from(([10, (n >> 16) as u8, (n >> 8) as u8, n as u8], 4000));
        let id = client.connect(start, server_addr);
        let mut connected = false;
        for _ in 0..4 {
            while let Some(t) = client.poll_transmit(start) {
                server.handle(start, client_addr, &t.contents);
            }
            while let Some(t) = server.poll_transmit(start) {
                client.handle(start, server_addr, &t.contents);
            }
            while let Some((_, event)) = client.poll_event() {
                connected |= event == Event::Connected;
            }
        }
        if !connected {
            bail!("handshake {n} did not complete");
        }
        // Drop the server's connection so its table stays small, as closes would.
        if let Some(conn) = server.connection_mut(id) {
            conn.abort();
        }
        while server.poll_transmit(start).is_some() {}
        while server.poll_event().is_some() {}
    }
    let elapsed = clock.elapsed();
    println!(
        "{handshakes} full handshakes (both sides on this core) in {:.3} s: {:.0} per second",
        elapsed.as_secs_f64(),
        f64::from(handshakes) / elapsed.as_secs_f64()
    );

    // A flood of SYNs carrying a (random) Noise message from spoofed addresses.
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut hello = vec![0u8; 1 + 52];
    let before = server.connection_count();
    let clock = Instant::now();
    let mut answered = 0u64;
    for _ in 0..flood {
        let from = SocketAddr::from((rng.random::<[u8; 4]>(), rng.random::<u16>()));
        let id = aetherflow_quantum::ConnectionId::new_v7(1, rng.random());
        rng.fill(&mut hello[1..]);
        hello[0] = 0;
        let syn = aetherflow_quantum::Packet {
            header: aetherflow_quantum::packet::Header {
                flags: aetherflow_quantum::packet::Flags::SYN,
                connection_id: id,
                sequence: 1,
                acknowledgement: 0,
            },
            sack: Vec::new(),
            payload: hello.clone(),
        }
        .to_bytes()?;
        server.handle(start, from, &syn);
        while server.poll_transmit(start).is_some() {
            answered += 1;
        }
    }
    let elapsed = clock.elapsed();
    println!(
        "{flood} spoofed SYNs in {:.3} s: {:.0} per second, {answered} retries, connections {} -> {}",
        elapsed.as_secs_f64(),
        f64::from(flood) / elapsed.as_secs_f64(),
        before,
        server.connection_count()
    );
    Ok(())
}
