//! The session registry: every client connection, whatever its transport, as an admin sees it.
//!
//! A transport registers a connection with [`Registry::open`] and keeps the returned
//! [`SessionHandle`] for the connection's life: it reports state changes and traffic through
//! the handle (atomics, no lock on the data path) and listens on
//! [`SessionHandle::disconnect_requested`] for an admin's disconnect. Dropping the handle marks
//! the session CLOSED; closed sessions stay visible for [`CLOSED_GRACE`] and are then swept out
//! on the next registry call.
//!
//! A session opened with a token records the token's `exp` ([`SessionHandle::expires_at`]);
//! one task for the whole relay, [`Registry::close_expired`], asks sessions whose token has
//! expired to close with [`CloseReason::TOKEN_EXPIRED`] through the same request an admin's
//! disconnect makes, so no connection needs a timer of its own.
//!
//! ```
//! use aetherflow_server::sessions::{Registry, SessionState, Transport};
//!
//! let registry = Registry::new();
//! let handle = registry.open("ada", Transport::Websocket, "127.0.0.1:5000".parse().unwrap(), vec!["notes".into()]);
//! handle.set_state(SessionState::Active);
//! handle.received(120);
//! let view = registry.get(handle.id()).unwrap();
//! assert_eq!(view.state, SessionState::Active);
//! assert_eq!((view.messages_in, view.bytes_in), (1, 120));
//! drop(handle);
//! assert_eq!(registry.get(view.id).unwrap().state, SessionState::Closed);
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use uuid::Uuid;

use crate::connection::CloseReason;
use crate::metrics::{Metrics, Traffic};
use crate::wall_clock::now_ms;

pub mod cluster;
mod view;

pub use view::{CloseView, DisconnectError, Filter, Page, SessionState, SessionView, Transport};

/// How long a closed session stays listed, so an admin can see how it ended.
pub const CLOSED_GRACE: Duration = Duration::from_secs(10);

/// How often [`Registry::close_expired`] looks for sessions whose token expired: a session
/// ends within this long after its token's `exp`.
pub const EXPIRY_CHECK: Duration = Duration::from_secs(1);

struct Entry {
    id: Uuid,
    user: String,
    transport: Transport,
    remote_addr: SocketAddr,
    documents: Mutex<Vec<String>>,
    state: AtomicU8,
    /// The token's `exp` in seconds since the Unix epoch (later than 2106 is clamped), 0 for a
    /// session that never expires. 32 bits: it fits where the entry had padding (issue 7).
    expires_s: AtomicU32,
    created_ms: u64,
    last_active_ms: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    /// Woken (with a stored permit, for the transport's one waiter) when an admin asks for a
    /// disconnect; the reason is in `ending`.
    kick: Notify,
    /// How the session ends. Boxed and created only once it starts to (a disconnect request,
    /// a close): an idle session pays one pointer for it, not the whole record (issue 7).
    ending: Mutex<Option<Box<Ending>>>,
    /// The relay-wide counters of this transport, next to the session's own.
    traffic: Traffic,
}

/// The end of a session, as far as it got.
#[derive(Default)]
struct Ending {
    /// The admin's disconnect request, once made.
    kick_reason: Option<CloseReason>,
    /// The close frame the transport is sending, recorded when it starts closing.
    sent_close: Option<CloseReason>,
    /// Set once: the close frame sent (if any), when (ms since the epoch) and the instant the
    /// session ended.
    closed: Option<(Option<CloseReason>, u64, Instant)>,
    /// Cancelled when the session ends; created only for an admin's disconnect to wait on.
    on_close: Option<CancellationToken>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here only assigns plain values, so a panic elsewhere cannot leave
    // the data half-written.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Entry {
    fn view(&self) -> SessionView {
        let close = lock(&self.ending)
            .as_ref()
            .and_then(|ending| ending.closed.as_ref())
            .map(|(reason, closed_ms, _)| CloseView {
                code: reason.as_ref().map(|r| r.code),
                reason: reason.as_ref().map(|r| r.reason.clone()),
                closed_ms: *closed_ms,
            });
        SessionView {
            id: self.id,
            user: self.user.clone(),
            transport: self.transport,
            remote_addr: self.remote_addr,
            documents: lock(&self.documents).clone(),
            state: SessionState::from_u8(self.state.load(Ordering::Acquire)),
            created_ms: self.created_ms,
            last_active_ms: self.last_active_ms.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            messages_in: self.messages_in.load(Ordering::Relaxed),
            messages_out: self.messages_out.load(Ordering::Relaxed),
            close,
        }
    }

