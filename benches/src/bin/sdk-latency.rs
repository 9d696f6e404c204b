//! Edit-to-visible latency between two SDK clients through the relay, Quantum versus
//! WebSocket, side by side in one run: on loopback and over emulated links. Needs root for
//! the links.
//!
//! ```text
//! cargo build --release -p aetherflow-server --bin aetherflow -p aetherflow-benches --bin sdk-latency
//! sudo target/release/sdk-latency run --relay target/release/aetherflow \
//!     [--edits 1000] [--rate 20] [--rtt-ms 50] [--losses 0,0.05] [--seed 1] \
//!     [--quantum-sparse-fec-budget PERCENT]
//! ```
//!
//! Each cell is one relay. On loopback the relay and the clients share the host's loopback;
//! for each loss rate the relay runs in namespace A of its own link (see
//! `aetherflow_benches::link`, loss applied each way independently) and the clients in
//! namespace B, so every edit crosses the link to the relay and back. In each cell two client
//! processes run at once, one per transport, each holding a writer and a reader `Client` on
//! a document of its own (the WebSocket pair with no Quantum address, the Quantum pair with
//! no WebSocket URL, so neither can fall back). The writer appends a fixed-width chunk
//! `--rate` times a second; the reader notes when each chunk becomes visible in its
//! document. Both ends are in one process, so one monotonic clock serves both.
//!
//! `clients` is one such process, which `run` starts; it prints one JSON line.
//!
//! Besides percentiles the report counts the edits later than p50 + 0.8 RTT: those that
//! waited for a resend (Quantum's tail loss probe, TCP's retransmission) rather than arriving
//! first time or being rebuilt from parity. Over 1,000 edits, ten or more of them put the p99
//! in the resend tier.
//!
//! Bytes: on a link the relay listens on fixed ports ([`LINK_HTTP_PORT`], [`LINK_QUANTUM_PORT`])
//! so the emulator counts each transport's wire bytes per direction. The Quantum writer's own
//! figures ([`aetherflow_client::Client::quantum_stats`]) give the FEC overhead of the
//! writer → relay hop (parity bytes / other bytes sent) and the relay's repairs from that
//! parity; the reader's give its repairs from the relay's parity. The relay's own parity bytes
//! are not visible to the benchmark; its hop carries the same edits under the same budget.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aetherflow_benches::latency::Percentiles;
use aetherflow_benches::link::emulator::{FlowBytes, Link, LinkSpec};
use aetherflow_benches::link::model::LinkConfig;
use aetherflow_benches::link::packet::Flow;
use aetherflow_client::{Client, ClientConfig, Connection, DocHandle, TransportKind};
use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use yrs::{GetString, Text, Transact};

/// Characters per edit: a zero-padded sequence number and a separator.
const CHUNK: usize = 8;
/// The relay's JWT secret in every cell; the clients sign their own tokens with it.
/// At least 32 bytes: the relay refuses a shorter --jwt-secret beyond loopback (the link cells).
const SECRET: &str = "sdk-latency-benchmark-secret-of-32-bytes";
/// The relay's HTTP port on a link: below the clients' ephemeral ports, so it names the flow.
const LINK_HTTP_PORT: u16 = 8080;
/// The relay's Quantum port on a link.
const LINK_QUANTUM_PORT: u16 = 9090;

#[derive(Parser)]
#[command(about = "SDK edit-to-visible latency, Quantum vs WebSocket (needs root for links)")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Run the whole benchmark and print markdown tables.
    Run(RunArgs),
    /// A writer and a reader on one transport; prints a JSON report.
    Clients {
        #[arg(long)]
        transport: Kind,
        /// `HOST:PORT` of the relay's HTTP (WebSocket) or Quantum listener.
        #[arg(long)]
        relay: SocketAddr,
        #[arg(long)]
        edits: usize,
        #[arg(long)]
        rate: f64,
        /// The Quantum clients' sparse FEC budget (the SDK's default if unset).
        #[arg(long)]
        quantum_sparse_fec_budget: Option<u16>,
        /// The relay's Quantum public key (64 hex digits, as it prints it).
        #[arg(long)]
        quantum_key: Option<String>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// The relay binary (`aetherflow`).
    #[arg(long)]
    relay: PathBuf,
    /// Edits per cell.
    #[arg(long, default_value_t = 1000)]
    edits: usize,
    /// Edits per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Round-trip time of the emulated links.
    #[arg(long, default_value_t = 50.0)]
    rtt_ms: f64,
    /// Loss rates (each way) of the emulated links, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [0.0, 0.05])]
    losses: Vec<f64>,
    /// Seed of the first link's loss pattern.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Sparse FEC budget of the relay's Quantum listener and the Quantum clients, in percent
    /// (the relay's and the SDK's defaults if unset).
    #[arg(long)]
    quantum_sparse_fec_budget: Option<u16>,
}

