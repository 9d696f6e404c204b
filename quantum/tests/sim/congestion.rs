//! Congestion control through a bottleneck: BBR's states, estimates, pacing, sparse senders,
//! random loss and queueing, with NewReno alongside where the contrast is the point.

use std::time::{Duration, Instant};

use aetherflow_quantum::congestion::{Algorithm, BbrState};
use aetherflow_quantum::{Config, ConnectionId, ConnectionStats, Packet};
use proptest::prelude::*;

use crate::harness::{Link, Sim, config, numbered};

/// The bottleneck of these tests: 1 MB/s, 40 ms round trip, so one BDP is 40 kB.
const RATE: u64 = 1_000_000;
const DELAY_MS: u64 = 20;
const BDP: u64 = RATE * 2 * DELAY_MS / 1000;
const MTU: u64 = 1200;

fn sim(seed: u64, algorithm: Algorithm, link: Link) -> (Sim, ConnectionId) {
    let with = |seed| Config {
        congestion: algorithm,
        ..config(seed)
    };
    let server = Config {
        accept_incoming: true,
        ..with(seed ^ 0x5eed)
    };
    let mut sim = Sim::with_configs(seed, link, with(seed), server);
    println!("congestion control: {algorithm:?}");
    let id = sim.establish();
    (sim, id)
}

fn client_stats(sim: &Sim, id: ConnectionId) -> ConnectionStats {
    sim.client.connection(id).expect("open").stats()
}

/// Queues `total` bytes as messages of at most 1 MB.
fn send_bulk(sim: &mut Sim, id: ConnectionId, total: usize) -> usize {
    let mut count = 0;
    let mut left = total;
    while left > 0 {
        let len = left.min(1_000_000);
        sim.client
            .send(id, &numbered(count as u32, len))
            .expect("open");
        left -= len;
        count += 1;
    }
    count
}

/// A client data packet: its send time, size and payload.
fn client_data(sim: &Sim) -> Vec<(Instant, u64, Vec<u8>)> {
    sim.sent
        .iter()
        .filter(|(_, d)| d.from == sim.client_addr)
        .filter_map(|(at, d)| {
            let packet = Packet::decode(&d.plain).ok()?;
            let data = !packet.payload.is_empty() && packet.header.flags.bits() & 0x11 == 0;
            data.then_some((*at, d.bytes.len() as u64, packet.payload))
        })
        .collect()
}

/// Runs until the server has `count` messages, recording the client's stats after each step.
fn run_recording(
    sim: &mut Sim,
    id: ConnectionId,
    count: usize,
    limit: Duration,
) -> Vec<(Instant, ConnectionStats)> {
    let deadline = sim.now + limit;
    let mut trace = Vec::new();
    while sim.server_message_count() < count && sim.now < deadline && sim.step() {
        trace.push((sim.now, client_stats(sim, id)));
    }
    assert_eq!(sim.server_message_count(), count, "seed {}", sim.seed);
    trace
}

fn states(trace: &[(Instant, ConnectionStats)]) -> Vec<BbrState> {
    let mut states: Vec<BbrState> = Vec::new();
    for state in trace.iter().filter_map(|(_, s)| s.bbr_state) {
        if states.last() != Some(&state) {
            states.push(state);
        }
    }
    states
}

#[test]
fn bulk_transfer_goes_startup_drain_probe_bw_and_estimates_the_bottleneck() {
    let (mut sim, id) = sim(
        40,
        Algorithm::Bbr,
        Link::bottleneck(DELAY_MS, RATE, 100_000),
    );
    let start = sim.now;
    let count = send_bulk(&mut sim, id, 3_000_000);
    let trace = run_recording(&mut sim, id, count, Duration::from_secs(30));
    assert_eq!(
        states(&trace),
        [BbrState::Startup, BbrState::Drain, BbrState::ProbeBw]
    );
    let stats = client_stats(&sim, id);
    let bw = stats.bottleneck_bandwidth.expect("estimated");
    assert!(bw * 10 >= RATE * 8 && bw * 10 <= RATE * 12, "estimate {bw}");
    let min_rtt = stats.min_rtt.expect("measured");
    assert!(
        min_rtt >= Duration::from_millis(2 * DELAY_MS),
        "{min_rtt:?}"
    );
    assert!(
        min_rtt <= Duration::from_millis(2 * DELAY_MS + 5),
        "{min_rtt:?}"
    );
    let goodput = 3_000_000.0 / (sim.now - start).as_secs_f64();
    assert!(goodput >= 0.8 * RATE as f64, "goodput {goodput:.0} B/s");
    println!("estimate {bw} B/s, min rtt {min_rtt:?}, goodput {goodput:.0} B/s");
}

