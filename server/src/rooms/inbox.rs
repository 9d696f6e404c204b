//! A room's inbox: the bounded queue of commands its sessions (and the HTTP API) send it.
//!
//! One per loaded document. A tokio `mpsc` channel allocates its first block of 32 slots up
//! front and keeps it: about 2.3 KiB per document with [`RoomCommand`](super::RoomCommand)s,
//! a fifth of what an idle connection costs at ten connections per document (issue 7). This
//! queue is a `VecDeque` that allocates when commands arrive and gives its buffer back once
//! drained, a [`Notify`] to wake the one reader, and a [`Semaphore`] whose permits are the
//! free slots, so a sender waits (without allocating) while the inbox is full.
//!
//! Semantics follow bounded `mpsc`: [`InboxSender::send`] waits for a free slot,
//! [`InboxSender::try_send`] fails at once with [`TrySendError::Full`]; once the receiver
//! [closes](InboxReceiver::close) the inbox (or is dropped) every send fails, while commands
//! already queued can still be taken; when every sender is gone the receiver gets what is
//! queued, then `None`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, Semaphore, TryAcquireError};

use super::senders::{self, Senders};

/// Creates an inbox holding at most `capacity` commands.
pub fn channel<T>(capacity: usize) -> (InboxSender<T>, InboxReceiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            senders: 1,
        }),
        notify: Notify::new(),
        space: Semaphore::new(capacity),
    });
    (
        InboxSender {
            shared: Arc::clone(&shared),
        },
        InboxReceiver { shared },
    )
}

/// The inbox is closed: its room has stopped or is unloading. Carries the command back.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("inbox closed")]
pub struct Closed<T>(pub T);

/// Why [`InboxSender::try_send`] did not queue a command; carries it back.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrySendError<T> {
    /// Every slot is taken: the room is behind.
    #[error("inbox full")]
    Full(T),
    /// The inbox is closed.
    #[error("inbox closed")]
    Closed(T),
}

/// A sender's end of an inbox; cloning adds a sender.
pub struct InboxSender<T> {
    shared: Arc<Shared<T>>,
}

/// The room's end of an inbox.
pub struct InboxReceiver<T> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Wakes the receiver; `notify_one` keeps a permit when nobody waits, so a command
    /// queued between the receiver's check and its wait is not missed.
    notify: Notify,
    /// One permit per free slot; closed when the inbox is.
    space: Semaphore,
}

struct State<T> {
    queue: VecDeque<T>,
    senders: usize,
}

impl<T> Senders for State<T> {
    fn senders(&mut self) -> &mut usize {
        &mut self.senders
    }
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        senders::lock(&self.state)
    }

    /// Queues `command` in the slot its caller holds a permit for (already forgotten).
    fn push(&self, command: T) -> Result<(), Closed<T>> {
        {
            let mut state = self.lock();
            // Closing happens under this lock, so a command queued here is seen by the
            // receiver's drain after `close`.
            if self.space.is_closed() {
                return Err(Closed(command));
            }
            state.queue.push_back(command);
        }
        self.notify.notify_one();
        Ok(())
    }
}

impl<T> InboxSender<T> {
    /// Queues `command`, waiting while the inbox is full.
    pub async fn send(&self, command: T) -> Result<(), Closed<T>> {
        match self.shared.space.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return Err(Closed(command)),
        }
        self.shared.push(command)
    }

    /// Queues `command` without waiting.
    pub fn try_send(&self, command: T) -> Result<(), TrySendError<T>> {
        match self.shared.space.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::NoPermits) => return Err(TrySendError::Full(command)),
            Err(TryAcquireError::Closed) => return Err(TrySendError::Closed(command)),
        }
        self.shared
            .push(command)
            .map_err(|Closed(command)| TrySendError::Closed(command))
    }

    /// Whether the receiver has closed the inbox or is gone.
    pub fn is_closed(&self) -> bool {
        self.shared.space.is_closed()
    }
}