/// The transport a client pair uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
enum Kind {
    Websocket,
    Quantum,
}

/// What one client pair measured.
#[derive(Debug, Serialize, Deserialize)]
struct Report {
    /// Edit-to-visible latency of each edit the reader saw, microseconds.
    latencies_us: Vec<u64>,
    /// Whether both clients were still online over the intended transport at the end.
    stayed_on_transport: bool,
    /// The Quantum clients' connection figures; `None` for WebSocket.
    quantum: Option<QuantumFigures>,
}

/// What the Quantum writer and reader saw of their connections to the relay.
#[derive(Debug, Serialize, Deserialize)]
struct QuantumFigures {
    /// Bytes the writer sent, parity included.
    writer_bytes_sent: u64,
    /// Bytes of the writer's parity packets.
    writer_fec_bytes_sent: u64,
    /// Data packets the writer sent again (tail loss probes included).
    writer_retransmits: u64,
    /// Packets the relay rebuilt from the writer's parity.
    relay_repaired: u64,
    /// Packets the reader rebuilt from the relay's parity.
    reader_repaired: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().mode {
        Mode::Run(args) => run(args).await,
        Mode::Clients {
            transport,
            relay,
            edits,
            rate,
            quantum_sparse_fec_budget,
            quantum_key,
        } => {
            let key = match quantum_key {
                Some(hex) => Some(
                    aetherflow_quantum::crypto::from_hex(&hex)
                        .context("--quantum-key must be 64 hex digits")?,
                ),
                None => None,
            };
            let pair = Pair {
                kind: transport,
                relay,
                budget: quantum_sparse_fec_budget,
                key,
            };
            let report = clients(pair, edits, rate).await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
    }
}

fn token() -> anyhow::Result<String> {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 3600;
    let claims = serde_json::json!({ "sub": "bench", "docs": ["*"], "perm": "write", "exp": exp });
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &key,
    )?)
}

/// Which transport a client pair uses, where the relay is, and the Quantum budget.
#[derive(Debug, Clone, Copy)]
struct Pair {
    kind: Kind,
    relay: SocketAddr,
    budget: Option<u16>,
    /// The relay's Quantum key, pinned by Quantum clients.
    key: Option<[u8; 32]>,
}

async fn open(pair: Pair, dir: &Path, doc: &str) -> anyhow::Result<(Client, DocHandle)> {
    let Pair {
        kind,
        relay,
        budget,
        key,
    } = pair;
    let mut config = ClientConfig::new(dir).token(token()?);
    if let Some(percent) = budget {
        config = config.quantum_sparse_fec_budget(percent);
    }
    let config = match kind {
        Kind::Websocket => config.websocket(format!("ws://{relay}")),
        Kind::Quantum => config
            .quantum(relay)
            .quantum_key(key.context("Quantum clients need --quantum-key")?),
    };
    let client = Client::open(config)?;
    let handle = client.doc(doc).await?;
    let want = Connection::Online(transport_kind(kind));
    tokio::time::timeout(
        Duration::from_secs(30),
        handle.wait_for(|s| s.synced && s.connection == want),
    )
    .await
    .with_context(|| {
        format!(
            "{kind:?} client never synced: {:?}",
            handle.state().borrow()
        )
    })?;
    Ok((client, handle))
}

fn transport_kind(kind: Kind) -> TransportKind {
    match kind {
        Kind::Websocket => TransportKind::WebSocket,
        Kind::Quantum => TransportKind::Quantum,
    }
}

