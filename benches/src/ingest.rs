//! Replaying an editing trace through a relay process: start a relay binary on a data
//! directory, send every update from one y-websocket client as fast as it goes, and time
//! until a second, already-synced client has the trace's end state. Used by `relay-ingest`
//! and `history`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aetherflow_crdt::protocol::{Limits, Message, SyncMessage, encode_sync_update};
use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as Frame;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, Transact, Update};

/// A relay process, killed when dropped unless [`RelayProcess::stop`]ped first.
pub struct RelayProcess {
    child: std::process::Child,
    /// Its HTTP address, `host:port`.
    pub addr: String,
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RelayProcess {
    /// Starts `bin` on `data_dir` with `args` (after the benchmark's own: any port, no
    /// per-session message rate limit) and waits for its ready line.
    pub fn start(bin: &Path, data_dir: &Path, args: &[&str]) -> anyhow::Result<RelayProcess> {
        let mut child = Command::new(bin)
            .args(["--http-addr", "127.0.0.1:0"])
            // A trace replayed as fast as possible is far over any sane per-session limit.
            .args(["--message-rate-per-sec", "0"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
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
        let mut relay = RelayProcess {
            child,
            addr: String::new(),
        };
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        relay.addr = line
            .trim()
            .strip_prefix("aetherflow ready: http://")
            .with_context(|| format!("unexpected relay output: {line}"))?
            .to_owned();
        Ok(relay)
    }

    /// Stops the relay with SIGTERM (a clean shutdown: everything flushed) and waits.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        self.child.wait()?;
        Ok(())
    }
}

/// The relay binary: `AETHERFLOW_BIN`, else this workspace's release build.
pub fn relay_binary() -> PathBuf {
    std::env::var_os("AETHERFLOW_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/aetherflow")
        })
}

/// Sends `updates` to document `doc` of the relay at `addr` from one client and times until
/// a second client, synced before the clock starts, holds their end state (text `end`).
pub async fn replay(
    addr: &str,
    doc: &str,
    updates: &[Vec<u8>],
    end: &str,
) -> anyhow::Result<Duration> {
    let url = format!("ws://{addr}/ws/{doc}");
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
