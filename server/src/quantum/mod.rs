//! The relay's Quantum listener: one reliable-UDP connection carries many documents, each
//! message an [`Envelope`] naming its document (see [`aetherflow_crdt::envelope`]).
//!
//! A connection starts with the transport's Noise handshake, which proves the relay holds the
//! static key clients pin ([`identity`]); everything after it, the `hello` (client version
//! and token) first, travels sealed. The client then subscribes to
//! documents. A subscription to a Yjs document joins the document's room exactly as a
//! WebSocket session does (the room greets with sync step 1 and answers step 1s after the
//! updates sent before them), and the room's frames come back wrapped in `yjs` envelopes.
//!
//! A subscription to a register document (`lww`, `manual`) speaks the live channel's
//! protocol (`/api/v1/docs/{name}/live`) in envelopes, see [`registers`]: first
//! `event "state"` (`{"type":"state","register":..,"lock":..}`, plus `"conflicts":[..]` for
//! a manual document), then every event of the document as `event NAME` with the SSE JSON
//! (`updated`, `conflict_detected`, `conflict_resolved`, `lock_acquired`, `lock_renewed`,
//! `lock_released`, `lock_expired`, `user_joined`, `user_left`, `lagged`, `deleted`). Each
//! `register` envelope (`lww_write`, `manual_write`, `resolve`) goes through the same write
//! path as HTTP and is answered, in order, by exactly one `event "result"` (the outcome JSON
//! of `PUT /api/v1/docs/{name}/register`: `applied`, `duplicate`, `stale` with the winning
//! stamp, `conflict` with the record) or one `error` envelope for that document. An empty
//! `author` in a manual write or resolution stands for the token's subject; the relay stamps
//! revisions with its own clock (`at_ms` is ignored).
//!
//! Refusals are `error` envelopes:
//!
//! | code | meaning | connection |
//! |---:|---|---|
//! | 1001 | the relay is shutting down | closed |
//! | 1002 | malformed envelope | closed |
//! | 1008 | over the per-session message rate, disconnected by an admin, or more than [`registers::MAX_WAITING_COMMANDS`] register commands of one document waiting for their answers (`reason` says which) | closed |
//! | 1007, 1009 | the document's room refused an update from this connection: not a valid Yjs update (1007), or over `--max-update-items` / past `--max-doc-items` or `--max-doc-bytes` (1009); the subscription ends, nothing of the update was applied | kept |
//! | 1011 | the document is unavailable (storage failure, reload); subscribe again | kept |
//! | 1013 | the subscription fell behind; subscribe again to resync | kept |
//! | 4400 | protocol misuse: no hello first, a message for an unsubscribed document; a register command that is not valid JSON or not acceptable (e.g. a value too deep) | kept (closed without hello) |
//! | 4401 (document `""`, answering the hello) | with auth on, the hello carried no token or one that does not verify (`reason` is the auth error code, e.g. `token_expired`, `token_missing`); the connection is never listed as a session | closed |
//! | 4401, 4403 | the token is missing/invalid, or does not cover the document (`reason` is the auth error code, e.g. `token_expired`); 4403 also answers a register operation with a `read` token, or a manual write or resolution naming another author than the token's subject | kept |
//! | 4401 (document `""`) | the hello's token expired during the session (at its `exp`); reconnect with a fresh token | closed |
//! | 4404 | a register operation on a document that was deleted, or a resolution of no open conflict | kept |
//! | 4409 | the operation does not fit the document's kind: a Yjs message on a register document, a register operation on a Yjs document, an LWW write on a manual document or the other way round | kept |
//! | 4413 | the connection is already subscribed to `--quantum-max-documents` documents (default 100); unsubscribe from one first | kept |
//! | 4410 | the document was deleted (after `event "deleted"`); the subscription ends | kept |
//! | 4422 | an LWW write's stamp is more than a minute ahead of the relay's clock (nothing stored) | kept |
//! | 4423 | the manual document is locked by someone else | kept |
//! | 4429 | over the per-address connection rate (`reason` says when to retry) | closed, before the hello |
//!
//! Each connection is a session in the [`Registry`](crate::sessions::Registry) (transport `quantum`), like a WebSocket
//! session: user from the hello token, documents as it subscribes, envelopes and bytes
//! counted both ways, an admin's disconnect honoured. Quantum has its own keepalive, so the
//! relay sends no pings: a connection that delivered any packet (data, ACK or keepalive)
//! within the heartbeat interval is ACTIVE, one that did not is IDLE, and the transport's
//! idle timeout ends a dead one. The connection's RTT, congestion window, retransmits and
//! FEC repairs go to `/metrics` every [`STATS_INTERVAL`].
//!
//! Permission-denied for read-only tokens is the y-protocols auth message inside a `yjs`
//! envelope, as on the WebSocket.
//!
//! **Latency before bytes.** The listener's connections send sparse FEC parity from a budget
//! of [`Config::quantum_sparse_fec_budget`] (`--quantum-sparse-fec-budget`, default
//! [`DEFAULT_QUANTUM_SPARSE_FEC_BUDGET`] %) instead of the transport's 30 %: edits are small
//! and few, so parity costs little in absolute bytes, while at 30 % many edits the relay
//! loses on the way to a reader wait for the tail loss probe, which sets the p99 (see
//! `aetherflow_quantum::fec`, "The limit"). Parity is sent only while loss is measured (none
//! below 1 %), so a clean network pays nothing. The budget was chosen with `sdk-latency`
//! (edits that wait for a resend, p99, and bytes on the link at each budget); the figures are
//! in `benches/RESULTS.md`, not here, so they cannot go stale in the code.

