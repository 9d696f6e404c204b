//! Measures FEC on sparse traffic in virtual time: 20 messages of 100 bytes per second over a
//! link with a 50 ms round trip and seeded random loss in both directions, with FEC on and
//! off, printing byte overhead and one-way delivery latency percentiles. FEC runs once per
//! sparse parity budget given (`FecConfig::sparse_budget_percent`, default just 30).
//!
//! `cargo run --release -p aetherflow-quantum --example fec_sparse [seconds] [seed] [budgets]`
//!
//! e.g. `... fec_sparse 300 1 0,30,60,200`.
//!
//! The network is simulated (no sockets, no wall clock), so figures depend only on the seed;
//! results and their discussion are in `benches/RESULTS.md`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use aetherflow_quantum::fec::FecConfig;
use aetherflow_quantum::{Config, Endpoint, Event};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const ONE_WAY: Duration = Duration::from_millis(25);
const INTERVAL: Duration = Duration::from_millis(50);
const MESSAGE_LEN: usize = 100;

/// A datagram on the wire: arrival time, tie-break order, whether it goes to the server, bytes.
type InFlight = Reverse<(Instant, u64, bool, Vec<u8>)>;

/// The lossy link between the two endpoints.
struct Wire {
    rng: ChaCha8Rng,
    loss: f64,
    queue: BinaryHeap<InFlight>,
    order: u64,
}

impl Wire {
    /// Puts everything `endpoint` has to send on the wire, dropping each datagram with `loss`.
    fn take_from(&mut self, endpoint: &mut Endpoint, now: Instant, to_server: bool) {
        while let Some(t) = endpoint.poll_transmit(now) {
            if self.rng.random_bool(self.loss) {
                continue;
            }
            self.order += 1;
            let arrival = now + ONE_WAY;
            self.queue
                .push(Reverse((arrival, self.order, to_server, t.contents)));
        }
    }

    fn next_arrival(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((at, ..))| *at)
    }

    /// Hands every datagram due by `now` to its endpoint.
    fn deliver(&mut self, now: Instant, client: &mut Endpoint, server: &mut Endpoint) {
        let (client_addr, server_addr) = addresses();
        while self.next_arrival().is_some_and(|at| at <= now) {
            let Some(Reverse((_, _, to_server, bytes))) = self.queue.pop() else {
                break;
            };
            if to_server {
                server.handle(now, client_addr, &bytes);
            } else {
                client.handle(now, server_addr, &bytes);
            }
        }
    }
}

fn addresses() -> (SocketAddr, SocketAddr) {
    (
        "192.0.2.1:1".parse().expect("literal"),
        "198.51.100.1:2".parse().expect("literal"),
    )
}

struct Outcome {
    latencies: Vec<Duration>,
    sent: u32,
    bytes_sent: u64,
    fec_bytes: u64,
    retransmits: u64,
    repaired: u64,
    probes: u64,
    recoveries: u64,
    duplicates: u64,
}

/// FEC off (`None`) or on with a sparse parity budget in percent.
fn config(seed: u64, fec: Option<u16>, server: bool) -> Config {
    Config {
        seed,
        accept_incoming: server,
        fec: FecConfig {
            enabled: fec.is_some(),
            sparse_budget_percent: fec.unwrap_or(0),
            ..FecConfig::default()
        },
        ..Config::default()
    }
}