fn text_len(handle: &DocHandle) -> usize {
    let text = handle.doc().get_or_insert_text("text");
    text.get_string(&handle.doc().transact()).len()
}

async fn clients(pair: Pair, edits: usize, rate: f64) -> anyhow::Result<Report> {
    let kind = pair.kind;
    let (dir_w, dir_r) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let doc = format!("latency-{kind:?}").to_lowercase();
    let (writer_client, writer) = open(pair, dir_w.path(), &doc).await?;
    let (reader_client, reader) = open(pair, dir_r.path(), &doc).await?;
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::with_capacity(edits)));
    let watch = tokio::spawn(watch(reader.clone(), sent.clone(), edits));
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let text = writer.doc().get_or_insert_text("text");
    for seq in 0..edits {
        ticks.tick().await;
        let chunk = format!("{seq:07};");
        sent.lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .push(Instant::now());
        let mut txn = writer.doc().transact_mut();
        let len = text.len(&txn);
        text.insert(&mut txn, len, &chunk);
    }
    // Generous, only so a broken run ends: the sending time again plus a minute.
    let limit = Duration::from_secs_f64(edits as f64 / rate + 60.0);
    let latencies_us = tokio::time::timeout(limit, watch)
        .await
        .context("the reader never saw every edit")??;
    let online =
        |h: &DocHandle| h.state().borrow().connection == Connection::Online(transport_kind(kind));
    let quantum = match (
        writer_client.quantum_stats().await,
        reader_client.quantum_stats().await,
    ) {
        (Some(w), Some(r)) => Some(QuantumFigures {
            writer_bytes_sent: w.bytes_sent,
            writer_fec_bytes_sent: w.fec_bytes_sent,
            writer_retransmits: w.retransmits,
            relay_repaired: w.fec_repairs_reported,
            reader_repaired: r.fec_repaired,
        }),
        _ => None,
    };
    Ok(Report {
        stayed_on_transport: online(&writer) && online(&reader),
        latencies_us,
        quantum,
    })
}

/// Notes when each chunk becomes visible; chunks arrive in order, so the text's length says
/// how many have.
async fn watch(reader: DocHandle, sent: Arc<Mutex<Vec<Instant>>>, edits: usize) -> Vec<u64> {
    let mut changes = reader.changes();
    let mut latencies = Vec::with_capacity(edits);
    while latencies.len() < edits {
        let visible = (text_len(&reader) / CHUNK).min(edits);
        if visible > latencies.len() {
            let now = Instant::now();
            let sent = sent.lock().map(|s| s.clone()).unwrap_or_default();
            for at in sent.iter().take(visible).skip(latencies.len()) {
                latencies
                    .push(u64::try_from(now.duration_since(*at).as_micros()).unwrap_or(u64::MAX));
            }
            continue;
        }
        if changes.next().await.is_none() {
            break;
        }
    }
    latencies
}

/// One cell: where the relay and the clients run.
enum Place<'a> {
    Loopback,
    Link(&'a Link),
}

struct Cell {
    label: String,
    websocket: Report,
    quantum: Report,
    /// Wire bytes per transport on the link (none on loopback).
    wire: Option<Wire>,
}

/// Bytes that entered the link, per transport: `a_to_b` is relay → clients.
struct Wire {
    websocket: FlowBytes,
    quantum: FlowBytes,
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let mut cells = vec![run_cell(&args, &exe, Place::Loopback, "loopback".into()).await?];
    let delay = Duration::try_from_secs_f64(args.rtt_ms / 2000.0).context("--rtt-ms")?;
    for (i, &loss) in args.losses.iter().enumerate() {
        let n = u8::try_from(i).unwrap_or(u8::MAX);
        let config = LinkConfig {
            delay,
            loss,
            ..LinkConfig::default()
        };
        let spec = LinkSpec::symmetric(
            &format!("afsdk{n}"),
            120 + n,
            config,
            args.seed + 2 * i as u64,
        );
        let link = Link::start(spec)?;
        let label = format!("RTT {} ms, {:.0} % loss", args.rtt_ms, loss * 100.0);
        let cell = run_cell(&args, &exe, Place::Link(&link), label).await;
        let stats = link.shutdown().await;
        let flow = |f| stats.flows.get(&f).copied().unwrap_or_default();
        let wire = Wire {
            websocket: flow(Flow::Tcp(LINK_HTTP_PORT)),
            quantum: flow(Flow::Udp(LINK_QUANTUM_PORT)),
        };
        eprintln!(
            "link {loss}: A→B {} in / {} dropped, B→A {} in / {} dropped",
            stats.a_to_b.packets_in,
            stats.a_to_b.packets_dropped,
            stats.b_to_a.packets_in,
            stats.b_to_a.packets_dropped
        );
        cells.push(Cell {
            wire: Some(wire),
            ..cell?
        });
    }
    print_report(&args, &cells);
    Ok(())
}

