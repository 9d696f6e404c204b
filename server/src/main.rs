//! `aetherflow`: the relay binary. Parses the configuration, sets up logging, serves until
//! SIGINT or SIGTERM. `aetherflow merge` and `aetherflow inspect` run an offline tool instead.

use std::process::ExitCode;

use aetherflow_server::config::{Cli, Config};

/// Most threads for blocking store work (document lookups, loads, commits). tokio's default,
/// 512, let a burst of connections start a thread per concurrent lookup (50 or so for 5,000
/// connections arriving at once), each with its own malloc arena and stack kept resident
/// after the burst: about 110 bytes more RSS per idle connection (issue 7). The work is
/// short and CPU- or disk-bound, so more threads than this do not finish it sooner.
const BLOCKING_THREADS: usize = 8;

fn main() -> ExitCode {
    let mut cli = Cli::parse_with_defaults();
    if let Some(tool) = cli.tool.take() {
        return match aetherflow_server::run_tool(&tool) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("aetherflow: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::from_cli(cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("aetherflow: {e}");
            return ExitCode::from(2);
        }
    };
    // Held to the end: dropping it flushes exported traces (with the `otel` feature).
    let _telemetry = aetherflow_server::telemetry::init(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("aetherflow: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The relay runs in a task on the runtime's workers, not in `block_on` on this thread:
    // there the accept loop would make each connection's first allocations in the main
    // thread's malloc arena, next to the workers' arenas that hold the rest, and glibc keeps
    // the freed handshake buffers of every arena resident. One arena fewer with connection
    // churn was 200 to 280 bytes less RSS per idle connection (issue 7; benches/RESULTS.md).
    match runtime.block_on(async { tokio::spawn(serve(config)).await }) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            tracing::error!("aetherflow stopped: {e:#}");
            ExitCode::FAILURE
        }
        Err(e) => {
            tracing::error!("aetherflow stopped: the relay task failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.http_addr))?;
    aetherflow_server::run(config, listener, shutdown_signal()).await
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
