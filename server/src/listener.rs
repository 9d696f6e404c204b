//! The HTTP listener: accepts TCP connections and serves the router on each with hyper's
//! HTTP/1.1 server, within bounds a client cannot push (issue 14.5).
//!
//! - Every connection (plain HTTP, or a WebSocket after its upgrade) holds a place until its
//!   socket closes; there are `--max-connections` places, so the relay stays below its
//!   open-file limit and can always accept and answer. The last [`health_places`] of them are
//!   kept for health checks: a connection that gets one is served `/healthz` only, so a flood
//!   of idle connections does not make a load balancer think the relay is dead. Over the cap
//!   a connection gets a minimal 503 and is closed at once; a warning is logged at most every
//!   [`REFUSAL_LOG_EVERY`] and `aetherflow_rejected_total{reason="connection_limit"}` counts.
//! - A request's head must arrive within `--http-header-timeout-secs` of the relay starting to
//!   wait for it (from the connect, and after each response on a kept-alive connection), or
//!   the connection is closed: a client that trickles header bytes, or holds a connection it
//!   does not use, frees its place.
//!
//! On shutdown the listener stops accepting, asks every connection to finish its request and
//! close, and returns once they have (WebSocket sessions are left to their own shutdown).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, error, trace, warn};

use crate::error::AppError;
use crate::metrics::{Metrics, Rejection};

/// Shortest time between two warnings about refused connections.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// What a connection over the cap is sent before it is closed: no body to build, no request
/// to read.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 35\r\n\r\nover the relay's connection limit\r\n";

/// The only path served on a connection holding a place kept for health checks.
const HEALTH_PATH: &str = "/healthz";

/// The listener's bounds.
#[derive(Debug, Clone, Copy)]
pub struct ListenerSettings {
    /// Most connections open at once, including the places kept for health checks.
    pub max_connections: usize,
    /// Time a connection has to send a request head.
    pub header_timeout: Duration,
}

/// Places kept for `/healthz` out of `max_connections`: a sixteenth, from 1 to 64.
pub fn health_places(max_connections: usize) -> usize {
    (max_connections / 16).clamp(1, 64)
}

/// Serves `router` on `listener` until `shutdown` is cancelled and every connection has
/// finished; see the module documentation.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ListenerSettings,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let places = Places::new(settings.max_connections);
    let refusals = RefusalLog::default();
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (tcp, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                accept_failed(e).await;
                continue;
            }
        };
        let Some(place) = places.take() else {
            refuse(&tcp, remote);
            metrics.reject(Rejection::ConnectionLimit);
            refusals.record(settings.max_connections);
            continue;
        };
        // Small y-websocket frames (one keystroke) must leave at once, not wait for Nagle's
        // algorithm to pair them with an acknowledgement.
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "TCP_NODELAY not set");
        }
        connections.spawn(serve_connection(
            tcp,
            remote,
            place,
            router.clone(),
            settings,
            shutdown.clone(),
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Serves one connection until it closes, is upgraded (the upgraded socket keeps `place`), or
/// finishes its request after `shutdown`.
async fn serve_connection(
    tcp: TcpStream,
    remote: SocketAddr,
    place: Place,
    router: Router,
    settings: ListenerSettings,
    shutdown: CancellationToken,
) {
    let health_only = place.health_only;
    let io = TokioIo::new(Counted { tcp, _place: place });
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(remote));
        let router = router.clone();
        async move {
            if health_only && request.uri().path() != HEALTH_PATH {
                return Ok::<Response, Infallible>(AppError::OverCapacity.into_response());
            }
            router.oneshot(request).await
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout);
    let connection = builder.serve_connection(io, service).with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    trace!(%remote, error = %e, "connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Sends the refusal without waiting (a fresh socket's send buffer has room for it) and
/// closes the connection.
fn refuse(tcp: &TcpStream, remote: SocketAddr) {
    if let Err(e) = tcp.try_write(REFUSAL) {
        trace!(%remote, error = %e, "refusal not sent");
    }
}

/// An accept error: a connection that failed before it was accepted is nothing to wait for;
/// anything else (out of file descriptors despite the cap, out of memory) is logged and
/// retried after a pause rather than spinning.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    error!(error = %e, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The connection places: general ones, and those kept for health checks.
struct Places {
    general: Arc<Semaphore>,
    health: Arc<Semaphore>,
}

/// A connection's place, given back when the connection's socket closes.
struct Place {
    _permit: OwnedSemaphorePermit,
    /// Whether it is one of the places kept for health checks.
    health_only: bool,
}

impl Places {
    fn new(max_connections: usize) -> Places {
        let health = health_places(max_connections).min(max_connections.saturating_sub(1));
        Places {
            general: Arc::new(Semaphore::new(max_connections - health)),
            health: Arc::new(Semaphore::new(health)),
        }
    }

    fn take(&self) -> Option<Place> {
        if let Ok(permit) = self.general.clone().try_acquire_owned() {
            return Some(Place {
                _permit: permit,
                health_only: false,
            });
        }
        let permit = self.health.clone().try_acquire_owned().ok()?;
        Some(Place {
            _permit: permit,
            health_only: true,
        })
    }
}

/// Counts refused connections and logs at most one warning per [`REFUSAL_LOG_EVERY`].
#[derive(Default)]
struct RefusalLog {
    /// When the last warning was logged, and the refusals since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl RefusalLog {
    fn record(&self, max_connections: usize) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.1 += 1;
        let now = Instant::now();
        if state
            .0
            .is_some_and(|last| now.duration_since(last) < REFUSAL_LOG_EVERY)
        {
            return;
        }
        warn!(
            refused = state.1,
            max_connections, "refusing connections: the relay holds --max-connections connections"
        );
        *state = (Some(now), 0);
    }
}

/// A TCP stream holding its connection's place: the place is given back when the socket is
/// dropped, which for a WebSocket is when the session ends, not when hyper hands it over.
struct Counted {
    tcp: TcpStream,
    _place: Place,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_for_health_checks_are_a_sixteenth_within_bounds() {
        assert_eq!(health_places(2), 1);
        assert_eq!(health_places(64), 4);
        assert_eq!(health_places(896), 56);
        assert_eq!(health_places(100_000), 64);
    }

    #[test]
    fn the_last_places_serve_health_checks_only() {
        let places = Places::new(4);
        let taken: Vec<Place> = std::iter::from_fn(|| places.take()).collect();
        let health: Vec<bool> = taken.iter().map(|p| p.health_only).collect();
        assert_eq!(health, [false, false, false, true]);
        drop(taken);
        assert!(places.take().is_some_and(|p| !p.health_only));
    }
}
