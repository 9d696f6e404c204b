//! Replaying an editing trace through a relay process: start a relay binary on a data
//! directory, send every update from one y-websocket client as fast as it goes, and time
//! until a second, already-synced client has the trace's end state. Used by `relay-ingest`
//! and `history`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::client::Target;
use crate::wire::Dialect;

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

/// Sends `updates` to document `doc` of the relay at `addr` from one y-websocket client and
/// times until a second client, synced before the clock starts, holds their end state (text
/// `end`): the load generator's ingest scenario on one relay.
pub async fn replay(
    addr: &str,
    doc: &str,
    updates: &[Vec<u8>],
    end: &str,
) -> anyhow::Result<Duration> {
    let target = Target {
        url_template: format!("ws://{addr}/ws/{{doc}}"),
        dialect: Dialect::YWebsocket,
        handshake_timeout: Duration::from_secs(30),
    };
    let limit = Duration::from_secs(120);
    let report = crate::scenario::ingest::run(&target, &target, doc, updates, end, limit).await?;
    Ok(Duration::from_secs_f64(report.seconds))
}
