//! Register documents (`lww` and `manual`) over HTTP: read and write the register, list, read
//! and resolve conflicts, through the register service ([`crate::registers`]), whose typed
//! error maps to HTTP statuses here.

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::openapi::{
    id_param, json_response, name_param, operation, request_body, schema, statuses, with_body,
};
use super::{ConflictPath, NamePath, authorize, json_body};
use crate::context::AppState;
use crate::error::AppError;
use crate::registers::{
    RegisterChange, RegisterError, RegisterWrite, Resolution, outcome_json, register_json,
};

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

async fn get_register(
    State(state): State<AppState>,
    headers: HeaderMap,
    NamePath(doc): NamePath,
) -> Result<Json<Value>, AppError> {
    authorize(&state, &headers, &doc, false)?;
    Ok(Json(register_json(&state.registers.load(&doc).await?)))
}

async fn put_register(
    State(state): State<AppState>,
    headers: HeaderMap,
    NamePath(doc): NamePath,
    body: Result<Json<RegisterWrite>, JsonRejection>,
) -> Result<Json<Value>, AppError> {
    let grant = authorize(&state, &headers, &doc, true)?;
    let change = RegisterChange::Write(json_body(body)?);
    let outcome = state.registers.change(&doc, &grant, change).await?;
    Ok(Json(outcome_json(outcome)))
}

impl From<RegisterError> for AppError {
    fn from(e: RegisterError) -> AppError {
        match e {
            RegisterError::NotFound(text) => AppError::NotFound(text),
            RegisterError::UnknownConflict(_) => AppError::NotFound(e.to_string()),
            RegisterError::WrongKind(text) => AppError::Conflict(text),
            RegisterError::Invalid(e) => AppError::BadRequest(e.to_string()),
            RegisterError::NotTheSubject(_) => AppError::Forbidden(e.to_string()),
            RegisterError::ClockAhead(e) => AppError::ClockAhead(e),
            RegisterError::Locked(text) => AppError::Locked(text),
            RegisterError::Store(e) => AppError::from(e),
        }
    }
}

async fn list_conflicts(
    State(state): State<AppState>,
    headers: HeaderMap,
    NamePath(doc): NamePath,
) -> Result<Json<Value>, AppError> {
    authorize(&state, &headers, &doc, false)?;
    let register = state.registers.load_manual(&doc).await?;
    let conflicts: Vec<_> = register.conflicts().collect();
    Ok(Json(json!({ "conflicts": conflicts })))
}

async fn get_conflict(
    State(state): State<AppState>,
    headers: HeaderMap,
    ConflictPath(doc, id): ConflictPath,
) -> Result<Json<Value>, AppError> {
    authorize(&state, &headers, &doc, false)?;
    let register = state.registers.load_manual(&doc).await?;
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
    let outcome = state.registers.change(&doc, &grant, change).await?;
    Ok(Json(outcome_json(outcome)))
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
