//! Document locks: `POST` acquires (or renews one's own), `PUT` renews, `DELETE` releases,
//! `GET` shows the lock. A lock is a lease of `ttl_ms` (1 ms to an hour) for a holder: the
//! token's subject, or, when the relay runs open, the `holder` named in the request. While a
//! `manual` document is locked, only its holder may write or resolve its register. One relay
//! keeps locks in memory (a restart frees them); cluster mode keeps them in JetStream, one
//! holder across every relay (see [`crate::locks`]).

use aetherflow_crdt::DocName;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::events::must_exist;
use super::openapi::{
    json_response, name_param, operation, request_body, schema, statuses, with_body,
};
use super::{NamePath, authorize, identity, json_body};
use crate::context::AppState;
use crate::error::AppError;
use crate::locks::{Lock, LockError};

/// The routes of this group.
pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/api/v1/docs/{name}/lock",
        get(get_lock).post(acquire).put(renew).delete(release),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LockRequest {
    ttl_ms: u64,
    #[serde(default)]
    holder: Option<String>,
}

#[derive(Deserialize)]
struct ReleaseQuery {
    holder: Option<String>,
}

fn lock_json(doc: &DocName, lock: &Lock) -> Value {
    json!({ "name": doc.as_str(), "locked": true, "holder": lock.holder, "expires_ms": lock.expires_ms })
}

fn lock_error(error: LockError) -> AppError {
    match error {
        LockError::Held { .. } => AppError::Locked(error.to_string()),
        LockError::NotLocked => AppError::Conflict(error.to_string()),
        LockError::BadTtl => AppError::BadRequest(error.to_string()),
        LockError::Unavailable(_) => {
            tracing::warn!(%error, "lock operation refused");
            AppError::StorageUnavailable
        }
    }
}

async fn get_lock(
    State(state): State<AppState>,
    headers: HeaderMap,
    NamePath(doc): NamePath,
) -> Result<Json<Value>, AppError> {
    authorize(&state, &headers, &doc, false)?;
    must_exist(&state, &doc).await?;
    Ok(Json(
        match state.locks.current(&doc).await.map_err(lock_error)? {
            Some(lock) => lock_json(&doc, &lock),
            None => json!({ "name": doc.as_str(), "locked": false }),
        },
    ))
}

async fn acquire(
    State(state): State<AppState>,
    headers: HeaderMap,
    NamePath(doc): NamePath,
    body: Result<Json<LockRequest>, JsonRejection>,
) -> Result<Json<Value>, AppError> {
    let grant = authorize(&state, &headers, &doc, true)?;
    let request = json_body(body)?;
    let holder = identity(&state, &grant, request.holder)?;
    must_exist(&state, &doc).await?;
    let lock = state
        .locks
        .acquire(&doc, &holder, request.ttl_ms)
        .await
        .map_err(lock_error)?;
    Ok(Json(lock_json(&doc, &lock)))
}

async fn renew(
    State(state): State<AppState>,
    headers: HeaderMap,
    NamePath(doc): NamePath,
    body: Result<Json<LockRequest>, JsonRejection>,
) -> Result<Json<Value>, AppError> {
    let grant = authorize(&state, &headers, &doc, true)?;
    let request = json_body(body)?;
    let holder = identity(&state, &grant, request.holder)?;
    let lock = state
        .locks
        .renew(&doc, &holder, request.ttl_ms)
        .await
        .map_err(lock_error)?;
    Ok(Json(lock_json(&doc, &lock)))
}

async fn release(
    State(state): State<AppState>,
    headers: HeaderMap,
    NamePath(doc): NamePath,
    query: Result<Query<ReleaseQuery>, QueryRejection>,
) -> Result<StatusCode, AppError> {
    let grant = authorize(&state, &headers, &doc, true)?;
    let Query(query) = query.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let holder = identity(&state, &grant, query.holder)?;
    state
        .locks
        .release(&doc, &holder)
        .await
        .map_err(lock_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// This group's part of the OpenAPI description.
pub fn paths() -> Value {
    let get = operation(
        "The document's lock, if any",
        json!([name_param()]),
        (200, json_response("the lock", schema("Lock"))),
        &statuses(&[404]),
    );
    let acquire = with_body(
        operation(
            "Acquire the lock for ttl_ms (or renew one's own)",
            json!([name_param()]),
            (200, json_response("the lock", schema("Lock"))),
            &statuses(&[404, 423]),
        ),
        request_body(schema("LockRequest")),
    );
    let renew = with_body(
        operation(
            "Renew one's own lock",
            json!([name_param()]),
            (200, json_response("the lock", schema("Lock"))),
            &statuses(&[409, 423]),
        ),
        request_body(schema("LockRequest")),
    );
    let release = operation(
        "Release one's own lock",
        json!([name_param(), { "name": "holder", "in": "query", "schema": { "type": "string" },
            "description": "the holder (open relays only; otherwise the token's subject)" }]),
        (204, json!({ "description": "released" })),
        &statuses(&[409, 423]),
    );
    json!({ "/api/v1/docs/{name}/lock": { "get": get, "post": acquire, "put": renew, "delete": release } })
}
