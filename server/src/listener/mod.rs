//! The HTTP listener: accepts TCP connections and serves the router on each with hyper's
//! HTTP/1.1 server, within bounds a client cannot push (issue 14.5).
//!
//! - Every connection (plain HTTP, or a WebSocket after its upgrade) holds a place until its
//!   socket closes; there are `--max-connections` places, so the relay stays below its
//!   open-file limit and can always accept and answer (`places.rs` says who gets one). The
//!   last [`health_places`] of them are kept for health checks: a connection that gets one is
//!   served `/healthz` only, so connections that finish requests (WebSockets) cannot take every
//!   place. When every place is taken, a newcomer cuts the oldest connection that has not yet
//!   sent a complete request head and takes its place, so a flood of slow or silent
//!   connections cannot lock out clients that send their request at once; with none to cut,
//!   the newcomer gets a minimal 503 and is closed at once. A warning is logged at most every
//!   [`REFUSAL_LOG_EVERY`], and `aetherflow_rejected_total{reason="connection_limit"}` and
//!   `{reason="connection_cut"}` count.
//! - A request's head must arrive within `--http-header-timeout-secs` of the relay starting to
//!   wait for it (from the connect, and after each response on a kept-alive connection), or
//!   the connection is closed: a client that trickles header bytes, or holds a connection it
//!   does not use, frees its place.
//! - With `--tls-cert` (`tls.rs`), every connection is TLS: the handshake must finish within
//!   `--http-header-timeout-secs` of the connect, while the connection already holds a place
//!   (and can be cut like one that has not sent its head), and then its request head has the
//!   same time again. A connection whose first byte is not a TLS handshake (`http://` or
//!   `ws://` to a TLS port) gets 400 `tls_required` in plain HTTP and is closed.
//!
//! On shutdown the listener stops accepting, asks every connection to finish its request and
//! close, and returns once they have (WebSocket sessions are left to their own shutdown).

mod places;
pub mod tls;
mod x509;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, error, trace};