pub mod identity;
pub mod registers;
mod subscriptions;

use std::time::{Duration, Instant};

use aetherflow_crdt::code::Code;
use aetherflow_crdt::envelope::{Control, Envelope, EnvelopeLimits, Payload};
use aetherflow_quantum::crypto::Keypair;
use aetherflow_quantum::{DriverConfig, QuantumConnection, QuantumEndpoint};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

use crate::config::Config;
#[cfg(doc)]
use crate::config::DEFAULT_QUANTUM_SPARSE_FEC_BUDGET;
use crate::connection::CloseReason;
use crate::context::AppState;
use crate::metrics::{QuantumConnectionMetrics, QuantumStats, Rejection};
use crate::sessions::{SessionHandle, SessionState, Transport};
use crate::supervisor::{Silence, Supervisor};
use subscriptions::{Next, Peer, Subscriptions, on_envelope};

/// How long shutdown waits for Quantum sessions to say goodbye before resetting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long a new connection may take to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Error code: protocol misuse (no hello first, a message for an unsubscribed document).
pub const ERROR_PROTOCOL: u32 = Code::BadRequest.as_u32();
/// Error code: too many new connections from this address; the reason says when to retry.
pub const ERROR_CONNECTION_RATE: u32 = Code::ConnectionRate.as_u32();
/// Error code: the hello's token is missing or does not verify (the reason is the auth error
/// code, e.g. `token_expired`); the connection is closed.
pub const ERROR_UNAUTHORIZED: u32 = Code::Unauthorized.as_u32();
/// Error code: the connection is already subscribed to [`Config::quantum_max_documents`]
/// documents; the subscription is refused, the connection and its other subscriptions stay.
pub const ERROR_TOO_MANY_DOCUMENTS: u32 = Code::TooManyDocuments.as_u32();

/// How often a connection's transport figures are read: for `/metrics` and to see keepalives
/// and ACKs as signs of life.
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// The listener's transport settings: accepting connections under the relay's static key
/// (see [`identity`]), messages up to the largest y-protocols message plus its envelope
/// header, and the relay's sparse FEC budget.
pub fn driver_config(config: &Config, identity: &Keypair) -> DriverConfig {
    let mut driver = DriverConfig::default();
    driver.quantum.accept_incoming = true;
    driver.quantum.static_secret = Some(identity.secret.clone());
    driver.quantum.max_message_size = config.max_message_bytes + 1024;
    driver.quantum.fec.sparse_budget_percent = config.quantum_sparse_fec_budget;
    driver
}

