//! One Hocuspocus connection: its frames in, its documents' rooms, its answers and the
//! rooms' frames out, until either side closes it.
//!
//! Liveness, the message rate, the write-progress check and the close handshake follow the
//! y-websocket session ([`crate::websocket`]); a ping is sent both as a WebSocket ping and as
//! Hocuspocus's one-byte ping, since the provider reconnects when it has heard no message
//! for 30 s and WebSocket pings are invisible to it.

use std::collections::VecDeque;
use std::sync::Arc;

use aetherflow_crdt::ConnId;
use aetherflow_crdt::hocuspocus::{self as wire, Frame as WireFrame};
use axum::extract::ws::{Message as Frame, WebSocket};
use bytes::Bytes;
use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use std::future::poll_fn;
use tracing::{Span, info_span, warn};

use super::Endpoint;
use super::documents::{Documents, Next};
use crate::connection::CloseReason;
use crate::metrics::Rejection;
use crate::rooms::{Outbound, OutboxReceiver};
use crate::sessions::{SessionHandle, SessionState};
use crate::supervisor::{Silence, Supervisor};
use crate::websocket::{close, count, write};

/// Most incoming frames handled per wakeup before the session asks its rooms for the
/// acknowledgements and looks at its other duties.
const READ_BURST: usize = 64;

/// Most room frames handed to the socket before one flush.
const WRITE_BURST: usize = 64;

/// Most answers of the session's own waiting to be written: a client that sends faster than
/// it reads is closed (1013) rather than buffered without bound.
const MAX_REPLIES: usize = 1024;

/// Serves one upgraded connection.
pub(super) fn run(
    socket: WebSocket,
    id: u64,
    endpoint: Arc<Endpoint>,
    handle: SessionHandle,
) -> impl Future<Output = ()> + Send {
    let (sink, stream) = socket.split();
    serve(sink, stream, id, endpoint, handle)
}

/// The session's `session` span (built when a line is logged, as on `/ws`).
fn span(handle: &SessionHandle, id: u64) -> Span {
    info_span!(
        "session",
        id = %handle.id(),
        transport = "hocuspocus",
        remote = %handle.remote_addr(),
        conn = id,
    )
}

/// One frame from the connection's outbox, with the connection id of the room that queued
/// it; `None`: the outbox overflowed (the documents hold a sender, so it ends no other way).
type RoomItem = Option<(ConnId, Outbound)>;

/// The session's outgoing side: its own answers, then the rooms' frames.
struct Outgoing {
    replies: VecDeque<Frame>,
    /// Every open document's room frames, in one outbox.
    from_rooms: OutboxReceiver,
    /// A frame handed to the socket and not yet flushed.
    writing: bool,
}

impl Outgoing {
    /// Whether room frames may be taken now: nothing of the session's own waits before them.
    fn takes_room_frames(&self) -> bool {
        !self.writing && self.replies.is_empty()
    }

    /// The next room frame when [`takes_room_frames`](Self::takes_room_frames); otherwise
    /// only the outbox's overflow (frames stay queued).
    async fn next_room_frame(&mut self) -> RoomItem {
        let ready = self.takes_room_frames();
        let from_rooms = &mut self.from_rooms;
        poll_fn(|cx| from_rooms.poll_recv_from(cx, ready)).await
    }

    /// Queues answers.
    fn take(&mut self, documents: &mut Documents) -> Result<(), CloseReason> {
        for reply in documents.replies.drain(..) {
            self.replies.push_back(Frame::Binary(reply));
        }
        if self.replies.len() > MAX_REPLIES {
            return Err(CloseReason::new(
                CloseReason::TRY_AGAIN_LATER,
                "connection not reading its answers; reconnect",
            ));
        }
        Ok(())
    }

    /// Writes queued answers while the socket takes them at once.
    fn flush_replies<K>(&mut self, sink: &mut K) -> Result<(), ()>
    where
        K: Sink<Frame, Error = axum::Error> + Unpin,
    {
        while !self.writing {
            let Some(frame) = self.replies.pop_front() else {
                break;
            };
            self.writing = write(sink, frame)?;
        }
        Ok(())
    }
}

