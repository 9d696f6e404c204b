//! Errors HTTP clients see: JSON `{ "error": { "code", "message" } }` with the right status.
//! A 5xx carries only an id; the details go to the log under that id.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answered to an HTTP request.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The document name in the path is not acceptable.
    #[error("invalid document name: {0}")]
    InvalidDocName(String),
    /// A plain HTTP request reached a WebSocket endpoint.
    #[error("this endpoint speaks WebSocket (y-websocket protocol): {0}")]
    NotWebSocket(String),
    /// The client's token is missing, invalid, or not for this document.
    #[error("{0}")]
    Unauthorized(crate::auth::AuthError),
    /// Something failed inside the relay; the text is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: String,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            AppError::InvalidDocName(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_doc_name",
                self.to_string(),
            ),
            AppError::NotWebSocket(_) => (
                StatusCode::UPGRADE_REQUIRED,
                "websocket_required",
                self.to_string(),
            ),
            AppError::Unauthorized(e) => (
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED),
                e.code(),
                self.to_string(),
            ),
            AppError::Internal(detail) => {
                let id = uuid::Uuid::now_v7();
                tracing::error!(error_id = %id, error = %detail, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("internal error; reference {id}"),
                )
            }
        };
        let body = Body {
            error: Detail { code, message },
        };
        (status, Json(body)).into_response()
    }
}
