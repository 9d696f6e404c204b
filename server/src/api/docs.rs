//! Documents: create with a kind, list with paging, read metadata, delete.

use aetherflow_crdt::DocName;
use aetherflow_crdt::register::Kind;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{NamePath, authorize, bearer, blocking, doc_name, json_body, now_ms};
use crate::error::AppError;
use crate::http::AppState;
use crate::rooms::ApplyError;
use crate::store::{DocStats, DocumentMeta, WriteOp, WriteResult};

/// Documents per page when the request names no `limit`.
pub const DEFAULT_PAGE: usize = 50;
/// The largest page one request may ask for.
pub const MAX_PAGE: usize = 1000;

/// The routes of this group.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/docs", post(create_document).get(list_documents))
        .route(
            "/api/v1/docs/{name}",
            get(get_document).delete(delete_document),
        )
}

#[derive(Deserialize)]
struct CreateDocument {
    name: String,
    #[serde(default = "default_kind")]
    kind: Kind,
}

fn default_kind() -> Kind {
    Kind::Yjs
}

#[derive(Deserialize)]
struct Page {
    limit: Option<usize>,
    cursor: Option<String>,
}

/// A document's metadata as the API shows it.
pub(crate) fn meta_json(name: &DocName, meta: &DocumentMeta, stats: Option<DocStats>) -> Value {
    let mut out =
        json!({ "name": name.as_str(), "kind": meta.kind, "created_ms": meta.created_ms });
    if let Some(stats) = stats {
        out["updates"] = json!(stats.updates);
        out["size_bytes"] = json!(stats.size_bytes);
        out["modified_ms"] = json!(stats.modified_ms);
    }
    out
}

async fn create_document(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<CreateDocument>, JsonRejection>,
) -> Result<Response, AppError> {
    let request = json_body(body)?;
    let doc = doc_name(&request.name)?;
    authorize(&state, &headers, &doc, true)?;
    let meta = DocumentMeta {
        kind: request.kind,
        created_ms: Some(now_ms()),
    };
    let op = WriteOp::CreateDocument {
        doc: doc.clone(),
        meta,
    };
    match state.sessions.rooms.writer().commit(op).await {
        Ok(WriteResult::Created(meta)) => {
            let stats = DocStats {
                modified_ms: meta.created_ms,
                ..DocStats::default()
            };
            let body = Json(meta_json(&doc, &meta, Some(stats)));
            Ok((StatusCode::CREATED, body).into_response())
        }
        Ok(WriteResult::Exists(meta)) => Err(AppError::Conflict(format!(
            "document {} already exists as a {:?} document",
            doc, meta.kind
        ))),
        Ok(other) => Err(AppError::Internal(format!(
            "unexpected write result {other:?}"
        ))),
        Err(e) => Err(AppError::Internal(e.to_string())),
    }
}

async fn get_document(
    State(state): State<AppState>,
    headers: HeaderMap,
    NamePath(doc): NamePath,
) -> Result<Json<Value>, AppError> {
    authorize(&state, &headers, &doc, false)?;
    let store = state.sessions.rooms.store().clone();
    let lookup = doc.clone();
    let found = blocking(move || {
        let Some(meta) = store.document(&lookup)? else {
            return Ok(None);
        };
        Ok(Some((meta, store.stats(&lookup)?)))
    })
    .await?;
    match found {
        Some((meta, stats)) => Ok(Json(meta_json(&doc, &meta, Some(stats)))),
        None => Err(AppError::NotFound(format!("no document {doc}"))),
    }
}

/// Lists documents in name order (bytewise), `limit` at a time; `next_cursor` (the last name
/// of the page) fetches the next page and is `null` on the last one. A token sees only the
/// documents its `docs` claim covers.
async fn list_documents(
    State(state): State<AppState>,
    headers: HeaderMap,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    let Query(page) = page.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let visible = state
        .auth
        .visible(bearer(&headers))
        .map_err(AppError::Unauthorized)?;
    let limit = page.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AppError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let store = state.sessions.rooms.store().clone();
    let cursor = page.cursor;
    // One more than asked tells whether another page follows.
    let mut found =
        blocking(move || store.list(cursor.as_deref(), limit + 1, |name| visible.covers(name)))
            .await?;
    let more = found.len() > limit;
    found.truncate(limit);
    let next_cursor = more
        .then(|| found.last().map(|(doc, _)| doc.as_str().to_owned()))
        .flatten();
    let docs: Vec<Value> = found
        .iter()
        .map(|(doc, meta)| meta_json(doc, meta, None))
        .collect();
    Ok(Json(json!({ "docs": docs, "next_cursor": next_cursor })))
}

/// Deletes a document and everything stored for it; its WebSocket clients are closed with
/// 4410 "document deleted", its SSE and live listeners get a `deleted` event, its lock goes.
async fn delete_document(
    State(state): State<AppState>,
    headers: HeaderMap,
    NamePath(doc): NamePath,
) -> Result<StatusCode, AppError> {
    authorize(&state, &headers, &doc, true)?;
    match state.sessions.rooms.delete(&doc).await {
        Ok(true) => {
            state.locks.forget(&doc);
            Ok(StatusCode::NO_CONTENT)
        }
        Ok(false) => Err(AppError::NotFound(format!("no document {doc}"))),
        Err(ApplyError::Invalid(e) | ApplyError::Unavailable(e)) => Err(AppError::Internal(e)),
    }
}
