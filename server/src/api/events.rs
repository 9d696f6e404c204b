//! `GET /api/v1/docs/{name}/events`: the document's events as Server-Sent Events.
//!
//! Each event's SSE name is its `type` and its data the event as JSON (see
//! [`crate::events::DocEvent`]). The stream opens with the comment `: subscribed` (events from
//! then on are delivered), sends a keep-alive comment every 15 s, and ends after a `deleted`
//! event or when the relay shuts down. A listener that falls more than
//! [`EVENT_BUFFER`](crate::events::EVENT_BUFFER) events behind gets a `lagged` event with the
//! number it missed. The token may come as `?token=` (browsers' `EventSource` cannot set
//! headers) or as `Authorization: Bearer`.

use std::convert::Infallible;
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
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::{NamePath, authorize_token, bearer, blocking};
use crate::error::AppError;
use crate::events::DocEvent;
use crate::http::AppState;

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
) -> Result<crate::store::DocumentMeta, AppError> {
    let store = state.sessions.rooms.store().clone();
    let lookup = doc.clone();
    blocking(move || store.document(&lookup))
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
    authorize_token(&state, token.as_deref(), &doc, false)?;
    must_exist(&state, &doc).await?;
    let events = state.sessions.rooms.events().subscribe(&doc);
    let stream = event_stream(events, state.sessions.shutdown.clone());
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The SSE stream of one listener.
fn event_stream(
    events: broadcast::Receiver<Arc<DocEvent>>,
    shutdown: CancellationToken,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let first = Event::default().comment("subscribed");
    futures_util::stream::unfold(
        (events, shutdown, Some(first)),
        |(mut events, shutdown, first)| async move {
            if let Some(first) = first {
                return Some((Ok(first), (events, shutdown, None)));
            }
            let event = next_event(&mut events, &shutdown).await?;
            let sse = Event::default()
                .event(event.name())
                .data(event.to_json().to_string());
            if event == DocEvent::Deleted {
                // The document is gone: end the stream after telling the listener.
                events = broadcast::channel(1).1;
            }
            Some((Ok(sse), (events, shutdown, None)))
        },
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
