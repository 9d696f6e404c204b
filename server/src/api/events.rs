//! `GET /api/v1/docs/{name}/events`: the document's events as Server-Sent Events.
//!
//! Each event's SSE name is its `type` and its data the event as JSON (see
//! [`crate::events::DocEvent`]). The stream opens with the comment `: subscribed` (events from
//! then on are delivered), sends a keep-alive comment every 15 s, and ends after a `deleted`
//! event, when the relay shuts down, or when the token expires (at its `exp`): then the last
//! event is `token_expired`, data `{"type":"token_expired","code":4401,"reason":..}`, and the
//! client reconnects with a fresh token. A listener that falls more than
//! [`EVENT_BUFFER`](crate::events::EVENT_BUFFER) events behind gets a `lagged` event with the
//! number it missed. The token may come as `?token=` (browsers' `EventSource` cannot set
//! headers) or as `Authorization: Bearer`.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::openapi::{name_param, operation, schema, statuses};
use super::{NamePath, authorize_token, bearer};
use crate::context::AppState;
use crate::error::AppError;
use crate::events::DocEvent;

/// The routes of this group.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/docs/{name}/events", get(stream_events))
}

/// `?token=` for clients that cannot set headers.
#[derive(Deserialize)]
pub(crate) struct TokenQuery {
    pub(crate) token: Option<String>,
}

/// The token from `?token=`, else from the `Authorization` header.
pub(crate) fn token_of(
    query: &Result<Query<TokenQuery>, QueryRejection>,
    headers: &HeaderMap,
) -> Option<String> {
    match query {
        Ok(Query(TokenQuery { token: Some(token) })) => Some(token.clone()),
        _ => bearer(headers).map(str::to_owned),
    }
}

/// 404 unless `doc` exists.
pub(crate) async fn must_exist(
    state: &AppState,
    doc: &aetherflow_crdt::DocName,
) -> Result<crate::storage::DocumentMeta, AppError> {
    state
        .storage
        .catalog
        .document(doc.clone())
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no document {doc}")))
}

async fn stream_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    NamePath(doc): NamePath,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let token = token_of(&query, &headers);
    let grant = authorize_token(&state, token.as_deref(), &doc, false)?;
    must_exist(&state, &doc).await?;
    let events = state.sessions.rooms.events().subscribe(&doc);
    let expiry = grant.expires.map(expiry_deadline);
    let stream = event_stream(events, state.sessions.shutdown.clone(), expiry);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// When a token with `exp` (seconds since the Unix epoch) expires, on the runtime's clock.
fn expiry_deadline(exp: u64) -> tokio::time::Instant {
    let left_ms = exp
        .saturating_mul(1000)
        .saturating_sub(crate::wall_clock::now_ms());
    tokio::time::Instant::now() + Duration::from_millis(left_ms)
}

/// What a listener's stream still has to do.
struct Listener {
    events: broadcast::Receiver<Arc<DocEvent>>,
    shutdown: CancellationToken,
    /// Fires when the token expires; `None` for a relay running open.
    expiry: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The opening comment, until sent.
    first: Option<Event>,
    /// Set once the last event went out.
    done: bool,
}

/// The SSE stream of one listener: ends after `deleted`, at shutdown, or with a
/// `token_expired` event when `expiry` passes.
fn event_stream(
    events: broadcast::Receiver<Arc<DocEvent>>,
    shutdown: CancellationToken,
    expiry: Option<tokio::time::Instant>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let listener = Listener {
        events,
        shutdown,
        expiry: expiry.map(|at| Box::pin(tokio::time::sleep_until(at))),
        first: Some(Event::default().comment("subscribed")),
        done: false,
    };
    futures_util::stream::unfold(listener, |mut listener| async move {
        if let Some(first) = listener.first.take() {
            return Some((Ok(first), listener));
        }
        if listener.done {
            return None;
        }
        let expired = async {
            match listener.expiry.as_mut() {
                Some(sleep) => sleep.await,
                None => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            () = expired => {
                listener.done = true;
                return Some((Ok(token_expired_event()), listener));
            }
            event = next_event(&mut listener.events, &listener.shutdown) => event?,
        };
        let sse = Event::default()
            .event(event.name())
            .data(event.to_json().to_string());
        // The document is gone: end the stream after telling the listener.
        listener.done = event == DocEvent::Deleted;
        Some((Ok(sse), listener))
    })
}

/// The last event of a stream whose token expired: `token_expired`, with the WebSocket's
/// close code and reason.
fn token_expired_event() -> Event {
    let reason = "token expired; reconnect with a fresh token";
    Event::default().event("token_expired").data(
        json!({ "type": "token_expired", "code": crate::connection::CloseReason::TOKEN_EXPIRED, "reason": reason })
            .to_string(),
    )
}

/// The next event for a listener; `None` once the stream should end (shutdown, bus gone).
pub(crate) async fn next_event(
    events: &mut broadcast::Receiver<Arc<DocEvent>>,
    shutdown: &CancellationToken,
) -> Option<DocEvent> {
    tokio::select! {
        () = shutdown.cancelled() => None,
        received = events.recv() => match received {
            Ok(event) => Some((*event).clone()),
            Err(RecvError::Lagged(missed)) => Some(DocEvent::Lagged { missed }),
            Err(RecvError::Closed) => None,
        },
    }
}

/// This group's part of the OpenAPI description.
pub fn paths() -> Value {
    let sse = json!({ "description": "Server-Sent Events; each event's name is its type, its data the Event JSON",
        "content": { "text/event-stream": { "schema": { "type": "string" } } } });
    let mut events = operation(
        "The document's events as Server-Sent Events (token also as ?token=)",
        json!([name_param(), { "name": "token", "in": "query", "schema": { "type": "string" } }]),
        (200, sse),
        &statuses(&[404]),
    );
    events["x-event-schema"] = schema("Event");
    json!({ "/api/v1/docs/{name}/events": { "get": events } })
}
