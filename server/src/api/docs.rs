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

use super::openapi::{
    json_response, name_param, operation, request_body, schema, statuses, with_body,
};
use super::{NamePath, authorize, bearer, doc_name, json_body};
use crate::context::AppState;
use crate::error::AppError;
use crate::rooms::ApplyError;
use crate::storage::{Created, DocStats, DocumentMeta};
use crate::wall_clock::now_ms;

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
            get(get_document)
                .put(ensure_document)
                .delete(delete_document),
        )
}

#[derive(Deserialize)]
struct CreateDocument {
    name: String,
    #[serde(default = "default_kind")]
    kind: Kind,
}

/// The body of `PUT /api/v1/docs/{name}`.
#[derive(Deserialize)]
struct EnsureDocument {
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
    match create(&state, &headers, &doc, request.kind).await? {
        Created::New(meta) => Ok(created(&doc, &meta)),
        Created::Exists(meta) => Err(already_exists(&doc, &meta)),
    }
}

/// Creates the document unless it exists with the same kind (idempotent, so a page can make
/// sure its documents exist without an error on every visit): 201 when created, 200 when it
/// was there already, 409 when it exists as another kind.
async fn ensure_document(
    State(state): State<AppState>,
    headers: HeaderMap,
    NamePath(doc): NamePath,
    body: Result<Json<EnsureDocument>, JsonRejection>,
) -> Result<Response, AppError> {
    let kind = json_body(body)?.kind;
    match create(&state, &headers, &doc, kind).await? {
        Created::New(meta) => Ok(created(&doc, &meta)),
        Created::Exists(meta) if meta.kind == kind => {
            Ok(Json(meta_json(&doc, &meta, None)).into_response())
        }
        Created::Exists(meta) => Err(already_exists(&doc, &meta)),
    }
}

/// Asks the store to create `doc` as `kind`, for a writer.
async fn create(
    state: &AppState,
    headers: &HeaderMap,
    doc: &DocName,
    kind: Kind,
) -> Result<Created, AppError> {
    authorize(state, headers, doc, true)?;
    let meta = DocumentMeta {
        kind,
        created_ms: Some(now_ms()),
    };
    let created = state.storage.catalog.create(doc.clone(), meta).await?;
    Ok(created)
}

fn created(doc: &DocName, meta: &DocumentMeta) -> Response {
    let stats = DocStats {
        modified_ms: meta.created_ms,
        ..DocStats::default()
    };
    let body = Json(meta_json(doc, meta, Some(stats)));
    (StatusCode::CREATED, body).into_response()
}

fn already_exists(doc: &DocName, meta: &DocumentMeta) -> AppError {
    AppError::Conflict(format!(
        "document {} already exists as a {:?} document",
        doc, meta.kind
    ))
}

async fn get_document(
    State(state): State<AppState>,
    headers: HeaderMap,
    NamePath(doc): NamePath,
) -> Result<Json<Value>, AppError> {
    authorize(&state, &headers, &doc, false)?;
    let catalog = &state.storage.catalog;
    let Some(meta) = catalog.document(doc.clone()).await? else {
        return Err(AppError::NotFound(format!("no document {doc}")));
    };
    let stats = catalog.stats(doc.clone()).await?;
    Ok(Json(meta_json(&doc, &meta, Some(stats))))
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
    // One more than asked tells whether another page follows.
    let keep = Box::new(move |name: &str| visible.covers(name));
    let mut found = state
        .storage
        .catalog
        .list(page.cursor, limit + 1, keep)
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
            if let Err(e) = state.locks.forget(&doc).await {
                tracing::warn!(doc = %doc, error = %e, "the deleted document's lock stays until it expires");
            }
            Ok(StatusCode::NO_CONTENT)
        }
        Ok(false) => Err(AppError::NotFound(format!("no document {doc}"))),
        Err(ApplyError::Invalid(e)) => Err(AppError::internal(e)),
        Err(e) => Err(AppError::from(e)),
    }
}

/// This group's part of the OpenAPI description.
pub fn paths() -> Value {
    let list = operation(
        "List documents in name order, a page at a time",
        json!([
            { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000 } },
            { "name": "cursor", "in": "query", "schema": { "type": "string" } }
        ]),
        (
            200,
            json_response("a page of documents", schema("DocumentPage")),
        ),
        &[400, 401],
    );
    let create = with_body(
        operation(
            "Create a document of a kind",
            json!([]),
            (201, json_response("created", schema("Document"))),
            &statuses(&[409]),
        ),
        request_body(schema("CreateDocument")),
    );
    let get = operation(
        "A document's metadata",
        json!([name_param()]),
        (200, json_response("the document", schema("Document"))),
        &statuses(&[404]),
    );
    let mut ensure = with_body(
        operation(
            "Create the document unless it exists with this kind (idempotent): 201 created, 200 already there, 409 another kind",
            json!([name_param()]),
            (
                200,
                json_response("it exists with this kind", schema("Document")),
            ),
            &statuses(&[409]),
        ),
        request_body(schema("EnsureDocument")),
    );
    ensure["responses"]["201"] = json_response("created", schema("Document"));
    let mut delete = operation(
        "Delete a document: content, register, conflicts; its connections are closed (4410)",
        json!([name_param()]),
        (204, json!({ "description": "deleted" })),
        &statuses(&[404, 507]),
    );
    delete["responses"]["204"] = json!({ "description": "deleted" });
    json!({
        "/api/v1/docs": { "get": list, "post": create },
        "/api/v1/docs/{name}": { "get": get, "put": ensure, "delete": delete },
    })
}
