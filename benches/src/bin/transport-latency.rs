//! Quantum versus TCP: one-way delivery latency of sparse small messages over an emulated
//! link (see `aetherflow_benches::link`), side by side in one run. Needs root.
//!
//! ```text
//! cargo build --release -p aetherflow-benches --bin transport-latency
//! sudo target/release/transport-latency run [--messages 1200] [--losses 0,0.01,0.05,0.1] \
//!     [--rtt-ms 50] [--rate 20] [--size 100] [--seed 1]
//! ```
//!
//! Each loss rate gets its own link (namespaces `aflatN-a`/`aflatN-b`, loss applied in both
//! directions independently, no jitter); all links run at once, and on each a TCP and a
//! Quantum sender in namespace A send `--messages` messages of `--size` bytes at `--rate`
//! per second to a receiver in namespace B. Each message carries its send time; the receiver
//! takes its arrival time from the same wall clock. Wire bytes are counted by the emulator as
//! IP packets enter the link (TCP port 7000, UDP port 7000). The output is markdown.
//!
//! `recv` and `send` are the two ends, which `run` starts inside the namespaces; they print
//! their report as one JSON line.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use aetherflow_benches::latency::{
    self, Percentiles, ReceiverReport, SenderReport, Transport, Workload,
};
use aetherflow_benches::link::emulator::{Link, LinkSpec, LinkStats};
use aetherflow_benches::link::model::LinkConfig;
use aetherflow_benches::link::packet::Flow;
use aetherflow_quantum::DriverConfig;
use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The service port of both transports on every link.
const PORT: u16 = 7000;

#[derive(Parser)]
#[command(about = "Quantum vs TCP latency over emulated lossy links (needs root)")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Run the whole benchmark and print markdown tables.
    Run(RunArgs),
    /// Receiving end: listen, measure `count` messages, print a JSON report.
    Recv {
        #[arg(long)]
        transport: Transport,
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        count: u64,
    },
    /// Sending end: send the workload, print a JSON report.
    Send {
        #[arg(long)]
        transport: Transport,
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        count: u64,
        #[arg(long)]
        rate: f64,
        #[arg(long)]
        size: usize,
        #[command(flatten)]
        quantum: QuantumArgs,
    },
}

/// Settings of the Quantum sender, to see what its defaults cost.
#[derive(Args, Clone, Default)]
struct QuantumArgs {
    /// Send no FEC parity.
    #[arg(long)]
    quantum_no_fec: bool,
    /// Override the FEC group's longest span (default 200 ms).
    #[arg(long)]
    quantum_fec_span_ms: Option<u64>,
    /// Override the sparse parity budget in percent of data bytes (default 30).
    #[arg(long)]
    quantum_sparse_budget: Option<u16>,
}

impl QuantumArgs {
    fn config(&self) -> DriverConfig {
        let mut config = DriverConfig::default();
        config.quantum.fec.enabled = !self.quantum_no_fec;
        if let Some(ms) = self.quantum_fec_span_ms {
            config.quantum.fec.max_group_span = Duration::from_millis(ms);
        }
        if let Some(percent) = self.quantum_sparse_budget {
            config.quantum.fec.sparse_budget_percent = percent;
        }
        config
    }

    fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.quantum_no_fec {
            args.push("--quantum-no-fec".to_owned());
        }
        if let Some(ms) = self.quantum_fec_span_ms {
            args.extend(["--quantum-fec-span-ms".to_owned(), ms.to_string()]);
        }
        if let Some(percent) = self.quantum_sparse_budget {
            args.extend(["--quantum-sparse-budget".to_owned(), percent.to_string()]);
        }
        args
    }
}

#[derive(Args, Clone)]
struct RunArgs {
    /// Messages per transport and loss rate.
    #[arg(long, default_value_t = 1200)]
    messages: u64,
    /// Loss rates to test, each in both directions.
    #[arg(long, value_delimiter = ',', default_value = "0,0.01,0.05,0.1")]
    losses: Vec<f64>,
    /// Round-trip time of the links (half each way).
    #[arg(long, default_value_t = 50.0)]
    rtt_ms: f64,
    /// Messages per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Bytes per message.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Seed of the first link's loss pattern (link N uses seed + 2N and seed + 2N + 1).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[command(flatten)]
    quantum: QuantumArgs,
}

/// One transport's results on one link.
struct Cell {
    latency: Percentiles,
    delivered: usize,
    out_of_order: u64,
    sender: SenderReport,
    receiver: ReceiverReport,
}

