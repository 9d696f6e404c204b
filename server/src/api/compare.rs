//! Comparing versions of a Yjs document (read tokens): `GET .../history/diff?from=&to=`, what
//! changed between two versions and who made it, and `GET .../history/blame?at=`, who wrote
//! each part of every text (see [`crate::history::compare`]).
//!
//! Both replay log entries on a blocking thread, holding a place at the heavy-read gate
//! ([`crate::reads`]); a diff spans at most [`MAX_ENTRIES`] entries, and so does a blame.

use std::collections::HashMap;

use aetherflow_crdt::DocName;
use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::openapi::{json_response, name_param, operation, statuses};
use super::{NamePath, authorize};
use crate::context::AppState;
use crate::error::AppError;
use crate::history::compare::{Authored, blame, diff};
use crate::reads::ensure_yjs;
use crate::storage::{HistoryEntry, Storage};

/// Most log entries one diff or blame replays.
pub const MAX_ENTRIES: usize = 100_000;

/// The routes of this group.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/docs/{name}/history/diff", get(get_diff))
        .route("/api/v1/docs/{name}/history/blame", get(get_blame))
}

/// `?from=&to=` of a diff.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Range {
    /// The older version.
    from: u64,
    /// The newer version.
    to: u64,
}

/// `?at=` of a blame.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct At {
    /// The version; the newest when absent.
    at: Option<u64>,
}

/// The document's history entries, or 404/409/501.
async fn entries_of(state: &AppState, doc: &DocName) -> Result<Vec<HistoryEntry>, AppError> {
    let history = state
        .storage
        .history
        .clone()
        .ok_or(AppError::NotInClusterMode("version history"))?;
    ensure_yjs(&state.storage, doc).await?;
    Ok(history.timeline(doc.clone()).await?.entries)
}

/// The entries `wanted` (in log order), each with its authors.
async fn authored(
    storage: &Storage,
    doc: &DocName,
    wanted: &[HistoryEntry],
) -> Result<Vec<Authored>, AppError> {
    let (Some(first), Some(last)) = (wanted.first(), wanted.last()) else {
        return Ok(Vec::new());
    };
    let authors: HashMap<u64, &Vec<String>> = wanted.iter().map(|e| (e.seq, &e.authors)).collect();
    let mut out = Vec::with_capacity(wanted.len());
    let mut from = first.seq;
    while from <= last.seq {
        let page = storage.log.entries(doc.clone(), from, 1000).await?;
        let Some(end) = page.last().map(|e| e.seq) else {
            break;
        };
        for entry in page.into_iter().filter(|e| e.seq <= last.seq) {
            let by = authors
                .get(&entry.seq)
                .map(|a| a.to_vec())
                .unwrap_or_default();
            out.push(Authored {
                update: entry.update,
                authors: by,
            });
        }
        from = end + 1;
    }
    Ok(out)
}

fn too_many(what: &str, count: usize) -> AppError {
    AppError::ContentTooLarge(format!(
        "{what} spans {count} log entries, more than {MAX_ENTRIES}; pick closer versions"
    ))
}

/// What changed between two versions.
async fn get_diff(
    State(state): State<AppState>,
    headers: HeaderMap,
    NamePath(doc): NamePath,
    range: Result<Query<Range>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    authorize(&state, &headers, &doc, false)?;
    let Query(Range { from, to }) = range.map_err(|e| AppError::BadRequest(e.body_text()))?;
    if from >= to {
        return Err(AppError::BadRequest(format!(
            "from ({from}) must be an older version than to ({to})"
        )));
    }
    let entries = entries_of(&state, &doc).await?;
    if !entries.iter().any(|e| e.seq == to) {
        return Err(AppError::NotFound(format!("{doc} has no version {to}")));
    }
    let later: Vec<HistoryEntry> = entries
        .into_iter()
        .filter(|e| e.seq > from && e.seq <= to)
        .collect();
    if later.len() > MAX_ENTRIES {
        return Err(too_many("the diff", later.len()));
    }
    let history = state
        .storage
        .history
        .clone()
        .ok_or(AppError::NotInClusterMode("version history"))?;
    let base = history
        .at(doc.clone(), from)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("{doc} has no version {from}")))?;
    let later = authored(&state.storage, &doc, &later).await?;
    let permit = state.reads.permit(&state.metrics)?;
    let changes = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let base: Vec<Vec<u8>> = base.snapshot.into_iter().chain(base.log).collect();
        diff(&base, &later)
    })
    .await
    .map_err(AppError::internal)?
    .map_err(AppError::internal)?;
    Ok(Json(json!({ "from": from, "to": to, "roots": changes })))
}

