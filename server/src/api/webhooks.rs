//! Admin routes for webhooks (see [`crate::webhooks`]): endpoints under
//! `/api/v1/webhooks` (create, list, get, update, delete) and the outbox under
//! `/api/v1/webhooks/deliveries` (list pending or parked events, replay or discard a parked
//! one).
//!
//! An endpoint's secret is shown when it is created and when an update rotates it, never in
//! a listing.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::sessions::admin_operation;
use crate::context::AppState;
use crate::error::AppError;
use crate::store::outbox::{EndpointRecord, OutboxRow};
use crate::webhooks::{EndpointSpec, MAX_DEBOUNCE_MS, MAX_PREFIX_BYTES, WebhookError};

/// Deliveries per page unless `limit` says otherwise.
pub const DEFAULT_PAGE: usize = 100;
/// Largest `limit` accepted.
pub const MAX_PAGE: usize = 1000;

/// The webhook routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/webhooks", get(list).post(create))
        .route("/api/v1/webhooks/deliveries", get(deliveries))
        .route("/api/v1/webhooks/deliveries/{seq}/replay", post(replay))
        .route(
            "/api/v1/webhooks/deliveries/{seq}",
            axum::routing::delete(discard),
        )
        .route(
            "/api/v1/webhooks/{id}",
            get(get_one).patch(update).delete(remove),
        )
}

fn endpoint_schema(with_secret: bool) -> Value {
    let mut required = vec![
        "id",
        "url",
        "events",
        "include_content",
        "debounce_ms",
        "created_ms",
    ];
    if with_secret {
        required.push("secret");
    }
    let mut schema = json!({ "type": "object", "required": required, "properties": {
        "id": { "type": "string" }, "url": { "type": "string" },
        "events": { "type": "array", "items": event_schema() },
        "prefix": { "type": ["string", "null"] },
        "include_content": { "type": "boolean" },
        "debounce_ms": { "type": "integer", "minimum": 0 },
        "created_ms": { "type": "integer", "minimum": 0 } } });
    if with_secret {
        schema["properties"]["secret"] = json!({ "type": "string",
            "description": "the HMAC-SHA256 key of the AetherFlow-Signature header; shown only now" });
    }
    schema
}

fn event_schema() -> Value {
    let names: Vec<&str> = aetherflow_crdt::webhook::EventKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect();
    json!({ "type": "string", "enum": names })
}

fn spec_schema(required: &[&str], rotate: bool) -> Value {
    let mut schema = json!({ "type": "object", "required": required, "additionalProperties": false,
        "properties": {
            "url": { "type": "string", "description": "http:// or https://; non-public addresses are refused unless --webhook-allow-private-addresses" },
            "events": { "type": "array", "minItems": 1, "items": event_schema() },
            "prefix": { "type": "string", "maxLength": MAX_PREFIX_BYTES, "description": "only documents whose names start with this; empty: every document" },
            "include_content": { "type": "boolean", "description": "carry the document's content (default false)" },
            "debounce_ms": { "type": "integer", "minimum": 0, "maximum": MAX_DEBOUNCE_MS } } });
    if rotate {
        schema["properties"]["rotate_secret"] = json!({ "type": "boolean" });
    }
    schema
}

fn row_schema() -> Value {
    json!({ "type": "object", "required": ["seq", "id", "endpoint", "type", "document", "created_ms", "due_ms", "attempts", "state"],
        "properties": {
            "seq": { "type": "integer", "minimum": 0 }, "id": { "type": "string" },
            "endpoint": { "type": "string" }, "type": event_schema(), "document": { "type": "string" },
            "created_ms": { "type": "integer" }, "due_ms": { "type": "integer" },
            "attempts": { "type": "integer", "minimum": 0 },
            "last_error": { "type": ["string", "null"] },
            "state": { "type": "string", "enum": ["pending", "parked"] } } })
}

