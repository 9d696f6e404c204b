//! One-way message latency over a transport: a sender that emits fixed-size messages at a
//! fixed rate, each stamped with its send time, and a receiver that measures how late each
//! arrives. Both ends run on the same host (in two network namespaces joined by
//! [`crate::link`]), so one wall clock serves both.
//!
//! The transports are [`Transport::Tcp`] (a tokio `TcpStream` with `TCP_NODELAY`, each
//! message behind a 4-byte big-endian length) and [`Transport::Quantum`] (one Quantum
//! message per message). Once the receiver has all messages it sends one byte back, so the
//! sender knows every message was delivered before it reads its counters and closes.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aetherflow_quantum::{ConnectionStats, DriverConfig, QuantumEndpoint};
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes of a message taken by its sequence number and send time.
pub const HEADER: usize = 16;

/// How long a Quantum receiver waits for the sender's close after confirming; the
/// confirmation is retransmitted many times within it at any RTT the benchmark uses.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Largest message a TCP frame may announce; anything above is a corrupt stream.
const MAX_FRAME: usize = 1 << 20;

/// The transport under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Transport {
    /// tokio `TcpStream`, `TCP_NODELAY`, length-prefixed frames.
    Tcp,
    /// AetherFlow's reliable UDP transport (by default with its default configuration).
    Quantum,
}

/// What a sender emits.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Messages to send.
    pub count: u64,
    /// Messages per second.
    pub rate: f64,
    /// Bytes per message, at least [`HEADER`].
    pub size: usize,
}

/// A message's contents: sequence number, send time (ns since the Unix epoch), padding.
pub fn encode_message(seq: u64, sent_unix_nanos: u64, size: usize) -> Vec<u8> {
    let mut message = vec![0u8; size.max(HEADER)];
    message[..8].copy_from_slice(&seq.to_be_bytes());
    message[8..16].copy_from_slice(&sent_unix_nanos.to_be_bytes());
    message
}

/// The sequence number and send time of a message, or `None` if it is too short.
pub fn decode_message(message: &[u8]) -> Option<(u64, u64)> {
    let seq = u64::from_be_bytes(message.get(..8)?.try_into().ok()?);
    let sent = u64::from_be_bytes(message.get(8..16)?.try_into().ok()?);
    Some((seq, sent))
}

/// Nanoseconds since the Unix epoch by the wall clock, shared by both namespaces.
pub fn unix_nanos() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

/// What the receiving end measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReceiverReport {
    /// One-way latency of each message in microseconds, in arrival order.
    pub latencies_us: Vec<u64>,
    /// Messages that arrived out of sequence (must stay 0 for an ordered transport).
    pub out_of_order: u64,
    /// Quantum only: data packets rebuilt from parity.
    pub fec_repaired: Option<u64>,
}

/// What the sending end counted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SenderReport {
    /// Quantum only: the connection's counters when every message had been delivered.
    pub quantum: Option<QuantumCounters>,
}

/// The Quantum sender's counters that the benchmark reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QuantumCounters {
    /// Bytes of all datagrams sent, parity included.
    pub bytes_sent: u64,
    /// Bytes of FEC parity datagrams sent.
    pub fec_bytes_sent: u64,
    /// Data packets sent again.
    pub retransmits: u64,
    /// Retransmission timer expiries.
    pub rto_expiries: u64,
    /// Losses found by duplicate or time threshold.
    pub fast_losses: u64,
    /// Tail loss probes sent (included in `retransmits`).
    #[serde(default)]
    pub tail_probes: u64,
    /// Probes that turned out to repair a real loss; the rest were likely spurious.
    #[serde(default)]
    pub tail_probe_recoveries: u64,
}

impl From<&ConnectionStats> for QuantumCounters {
    fn from(s: &ConnectionStats) -> Self {
        Self {
            bytes_sent: s.bytes_sent,
            fec_bytes_sent: s.fec_bytes_sent,
            retransmits: s.retransmits,
            rto_expiries: s.rto_expiries,
            fast_losses: s.fast_losses,
            tail_probes: s.tail_probes,
            tail_probe_recoveries: s.tail_probe_recoveries,
        }
    }
}

/// p50, p99 and max of a set of latencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
}

impl Percentiles {
    /// Nearest-rank percentiles of `latencies_us`; `None` when it is empty.
    pub fn of(latencies_us: &[u64]) -> Option<Percentiles> {
        let mut sorted = latencies_us.to_vec();
        sorted.sort_unstable();
        let rank = |p: f64| {
            let index = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
            Duration::from_micros(sorted[index])
        };
        let max = Duration::from_micros(*sorted.last()?);
        Some(Percentiles {
            p50: rank(0.50),
            p99: rank(0.99),
            max,
        })
    }
}

