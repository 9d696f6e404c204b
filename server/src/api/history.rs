//! A Yjs document's version history under `/api/v1/docs/{name}/history` (see
//! [`crate::history`] for what a version is): list versions newest first, read the content at
//! one (JSON or one binary v1 update), restore one as a new change through the room, and
//! label versions. Read tokens browse; write tokens restore and label.
//!
//! Both engines keep history; an engine without it ([`crate::storage::Storage::history`] is
//! `None`) answers 501 on every route.

use std::sync::Arc;

use aetherflow_crdt::DocName;
use aetherflow_crdt::event::DocEvent;
use axum::Json;
use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use super::openapi::{json_response, name_param, operation, request_body, schema, statuses};
use super::{authorize, doc_name, json_body};
use crate::context::AppState;
use crate::error::AppError;
use crate::history::restore::restore_update;
use crate::history::{Version, versions};
use crate::metrics::Rejection;
use crate::reads::json::TooLarge;
use crate::reads::{Form, ensure_yjs};
use crate::storage::{DocumentHistory, StoredDoc};

/// Versions per page unless `limit` says otherwise.
pub const DEFAULT_PAGE: usize = 100;
/// Largest `limit` accepted.
pub const MAX_PAGE: usize = 1000;
/// Longest label, in bytes.
pub const MAX_LABEL_BYTES: usize = 200;

/// The routes of this group.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/docs/{name}/history", get(list))
        .route("/api/v1/docs/{name}/history/labels", get(labels))
        .route(
            "/api/v1/docs/{name}/history/{version}/content",
            get(content),
        )
        .route("/api/v1/docs/{name}/history/{version}/update", get(update))
        .route(
            "/api/v1/docs/{name}/history/{version}/restore",
            post(restore),
        )
        .route(
            "/api/v1/docs/{name}/history/{version}/label",
            put(set_label).delete(remove_label),
        )
}

/// A document name and a version id from the path.
struct VersionPath(DocName, u64);

impl<S: Send + Sync> FromRequestParts<S> for VersionPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path((name, version)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| AppError::InvalidDocName(e.body_text()))?;
        let doc = doc_name(&name)?;
        let version = version.parse().map_err(|_| {
            AppError::BadRequest(format!(
                "version {version:?} is not a version id (an integer)"
            ))
        })?;
        Ok(VersionPath(doc, version))
    }
}

/// The history engine, or 501 for an engine without one.
fn history(state: &AppState) -> Result<Arc<dyn DocumentHistory>, AppError> {
    state
        .storage
        .history
        .clone()
        .ok_or(AppError::NotInClusterMode("version history"))
}

/// `?before=&limit=` of a listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    /// Only versions with a smaller id (the previous page's `next_before`).
    before: Option<u64>,
    /// Versions per page, 1 to [`MAX_PAGE`].
    limit: Option<usize>,
}

/// The document's versions, newest first, `limit` at a time.
async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    super::NamePath(doc): super::NamePath,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    authorize(&state, &headers, &doc, false)?;
    let Query(page) = page.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let limit = page.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AppError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let history = history(&state)?;
    ensure_yjs(&state.storage, &doc).await?;
    let timeline = history.timeline(doc).await?;
    let all = versions(&timeline.entries, &timeline.labels);
    let before = page.before.unwrap_or(u64::MAX);
    let mut newest: Vec<&Version> = all.iter().rev().filter(|v| v.id < before).collect();
    let more = newest.len() > limit;
    newest.truncate(limit);
    let next_before = newest.last().filter(|_| more).map(|v| v.id);
    Ok(Json(
        json!({ "versions": newest, "next_before": next_before }),
    ))
}

