//! The HTTP API under `/api/v1`, one file per route group: [`docs`] (create, list, get,
//! delete), [`content`] (a Yjs document as JSON or as a binary update, read through
//! [`crate::reads`]), [`history`] (versions of a Yjs document: list, content at one, restore,
//! labels), [`compare`] (diff and blame of versions), [`registers`] (LWW and manual registers and their conflicts), [`locks`],
//! [`events`] (Server-Sent Events), [`live`] (the register WebSocket channel), [`quantum`]
//! (where and under which key the Quantum listener runs) and [`openapi`] (the description of
//! all of them); and [`scrape`], `GET /metrics`, outside `/api/v1`.
//!
//! Every route takes the client token as `Authorization: Bearer <JWT>` (the WebSocket and SSE
//! routes also accept `?token=`; none is needed when the relay runs open); changes need a
//! `write` token for the document. Errors are JSON `{ "error": { "code", "message" } }`.
//!
//! A route group contributes its routes with `routes()` and its part of the OpenAPI
//! description with `paths()`; [`openapi::document`] merges the parts.
//!
//! The admin routes ([`sessions`], [`tokens`], [`webhooks`]; see [`crate::admin`]) take the admin key instead
//! of a client token.

pub mod compare;
pub mod content;
pub mod docs;
pub mod events;
pub mod history;
pub mod live;
pub mod locks;
pub mod openapi;
pub mod quantum;
pub mod registers;
pub mod scrape;
pub mod sessions;
pub mod tokens;
pub mod webhooks;

use aetherflow_crdt::DocName;
use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use crate::auth::{Grant, Permission};
use crate::context::AppState;
use crate::error::AppError;
use crate::storage::StoreError;

/// The `/api/v1` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(docs::routes())
        .merge(content::routes())
        .merge(history::routes())
        .merge(compare::routes())
        .merge(registers::routes())
        .merge(locks::routes())
        .merge(events::routes())
        .merge(live::routes())
        .merge(openapi::routes())
        .merge(quantum::routes())
        .merge(sessions::routes())
        .merge(tokens::routes())
        .merge(webhooks::routes())
}

pub(crate) fn doc_name(name: &str) -> Result<DocName, AppError> {
    DocName::parse(name).map_err(|e| AppError::InvalidDocName(e.to_string()))
}

/// A document name from the path, refused with a JSON 400 when unacceptable.
pub(crate) struct NamePath(pub(crate) DocName);

impl<S: Send + Sync> FromRequestParts<S> for NamePath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| AppError::InvalidDocName(e.body_text()))?;
        Ok(NamePath(doc_name(&name)?))
    }
}

/// A document name and a conflict id from the path.
pub(crate) struct ConflictPath(pub(crate) DocName, pub(crate) u64);

impl<S: Send + Sync> FromRequestParts<S> for ConflictPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path((name, id)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| AppError::InvalidDocName(e.body_text()))?;
        let id = id
            .parse()
            .map_err(|_| AppError::BadRequest(format!("conflict id {id:?} is not an integer")))?;
        Ok(ConflictPath(doc_name(&name)?, id))
    }
}

/// The bearer token of a request, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// Checks the header's token for `doc`; `write` also demands write permission.
pub(crate) fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    doc: &DocName,
    write: bool,
) -> Result<Grant, AppError> {
    authorize_token(state, bearer(headers), doc, write)
}

/// Checks `token` for `doc`; `write` also demands write permission.
pub(crate) fn authorize_token(
    state: &AppState,
    token: Option<&str>,
    doc: &DocName,
    write: bool,
) -> Result<Grant, AppError> {
    let grant = state
        .auth
        .authorize(token, doc)
        .map_err(AppError::Unauthorized)?;
    if write && grant.permission != Permission::Write {
        return Err(AppError::ReadOnly);
    }
    Ok(grant)
}

/// Who acts (see [`crate::auth::Auth::actor`]); another name than the token's subject is 403.
pub(crate) fn identity(
    state: &AppState,
    grant: &Grant,
    claimed: Option<String>,
) -> Result<String, AppError> {
    state
        .auth
        .actor(grant, claimed)
        .map_err(|e| AppError::Forbidden(e.to_string()))
}

pub(crate) fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, AppError> {
    body.map(|Json(v)| v)
        .map_err(|e| AppError::BadRequest(e.body_text()))
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> AppError {
        if e.is_io() {
            tracing::warn!(error = %e, "write refused: storage unavailable");
            AppError::StorageUnavailable
        } else if let StoreError::Damaged { .. } = e {
            tracing::error!(error = %e, "damaged document refused");
            AppError::DocumentDamaged(e.to_string())
        } else if let StoreError::Unreadable(_) = e {
            AppError::DatabaseDamaged(e.to_string())
        } else {
            AppError::internal(e)
        }
    }
}

impl From<crate::rooms::ApplyError> for AppError {
    /// An update the room did not apply; `Invalid` is the caller's to word.
    fn from(e: crate::rooms::ApplyError) -> AppError {
        use crate::rooms::ApplyError;
        match e {
            ApplyError::Invalid(reason) => AppError::BadRequest(reason),
            ApplyError::TooLarge(reason) => AppError::DocumentLimit(reason),
            ApplyError::Storage => AppError::StorageUnavailable,
            ApplyError::Unavailable(e) => AppError::internal(e),
        }
    }
}