async fn run_cell(
    args: &RunArgs,
    exe: &Path,
    place: Place<'_>,
    label: String,
) -> anyhow::Result<Cell> {
    let data = tempfile::tempdir()?;
    // Fixed ports on a link, where the relay has its namespace to itself and the emulator
    // names flows by port; any free port on the shared loopback.
    let (host, http_port, quantum_port) = match place {
        Place::Loopback => ("127.0.0.1".to_owned(), 0, 0),
        Place::Link(link) => (
            link.spec().addr_a().to_string(),
            LINK_HTTP_PORT,
            LINK_QUANTUM_PORT,
        ),
    };
    let budget = args
        .quantum_sparse_fec_budget
        .map(|percent| {
            vec![
                "--quantum-sparse-fec-budget".to_owned(),
                percent.to_string(),
            ]
        })
        .unwrap_or_default();
    let relay_exe = args.relay.to_str().context("relay path is not UTF-8")?;
    let mut relay = match place {
        Place::Loopback => tokio::process::Command::new(relay_exe),
        Place::Link(link) => link.command_in_a(relay_exe),
    };
    let mut relay = relay
        .args([
            "--http-addr",
            &format!("{host}:{http_port}"),
            "--quantum-addr",
            &format!("{host}:{quantum_port}"),
        ])
        .args(&budget)
        .args(["--jwt-secret", SECRET, "--durability", "relaxed"])
        .arg("--data-dir")
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the relay")?;
    let (http, quantum, key) = relay_addrs(&mut relay).await?;
    let exe = exe.to_str().context("binary path is not UTF-8")?;
    let pair = |kind: Kind, addr: SocketAddr| {
        let mut command = match place {
            Place::Loopback => tokio::process::Command::new(exe),
            Place::Link(link) => link.command_in_b(exe),
        };
        command
            .args([
                "clients",
                "--transport",
                &format!("{kind:?}").to_lowercase(),
            ])
            .args([
                "--relay",
                &addr.to_string(),
                "--edits",
                &args.edits.to_string(),
            ])
            .args(["--rate", &args.rate.to_string()])
            .args(["--quantum-key", &key])
            .args(&budget)
            .kill_on_drop(true)
            .output()
    };
    let (ws, q) = tokio::join!(pair(Kind::Websocket, http), pair(Kind::Quantum, quantum));
    let report =
        |output: std::io::Result<std::process::Output>, name: &str| -> anyhow::Result<Report> {
            let output = output.with_context(|| format!("running the {name} clients"))?;
            if !output.status.success() {
                bail!(
                    "{name} clients failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            serde_json::from_slice(&output.stdout).with_context(|| format!("{name} report"))
        };
    Ok(Cell {
        label,
        websocket: report(ws, "websocket")?,
        quantum: report(q, "quantum")?,
        wire: None,
    })
}

/// Reads the relay's ready lines: its HTTP and Quantum addresses and its Quantum key (hex).
async fn relay_addrs(
    relay: &mut tokio::process::Child,
) -> anyhow::Result<(SocketAddr, SocketAddr, String)> {
    let stdout = relay.stdout.take().context("relay stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut http = None;
    let mut quantum = None;
    let read = async {
        while let Some(line) = lines.next_line().await? {
            if let Some(addr) = line.strip_prefix("aetherflow ready: http://") {
                http = Some(addr.parse::<SocketAddr>()?);
            }
            if let Some(addr) = line.strip_prefix("aetherflow quantum ready: udp://") {
                quantum = Some(addr.parse::<SocketAddr>()?);
            }
            if let Some(key) = line.strip_prefix("aetherflow quantum key: ") {
                return Ok::<_, anyhow::Error>((
                    http.context("no HTTP ready line first")?,
                    quantum.context("no Quantum ready line first")?,
                    key.to_owned(),
                ));
            }
        }
        bail!("the relay exited before it was ready")
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .context("the relay did not get ready")?
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print_report(args: &RunArgs, cells: &[Cell]) {
    let budget = args
        .quantum_sparse_fec_budget
        .map_or("the relay's and the SDK's defaults".to_owned(), |b| {
            format!("{b} %")
        });
    println!(
        "{} edits of {CHUNK} characters at {}/s per transport and cell; both transports at once in each cell; Quantum sparse FEC budget: {budget}\n",
        args.edits, args.rate
    );
    // A resend (a tail loss probe, or TCP's retransmission) costs at least about one RTT; a
    // repair from parity less than half of one.
    let resend = Duration::from_secs_f64(args.rtt_ms * 0.8 / 1000.0);
    println!(
        "| cell | transport | visible | p50 ms | p99 ms | max ms | later than p50 + 0.8 RTT | stayed on transport |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---|");
    let mut ratios = Vec::new();
    for cell in cells {
        let mut figures = Vec::new();
        for (name, report) in [("WebSocket", &cell.websocket), ("Quantum", &cell.quantum)] {
            let Some(p) = Percentiles::of(&report.latencies_us) else {
                println!(
                    "| {} | {name} | 0 | – | – | – | – | {} |",
                    cell.label, report.stayed_on_transport
                );
                continue;
            };
            let late = report
                .latencies_us
                .iter()
                .filter(|&&us| Duration::from_micros(us) > p.p50 + resend)
                .count();
            println!(
                "| {} | {name} | {} | {:.1} | {:.1} | {:.1} | {late} | {} |",
                cell.label,
                report.latencies_us.len(),
                ms(p.p50),
                ms(p.p99),
                ms(p.max),
                report.stayed_on_transport
            );
            figures.push(p);
        }
        if let [w, q] = figures[..] {
            ratios.push((
                cell.label.clone(),
                ms(q.p50) / ms(w.p50),
                ms(q.p99) / ms(w.p99),
                ms(q.max) / ms(w.max),
            ));
        }
    }
    println!("\nRatios Quantum / WebSocket (below 1 means Quantum is better):\n");
    println!("| cell | p50 | p99 | max |");
    println!("|---|---:|---:|---:|");
    for (label, p50, p99, max) in ratios {
        println!("| {label} | {p50:.2} | {p99:.2} | {max:.2} |");
    }
    print_bytes(cells);
}

/// Quantum's FEC figures and both transports' wire bytes, per cell.
fn print_bytes(cells: &[Cell]) {
    println!(
        "\nQuantum FEC (writer → relay overhead = the writer's parity bytes / its other bytes) and wire bytes on the link:\n"
    );
    println!(
        "| cell | writer FEC overhead | writer retransmits | relay repaired | reader repaired | WebSocket bytes to relay / from relay | Quantum bytes to relay / from relay | Quantum / WebSocket bytes |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for cell in cells {
        let Some(q) = &cell.quantum.quantum else {
            continue;
        };
        let overhead = q.writer_fec_bytes_sent as f64
            / q.writer_bytes_sent
                .saturating_sub(q.writer_fec_bytes_sent)
                .max(1) as f64;
        let (ws, qu, ratio) = match &cell.wire {
            Some(w) => {
                let total = |b: &FlowBytes| (b.a_to_b + b.b_to_a) as f64;
                (
                    format!("{} / {}", w.websocket.b_to_a, w.websocket.a_to_b),
                    format!("{} / {}", w.quantum.b_to_a, w.quantum.a_to_b),
                    format!("{:.2}", total(&w.quantum) / total(&w.websocket).max(1.0)),
                )
            }
            None => ("–".into(), "–".into(), "–".into()),
        };
        println!(
            "| {} | {:.1} % | {} | {} | {} | {ws} | {qu} | {ratio} |",
            cell.label,
            overhead * 100.0,
            q.writer_retransmits,
            q.relay_repaired,
            q.reader_repaired
        );
    }
}
