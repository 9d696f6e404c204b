//! A subscriber's outbox: the bounded queue of frames a room holds for one connection.
//!
//! One per connection, so its idle cost is what the relay pays per idle connection. A tokio
//! `mpsc` channel allocates a 32-slot block (≈1.8 KiB here) up front; this queue is a
//! `VecDeque` that allocates when frames arrive and gives its buffer back once drained, plus
//! the one reader's waker, kept in the same locked state: about a hundred bytes while idle.
//! The reader is polled ([`OutboxReceiver::poll_recv_from`]), so a session can read its
//! outboxes without a future per frame: a room's broadcast wakes every reader, and what each
//! wakeup costs is paid once per reader per update.
//!
//! Semantics follow `mpsc`: the room (sender side) never waits, and when every sender is
//! dropped the reader still gets the frames already queued, then `None`. The bound is in
//! bytes, not frames (issue 14): [`OutboxSender::try_send`] fails with
//! [`TrySendError::Full`] once the frames waiting (each charged [`FRAME_OVERHEAD`] bytes
//! besides its payload) would pass `max_bytes`. A frame is always taken into an empty outbox,
//! so one message larger than the bound still goes out. An outbox that overflows is dead: its
//! frames are freed at once and the reader gets `None` next, even while it is busy writing
//! (see [`OutboxReceiver::recv_when`]); the connection resyncs when it reconnects.
//!
//! One connection may read several rooms from one outbox (a Hocuspocus connection, many
//! documents over one socket): each room gets a sender [tagged](OutboxSender::for_conn) with
//! the connection id it joined with, and the reader learns which room queued each frame
//! ([`OutboxReceiver::poll_recv_from`]).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use aetherflow_crdt::ConnId;

use super::Outbound;
use super::senders::{self, Senders};

/// Bytes each queued frame is charged besides its payload: the queue slot and the shared
/// buffer's header, so that a flood of tiny frames is bounded too.
pub const FRAME_OVERHEAD: usize = 64;

/// Creates an outbox holding frames of at most `max_bytes` in total (see the module docs).
pub fn channel(max_bytes: usize) -> (OutboxSender, OutboxReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            bytes: 0,
            senders: 1,
            receiver_alive: true,
            overflowed: false,
            reader: None,
        }),
        max_bytes,
    });
    (
        OutboxSender {
            shared: Arc::clone(&shared),
            conn: UNTAGGED,
        },
        OutboxReceiver { shared },
    )
}

/// Why a frame was not queued; carries the frame back.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrySendError<T> {
    /// The frames waiting would pass the byte bound: the reader fell behind. The outbox is
    /// now dead (its reader gets `None`).
    #[error("outbox full")]
    Full(T),
    /// The reader is gone.
    #[error("outbox closed")]
    Closed(T),
}

/// The tag of the senders [`channel`] makes: their reader does not ask who queued a frame.
const UNTAGGED: ConnId = ConnId(0);

/// The room's end of an outbox; cloning adds a sender (with the same tag).
#[derive(Debug)]
pub struct OutboxSender {
    shared: Arc<Shared>,
    /// Tags every frame this sender queues (see [`OutboxSender::for_conn`]).
    conn: ConnId,
}

/// The connection's end of an outbox.
#[derive(Debug)]
pub struct OutboxReceiver {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Most bytes the waiting frames may take (see [`FRAME_OVERHEAD`]).
    max_bytes: usize,
}

#[derive(Debug)]
struct State {
    /// Each frame with the tag of the sender that queued it.
    queue: VecDeque<(ConnId, Outbound)>,
    /// What the frames in `queue` are charged against `max_bytes`.
    bytes: usize,
    senders: usize,
    receiver_alive: bool,
    /// Set when a frame did not fit: the queue was dropped and the reader is told to end.
    overflowed: bool,
    /// The reader's waker, set when it found nothing to do; taken by whoever gives it
    /// something (a frame, an overflow, the last sender's drop). Set and taken under the lock,
    /// so a frame queued between the reader's check and its wait is not missed.
    reader: Option<Waker>,
}