use self::places::{Full, Pending, Place, Places};
pub use self::places::{REFUSAL_LOG_EVERY, health_places};
use self::tls::Certificate;
use crate::error::AppError;
use crate::metrics::{Metrics, Rejection};

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

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Serves `router` on `listener` until `shutdown` is cancelled and every connection has
/// finished; see the module documentation. With `tls`, every connection is TLS with the
/// certificate in use when it connects.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ListenerSettings,
    tls: Option<Arc<Certificate>>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let places = Arc::new(Places::new(settings.max_connections));
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
        // Small y-websocket frames (one keystroke) must leave at once, not wait for Nagle's
        // algorithm to pair them with an acknowledgement.
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "TCP_NODELAY not set");
        }
        let connection = Connection {
            tcp,
            remote,
            router: router.clone(),
            settings,
            tls: tls.clone(),
            shutdown: shutdown.clone(),
            places: places.clone(),
        };
        if let Some(place) = places.take() {
            connections.spawn(connection.serve(place));
            continue;
        }
        match places.full() {
            Full::TakeOver(claim) => {
                metrics.reject(Rejection::ConnectionCut);
                let metrics = metrics.clone();
                connections.spawn(async move {
                    match connection.places.take_over(claim).await {
                        Some(place) => connection.serve(place).await,
                        None => {
                            refuse(&connection.tcp, remote);
                            metrics.reject(Rejection::ConnectionLimit);
                        }
                    }
                });
            }
            Full::Refuse => {
                refuse(&connection.tcp, remote);
                metrics.reject(Rejection::ConnectionLimit);
            }
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// An accepted connection, before it has a place.
struct Connection {
    tcp: TcpStream,
    remote: SocketAddr,
    router: Router,
    settings: ListenerSettings,
    tls: Option<Arc<Certificate>>,
    shutdown: CancellationToken,
    places: Arc<Places>,
}

/// What a connection to the TLS port turned out to be.
enum Handshake {
    /// A finished TLS handshake.
    Tls(Box<tokio_rustls::server::TlsStream<Counted>>),
    /// Plain HTTP: answered with 400 `tls_required`.
    Plain(Counted),
    /// Gone, failed, too slow, cut, or the relay is shutting down.
    Failed,
}

impl Connection {
    /// Serves the connection until it closes, is upgraded (the upgraded socket keeps `place`),
    /// is cut before its first request head, or finishes its request after shutdown.
    async fn serve(self, place: Place) {
        let Connection {
            tcp,
            remote,
            router,
            settings,
            tls,
            shutdown,
            places,
        } = self;
        drop(places);
        let pending = place.pending.clone();
        let health_only = place.health_only;
        let io = Counted { tcp, _place: place };
        let http = Http {
            remote,
            router,
            settings,
            shutdown,
            pending,
            health_only,
        };
        let Some(certificate) = tls else {
            return http.serve(io, false).await;
        };
        match http.handshake(&certificate, io).await {
            Handshake::Tls(stream) => http.serve(*stream, false).await,
            Handshake::Plain(io) => http.serve(io, true).await,
            Handshake::Failed => {}
        }
    }
}

/// What serving HTTP on a connection needs, once it holds a place.
struct Http {
    remote: SocketAddr,
    router: Router,
    settings: ListenerSettings,
    shutdown: CancellationToken,
    pending: Arc<Pending>,
    health_only: bool,
}

impl Http {
    /// The TLS handshake, within the header timeout and while the connection may be cut.
    async fn handshake(&self, certificate: &Certificate, io: Counted) -> Handshake {
        let remote = self.remote;
        let acceptor = certificate.acceptor();
        let handshake = async move {
            let mut first = [0u8; 1];
            match io.tcp.peek(&mut first).await {
                Ok(1..) if first[0] == TLS_HANDSHAKE_RECORD => {}
                Ok(1..) => return Handshake::Plain(io),
                Ok(0) | Err(_) => return Handshake::Failed,
            }
            match acceptor.accept(io).await {
                Ok(stream) => Handshake::Tls(Box::new(stream)),
                Err(e) => {
                    debug!(%remote, error = %e, "TLS handshake failed");
                    Handshake::Failed
                }
            }
        };
        tokio::select! {
            result = tokio::time::timeout(self.settings.header_timeout, handshake) => {
                result.unwrap_or_else(|_| {
                    trace!(%remote, "no TLS handshake within the header timeout");
                    Handshake::Failed
                })
            }
            () = cut_signal(&self.pending) => {
                trace!(%remote, "cut: no TLS handshake while the relay was full");
                Handshake::Failed
            }
            () = self.shutdown.cancelled() => Handshake::Failed,
        }
    }

    /// Serves HTTP/1.1 on `io`; with `tls_required` (plain HTTP on the TLS port) every
    /// request gets 400 `tls_required` and the connection closes after it.
    async fn serve<I>(self, io: I, tls_required: bool)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Http {
            remote,
            router,
            settings,
            shutdown,
            pending,
            health_only,
        } = self;
        let io = TokioIo::new(io);
        let served = pending.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            let router = router.clone();
            let cut = !served.served();
            async move {
                if tls_required {
                    return Ok::<Response, Infallible>(AppError::TlsRequired.into_response());
                }
                if cut || (health_only && request.uri().path() != HEALTH_PATH) {
                    return Ok::<Response, Infallible>(AppError::OverCapacity.into_response());
                }
                router.oneshot(request).await
            }
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_timeout)
            .keep_alive(!tls_required);
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
                () = cut_signal(&pending) => {
                    trace!(%remote, "cut: no request head while the relay was full");
                    return;
                }
            }
        }
    }
}

/// Resolves when `pending` is cut.
async fn cut_signal(pending: &Pending) {
    pending.cut.cancelled().await;
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
