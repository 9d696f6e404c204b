//! The relay's context: what every route and session needs, built once in
//! [`crate::run`] and passed down, and the client-address and admission rules applied to every
//! connection that reaches it over HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use aetherflow_crdt::protocol::Limits;
use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap, HeaderName};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::Admin;
use crate::auth::Auth;
use crate::config::Config;
use crate::error::AppError;
use crate::events::Events;
use crate::forwarded::TrustedProxies;
use crate::locks::Locks;
use crate::metrics::Metrics;
use crate::metrics::Rejection;
use crate::rate_limit::{ConnectionLimiter, Rate};
use crate::reads::HeavyReads;
use crate::registers::Registers;
use crate::rooms::RoomSettings;
use crate::rooms::Rooms;
use crate::sessions::Registry;
use crate::sessions::cluster::ClusterSessions;
use crate::storage::Storage;
use crate::store::StoreWriter;
use crate::webhooks::{WebhookSettings, Webhooks};

/// What [`AppState::build`] starts from: the storage, the metrics, token verification, and the
/// task tracker and shutdown signal every task of the relay shares.
pub struct Foundation {
    /// The storage engine, seen through its interfaces.
    pub storage: Storage,
    /// Presence shared with the other relays (cluster mode).
    pub presence: Option<Arc<dyn crate::presence::Presence>>,
    /// This relay's link to the other relays of its cluster (cluster mode), for the admin's
    /// cluster-wide view of sessions.
    pub cluster: Option<crate::jetstream::presence::NatsPresence>,
    /// The embedded engine's store and writer, which keep the webhooks' outbox in the same
    /// commits as the changes; `None` in cluster mode, which has no webhooks yet.
    pub embedded: Option<(crate::store::Store, StoreWriter)>,
    /// The event bus (in cluster mode shared with the other relays).
    pub events: Events,
    /// Document locks (in cluster mode kept in JetStream), announcing on `events`.
    pub locks: Locks,
    /// The relay's metrics.
    pub metrics: Metrics,
    /// Token verification.
    pub auth: Auth,
    /// Tracks every task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Cancelled when the relay shuts down.
    pub shutdown: CancellationToken,
}

#[cfg(test)]
impl Foundation {
    /// An open single relay (no tokens) on `storage` and the embedded `store` with its
    /// `writer`, for tests of the router. Needs a runtime.
    pub(crate) fn for_tests(
        storage: Storage,
        store: crate::store::Store,
        writer: StoreWriter,
    ) -> Foundation {
        let events = Events::new();
        Foundation {
            storage,
            presence: None,
            cluster: None,
            embedded: Some((store, writer)),
            locks: Locks::local(events.clone()),
            events,
            metrics: Metrics::new(),
            auth: Auth::new(None, None).expect("an open relay"),
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        }
    }
}

/// Everything a session of any transport needs besides its socket.
#[derive(Clone)]
pub struct SessionContext {
    /// The room registry.
    pub rooms: Rooms,
    /// Decoding limits.
    pub limits: Limits,
    /// Cancelled when the relay shuts down.
    pub shutdown: CancellationToken,
    /// Interval between pings: one unanswered ping shows the session IDLE, a second closes it.
    /// A write still pending at three ticks in a row closes it too (1013).
    pub ping_interval: Duration,
    /// Data messages read per second from a session (`None`: unlimited); over it the relay
    /// stops reading the socket until the bucket refills (see
    /// the WebSocket session's hold limit).
    pub message_rate: Option<Rate>,
    /// Bytes of frames a session's outbox may hold; over it the session is closed with 1013.
    pub outbox_max_bytes: usize,
}

/// Shared state of every route.
#[derive(Clone)]
pub struct AppState {
    /// What sessions need.
    pub sessions: SessionContext,
    /// Tracks session tasks so shutdown can wait for their close frames.
    pub tracker: TaskTracker,
    /// Source of connection ids.
    pub next_conn: Arc<AtomicU64>,
    /// Token verification.
    pub auth: Auth,
    /// Every live session, for the admin routes.
    pub registry: Registry,
    /// Every relay's sessions (`scope=cluster`); `None` on a single relay.
    pub cluster_sessions: Option<Arc<dyn ClusterSessions>>,
    /// Per-address WebSocket connection limit.
    pub connections: ConnectionLimiter,
    /// Admin key and token minting.
    pub admin: crate::admin::Admin,
    /// Document locks (one relay: in memory, a restart frees them; cluster mode: in
    /// JetStream).
    pub locks: crate::locks::Locks,
    /// The storage engine: documents' logs, registers and catalog.
    pub storage: Storage,
    /// Register documents: the one write path of every transport.
    pub registers: crate::registers::Registers,
    /// What `/metrics` serves.
    pub metrics: crate::metrics::Metrics,
    /// Reverse proxies whose forwarding headers name the client (`--trusted-proxies`).
    pub proxies: TrustedProxies,
    /// The gate of heavy document reads (`GET .../content`, `GET .../update`).
    pub reads: crate::reads::HeavyReads,
    /// The Quantum listener's address and public key, for `GET /api/v1/quantum`; `None`
    /// when Quantum is off.
    pub quantum: Option<QuantumInfo>,
    /// Most documents one Hocuspocus connection may hold open (`--hocuspocus-max-documents`).
    pub hocuspocus_max_documents: usize,
    /// Webhook endpoints and their outbox (`/api/v1/webhooks`); `None` in cluster mode,
    /// whose engine keeps no outbox yet.
    pub webhooks: Option<Webhooks>,
}