impl<T> Clone for InboxSender<T> {
    fn clone(&self) -> Self {
        senders::added(&self.shared.state);
        InboxSender {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Drop for InboxSender<T> {
    fn drop(&mut self) {
        if senders::dropped(&self.shared.state) {
            self.shared.notify.notify_one();
        }
    }
}

impl<T> InboxReceiver<T> {
    /// The next command; `None` once the inbox is closed or every sender is gone, and
    /// nothing is queued.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            {
                let mut state = self.shared.lock();
                if let Some(command) = self.pop(&mut state) {
                    return Some(command);
                }
                if state.senders == 0 || self.shared.space.is_closed() {
                    return None;
                }
            }
            self.shared.notify.notified().await;
        }
    }

    /// Moves up to `limit` queued commands to the end of `into` without waiting, under one
    /// lock (a room takes a whole turn's worth at once). Returns how many it moved.
    pub fn take_into(&mut self, into: &mut Vec<T>, limit: usize) -> usize {
        let taken = {
            let mut state = self.shared.lock();
            let taken = limit.min(state.queue.len());
            into.extend(state.queue.drain(..taken));
            if state.queue.is_empty() {
                state.queue = VecDeque::new();
            }
            taken
        };
        if taken > 0 && !self.shared.space.is_closed() {
            self.shared.space.add_permits(taken);
        }
        taken
    }

    /// Whether no command is queued.
    pub fn is_empty(&self) -> bool {
        self.shared.lock().queue.is_empty()
    }

    /// Refuses every later send (waiting senders fail too); queued commands can still be
    /// taken.
    pub fn close(&mut self) {
        let _state = self.shared.lock();
        self.shared.space.close();
    }

    fn pop(&self, state: &mut State<T>) -> Option<T> {
        let command = state.queue.pop_front()?;
        // A drained queue gives its buffer back: most rooms are idle most of the time, and
        // a buffer kept from a burst would cost every one of them (issue 7).
        if state.queue.is_empty() {
            state.queue = VecDeque::new();
        }
        if !self.shared.space.is_closed() {
            self.shared.space.add_permits(1);
        }
        Some(command)
    }
}

