//! Admin routes for sessions: `GET /api/v1/sessions` (filters and paging),
//! `GET /api/v1/sessions/{id}` and `DELETE /api/v1/sessions/{id}` (closes the connection with
//! 1008 and a reason), and `DELETE /api/v1/sessions?user=..` / `?document=..` (every session
//! of a user, of a document, or with both of a user on a document; answers how many were
//! asked to close, without waiting for them).

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::connection::CloseReason;
use crate::context::AppState;
use crate::error::AppError;
use crate::sessions::cluster::{self, ClusterRequest};
use crate::sessions::{DisconnectError, Filter, SessionState, SessionView, Transport};

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
        .route(
            "/api/v1/sessions",
            get(list_sessions).delete(disconnect_sessions),
        )
        .route(
            "/api/v1/sessions/{id}",
            get(get_session).delete(disconnect_session),
        )
}

/// The admin-key security requirement and the error responses every admin route may give.
pub(crate) fn admin_operation(
    summary: &str,
    params: Value,
    ok: &[(u16, Value)],
    errors: &[u16],
) -> Value {
    let mut responses = serde_json::Map::new();
    for status in errors {
        responses.insert(
            status.to_string(),
            json!({ "description": "error (401: admin key missing or wrong; 403: admin routes disabled, or a client token sent)",
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }),
        );
    }
    for (status, schema) in ok {
        responses.insert(
            status.to_string(),
            json!({ "description": "ok", "content": { "application/json": { "schema": schema } } }),
        );
    }
    json!({ "summary": summary, "parameters": params,
        "description": "Admin route: send the admin key (--admin-key) as `Authorization: Bearer KEY` or `X-Admin-Key: KEY`.",
        "security": [{ "bearer": [] }], "responses": responses })
}

/// A session as the admin routes show it.
fn session_schema() -> Value {
    let count = json!({ "type": "integer", "minimum": 0 });
    json!({ "type": "object",
        "required": ["id", "user", "transport", "remote_addr", "documents", "state", "created_ms",
            "last_active_ms", "bytes_in", "bytes_out", "messages_in", "messages_out"],
        "properties": {
            "id": { "type": "string", "format": "uuid", "description": "UUIDv7" },
            "user": { "type": "string", "description": "token subject, or anonymous" },
            "transport": { "type": "string", "enum": ["websocket", "quantum"] },
            "remote_addr": { "type": "string", "description": "the client's address; behind a --trusted-proxies proxy the forwarded one (port 0 if none was given)" },
            "documents": { "type": "array", "items": { "type": "string" } },
            "relay": { "type": "string", "description": "scope=cluster in cluster mode: the id of the relay holding the session" },
            "state": { "type": "string", "enum": ["CONNECTING", "ACTIVE", "IDLE", "DISCONNECTING", "CLOSED"] },
            "created_ms": count, "last_active_ms": count,
            "bytes_in": count, "bytes_out": count, "messages_in": count, "messages_out": count,
            "close": { "type": "object", "required": ["code", "reason", "closed_ms"], "properties": {
                "code": { "type": ["integer", "null"] }, "reason": { "type": ["string", "null"] },
                "closed_ms": count } } } })
}

/// This group's part of the OpenAPI description.
pub fn paths() -> Value {
    let string = |name: &str, description: &str| json!({ "name": name, "in": "query", "description": description, "schema": { "type": "string" } });
    let scope = json!({ "name": "scope", "in": "query",
        "description": "relay (default): this relay's sessions; cluster: every relay's (in cluster mode; each session then names its relay)",
        "schema": { "type": "string", "enum": ["relay", "cluster"] } });
    let list = admin_operation(
        "List sessions, oldest first, a page at a time",
        json!([
            string("user", "exact user (token subject)"),
            string("document", "sessions on this document (alias: doc)"),
            { "name": "transport", "in": "query", "schema": { "type": "string", "enum": ["websocket", "quantum"] } },
            { "name": "state", "in": "query", "schema": { "type": "string",
                "enum": ["CONNECTING", "ACTIVE", "IDLE", "DISCONNECTING", "CLOSED"] } },
            { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": MAX_PAGE } },
            { "name": "after", "in": "query", "description": "next_after of the previous page",
                "schema": { "type": "string", "format": "uuid" } },
            scope.clone()
        ]),
        &[(
            200,
            json!({ "type": "object", "required": ["sessions"], "properties": {
            "sessions": { "type": "array", "items": session_schema() },
            "next_after": { "type": "string", "format": "uuid" },
            "relays": { "type": "integer", "minimum": 0,
                "description": "scope=cluster in cluster mode: how many relays answered" } } }),
        )],
        &[400, 401, 403],
    );
    let id = json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } });
    let get = admin_operation(
        "One session (open, or closed within the last 10 s)",
        json!([id]),
        &[(200, session_schema())],
        &[400, 401, 403, 404],
    );
    let delete = admin_operation(
        "Disconnect a session: closed with 1008 and the reason; 200 once closed, 202 if still closing after 5 s",
        json!([
            id,
            string("reason", "added to the close reason (at most 80 bytes)")
        ]),
        &[(200, session_schema()), (202, session_schema())],
        &[400, 401, 403, 404, 409],
    );
    let delete_all = admin_operation(
        "Disconnect every session of a user and/or on a document (at least one of user, document): each is closed with 1008 and the reason; answers how many were asked to close",
        json!([
            string("user", "exact user (token subject)"),
            string("document", "sessions on this document (alias: doc)"),
            string("reason", "added to the close reason (at most 80 bytes)"),
            scope
        ]),
        &[(
            200,
            json!({ "type": "object", "required": ["requested"], "properties": {
                "requested": { "type": "integer", "minimum": 0,
                    "description": "sessions asked to close (those already closing are not counted)" } } }),
        )],
        &[400, 401, 403],
    );
    json!({
        "/api/v1/sessions": { "get": list, "delete": delete_all },
        "/api/v1/sessions/{id}": { "get": get, "delete": delete },
    })
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
    scope: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectQuery {
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectAllQuery {
    user: Option<String>,
    #[serde(alias = "doc")]
    document: Option<String>,
    reason: Option<String>,
    scope: Option<String>,
}

/// Whose sessions a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// This relay's (the default).
    Relay,
    /// Every relay's of the cluster; on a single relay the same as [`Scope::Relay`].
    Cluster,
}

