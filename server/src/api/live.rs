//! `/api/v1/docs/{name}/live`: a WebSocket channel for register documents (`lww`, `manual`),
//! speaking JSON text frames, for browsers.
//!
//! The token comes as `?token=` (or `Authorization: Bearer`), checked before the upgrade like
//! `/ws/{doc}`. The relay first sends `{"type":"state","register":{...},"lock":{...}|null}`
//! (a manual document's also carries `"conflicts":[...]`, its open conflicts),
//! then every event of the document (the same JSON as the SSE stream, see
//! [`crate::events::DocEvent`]), including the writes of this connection.
//!
//! A client sends one request per text frame; `id` (any JSON, optional) is echoed back:
//!
//! - `{"op":"write","id":1,"value":"Title","stamp":{"clock":{"wall_ms":1,"counter":0},"writer":"tab-1"}}`
//!   writes an `lww` register;
//! - `{"op":"write","id":2,"value":"Notes","base_version":3}` writes a `manual` register
//!   (optional `author`: it must be the token's subject; an open relay records it as given);
//! - `{"op":"resolve","id":3,"conflict":1,"value":"Merged"}` resolves a manual conflict.
//!
//! Each request is answered with `{"type":"result","id":..,"outcome":{...}}` (the body the HTTP
//! route would return) or `{"type":"error","id":..,"error":{"code","message"}}` (the same codes
//! as HTTP: `read_only`, `locked`, `not_found`, `bad_request`, `stamp_too_far_ahead`, ...); the connection stays open.
//! A frame that is not such a request closes the connection: binary frames with 1003, text that
//! is not a request with 1007, each with a reason. Deleting the document closes it with 4410;
//! the token's expiry with 4401 (see [`crate::sessions`]); shutdown with 1001.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use aetherflow_crdt::DocName;
use aetherflow_crdt::register::Kind;
use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message as Frame, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{Extensions, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tracing::{Instrument, debug, info_span};

use super::events::{TokenQuery, must_exist, next_event, token_of};
use super::openapi::{name_param, operation, statuses};
use super::{authorize_token, doc_name};
use crate::auth::{Grant, Permission};
use crate::connection::CloseReason;
use crate::context::AppState;
use crate::error::AppError;
use crate::events::DocEvent;
use crate::registers::{RegisterChange, RegisterWrite, Resolution, outcome_json};
use crate::sessions::{SessionHandle, SessionState, Transport};
use crate::supervisor::{Silence, Supervisor};
use crate::websocket;
use crate::websocket::count;

/// Largest request frame a live client may send.
const MAX_FRAME_BYTES: usize = 1 << 20;

/// The routes of this group.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/docs/{name}/live", get(live))
}

/// One request of a live client.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum LiveRequest {
    Write {
        #[serde(default)]
        id: Option<Value>,
        #[serde(flatten)]
        write: RegisterWrite,
    },
    Resolve {
        #[serde(default)]
        id: Option<Value>,
        conflict: u64,
        value: Value,
        #[serde(default)]
        author: Option<String>,
    },
}

async fn live(
    State(state): State<AppState>,
    extensions: Extensions,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<TokenQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let remote = match crate::context::admit_connection(&state, &extensions, &headers) {
        Ok(remote) => remote,
        Err(e) => return e.into_response(),
    };
    match prepare(&state, &headers, name, &query).await {
        Ok((doc, grant)) => match upgrade {
            Ok(upgrade) => {
                // Tracked from before the upgrade, so shutdown waits for its close frame.
                let in_flight = state.tracker.token();
                // A session like any other: listed, counted, rate-limited, disconnectable.
                let handle = state.registry.open(
                    &grant.user,
                    Transport::Websocket,
                    remote,
                    vec![doc.as_str().to_owned()],
                );
                if let Some(exp) = grant.expires {
                    handle.expires_at(exp);
                }
                upgrade
                    .max_message_size(MAX_FRAME_BYTES)
                    .on_upgrade(move |socket| async move {
                        let _in_flight = in_flight;
                        serve(socket, doc, grant, state, handle).await
                    })
            }
            Err(e) => AppError::NotWebSocket(e.body_text()).into_response(),
        },
        Err(e) => e.into_response(),
    }
}