/// What a frame is charged against the byte bound.
fn charge(frame: &Outbound) -> usize {
    match frame {
        Outbound::Frame(bytes) => bytes.len() + FRAME_OVERHEAD,
        Outbound::Close(_) => FRAME_OVERHEAD,
    }
}

impl Senders for State {
    fn senders(&mut self) -> &mut usize {
        &mut self.senders
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        senders::lock(&self.state)
    }
}

/// Wakes the reader whose waker was taken from the state (after the lock is released).
fn wake(reader: Option<Waker>) {
    if let Some(reader) = reader {
        reader.wake();
    }
}

impl OutboxSender {
    /// Queues `frame` without waiting.
    pub fn try_send(&self, frame: Outbound) -> Result<(), TrySendError<Outbound>> {
        let mut state = self.shared.lock();
        if !state.receiver_alive {
            return Err(TrySendError::Closed(frame));
        }
        if state.overflowed {
            return Err(TrySendError::Full(frame));
        }
        let cost = charge(&frame);
        if !state.queue.is_empty() && state.bytes + cost > self.shared.max_bytes {
            // The reader will resync on reconnect: nothing queued is worth keeping, and
            // freeing it now is what bounds the relay's memory.
            state.overflowed = true;
            state.queue = VecDeque::new();
            state.bytes = 0;
            let reader = state.reader.take();
            drop(state);
            wake(reader);
            return Err(TrySendError::Full(frame));
        }
        state.bytes += cost;
        state.queue.push_back((self.conn, frame));
        let reader = state.reader.take();
        drop(state);
        wake(reader);
        Ok(())
    }
}

impl OutboxSender {
    /// Another sender to the same outbox, whose frames the reader sees as queued by `conn`.
    pub fn for_conn(&self, conn: ConnId) -> OutboxSender {
        senders::added(&self.shared.state);
        OutboxSender {
            shared: Arc::clone(&self.shared),
            conn,
        }
    }
}

impl Clone for OutboxSender {
    fn clone(&self) -> Self {
        self.for_conn(self.conn)
    }
}

impl Drop for OutboxSender {
    fn drop(&mut self) {
        if senders::dropped(&self.shared.state) {
            let reader = self.shared.lock().reader.take();
            wake(reader);
        }
    }
}

impl OutboxReceiver {
    /// The next frame; `None` once every sender is gone and the queue is drained, or at once
    /// after an overflow.
    pub async fn recv(&mut self) -> Option<Outbound> {
        self.recv_when(true).await
    }

    /// Like [`recv`](Self::recv) when `ready`; otherwise waits only for the end of an
    /// overflowed outbox, leaving frames queued. A session busy writing one frame uses this to
    /// notice at once that it fell behind.
    pub async fn recv_when(&mut self, ready: bool) -> Option<Outbound> {
        poll_fn(|cx| self.poll_recv_from(cx, ready))
            .await
            .map(|(_, frame)| frame)
    }