impl Outgoing {
    /// Hands the socket `first` and the room frames already waiting behind it (up to
    /// [`WRITE_BURST`], while the socket takes them at once), then flushes them together: a
    /// writer's updates are acknowledged one frame each, and one write for a burst of them
    /// costs the relay far less than one each. `Err` ends the session (with a close frame
    /// to send, if any).
    fn write_room_frames<K>(
        &mut self,
        first: RoomItem,
        documents: &mut Documents,
        sink: &mut K,
        handle: &SessionHandle,
    ) -> Result<(), Option<CloseReason>>
    where
        K: Sink<Frame, Error = axum::Error> + Unpin,
    {
        let mut item = first;
        let mut queued = 0;
        loop {
            if !matches!(
                poll_fn(|cx| sink.poll_ready_unpin(cx)).now_or_never(),
                Some(Ok(()))
            ) {
                // Nothing waits to be flushed yet: a socket not ready now is broken (as on
                // `/ws`). Otherwise the item stays unread in its stream.
                if queued == 0 {
                    return Err(None);
                }
                break;
            }
            match documents.translate_room_frame(item) {
                None => {}
                Some(Ok(bytes)) => {
                    handle.sent(bytes.len());
                    sink.start_send_unpin(Frame::Binary(bytes))
                        .map_err(|_| None)?;
                    queued += 1;
                }
                Some(Err(reason)) => return Err(Some(reason)),
            }
            if queued >= WRITE_BURST {
                break;
            }
            match self.next_room_frame().now_or_never() {
                Some(next) => item = next,
                None => break,
            }
        }
        match poll_fn(|cx| sink.poll_flush_unpin(cx)).now_or_never() {
            Some(Ok(())) => self.writing = false,
            Some(Err(_)) => return Err(None),
            None => self.writing = true,
        }
        Ok(())
    }
}

#[allow(
    clippy::manual_async_fn,
    reason = "an async fn would store its arguments twice"
)]
fn serve<K, R>(
    mut sink: K,
    mut stream: R,
    id: u64,
    endpoint: Arc<Endpoint>,
    handle: SessionHandle,
) -> impl Future<Output = ()>
where
    K: Sink<Frame, Error = axum::Error> + Unpin,
    R: Stream<Item = Result<Frame, axum::Error>> + Unpin,
{
    let ctx = endpoint.app.sessions.clone();
    let first_tick = tokio::time::Instant::now() + ctx.ping_interval;
    let mut ticks = tokio::time::interval_at(first_tick, ctx.ping_interval);
    // Upgraded while the relay was shutting down?
    let stopping = ctx.shutdown.is_cancelled();
    let shutdown = ctx.shutdown.clone();
    let mut supervisor = Supervisor::new(&handle, shutdown, ctx.message_rate, Silence::Closes);
    async move {
        let handle = &handle;
        if stopping {
            let reason = CloseReason::new(CloseReason::GOING_AWAY, "server shutting down");
            handle.closing(Some(&reason));
            Box::pin(close(&mut sink, &mut stream, Some(reason))).await;
            return;
        }
        handle.set_state(SessionState::Active);
        let (mut documents, from_rooms) = Documents::new(ctx.outbox_max_bytes);
        let mut out = Outgoing {
            replies: VecDeque::new(),
            from_rooms,
            writing: false,
        };
        let reason = loop {
            if out.flush_replies(&mut sink).is_err() {
                break None;
            }
            tokio::select! {
                biased;
                reason = supervisor.stopped() => break Some(reason),
                _ = ticks.tick() => {
                    if let Some(reason) = tick(&mut supervisor, &mut out, handle, id) {
                        break Some(reason);
                    }
                }
                flushed = poll_fn(|cx| sink.poll_flush_unpin(cx)), if out.writing => {
                    if flushed.is_err() {
                        break None;
                    }
                    out.writing = false;
                    supervisor.wrote();
                }
                // While the session's own frames go first this only notices an overflow.
                first = out.next_room_frame() => {
                    if let Err(reason) = out.write_room_frames(first, &mut documents, &mut sink, handle) {
                        break reason;
                    }
                }
                frame = stream.next() => {
                    supervisor.heard();
                    if let Some(reason) = read_burst(frame, &mut stream, &mut documents, &mut supervisor, &endpoint, handle, id).await {
                        break reason;
                    }
                    if let Err(reason) = out.take(&mut documents) {
                        break Some(reason);
                    }
                }
            }
        };
        drop(documents);
        span(handle, id).in_scope(|| Supervisor::closing(handle, reason.as_ref()));
        drop(supervisor);
        Box::pin(close(&mut sink, &mut stream, reason)).await;
    }
}

