//! Register documents (`lww` and `manual`): read and write the register, list, read and
//! resolve conflicts. The write path ([`write`]) is shared with the live WebSocket channel:
//! it checks the document's lock, runs the command in the store writer and announces the
//! result on the event bus.

use aetherflow_crdt::DocName;
use aetherflow_crdt::register::clock::{MAX_DRIFT_MS, check_drift};
use aetherflow_crdt::register::lww::{self, LwwWrite, WriteStamp};
use aetherflow_crdt::register::manual::{self, ManualWrite};
use aetherflow_crdt::register::{Command, CommandError, Outcome, Register};
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::openapi::{
    id_param, json_response, name_param, operation, request_body, schema, statuses, with_body,
};
use super::{ConflictPath, NamePath, authorize, blocking, identity, json_body};
use crate::auth::Grant;
use crate::context::AppState;
use crate::error::AppError;
use crate::events::DocEvent;
use crate::store::{RegisterFailure, WriteOp, WriteResult};
use crate::wall_clock::now_ms;

/// The routes of this group.
pub fn routes() -> Router<AppState> {
    Router::new()
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

/// An LWW write carries its stamp; a manual write names its base version.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RegisterWrite {
    /// A write to an `lww` register.
    Lww {
        /// The new value.
        value: Value,
        /// Its hybrid logical clock stamp and writer id.
        stamp: WriteStamp,
    },
    /// A write to a `manual` register.
    Manual {
        /// The new value.
        value: Value,
        /// The version the writer saw.
        base_version: u64,
        /// Who writes: the token's subject (another name is refused); on an open relay this
        /// name, or `anonymous`.
        #[serde(default)]
        author: Option<String>,
    },
}

/// A resolution of a manual conflict.
#[derive(Debug, Deserialize)]
pub struct Resolution {
    /// The value that ends the conflict.
    pub value: Value,
    /// Who resolves it: the token's subject (another name is refused); on an open relay this
    /// name, or `anonymous`.
    #[serde(default)]
    pub author: Option<String>,
}

/// A change to a register document.
#[derive(Debug)]
pub enum RegisterChange {
    /// A write.
    Write(RegisterWrite),
    /// A conflict resolution.
    Resolve {
        /// The conflict.
        conflict: u64,
        /// The resolution.
        resolution: Resolution,
    },
}

pub(crate) async fn load_register(state: &AppState, doc: &DocName) -> Result<Register, AppError> {
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

/// A register as the API shows it.
pub(crate) fn register_json(register: &Register) -> Value {
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
    NamePath(doc): NamePath,
) -> Result<Json<Value>, AppError> {
    authorize(&state, &headers, &doc, false)?;
    Ok(Json(register_json(&load_register(&state, &doc).await?)))
}

async fn put_register(
    State(state): State<AppState>,
    headers: HeaderMap,
    NamePath(doc): NamePath,
    body: Result<Json<RegisterWrite>, JsonRejection>,
) -> Result<Json<Value>, AppError> {
    let grant = authorize(&state, &headers, &doc, true)?;
    let change = RegisterChange::Write(json_body(body)?);
    Ok(Json(write(&state, &doc, &grant, change).await?))
}

/// Applies `change` for `grant`'s user and announces it. The author of a manual write or
/// resolution is the token's subject (a body naming someone else is refused with 403
/// `forbidden`); an open relay records the body's `author`, or `anonymous`. An LWW stamp more
/// than [`MAX_DRIFT_MS`] ahead of the relay's clock is refused (422 `stamp_too_far_ahead`)
/// before anything is stored. While a manual document is locked, only the lock's holder may
/// change it (423 `locked` for anyone else). Returns the outcome as the API shows it.
pub(crate) async fn write(
    state: &AppState,
    doc: &DocName,
    grant: &Grant,
    change: RegisterChange,
) -> Result<Value, AppError> {
    let command = command(state, change, grant)?;
    let kind = match &command {
        Command::LwwWrite(write) => {
            check_drift(write.stamp.clock, now_ms(), MAX_DRIFT_MS).map_err(AppError::ClockAhead)?;
            "lww"
        }
        Command::ManualWrite(ManualWrite { author, .. }) | Command::Resolve { author, .. } => {
            state
                .locks
                .may_write(doc, author)
                .map_err(|e| AppError::Locked(e.to_string()))?;
            "manual"
        }
    };
    let resolving = match &command {
        Command::Resolve { conflict, .. } => Some(*conflict),
        _ => None,
    };
    let outcome = run_command(state, doc.clone(), command).await?;
    announce(state, doc, kind, resolving, &outcome).await;
    Ok(outcome_json(outcome))
}

/// The store's command for `change`, with its author settled by [`identity`].
fn command(state: &AppState, change: RegisterChange, grant: &Grant) -> Result<Command, AppError> {
    Ok(match change {
        RegisterChange::Write(RegisterWrite::Lww { value, stamp }) => {
            Command::LwwWrite(LwwWrite { value, stamp })
        }
        RegisterChange::Write(RegisterWrite::Manual {
            value,
            base_version,
            author,
        }) => Command::ManualWrite(ManualWrite {
            base_version,
            value,
            author: identity(state, grant, author)?,
            at_ms: now_ms(),
        }),
        RegisterChange::Resolve {
            conflict,
            resolution,
        } => Command::Resolve {
            conflict,
            value: resolution.value,
            author: identity(state, grant, resolution.author)?,
            at_ms: now_ms(),
        },
    })
}

/// Publishes what a command did: `updated` with the register for applied changes,
/// `conflict_detected` / `conflict_resolved` for manual conflicts.
async fn announce(
    state: &AppState,
    doc: &DocName,
    kind: &str,
    resolving: Option<u64>,
    outcome: &Outcome,
) {
    let events = state.sessions.rooms.events();
    let applied = match outcome {
        Outcome::Lww(lww::Outcome::Applied) | Outcome::Manual(manual::Outcome::Applied(_)) => true,
        Outcome::Resolved(revision) => {
            let event = DocEvent::ConflictResolved {
                conflict: resolving.unwrap_or_default(),
                revision: json!(revision),
            };
            events.publish(doc, event);
            true
        }
        Outcome::Manual(manual::Outcome::Conflict(conflict)) => {
            events.publish(
                doc,
                DocEvent::ConflictDetected {
                    conflict: json!(conflict),
                },
            );
            false
        }
        Outcome::Lww(_) => false,
    };
    if applied {
        // The register as stored now (a later write may already show; events only notify).
        let register = load_register(state, doc)
            .await
            .ok()
            .map(|r| register_json(&r));
        let event = DocEvent::Updated {
            kind: kind.to_owned(),
            bytes: None,
            register,
        };
        events.publish(doc, event);
    }
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
            RegisterFailure::Command(CommandError::Manual(
                manual::ManualError::UnknownConflict(id),
            )) => AppError::NotFound(format!("no open conflict {id}")),
            RegisterFailure::Command(other) => AppError::BadRequest(other.to_string()),
            RegisterFailure::NotARegister(_) => AppError::Conflict(failure.to_string()),
        }),
        Ok(other) => Err(AppError::Internal(format!(
            "unexpected write result {other:?}"
        ))),
        Err(e) => Err(AppError::from(e)),
    }
}