    /// Polls for what [`recv_when`](Self::recv_when) waits for, with the tag of the sender
    /// that queued the frame (see [`OutboxSender::for_conn`]); when there is nothing yet, `cx`
    /// is woken once there is.
    pub fn poll_recv_from(
        &mut self,
        cx: &mut Context<'_>,
        ready: bool,
    ) -> Poll<Option<(ConnId, Outbound)>> {
        let mut state = self.shared.lock();
        if state.overflowed {
            return Poll::Ready(None);
        }
        if !ready {
            // Only an overflow ends this wait; frames stay for the next call.
        } else if let Some((conn, frame)) = state.queue.pop_front() {
            state.bytes = state.bytes.saturating_sub(charge(&frame));
            // A drained queue gives its buffer back: most connections are idle most of the
            // time, and even a few retained slots cost every one of them (issue 7). The
            // price is one small allocation per burst of frames.
            if state.queue.is_empty() {
                state.queue = VecDeque::new();
            }
            return Poll::Ready(Some((conn, frame)));
        } else if state.senders == 0 {
            return Poll::Ready(None);
        }
        match &mut state.reader {
            Some(reader) => reader.clone_from(cx.waker()),
            empty => *empty = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_alive = false;
        // Frames nobody will read are freed now, not when the room drops its sender, and so
        // is the reader's waker (it holds the ended session's task).
        state.queue = VecDeque::new();
        state.bytes = 0;
        state.reader = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::CloseReason;
    use bytes::Bytes;
    use futures_util::FutureExt;

    fn frame(n: u8) -> Outbound {
        Outbound::Frame(Bytes::from(vec![n]))
    }

    /// An outbox bound that holds `n` one-byte frames.
    fn room_for(n: usize) -> usize {
        n * (1 + FRAME_OVERHEAD)
    }

    fn byte(out: Option<Outbound>) -> Option<u8> {
        match out {
            Some(Outbound::Frame(bytes)) => Some(bytes[0]),
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn frames_arrive_in_order() {
        let (tx, mut rx) = channel(room_for(8));
        for n in 0..5 {
            tx.try_send(frame(n)).expect("room for five");
        }
        for n in 0..5 {
            assert_eq!(byte(rx.recv().await), Some(n));
        }
    }

    #[tokio::test]
    async fn an_outbox_over_its_bytes_refuses_the_frame_and_ends_at_once() {
        let (tx, mut rx) = channel(room_for(3));
        for n in 0..3 {
            tx.try_send(frame(n)).expect("under the bound");
        }
        match tx.try_send(frame(9)) {
            Err(TrySendError::Full(Outbound::Frame(bytes))) => assert_eq!(&bytes[..], &[9]),
            other => panic!("expected Full, got {other:?}"),
        }
        // The frames queued are freed and the reader is told to end, before the room even
        // drops its sender.
        assert_eq!(rx.shared.lock().queue.capacity(), 0);
        assert!(rx.recv().await.is_none());
        assert!(matches!(tx.try_send(frame(4)), Err(TrySendError::Full(_))));
    }

    #[tokio::test]
    async fn the_bound_counts_bytes_not_frames() {
        let (tx, mut rx) = channel(1000);
        tx.try_send(Outbound::Frame(Bytes::from(vec![0; 800])))
            .expect("fits");
        assert!(matches!(
            tx.try_send(Outbound::Frame(Bytes::from(vec![0; 800]))),
            Err(TrySendError::Full(_))
        ));
        let (tx, mut fresh) = channel(1000);
        // One frame larger than the whole bound still goes out when nothing waits.
        tx.try_send(Outbound::Frame(Bytes::from(vec![0; 5000])))
            .expect("an empty outbox takes any frame");
        assert!(matches!(fresh.recv().await, Some(Outbound::Frame(b)) if b.len() == 5000));
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_busy_reader_still_sees_an_overflow() {
        let (tx, mut rx) = channel(room_for(2));
        tx.try_send(frame(1)).expect("room");
        // Not ready for frames: the wait does not take the frame queued...
        assert!(rx.recv_when(false).now_or_never().is_none());
        tx.try_send(frame(2)).expect("room");
        let busy = tokio::spawn(async move { rx.recv_when(false).await.is_none() });
        tokio::task::yield_now().await;
        // ...but ends as soon as the outbox overflows.
        assert!(tx.try_send(frame(3)).is_err());
        assert!(busy.await.expect("reader task"));
    }

    #[tokio::test]
    async fn queued_frames_are_delivered_before_the_end_when_the_sender_drops() {
        let (tx, mut rx) = channel(room_for(8));
        tx.try_send(frame(1)).expect("room");
        tx.try_send(Outbound::Close(CloseReason::new(1008, "bye")))
            .expect("room");
        drop(tx);
        assert_eq!(byte(rx.recv().await), Some(1));
        assert!(matches!(rx.recv().await, Some(Outbound::Close(r)) if r.code == 1008));
        assert!(rx.recv().await.is_none());
        assert!(rx.recv().await.is_none(), "the end is sticky");
    }

    #[tokio::test]
    async fn the_end_comes_only_after_the_last_clone_drops() {
        let (tx, mut rx) = channel(room_for(8));
        let second = tx.clone();
        drop(tx);
        second.try_send(frame(7)).expect("still open");
        assert_eq!(byte(rx.recv().await), Some(7));
        drop(second);
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn each_frame_carries_the_tag_of_its_sender_and_one_bound_covers_them_all() {
        let (untagged, mut rx) = channel(room_for(3));
        let a = untagged.for_conn(ConnId(7));
        let b = a.for_conn(ConnId(9));
        a.try_send(frame(1)).expect("room");
        b.try_send(frame(2)).expect("room");
        a.clone().try_send(frame(3)).expect("a clone keeps the tag");
        let mut tags = Vec::new();
        for _ in 0..3 {
            let next = poll_fn(|cx| rx.poll_recv_from(cx, true)).await;
            let (conn, out) = next.expect("queued");
            tags.push((conn, byte(Some(out)).expect("a frame")));
        }
        assert_eq!(tags, [(ConnId(7), 1), (ConnId(9), 2), (ConnId(7), 3)]);
        // The senders share one bound: three frames fill it, whoever sent them.
        for n in 0..3 {
            [&a, &b][n % 2].try_send(frame(n as u8)).expect("room");
        }
        assert!(matches!(b.try_send(frame(9)), Err(TrySendError::Full(_))));
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn sending_to_a_dropped_receiver_fails_closed() {
        let (tx, rx) = channel(room_for(8));
        tx.try_send(frame(1)).expect("room");
        drop(rx);
        assert!(matches!(
            tx.try_send(frame(2)),
            Err(TrySendError::Closed(_))
        ));
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_for_a_frame_sent_from_another_task() {
        let (tx, mut rx) = channel(room_for(8));
        let reader = tokio::spawn(async move { byte(rx.recv().await) });
        // Whether the reader is already waiting or not, it must see the frame.
        tokio::task::yield_now().await;
        tx.try_send(frame(42)).expect("room");
        assert_eq!(reader.await.expect("reader task"), Some(42));
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_when_the_last_sender_drops() {
        let (tx, mut rx) = channel(room_for(8));
        let reader = tokio::spawn(async move { rx.recv().await.is_none() });
        tokio::task::yield_now().await;
        drop(tx);
        assert!(reader.await.expect("reader task"));
    }

    #[tokio::test]
    async fn a_drained_burst_gives_its_buffer_back() {
        let (tx, mut rx) = channel(room_for(1024));
        for n in 0..200 {
            tx.try_send(frame(n)).expect("under capacity");
        }
        assert!(rx.shared.lock().queue.capacity() >= 200);
        for n in 0..200 {
            assert_eq!(byte(rx.recv().await), Some(n));
        }
        assert_eq!(rx.shared.lock().queue.capacity(), 0);
    }

    #[tokio::test]
    async fn an_idle_outbox_holds_no_buffer_after_its_last_frame() {
        let (tx, mut rx) = channel(room_for(1024));
        assert_eq!(
            rx.shared.lock().queue.capacity(),
            0,
            "nothing before the first frame"
        );
        tx.try_send(frame(1)).expect("room");
        tx.try_send(frame(2)).expect("room");
        assert_eq!(byte(rx.recv().await), Some(1));
        assert!(
            rx.shared.lock().queue.capacity() > 0,
            "kept while frames wait"
        );
        assert_eq!(byte(rx.recv().await), Some(2));
        assert_eq!(rx.shared.lock().queue.capacity(), 0);
        // And it still works afterwards.
        tx.try_send(frame(3)).expect("room");
        assert_eq!(byte(rx.recv().await), Some(3));
    }
}
