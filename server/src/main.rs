//! `aetherflow`: the relay binary. Parses the configuration, sets up logging, serves until
//! SIGINT or SIGTERM. `aetherflow merge` and `aetherflow inspect` run an offline tool instead.

use std::process::ExitCode;

use aetherflow_server::config::{Cli, Config};
use clap::Parser;

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Some(tool) = cli.tool.take() {
        return match aetherflow_server::tools::run(&tool) {
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
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("aetherflow: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("aetherflow stopped: {e:#}");
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