impl<T> Drop for InboxReceiver<T> {
    fn drop(&mut self) {
        let queued = {
            let mut state = self.shared.lock();
            self.shared.space.close();
            std::mem::take(&mut state.queue)
        };
        // Dropped outside the lock: a command's drop may run a sender's code (a oneshot).
        drop(queued);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commands_arrive_in_order() {
        let (tx, mut rx) = channel(8);
        for n in 0..5 {
            tx.send(n).await.expect("room for five");
        }
        for n in 0..5 {
            assert_eq!(rx.recv().await, Some(n));
        }
    }

    #[tokio::test]
    async fn a_full_inbox_refuses_try_send_and_frees_a_slot_per_command_taken() {
        let (tx, mut rx) = channel(2);
        tx.try_send(1).expect("free slot");
        tx.try_send(2).expect("free slot");
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert_eq!(rx.recv().await, Some(1));
        tx.try_send(3).expect("a slot was freed");
        assert_eq!(tx.try_send(4), Err(TrySendError::Full(4)));
        let mut taken = Vec::new();
        assert_eq!(rx.take_into(&mut taken, 10), 2);
        assert_eq!(taken, vec![2, 3]);
        tx.try_send(4).expect("both slots free");
        tx.try_send(5).expect("both slots free");
    }

    #[tokio::test]
    async fn a_waiting_sender_goes_on_once_the_room_takes_a_command() {
        let (tx, mut rx) = channel(1);
        tx.send(1).await.expect("free slot");
        let waiting = tokio::spawn(async move { tx.send(2).await.is_ok() });
        // Whether the sender is already waiting or not, it must get the slot.
        tokio::task::yield_now().await;
        assert_eq!(rx.recv().await, Some(1));
        assert!(waiting.await.expect("sender task"));
        assert_eq!(rx.recv().await, Some(2));
    }

    #[tokio::test]
    async fn take_into_stops_at_the_limit() {
        let (tx, mut rx) = channel(16);
        for n in 0..10 {
            tx.try_send(n).expect("free slot");
        }
        let mut taken = vec![100];
        assert_eq!(rx.take_into(&mut taken, 4), 4);
        assert_eq!(taken, vec![100, 0, 1, 2, 3]);
        assert!(!rx.is_empty());
        assert_eq!(rx.recv().await, Some(4));
    }

    #[tokio::test]
    async fn closing_refuses_new_and_waiting_sends_but_keeps_what_is_queued() {
        let (tx, mut rx) = channel(1);
        tx.send(1).await.expect("free slot");
        let waiter = tx.clone();
        let waiting = tokio::spawn(async move { waiter.send(2).await });
        tokio::task::yield_now().await;
        assert!(!tx.is_closed());
        rx.close();
        assert!(tx.is_closed());
        assert_eq!(waiting.await.expect("sender task"), Err(Closed(2)));
        assert_eq!(tx.send(3).await, Err(Closed(3)));
        assert_eq!(tx.try_send(4), Err(TrySendError::Closed(4)));
        // What was queued before the close is still there to drain.
        assert!(!rx.is_empty());
        let mut drained = Vec::new();
        rx.take_into(&mut drained, 10);
        assert_eq!(drained, vec![1]);
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn the_end_comes_after_the_last_sender_drops_and_the_queue_drains() {
        let (tx, mut rx) = channel(8);
        let second = tx.clone();
        tx.send(1).await.expect("free slot");
        drop(tx);
        second.send(2).await.expect("still open");
        drop(second);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, None);
        assert_eq!(rx.recv().await, None, "the end is sticky");
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_a_command_from_another_task() {
        let (tx, mut rx) = channel(8);
        let reader = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.send(42).await.expect("free slot");
        assert_eq!(reader.await.expect("reader task"), Some(42));
    }

    #[tokio::test]
    async fn a_dropped_receiver_closes_the_inbox_and_frees_what_was_queued() {
        let (tx, rx) = channel(8);
        let command = Arc::new(());
        tx.send(Arc::clone(&command)).await.expect("free slot");
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(
            Arc::strong_count(&command),
            1,
            "the queued command was dropped"
        );
        assert!(matches!(
            tx.try_send(Arc::clone(&command)),
            Err(TrySendError::Closed(_))
        ));
    }

    #[tokio::test]
    async fn an_idle_inbox_holds_no_buffer() {
        let (tx, mut rx) = channel(1024);
        assert_eq!(rx.shared.lock().queue.capacity(), 0, "nothing before use");
        for n in 0..300 {
            tx.try_send(n).expect("free slot");
        }
        assert!(rx.shared.lock().queue.capacity() >= 300);
        let mut taken = Vec::new();
        rx.take_into(&mut taken, 200);
        assert!(
            rx.shared.lock().queue.capacity() > 0,
            "kept while commands wait"
        );
        for n in 200..300 {
            assert_eq!(rx.recv().await, Some(n));
        }
        assert_eq!(rx.shared.lock().queue.capacity(), 0, "freed once drained");
        // And every slot is free again.
        for n in 0..1024 {
            tx.try_send(n).expect("free slot");
        }
        assert!(matches!(tx.try_send(0), Err(TrySendError::Full(0))));
    }

    #[test]
    fn an_idle_room_inbox_is_one_small_allocation() {
        // What every loaded document pays for its inbox while nothing arrives: the shared
        // state behind one `Arc` (plus its two counters), no queue buffer. A tokio `mpsc`
        // channel's first block of room commands alone was about 1.8 KiB.
        let bytes = std::mem::size_of::<Shared<crate::rooms::RoomCommand>>() + 16;
        assert!(bytes <= 192, "an idle inbox takes {bytes} bytes");
    }
}