/// Tracks arrivals on the receiving side.
struct Arrivals {
    report: ReceiverReport,
    next_seq: u64,
}

impl Arrivals {
    fn new(count: u64) -> Self {
        let report = ReceiverReport {
            latencies_us: Vec::with_capacity(usize::try_from(count).unwrap_or(0)),
            ..ReceiverReport::default()
        };
        Self {
            report,
            next_seq: 0,
        }
    }

    fn record(&mut self, message: &[u8]) -> anyhow::Result<()> {
        let now = unix_nanos();
        let (seq, sent) = decode_message(message).context("message shorter than its header")?;
        if seq != self.next_seq {
            self.report.out_of_order += 1;
        }
        self.next_seq = seq + 1;
        self.report
            .latencies_us
            .push(now.saturating_sub(sent) / 1000);
        Ok(())
    }

    fn received(&self) -> u64 {
        self.report.latencies_us.len() as u64
    }
}

/// Sends `workload` to `to`, paced at its rate; returns once the receiver confirmed it has
/// every message. `quantum` configures the Quantum sender (FEC is a sender-side choice).
pub async fn send(
    transport: Transport,
    to: SocketAddr,
    workload: Workload,
    quantum: DriverConfig,
) -> anyhow::Result<SenderReport> {
    if workload.size < HEADER || workload.rate.is_nan() || workload.rate <= 0.0 {
        bail!(
            "messages need at least {HEADER} bytes and a positive rate, got {} bytes at {}/s",
            workload.size,
            workload.rate
        );
    }
    match transport {
        Transport::Tcp => send_tcp(to, workload).await,
        Transport::Quantum => send_quantum(to, workload, quantum).await,
    }
}

fn pacer(rate: f64) -> tokio::time::Interval {
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    // A late tick (busy machine) sends at once and keeps the average rate.
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    interval
}

async fn send_tcp(to: SocketAddr, workload: Workload) -> anyhow::Result<SenderReport> {
    let mut stream = TcpStream::connect(to).await.context("TCP connect")?;
    stream.set_nodelay(true)?;
    let mut pace = pacer(workload.rate);
    let frame_len = u32::try_from(workload.size).context("message too large")?;
    for seq in 0..workload.count {
        pace.tick().await;
        let mut frame = frame_len.to_be_bytes().to_vec();
        frame.extend(encode_message(seq, unix_nanos(), workload.size));
        stream.write_all(&frame).await.context("TCP write")?;
    }
    let mut done = [0u8; 1];
    stream
        .read_exact(&mut done)
        .await
        .context("waiting for the receiver's confirmation")?;
    Ok(SenderReport::default())
}

/// The receiver's Quantum identity in these benchmarks: a fixed key both ends derive, so a
/// sender in another process or namespace can pin it. Not for anything but measurements.
pub fn bench_keypair() -> aetherflow_quantum::crypto::Keypair {
    aetherflow_quantum::crypto::Keypair::from_seed(0xbe_4c)
}

async fn send_quantum(
    to: SocketAddr,
    workload: Workload,
    mut config: DriverConfig,
) -> anyhow::Result<SenderReport> {
    config
        .quantum
        .server_public_key
        .get_or_insert(bench_keypair().public);
    let local = SocketAddr::new(unspecified_like(to), 0);
    let endpoint = QuantumEndpoint::bind(local, config).await?;
    let conn = endpoint.connect(to).await.context("Quantum connect")?;
    let mut pace = pacer(workload.rate);
    for seq in 0..workload.count {
        pace.tick().await;
        conn.send(encode_message(seq, unix_nanos(), workload.size))
            .await
            .context("Quantum send")?;
    }
    conn.recv()
        .await
        .context("waiting for the receiver's confirmation")?
        .context("receiver closed before confirming")?;
    let stats = conn.stats().await?;
    conn.close().await;
    Ok(SenderReport {
        quantum: Some(QuantumCounters::from(&stats)),
    })
}

fn unspecified_like(addr: SocketAddr) -> std::net::IpAddr {
    match addr {
        SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    }
}