/// This group's part of the OpenAPI description.
pub fn paths() -> Value {
    let body = |schema: Value| json!({ "required": true, "content": { "application/json": { "schema": schema } } });
    let id =
        json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } });
    let list = admin_operation(
        "List webhook endpoints (without their secrets)",
        json!([]),
        &[(
            200,
            json!({ "type": "object", "required": ["endpoints"], "properties": {
            "endpoints": { "type": "array", "items": endpoint_schema(false) } } }),
        )],
        &[401, 403],
    );
    let mut create = admin_operation(
        "Create a webhook endpoint; the answer holds its signing secret",
        json!([]),
        &[(201, endpoint_schema(true))],
        &[400, 401, 403, 409],
    );
    create["requestBody"] = body(spec_schema(&["url", "events"], false));
    let get_one = admin_operation(
        "One webhook endpoint",
        json!([id]),
        &[(200, endpoint_schema(false))],
        &[401, 403, 404],
    );
    let mut update = admin_operation(
        "Change a webhook endpoint's fields; rotate_secret makes a new secret, shown in the answer",
        json!([id]),
        &[(200, endpoint_schema(false))],
        &[400, 401, 403, 404],
    );
    update["requestBody"] = body(spec_schema(&[], true));
    let mut delete = admin_operation(
        "Delete a webhook endpoint and the events still owed to it",
        json!([id]),
        &[],
        &[401, 403, 404],
    );
    delete["responses"]["204"] = json!({ "description": "deleted" });
    let deliveries = admin_operation(
        "Events in the outbox, oldest first: pending (to send or retry) or parked (given up on after the retry horizon)",
        json!([
            { "name": "state", "in": "query", "schema": { "type": "string", "enum": ["pending", "parked"] } },
            { "name": "endpoint", "in": "query", "schema": { "type": "string" } },
            { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": MAX_PAGE } },
            { "name": "after", "in": "query", "description": "next_after of the previous page", "schema": { "type": "integer", "minimum": 0 } }
        ]),
        &[(
            200,
            json!({ "type": "object", "required": ["deliveries", "pending", "parked"], "properties": {
            "deliveries": { "type": "array", "items": row_schema() },
            "pending": { "type": "integer", "minimum": 0 }, "parked": { "type": "integer", "minimum": 0 },
            "next_after": { "type": "integer", "minimum": 0 } } }),
        )],
        &[400, 401, 403],
    );
    let seq = json!({ "name": "seq", "in": "path", "required": true, "schema": { "type": "integer", "minimum": 0 } });
    let replay = admin_operation(
        "Send a parked event again now (same idempotency id), with a fresh retry horizon",
        json!([seq]),
        &[(
            202,
            json!({ "type": "object", "required": ["replayed"], "properties": { "replayed": { "type": "integer" } } }),
        )],
        &[400, 401, 403, 404],
    );
    let mut discard = admin_operation(
        "Discard a parked event: removed without being sent",
        json!([seq]),
        &[],
        &[400, 401, 403, 404],
    );
    discard["responses"]["204"] = json!({ "description": "discarded" });
    json!({
        "/api/v1/webhooks": { "get": list, "post": create },
        "/api/v1/webhooks/deliveries/{seq}": { "delete": discard },
        "/api/v1/webhooks/{id}": { "get": get_one, "patch": update, "delete": delete },
        "/api/v1/webhooks/deliveries": { "get": deliveries },
        "/api/v1/webhooks/deliveries/{seq}/replay": { "post": replay },
    })
}

impl From<WebhookError> for AppError {
    fn from(e: WebhookError) -> AppError {
        match e {
            WebhookError::Invalid(_) | WebhookError::Target(_) => {
                AppError::BadRequest(e.to_string())
            }
            WebhookError::NotFound(_) => AppError::NotFound(e.to_string()),
            WebhookError::TooMany => AppError::Conflict(e.to_string()),
            WebhookError::Store(e) => AppError::from(e),
        }
    }
}