    fn matches(&self, filter: &Filter) -> bool {
        filter.user.as_ref().is_none_or(|user| *user == self.user)
            && filter.transport.is_none_or(|t| t == self.transport)
            && filter
                .state
                .is_none_or(|s| s.as_u8() == self.state.load(Ordering::Acquire))
            && filter
                .document
                .as_ref()
                .is_none_or(|doc| lock(&self.documents).contains(doc))
    }

    fn closed_before(&self, cutoff: Instant) -> bool {
        lock(&self.ending)
            .as_ref()
            .and_then(|ending| ending.closed.as_ref())
            .is_some_and(|(_, _, at)| *at < cutoff)
    }

    /// Records a request to close with `reason` and wakes the transport; the token is
    /// cancelled once the session has closed. Refused if it is already closing or closed.
    fn request_close(&self, reason: CloseReason) -> Result<CancellationToken, DisconnectError> {
        let state = SessionState::from_u8(self.state.load(Ordering::Acquire));
        // Checked again under the lock: the handle's drop records the end under it too, so a
        // session cannot close between the check and the token (which would never be cancelled).
        let on_close = self.ending(|ending| {
            if matches!(state, SessionState::Disconnecting | SessionState::Closed)
                || ending.kick_reason.is_some()
                || ending.closed.is_some()
            {
                return Err(DisconnectError::AlreadyClosing(self.id));
            }
            ending.kick_reason = Some(reason);
            Ok(ending
                .on_close
                .get_or_insert_with(CancellationToken::new)
                .clone())
        })?;
        self.kick.notify_one();
        Ok(on_close)
    }

    /// Runs `f` on the session's ending record, creating it first if need be.
    fn ending<T>(&self, f: impl FnOnce(&mut Ending) -> T) -> T {
        f(lock(&self.ending).get_or_insert_with(Box::default))
    }
}

/// All sessions of the relay. Cheap to clone.
#[derive(Clone, Default)]
pub struct Registry {
    sessions: Arc<Mutex<BTreeMap<Uuid, Arc<Entry>>>>,
    /// Where traffic is also counted relay-wide (a detached set without metrics).
    metrics: Metrics,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// An empty registry whose sessions also count their traffic in `metrics`.
    pub fn with_metrics(metrics: &Metrics) -> Registry {
        Registry {
            sessions: Arc::default(),
            metrics: metrics.clone(),
        }
    }

    /// Transport and state of every listed session, for the metrics' gauges.
    pub fn census(&self) -> Vec<(Transport, SessionState)> {
        self.sweep()
            .values()
            .map(|e| {
                (
                    e.transport,
                    SessionState::from_u8(e.state.load(Ordering::Acquire)),
                )
            })
            .collect()
    }

    /// Registers a new connection in state CONNECTING.
    pub fn open(
        &self,
        user: &str,
        transport: Transport,
        remote_addr: SocketAddr,
        documents: Vec<String>,
    ) -> SessionHandle {
        let now = now_ms();
        let entry = Arc::new(Entry {
            id: Uuid::now_v7(),
            user: user.to_owned(),
            transport,
            remote_addr,
            documents: Mutex::new(documents),
            state: AtomicU8::new(SessionState::Connecting.as_u8()),
            expires_s: AtomicU32::new(0),
            created_ms: now,
            last_active_ms: AtomicU64::new(now),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            kick: Notify::new(),
            ending: Mutex::new(None),
            traffic: self.metrics.traffic(transport),
        });
        let mut sessions = self.sweep();
        sessions.insert(entry.id, entry.clone());
        SessionHandle { entry }
    }

