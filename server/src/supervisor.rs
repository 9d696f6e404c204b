//! The rules every session obeys besides its protocol, whatever its transport (WebSocket,
//! the `/live` channel, Quantum): it ends when the relay shuts down or an admin (or its
//! token's expiry) disconnects it; the heartbeat finds it IDLE after one silent interval;
//! a write that makes no progress for [`STALLED_TICKS`] intervals closes it with 1013; its
//! data messages are charged to a message rate.
//!
//! A transport's session loop owns one [`Supervisor`] and asks it at each step: `select!` on
//! [`Supervisor::stopped`], call [`Supervisor::heard`] for every frame, [`Supervisor::tick`]
//! once per ping interval and [`Supervisor::charge`] for every data message. The transport
//! only translates the answers (a [`CloseReason`]) into its own close frame or error.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::connection::{CloseReason, SessionState};
use crate::heartbeat::{Beat, Heartbeat};
use crate::rate_limit::{Rate, TokenBucket};
use crate::sessions::SessionHandle;

/// Heartbeat ticks in a row that may find one write still pending (the peer stopped
/// reading): then the session is closed with 1013.
pub const STALLED_TICKS: u8 = 3;

/// How long the message rate may hold a session back without a break before it is closed
/// with 1008 (transports that hold back, rather than close at once: WebSocket).
pub const HOLD_LIMIT: Duration = Duration::from_secs(300);

/// What [`Supervisor::stopped`] waits on: the relay's shutdown or the session's disconnect
/// request.
///
/// A session's loop polls it first at every turn, and a turn comes for every frame the
/// session sends or receives: a broadcast to a thousand readers is a thousand turns. So it
/// polls the two waits inside only after one of them woke it, and otherwise costs a flag.
pub struct Stop {
    /// The two waits. Boxed: it lives as long as the session, and idle sessions keep their
    /// futures small.
    waits: Pin<Box<dyn Future<Output = CloseReason> + Send>>,
    gate: Arc<Gate>,
}

/// Whether a [`Stop`]'s waits woke it since they were last polled, and the session to wake.
struct Gate {
    woken: AtomicBool,
    session: AtomicWaker,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.session.wake();
    }
}

impl Future for Stop {
    type Output = CloseReason;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CloseReason> {
        // Registered before the flag is read, so a wake in between is not lost.
        self.gate.session.register(cx.waker());
        if !self.gate.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = Waker::from(Arc::clone(&self.gate));
        self.waits.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

/// What a silent peer costs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silence {
    /// Two unanswered pings close the session (WebSocket, `/live`).
    Closes,
    /// A silent session only shows IDLE: the transport's own idle timeout, which sees
    /// keepalives the relay cannot, ends it (Quantum, whose writes are sends).
    ShowsIdle,
}

impl Silence {
    /// What the transport calls a write, for the log.
    fn write_word(self) -> &'static str {
        match self {
            Silence::Closes => "write",
            Silence::ShowsIdle => "send",
        }
    }
}

/// One session's supervisor. Owns nothing of the session but its own state, so a transport
/// can build it before the session's future exists (whatever that future captures it holds
/// for the connection's whole life).
pub struct Supervisor {
    /// Resolves when the relay shuts down or an admin (or the token's expiry) disconnects
    /// the session.
    stop: Stop,
    heartbeat: Heartbeat,
    silence: Silence,
    /// Ticks in a row that found the same write pending.
    stalled: u8,
    messages: Option<TokenBucket>,
}

