//! The AetherFlow relay: Yjs documents over the y-websocket protocol, durable in redb.
//!
//! [`run`] serves until its shutdown future resolves, then stops accepting, closes every
//! WebSocket with a close frame (1001), lets every room commit what it holds, and returns
//! after a final fsync'd commit. The binary `aetherflow` (`main.rs`) only parses the
//! configuration, sets up logging and waits for SIGINT/SIGTERM.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use aetherflow_server::config::{Config, Settings};
//! let config = Config::from_settings(Settings::default())?;
//! let listener = tokio::net::TcpListener::bind(config.http_addr).await?;
//! aetherflow_server::run(config, listener, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

pub mod admin;
pub mod api;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod context;
pub mod error;
pub mod events;
pub mod forwarded;
pub mod heartbeat;
pub mod history;
pub mod hocuspocus;
pub mod http;
pub mod jetstream;
pub mod listener;
pub mod locks;
pub mod metrics;
pub mod offline;
pub mod presence;
pub mod quantum;
pub mod rate_limit;
pub mod reads;
pub mod registers;
pub mod rooms;
pub mod sessions;
pub mod storage;
pub mod store;
pub mod supervisor;
pub mod telemetry;
pub mod tools;
pub mod wall_clock;
pub mod web_demo;
pub mod webhooks;
pub mod websocket;

use std::future::Future;
use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::auth::Auth;
use crate::config::{Config, Durability};
use crate::context::AppState;
use crate::store::{Store, WriteMode};

/// Runs an offline tool (`aetherflow merge`, `inspect`, `check`); returns what to print.
/// `check` opens the store, which the `tools` module stays below, so it is dispatched here.
pub fn run_tool(tool: &tools::Tool) -> Result<String, tools::ToolError> {
    use tools::{Tool, ToolError};
    let (data_dir, repair) = match tool {
        Tool::Check { data_dir, repair } => (data_dir, repair),
        Tool::History { doc, data_dir } => return offline::versions(data_dir, doc),
        Tool::Export {
            doc,
            at,
            output,
            data_dir,
        } => return offline::export(data_dir, doc, *at, output),
        _ => return tools::run(tool),
    };
    let path = data_dir.join("aetherflow.redb");
    let report = store::check::check(&path, *repair).map_err(|e| ToolError::Check {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if report.is_sound() {
        Ok(format!("{}\n{report}", path.display()))
    } else {
        Err(ToolError::Damaged(format!("{}\n{report}", path.display())))
    }
}

/// Serves the relay on `listener` until `shutdown` resolves, then shuts down cleanly.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tls = match config.tls.clone() {
        Some(files) => {
            let (certificate, summary) = listener::tls::Certificate::load(files)
                .context("cannot use --tls-cert/--tls-key")?;
            summary.log(
                certificate.cert_path(),
                "TLS on: serving https:// and wss:// (the files are re-read when they change, and on SIGHUP)",
            );
            Some(Arc::new(certificate))
        }
        None => None,
    };
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let metrics = metrics::Metrics::new();
    let Opened {
        storage,
        presence,
        cluster,
        embedded,
        events,
        locks,
        remote_events,
        writer_task,
    } = open_storage(&config, &metrics).await?;
    let auth = Auth::new(
        config.jwt_secret.as_deref(),
        config.jwt_public_key.as_deref(),
    )?;
    if auth.is_open() {
        warn!(
            addr = %config.http_addr,
            "RUNNING OPEN: no --jwt-secret or --jwt-public-key, so anyone who can reach this \
             loopback address can read and write every document"
        );
    }
    if config.jwt_secret_is_weak() {
        warn!(
            "WEAK --jwt-secret: shorter than {} bytes, so it may be guessed and tokens forged; \
             accepted only because the relay listens on loopback",
            config::MIN_JWT_SECRET_BYTES
        );
    }

    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    // Bound before the routes are built: `GET /api/v1/quantum` serves its address and key.
    let quantum = bind_quantum(&config).await?;
    let quantum_info = quantum
        .as_ref()
        .map(|(endpoint, identity)| context::QuantumInfo {
            addr: endpoint.local_addr(),
            public_key: identity.public,
        });
    let foundation = context::Foundation {
        storage,
        presence,
        cluster,
        embedded,
        events,
        locks,
        metrics,
        auth,
        tracker: tracker.clone(),
        shutdown: token.clone(),
    };
    let state = AppState::build(&config, foundation, quantum_info);
    if let Some(remote) = remote_events {
        let events = state.sessions.rooms.events().clone();
        cluster::Cluster::follow(remote, events, state.sessions.rooms.clone());
    }
    if let Some(hooks) = &state.webhooks {
        let metrics = state.metrics.webhooks().clone();
        tracker.spawn(webhooks::delivery::run(
            hooks.clone(),
            metrics,
            token.clone(),
        ));
        let events = state.sessions.rooms.events().clone();
        tracker.spawn(hooks.clone().record_lock_events(events, token.clone()));
    }
    // Sessions end when their tokens expire: one task for all of them.
    tracker.spawn(state.registry.clone().close_expired(token.clone()));
    let quantum_ctx = quantum::QuantumContext {
        app: state.clone(),
        max_documents: config.quantum_max_documents,
    };
    let metrics = state.metrics.clone();
    let app = http::router(state);

    let addr = listener.local_addr()?;
    info!(%addr, durability = ?config.durability, data_dir = %config.data_dir.display(), "relay ready");
    println!("aetherflow ready: {}://{addr}", config.http_scheme());
    if let Some((endpoint, identity)) = quantum {
        let quantum_addr = endpoint.local_addr();
        let key = identity.public_hex();
        info!(addr = %quantum_addr, public_key = %key, "quantum ready");
        // After the ready line, which tools read as the first line; some stop reading after
        // it, so a closed stdout must not be fatal (println! would panic).
        let _ = writeln!(
            std::io::stdout(),
            "aetherflow quantum ready: udp://{quantum_addr}\naetherflow quantum key: {key}"
        );
        tracker.spawn(quantum::serve(endpoint, quantum_ctx));
    } else {
        // It holds a handle on the rooms and so on the store writer, whose final commit
        // shutdown waits for.
        drop(quantum_ctx);
    }

    let signal = token.clone();
    tokio::spawn(async move {
        shutdown.await;
        info!("shutting down: closing connections and flushing");
        signal.cancel();
    });
    let settings = listener::ListenerSettings {
        max_connections: config.max_connections,
        header_timeout: config.http_header_timeout,
    };
    if let Some(certificate) = &tls {
        tracker.spawn(listener::tls::watch(certificate.clone(), token.clone()));
    }
    listener::serve(listener, app, settings, tls, metrics, token.clone()).await;

    // Sessions send their close frames and leave; rooms commit and unload.
    tracker.close();
    tracker.wait().await;
    // The router (and with it the last writer handle) is gone: the writer does a final
    // fsync'd commit and stops.
    if let Some(writer_task) = writer_task {
        writer_task.await.context("store writer failed")?;
    }
    info!("shutdown complete");
    Ok(())
}

