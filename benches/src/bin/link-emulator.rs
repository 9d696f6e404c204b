//! The userspace link emulator from the command line (see `aetherflow_benches::link`).
//!
//! ```text
//! cargo build -p aetherflow-benches --bin link-emulator
//! # Run a link until Ctrl-C; use it with `ip netns exec af-a ...` / `ip netns exec af-b ...`:
//! sudo target/debug/link-emulator run --delay-ms 25 --jitter-ms 2 --loss 0.05
//! # Check a link: ping RTT against the configured delay, loss against the configured rate:
//! sudo target/debug/link-emulator check --delay-ms 25 --loss 0.05 --pings 2000
//! # Cross-check the loss measurement with an nftables `numgen random` drop rule (needs nft)
//! # on a link without emulated loss:
//! sudo target/debug/link-emulator check --delay-ms 25 --nft-loss 0.05 --pings 2000
//! ```

use std::time::Duration;

use aetherflow_benches::link::emulator::{Link, LinkSpec, LinkStats};
use aetherflow_benches::link::model::LinkConfig;
use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Userspace link emulator between two network namespaces (needs root)")]
struct Cli {
    #[command(subcommand)]
    command: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Build the link and forward until Ctrl-C or SIGTERM, then print the counts.
    Run(LinkArgs),
    /// Build the link, ping across it and compare RTT and loss with the configuration.
    Check {
        #[command(flatten)]
        link: LinkArgs,
        /// How many pings to send (10 ms apart).
        #[arg(long, default_value_t = 1000)]
        pings: u32,
        /// Drop this fraction of packets entering namespace B with an nftables rule
        /// (`numgen random`), to cross-check the loss measurement.
        #[arg(long)]
        nft_loss: Option<f64>,
    },
}

#[derive(Args)]
struct LinkArgs {
    /// Prefix of the namespaces: NAME-a and NAME-b.
    #[arg(long, default_value = "af")]
    name: String,
    /// Addresses are 10.77.SUBNET.1 (A) and 10.77.SUBNET.2 (B).
    #[arg(long, default_value_t = 0)]
    subnet: u8,
    /// One-way delay in milliseconds, each direction.
    #[arg(long, default_value_t = 25.0)]
    delay_ms: f64,
    /// Jitter (uniform ±) in milliseconds, each direction.
    #[arg(long, default_value_t = 0.0)]
    jitter_ms: f64,
    /// Loss probability in [0, 1], each direction independently.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Rate limit in kbit/s, each direction.
    #[arg(long)]
    rate_kbps: Option<u64>,
    /// Let jitter reorder packets.
    #[arg(long)]
    reorder: bool,
    /// Seed of the random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl LinkArgs {
    fn spec(&self) -> anyhow::Result<LinkSpec> {
        let config = LinkConfig {
            delay: millis(self.delay_ms).context("--delay-ms")?,
            jitter: millis(self.jitter_ms).context("--jitter-ms")?,
            loss: self.loss,
            rate_bps: self.rate_kbps.map(|k| k.saturating_mul(1000)),
            reorder: self.reorder,
        };
        Ok(LinkSpec::symmetric(
            &self.name,
            self.subnet,
            config,
            self.seed,
        ))
    }
}