/// The document's labels, oldest version first.
async fn labels(
    State(state): State<AppState>,
    headers: HeaderMap,
    super::NamePath(doc): super::NamePath,
) -> Result<Json<Value>, AppError> {
    authorize(&state, &headers, &doc, false)?;
    let history = history(&state)?;
    ensure_yjs(&state.storage, &doc).await?;
    let timeline = history.timeline(doc).await?;
    let labels: Vec<Value> = timeline
        .labels
        .iter()
        .map(|(version, label)| json!({ "version": version, "label": label }))
        .collect();
    Ok(Json(json!({ "labels": labels })))
}

/// The stored state of `doc` at `version`: 404 for an unknown document or version.
async fn state_at(state: &AppState, doc: &DocName, version: u64) -> Result<StoredDoc, AppError> {
    let history = history(state)?;
    ensure_yjs(&state.storage, doc).await?;
    history
        .at(doc.clone(), version)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("{doc} has no version {version}")))
}

/// [`state_at`] for a caller allowed to read `doc`.
async fn readable_state_at(
    state: &AppState,
    headers: &HeaderMap,
    doc: &DocName,
    version: u64,
) -> Result<StoredDoc, AppError> {
    authorize(state, headers, doc, false)?;
    state_at(state, doc, version).await
}

/// The content at a version as JSON, in the form of `GET .../content`.
async fn content(
    State(state): State<AppState>,
    headers: HeaderMap,
    VersionPath(doc, version): VersionPath,
) -> Result<Response, AppError> {
    let stored = readable_state_at(&state, &headers, &doc, version).await?;
    match state
        .reads
        .render(&state.metrics, doc.clone(), stored, Form::Json)
        .await?
    {
        Ok(json) => Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response()),
        Err(TooLarge { cap }) => {
            state.metrics.reject(Rejection::ContentTooLarge);
            Err(AppError::ContentTooLarge(format!(
                "the version's JSON is larger than {cap} bytes (--max-content-json-bytes); \
                 read it as one binary Yjs update with GET \
                 /api/v1/docs/{doc}/history/{version}/update"
            )))
        }
    }
}

/// The content at a version as one binary Yjs v1 update.
async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    VersionPath(doc, version): VersionPath,
) -> Result<Response, AppError> {
    let stored = readable_state_at(&state, &headers, &doc, version).await?;
    let update = state
        .reads
        .render(&state.metrics, doc, stored, Form::Update)
        .await?
        .map_err(AppError::internal)?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], update).into_response())
}

/// Restores a version: the change back to its content, applied through the room like any
/// writer's update (committed, then broadcast to every connection).
async fn restore(
    State(state): State<AppState>,
    headers: HeaderMap,
    VersionPath(doc, version): VersionPath,
) -> Result<Json<Value>, AppError> {
    let grant = authorize(&state, &headers, &doc, true)?;
    let past = state_at(&state, &doc, version).await?;
    let current = state.storage.log.load(doc.clone()).await?;
    let change = tokio::task::spawn_blocking(move || restore_update(&past, &current))
        .await
        .map_err(AppError::internal)?
        .map_err(AppError::internal)?;
    let changed = change.is_some();
    if let Some(change) = change {
        let by = Some(grant.user.clone());
        state.sessions.rooms.apply_as(&doc, change, by).await?;
    }
    let event = DocEvent::VersionRestored {
        version,
        by: grant.user,
    };
    state.sessions.rooms.events().publish(&doc, event);
    Ok(Json(json!({ "restored": version, "changed": changed })))
}

/// The body of a label.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelBody {
    /// The label: 1 to [`MAX_LABEL_BYTES`] bytes.
    label: String,
}