/// What the listener needs besides its endpoint.
#[derive(Clone)]
pub struct QuantumContext {
    /// The relay's context, shared with every route and WebSocket session: rooms, limits,
    /// shutdown, auth, connection ids, the task tracker, the session registry, the
    /// per-address connection rate, and the register service.
    pub app: AppState,
    /// Most documents one connection may be subscribed to at once
    /// ([`Config::quantum_max_documents`]).
    pub max_documents: usize,
}

impl QuantumContext {
    fn limits(&self) -> EnvelopeLimits {
        EnvelopeLimits {
            max_envelope_bytes: self.app.sessions.limits.max_message_bytes + 1024,
            ..EnvelopeLimits::default()
        }
    }
}

/// Accepts connections until the relay shuts down, then ends every connection so that no
/// client waits out its idle timeout for a relay that is gone.
pub async fn serve(endpoint: QuantumEndpoint, ctx: QuantumContext) {
    let connections = TaskTracker::new();
    loop {
        tokio::select! {
            conn = endpoint.accept() => match conn {
                Some(conn) => {
                    // Admitted here, in accept order, not in the spawned tasks, which may run
                    // in any order.
                    let admitted = ctx.app.connections.admit(conn.remote_addr().ip(), Instant::now());
                    let ctx2 = ctx.clone();
                    let span = info_span!("quantum", remote = %conn.remote_addr());
                    connections.spawn(connection(conn, ctx2, admitted).instrument(span));
                }
                None => break,
            },
            () = ctx.app.sessions.shutdown.cancelled() => break,
        }
    }
    // Each session queues its goodbye (error 1001, then FIN). Closing the endpoint goes
    // through the driver after those commands, so they are on the wire before the resets
    // that end whatever is left; without it the process could exit with them still queued.
    connections.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait())
        .await
        .is_err()
    {
        warn!("quantum sessions still closing at shutdown; resetting them");
    }
    endpoint.close().await;
}

/// Serves one connection: a refusal if it was over the connection rate (`admitted` is the
/// time to wait then), else the hello, then the session.
async fn connection(conn: QuantumConnection, ctx: QuantumContext, admitted: Result<(), Duration>) {
    let remote = conn.remote_addr();
    if let Err(wait) = admitted {
        ctx.app
            .sessions
            .rooms
            .metrics()
            .reject(Rejection::ConnectionRate);
        let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        warn!("connection rate limit exceeded; refusing");
        let reason = format!("connection rate limit exceeded; retry in {secs} s");
        refuse(&conn, ERROR_CONNECTION_RATE, &reason).await;
        return;
    }
    let limits = ctx.limits();
    let (token, hello_bytes) = match hello(&conn, &limits).await {
        Ok(hello) => hello,
        Err(Some((code, reason))) => {
            refuse(&conn, code, &reason).await;
            return;
        }
        Err(None) => return,
    };
    // A hello whose token does not verify ends the connection before it is listed: with
    // auth on, nothing could be subscribed with it anyway.
    let (user, expires) = match ctx.app.auth.hello(token.as_deref()) {
        Ok(hello) => hello,
        Err(e) => {
            warn!(code = e.code(), "hello refused: token missing or invalid");
            ctx.app.sessions.rooms.metrics().reject(Rejection::from(&e));
            refuse(&conn, ERROR_UNAUTHORIZED, e.code()).await;
            return;
        }
    };
    let handle = ctx
        .app
        .registry
        .open(&user, Transport::Quantum, remote, Vec::new());
    if let Some(exp) = expires {
        handle.expires_at(exp);
    }
    handle.received(hello_bytes);
    handle.set_state(SessionState::Active);
    let span = info_span!("session", id = %handle.id(), transport = "quantum", user = %user);
    session(&conn, &ctx, token.as_deref(), &handle)
        .instrument(span)
        .await;
    conn.close().await;
    // Dropping the handle marks the session CLOSED.
    drop(handle);
}

/// Envelopes queued for one Quantum connection; each subscription's room frames are first
/// bounded in bytes by its outbox (`--outbox-max-bytes`).
const PEER_QUEUE: usize = 1024;

