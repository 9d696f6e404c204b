//! A Yjs document's content: as JSON (`GET .../content`), as one binary v1 update
//! (`GET .../update`), and changed by a binary v1 update (`POST .../update`).
//!
//! Reads come from the store, which holds everything any client has been shown (updates are
//! broadcast only after their commit), through the gate of [`crate::reads`]: off the
//! async workers, bounded in number, shared by concurrent reads of one document, and JSON of
//! at most `--max-content-json-bytes` (422 `content_too_large` over it, pointing at the binary
//! form). Writes go through the document's room, exactly like a WebSocket writer's update:
//! checked before yrs decodes it, committed, then broadcast; the response waits for the commit.

use aetherflow_crdt::protocol::Limits;
use aetherflow_crdt::register::Kind;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::openapi::{json_response, name_param, operation, schema, statuses, with_body};
use super::{NamePath, authorize};
use crate::context::AppState;
use crate::error::AppError;
use crate::metrics::Rejection;
use crate::reads::json::TooLarge;
use crate::reads::{Form, not_yjs};
use crate::rooms::ApplyError;

/// The routes of this group.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/docs/{name}/content", get(get_content))
        .route(
            "/api/v1/docs/{name}/update",
            get(get_update)
                .post(post_update)
                // The room's own limit (`--max-message-bytes`) is checked in the handler,
                // with a JSON error; this only stops absurd bodies early.
                .layer(DefaultBodyLimit::max(
                    Limits::default().max_message_bytes.max(64 << 20),
                )),
        )
}

/// The document's root types as JSON, rendered off the async workers and capped at
/// `--max-content-json-bytes` (422 `content_too_large` over it).
async fn get_content(
    State(state): State<AppState>,
    headers: HeaderMap,
    NamePath(doc): NamePath,
) -> Result<Response, AppError> {
    authorize(&state, &headers, &doc, false)?;
    match state
        .reads
        .read(&state.storage, &state.metrics, &doc, Form::Json)
        .await?
    {
        Ok(json) => Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response()),
        Err(TooLarge { cap }) => {
            state.metrics.reject(Rejection::ContentTooLarge);
            Err(AppError::ContentTooLarge(format!(
                "the document's JSON is larger than {cap} bytes (--max-content-json-bytes); \
                 read it as one binary Yjs update with GET /api/v1/docs/{doc}/update"
            )))
        }
    }
}

async fn get_update(
    State(state): State<AppState>,
    headers: HeaderMap,
    NamePath(doc): NamePath,
) -> Result<Response, AppError> {
    authorize(&state, &headers, &doc, false)?;
    let update = state
        .reads
        .read(&state.storage, &state.metrics, &doc, Form::Update)
        .await?
        .map_err(AppError::internal)?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], update).into_response())
}

/// Applies the body, one binary Yjs v1 update, through the document's room (creating the
/// document as a Yjs document if it does not exist). Answers 204 after the commit.
async fn post_update(
    State(state): State<AppState>,
    headers: HeaderMap,
    NamePath(doc): NamePath,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, AppError> {
    authorize(&state, &headers, &doc, true)?;
    let limit = state.sessions.limits.max_message_bytes;
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => too_large(limit),
        _ => AppError::BadRequest(e.body_text()),
    })?;
    if body.len() > limit {
        return Err(too_large(limit));
    }
    if body.is_empty() {
        return Err(AppError::BadRequest(
            "the body must be a binary Yjs v1 update".into(),
        ));
    }
    if let Some(meta) = state.storage.catalog.document(doc.clone()).await?
        && meta.kind != Kind::Yjs
    {
        return Err(not_yjs(&doc, meta.kind));
    }
    match state.sessions.rooms.apply(&doc, body.to_vec()).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(ApplyError::Invalid(reason)) => Err(AppError::BadRequest(format!(
            "not an acceptable Yjs v1 update: {reason}"
        ))),
        Err(e) => Err(AppError::from(e)),
    }
}

fn too_large(limit: usize) -> AppError {
    AppError::TooLarge(format!("the update is larger than {limit} bytes"))
}

/// This group's part of the OpenAPI description.
pub fn paths() -> Value {
    let content = operation(
        "A Yjs document's root types as JSON (map: object, array: array, text: string)",
        json!([name_param()]),
        (200, json_response("the content", schema("Content"))),
        &statuses(&[404, 409, 422, 503]),
    );
    let binary = json!({ "description": "the document's state as one Yjs v1 update",
        "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } });
    let get_update = operation(
        "A Yjs document's state as one binary v1 update",
        json!([name_param()]),
        (200, binary),
        &statuses(&[404, 409, 503]),
    );
    let mut post_update = with_body(
        operation(
            "Apply a binary Yjs v1 update through the document's room; answered after the commit",
            json!([name_param()]),
            (204, json!({ "description": "committed and broadcast" })),
            &statuses(&[409, 413, 507]),
        ),
        json!({ "required": true, "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } }),
    );
    post_update["responses"]["413"]["description"] = json!(
        "`too_large`: the body is over --max-message-bytes; `document_limit`: the update holds \
         more items than --max-update-items, or would take the document past --max-doc-items \
         items or --max-doc-bytes content bytes (nothing was applied)"
    );
    json!({
        "/api/v1/docs/{name}/content": { "get": content },
        "/api/v1/docs/{name}/update": { "get": get_update, "post": post_update },
    })
}
