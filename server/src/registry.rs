//! The session registry: every client connection, whatever its transport, as an admin sees it.
//!
//! A transport registers a connection with [`Registry::open`] and keeps the returned
//! [`SessionHandle`] for the connection's life: it reports state changes and traffic through
//! the handle (atomics, no lock on the data path) and listens on
//! [`SessionHandle::disconnect_requested`] for an admin's disconnect. Dropping the handle marks
//! the session CLOSED; closed sessions stay visible for [`CLOSED_GRACE`] and are then swept out
//! on the next registry call.
//!
//! ```
//! use aetherflow_server::registry::{Registry, SessionState, Transport};
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
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use uuid::Uuid;

use crate::metrics::{Metrics, Traffic};
use crate::rooms::CloseReason;

/// How long a closed session stays listed, so an admin can see how it ended.
pub const CLOSED_GRACE: Duration = Duration::from_secs(10);

/// How a client is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// y-websocket over a WebSocket.
    Websocket,
    /// The Quantum reliable-UDP transport for native clients.
    Quantum,
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SessionState {
    /// Accepted, not yet joined to its document.
    Connecting,
    /// Joined and heard from within the last heartbeat interval.
    Active,
    /// Left the last heartbeat unanswered; closed if the next one goes unanswered too.
    Idle,
    /// Closing: the close frame is on its way.
    Disconnecting,
    /// Gone; listed for [`CLOSED_GRACE`] more.
    Closed,
}

impl SessionState {
    const ALL: [SessionState; 5] = [
        SessionState::Connecting,
        SessionState::Active,
        SessionState::Idle,
        SessionState::Disconnecting,
        SessionState::Closed,
    ];

    fn from_u8(value: u8) -> SessionState {
        Self::ALL
            .get(usize::from(value))
            .copied()
            .unwrap_or(SessionState::Closed)
    }

    fn as_u8(self) -> u8 {
        self as u8
    }
}

/// A snapshot of one session, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionView {
    /// UUIDv7: sorts by creation time.
    pub id: Uuid,
    /// Token subject, or `anonymous` when the relay runs open.
    pub user: String,
    /// How the client is connected.
    pub transport: Transport,
    /// The client's address as the relay sees it.
    pub remote_addr: SocketAddr,
    /// Documents the session is on.
    pub documents: Vec<String>,
    /// Where the session is in its life.
    pub state: SessionState,
    /// When it connected, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// When the client last sent anything (a pong counts), milliseconds since the Unix epoch.
    pub last_active_ms: u64,
    /// Payload bytes received from the client.
    pub bytes_in: u64,
    /// Payload bytes sent to the client.
    pub bytes_out: u64,
    /// Data messages received from the client.
    pub messages_in: u64,
    /// Data messages sent to the client.
    pub messages_out: u64,
    /// How the session ended, once it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close: Option<CloseView>,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CloseView {
    /// The close code sent, if a close frame went out.
    pub code: Option<u16>,
    /// The reason sent with it.
    pub reason: Option<String>,
    /// When, milliseconds since the Unix epoch.
    pub closed_ms: u64,
}

/// Which sessions a listing wants; `None` fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Exact user.
    pub user: Option<String>,
    /// Sessions on this document.
    pub document: Option<String>,
    /// This transport.
    pub transport: Option<Transport>,
    /// This state.
    pub state: Option<SessionState>,
}

/// One page of a listing.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// Up to the requested number of sessions, oldest first.
    pub sessions: Vec<SessionView>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<Uuid>,
}

/// Why an admin's disconnect did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DisconnectError {
    /// No session with this id (or it closed longer than [`CLOSED_GRACE`] ago).
    #[error("no session {0}")]
    NotFound(Uuid),
    /// The session is already closing or closed.
    #[error("session {0} is already closing or closed")]
    AlreadyClosing(Uuid),
}