    /// The session `id`, if it is open or closed within [`CLOSED_GRACE`].
    pub fn get(&self, id: Uuid) -> Option<SessionView> {
        self.sweep().get(&id).map(|entry| entry.view())
    }

    /// Up to `limit` sessions matching `filter` with ids after `after`, oldest first.
    pub fn list(&self, filter: &Filter, after: Option<Uuid>, limit: usize) -> Page {
        use std::ops::Bound;
        let sessions = self.sweep();
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut matching = sessions
            .range((start, Bound::Unbounded))
            .map(|(_, entry)| entry)
            .filter(|entry| entry.matches(filter));
        let page: Vec<SessionView> = matching.by_ref().take(limit).map(|e| e.view()).collect();
        let more = matching.next().is_some();
        let next_after = if more {
            page.last().map(|s| s.id)
        } else {
            None
        };
        Page {
            sessions: page,
            next_after,
        }
    }

    /// Asks session `id` to close with `reason`. Returns a future resolving once it has
    /// closed (the handle was dropped) or immediately if it already had.
    pub fn disconnect(
        &self,
        id: Uuid,
        reason: CloseReason,
    ) -> Result<WaitForCancellationFutureOwned, DisconnectError> {
        let entry = self
            .sweep()
            .get(&id)
            .cloned()
            .ok_or(DisconnectError::NotFound(id))?;
        Ok(entry.request_close(reason)?.cancelled_owned())
    }

    /// Asks every session matching `filter` that is not already closing to close with
    /// `reason`; returns how many were asked.
    pub fn disconnect_matching(&self, filter: &Filter, reason: &CloseReason) -> usize {
        let matching: Vec<Arc<Entry>> = self
            .sweep()
            .values()
            .filter(|entry| entry.matches(filter))
            .cloned()
            .collect();
        matching
            .iter()
            .filter(|entry| entry.request_close(reason.clone()).is_ok())
            .count()
    }

    /// Asks every session whose token expired by `now_s` (seconds since the Unix epoch) to
    /// close with 4401; returns how many were asked. A session is asked once.
    pub fn close_expired_at(&self, now_s: u64) -> usize {
        let due: Vec<Arc<Entry>> = self
            .sweep()
            .values()
            .filter(|entry| {
                let expires = entry.expires_s.load(Ordering::Relaxed);
                expires != 0 && u64::from(expires) <= now_s
            })
            .cloned()
            .collect();
        let reason = CloseReason::new(
            CloseReason::TOKEN_EXPIRED,
            "token expired; reconnect with a fresh token",
        );
        due.iter()
            .filter(|entry| entry.request_close(reason.clone()).is_ok())
            .count()
    }

    /// Closes sessions as their tokens expire, checking once a second, until `shutdown`.
    /// One task for the whole relay.
    pub async fn close_expired(self, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(EXPIRY_CHECK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {
                    let asked = self.close_expired_at(now_ms() / 1000);
                    if asked > 0 {
                        tracing::info!(sessions = asked, "token expired; closing sessions");
                    }
                }
            }
        }
    }

    /// Number of sessions listed (open, or closed within the grace).
    pub fn len(&self) -> usize {
        self.sweep().len()
    }

    /// Whether no session is listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Locks the map after removing sessions closed longer than [`CLOSED_GRACE`] ago.
    fn sweep(&self) -> MutexGuard<'_, BTreeMap<Uuid, Arc<Entry>>> {
        self.sweep_at(Instant::now())
    }

    fn sweep_at(&self, now: Instant) -> MutexGuard<'_, BTreeMap<Uuid, Arc<Entry>>> {
        let mut sessions = lock(&self.sessions);
        if let Some(cutoff) = now.checked_sub(CLOSED_GRACE) {
            sessions.retain(|_, entry| !entry.closed_before(cutoff));
        }
        sessions
    }
}