impl Supervisor {
    /// Supervises the session of `handle`, ending it when `shutdown` is cancelled, charging
    /// its data messages to `message_rate` (`None`: unlimited).
    pub fn new(
        handle: &SessionHandle,
        shutdown: CancellationToken,
        message_rate: Option<Rate>,
        silence: Silence,
    ) -> Supervisor {
        let kicked = handle.disconnect_requested();
        let session = handle.id();
        let stop = async move {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    CloseReason::new(CloseReason::GOING_AWAY, "server shutting down")
                }
                reason = kicked => {
                    info!(%session, code = reason.code, reason = %reason.reason, "disconnect requested (admin, or token expired)");
                    reason
                }
            }
        };
        let gate = Arc::new(Gate {
            // The waits are polled once to register.
            woken: AtomicBool::new(true),
            session: AtomicWaker::new(),
        });
        Supervisor {
            stop: Stop {
                waits: Box::pin(stop),
                gate,
            },
            heartbeat: Heartbeat::new(),
            silence,
            stalled: 0,
            messages: message_rate.map(|rate| TokenBucket::new(rate, Instant::now())),
        }
    }

    /// Resolves once the session must end for a reason outside it: the relay shutting down
    /// (1001) or a disconnect request (its own reason). Cancel safe; resolves once, after
    /// which the session ends (do not wait on it again).
    pub fn stopped(&mut self) -> &mut Stop {
        &mut self.stop
    }

    /// The peer sent something (a pong counts).
    pub fn heard(&mut self) {
        self.heartbeat.heard();
    }

    /// A pending write completed.
    pub fn wrote(&mut self) {
        self.stalled = 0;
    }

    /// One ping interval passed, with a write still pending or not, and the message rate
    /// holding the session back since `held_since` or not. Sets IDLE on silence; says why to
    /// close, if the session must end.
    pub fn tick(
        &mut self,
        handle: &SessionHandle,
        write_pending: bool,
        held_since: Option<Instant>,
    ) -> Result<(), CloseReason> {
        match (self.heartbeat.tick(), self.silence) {
            (Beat::Ping, _) => {}
            (Beat::PingIdle, _) | (Beat::Timeout, Silence::ShowsIdle) => {
                handle.set_state(SessionState::Idle);
            }
            (Beat::Timeout, Silence::Closes) => {
                warn!("two pings unanswered; closing");
                return Err(CloseReason::new(CloseReason::GOING_AWAY, "ping timeout"));
            }
        }
        if write_pending {
            self.stalled += 1;
            if self.stalled >= STALLED_TICKS {
                let write = self.silence.write_word();
                warn!("connection not reading: no {write} progress; closing");
                return Err(CloseReason::new(
                    CloseReason::TRY_AGAIN_LATER,
                    "connection not reading; reconnect to resync",
                ));
            }
        }
        if held_since.is_some_and(|since| since.elapsed() >= HOLD_LIMIT) {
            warn!("message rate limit exceeded without a break; closing");
            return Err(CloseReason::new(
                CloseReason::POLICY_VIOLATION,
                format!(
                    "message rate limit exceeded for {} s without a break; slow down and reconnect",
                    HOLD_LIMIT.as_secs()
                ),
            ));
        }
        Ok(())
    }

    /// Charges one data message to the message rate; over it, the reason to close with.
    pub fn charge(&mut self) -> Result<(), CloseReason> {
        let Some(bucket) = self.messages.as_mut() else {
            return Ok(());
        };
        if bucket.try_take(Instant::now()).is_ok() {
            return Ok(());
        }
        warn!("message rate limit exceeded; closing");
        Err(CloseReason::new(
            CloseReason::POLICY_VIOLATION,
            format!(
                "message rate limit exceeded ({}/s, bursts of {}); slow down and reconnect",
                bucket.rate().tokens_per_second(),
                bucket.rate().burst()
            ),
        ))
    }

    /// The message rate's bucket, for a transport that holds a session back instead of
    /// closing it (WebSocket leaves its socket unread until the bucket refills).
    pub fn bucket(&mut self) -> Option<&mut TokenBucket> {
        self.messages.as_mut()
    }

    /// Records how the session ends (`None`: the peer is gone) and moves it to
    /// DISCONNECTING.
    pub fn closing(handle: &SessionHandle, reason: Option<&CloseReason>) {
        if let Some(reason) = reason {
            tracing::debug!(code = reason.code, reason = %reason.reason, "closing");
        }
        handle.closing(reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::Transport;
    use crate::sessions::Registry;

    fn handle() -> (Registry, SessionHandle) {
        let remote = std::net::SocketAddr::from(([127, 0, 0, 1], 4000));
        let registry = Registry::new();
        let handle = registry.open("someone", Transport::Websocket, remote, vec!["d".into()]);
        (registry, handle)
    }

    #[test]
    fn a_write_pending_at_three_ticks_in_a_row_closes_with_1013() {
        let (_registry, handle) = handle();
        let mut supervisor =
            Supervisor::new(&handle, CancellationToken::new(), None, Silence::Closes);
        // The peer keeps talking, so only the stalled write can end the session.
        for _ in 0..2 {
            supervisor.heard();
            assert_eq!(supervisor.tick(&handle, true, None), Ok(()));
        }
        // A write that completes starts the count again.
        supervisor.wrote();
        for _ in 0..2 {
            supervisor.heard();
            assert_eq!(supervisor.tick(&handle, true, None), Ok(()));
        }
        supervisor.heard();
        let reason = supervisor
            .tick(&handle, true, None)
            .expect_err("stalled three ticks");
        assert_eq!(reason.code, CloseReason::TRY_AGAIN_LATER);
    }

    #[test]
    fn a_session_held_back_past_the_hold_limit_closes_with_1008() {
        let (_registry, handle) = handle();
        let mut supervisor =
            Supervisor::new(&handle, CancellationToken::new(), None, Silence::Closes);
        assert_eq!(
            supervisor.tick(&handle, false, Some(Instant::now())),
            Ok(())
        );
        let Some(long_ago) = Instant::now().checked_sub(HOLD_LIMIT + Duration::from_secs(1)) else {
            return; // a machine up for less than the hold limit cannot express it
        };
        supervisor.heard();
        let reason = supervisor
            .tick(&handle, false, Some(long_ago))
            .expect_err("held too long");
        assert_eq!(reason.code, CloseReason::POLICY_VIOLATION);
    }

    #[test]
    fn silence_closes_or_only_shows_idle_by_transport() {
        for (silence, closes) in [(Silence::Closes, true), (Silence::ShowsIdle, false)] {
            let (registry, handle) = handle();
            let mut supervisor = Supervisor::new(&handle, CancellationToken::new(), None, silence);
            assert_eq!(supervisor.tick(&handle, false, None), Ok(()));
            assert_eq!(supervisor.tick(&handle, false, None), Ok(()));
            let view = registry.get(handle.id()).expect("listed");
            assert_eq!(view.state, SessionState::Idle);
            assert_eq!(
                supervisor.tick(&handle, false, None).is_err(),
                closes,
                "{silence:?}"
            );
        }
    }

    #[test]
    fn the_message_rate_closes_past_its_burst() {
        let (_registry, handle) = handle();
        let rate = Rate::per_minute(1, 2);
        let mut supervisor = Supervisor::new(
            &handle,
            CancellationToken::new(),
            Some(rate),
            Silence::Closes,
        );
        assert_eq!(supervisor.charge(), Ok(()));
        assert_eq!(supervisor.charge(), Ok(()));
        let reason = supervisor.charge().expect_err("over the burst");
        assert_eq!(reason.code, CloseReason::POLICY_VIOLATION);
    }

    /// Counts the wakes of a session.
    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_stop_polled_again_and_again_still_wakes_its_session_for_a_later_request() {
        let (registry, handle) = handle();
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(&handle, shutdown, None, Silence::Closes);
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        // Every turn of the session's loop polls it; nothing is due.
        for _ in 0..3 {
            assert!(Pin::new(supervisor.stopped()).poll(&mut cx).is_pending());
        }
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        let later = CloseReason::new(CloseReason::POLICY_VIOLATION, "later");
        let _closed = registry.disconnect(handle.id(), later).expect("listed");
        assert!(
            wakes.0.load(Ordering::SeqCst) > 0,
            "the session was not woken"
        );
        match Pin::new(supervisor.stopped()).poll(&mut cx) {
            Poll::Ready(reason) => assert_eq!(reason.reason, "later"),
            Poll::Pending => panic!("woken, but the stop is still pending"),
        }
    }

    #[tokio::test]
    async fn shutdown_and_a_disconnect_request_stop_the_session() {
        let (registry, handle) = handle();
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(&handle, shutdown.clone(), None, Silence::Closes);
        let bye = CloseReason::new(CloseReason::POLICY_VIOLATION, "bye");
        let _closed = registry.disconnect(handle.id(), bye).expect("listed");
        assert_eq!(supervisor.stopped().await.reason, "bye");
        // A fresh session's supervisor stops at shutdown.
        let mut supervisor = Supervisor::new(&handle, shutdown.clone(), None, Silence::Closes);
        shutdown.cancel();
        assert_eq!(supervisor.stopped().await.code, CloseReason::GOING_AWAY);
    }
}
