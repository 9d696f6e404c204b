//! Load generator for y-websocket-compatible servers (AetherFlow, the y-websocket reference
//! server, Hocuspocus). It only drives clients: start the server yourself (or use
//! `benches/anchors/run.sh`, which starts each server in turn and runs every scenario).
//!
//! ```text
//! cargo run --release -p aetherflow-benches --bin loadgen -- \
//!     --url 'ws://127.0.0.1:8080/ws/{doc}' --server aetherflow fanout --readers 1000 --rate 20
//! ```
//!
//! With `--reader-url` the readers of `ingest`, `fanout` and `mixed` connect there and the
//! writers to `--url`: one writer on relay A, its readers on relay B of a cluster
//! (`benches/anchors/cluster.sh`); `failover` needs it (B is the survivor).
//!
//! Each run prints a human-readable summary and, with `--json FILE`, appends one JSON line
//! `{server, scenario, params, report}` for the report generator.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use aetherflow_benches::client::{Target, loopback_sources};
use aetherflow_benches::scenario::{failover, hostile, idle, ingest, traffic};
use aetherflow_benches::trace;
use aetherflow_benches::wire::Dialect;
use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, Transact, Update};

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Load generator for y-websocket-compatible servers")]
struct Cli {
    /// WebSocket URL; `{doc}` is replaced by the document name.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws/{doc}")]
    url: String,
    /// WebSocket URL the readers of `ingest`, `fanout` and `mixed` connect to (another relay
    /// of the same cluster), and the survivor of `failover`; default: `--url`.
    #[arg(long)]
    reader_url: Option<String>,
    /// The server's framing.
    #[arg(long, value_enum, default_value_t = DialectArg::YWebsocket)]
    dialect: DialectArg,
    /// Label of the server in the JSON output.
    #[arg(long, default_value = "server")]
    server: String,
    /// Scenario name in the JSON output (default: the subcommand's name).
    #[arg(long)]
    label: Option<String>,
    /// Append the result as one JSON line to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Spread connections over loopback source addresses 127.0.0.1..=127.0.0.N.
    #[arg(long, default_value_t = 1)]
    sources: u8,
    /// Concurrent handshakes while connecting.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds a handshake and initial sync may take.
    #[arg(long, default_value_t = 30)]
    handshake_timeout: u64,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DialectArg {
    YWebsocket,
    Hocuspocus,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Replay an editing trace from one client to another through the server.
    Ingest {
        /// Trace file (`.json.gz`); default: the shared automerge-paper trace, or where it is
        /// absent a generated session of the same length (printed on stderr).
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Replay only the first N updates.
        #[arg(long)]
        updates: Option<usize>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        limit_secs: u64,
    },
    /// One document, one writer at `rate` updates/s, `readers` synced readers.
    Fanout {
        /// Readers.
        #[arg(long, default_value_t = 1000)]
        readers: usize,
        /// Updates per second from the writer.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Seconds of sending.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Seconds readers keep listening after the last update.
        #[arg(long, default_value_t = 3)]
        grace: u64,
    },
    /// Many documents, a few writers and several readers each.
    Mixed {
        /// Documents.
        #[arg(long, default_value_t = 100)]
        docs: usize,
        /// Writers per document.
        #[arg(long, default_value_t = 2)]
        writers: usize,
        /// Readers per document.
        #[arg(long, default_value_t = 10)]
        readers: usize,
        /// Updates per second from each writer.
        #[arg(long, default_value_t = 5.0)]
        rate: f64,
        /// Seconds of sending.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Seconds readers keep listening after the last update.
        #[arg(long, default_value_t = 3)]
        grace: u64,
    },
    /// The memory attacks of issue 14, one after the other, with the server's peak memory:
    /// a silent reader under large broadcasts, a presence flood, concurrent large JSON reads,
    /// one update of many small map entries.
    Hostile {
        /// Server process id, for its resident memory (`/proc/PID/status`).
        #[arg(long)]
        server_pid: u32,
        /// Large updates sent to the silent reader's document.
        #[arg(long, default_value_t = 48)]
        slow_reader_updates: usize,
        /// Size of each, bytes.
        #[arg(long, default_value_t = 1024 * 1024)]
        slow_reader_update_bytes: usize,
        /// Presence updates, each with a new client id.
        #[arg(long, default_value_t = 200)]
        presence_updates: usize,
        /// Size of each presence state, bytes.
        #[arg(long, default_value_t = 512 * 1024)]
        presence_state_bytes: usize,
        /// Map entries of the document read as JSON.
        #[arg(long, default_value_t = 90_000)]
        content_entries: usize,
        /// `GET .../content` requests at once.
        #[arg(long, default_value_t = 8)]
        content_requests: usize,
        /// Map entries of the one large update.
        #[arg(long, default_value_t = 850_000)]
        update_entries: usize,
    },
    /// Failover storm: connections alternately on `--url` (instance A) and `--reader-url`
    /// (instance B) of one cluster, an update through A on every document, then A killed with
    /// SIGKILL and its clients reconnected to B: time until all are synced, updates lost.
    Failover {
        /// Connections in all, half on each instance.
        #[arg(long, default_value_t = 5000)]
        connections: usize,
        /// Documents they spread over.
        #[arg(long, default_value_t = 500)]
        docs: usize,
        /// Characters of each document's update through A.
        #[arg(long, default_value_t = 64)]
        seed_chars: usize,
        /// Process id of instance A, killed with SIGKILL.
        #[arg(long)]
        victim_pid: u32,
        /// Seconds a client on B may take to see its document's update through A.
        #[arg(long, default_value_t = 10)]
        seen_timeout: u64,
    },
    /// Hold many synced connections open and measure the server's memory.
    Idle {
        /// Connections.
        #[arg(long, default_value_t = 5000)]
        connections: usize,
        /// Documents they spread over.
        #[arg(long, default_value_t = 500)]
        docs: usize,
        /// Documents each connection holds open (more than 1 needs --dialect hocuspocus).
        #[arg(long, default_value_t = 1)]
        docs_per_connection: usize,
        /// Server process id, for its resident memory (`/proc/PID/status`).
        #[arg(long)]
        server_pid: Option<u32>,
        /// Seconds to wait after connecting before measuring.
        #[arg(long, default_value_t = 2)]
        settle: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let target = Target {
        url_template: cli.url.clone(),
        dialect: match cli.dialect {
            DialectArg::YWebsocket => Dialect::YWebsocket,
            DialectArg::Hocuspocus => Dialect::Hocuspocus,
        },
        handshake_timeout: Duration::from_secs(cli.handshake_timeout),
    };
    let reader = Target {
        url_template: cli.reader_url.clone().unwrap_or_else(|| cli.url.clone()),
        ..target.clone()
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let (name, params, report) = runtime.block_on(run(&cli, &target, &reader))?;
    let name = cli.label.as_deref().unwrap_or(name);
    println!(
        "{} {name}: {}",
        cli.server,
        serde_json::to_string_pretty(&report)?
    );
    if let Some(path) = &cli.json {
        let line = serde_json::json!({
            "server": cli.server, "scenario": name, "params": params, "report": report,
        });
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("open {}", path.display()))?;
        writeln!(file, "{line}")?;
    }
    Ok(())
}

type Outcome = (&'static str, serde_json::Value, serde_json::Value);

/// Runs the chosen scenario; `reader` is where readers connect, `target` everything else.
async fn run(cli: &Cli, target: &Target, reader: &Target) -> anyhow::Result<Outcome> {
    let sources = if cli.sources > 1 {
        loopback_sources(cli.sources)
    } else {
        Vec::new()
    };
    let traffic_params =
        |docs, writers_per_doc, readers_per_doc, rate, duration, grace| traffic::TrafficParams {
            docs,
            writers_per_doc,
            readers_per_doc,
            rate,
            duration: Duration::from_secs(duration),
            grace: Duration::from_secs(grace),
            concurrency: cli.concurrency,
            sources: sources.clone(),
        };
    Ok(match &cli.scenario {
        Scenario::Ingest {
            trace,
            updates,
            limit_secs,
        } => {
            let (session, source) = trace::ingest_session(trace.as_deref())?;
            eprintln!("ingest: replaying {source}");
            let (updates, end) = session_updates(&session, *updates)?;
            let limit = Duration::from_secs(*limit_secs);
            let report = ingest::run(target, reader, "ingest", &updates, &end, limit).await?;
            let name = trace::source_name(&source);
            let params = serde_json::json!({ "trace": name, "updates": updates.len() });
            ("ingest", params, serde_json::to_value(report)?)
        }
        Scenario::Fanout {
            readers,
            rate,
            duration,
            grace,
        } => {
            let p = traffic_params(1, 1, *readers, *rate, *duration, *grace);
            let report = traffic::run(target, reader, &p).await?;
            let params =
                serde_json::json!({ "readers": readers, "rate": rate, "duration": duration });
            ("fanout", params, serde_json::to_value(report)?)
        }
        Scenario::Mixed {
            docs,
            writers,
            readers,
            rate,
            duration,
            grace,
        } => {
            let p = traffic_params(*docs, *writers, *readers, *rate, *duration, *grace);
            let report = traffic::run(target, reader, &p).await?;
            let params = serde_json::json!({
                "docs": docs, "writers": writers, "readers": readers, "rate": rate, "duration": duration,
            });
            ("mixed", params, serde_json::to_value(report)?)
        }
        Scenario::Hostile {
            server_pid,
            slow_reader_updates,
            slow_reader_update_bytes,
            presence_updates,
            presence_state_bytes,
            content_entries,
            content_requests,
            update_entries,
        } => {
            let p = hostile::HostileParams {
                server_pid: *server_pid,
                slow_reader_updates: *slow_reader_updates,
                slow_reader_update_bytes: *slow_reader_update_bytes,
                presence_updates: *presence_updates,
                presence_state_bytes: *presence_state_bytes,
                content_entries: *content_entries,
                content_requests: *content_requests,
                update_entries: *update_entries,
            };
            let report = hostile::run(target, &p).await?;
            let params = serde_json::json!({
                "slow_reader": [slow_reader_updates, slow_reader_update_bytes],
                "presence": [presence_updates, presence_state_bytes],
                "content": [content_entries, content_requests],
                "update_entries": update_entries,
            });
            ("hostile", params, serde_json::to_value(report)?)
        }
        Scenario::Failover {
            connections,
            docs,
            seed_chars,
            victim_pid,
            seen_timeout,
        } => {
            anyhow::ensure!(
                cli.reader_url.is_some(),
                "failover needs --reader-url: the instance that survives"
            );
            let p = failover::FailoverParams {
                connections: *connections,
                docs: *docs,
                seed_chars: *seed_chars,
                victim_pid: *victim_pid,
                seen_timeout: Duration::from_secs(*seen_timeout),
                concurrency: cli.concurrency,
                sources: sources.clone(),
            };
            let report = failover::run(target, reader, &p).await?;
            let params = serde_json::json!({ "connections": connections, "docs": docs });
            ("failover", params, serde_json::to_value(report)?)
        }
        Scenario::Idle {
            connections,
            docs,
            docs_per_connection,
            server_pid,
            settle,
        } => {
            let p = idle::IdleParams {
                connections: *connections,
                docs: *docs,
                docs_per_connection: *docs_per_connection,
                settle: Duration::from_secs(*settle),
                server_pid: *server_pid,
                concurrency: cli.concurrency,
                sources: sources.clone(),
            };
            let report = idle::run(target, &p).await?;
            let params = serde_json::json!({
                "connections": connections,
                "docs": docs,
                "docs_per_connection": docs_per_connection,
            });
            ("idle", params, serde_json::to_value(report)?)
        }
    })
}

/// The session's updates, cut to the first `limit` if given, and the text they produce.
fn session_updates(
    session: &aetherflow_editing::EditTrace,
    limit: Option<usize>,
) -> anyhow::Result<(Vec<Vec<u8>>, String)> {
    let (mut updates, mut end) = trace::to_updates(session);
    if let Some(limit) = limit.filter(|&l| l < updates.len()) {
        updates.truncate(limit);
        let doc = Doc::new();
        let text = doc.get_or_insert_text("text");
        for bytes in &updates {
            doc.transact_mut().apply_update(Update::decode_v1(bytes)?)?;
        }
        end = text.get_string(&doc.transact());
    }
    Ok((updates, end))
}
