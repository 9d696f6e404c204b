//! One WebSocket connection (a session) on one document.
//!
//! The session decodes each binary frame as exactly one y-protocols message and hands it to
//! the room; it writes whatever the room puts in its outbox. Bad input closes this connection
//! (and only this one) with a close code and reason. Generic over `Sink`/`Stream` so it can be
//! driven by channels in tests.

use aetherflow_crdt::protocol::{Limits, Message};
use aetherflow_crdt::{ConnId, DocName};
use axum::extract::ws::{CloseFrame, Message as Frame};
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use crate::rooms::{CloseReason, OUTBOX_CAPACITY, Outbound, Rooms};

/// Everything a session needs besides its socket.
#[derive(Clone)]
pub struct SessionContext {
    /// The room registry.
    pub rooms: Rooms,
    /// Decoding limits.
    pub limits: Limits,
    /// Cancelled when the relay shuts down.
    pub shutdown: CancellationToken,
    /// Interval between pings; two silent intervals close the connection.
    pub ping_interval: Duration,
}

/// Longest wait for a close frame to go out before the connection is dropped anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Who is on the other end of a session.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The connection's id.
    pub conn: ConnId,
    /// The user its token names (`anonymous` when the relay runs open).
    pub user: String,
    /// Whether its updates may be applied; read-only peers get permission-denied instead.
    pub can_write: bool,
}

/// Serves one connection until either side closes it.
pub async fn run<S>(socket: S, doc: DocName, peer: Peer, ctx: SessionContext)
where
    S: Stream<Item = Result<Frame, axum::Error>> + Sink<Frame, Error = axum::Error> + Send,
{
    let span = info_span!("session", conn = peer.conn.0, doc = %doc, user = %peer.user);
    serve(socket, doc, peer, ctx).instrument(span).await;
}

async fn serve<S>(socket: S, doc: DocName, peer: Peer, ctx: SessionContext)
where
    S: Stream<Item = Result<Frame, axum::Error>> + Sink<Frame, Error = axum::Error> + Send,
{
    let (mut sink, stream) = socket.split();
    let mut stream = std::pin::pin!(stream);
    let (outbox, mut from_room) = mpsc::channel(OUTBOX_CAPACITY);
    let membership = match ctx
        .rooms
        .join(&doc, peer.conn, &peer.user, peer.can_write, outbox)
        .await
    {
        Ok(membership) => membership,
        Err(e) => {
            warn!(error = %e, "join failed");
            let reason = CloseReason::new(CloseReason::INTERNAL_ERROR, "document unavailable");
            close(&mut sink, reason).await;
            return;
        }
    };
    debug!("joined");
    let mut heartbeat = tokio::time::interval(ctx.ping_interval);
    heartbeat.tick().await;
    // Whether the peer has sent anything (a pong counts) since the last ping.
    let mut heard_from = true;
    let reason = loop {
        tokio::select! {
            biased;
            () = ctx.shutdown.cancelled() => {
                break Some(CloseReason::new(CloseReason::GOING_AWAY, "server shutting down"));
            }
            _ = heartbeat.tick() => {
                if !heard_from {
                    warn!("no pong within the ping interval; closing");
                    break Some(CloseReason::new(CloseReason::GOING_AWAY, "ping timeout"));
                }
                heard_from = false;
                if sink.send(Frame::Ping(Default::default())).await.is_err() {
                    break None;
                }
            }
            out = from_room.recv() => match out {
                Some(Outbound::Frame(bytes)) => {
                    if sink.send(Frame::Binary(bytes)).await.is_err() {
                        break None;
                    }
                }
                Some(Outbound::Close(reason)) => break Some(reason),
                None => break Some(CloseReason::new(
                    CloseReason::TRY_AGAIN_LATER,
                    "connection fell behind; reconnect to resync",
                )),
            },
            frame = stream.next() => {
                heard_from = true;
                match on_frame(frame, &ctx.limits) {
                    FrameOutcome::Message(message) => {
                        if membership.send(message).await.is_err() {
                            break Some(CloseReason::new(
                                CloseReason::INTERNAL_ERROR,
                                "document reloading, reconnect",
                            ));
                        }
                    }
                    FrameOutcome::Ignore => {}
                    FrameOutcome::Close(reason) => break reason,
                }
            }
        }
    };
    drop(membership);
    if let Some(reason) = reason {
        debug!(code = reason.code, reason = %reason.reason, "closing");
        close(&mut sink, reason).await;
    }
}

enum FrameOutcome {
    Message(Message),
    Ignore,
    /// End the session, with a close frame to send if the peer is still there.
    Close(Option<CloseReason>),
}

fn on_frame(frame: Option<Result<Frame, axum::Error>>, limits: &Limits) -> FrameOutcome {
    match frame {
        None | Some(Ok(Frame::Close(_))) => FrameOutcome::Close(None),
        Some(Ok(Frame::Binary(bytes))) => match Message::decode(&bytes, limits) {
            Ok(message) => FrameOutcome::Message(message),
            Err(e) => {
                warn!(reason = %e.reason(), "malformed message");
                FrameOutcome::Close(Some(CloseReason::new(
                    CloseReason::PROTOCOL_ERROR,
                    e.reason(),
                )))
            }
        },
        Some(Ok(Frame::Text(_))) => FrameOutcome::Close(Some(CloseReason::new(
            CloseReason::UNSUPPORTED_DATA,
            "text frames are not supported; y-websocket messages are binary",
        ))),
        // Pongs to pings are sent by the WebSocket layer itself.
        Some(Ok(Frame::Ping(_) | Frame::Pong(_))) => FrameOutcome::Ignore,
        Some(Err(e)) => FrameOutcome::Close(close_for_error(&e, limits)),
    }
}

/// A read error that deserves a close frame: an oversized message. Anything else means the
/// connection is broken, and there is nobody to tell.
fn close_for_error(error: &axum::Error, limits: &Limits) -> Option<CloseReason> {
    use std::error::Error as _;
    let mut source = error.source();
    while let Some(e) = source {
        if let Some(tokio_tungstenite::tungstenite::Error::Capacity(capacity)) =
            e.downcast_ref::<tokio_tungstenite::tungstenite::Error>()
        {
            warn!(error = %capacity, "message too big");
            return Some(CloseReason::new(
                CloseReason::MESSAGE_TOO_BIG,
                format!("message larger than {} bytes", limits.max_message_bytes),
            ));
        }
        source = e.source();
    }
    debug!(error = %error, "connection error");
    None
}

async fn close<K>(sink: &mut K, reason: CloseReason)
where
    K: Sink<Frame, Error = axum::Error> + Unpin,
{
    let frame = CloseFrame {
        code: reason.code,
        reason: reason.reason.into(),
    };
    // A peer that stopped reading must not keep the session alive.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        let _ = sink.send(Frame::Close(Some(frame))).await;
        let _ = sink.close().await;
    })
    .await;
}
