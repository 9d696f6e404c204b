//! Admin routes for sessions: `GET /api/v1/sessions` (filters and paging),
//! `GET /api/v1/sessions/{id}` and `DELETE /api/v1/sessions/{id}` (closes the connection with
//! 1008 and a reason).

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use uuid::Uuid;

use crate::error::AppError;
use crate::http::AppState;
use crate::registry::{DisconnectError, Filter, Page, SessionState, SessionView, Transport};
use crate::rooms::CloseReason;

/// Sessions per page unless `limit` says otherwise.
pub const DEFAULT_PAGE: usize = 100;
/// Largest `limit` accepted.
pub const MAX_PAGE: usize = 1000;
/// How long `DELETE` waits for the connection to finish closing before answering 202.
const DISCONNECT_WAIT: Duration = Duration::from_secs(5);
/// Longest admin-supplied close reason, in bytes (a close frame holds 123).
const MAX_REASON_BYTES: usize = 80;

/// The session routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/sessions", get(list_sessions))
        .route(
            "/api/v1/sessions/{id}",
            get(get_session).delete(disconnect_session),
        )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    user: Option<String>,
    #[serde(alias = "doc")]
    document: Option<String>,
    transport: Option<String>,
    state: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectQuery {
    reason: Option<String>,
}

fn parse_id(text: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(text).map_err(|_| AppError::BadRequest(format!("invalid session id {text:?}")))
}

fn parse_transport(text: &str) -> Result<Transport, AppError> {
    match text.to_ascii_lowercase().as_str() {
        "websocket" => Ok(Transport::Websocket),
        "quantum" => Ok(Transport::Quantum),
        _ => Err(AppError::BadRequest(format!(
            "unknown transport {text:?}; expected websocket or quantum"
        ))),
    }
}

fn parse_state(text: &str) -> Result<SessionState, AppError> {
    match text.to_ascii_uppercase().as_str() {
        "CONNECTING" => Ok(SessionState::Connecting),
        "ACTIVE" => Ok(SessionState::Active),
        "IDLE" => Ok(SessionState::Idle),
        "DISCONNECTING" => Ok(SessionState::Disconnecting),
        "CLOSED" => Ok(SessionState::Closed),
        _ => Err(AppError::BadRequest(format!(
            "unknown state {text:?}; expected CONNECTING, ACTIVE, IDLE, DISCONNECTING or CLOSED"
        ))),
    }
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, AppError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| AppError::BadRequest(e.body_text()))
}

async fn list_sessions(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Page>, AppError> {
    state.admin.require(&state.auth, &headers)?;
    let params = query(params)?;
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AppError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let filter = Filter {
        user: params.user,
        document: params.document,
        transport: params
            .transport
            .as_deref()
            .map(parse_transport)
            .transpose()?,
        state: params.state.as_deref().map(parse_state).transpose()?,
    };
    let after = params.after.as_deref().map(parse_id).transpose()?;
    Ok(Json(state.registry.list(&filter, after, limit)))
}

async fn get_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, AppError> {
    state.admin.require(&state.auth, &headers)?;
    let id = parse_id(&id)?;
    state
        .registry
        .get(id)
        .map(Json)
        .ok_or_else(|| AppError::NotFound(format!("no session {id}")))
}

/// Closes the session with 1008 and answers its final state (200), or its state so far (202)
/// if it has not finished closing within [`DISCONNECT_WAIT`].
async fn disconnect_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    params: Result<Query<DisconnectQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<SessionView>), AppError> {
    state.admin.require(&state.auth, &headers)?;
    let id = parse_id(&id)?;
    let reason = match query(params)?.reason {
        Some(reason) if reason.len() > MAX_REASON_BYTES => {
            return Err(AppError::BadRequest(format!(
                "reason must be at most {MAX_REASON_BYTES} bytes"
            )));
        }
        Some(reason) if !reason.trim().is_empty() => {
            format!("disconnected by an administrator: {}", reason.trim())
        }
        _ => "disconnected by an administrator".to_owned(),
    };
    let close = CloseReason::new(CloseReason::POLICY_VIOLATION, reason);
    let closed = state.registry.disconnect(id, close).map_err(|e| match e {
        DisconnectError::NotFound(_) => AppError::NotFound(e.to_string()),
        DisconnectError::AlreadyClosing(_) => AppError::Conflict(e.to_string()),
    })?;
    let status = match tokio::time::timeout(DISCONNECT_WAIT, closed).await {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::ACCEPTED,
    };
    let view = state
        .registry
        .get(id)
        .ok_or_else(|| AppError::NotFound(format!("no session {id}")))?;
    Ok((status, Json(view)))
}