#[test]
fn probe_rtt_follows_ten_seconds_without_a_new_min_rtt_and_ends() {
    let (mut sim, id) = sim(
        41,
        Algorithm::Bbr,
        Link::bottleneck(DELAY_MS, RATE, 100_000),
    );
    // Kept two messages ahead of the receiver, so the sender is never application-limited.
    let mut queued = send_bulk(&mut sim, id, 3_000_000);
    let in_probe_rtt = |s: &ConnectionStats| s.bbr_state == Some(BbrState::ProbeRtt);
    let mut trace: Vec<(Instant, ConnectionStats)> = Vec::new();
    let mut probed = false;
    let end = sim.now + Duration::from_secs(30);
    while sim.now < end && sim.step() {
        if sim.server_message_count() + 2 >= queued {
            let message = numbered(queued as u32, 1_000_000);
            sim.client.send(id, &message).expect("open");
            queued += 1;
        }
        let stats = client_stats(&sim, id);
        probed |= in_probe_rtt(&stats);
        let done = probed && !in_probe_rtt(&stats);
        trace.push((sim.now, stats));
        if done {
            break;
        }
    }
    let entry = trace
        .iter()
        .position(|(_, s)| in_probe_rtt(s))
        .expect("entered PROBE_RTT");
    let exit = entry
        + trace[entry..]
            .iter()
            .position(|(_, s)| !in_probe_rtt(s))
            .expect("left PROBE_RTT");
    let entered_at = trace[entry].0;
    // The min-RTT estimate had stood unchanged for ten seconds when PROBE_RTT began.
    let min_rtt = trace[entry - 1].1.min_rtt;
    let set_at = trace[..entry]
        .iter()
        .rposition(|(_, s)| s.min_rtt != min_rtt)
        .map(|i| trace[i + 1].0)
        .expect("estimate set after the first sample");
    assert!(entered_at - set_at >= Duration::from_secs(10));
    assert!(entered_at - set_at <= Duration::from_millis(10_100));
    // It held the window at four packets for at least 200 ms, then went back to PROBE_BW.
    assert!(trace[exit].0 - entered_at >= Duration::from_millis(200));
    let smallest = trace[entry..exit].iter().map(|(_, s)| s.cwnd).min();
    assert_eq!(smallest, Some(4 * MTU));
    assert_eq!(trace[exit].1.bbr_state, Some(BbrState::ProbeBw));
    assert!(trace[exit].1.cwnd >= BDP, "window restored");
}

