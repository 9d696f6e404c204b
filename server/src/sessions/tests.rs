//! The registry's unit tests.
#![allow(clippy::unwrap_used)]

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

#[test]
fn an_entry_stays_small() {
    // Every connection holds one (issue 7): the token's expiry was added in what had been
    // padding, so the entry is no larger than before it.
    let bytes = std::mem::size_of::<Entry>();
    assert!(bytes <= 240, "an entry grew to {bytes} bytes");
}

#[test]
fn sessions_are_asked_to_close_once_their_token_has_expired_and_only_once() {
    let registry = Registry::new();
    let soon = open(&registry, "ada", "d", Transport::Websocket);
    soon.expires_at(1_000);
    let later = open(&registry, "bob", "d", Transport::Quantum);
    later.expires_at(2_000);
    let never = open(&registry, "cy", "d", Transport::Websocket);
    assert_eq!(registry.close_expired_at(999), 0);
    assert_eq!(registry.close_expired_at(1_000), 1);
    // Already asked: not again.
    assert_eq!(registry.close_expired_at(1_500), 0);
    assert_eq!(registry.close_expired_at(u64::MAX), 1);
    let reason = futures_util::FutureExt::now_or_never(soon.disconnect_requested()).unwrap();
    assert_eq!(reason.code, CloseReason::TOKEN_EXPIRED);
    assert!(futures_util::FutureExt::now_or_never(never.disconnect_requested()).is_none());
    drop(later);
}

#[test]
fn a_bulk_disconnect_asks_exactly_the_matching_open_sessions() {
    let registry = Registry::new();
    let a = open(&registry, "ada", "notes", Transport::Websocket);
    let b = open(&registry, "ada", "plans", Transport::Quantum);
    let c = open(&registry, "bob", "notes", Transport::Websocket);
    let reason = CloseReason::new(CloseReason::POLICY_VIOLATION, "bye");
    let of_user = Filter {
        user: Some("ada".into()),
        ..Filter::default()
    };
    assert_eq!(registry.disconnect_matching(&of_user, &reason), 2);
    // Both already closing: asked again, nobody new.
    assert_eq!(registry.disconnect_matching(&of_user, &reason), 0);
    let on_notes = Filter {
        document: Some("notes".into()),
        ..Filter::default()
    };
    assert_eq!(registry.disconnect_matching(&on_notes, &reason), 1);
    for handle in [&a, &b, &c] {
        assert!(futures_util::FutureExt::now_or_never(handle.disconnect_requested()).is_some());
    }
}