/// One run: `seconds` of traffic at `loss`, FEC on or off, the same seed for the link.
fn run(seconds: u64, loss: f64, fec: Option<u16>, seed: u64) -> Outcome {
    let start = Instant::now();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    let mut client = Endpoint::new(config(seed, fec, false), start, wall).expect("valid");
    let mut server = Endpoint::new(config(seed ^ 1, fec, true), start, wall).expect("valid");
    let mut wire = Wire {
        rng: ChaCha8Rng::seed_from_u64(seed),
        loss,
        queue: BinaryHeap::new(),
        order: 0,
    };
    let id = client.connect(start, addresses().1);
    let mut now = start;
    let mut connected = false;
    let mut next_send: Option<Instant> = None;
    let mut send_times: Vec<Instant> = Vec::new();
    let total = (seconds * 1000 / INTERVAL.as_millis() as u64) as u32;
    let mut latencies = Vec::new();
    let end = start + Duration::from_secs(seconds + 30);
    while now < end && latencies.len() < total as usize {
        // Application: a message every 50 ms once connected.
        if next_send.is_some_and(|t| t <= now) && send_times.len() < total as usize {
            let mut message = (send_times.len() as u32).to_be_bytes().to_vec();
            message.resize(MESSAGE_LEN, 0xab);
            client.send(id, &message).expect("open");
            send_times.push(now);
            // None once all are sent, or a lost last message would keep `now` from advancing.
            next_send = (send_times.len() < total as usize).then_some(now + INTERVAL);
        }
        wire.take_from(&mut client, now, true);
        wire.take_from(&mut server, now, false);
        while let Some((_, event)) = client.poll_event() {
            if event == Event::Connected && !connected {
                connected = true;
                next_send = Some(now);
            }
        }
        while let Some((_, event)) = server.poll_event() {
            if let Event::Message(bytes) = event {
                let n = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                latencies.push(now - send_times[n as usize]);
            }
        }
        let arrival = wire.next_arrival();
        let next = [
            arrival,
            client.poll_timeout(),
            server.poll_timeout(),
            next_send,
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else { break };
        now = now.max(next);
        wire.deliver(now, &mut client, &mut server);
        client.handle_timeout(now);
        server.handle_timeout(now);
    }
    let stats = client.connection(id).expect("open").stats();
    let server_stats = server.connection(id).map(|c| c.stats()).unwrap_or_default();
    Outcome {
        latencies,
        sent: send_times.len() as u32,
        bytes_sent: stats.bytes_sent,
        fec_bytes: stats.fec_bytes_sent,
        retransmits: stats.retransmits,
        repaired: server_stats.fec_repaired,
        probes: stats.tail_probes,
        recoveries: stats.tail_probe_recoveries,
        duplicates: server_stats.duplicates_received,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(600);
    let seed: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let budgets: Vec<u16> = args
        .next()
        .map(|s| s.split(',').filter_map(|b| b.parse().ok()).collect())
        .unwrap_or_else(|| vec![FecConfig::default().sparse_budget_percent]);
    println!("{seconds} s of 20 x {MESSAGE_LEN} B messages/s, RTT 50 ms, seed {seed}");
    println!(
        "loss  fec   delivered  overhead  p50 ms  p90 ms  p95 ms  p98 ms  p99 ms  max ms  mean ms  retransmits  repaired  probes  recovered  duplicates"
    );
    for loss in [0.0, 0.01, 0.05, 0.10] {
        let runs = budgets.iter().map(|&b| Some(b)).chain([None]);
        for fec in runs {
            let outcome = run(seconds, loss, fec, seed);
            let mut sorted = outcome.latencies.clone();
            sorted.sort();
            let payload_bytes = outcome.bytes_sent - outcome.fec_bytes;
            let overhead = outcome.fec_bytes as f64 / payload_bytes as f64;
            let mean = sorted.iter().sum::<Duration>() / sorted.len().max(1) as u32;
            println!(
                "{:4.0}%  {:4}  {:5}/{:<5}  {:6.1} %  {:6.1}  {:6.1}  {:6.1}  {:6.1}  {:6.1}  {:6.1}  {:7.1}  {:11}  {:8}  {:6}  {:9}  {:10}",
                loss * 100.0,
                fec.map_or("off".to_string(), |b| format!("{b}%")),
                sorted.len(),
                outcome.sent,
                overhead * 100.0,
                ms(percentile(&sorted, 0.5)),
                ms(percentile(&sorted, 0.9)),
                ms(percentile(&sorted, 0.95)),
                ms(percentile(&sorted, 0.98)),
                ms(percentile(&sorted, 0.99)),
                ms(sorted.last().copied().unwrap_or_default()),
                ms(mean),
                outcome.retransmits,
                outcome.repaired,
                outcome.probes,
                outcome.recoveries,
                outcome.duplicates,
            );
        }
    }
}