/// Checks name, token and kind before the upgrade, so nothing flows to a refused client.
async fn prepare(
    state: &AppState,
    headers: &HeaderMap,
    name: Result<Path<String>, PathRejection>,
    query: &Result<Query<TokenQuery>, QueryRejection>,
) -> Result<(DocName, Grant), AppError> {
    let Path(name) = name.map_err(|e| AppError::InvalidDocName(e.body_text()))?;
    let doc = doc_name(&name)?;
    let token = token_of(query, headers);
    let grant = authorize_token(state, token.as_deref(), &doc, false)?;
    let meta = must_exist(state, &doc).await?;
    if meta.kind == Kind::Yjs {
        return Err(AppError::Conflict(format!(
            "{doc} is a Yjs document; use the y-websocket endpoint /ws/{doc}"
        )));
    }
    Ok((doc, grant))
}

async fn serve(
    socket: WebSocket,
    doc: DocName,
    grant: Grant,
    state: AppState,
    handle: SessionHandle,
) {
    let conn = state.next_conn.fetch_add(1, Ordering::Relaxed);
    let remote = handle.remote_addr();
    let span = info_span!("live", conn, remote = %remote, doc = %doc, user = %grant.user);
    let events = state.sessions.rooms.events().clone();
    // Subscribed before the state is read, so no change falls between the two.
    let listener = events.subscribe(&doc);
    let joined = DocEvent::UserJoined {
        user: grant.user.clone(),
        conn,
    };
    events.publish(&doc, joined);
    let reason = run(socket, &doc, &grant, &state, listener, &handle)
        .instrument(span)
        .await;
    debug!(?reason, "live connection closed");
    let left = DocEvent::UserLeft {
        user: grant.user.clone(),
        conn,
    };
    events.publish(&doc, left);
}

async fn run(
    socket: WebSocket,
    doc: &DocName,
    grant: &Grant,
    state: &AppState,
    mut listener: broadcast::Receiver<Arc<DocEvent>>,
    handle: &SessionHandle,
) -> Option<CloseReason> {
    let (mut sink, mut stream) = socket.split();
    match state.registers.state(doc).await.map_err(AppError::from) {
        Ok(greeting) => {
            if send(&mut sink, &greeting, handle).await.is_err() {
                handle.closing(None);
                return None;
            }
        }
        Err(e) => {
            // The client-facing text: a 5xx shows only its log reference.
            let (_, _, message) = e.parts();
            let reason = CloseReason::new(CloseReason::INTERNAL_ERROR, message);
            handle.closing(Some(&reason));
            websocket::close(&mut sink, &mut stream, Some(reason.clone())).await;
            return Some(reason);
        }
    }
    handle.set_state(SessionState::Active);
    let shutdown = state.sessions.shutdown.clone();
    let rate = state.sessions.message_rate;
    let mut supervisor = Supervisor::new(handle, shutdown.clone(), rate, Silence::Closes);
    // Pings as on /ws: one unanswered ping makes the session IDLE, two close it.
    let mut ticks = tokio::time::interval(state.sessions.ping_interval);
    ticks.tick().await;
    let reason = loop {
        tokio::select! {
            reason = supervisor.stopped() => break Some(reason),
            _ = ticks.tick() => {
                if let Err(reason) = supervisor.tick(handle, false, None) {
                    break Some(reason);
                }
                if sink.send(Frame::Ping(Default::default())).await.is_err() {
                    break None;
                }
            }
            event = next_event(&mut listener, &shutdown) => match event {
                Some(DocEvent::Deleted) => {
                    let _ = sink.send(text(&DocEvent::Deleted.to_json())).await;
                    break Some(CloseReason::new(CloseReason::DOCUMENT_DELETED, "document deleted"));
                }
                Some(event) => {
                    if send(&mut sink, &event.to_json(), handle).await.is_err() {
                        break None;
                    }
                }
                None => break Some(CloseReason::new(CloseReason::GOING_AWAY, "server shutting down")),
            },
            frame = stream.next() => {
                supervisor.heard();
                if count(frame.as_ref(), handle)
                    && let Err(reason) = supervisor.charge()
                {
                    break Some(reason);
                }
                match on_frame(frame) {
                    Incoming::Request(request) => {
                        let answer = answer(state, doc, grant, request).await;
                        if send(&mut sink, &answer, handle).await.is_err() {
                            break None;
                        }
                    }
                    Incoming::Ignore => {}
                    Incoming::Close(reason) => break reason,
                }
            }
        }
    };
    Supervisor::closing(handle, reason.as_ref());
    // The close handshake as on /ws: the client's close is answered, the relay's waits
    // briefly for the client's answer.
    websocket::close(&mut sink, &mut stream, reason.clone()).await;
    reason
}