/// One heartbeat interval: ping (both kinds), or say why to close.
fn tick(
    supervisor: &mut Supervisor,
    out: &mut Outgoing,
    handle: &SessionHandle,
    id: u64,
) -> Option<CloseReason> {
    let ticked = span(handle, id).in_scope(|| supervisor.tick(handle, out.writing, None));
    if let Err(reason) = ticked {
        return Some(reason);
    }
    out.replies.push_back(Frame::Ping(Bytes::new()));
    out.replies
        .push_back(Frame::Binary(Bytes::from_static(&[wire::PING])));
    None
}

/// Handles the frame just read and whatever else the socket already holds (up to
/// [`READ_BURST`]), then asks the rooms to acknowledge the updates. `Some` ends the session
/// (with a close frame to send, if the peer is still there).
async fn read_burst<R>(
    first: Option<Result<Frame, axum::Error>>,
    stream: &mut R,
    documents: &mut Documents,
    supervisor: &mut Supervisor,
    endpoint: &Endpoint,
    handle: &SessionHandle,
    id: u64,
) -> Option<Option<CloseReason>>
where
    R: Stream<Item = Result<Frame, axum::Error>> + Unpin,
{
    let mut frame = first;
    for read in 1..=READ_BURST {
        let charged = match count(frame.as_ref(), handle) {
            true => span(handle, id).in_scope(|| supervisor.charge()),
            false => Ok(()),
        };
        if let Err(reason) = charged {
            endpoint.app.metrics.reject(Rejection::MessageRate);
            return Some(Some(reason));
        }
        match on_frame(frame, endpoint, handle, id) {
            FrameOutcome::Message(message) => {
                if let Next::Close(reason) = documents.on_message(message, endpoint, handle).await {
                    return Some(Some(reason));
                }
            }
            FrameOutcome::Ignore => {}
            FrameOutcome::Close(reason) => return Some(reason),
        }
        // Not past the burst: a frame taken off the socket must be handled.
        if read == READ_BURST {
            break;
        }
        match stream.next().now_or_never() {
            Some(next) => frame = next,
            None => break,
        }
    }
    match documents.acknowledge().await {
        Next::Continue => None,
        Next::Close(reason) => Some(Some(reason)),
    }
}

enum FrameOutcome {
    Message(wire::Message),
    Ignore,
    Close(Option<CloseReason>),
}

fn on_frame(
    frame: Option<Result<Frame, axum::Error>>,
    endpoint: &Endpoint,
    handle: &SessionHandle,
    id: u64,
) -> FrameOutcome {
    let metrics = &endpoint.app.metrics;
    let limits = &endpoint.app.sessions.limits;
    match frame {
        None | Some(Ok(Frame::Close(_))) => FrameOutcome::Close(None),
        Some(Ok(Frame::Binary(bytes))) => match WireFrame::decode(&bytes, limits) {
            Ok(WireFrame::Message(message)) => FrameOutcome::Message(message),
            Ok(WireFrame::Ping | WireFrame::Pong) => FrameOutcome::Ignore,
            Err(e) => {
                metrics.reject(Rejection::MalformedMessage);
                let doc = wire::address_of(&bytes).map(wire::document_of);
                span(handle, id).in_scope(|| warn!(doc, reason = %e.reason(), "malformed message"));
                FrameOutcome::Close(Some(CloseReason::new(
                    CloseReason::PROTOCOL_ERROR,
                    e.reason(),
                )))
            }
        },
        Some(Ok(Frame::Text(_))) => {
            metrics.reject(Rejection::TextFrame);
            FrameOutcome::Close(Some(CloseReason::new(
                CloseReason::UNSUPPORTED_DATA,
                "text frames are not supported; Hocuspocus messages are binary",
            )))
        }
        Some(Ok(Frame::Ping(_) | Frame::Pong(_))) => FrameOutcome::Ignore,
        Some(Err(e)) => {
            let reason =
                span(handle, id).in_scope(|| crate::websocket::close_for_error(&e, limits));
            if reason.is_some() {
                metrics.reject(Rejection::MessageTooBig);
            }
            FrameOutcome::Close(reason)
        }
    }
}
