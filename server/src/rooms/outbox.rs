//! A subscriber's outbox: the bounded queue of frames a room holds for one connection.
//!
//! One per connection, so its idle cost is what the relay pays per idle connection. A tokio
//! `mpsc` channel allocates a 32-slot block (≈1.8 KiB here) up front; this queue is a
//! `VecDeque` that allocates when frames arrive and gives its buffer back once drained, plus
//! a [`Notify`] to wake the one reader: about a hundred bytes while idle.
//!
//! Semantics follow `mpsc`: the room (sender side) never waits, [`OutboxSender::try_send`]
//! fails with [`TrySendError::Full`] once `capacity` frames wait, and when every sender is
//! dropped the reader still gets the frames already queued, then `None`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::Outbound;

/// Creates an outbox holding at most `capacity` frames.
pub fn channel(capacity: usize) -> (OutboxSender, OutboxReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            senders: 1,
            receiver_alive: true,
        }),
        notify: Notify::new(),
        capacity,
    });
    (
        OutboxSender {
            shared: Arc::clone(&shared),
        },
        OutboxReceiver { shared },
    )
}

/// Why a frame was not queued; carries the frame back.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrySendError<T> {
    /// `capacity` frames are already waiting: the reader fell behind.
    #[error("outbox full")]
    Full(T),
    /// The reader is gone.
    #[error("outbox closed")]
    Closed(T),
}

/// The room's end of an outbox; cloning adds a sender.
#[derive(Debug)]
pub struct OutboxSender {
    shared: Arc<Shared>,
}

/// The connection's end of an outbox.
#[derive(Debug)]
pub struct OutboxReceiver {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the receiver; `notify_one` keeps a permit when nobody waits, so a frame queued
    /// between the receiver's check and its wait is not missed.
    notify: Notify,
    capacity: usize,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Outbound>,
    senders: usize,
    receiver_alive: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section is a single push, pop or counter update, so a poisoned lock
        // still guards a consistent queue.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl OutboxSender {
    /// Queues `frame` without waiting.
    pub fn try_send(&self, frame: Outbound) -> Result<(), TrySendError<Outbound>> {
        {
            let mut state = self.shared.lock();
            if !state.receiver_alive {
                return Err(TrySendError::Closed(frame));
            }
            if state.queue.len() >= self.shared.capacity {
                return Err(TrySendError::Full(frame));
            }
            state.queue.push_back(frame);
        }
        self.shared.notify.notify_one();
        Ok(())
    }
}

impl Clone for OutboxSender {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        OutboxSender {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for OutboxSender {
    fn drop(&mut self) {
        let last = {
            let mut state = self.shared.lock();
            state.senders -= 1;
            state.senders == 0
        };
        if last {
            self.shared.notify.notify_one();
        }
    }
}

impl OutboxReceiver {
    /// The next frame; `None` once every sender is gone and the queue is drained.
    pub async fn recv(&mut self) -> Option<Outbound> {
        loop {
            {
                let mut state = self.shared.lock();
                if let Some(frame) = state.queue.pop_front() {
                    // A drained queue gives its buffer back: most connections are idle most
                    // of the time, and even a few retained slots cost every one of them
                    // (issue 7). The price is one small allocation per burst of frames.
                    if state.queue.is_empty() {
                        state.queue = VecDeque::new();
                    }
                    return Some(frame);
                }
                if state.senders == 0 {
                    return None;
                }
            }
            self.shared.notify.notified().await;
        }
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_alive = false;
        // Frames nobody will read are freed now, not when the room drops its sender.
        state.queue = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::CloseReason;
    use bytes::Bytes;

    fn frame(n: u8) -> Outbound {
        Outbound::Frame(Bytes::from(vec![n]))
    }

    fn byte(out: Option<Outbound>) -> Option<u8> {
        match out {
            Some(Outbound::Frame(bytes)) => Some(bytes[0]),
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn frames_arrive_in_order() {
        let (tx, mut rx) = channel(8);
        for n in 0..5 {
            tx.try_send(frame(n)).expect("room for five");
        }
        for n in 0..5 {
            assert_eq!(byte(rx.recv().await), Some(n));
        }
    }

    #[tokio::test]
    async fn a_full_outbox_refuses_the_frame_over_capacity() {
        let (tx, mut rx) = channel(3);
        for n in 0..3 {
            tx.try_send(frame(n)).expect("under capacity");
        }
        match tx.try_send(frame(9)) {
            Err(TrySendError::Full(Outbound::Frame(bytes))) => assert_eq!(&bytes[..], &[9]),
            other => panic!("expected Full, got {other:?}"),
        }
        // Reading one frame makes room for one more.
        assert_eq!(byte(rx.recv().await), Some(0));
        tx.try_send(frame(3)).expect("room again");
        assert!(matches!(tx.try_send(frame(4)), Err(TrySendError::Full(_))));
    }

    #[tokio::test]
    async fn queued_frames_are_delivered_before_the_end_when_the_sender_drops() {
        let (tx, mut rx) = channel(8);
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
        let (tx, mut rx) = channel(8);
        let second = tx.clone();
        drop(tx);
        second.try_send(frame(7)).expect("still open");
        assert_eq!(byte(rx.recv().await), Some(7));
        drop(second);
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn sending_to_a_dropped_receiver_fails_closed() {
        let (tx, rx) = channel(8);
        tx.try_send(frame(1)).expect("room");
        drop(rx);
        assert!(matches!(
            tx.try_send(frame(2)),
            Err(TrySendError::Closed(_))
        ));
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_for_a_frame_sent_from_another_task() {
        let (tx, mut rx) = channel(8);
        let reader = tokio::spawn(async move { byte(rx.recv().await) });
        // Whether the reader is already waiting or not, it must see the frame.
        tokio::task::yield_now().await;
        tx.try_send(frame(42)).expect("room");
        assert_eq!(reader.await.expect("reader task"), Some(42));
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_when_the_last_sender_drops() {
        let (tx, mut rx) = channel(8);
        let reader = tokio::spawn(async move { rx.recv().await.is_none() });
        tokio::task::yield_now().await;
        drop(tx);
        assert!(reader.await.expect("reader task"));
    }

    #[tokio::test]
    async fn a_drained_burst_gives_its_buffer_back() {
        let (tx, mut rx) = channel(1024);
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
        let (tx, mut rx) = channel(1024);
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
