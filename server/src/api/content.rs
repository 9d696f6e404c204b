//! A Yjs document's content: as JSON (`GET .../content`), as one binary v1 update
//! (`GET .../update`), and changed by a binary v1 update (`POST .../update`).
//!
//! Reads come from the store, which holds everything any client has been shown (updates are
//! broadcast only after their commit). They are heavy for a large document (it is loaded, and
//! for JSON rendered), so they run on blocking threads behind [`HeavyReads`]: at most
//! `--max-content-reads` at once (503 `busy` with `Retry-After` over it), and JSON of at most
//! `--max-content-json-bytes` (422 `content_too_large` over it, pointing at the binary form). Writes go through the document's room, exactly like a
//! WebSocket writer's update: checked before yrs decodes it, committed, then broadcast; the
//! response waits for the commit.

use std::sync::Arc;

use aetherflow_crdt::protocol::Limits;
use aetherflow_crdt::register::Kind;
use aetherflow_crdt::{DocName, Room};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::content_json::{self, TooLarge};
use super::openapi::{json_response, name_param, operation, schema, statuses, with_body};
use super::{NamePath, authorize, blocking};
use crate::error::AppError;
use crate::http::AppState;
use crate::metrics::Rejection;
use crate::rooms::ApplyError;
use crate::store::Store;

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

/// The gate of heavy reads: each loads its own copy of a document on a blocking thread, so
/// at most `--max-content-reads` run at once and the JSON form is capped in size.
#[derive(Clone)]
pub struct HeavyReads {
    permits: Arc<Semaphore>,
    max_json_bytes: usize,
}

impl HeavyReads {
    /// A gate letting `concurrent` reads run at once, answering JSON of at most
    /// `max_json_bytes`.
    pub fn new(concurrent: usize, max_json_bytes: usize) -> HeavyReads {
        HeavyReads {
            permits: Arc::new(Semaphore::new(concurrent)),
            max_json_bytes,
        }
    }

    /// Runs `read` on a blocking thread with the document loaded (404 if it does not exist,
    /// 409 if it is a register), or answers 503 `busy` at once when the gate is full. The
    /// place is held until `read` returns, even if the client has gone meanwhile.
    async fn run<T: Send + 'static>(
        &self,
        state: &AppState,
        doc: &DocName,
        read: impl FnOnce(&Room) -> Result<T, AppError> + Send + 'static,
    ) -> Result<T, AppError> {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            state.metrics.reject(Rejection::ContentBusy);
            return Err(AppError::Busy(
                "too many document reads are running; retry shortly".into(),
            ));
        };
        let store = state.sessions.rooms.store().clone();
        let doc = doc.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let room = load_yjs(&store, &doc)?;
            read(&room)
        })
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
    }
}

/// Loads a Yjs document from the store into a room of its own; 404 if it does not exist,
/// 409 if it is a register. Blocking.
///
/// A private copy rather than the loaded room's document: yrs's document lock blocks, so a
/// long read on the room's document would stall the room's writes on an async worker.
fn load_yjs(store: &Store, doc: &DocName) -> Result<Room, AppError> {
    let Some(meta) = store.document(doc).map_err(AppError::from)? else {
        return Err(AppError::NotFound(format!("no document {doc}")));
    };
    if meta.kind != Kind::Yjs {
        return Err(not_yjs(doc, meta.kind));
    }
    let stored = store.load(doc).map_err(AppError::from)?;
    Room::load(
        stored.snapshot.as_deref(),
        stored.log.iter().map(Vec::as_slice),
    )
    .map_err(|e| AppError::Internal(format!("stored document does not load: {e}")))
}

fn not_yjs(doc: &DocName, kind: Kind) -> AppError {
    AppError::Conflict(format!(
        "{doc} is a {kind:?} document; use /api/v1/docs/{doc}/register"
    ))
}

/// The document's root types as JSON, rendered off the async workers and capped at
/// `--max-content-json-bytes` (422 `content_too_large` over it).
async fn get_content(
    State(state): State<AppState>,
    headers: HeaderMap,
    NamePath(doc): NamePath,
) -> Result<Response, AppError> {
    authorize(&state, &headers, &doc, false)?;
    let cap = state.reads.max_json_bytes;
    let name = doc.clone();
    let rendered = state
        .reads
        .run(&state, &doc, move |room| {
            Ok(content_json::render(room.doc(), name.as_str(), cap))
        })
        .await?;
    match rendered {
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
        .run(&state, &doc, |room| Ok(room.snapshot()))
        .await?;
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
    let store = state.sessions.rooms.store().clone();
    let lookup = doc.clone();
    if let Some(meta) = blocking(move || store.document(&lookup)).await?
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