#[test]
fn pacing_spreads_data_packets_at_the_pacing_rate() {
    let (mut sim, id) = sim(
        42,
        Algorithm::Bbr,
        Link::bottleneck(DELAY_MS, RATE, 100_000),
    );
    let count = send_bulk(&mut sim, id, 2_000_000);
    let trace = run_recording(&mut sim, id, count, Duration::from_secs(30));
    let steady_from = trace
        .iter()
        .find(|(_, s)| s.bbr_state == Some(BbrState::ProbeBw))
        .expect("reached PROBE_BW")
        .0;
    // The pacing rate in force at an instant: the last one recorded at or before it.
    let index_at = |at: Instant| trace.partition_point(|(t, _)| *t <= at).saturating_sub(1);
    let rate_at = |at: Instant| trace[index_at(at)].1.pacing_rate.expect("paced");
    let highest_rate = |from: Instant, to: Instant| {
        trace[index_at(from)..=index_at(to)]
            .iter()
            .filter_map(|(_, s)| s.pacing_rate)
            .max()
            .expect("paced")
    };
    let sends: Vec<(Instant, u64)> = client_data(&sim)
        .into_iter()
        .filter(|(at, _, _)| *at > steady_from)
        .map(|(at, len, _)| (at, len))
        .collect();
    assert!(sends.len() > 500, "{} packets", sends.len());
    // Each gap relative to size / rate: about one, however the gain cycle moves the rate.
    let mut ratios: Vec<f64> = sends
        .windows(2)
        .map(|w| {
            let gap = (w[1].0 - w[0].0).as_secs_f64();
            gap * rate_at(w[0].0) as f64 / w[1].1 as f64
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    assert!(
        (0.9..=1.1).contains(&median),
        "median gap / (size / rate) = {median}"
    );
    // Nowhere do more bytes leave than the rate allows plus one burst of two packets.
    for (i, &(from, _)) in sends.iter().enumerate() {
        let mut bytes = 0;
        for &(to, len) in &sends[i..sends.len().min(i + 64)] {
            bytes += len;
            let allowed = highest_rate(from, to) as f64 * (to - from).as_secs_f64();
            assert!(
                bytes as f64 <= allowed + (3 * MTU) as f64,
                "{bytes} bytes in {:?}",
                to - from
            );
        }
    }
}

#[test]
fn newreno_does_not_pace_and_sends_in_bursts() {
    let (mut sim, id) = sim(
        42,
        Algorithm::NewReno,
        Link::bottleneck(DELAY_MS, RATE, 100_000),
    );
    let count = send_bulk(&mut sim, id, 2_000_000);
    let trace = run_recording(&mut sim, id, count, Duration::from_secs(60));
    assert!(
        trace
            .iter()
            .all(|(_, s)| s.pacing_rate.is_none() && s.bbr_state.is_none())
    );
    let sends = client_data(&sim);
    let largest_burst = sends
        .chunk_by(|a, b| a.0 == b.0)
        .map(<[_]>::len)
        .max()
        .unwrap_or(0);
    assert!(largest_burst >= 4, "largest burst {largest_burst} packets");
}

#[test]
fn a_sparse_senders_messages_leave_at_once_and_keep_the_estimate() {
    let (mut sim, id) = sim(
        43,
        Algorithm::Bbr,
        Link::bottleneck(DELAY_MS, RATE, 100_000),
    );
    let sent_at_once = |sim: &mut Sim, n: u32| {
        let message = numbered(n, 120);
        sim.client.send(id, &message).expect("open");
        let at = sim.now;
        sim.step();
        client_data(sim)
            .iter()
            .any(|(t, _, payload)| *t == at && *payload == message)
    };
    // A fresh connection: no estimate yet, and nothing waits.
    for n in 0..40 {
        let at = sim.now + Duration::from_millis(50);
        sim.advance_to(at);
        assert!(sent_at_once(&mut sim, n), "message {n} was held back");
    }
    // A bulk transfer measures the path; then, after a pause, edits trickle at 20 per second.
    let count = 40 + send_bulk(&mut sim, id, 1_500_000);
    run_recording(&mut sim, id, count, Duration::from_secs(30));
    let estimate = client_stats(&sim, id)
        .bottleneck_bandwidth
        .expect("estimated");
    let pause = sim.now + Duration::from_secs(2);
    sim.advance_to(pause);
    for n in 100..300 {
        let at = sim.now + Duration::from_millis(50);
        sim.advance_to(at);
        assert!(sent_at_once(&mut sim, n), "message {n} was held back");
    }
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.server_message_count(), count + 200);
    let stats = client_stats(&sim, id);
    let after = stats.bottleneck_bandwidth.expect("kept");
    assert!(
        after * 10 >= estimate * 9,
        "estimate fell from {estimate} to {after}"
    );
    let rate = stats.pacing_rate.expect("paced");
    assert!(
        rate * 10 >= estimate * 7,
        "pacing {rate} after an estimate of {estimate}"
    );
}

/// Goodput of a 2 MB transfer and the final bandwidth estimate, under random loss.
fn transfer_under_loss(seed: u64, algorithm: Algorithm, loss: f64) -> (f64, Option<u64>) {
    let link = Link {
        loss,
        ..Link::bottleneck(DELAY_MS, RATE, 100_000)
    };
    let (mut sim, id) = sim(seed, algorithm, link);
    println!("loss {loss}");
    let start = sim.now;
    let count = send_bulk(&mut sim, id, 2_000_000);
    run_recording(&mut sim, id, count, Duration::from_secs(120));
    let goodput = 2_000_000.0 / (sim.now - start).as_secs_f64();
    (goodput, client_stats(&sim, id).bottleneck_bandwidth)
}

#[test]
fn random_loss_does_not_collapse_bbr_throughput() {
    for (seed, loss) in [(44, 0.01), (45, 0.03), (46, 0.05)] {
        let (bbr, estimate) = transfer_under_loss(seed, Algorithm::Bbr, loss);
        let (reno, _) = transfer_under_loss(seed, Algorithm::NewReno, loss);
        println!("loss {loss}: BBR {bbr:.0} B/s (estimate {estimate:?}), NewReno {reno:.0} B/s");
        let estimate = estimate.expect("estimated");
        assert!(
            estimate * 10 >= RATE * 8,
            "loss {loss}: estimate {estimate}"
        );
        assert!(
            bbr >= 0.7 * RATE as f64,
            "loss {loss}: BBR goodput {bbr:.0}"
        );
        assert!(
            bbr >= 1.5 * reno,
            "loss {loss}: BBR {bbr:.0} vs NewReno {reno:.0}"
        );
    }
}

#[test]
fn bbr_keeps_the_bottleneck_queue_short_where_newreno_fills_it() {
    // A deep buffer: a full second of queueing, 25 BDPs.
    let link = Link::bottleneck(DELAY_MS, RATE, 1_000_000);
    let (mut bbr, id) = sim(47, Algorithm::Bbr, link);
    let count = send_bulk(&mut bbr, id, 4_000_000);
    // The peak up to half a second into PROBE_BW, then the peak from there on.
    let mut steady_from = None;
    let mut startup_peak = None;
    let deadline = bbr.now + Duration::from_secs(60);
    while bbr.server_message_count() < count && bbr.now < deadline && bbr.step() {
        let state = client_stats(&bbr, id).bbr_state;
        if state == Some(BbrState::ProbeBw) && steady_from.is_none() {
            steady_from = Some(bbr.now + Duration::from_millis(500));
        }
        if startup_peak.is_none() && steady_from.is_some_and(|t| bbr.now >= t) {
            startup_peak = Some(bbr.upstream.max_backlog);
            bbr.upstream.max_backlog = 0;
        }
    }
    assert_eq!(bbr.server_message_count(), count);
    let startup_peak = startup_peak.expect("ran well into PROBE_BW");
    let steady_peak = bbr.upstream.max_backlog;
    assert_eq!(bbr.upstream.drops, 0);
    // STARTUP's overshoot is bounded by its window gain; PROBE_BW's probes queue far less.
    assert!(
        startup_peak <= 3 * BDP,
        "queue peaked at {startup_peak} bytes"
    );
    assert!(
        steady_peak <= BDP,
        "steady-state queue peaked at {steady_peak} bytes"
    );

    let (mut reno, id) = sim(47, Algorithm::NewReno, link);
    let count = send_bulk(&mut reno, id, 4_000_000);
    run_recording(&mut reno, id, count, Duration::from_secs(60));
    let reno_peak = reno.upstream.max_backlog;
    println!("queue peaks: BBR {startup_peak} (steady {steady_peak}), NewReno {reno_peak}");
    assert!(reno_peak >= 10 * BDP, "NewReno queue peaked at {reno_peak}");
}

/// Any bottleneck, any loss: everything arrives, and the window never drops below four
/// packets except in PROBE_RTT, where it is exactly four.
fn bbr_delivers_through_any_bottleneck(
    seed: u64,
    rate: u64,
    delay_ms: u64,
    queue_bytes: u64,
    loss: f64,
) -> Result<(), TestCaseError> {
    let link = Link {
        loss,
        jitter: Duration::from_millis(delay_ms / 4),
        ..Link::bottleneck(delay_ms, rate, queue_bytes)
    };
    let patient = |seed| Config {
        idle_timeout: Duration::from_secs(300),
        max_rto: Duration::from_secs(5),
        ..config(seed)
    };
    let server = Config {
        accept_incoming: true,
        ..patient(seed ^ 0x5eed)
    };
    let mut sim = Sim::with_configs(seed, link, patient(seed), server);
    println!("rate {rate} B/s, delay {delay_ms} ms, queue {queue_bytes} B, loss {loss}");
    let id = sim.connect();
    let sent: Vec<Vec<u8>> = (0..40)
        .map(|n| numbered(n, 500 + n as usize * 500))
        .collect();
    for message in &sent {
        sim.client.send(id, message).expect("open");
    }
    let deadline = sim.now + Duration::from_secs(300);
    while sim.server_message_count() < sent.len() && sim.now < deadline && sim.step() {
        if let Some(stats) = sim.client.connection(id).map(|c| c.stats()) {
            if stats.bbr_state == Some(BbrState::ProbeRtt) {
                prop_assert_eq!(stats.cwnd, 4 * MTU, "seed {}", seed);
            } else {
                prop_assert!(stats.cwnd >= 4 * MTU, "seed {}: cwnd {}", seed, stats.cwnd);
            }
        }
    }
    prop_assert_eq!(sim.server_messages(), sent, "seed {}", seed);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn bbr_delivers_everything_through_random_bottlenecks(
        seed in any::<u64>(),
        rate in 20_000u64..5_000_000,
        delay_ms in 1u64..150,
        queue_bytes in 3_000u64..500_000,
        loss in 0.0f64..0.1,
    ) {
        bbr_delivers_through_any_bottleneck(seed, rate, delay_ms, queue_bytes, loss)?;
    }
}