struct Entry {
    id: Uuid,
    user: String,
    transport: Transport,
    remote_addr: SocketAddr,
    documents: Mutex<Vec<String>>,
    state: AtomicU8,
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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
        let state = SessionState::from_u8(entry.state.load(Ordering::Acquire));
        // Checked again under the lock: the handle's drop records the end under it too, so a
        // session cannot close between the check and the token (which would never be cancelled).
        let on_close = entry.ending(|ending| {
            if matches!(state, SessionState::Disconnecting | SessionState::Closed)
                || ending.kick_reason.is_some()
                || ending.closed.is_some()
            {
                return Err(DisconnectError::AlreadyClosing(id));
            }
            ending.kick_reason = Some(reason);
            Ok(ending
                .on_close
                .get_or_insert_with(CancellationToken::new)
                .clone())
        })?;
        entry.kick.notify_one();
        Ok(on_close.cancelled_owned())
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

    /// The client's address as the relay sees it.
    pub fn remote_addr(&self) -> SocketAddr {
        self.entry.remote_addr
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
    pub async fn disconnect_requested(&self) -> CloseReason {
        self.entry.kick.notified().await;
        self.entry
            .ending(|ending| ending.kick_reason.clone())
            .unwrap_or_else(|| CloseReason::new(CloseReason::POLICY_VIOLATION, "disconnected"))
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:4000".parse().unwrap()
    }

    fn open(registry: &Registry, user: &str, doc: &str, transport: Transport) -> SessionHandle {
        registry.open(user, transport, addr(), vec![doc.into()])
    }

    #[test]
    fn filters_combine_and_match_exactly() {
        let registry = Registry::new();
        let a = open(&registry, "ada", "notes", Transport::Websocket);
        let _b = open(&registry, "bob", "notes", Transport::Websocket);
        let c = open(&registry, "ada", "plans", Transport::Quantum);
        a.set_state(SessionState::Active);
        c.set_state(SessionState::Active);
        let ids = |filter: Filter| -> Vec<Uuid> {
            let page = registry.list(&filter, None, 100);
            page.sessions.iter().map(|s| s.id).collect()
        };
        let by_user = Filter {
            user: Some("ada".into()),
            ..Filter::default()
        };
        assert_eq!(ids(by_user), vec![a.id(), c.id()]);
        let by_doc_and_state = Filter {
            document: Some("notes".into()),
            state: Some(SessionState::Active),
            ..Filter::default()
        };
        assert_eq!(ids(by_doc_and_state), vec![a.id()]);
        let quantum = Filter {
            transport: Some(Transport::Quantum),
            ..Filter::default()
        };
        assert_eq!(ids(quantum), vec![c.id()]);
        let nobody = Filter {
            user: Some("ad".into()),
            ..Filter::default()
        };
        assert!(ids(nobody).is_empty());
    }

    #[test]
    fn pages_cover_every_session_once_in_creation_order() {
        let registry = Registry::new();
        let handles: Vec<_> = (0..7)
            .map(|i| open(&registry, &format!("u{i}"), "d", Transport::Websocket))
            .collect();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = registry.list(&Filter::default(), after, 3);
            assert!(page.sessions.len() <= 3);
            seen.extend(page.sessions.iter().map(|s| s.id));
            match page.next_after {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let expected: Vec<_> = handles.iter().map(|h| h.id()).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_pong_brings_an_idle_session_back_but_not_a_closing_one() {
        let registry = Registry::new();
        let handle = open(&registry, "ada", "d", Transport::Websocket);
        handle.set_state(SessionState::Idle);
        handle.heard_from();
        assert_eq!(
            registry.get(handle.id()).unwrap().state,
            SessionState::Active
        );
        handle.closing(None);
        handle.heard_from();
        assert_eq!(
            registry.get(handle.id()).unwrap().state,
            SessionState::Disconnecting
        );
    }

    #[test]
    fn counters_add_up() {
        let registry = Registry::new();
        let handle = open(&registry, "ada", "d", Transport::Websocket);
        handle.received(10);
        handle.received(5);
        handle.sent(7);
        let view = registry.get(handle.id()).unwrap();
        assert_eq!((handle.user(), handle.remote_addr()), ("ada", addr()));
        assert_eq!((view.messages_in, view.bytes_in), (2, 15));
        assert_eq!((view.messages_out, view.bytes_out), (1, 7));
    }

    #[tokio::test]
    async fn disconnect_delivers_the_reason_and_waits_for_the_close() {
        let registry = Registry::new();
        let handle = open(&registry, "ada", "d", Transport::Websocket);
        let id = handle.id();
        let reason = CloseReason::new(CloseReason::POLICY_VIOLATION, "bye");
        let closed = registry.disconnect(id, reason.clone()).unwrap();
        assert!(matches!(
            registry.disconnect(id, reason.clone()),
            Err(DisconnectError::AlreadyClosing(_))
        ));
        let transport = tokio::spawn(async move {
            let got = handle.disconnect_requested().await;
            handle.closing(Some(&got));
            got
        });
        closed.await;
        assert_eq!(transport.await.unwrap(), reason);
        let view = registry.get(id).unwrap();
        assert_eq!(view.state, SessionState::Closed);
        let close = view.close.unwrap();
        assert_eq!(close.code, Some(CloseReason::POLICY_VIOLATION));
        assert_eq!(close.reason.as_deref(), Some("bye"));
    }

    #[tokio::test]
    async fn a_disconnect_of_a_transport_that_never_waits_still_resolves_when_it_closes() {
        let registry = Registry::new();
        let handle = open(&registry, "ada", "d", Transport::Websocket);
        let closed = registry
            .disconnect(
                handle.id(),
                CloseReason::new(CloseReason::POLICY_VIOLATION, "bye"),
            )
            .unwrap();
        drop(handle);
        closed.await;
    }

    #[test]
    fn a_closed_session_cannot_be_disconnected() {
        let registry = Registry::new();
        let handle = open(&registry, "ada", "d", Transport::Websocket);
        let id = handle.id();
        drop(handle);
        assert!(matches!(
            registry.disconnect(id, CloseReason::new(CloseReason::POLICY_VIOLATION, "x")),
            Err(DisconnectError::AlreadyClosing(_))
        ));
    }

    #[test]
    fn an_idle_session_keeps_no_ending_record() {
        let registry = Registry::new();
        let handle = open(&registry, "ada", "d", Transport::Websocket);
        handle.set_state(SessionState::Active);
        handle.received(3);
        handle.sent(4);
        let entry = registry.sweep().get(&handle.id()).cloned().unwrap();
        assert!(lock(&entry.ending).is_none(), "allocated only once it ends");
        handle.closing(None);
        assert!(lock(&entry.ending).is_some());
    }

    #[test]
    fn a_closed_session_stays_listed_for_the_grace_then_leaves() {
        let registry = Registry::new();
        let open_one = open(&registry, "ada", "d", Transport::Websocket);
        let closed = open(&registry, "bob", "d", Transport::Websocket);
        let id = closed.id();
        drop(closed);
        let now = Instant::now();
        assert_eq!(registry.sweep_at(now).len(), 2);
        assert_eq!(registry.get(id).unwrap().state, SessionState::Closed);
        let later = now + CLOSED_GRACE + Duration::from_millis(1);
        let remaining: Vec<Uuid> = registry.sweep_at(later).keys().copied().collect();
        assert_eq!(remaining, vec![open_one.id()]);
        assert!(registry.get(id).is_none());
    }

    #[test]
    fn unknown_sessions_cannot_be_disconnected() {
        let registry = Registry::new();
        let id = Uuid::now_v7();
        let reason = CloseReason::new(CloseReason::POLICY_VIOLATION, "x");
        assert!(matches!(
            registry.disconnect(id, reason),
            Err(DisconnectError::NotFound(_))
        ));
    }

    #[test]
    fn an_unknown_state_byte_reads_as_closed() {
        assert_eq!(SessionState::from_u8(200), SessionState::Closed);
        for state in SessionState::ALL {
            assert_eq!(SessionState::from_u8(state.as_u8()), state);
        }
    }
}