/// Opens the storage: cluster mode's JetStream when `--cluster` is set, else the redb file in
/// the data directory, checked first (unless `--skip-integrity-check`), with its writer task.
async fn open_storage(config: &Config, metrics: &metrics::Metrics) -> anyhow::Result<Opened> {
    if let Some(cluster) = &config.cluster {
        let opened = cluster::Cluster::open(cluster)
            .await
            .context("cannot reach the cluster's JetStream")?;
        info!(prefix = %cluster.prefix, replicas = cluster.replicas, "cluster mode: documents in JetStream");
        return Ok(Opened {
            storage: opened.storage,
            presence: Some(opened.presence),
            cluster: Some(opened.link),
            embedded: None,
            events: opened.events,
            locks: opened.locks,
            remote_events: Some(opened.remote),
            writer_task: None,
        });
    }
    let path = config.database_path();
    let skip_check = config.skip_integrity_check;
    let (store, integrity) = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let report = match skip_check {
            true => None,
            false => store::check::at_start(&path)?,
        };
        if let Some(report) = &report {
            report.log_at_start(started.elapsed());
        }
        Store::open(&path).map(|store| (store, report))
    })
    .await??;
    let mode = match config.durability {
        Durability::Durable => WriteMode::Durable,
        Durability::Relaxed => WriteMode::Relaxed {
            flush: config.relaxed_flush,
        },
    };
    let store = store.with_metrics(metrics.clone());
    if let Some(report) = &integrity {
        metrics.damaged_at_start(report.damaged_documents().len());
    }
    let (storage, writer, writer_task) = store::start(store.clone(), mode, metrics.clone());
    let events = events::Events::new();
    Ok(Opened {
        storage,
        presence: None,
        cluster: None,
        embedded: Some((store, writer)),
        locks: locks::Locks::local(events.clone()),
        events,
        remote_events: None,
        writer_task: Some(writer_task),
    })
}

/// The storage [`open_storage`] opened.
struct Opened {
    storage: storage::Storage,
    /// Presence shared with the other relays (cluster mode).
    presence: Option<Arc<dyn presence::Presence>>,
    /// The link to the other relays (cluster mode).
    cluster: Option<jetstream::presence::NatsPresence>,
    /// The embedded engine's store and writer (for the webhooks' outbox); `None` in cluster
    /// mode.
    embedded: Option<(Store, store::StoreWriter)>,
    /// The event bus (cluster mode: shared with the other relays).
    events: events::Events,
    /// Document locks (cluster mode: in JetStream, across relays).
    locks: locks::Locks,
    /// The other relays' events, delivered once the rooms exist (cluster mode).
    remote_events: Option<jetstream::events::RemoteEvents>,
    /// The embedded engine's writer task, awaited at shutdown for its final commit.
    writer_task: Option<tokio::task::JoinHandle<()>>,
}

/// Loads (or on first start generates) the relay's Quantum key and binds the listener. The
/// default address is best effort (another relay on this machine may hold it); an explicit
/// one must bind. A key that cannot be loaded is fatal: clients pin it.
async fn bind_quantum(
    config: &Config,
) -> anyhow::Result<
    Option<(
        aetherflow_quantum::QuantumEndpoint,
        aetherflow_quantum::crypto::Keypair,
    )>,
> {
    let Some(addr) = config.quantum_addr else {
        return Ok(None);
    };
    let identity = quantum::identity::load_or_create(config)?;
    let driver = quantum::driver_config(config, &identity);
    match aetherflow_quantum::QuantumEndpoint::bind(addr, driver).await {
        Ok(endpoint) => Ok(Some((endpoint, identity))),
        Err(e) if !config.quantum_required => {
            warn!(%addr, error = %e, "Quantum listener not started (the default address is unavailable); pass --quantum-addr to choose one");
            Ok(None)
        }
        Err(e) => Err(anyhow::anyhow!("cannot listen for Quantum on {addr}: {e}")),
    }
}