fn millis(ms: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(ms / 1000.0)
        .with_context(|| format!("{ms} is not a valid number of milliseconds"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Mode::Run(args) => run(args.spec()?).await,
        Mode::Check {
            link,
            pings,
            nft_loss,
        } => check(link.spec()?, pings, nft_loss).await,
    }
}

async fn run(spec: LinkSpec) -> anyhow::Result<()> {
    let link = Link::start(spec.clone())?;
    println!(
        "link up: {} ({}) <-> {} ({}); Ctrl-C to stop",
        spec.namespace_a(),
        spec.addr_a(),
        spec.namespace_b(),
        spec.addr_b()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    print_stats(&link.shutdown().await);
    Ok(())
}

fn print_stats(stats: &LinkStats) {
    for (name, d) in [("A->B", stats.a_to_b), ("B->A", stats.b_to_a)] {
        println!(
            "{name}: {} packets in ({} bytes), {} dropped ({:.2} %), {} out ({} bytes), {} held",
            d.packets_in,
            d.bytes_in,
            d.packets_dropped,
            percent(d.packets_dropped, d.packets_in),
            d.packets_out,
            d.bytes_out,
            d.packets_held
        );
    }
    for (flow, bytes) in &stats.flows {
        println!(
            "  {flow:?}: {} bytes A->B, {} bytes B->A",
            bytes.a_to_b, bytes.b_to_a
        );
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// What `ping -q` reports.
struct PingSummary {
    transmitted: u64,
    received: u64,
    rtt_min_avg_max_ms: [f64; 3],
}

async fn check(spec: LinkSpec, pings: u32, nft_loss: Option<f64>) -> anyhow::Result<()> {
    let link = Link::start(spec.clone())?;
    if let Some(p) = nft_loss {
        add_nft_drop(&link, p).await?;
    }
    let output = link
        .command_in_a("ping")
        .args(["-q", "-i", "0.01", "-W", "2", "-c", &pings.to_string()])
        .arg(spec.addr_b().to_string())
        .output()
        .await
        .context("running ping (is iputils-ping installed?)")?;
    let stats = link.shutdown().await;
    let text = String::from_utf8_lossy(&output.stdout);
    let ping = parse_ping(&text).with_context(|| format!("unexpected ping output:\n{text}"))?;
    print_stats(&stats);
    let configured_loss = spec.a_to_b.loss;
    // A ping is lost if the request is lost (emulator A->B, or the nft rule in B) or the reply
    // is (emulator B->A).
    let expected_rt_loss =
        1.0 - (1.0 - spec.a_to_b.loss) * (1.0 - spec.b_to_a.loss) * (1.0 - nft_loss.unwrap_or(0.0));
    let measured = 1.0 - ping.received as f64 / ping.transmitted as f64;
    let [min, avg, max] = ping.rtt_min_avg_max_ms;
    println!(
        "ping: configured RTT {:.1} ms; measured min/avg/max {min:.2}/{avg:.2}/{max:.2} ms",
        (spec.a_to_b.delay + spec.b_to_a.delay).as_secs_f64() * 1000.0
    );
    println!(
        "ping: {} sent, {} received: round-trip loss {:.2} % (expected {:.2} %)",
        ping.transmitted,
        ping.received,
        measured * 100.0,
        expected_rt_loss * 100.0
    );
    println!(
        "emulator: one-way loss A->B {:.2} %, B->A {:.2} % (configured {:.2} %)",
        percent(stats.a_to_b.packets_dropped, stats.a_to_b.packets_in),
        percent(stats.b_to_a.packets_dropped, stats.b_to_a.packets_in),
        configured_loss * 100.0
    );
    Ok(())
}

/// Drops fraction `p` of the packets entering namespace B, decided by nftables' own random
/// numbers, independently of the emulator.
async fn add_nft_drop(link: &Link, p: f64) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&p) {
        bail!("--nft-loss must be within [0, 1], got {p}");
    }
    let per_mille = (p * 1000.0).round() as u32;
    let rule = format!("numgen random mod 1000 < {per_mille} drop");
    let commands = [
        "add table inet afloss".to_owned(),
        "add chain inet afloss input { type filter hook input priority 0 ; }".to_owned(),
        format!("add rule inet afloss input {rule}"),
    ];
    for command in commands {
        let status = link
            .command_in_b("nft")
            .arg(&command)
            .status()
            .await
            .context("running nft (is nftables installed?)")?;
        if !status.success() {
            bail!("`nft {command}` failed");
        }
    }
    Ok(())
}

fn parse_ping(text: &str) -> Option<PingSummary> {
    let counts = text.lines().find(|l| l.contains("packets transmitted"))?;
    let mut words = counts.split_whitespace();
    let transmitted = words.next()?.parse().ok()?;
    let received = counts
        .split(", ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let rtt_min_avg_max_ms = match text.lines().find(|l| l.starts_with("rtt ")) {
        Some(line) => {
            let values = line.split(" = ").nth(1)?.split_whitespace().next()?;
            let v: Vec<f64> = values.split('/').filter_map(|x| x.parse().ok()).collect();
            [*v.first()?, *v.get(1)?, *v.get(2)?]
        }
        None => [f64::NAN; 3],
    };
    Some(PingSummary {
        transmitted,
        received,
        rtt_min_avg_max_ms,
    })
}