fn view(record: &EndpointRecord, with_secret: bool) -> Value {
    let mut out = json!({ "id": record.id, "url": record.url, "events": record.events,
        "prefix": record.prefix, "include_content": record.include_content,
        "debounce_ms": record.debounce_ms, "created_ms": record.created_ms });
    if with_secret {
        out["secret"] = json!(record.secret);
    }
    out
}

fn row_view(seq: u64, row: &OutboxRow) -> Value {
    json!({ "seq": seq, "id": row.id, "endpoint": row.endpoint, "type": row.kind,
        "document": row.doc, "created_ms": row.created_ms, "due_ms": row.due_ms,
        "attempts": row.attempts, "last_error": row.last_error,
        "state": if row.parked { "parked" } else { "pending" } })
}

async fn list(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, AppError> {
    state.admin.require(&state.auth, &headers)?;
    let endpoints = hooks(&state)?.list().await?;
    let views: Vec<Value> = endpoints.iter().map(|e| view(e, false)).collect();
    Ok(Json(json!({ "endpoints": views })))
}

async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<EndpointSpec>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    state.admin.require(&state.auth, &headers)?;
    let spec = super::json_body(body)?;
    let record = hooks(&state)?.create(spec).await?;
    Ok((StatusCode::CREATED, Json(view(&record, true))))
}

async fn get_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    state.admin.require(&state.auth, &headers)?;
    Ok(Json(view(&hooks(&state)?.get(&id).await?, false)))
}

async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<EndpointSpec>, JsonRejection>,
) -> Result<Json<Value>, AppError> {
    state.admin.require(&state.auth, &headers)?;
    let spec = super::json_body(body)?;
    let rotated = spec.rotate_secret;
    let record = hooks(&state)?.update(&id, spec).await?;
    Ok(Json(view(&record, rotated)))
}

async fn remove(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    state.admin.require(&state.auth, &headers)?;
    hooks(&state)?.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveriesQuery {
    state: Option<String>,
    endpoint: Option<String>,
    limit: Option<usize>,
    after: Option<u64>,
}

async fn deliveries(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    state.admin.require(&state.auth, &headers)?;
    let Query(query) = query.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let parked = match query.state.as_deref() {
        None => None,
        Some("pending") => Some(false),
        Some("parked") => Some(true),
        Some(other) => return Err(AppError::BadRequest(format!("unknown state {other:?}"))),
    };
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AppError::BadRequest(format!(
            "limit must be 1 to {MAX_PAGE}"
        )));
    }
    let endpoint = query.endpoint;
    let keep = move |row: &OutboxRow| {
        parked.is_none_or(|p| row.parked == p)
            && endpoint.as_deref().is_none_or(|e| row.endpoint == e)
    };
    let (rows, depth) = hooks(&state)?.rows(query.after, limit, keep).await?;
    let views: Vec<Value> = rows.iter().map(|(seq, row)| row_view(*seq, row)).collect();
    let mut out = json!({ "deliveries": views, "pending": depth.pending, "parked": depth.parked });
    if rows.len() == limit
        && let Some((seq, _)) = rows.last()
    {
        out["next_after"] = json!(seq);
    }
    Ok(Json(out))
}

fn parse_seq(seq: &str) -> Result<u64, AppError> {
    seq.parse()
        .map_err(|_| AppError::BadRequest(format!("delivery {seq:?} is not an integer")))
}

async fn discard(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(seq): Path<String>,
) -> Result<StatusCode, AppError> {
    state.admin.require(&state.auth, &headers)?;
    hooks(&state)?.discard(parse_seq(&seq)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn replay(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(seq): Path<String>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    state.admin.require(&state.auth, &headers)?;
    let seq = parse_seq(&seq)?;
    hooks(&state)?.replay(seq).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "replayed": seq }))))
}

/// The webhook service, or 501 in cluster mode.
fn hooks(state: &AppState) -> Result<&crate::webhooks::Webhooks, AppError> {
    state
        .webhooks
        .as_ref()
        .ok_or(AppError::NotInClusterMode("webhooks"))
}
