//! The cost of durability: how long one append of a batch takes to become durable, per batch
//! size, in the embedded engine (redb, the store writer's fsync'd group commit) and in cluster
//! mode's engine (JetStream: acknowledged once a majority of its servers stored it), side by
//! side in one run. Appends are made one at a time through the relay's own storage interface
//! (`DocumentLog::append`, then awaiting its `Committing`), with a batch of N updates merged
//! into one entry as a room does.
//!
//! ```text
//! cargo build --release -p aetherflow-benches --bin commit-latency
//! target/release/commit-latency [--cluster nats://127.0.0.1:4222,...] [--batches 1,8,64,512] \
//!     [--rounds 200] [--json FILE]
//! ```
//!
//! Without `--cluster` only redb is measured. `benches/anchors/commit-latency.sh` starts a
//! three-node JetStream cluster from `deploy/nats/` (fsync before acknowledging) and runs it.

use std::path::PathBuf;
use std::time::Instant;

use aetherflow_benches::stats::LatencySummary;
use aetherflow_crdt::DocName;
use aetherflow_server::jetstream::{ClusterSettings, JetStreamEngine};
use aetherflow_server::metrics::Metrics;
use aetherflow_server::storage::Storage;
use aetherflow_server::store::{self, Store, WriteMode};
use anyhow::Context;
use clap::Parser;
use serde::Serialize;
use yrs::{Doc, ReadTxn, Text, Transact};

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Append-to-durable latency per batch size: redb next to JetStream")]
struct Cli {
    /// NATS server URLs of a JetStream cluster (comma-separated); without it, redb only.
    #[arg(long)]
    cluster: Option<String>,
    /// Batch sizes (updates merged into one appended entry), comma-separated.
    #[arg(long, default_value = "1,8,64,512")]
    batches: String,
    /// Appends per engine and batch size.
    #[arg(long, default_value_t = 200)]
    rounds: usize,
    /// Append one JSON line per engine and batch size to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One engine and batch size.
#[derive(Debug, Serialize)]
struct Row {
    engine: &'static str,
    batch: usize,
    entry_bytes: usize,
    latency: LatencySummary,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let batches: Vec<usize> = cli
        .batches
        .split(',')
        .map(|n| n.trim().parse().context("--batches takes numbers"))
        .collect::<anyhow::Result<_>>()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let dir = tempfile::tempdir()?;
        let store = Store::open(&dir.path().join("db.redb"))?;
        let (redb, _writer, _task) = store::start(store, WriteMode::Durable, Metrics::new());
        let mut engines = vec![("redb", redb)];
        if let Some(url) = &cli.cluster {
            let settings = ClusterSettings {
                url: url.clone(),
                prefix: "COMMIT_LATENCY".into(),
                replicas: 3,
            };
            let jetstream = JetStreamEngine::connect(&settings).await?;
            engines.push(("jetstream", Storage::of(jetstream)));
        }
        println!("engine     batch  entry bytes   p50 ms   p99 ms   max ms");
        for &batch in &batches {
            let entry = batch_entry(batch);
            for (name, storage) in &engines {
                let latency = measure(storage, &entry, batch, cli.rounds).await?;
                println!(
                    "{name:<10} {batch:>5} {:>12} {:>8.2} {:>8.2} {:>8.2}",
                    entry.len(),
                    latency.p50_ms,
                    latency.p99_ms,
                    latency.max_ms
                );
                let row = Row {
                    engine: name,
                    batch,
                    entry_bytes: entry.len(),
                    latency,
                };
                if let Some(path) = &cli.json {
                    append_json(path, &row)?;
                }
            }
        }
        anyhow::Ok(())
    })
}

/// One entry as a room appends it: `batch` one-character edits merged into one update.
fn batch_entry(batch: usize) -> Vec<u8> {
    let doc = Doc::with_client_id(1);
    let text = doc.get_or_insert_text("text");
    let before = doc.transact().state_vector();
    for n in 0..batch {
        let mut txn = doc.transact_mut();
        let len = text.len(&txn);
        text.insert(&mut txn, len, if n % 2 == 0 { "a" } else { "b" });
    }
    doc.transact().encode_state_as_update_v1(&before)
}

/// `rounds` appends of `entry`, one at a time, each timed until durable.
async fn measure(
    storage: &Storage,
    entry: &[u8],
    batch: usize,
    rounds: usize,
) -> anyhow::Result<LatencySummary> {
    let doc = DocName::parse(&format!("commit-latency-{batch}"))?;
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        let committing = storage
            .log
            .append(doc.clone(), entry.to_vec(), Vec::new())
            .await?;
        committing.await?;
        samples.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    Ok(LatencySummary::from_micros(&mut samples))
}

fn append_json(path: &PathBuf, row: &Row) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(file, "{}", serde_json::to_string(row)?)?;
    Ok(())
}