/// Listens on `listen`, calls `ready` with the bound address once it accepts connections,
/// and measures `count`
/// messages from the first peer.
pub async fn receive(
    transport: Transport,
    listen: SocketAddr,
    count: u64,
    ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<ReceiverReport> {
    match transport {
        Transport::Tcp => receive_tcp(listen, count, ready).await,
        Transport::Quantum => receive_quantum(listen, count, ready).await,
    }
}

async fn receive_tcp(
    listen: SocketAddr,
    count: u64,
    ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<ReceiverReport> {
    let listener = TcpListener::bind(listen).await.context("TCP bind")?;
    ready(listener.local_addr()?);
    let (mut stream, _) = listener.accept().await?;
    stream.set_nodelay(true)?;
    let mut arrivals = Arrivals::new(count);
    let mut message = Vec::new();
    while arrivals.received() < count {
        let len = stream.read_u32().await.context("TCP stream ended early")? as usize;
        if !(HEADER..=MAX_FRAME).contains(&len) {
            bail!("corrupt TCP frame length {len}");
        }
        message.resize(len, 0);
        stream.read_exact(&mut message).await?;
        arrivals.record(&message)?;
    }
    stream.write_all(&[1]).await?;
    // Wait for the sender to hang up, so the confirmation is not cut off by a reset.
    let _ = stream.read(&mut [0u8; 1]).await;
    Ok(arrivals.report)
}

async fn receive_quantum(
    listen: SocketAddr,
    count: u64,
    ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<ReceiverReport> {
    let mut config = DriverConfig::default();
    config.quantum.accept_incoming = true;
    config.quantum.static_secret = Some(bench_keypair().secret);
    let endpoint = QuantumEndpoint::bind(listen, config).await?;
    ready(endpoint.local_addr());
    let conn = endpoint.accept().await.context("endpoint closed")?;
    let mut arrivals = Arrivals::new(count);
    while arrivals.received() < count {
        let message = conn
            .recv()
            .await?
            .context("Quantum connection ended early")?;
        arrivals.record(&message)?;
    }
    let stats = conn.stats().await?;
    conn.send(&b"done"[..]).await?;
    // The sender closes once it has the confirmation; wait for that end, but not forever: the
    // sender's process exits right after `close()`, and the driver offers no way to await the
    // close's delivery, so a lost FIN would otherwise keep us here for the idle timeout.
    let peer_closed = async { while conn.recv().await.ok().flatten().is_some() {} };
    let _ = tokio::time::timeout(CLOSE_WAIT, peer_closed).await;
    let mut report = arrivals.report;
    report.fec_repaired = Some(stats.fec_repaired);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_short_ones_are_rejected() {
        let m = encode_message(42, 1_700_000_000_123_456_789, 100);
        assert_eq!(m.len(), 100);
        assert_eq!(decode_message(&m), Some((42, 1_700_000_000_123_456_789)));
        assert_eq!(decode_message(&m[..15]), None);
        assert_eq!(decode_message(&[]), None);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let latencies: Vec<u64> = (1..=1000).collect();
        let p = Percentiles::of(&latencies).expect("non-empty");
        assert_eq!(p.p50, Duration::from_micros(500));
        assert_eq!(p.p99, Duration::from_micros(990));
        assert_eq!(p.max, Duration::from_micros(1000));
        let one = Percentiles::of(&[7]).expect("non-empty");
        let seven = Duration::from_micros(7);
        assert_eq!((one.p50, one.p99, one.max), (seven, seven, seven));
        assert_eq!(Percentiles::of(&[]), None);
    }

    #[test]
    fn arrivals_count_out_of_order_messages() {
        let mut arrivals = Arrivals::new(3);
        for seq in [0, 2, 1] {
            arrivals
                .record(&encode_message(seq, unix_nanos(), 16))
                .expect("well-formed");
        }
        assert_eq!(arrivals.received(), 3);
        assert_eq!(arrivals.report.out_of_order, 2);
        assert!(arrivals.record(&[0u8; 4]).is_err());
    }

    /// Both transports deliver every message in order over loopback, and Quantum reports its
    /// counters.
    #[tokio::test]
    async fn both_transports_deliver_a_paced_workload_over_loopback() {
        for transport in [Transport::Tcp, Transport::Quantum] {
            let workload = Workload {
                count: 50,
                rate: 500.0,
                size: 100,
            };
            let loopback: SocketAddr = "127.0.0.1:0".parse().expect("literal");
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            let receiver = tokio::spawn(receive(transport, loopback, 50, move |addr| {
                let _ = ready_tx.send(addr);
            }));
            let listen = ready_rx.await.expect("receiver ready");
            let sent = send(transport, listen, workload, DriverConfig::default())
                .await
                .expect("send");
            let got = receiver.await.expect("join").expect("receive");
            assert_eq!(got.latencies_us.len(), 50, "{transport:?}");
            assert_eq!(got.out_of_order, 0, "{transport:?}");
            assert_eq!(sent.quantum.is_some(), transport == Transport::Quantum);
            assert_eq!(got.fec_repaired.is_some(), transport == Transport::Quantum);
        }
    }

    #[tokio::test]
    async fn bad_workloads_are_rejected() {
        let to: SocketAddr = "127.0.0.1:9".parse().expect("literal");
        for (size, rate) in [(8, 20.0), (100, 0.0), (100, f64::NAN)] {
            let workload = Workload {
                count: 1,
                rate,
                size,
            };
            let quantum = DriverConfig::default();
            assert!(send(Transport::Tcp, to, workload, quantum).await.is_err());
        }
    }
}