/// Labels a version (replacing its label); a labelled version is never thinned away, and
/// ends its version (see [`crate::history`]).
async fn set_label(
    State(state): State<AppState>,
    headers: HeaderMap,
    VersionPath(doc, version): VersionPath,
    body: Result<Json<LabelBody>, JsonRejection>,
) -> Result<Json<Value>, AppError> {
    let grant = authorize(&state, &headers, &doc, true)?;
    let LabelBody { label } = json_body(body)?;
    let label = label.trim().to_owned();
    if label.is_empty() || label.len() > MAX_LABEL_BYTES || label.chars().any(char::is_control) {
        return Err(AppError::BadRequest(format!(
            "a label is 1 to {MAX_LABEL_BYTES} bytes of text without control characters"
        )));
    }
    let history = history(&state)?;
    ensure_yjs(&state.storage, &doc).await?;
    if !history
        .label(doc.clone(), version, Some(label.clone()))
        .await?
    {
        return Err(AppError::NotFound(format!(
            "{doc} has no version {version}"
        )));
    }
    let event = DocEvent::VersionLabelled {
        version,
        label: Some(label.clone()),
        by: grant.user,
    };
    state.sessions.rooms.events().publish(&doc, event);
    Ok(Json(json!({ "version": version, "label": label })))
}

/// Removes a version's label.
async fn remove_label(
    State(state): State<AppState>,
    headers: HeaderMap,
    VersionPath(doc, version): VersionPath,
) -> Result<StatusCode, AppError> {
    let grant = authorize(&state, &headers, &doc, true)?;
    let history = history(&state)?;
    ensure_yjs(&state.storage, &doc).await?;
    if !history.label(doc.clone(), version, None).await? {
        return Err(AppError::NotFound(format!(
            "version {version} of {doc} has no label"
        )));
    }
    let event = DocEvent::VersionLabelled {
        version,
        label: None,
        by: grant.user,
    };
    state.sessions.rooms.events().publish(&doc, event);
    Ok(StatusCode::NO_CONTENT)
}

/// The `{version}` path parameter.
fn version_param() -> Value {
    json!({ "name": "version", "in": "path", "required": true,
            "description": "a version id: the sequence number of the version's last log entry",
            "schema": { "type": "integer", "minimum": 0 } })
}