/// Sends a connection-level error and closes.
async fn refuse(conn: &QuantumConnection, code: u32, reason: &str) {
    let _ = conn.send(error("", code, reason)).await;
    conn.close().await;
}

/// The session after the hello: until the client leaves, the relay shuts down, an admin
/// disconnects it or it breaks a rule.
async fn session(
    conn: &QuantumConnection,
    ctx: &QuantumContext,
    token: Option<&str>,
    handle: &SessionHandle,
) {
    debug!("hello received");
    let limits = ctx.limits();
    let (to_peer, mut outgoing) = mpsc::channel::<Vec<u8>>(PEER_QUEUE);
    let mut subscriptions = Subscriptions::new();
    let mut liveness = Liveness::new(ctx.app.sessions.rooms.metrics().quantum().connection());
    let mut stats_ticks = tokio::time::interval(STATS_INTERVAL);
    let mut heartbeat_ticks = tokio::time::interval(ctx.app.sessions.ping_interval);
    heartbeat_ticks.tick().await;
    let shutdown = ctx.app.sessions.shutdown.clone();
    let rate = ctx.app.sessions.message_rate;
    let mut supervisor = Supervisor::new(handle, shutdown, rate, Silence::ShowsIdle);
    let closing = loop {
        tokio::select! {
            biased;
            reason = supervisor.stopped() => break Some(reason),
            _ = stats_ticks.tick() => {
                let Ok(stats) = conn.stats().await else { break None };
                if liveness.sample(&stats) {
                    supervisor.heard();
                    handle.heard_from();
                }
            }
            _ = heartbeat_ticks.tick() => {
                if let Err(reason) = supervisor.tick(handle, false, None) {
                    break Some(reason);
                }
            }
            Some(bytes) = outgoing.recv() => {
                handle.sent(bytes.len());
                let sent = send_or_stall(conn, bytes, &mut heartbeat_ticks, &mut supervisor, handle).await;
                match sent {
                    Ok(true) => {}
                    Ok(false) => break None,
                    Err(reason) => break Some(reason),
                }
            }
            incoming = conn.recv() => {
                let Ok(Some(bytes)) = incoming else { break None };
                supervisor.heard();
                handle.received(bytes.len());
                if let Err(reason) = supervisor.charge() {
                    ctx.app.sessions.rooms.metrics().reject(Rejection::MessageRate);
                    break Some(reason);
                }
                let peer = Peer { conn, queue: &to_peer, handle };
                let next = on_envelope(&bytes, ctx, &limits, token, &mut subscriptions, &peer).await;
                if let Next::Close(code, reason) = next {
                    let code = u16::try_from(code).unwrap_or(CloseReason::PROTOCOL_ERROR);
                    break Some(CloseReason::new(code, reason));
                }
            }
        }
    };
    drop(supervisor);
    finish(conn, subscriptions, handle, closing).await;
}

/// Leaves every room, records how the session ended and tells the client why, if it is
/// still there to hear it.
async fn finish(
    conn: &QuantumConnection,
    mut subscriptions: Subscriptions,
    handle: &SessionHandle,
    closing: Option<CloseReason>,
) {
    for (_, subscription) in subscriptions.drain() {
        subscription.close();
    }
    handle.closing(closing.as_ref());
    if let Some(reason) = closing {
        debug!(code = reason.code, reason = %reason.reason, "closing");
        // A peer that stopped acknowledging must not keep the session alive.
        let _ = tokio::time::timeout(
            CLOSE_TIMEOUT,
            conn.send(error("", u32::from(reason.code), &reason.reason)),
        )
        .await;
    }
}

/// Longest wait for the closing error envelope to be queued.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Queues `bytes` on the connection while the heartbeat keeps ticking: a send waits while the
/// peer has not acknowledged the send buffer, and a peer that stopped must neither stop the
/// heartbeat nor hold the session forever. `Ok(true)`: queued; `Ok(false)`: the connection is
/// gone; `Err`: the reason to close with (the peer took nothing for
/// [`STALLED_TICKS`](crate::supervisor::STALLED_TICKS) ticks).
async fn send_or_stall(
    conn: &QuantumConnection,
    bytes: Vec<u8>,
    ticks: &mut tokio::time::Interval,
    supervisor: &mut Supervisor,
    handle: &SessionHandle,
) -> Result<bool, CloseReason> {
    let send = conn.send(bytes);
    let mut send = std::pin::pin!(send);
    loop {
        tokio::select! {
            biased;
            sent = &mut send => {
                supervisor.wrote();
                return Ok(sent.is_ok());
            }
            _ = ticks.tick() => supervisor.tick(handle, true, None)?,
        }
    }
}

