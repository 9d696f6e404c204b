//! Version history benchmark (issue 18): an editing trace replayed through the relay, one
//! update per edit, then side by side in one run: the bytes stored with full history, by a
//! relay without history (`--plain BIN`, a build from before history existed) and of the raw
//! update stream; the time to list versions and to produce the content at a random entry
//! (p50/p99); and ingest time with history against without.
//!
//! ```text
//! cargo build --release -p aetherflow-server
//! cargo run --release -p aetherflow-benches --bin history -- [TRACE] [--plain BIN] [--samples N]
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aetherflow_benches::ingest::{RelayProcess, relay_binary, replay};
use aetherflow_benches::stats::LatencySummary;
use aetherflow_benches::trace;
use anyhow::{Context, bail};
use rand::{Rng, SeedableRng};

const DOC: &str = "history-bench";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        let at = args.iter().position(|a| a == flag)?;
        args.get(at + 1).cloned()
    };
    let trace_path = args
        .iter()
        .find(|a| a.ends_with(".json.gz"))
        .map(PathBuf::from);
    let plain = value("--plain").map(PathBuf::from);
    let samples: usize = value("--samples").map_or(Ok(200), |n| n.parse())?;
    let (trace, source) = trace::ingest_session(trace_path.as_deref())?;
    let (updates, end) = trace::to_updates(&trace);
    anyhow::ensure!(end == trace.end_content, "trace replay diverged");
    let raw: u64 = updates.iter().map(|u| u.len() as u64).sum();
    println!("trace: {source} ({} updates)", updates.len());
    println!("raw update stream        : {:>12} bytes", raw);

    let runtime = tokio::runtime::Runtime::new()?;
    let history = run_relay(&runtime, &relay_binary(), &updates, &end, Some(samples))?;
    let plain = match &plain {
        Some(bin) => Some(run_relay(&runtime, bin, &updates, &end, None)?),
        None => None,
    };
    println!(
        "stored, full history     : {:>12} bytes  ({:.2}x the raw stream)",
        history.stored,
        history.stored as f64 / raw as f64
    );
    if let Some(plain) = &plain {
        println!(
            "stored, without history  : {:>12} bytes  ({:.2}x the raw stream)",
            plain.stored,
            plain.stored as f64 / raw as f64
        );
    }
    let rate = |d: Duration| updates.len() as f64 / d.as_secs_f64();
    println!(
        "ingest, history          : {:>8.3} s  {:>10.0} updates/s",
        history.ingest.as_secs_f64(),
        rate(history.ingest)
    );
    if let Some(plain) = &plain {
        println!(
            "ingest, without history  : {:>8.3} s  {:>10.0} updates/s  (history/without: {:.2})",
            plain.ingest.as_secs_f64(),
            rate(plain.ingest),
            plain.ingest.as_secs_f64() / history.ingest.as_secs_f64()
        );
    }
    Ok(())
}

/// What one relay run measured.
struct Measured {
    ingest: Duration,
    stored: u64,
}

/// Replays the trace through `bin` on a fresh data directory; with `samples`, also times
/// listing versions and reading `samples` random past states; then stops it cleanly and
/// weighs its data directory.
fn run_relay(
    runtime: &tokio::runtime::Runtime,
    bin: &Path,
    updates: &[Vec<u8>],
    end: &str,
    samples: Option<usize>,
) -> anyhow::Result<Measured> {
    let dir = tempfile::tempdir()?;
    let relay = RelayProcess::start(bin, dir.path(), &[])?;
    let ingest = runtime.block_on(replay(&relay.addr, DOC, updates, end))?;
    if let Some(samples) = samples {
        browse(&relay.addr, samples)?;
    }
    relay.stop()?;
    Ok(Measured {
        ingest,
        stored: dir_bytes(dir.path())?,
    })
}

/// Times listing the versions (first page and every page) and reading the content (JSON)
/// at `samples` random entries.
fn browse(addr: &str, samples: usize) -> anyhow::Result<()> {
    let mut list = Vec::new();
    let mut versions = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let page = get(addr, &format!("/api/v1/docs/{DOC}/history?limit=1000"))?;
        list.push(start.elapsed());
        let page: serde_json::Value = serde_json::from_slice(&page)?;
        versions = page["versions"].as_array().cloned().unwrap_or_default();
    }
    let (Some(newest), Some(oldest)) = (versions.first(), versions.last()) else {
        bail!("the relay lists no version");
    };
    let number = |v: &serde_json::Value, key: &str| v[key].as_u64().context("a number");
    let last = number(newest, "id")?;
    let first = number(oldest, "id")? + 1 - number(oldest, "entries")?;
    println!(
        "versions                 : {} (entries {first}..={last})",
        versions.len()
    );
    report("list versions (1st page)", &mut list);
    for (form, what) in [
        ("content", "content (JSON) at random"),
        ("update", "content (binary) at random"),
    ] {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(18);
        let mut times = Vec::new();
        for _ in 0..samples {
            let seq = rng.random_range(first..=last);
            let start = Instant::now();
            let body = get(addr, &format!("/api/v1/docs/{DOC}/history/{seq}/{form}"))?;
            times.push(start.elapsed());
            anyhow::ensure!(!body.is_empty(), "no content at {seq}");
        }
        report(what, &mut times);
    }
    Ok(())
}

fn report(what: &str, times: &mut [Duration]) {
    let mut micros: Vec<u32> = times
        .iter()
        .map(|d| u32::try_from(d.as_micros()).unwrap_or(u32::MAX))
        .collect();
    let s = LatencySummary::from_micros(&mut micros);
    println!(
        "{what:<25}: p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  (n = {})",
        s.p50_ms, s.p99_ms, s.max_ms, s.count
    );
}

/// One HTTP/1.1 GET; the body of a 200 answer.
fn get(addr: &str, path: &str) -> anyhow::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no header end")?;
    let head = String::from_utf8_lossy(&response[..split]);
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    let body = response[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(&body));
    }
    Ok(body)
}

/// The body of a chunked response.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        out.extend_from_slice(&body[start..(start + size).min(body.len())]);
        body = &body[(start + size + 2).min(body.len())..];
    }
    out
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            println!(
                "  {:<40} {:>12} bytes",
                entry.file_name().to_string_lossy(),
                meta.len()
            );
            meta.len()
        };
    }
    Ok(total)
}
