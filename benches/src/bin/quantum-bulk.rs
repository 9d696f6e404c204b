//! Bulk throughput of one Quantum connection over loopback, next to a plain tokio TCP stream
//! moving the same bytes in the same run.
//!
//! ```text
//! cargo run --release -p aetherflow-benches --bin quantum-bulk -- [--mib 256] [--message-kib 64] [--mtu 1200] [--runs 3]
//! ```
//!
//! The client sends `--mib` MiB as `--message-kib` KiB messages; the clock stops when the
//! server has received the last byte. Each run measures Quantum, then TCP.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aetherflow_quantum::{DriverConfig, QuantumEndpoint};
use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Options {
    bytes: usize,
    message: usize,
    mtu: usize,
    runs: usize,
}

fn parse() -> anyhow::Result<Options> {
    let mut options = Options {
        bytes: 256 << 20,
        message: 64 << 10,
        mtu: 1200,
        runs: 3,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [flag, value] = pair else {
            bail!("flags take a value: {pair:?}");
        };
        let value: usize = value.parse().with_context(|| format!("{flag} {value}"))?;
        match flag.as_str() {
            "--mib" => options.bytes = value << 20,
            "--message-kib" => options.message = value << 10,
            "--mtu" => options.mtu = value,
            "--runs" => options.runs = value,
            _ => bail!("unknown flag {flag}"),
        }
    }
    if options.message == 0 || options.bytes < options.message || options.runs == 0 {
        bail!("need --message-kib > 0, --mib at least one message, --runs > 0");
    }
    Ok(options)
}

fn gbit_per_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1e9
}

async fn quantum(options: &Options) -> anyhow::Result<Duration> {
    let loopback: SocketAddr = "127.0.0.1:0".parse()?;
    let identity = aetherflow_quantum::crypto::Keypair::from_seed(0xb01c);
    let mut server_config = DriverConfig::default();
    server_config.quantum.accept_incoming = true;
    server_config.quantum.mtu = options.mtu;
    server_config.quantum.static_secret = Some(identity.secret.clone());
    let server = QuantumEndpoint::bind(loopback, server_config).await?;
    let mut client_config = DriverConfig::default();
    client_config.quantum.mtu = options.mtu;
    client_config.quantum.server_public_key = Some(identity.public);
    let client = QuantumEndpoint::bind(loopback, client_config).await?;
    let (conn, accepted) = tokio::join!(client.connect(server.local_addr()), server.accept());
    let (conn, accepted) = (conn?, accepted.context("accept")?);
    let total = options.bytes;
    let start = Instant::now();
    let receiver = tokio::spawn(async move {
        let mut got = 0;
        while got < total {
            match accepted.recv().await? {
                Some(message) => got += message.len(),
                None => bail!("connection ended after {got} bytes"),
            }
        }
        anyhow::Ok(start.elapsed())
    });
    let message = bytes::Bytes::from(vec![0x5a; options.message]);
    for _ in 0..total / options.message {
        conn.send(message.clone()).await?;
    }
    let elapsed = receiver.await??;
    let stats = conn.stats().await?;
    let endpoint = client.stats().await?;
    println!(
        "  quantum client: {} datagrams in {} send calls (GSO up to {}), retransmits {}, fast losses {}, RTO expiries {}, srtt {:?}, cwnd {} B",
        endpoint.datagrams_sent,
        endpoint.send_calls,
        endpoint.max_gso_segments,
        stats.retransmits,
        stats.fast_losses,
        stats.rto_expiries,
        stats.srtt.unwrap_or_default(),
        stats.cwnd,
    );
    let served = server.stats().await?;
    println!(
        "  quantum server: {} datagrams in {} receive calls; sent {} acknowledgements in {} send calls",
        served.datagrams_received, served.receive_calls, served.datagrams_sent, served.send_calls
    );
    conn.close().await;
    Ok(elapsed)
}

async fn tcp(options: &Options) -> anyhow::Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let total = options.bytes;
    let mut client = TcpStream::connect(addr).await?;
    let (mut server, _) = listener.accept().await?;
    let start = Instant::now();
    let receiver = tokio::spawn(async move {
        let mut buf = vec![0u8; 256 << 10];
        let mut got = 0;
        while got < total {
            let n = server.read(&mut buf).await?;
            if n == 0 {
                bail!("stream ended after {got} bytes");
            }
            got += n;
        }
        anyhow::Ok(start.elapsed())
    });
    let message = vec![0x5a; options.message];
    for _ in 0..total / options.message {
        client.write_all(&message).await?;
    }
    receiver.await?
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = parse()?;
    let total = options.bytes / options.message * options.message;
    let options = Options {
        bytes: total,
        ..options
    };
    println!(
        "bulk transfer over loopback: {} MiB in {} KiB messages, quantum mtu {}",
        total >> 20,
        options.message >> 10,
        options.mtu
    );
    for run in 1..=options.runs {
        let q = quantum(&options).await?;
        let t = tcp(&options).await?;
        let (qg, tg) = (gbit_per_s(total, q), gbit_per_s(total, t));
        println!(
            "run {run}: quantum {:.3} s {qg:.2} Gbit/s | tcp {:.3} s {tg:.2} Gbit/s | ratio quantum/tcp {:.2}",
            q.as_secs_f64(),
            t.as_secs_f64(),
            qg / tg
        );
    }
    Ok(())
}