/// Both transports' results on one link.
struct LinkResult {
    loss: f64,
    tcp: Cell,
    quantum: Cell,
    stats: LinkStats,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().mode {
        Mode::Run(args) => run(args).await,
        Mode::Recv {
            transport,
            listen,
            count,
        } => {
            let report = latency::receive(transport, listen, count, |_| println!("ready")).await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Mode::Send {
            transport,
            to,
            count,
            rate,
            size,
            quantum,
        } => {
            let workload = Workload { count, rate, size };
            let report = latency::send(transport, to, workload, quantum.config()).await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let delay = Duration::try_from_secs_f64(args.rtt_ms / 2000.0).context("--rtt-ms")?;
    let links = args.losses.iter().enumerate().map(|(i, &loss)| {
        let n = u8::try_from(i).unwrap_or(u8::MAX);
        let config = LinkConfig {
            delay,
            loss,
            ..LinkConfig::default()
        };
        let seed = args.seed + 2 * i as u64;
        let spec = LinkSpec::symmetric(&format!("aflat{n}"), 100 + n, config, seed);
        run_link(spec, &args, &exe)
    });
    let results = futures_util::future::try_join_all(links).await?;
    print_report(&args, &results);
    Ok(())
}

async fn run_link(spec: LinkSpec, args: &RunArgs, exe: &Path) -> anyhow::Result<LinkResult> {
    let loss = spec.a_to_b.loss;
    let link = Link::start(spec)?;
    let (tcp, quantum) = tokio::try_join!(
        run_cell(&link, Transport::Tcp, args, exe),
        run_cell(&link, Transport::Quantum, args, exe),
    )
    .with_context(|| format!("link with {loss} loss"))?;
    let stats = link.shutdown().await;
    Ok(LinkResult {
        loss,
        tcp,
        quantum,
        stats,
    })
}

fn transport_name(transport: Transport) -> &'static str {
    match transport {
        Transport::Tcp => "tcp",
        Transport::Quantum => "quantum",
    }
}

async fn run_cell(
    link: &Link,
    transport: Transport,
    args: &RunArgs,
    exe: &Path,
) -> anyhow::Result<Cell> {
    let exe = exe.to_str().context("binary path is not UTF-8")?;
    let listen = SocketAddr::new(link.spec().addr_b().into(), PORT);
    let count = args.messages.to_string();
    let name = transport_name(transport);
    let mut receiver = link
        .command_in_b(exe)
        .args(["recv", "--transport", name, "--listen", &listen.to_string()])
        .args(["--count", &count])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the receiver")?;
    let stdout = receiver.stdout.take().context("receiver stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next_line().await?;
    if first.as_deref() != Some("ready") {
        bail!("{name} receiver did not start: {first:?}");
    }
    let sender = link
        .command_in_a(exe)
        .args(["send", "--transport", name, "--to", &listen.to_string()])
        .args(["--count", &count, "--rate", &args.rate.to_string()])
        .args(["--size", &args.size.to_string()])
        .args(args.quantum.to_args())
        .kill_on_drop(true)
        .output();
    // Generous: three times the sending time plus a minute, only to not hang forever.
    let limit = Duration::from_secs_f64(3.0 * args.messages as f64 / args.rate + 60.0);
    let (sent, received) =
        tokio::time::timeout(limit, async { tokio::join!(sender, lines.next_line()) })
            .await
            .with_context(|| format!("{name} cell did not finish within {limit:?}"))?;
    let sent = sent.context("running the sender")?;
    if !sent.status.success() {
        bail!(
            "{name} sender failed: {}",
            String::from_utf8_lossy(&sent.stderr)
        );
    }
    let sender: SenderReport = serde_json::from_slice(&sent.stdout).context("sender report")?;
    let line = received?.with_context(|| format!("{name} receiver ended without a report"))?;
    let receiver_report: ReceiverReport = serde_json::from_str(&line).context("receiver report")?;
    let latency = Percentiles::of(&receiver_report.latencies_us)
        .with_context(|| format!("{name} receiver measured no message"))?;
    Ok(Cell {
        latency,
        delivered: receiver_report.latencies_us.len(),
        out_of_order: receiver_report.out_of_order,
        sender,
        receiver: receiver_report,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { f64::NAN } else { a / b }
}

/// Parity bytes over the other bytes the Quantum sender sent.
fn fec_overhead(cell: &Cell) -> Option<f64> {
    let q = cell.sender.quantum.as_ref()?;
    Some(ratio(
        q.fec_bytes_sent as f64,
        q.bytes_sent.saturating_sub(q.fec_bytes_sent) as f64,
    ))
}

fn print_report(args: &RunArgs, results: &[LinkResult]) {
    println!(
        "{} messages of {} bytes at {}/s per cell, RTT {} ms, loss each way; Quantum: {}\n",
        args.messages,
        args.size,
        args.rate,
        args.rtt_ms,
        quantum_label(&args.quantum)
    );
    println!(
        "| loss | measured loss A→B / B→A | transport | delivered | p50 ms | p99 ms | max ms | wire bytes A→B | wire bytes B→A | FEC overhead | retransmits (tail probes, of them recoveries) / RTOs / FEC repairs |"
    );
    println!("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let measured = format!(
            "{:.2} % / {:.2} %",
            percent(r.stats.a_to_b.packets_dropped, r.stats.a_to_b.packets_in),
            percent(r.stats.b_to_a.packets_dropped, r.stats.b_to_a.packets_in)
        );
        for (name, cell, flow) in [
            ("TCP", &r.tcp, Flow::Tcp(PORT)),
            ("Quantum", &r.quantum, Flow::Udp(PORT)),
        ] {
            let bytes = r.stats.flows.get(&flow).copied().unwrap_or_default();
            let fec =
                fec_overhead(cell).map_or("–".to_owned(), |f| format!("{:.1} %", f * 100.0));
            let repairs = match (&cell.sender.quantum, cell.receiver.fec_repaired) {
                (Some(q), Some(rep)) => format!(
                    "{} ({}, {}) / {} / {rep}",
                    q.retransmits, q.tail_probes, q.tail_probe_recoveries, q.rto_expiries
                ),
                _ => "–".to_owned(),
            };
            let order = if cell.out_of_order > 0 {
                format!(" ({} out of order!)", cell.out_of_order)
            } else {
                String::new()
            };
            println!(
                "| {:.0} % | {measured} | {name} | {}{order} | {:.1} | {:.1} | {:.1} | {} | {} | {fec} | {repairs} |",
                r.loss * 100.0,
                cell.delivered,
                ms(cell.latency.p50),
                ms(cell.latency.p99),
                ms(cell.latency.max),
                bytes.a_to_b,
                bytes.b_to_a,
            );
        }
    }
    print_ratios(results);
}

fn quantum_label(q: &QuantumArgs) -> String {
    let label = match (q.quantum_no_fec, q.quantum_fec_span_ms) {
        (true, _) => "FEC off".to_owned(),
        (false, Some(ms)) => format!("FEC on, group span {ms} ms"),
        (false, None) => "default configuration (FEC on)".to_owned(),
    };
    match q.quantum_sparse_budget {
        Some(percent) if !q.quantum_no_fec => format!("{label}, sparse parity budget {percent} %"),
        _ => label,
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    100.0 * ratio(part as f64, whole as f64)
}

fn print_ratios(results: &[LinkResult]) {
    println!("\nRatios Quantum / TCP (below 1 means Quantum is better):\n");
    println!("| loss | p50 | p99 | max | wire bytes (both ways) | targets |");
    println!("|---:|---:|---:|---:|---:|---|");
    for r in results {
        let (q, t) = (&r.quantum.latency, &r.tcp.latency);
        let total = |flow| {
            let b = r.stats.flows.get(&flow).copied().unwrap_or_default();
            (b.a_to_b + b.b_to_a) as f64
        };
        let p50 = ratio(ms(q.p50), ms(t.p50));
        let p99 = ratio(ms(q.p99), ms(t.p99));
        let fec = fec_overhead(&r.quantum).unwrap_or(f64::NAN);
        println!(
            "| {:.0} % | {p50:.2} | {p99:.2} | {:.2} | {:.2} | {} |",
            r.loss * 100.0,
            ratio(ms(q.max), ms(t.max)),
            ratio(total(Flow::Udp(PORT)), total(Flow::Tcp(PORT))),
            targets(r.loss, p50, p99, fec)
        );
    }
}

/// The issue's targets that apply at this loss rate, each marked met or missed.
fn targets(loss: f64, p50: f64, p99: f64, fec: f64) -> String {
    let mark = |ok: bool| if ok { "met" } else { "MISSED" };
    let mut out = Vec::new();
    if loss == 0.0 {
        out.push(format!("p50 ≤ 1.1×: {}", mark(p50 <= 1.1)));
        out.push(format!("FEC ≤ 5 %: {}", mark(fec <= 0.05)));
    }
    if (loss - 0.05).abs() < 1e-9 {
        out.push(format!("p99 ≤ 0.5×: {}", mark(p99 <= 0.5)));
        out.push(format!("FEC ≤ 35 %: {}", mark(fec <= 0.35)));
    }
    out.join("; ")
}