/// Who wrote each part of every text at a version.
async fn get_blame(
    State(state): State<AppState>,
    headers: HeaderMap,
    NamePath(doc): NamePath,
    at: Result<Query<At>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    authorize(&state, &headers, &doc, false)?;
    let Query(At { at }) = at.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let mut entries = entries_of(&state, &doc).await?;
    let version = match at {
        Some(at) if entries.iter().any(|e| e.seq == at) => at,
        Some(at) => return Err(AppError::NotFound(format!("{doc} has no version {at}"))),
        None => match entries.last() {
            Some(last) => last.seq,
            None => return Ok(Json(json!({ "version": null, "roots": {} }))),
        },
    };
    entries.retain(|e| e.seq <= version);
    if entries.len() > MAX_ENTRIES {
        return Err(too_many("the blame", entries.len()));
    }
    let all = authored(&state.storage, &doc, &entries).await?;
    let permit = state.reads.permit(&state.metrics)?;
    let runs = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        blame(&[], &all)
    })
    .await
    .map_err(AppError::internal)?
    .map_err(AppError::internal)?;
    Ok(Json(json!({ "version": version, "roots": runs })))
}

/// This group's part of the OpenAPI description.
pub fn paths() -> Value {
    let version = |name: &str, required: bool, description: &str| {
        json!({ "name": name, "in": "query", "required": required, "description": description,
                "schema": { "type": "integer", "minimum": 0 } })
    };
    let run = json!({ "type": "object", "required": ["kind", "text", "by"], "properties": {
        "kind": { "type": "string", "enum": ["kept", "inserted", "deleted"] },
        "text": { "type": "string" },
        "by": { "type": "array", "items": { "type": "string" },
                "description": "who wrote it (kept, inserted) or deleted it (deleted); empty when unknown" } } });
    let change = json!({ "type": "object", "required": ["type"], "properties": {
        "type": { "type": "string", "enum": ["text", "map", "array", "xml"] },
        "runs": { "type": "array", "items": run.clone() },
        "changes": { "type": "object", "description": "key: {before, after}; a missing side is absent" },
        "index": { "type": "integer" }, "deleted": { "type": "array" }, "inserted": { "type": "array" },
        "before": { "type": "string" }, "after": { "type": "string" } } });
    let diff = json!({ "type": "object", "required": ["from", "to", "roots"], "properties": {
        "from": { "type": "integer" }, "to": { "type": "integer" },
        "roots": { "type": "object", "additionalProperties": change } } });
    let blame = json!({ "type": "object", "required": ["version", "roots"], "properties": {
        "version": { "type": ["integer", "null"] },
        "roots": { "type": "object", "additionalProperties": { "type": "array", "items": run } } } });
    json!({
        "/api/v1/docs/{name}/history/diff": { "get": operation(
            "What changed between two versions: text runs inserted and deleted with who made them, map keys, the array's changed middle",
            json!([name_param(), version("from", true, "the older version"), version("to", true, "the newer version")]),
            (200, json_response("the changes, by root", diff)),
            &statuses(&[404, 409, 422, 501, 503])) },
        "/api/v1/docs/{name}/history/blame": { "get": operation(
            "Who wrote each part of every text root at a version (the newest by default)",
            json!([name_param(), version("at", false, "the version; the newest when absent")]),
            (200, json_response("the runs, by text root", blame)),
            &statuses(&[404, 409, 422, 501, 503])) },
    })
}
