//! The HTTP API under `/api/v1`: documents and their kinds, register documents (`lww` and
//! `manual`), and manual conflicts.
//!
//! Every route takes the client token as `Authorization: Bearer <JWT>` (none when the relay runs
//! open); changes need a `write` token for the document. Errors are JSON
//! `{ "error": { "code", "message" } }`.
//!
//! The admin routes (`/api/v1/sessions`, `/api/v1/tokens`; see [`admin`]) take the admin key
//! instead of a client token.

pub mod admin;
mod sessions;
mod tokens;

use aetherflow_crdt::DocName;
use aetherflow_crdt::register::lww::{self, LwwWrite, WriteStamp};
use aetherflow_crdt::register::manual::{self, ManualWrite};
use aetherflow_crdt::register::{Command, Kind, Outcome, Register};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Grant, Permission};
use crate::error::AppError;
use crate::http::AppState;
use crate::store::{DocumentMeta, RegisterFailure, StoreError, WriteOp, WriteResult};

/// The `/api/v1` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(sessions::routes())
        .merge(tokens::routes())
        .route("/api/v1/docs", post(create_document))
        .route("/api/v1/docs/{name}", get(get_document))
        .route(
            "/api/v1/docs/{name}/register",
            get(get_register).put(put_register),
        )
        .route("/api/v1/docs/{name}/conflicts", get(list_conflicts))
        .route("/api/v1/docs/{name}/conflicts/{id}", get(get_conflict))
        .route(
            "/api/v1/docs/{name}/conflicts/{id}/resolve",
            post(resolve_conflict),
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

/// An LWW write carries its stamp; a manual write names its base version.
#[derive(Deserialize)]
#[serde(untagged)]
enum RegisterWrite {
    Lww {
        value: Value,
        stamp: WriteStamp,
    },
    Manual {
        value: Value,
        base_version: u64,
        #[serde(default)]
        author: Option<String>,
    },
}

#[derive(Deserialize)]
struct Resolution {
    value: Value,
    #[serde(default)]
    author: Option<String>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn doc_name(name: &str) -> Result<DocName, AppError> {
    DocName::parse(name).map_err(|e| AppError::InvalidDocName(e.to_string()))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// Checks the token for `doc`; `write` also demands write permission.
fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    doc: &DocName,
    write: bool,
) -> Result<Grant, AppError> {
    let grant = state
        .auth
        .authorize(bearer(headers), doc)
        .map_err(AppError::Unauthorized)?;
    if write && grant.permission != Permission::Write {
        return Err(AppError::ReadOnly);
    }
    Ok(grant)
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, AppError> {
    body.map(|Json(v)| v)
        .map_err(|e| AppError::BadRequest(e.body_text()))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
        .map_err(|e| AppError::Internal(e.to_string()))
}

fn meta_json(name: &DocName, meta: &DocumentMeta) -> Value {
    json!({ "name": name.as_str(), "kind": meta.kind, "created_ms": meta.created_ms })
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
            Ok((StatusCode::CREATED, Json(meta_json(&doc, &meta))).into_response())
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
    Path(name): Path<String>,
) -> Result<Json<Value>, AppError> {
    let doc = doc_name(&name)?;
    authorize(&state, &headers, &doc, false)?;
    let store = state.sessions.rooms.store().clone();
    let lookup = doc.clone();
    match blocking(move || store.document(&lookup)).await? {
        Some(meta) => Ok(Json(meta_json(&doc, &meta))),
        None => Err(AppError::NotFound(format!("no document {doc}"))),
    }
}

async fn load_register(state: &AppState, doc: &DocName) -> Result<Register, AppError> {
    let store = state.sessions.rooms.store().clone();
    let lookup = doc.clone();
    let (register, meta) = blocking(move || {
        let register = store.register(&lookup)?;
        let meta = if register.is_none() {
            store.document(&lookup)?
        } else {
            None
        };
        Ok((register, meta))
    })
    .await?;
    match (register, meta) {
        (Some(register), _) => Ok(register),
        (None, Some(meta)) => Err(AppError::Conflict(format!(
            "{doc} is a {:?} document, not a register",
            meta.kind
        ))),
        (None, None) => Err(AppError::NotFound(format!("no document {doc}"))),
    }
}

fn register_json(register: &Register) -> Value {
    match register {
        Register::Lww(r) => json!({ "kind": "lww", "value": r.value(), "stamp": r.stamp() }),
        Register::Manual(r) => json!({
            "kind": "manual",
            "value": r.current().map(|c| &c.value),
            "version": r.version(),
            "revision": r.current(),
            "open_conflicts": r.conflicts().count(),
        }),
    }
}

async fn get_register(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, AppError> {
    let doc = doc_name(&name)?;
    authorize(&state, &headers, &doc, false)?;
    Ok(Json(register_json(&load_register(&state, &doc).await?)))
}

async fn put_register(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Result<Json<RegisterWrite>, JsonRejection>,
) -> Result<Json<Value>, AppError> {
    let doc = doc_name(&name)?;
    let grant = authorize(&state, &headers, &doc, true)?;
    let command = match json_body(body)? {
        RegisterWrite::Lww { value, stamp } => Command::LwwWrite(LwwWrite { value, stamp }),
        RegisterWrite::Manual {
            value,
            base_version,
            author,
        } => Command::ManualWrite(ManualWrite {
            base_version,
            value,
            author: author.unwrap_or(grant.user),
            at_ms: now_ms(),
        }),
    };
    Ok(Json(outcome_json(run_command(&state, doc, command).await?)))
}

async fn run_command(
    state: &AppState,
    doc: DocName,
    command: Command,
) -> Result<Outcome, AppError> {
    let op = WriteOp::Register { doc, command };
    match state.sessions.rooms.writer().commit(op).await {
        Ok(WriteResult::Register(Ok(outcome))) => Ok(outcome),
        Ok(WriteResult::Register(Err(failure))) => Err(match failure {
            RegisterFailure::NotFound => AppError::NotFound(failure.to_string()),
            RegisterFailure::Command(manual_error) => match manual_error {
                aetherflow_crdt::register::CommandError::Manual(
                    manual::ManualError::UnknownConflict(id),
                ) => AppError::NotFound(format!("no open conflict {id}")),
                other => AppError::BadRequest(other.to_string()),
            },
            RegisterFailure::NotARegister(_) => AppError::Conflict(failure.to_string()),
        }),
        Ok(other) => Err(AppError::Internal(format!(
            "unexpected write result {other:?}"
        ))),
        Err(e) => Err(AppError::Internal(e.to_string())),
    }
}

fn outcome_json(outcome: Outcome) -> Value {
    match outcome {
        Outcome::Lww(lww::Outcome::Applied) => json!({ "outcome": "applied" }),
        Outcome::Lww(lww::Outcome::Duplicate) => json!({ "outcome": "duplicate" }),
        Outcome::Lww(lww::Outcome::Stale { current }) => {
            json!({ "outcome": "stale", "current": current })
        }
        Outcome::Manual(manual::Outcome::Applied(revision)) | Outcome::Resolved(revision) => {
            json!({ "outcome": "applied", "revision": revision })
        }
        Outcome::Manual(manual::Outcome::Conflict(conflict)) => {
            json!({ "outcome": "conflict", "conflict": conflict })
        }
    }
}

fn manual_register(register: Register) -> Result<manual::ManualRegister, AppError> {
    match register {
        Register::Manual(r) => Ok(r),
        Register::Lww(_) => Err(AppError::Conflict(
            "an lww document has no conflicts: the highest stamp wins".into(),
        )),
    }
}

async fn list_conflicts(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, AppError> {
    let doc = doc_name(&name)?;
    authorize(&state, &headers, &doc, false)?;
    let register = manual_register(load_register(&state, &doc).await?)?;
    let conflicts: Vec<_> = register.conflicts().collect();
    Ok(Json(json!({ "conflicts": conflicts })))
}

async fn get_conflict(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((name, id)): Path<(String, u64)>,
) -> Result<Json<Value>, AppError> {
    let doc = doc_name(&name)?;
    authorize(&state, &headers, &doc, false)?;
    let register = manual_register(load_register(&state, &doc).await?)?;
    match register.conflict(id) {
        Some(conflict) => Ok(Json(json!(conflict))),
        None => Err(AppError::NotFound(format!("no open conflict {id}"))),
    }
}

async fn resolve_conflict(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((name, id)): Path<(String, u64)>,
    body: Result<Json<Resolution>, JsonRejection>,
) -> Result<Json<Value>, AppError> {
    let doc = doc_name(&name)?;
    let grant = authorize(&state, &headers, &doc, true)?;
    let resolution = json_body(body)?;
    let command = Command::Resolve {
        conflict: id,
        value: resolution.value,
        author: resolution.author.unwrap_or(grant.user),
        at_ms: now_ms(),
    };
    Ok(Json(outcome_json(run_command(&state, doc, command).await?)))
}
