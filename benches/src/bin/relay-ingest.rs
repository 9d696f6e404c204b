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

use std::path::PathBuf;
use std::time::{Duration, Instant};

use aetherflow_benches::ingest::{RelayProcess, relay_binary, replay};
use aetherflow_benches::trace;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, Transact, Update};

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
            let args = ["--durability", durability];
            let relay = RelayProcess::start(&relay_binary(), dir.path(), &args)?;
            let addr = relay.addr.clone();
            (Some(relay), addr)
        }
    };
    replay(&addr, "ingest-bench", updates, end).await
}