/// A transport's handle on its session. Dropping it marks the session CLOSED.
pub struct SessionHandle {
    entry: Arc<Entry>,
}

impl SessionHandle {
    /// The session's id.
    pub fn id(&self) -> Uuid {
        self.entry.id
    }

    /// The user the session was opened for.
    pub fn user(&self) -> &str {
        &self.entry.user
    }

    /// The client's address: the TCP peer's, or behind a trusted proxy the forwarded one.
    pub fn remote_addr(&self) -> SocketAddr {
        self.entry.remote_addr
    }

    /// Ends the session when its token expires, at `exp_s` seconds since the Unix epoch.
    pub fn expires_at(&self, exp_s: u64) {
        let exp_s = u32::try_from(exp_s).unwrap_or(u32::MAX).max(1);
        self.entry.expires_s.store(exp_s, Ordering::Relaxed);
    }

    /// Moves the session to `state` (CLOSED is set by dropping the handle).
    pub fn set_state(&self, state: SessionState) {
        self.entry.state.store(state.as_u8(), Ordering::Release);
    }

    /// The client was heard from (any frame, a pong included): an IDLE session is ACTIVE again.
    pub fn heard_from(&self) {
        self.entry.last_active_ms.store(now_ms(), Ordering::Relaxed);
        let _ = self.entry.state.compare_exchange(
            SessionState::Idle.as_u8(),
            SessionState::Active.as_u8(),
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }

    /// One data message of `bytes` payload bytes arrived from the client.
    pub fn received(&self, bytes: usize) {
        self.heard_from();
        self.entry.traffic.received(bytes);
        self.entry.messages_in.fetch_add(1, Ordering::Relaxed);
        self.entry
            .bytes_in
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// One data message of `bytes` payload bytes went to the client.
    pub fn sent(&self, bytes: usize) {
        self.entry.traffic.sent(bytes);
        self.entry.messages_out.fetch_add(1, Ordering::Relaxed);
        self.entry
            .bytes_out
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Adds a document to the session (a transport multiplexing several).
    pub fn add_document(&self, document: &str) {
        let mut documents = lock(&self.entry.documents);
        if !documents.iter().any(|d| d == document) {
            documents.push(document.to_owned());
        }
    }

    /// Resolves when an admin asks for this session to close; returns the close reason to send.
    ///
    /// Meant for one waiter, the transport's session loop: a request made before it waits is
    /// kept for it.
    pub fn disconnect_requested(&self) -> impl Future<Output = CloseReason> + Send + 'static {
        // Owns its share of the entry, so a session can hold it beside its handle.
        let entry = self.entry.clone();
        async move {
            entry.kick.notified().await;
            entry
                .ending(|ending| ending.kick_reason.clone())
                .unwrap_or_else(|| CloseReason::new(CloseReason::POLICY_VIOLATION, "disconnected"))
        }
    }

    /// Records the close frame about to be sent (`None`: the peer is gone, nothing to send)
    /// and moves to DISCONNECTING.
    pub fn closing(&self, reason: Option<&CloseReason>) {
        self.entry
            .ending(|ending| ending.sent_close = reason.cloned());
        self.set_state(SessionState::Disconnecting);
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        let on_close = self.entry.ending(|ending| {
            let reason = ending.sent_close.take();
            ending.closed = Some((reason, now_ms(), Instant::now()));
            ending.on_close.take()
        });
        self.set_state(SessionState::Closed);
        if let Some(on_close) = on_close {
            on_close.cancel();
        }
    }
}

#[cfg(test)]
mod tests;