/// An outcome as the API shows it.
pub(crate) fn outcome_json(outcome: Outcome) -> Value {
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
    NamePath(doc): NamePath,
) -> Result<Json<Value>, AppError> {
    authorize(&state, &headers, &doc, false)?;
    let register = manual_register(load_register(&state, &doc).await?)?;
    let conflicts: Vec<_> = register.conflicts().collect();
    Ok(Json(json!({ "conflicts": conflicts })))
}

async fn get_conflict(
    State(state): State<AppState>,
    headers: HeaderMap,
    ConflictPath(doc, id): ConflictPath,
) -> Result<Json<Value>, AppError> {
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
    ConflictPath(doc, id): ConflictPath,
    body: Result<Json<Resolution>, JsonRejection>,
) -> Result<Json<Value>, AppError> {
    let grant = authorize(&state, &headers, &doc, true)?;
    let change = RegisterChange::Resolve {
        conflict: id,
        resolution: json_body(body)?,
    };
    Ok(Json(write(&state, &doc, &grant, change).await?))
}

/// This group's part of the OpenAPI description.
pub fn paths() -> Value {
    let get = operation(
        "A register document's value",
        json!([name_param()]),
        (200, json_response("the register", schema("Register"))),
        &statuses(&[404, 409]),
    );
    let put = with_body(
        operation(
            "Write a register: lww with a stamp, manual with the version it was based on",
            json!([name_param()]),
            (200, json_response("what the write did", schema("Outcome"))),
            &statuses(&[404, 409, 422, 423]),
        ),
        request_body(json!({ "oneOf": [schema("LwwWrite"), schema("ManualWrite")] })),
    );
    let list = operation(
        "Open conflicts of a manual document",
        json!([name_param()]),
        (
            200,
            json_response(
                "the conflicts",
                json!({ "type": "object", "required": ["conflicts"],
            "properties": { "conflicts": { "type": "array", "items": schema("Conflict") } } }),
            ),
        ),
        &statuses(&[404, 409]),
    );
    let one = operation(
        "One open conflict",
        json!([name_param(), id_param()]),
        (200, json_response("the conflict", schema("Conflict"))),
        &statuses(&[404, 409]),
    );
    let resolve = with_body(
        operation(
            "Resolve a conflict with a value",
            json!([name_param(), id_param()]),
            (200, json_response("the new revision", schema("Outcome"))),
            &statuses(&[404, 409, 423]),
        ),
        request_body(schema("Resolution")),
    );
    json!({
        "/api/v1/docs/{name}/register": { "get": get, "put": put },
        "/api/v1/docs/{name}/conflicts": { "get": list },
        "/api/v1/docs/{name}/conflicts/{id}": { "get": one },
        "/api/v1/docs/{name}/conflicts/{id}/resolve": { "post": resolve },
    })
}