/// The listener's address and key.
#[derive(Debug, Clone, Copy)]
pub struct QuantumInfo {
    /// The UDP address the listener is bound to.
    pub addr: SocketAddr,
    /// The relay's Noise static public key.
    pub public_key: [u8; 32],
}

impl AppState {
    /// The one context of a relay configured by `config`: rooms, locks, the register
    /// service, the session registry and the per-address limits, built on `foundation`.
    /// `quantum` is the Quantum listener's address and key, if it runs.
    pub fn build(
        config: &Config,
        foundation: Foundation,
        quantum: Option<QuantumInfo>,
    ) -> AppState {
        let Foundation {
            storage,
            presence,
            cluster,
            embedded,
            events,
            locks,
            metrics,
            auth,
            tracker,
            shutdown,
        } = foundation;
        let registry = Registry::with_metrics(&metrics);
        let cluster_sessions = cluster.map(|link| {
            let sessions = crate::jetstream::admin::NatsSessions::start(link, registry.clone());
            Arc::new(sessions) as Arc<dyn ClusterSessions>
        });
        let webhooks = embedded
            .map(|(store, writer)| Webhooks::new(store, writer, WebhookSettings::from(config)));
        let rooms = Rooms::new(
            storage.clone(),
            presence,
            events,
            RoomSettings::from(config),
            tracker.clone(),
            shutdown.clone(),
            metrics.clone(),
        );
        let registers = Registers::new(
            storage.clone(),
            rooms.events().clone(),
            locks.clone(),
            auth.clone(),
        );
        AppState {
            sessions: SessionContext {
                rooms,
                limits: Limits {
                    max_message_bytes: config.max_message_bytes,
                },
                shutdown,
                ping_interval: config.ping_interval,
                message_rate: config.message_rate,
                outbox_max_bytes: config.outbox_max_bytes,
            },
            tracker,
            next_conn: Arc::new(AtomicU64::new(0)),
            auth,
            registry,
            cluster_sessions,
            connections: ConnectionLimiter::new(config.connect_rate),
            admin: Admin::from_config(config),
            locks,
            registers,
            storage,
            metrics,
            proxies: config.trusted_proxies.clone(),
            reads: HeavyReads::new(config.max_content_reads, config.max_content_json_bytes),
            quantum,
            hocuspocus_max_documents: config.hocuspocus_max_documents,
            webhooks,
        }
    }
}

/// The client's address: the TCP peer's, or for a peer that is a trusted proxy the one its
/// `Forwarded` / `X-Forwarded-For` headers name (see [`crate::forwarded`]). `None` when served
/// without connect info (a router in a test).
pub(crate) fn client_addr(
    proxies: &TrustedProxies,
    extensions: &Extensions,
    headers: &HeaderMap,
) -> Option<SocketAddr> {
    let ConnectInfo(peer) = extensions.get::<ConnectInfo<SocketAddr>>().copied()?;
    if !proxies.trusts(peer.ip()) {
        return Some(peer);
    }
    let (Ok(forwarded), Ok(x_forwarded_for)) = (
        joined(headers, &axum::http::header::FORWARDED),
        joined(headers, &HeaderName::from_static("x-forwarded-for")),
    ) else {
        // Not text: malformed, so the proxy's own address.
        return Some(peer);
    };
    let client = proxies.client_addr(peer, forwarded.as_deref(), x_forwarded_for.as_deref());
    if client != peer {
        tracing::trace!(%peer, %client, "client address from a trusted proxy's headers");
    }
    Some(client)
}

/// Every value of header `name`, joined with commas as one list; `Err` if one is not text.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Result<Option<String>, ()> {
    let mut values = headers.get_all(name).iter().peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    let texts = values
        .map(|value| value.to_str().map_err(|_| ()))
        .collect::<Result<Vec<&str>, ()>>()?;
    Ok(Some(texts.join(",")))
}

/// Applies the per-address connection limit to a WebSocket request, by client address (see
/// [`client_addr`]); returns that address, or 429 with the wait. Served without connect info
/// (a router in a test), the address is unknown (`0.0.0.0:0`) and unlimited.
pub(crate) fn admit_connection(
    state: &AppState,
    extensions: &Extensions,
    headers: &HeaderMap,
) -> Result<SocketAddr, AppError> {
    let Some(remote) = client_addr(&state.proxies, extensions, headers) else {
        return Ok(SocketAddr::from(([0, 0, 0, 0], 0)));
    };
    if let Err(wait) = state.connections.admit(remote.ip(), Instant::now()) {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        state.metrics.reject(Rejection::ConnectionRate);
        return Err(AppError::RateLimited(secs.max(1)));
    }
    Ok(remote)
}
