//! Ingest benchmark: replays an editing trace as individual updates from one WebSocket client
//! through the relay to a second, already-synced client, next to raw yrs applying the same
//! updates in-process (one transaction per update), in the same run.
//!
//! ```text
//! cargo build --release -p aetherflow-server
//! cargo run --release -p aetherflow-benches --bin relay-ingest -- [TRACE] [relaxed] [--addr HOST:PORT]
//! ```
//!
//! With `--addr`, the benchmark uses a relay that is already running there (for profiling or
//! for another y-websocket server) instead of starting `target/release/aetherflow`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aetherflow_benches::trace;
use aetherflow_crdt::protocol::{Limits, Message, SyncMessage, encode_sync_update};
use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as Frame;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, Transact, Update};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let trace_path = args
        .iter()
        .find(|a| a.ends_with(".json.gz"))
        .map(PathBuf::from);
    let durability = if args.iter().any(|a| a == "relaxed") {
        "relaxed"
    } else {
        "durable"
    };

    let external = args
        .iter()
        .position(|a| a == "--addr")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let (trace, source) = trace::ingest_session(trace_path.as_deref())?;
    let (updates, end) = trace::to_updates(&trace);
    anyhow::ensure!(
        end == trace.end_content,
        "trace replay diverged from endContent"
    );
    println!("trace: {source} ({} updates)", updates.len());

    let raw = raw_apply(&updates, &end);
    let runtime = tokio::runtime::Runtime::new()?;
    let relay = runtime.block_on(through_relay(&updates, &end, durability, external))?;

    let n = updates.len() as f64;
    println!(
        "raw yrs, one txn per update : {:>8.3} s  {:>10.0} updates/s",
        raw.as_secs_f64(),
        n / raw.as_secs_f64()
    );
    println!(
        "relay ({durability}), end to end : {:>8.3} s  {:>10.0} updates/s",
        relay.as_secs_f64(),
        n / relay.as_secs_f64()
    );
    println!(
        "ratio relay/raw (rate)       : {:.2}",
        raw.as_secs_f64() / relay.as_secs_f64()
    );
    Ok(())
}

fn raw_apply(updates: &[Vec<u8>], end: &str) -> Duration {
    let doc = Doc::new();
    let text = doc.get_or_insert_text("text");
    let start = Instant::now();
    for bytes in updates {
        let update = Update::decode_v1(bytes).expect("trace updates decode");
        doc.transact_mut()
            .apply_update(update)
            .expect("trace updates apply");
    }
    let elapsed = start.elapsed();
    assert_eq!(text.get_string(&doc.transact()), end);
    elapsed
}

struct RelayProcess(std::process::Child);

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn relay_binary() -> PathBuf {
    std::env::var_os("AETHERFLOW_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/aetherflow")
        })
}

fn start_relay(
    data_dir: &std::path::Path,
    durability: &str,
) -> anyhow::Result<(RelayProcess, String)> {
    let bin = relay_binary();
    let mut child = Command::new(&bin)
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--durability",
            durability,
            // A trace replayed as fast as possible is far over any sane per-session limit.
            "--message-rate-per-sec",
            "0",
            "--data-dir",
        ])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "start {} (build it with cargo build --release)",
                bin.display()
            )
        })?;
    let stdout = child.stdout.take().context("relay stdout")?;
    let relay = RelayProcess(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("aetherflow ready: http://")
        .with_context(|| format!("unexpected relay output: {line}"))?
        .to_owned();
    Ok((relay, addr))
}

async fn through_relay(
    updates: &[Vec<u8>],
    end: &str,
    durability: &str,
    external: Option<String>,
) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let (_relay, addr) = match external {
        Some(addr) => (None, addr),
        None => {
            let (relay, addr) = start_relay(dir.path(), durability)?;
            (Some(relay), addr)
        }
    };
    let url = format!("ws://{addr}/ws/ingest-bench");

    let expected_sv = {
        let doc = Doc::new();
        for bytes in updates {
            doc.transact_mut().apply_update(Update::decode_v1(bytes)?)?;
        }
        doc.transact().state_vector()
    };

    // The receiver connects first and is synced (empty document) before the clock starts.
    let (mut receiver, _) = tokio_tungstenite::connect_async(&url).await?;
    let (sender, _) = tokio_tungstenite::connect_async(&url).await?;
    let (mut send_half, mut echo_half) = sender.split();
    let frames: Vec<Frame> = updates
        .iter()
        .map(|u| Frame::Binary(encode_sync_update(u).into()))
        .collect();

    let start = Instant::now();
    // The sender drains its own echoes so the relay never sees it as a slow reader.
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = echo_half.next().await {} });
    let send = tokio::spawn(async move {
        for frame in frames {
            send_half.feed(frame).await?;
        }
        send_half.flush().await?;
        Ok::<_, anyhow::Error>(send_half)
    });

    let doc = Doc::new();
    let text = doc.get_or_insert_text("text");
    let limits = Limits::default();
    loop {
        if doc.transact().state_vector() == expected_sv {
            break;
        }
        let frame = tokio::time::timeout(Duration::from_secs(120), receiver.next())
            .await
            .context("receiver timed out")?
            .context("receiver connection ended")??;
        let Frame::Binary(bytes) = frame else {
            continue;
        };
        if let Message::Sync(SyncMessage::Update(u) | SyncMessage::Step2(u)) =
            Message::decode(&bytes, &limits)?
        {
            doc.transact_mut().apply_update(Update::decode_v1(&u)?)?;
        }
    }
    let elapsed = start.elapsed();
    if text.get_string(&doc.transact()) != end {
        bail!("receiver's text differs from the trace's endContent");
    }
    let _ = send.await?;
    drain.abort();
    Ok(elapsed)
}