/// A connection's signs of life and transport figures. Quantum's keepalives and ACKs never
/// reach the application, so the packet count of the connection's stats stands in for the
/// WebSocket's pongs.
struct Liveness {
    packets_received: u64,
    recorder: QuantumConnectionMetrics,
}

impl Liveness {
    fn new(recorder: QuantumConnectionMetrics) -> Liveness {
        Liveness {
            packets_received: 0,
            recorder,
        }
    }

    /// Records a stats sample; says whether new packets arrived (hearing from the peer).
    fn sample(&mut self, stats: &aetherflow_quantum::ConnectionStats) -> bool {
        let heard = stats.packets_received > self.packets_received;
        self.packets_received = stats.packets_received;
        // Before the first RTT sample there is nothing meaningful to record.
        if let Some(rtt) = stats.srtt {
            self.recorder.record(&QuantumStats {
                rtt,
                congestion_window: stats.cwnd,
                retransmits: stats.retransmits,
                fec_repairs: stats.fec_repaired,
                rejected: stats.auth_failures + stats.replays_dropped + stats.clear_dropped,
            });
        }
        heard
    }
}

/// Waits for the hello; returns its token and size. `Err(Some)` is a refusal to send,
/// `Err(None)` a connection that went away.
async fn hello(
    conn: &QuantumConnection,
    limits: &EnvelopeLimits,
) -> Result<(Option<String>, usize), Option<(u32, String)>> {
    let bytes = match tokio::time::timeout(HELLO_TIMEOUT, conn.recv()).await {
        Ok(Ok(Some(bytes))) => bytes,
        Ok(_) => return Err(None),
        Err(_) => return Err(Some((ERROR_PROTOCOL, "no hello in time".into()))),
    };
    match Envelope::decode(&bytes, limits) {
        Ok(Envelope {
            payload: Payload::Control(Control::Hello { token, .. }),
            ..
        }) => Ok((token, bytes.len())),
        Ok(_) => Err(Some((
            ERROR_PROTOCOL,
            "the first message must be hello".into(),
        ))),
        Err(e) => {
            warn!(error = %e, "malformed envelope");
            Err(Some((
                u32::from(CloseReason::PROTOCOL_ERROR),
                e.to_string(),
            )))
        }
    }
}

/// An error envelope.
fn error(doc: &str, code: u32, reason: &str) -> Vec<u8> {
    let reason: String = reason.chars().take(120).collect();
    Envelope::new(doc, Payload::Control(Control::Error { code, reason })).encode()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_QUANTUM_SPARSE_FEC_BUDGET, Settings};

    #[test]
    fn the_listener_sends_parity_from_the_configured_budget() {
        let config = |budget| {
            Config::from_settings(Settings {
                quantum_sparse_fec_budget: budget,
                ..Settings::default()
            })
            .unwrap()
        };
        let identity = Keypair::from_seed(1);
        let default = driver_config(&config(None), &identity);
        assert_eq!(
            default.quantum.fec.sparse_budget_percent,
            DEFAULT_QUANTUM_SPARSE_FEC_BUDGET
        );
        // Latency first: more than the transport's own default.
        assert!(
            DEFAULT_QUANTUM_SPARSE_FEC_BUDGET
                > aetherflow_quantum::fec::FecConfig::default().sparse_budget_percent
        );
        for budget in [0, 37, 200] {
            let driver = driver_config(&config(Some(budget)), &identity);
            assert_eq!(driver.quantum.fec.sparse_budget_percent, budget);
            assert!(driver.quantum.accept_incoming);
            // The transport accepts what the relay accepted.
            assert_eq!(driver.quantum.validate(), Ok(()));
        }
    }
}