/// This group's part of the OpenAPI description.
pub fn paths() -> Value {
    let page = json!([name_param(),
        { "name": "before", "in": "query", "description": "only versions with a smaller id (the previous page's next_before)",
          "schema": { "type": "integer", "minimum": 0 } },
        { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": MAX_PAGE } }]);
    let both = json!([name_param(), version_param()]);
    let binary = json!({ "description": "the content at the version as one Yjs v1 update",
        "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } });
    json!({
        "/api/v1/docs/{name}/history": { "get": operation(
            "A Yjs document's versions, newest first, paged",
            page, (200, json_response("a page of versions", schema("VersionPage"))),
            &statuses(&[404, 409, 501])) },
        "/api/v1/docs/{name}/history/labels": { "get": operation(
            "The labels of a Yjs document's versions",
            json!([name_param()]), (200, json_response("the labels", schema("LabelList"))),
            &statuses(&[404, 409, 501])) },
        "/api/v1/docs/{name}/history/{version}/content": { "get": operation(
            "The content at a version as JSON (as GET .../content)",
            both.clone(), (200, json_response("the content", schema("Content"))),
            &statuses(&[404, 409, 422, 501, 503])) },
        "/api/v1/docs/{name}/history/{version}/update": { "get": operation(
            "The content at a version as one binary Yjs v1 update",
            both.clone(), (200, binary), &statuses(&[404, 409, 501, 503])) },
        "/api/v1/docs/{name}/history/{version}/restore": { "post": operation(
            "Restore a version: its content applied as a new change through the room (write token)",
            both.clone(), (200, json_response("restored", schema("Restored"))),
            &statuses(&[404, 409, 413, 501, 507])) },
        "/api/v1/docs/{name}/history/{version}/label": {
            "put": super::openapi::with_body(operation(
                "Label a version (write token); labelled versions are never thinned away",
                both.clone(), (200, json_response("the label", schema("Label"))),
                &statuses(&[404, 409, 501, 507])), request_body(schema("LabelBody"))),
            "delete": operation("Remove a version's label (write token)", both,
                (204, json!({ "description": "removed" })), &statuses(&[404, 409, 501, 507])),
        },
    })
}

/// This group's schemas.
pub fn schemas() -> Value {
    json!({
        "Version": { "type": "object",
            "required": ["id", "first_seq", "time_ms", "started_ms", "authors", "bytes", "entries", "label"],
            "properties": {
                "id": { "type": "integer", "description": "sequence number of its last log entry" },
                "first_seq": { "type": "integer" },
                "time_ms": { "type": "integer", "description": "time of its last change" },
                "started_ms": { "type": "integer" },
                "authors": { "type": "array", "items": { "type": "string" }, "description": "token subjects, or anonymous" },
                "bytes": { "type": "integer", "description": "size of its updates" },
                "entries": { "type": "integer" },
                "label": { "type": ["string", "null"] } } },
        "VersionPage": { "type": "object", "required": ["versions", "next_before"], "properties": {
            "versions": { "type": "array", "items": schema("Version") },
            "next_before": { "type": ["integer", "null"] } } },
        "Label": { "type": "object", "required": ["version", "label"], "properties": {
            "version": { "type": "integer" }, "label": { "type": "string" } } },
        "LabelList": { "type": "object", "required": ["labels"], "properties": {
            "labels": { "type": "array", "items": schema("Label") } } },
        "LabelBody": { "type": "object", "required": ["label"], "additionalProperties": false, "properties": {
            "label": { "type": "string", "minLength": 1, "maxLength": MAX_LABEL_BYTES } } },
        "Restored": { "type": "object", "required": ["restored", "changed"], "properties": {
            "restored": { "type": "integer" },
            "changed": { "type": "boolean", "description": "false when the content was already the version's" } } },
    })
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use crate::config::{Config, Settings};
    use crate::context::{AppState, Foundation};
    use crate::metrics::Metrics;
    use crate::store::{self, Store, WriteMode};

    /// An open relay whose engine keeps no history, as cluster mode's does not yet.
    fn router_without_history(dir: &std::path::Path) -> axum::Router {
        let config = Config::from_settings(Settings::default()).expect("the default config");
        let store = Store::open(&dir.join("db.redb")).expect("store");
        let (mut storage, writer, _) =
            store::start(store.clone(), WriteMode::Durable, Metrics::new());
        storage.history = None;
        let foundation = Foundation::for_tests(storage, store, writer);
        crate::http::router(AppState::build(&config, foundation, None))
    }

    #[tokio::test]
    async fn without_a_history_engine_every_history_route_answers_501() {
        let dir = tempfile::tempdir().expect("temp dir");
        let router = router_without_history(dir.path());
        let label = r#"{"label":"x"}"#;
        for (method, path, body) in [
            ("GET", "/api/v1/docs/d/history", ""),
            ("GET", "/api/v1/docs/d/history/labels", ""),
            ("GET", "/api/v1/docs/d/history/0/content", ""),
            ("GET", "/api/v1/docs/d/history/0/update", ""),
            ("POST", "/api/v1/docs/d/history/0/restore", ""),
            ("PUT", "/api/v1/docs/d/history/0/label", label),
            ("DELETE", "/api/v1/docs/d/history/0/label", ""),
            ("GET", "/api/v1/docs/d/history/diff?from=0&to=1", ""),
            ("GET", "/api/v1/docs/d/history/blame", ""),
        ] {
            let request = Request::builder()
                .method(method)
                .uri(path)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .expect("a request");
            let response = router.clone().oneshot(request).await.expect("infallible");
            let status = response.status();
            let body = to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("a body");
            let text = String::from_utf8_lossy(&body);
            assert_eq!(
                status,
                StatusCode::NOT_IMPLEMENTED,
                "{method} {path}: {text}"
            );
            assert!(
                text.contains("not_in_cluster_mode"),
                "{method} {path}: {text}"
            );
        }
    }
}