enum Incoming {
    Request(LiveRequest),
    Ignore,
    Close(Option<CloseReason>),
}

fn on_frame(frame: Option<Result<Frame, axum::Error>>) -> Incoming {
    match frame {
        None | Some(Ok(Frame::Close(_))) | Some(Err(_)) => Incoming::Close(None),
        Some(Ok(Frame::Text(text))) => match serde_json::from_str::<LiveRequest>(text.as_str()) {
            Ok(request) => Incoming::Request(request),
            Err(e) => Incoming::Close(Some(CloseReason::new(
                CloseReason::INVALID_PAYLOAD,
                format!("not a live request: {e}"),
            ))),
        },
        Some(Ok(Frame::Binary(_))) => Incoming::Close(Some(CloseReason::new(
            CloseReason::UNSUPPORTED_DATA,
            "binary frames are not supported; send JSON text frames",
        ))),
        Some(Ok(Frame::Ping(_) | Frame::Pong(_))) => Incoming::Ignore,
    }
}

/// Runs one request through the same path as the HTTP routes; the answer echoes its `id`.
async fn answer(state: &AppState, doc: &DocName, grant: &Grant, request: LiveRequest) -> Value {
    let (id, change) = match request {
        LiveRequest::Write { id, write } => (id, RegisterChange::Write(write)),
        LiveRequest::Resolve {
            id,
            conflict,
            value,
            author,
        } => (
            id,
            RegisterChange::Resolve {
                conflict,
                resolution: Resolution { value, author },
            },
        ),
    };
    let result = if grant.permission == Permission::Write {
        state
            .registers
            .change(doc, grant, change)
            .await
            .map(outcome_json)
            .map_err(AppError::from)
    } else {
        Err(AppError::ReadOnly)
    };
    match result {
        Ok(outcome) => json!({ "type": "result", "id": id, "outcome": outcome }),
        Err(e) => {
            let mut body = e.to_json();
            body["type"] = json!("error");
            body["id"] = json!(id);
            body
        }
    }
}

fn text(value: &Value) -> Frame {
    Frame::Text(value.to_string().into())
}

/// Sends `value` as a text frame, counted on the session.
async fn send<K>(sink: &mut K, value: &Value, handle: &SessionHandle) -> Result<(), K::Error>
where
    K: futures_util::Sink<Frame> + Unpin,
{
    let frame = value.to_string();
    handle.sent(frame.len());
    sink.send(Frame::Text(frame.into())).await
}

/// This group's part of the OpenAPI description.
pub fn paths() -> Value {
    let mut live = operation(
        "WebSocket (JSON text frames) for register documents: events, writes, resolutions; see the relay's docs",
        json!([name_param(), { "name": "token", "in": "query", "schema": { "type": "string" } }]),
        (101, json!({ "description": "switching to WebSocket" })),
        &statuses(&[404, 409, 426]),
    );
    live["x-websocket"] = json!(true);
    json!({ "/api/v1/docs/{name}/live": { "get": live } })
}
