//! What the room's two hand-made queues (`inbox`, `outbox`) share: a queue state behind a
//! mutex that tolerates poisoning, and a count of senders whose last drop wakes the reader.

use std::sync::{Mutex, MutexGuard};

/// A queue state that counts its senders.
pub(super) trait Senders {
    /// The live senders.
    fn senders(&mut self) -> &mut usize;
}

/// Locks a queue's state. Every critical section is a push, a pop or a counter update, so a
/// poisoned lock still guards a consistent queue.
pub(super) fn lock<S>(state: &Mutex<S>) -> MutexGuard<'_, S> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A sender was cloned.
pub(super) fn added<S: Senders>(state: &Mutex<S>) {
    *lock(state).senders() += 1;
}

/// A sender was dropped; says whether it was the last one, which must wake the reader (it
/// then ends once it has taken what is queued).
pub(super) fn dropped<S: Senders>(state: &Mutex<S>) -> bool {
    let mut state = lock(state);
    let senders = state.senders();
    *senders -= 1;
    *senders == 0
}