fn parse_scope(text: Option<&str>) -> Result<Scope, AppError> {
    match text.map(str::to_ascii_lowercase).as_deref() {
        None | Some("relay") => Ok(Scope::Relay),
        Some("cluster") => Ok(Scope::Cluster),
        Some(other) => Err(AppError::BadRequest(format!(
            "unknown scope {other:?}; expected relay or cluster"
        ))),
    }
}

/// The close reason of an admin's disconnect, with the admin's words if any.
fn admin_close(reason: Option<String>) -> Result<CloseReason, AppError> {
    let reason = match reason {
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
    Ok(CloseReason::new(CloseReason::POLICY_VIOLATION, reason))
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
) -> Result<Json<Value>, AppError> {
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
    if let (Scope::Cluster, Some(cluster)) = (
        parse_scope(params.scope.as_deref())?,
        &state.cluster_sessions,
    ) {
        let request = ClusterRequest::List {
            filter,
            after,
            limit,
        };
        return Ok(Json(cluster::merge(cluster.ask(request).await, limit)));
    }
    Ok(Json(json!(state.registry.list(&filter, after, limit))))
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
    let close = admin_close(query(params)?.reason)?;
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

/// Asks every session of `user` and/or on `document` to close with 1008; answers
/// `{"requested": N}` at once (the sessions close on their own, as after a single `DELETE`).
async fn disconnect_sessions(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<DisconnectAllQuery>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    state.admin.require(&state.auth, &headers)?;
    let params = query(params)?;
    if params.user.is_none() && params.document.is_none() {
        return Err(AppError::BadRequest(
            "name the sessions to close: user=..., document=... or both".into(),
        ));
    }
    let close = admin_close(params.reason)?;
    let filter = Filter {
        user: params.user,
        document: params.document,
        ..Filter::default()
    };
    let requested = match (
        parse_scope(params.scope.as_deref())?,
        &state.cluster_sessions,
    ) {
        (Scope::Cluster, Some(cluster)) => {
            let request = ClusterRequest::Disconnect {
                filter: filter.clone(),
                code: close.code,
                reason: close.reason,
            };
            cluster::requested(&cluster.ask(request).await)
        }
        _ => state.registry.disconnect_matching(&filter, &close) as u64,
    };
    tracing::info!(
        requested,
        user = filter.user.as_deref(),
        doc = filter.document.as_deref(),
        "sessions disconnected by an admin"
    );
    Ok(Json(json!({ "requested": requested })))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_admin_routes_are_in_the_openapi_description() {
        let doc = super::super::openapi::document();
        let paths = doc["paths"].as_object().expect("paths");
        for (path, method) in [
            ("/api/v1/sessions", "get"),
            ("/api/v1/sessions", "delete"),
            ("/api/v1/sessions/{id}", "get"),
            ("/api/v1/sessions/{id}", "delete"),
            ("/api/v1/tokens", "post"),
        ] {
            let operation = &paths[path][method];
            assert!(operation.is_object(), "{method} {path} missing");
            for status in ["400", "401", "403"] {
                assert!(
                    operation["responses"][status].is_object(),
                    "{method} {path} lacks {status}"
                );
            }
        }
    }
}
