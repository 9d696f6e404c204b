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
    /// A write needs a `write` token; this one is `read`.
    #[error("this token is read-only")]
    ReadOnly,
    /// The request body or parameters are not acceptable.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No such document or conflict.
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts the document's state (exists already, wrong kind).
    #[error("{0}")]
    Conflict(String),
    /// An admin route was called without the admin key (or with a client token).
    #[error("{0}")]
    Admin(crate::auth::AdminError),
    /// Too many requests from this address; retry after this many seconds.
    #[error("too many connections from this address; retry in {0} s")]
    RateLimited(u64),
    /// Token minting needs the HS256 `--jwt-secret`, and the relay has none.
    #[error("this relay has no --jwt-secret (HS256) to sign client tokens with")]
    NoSigningSecret,
    /// The document is locked by someone else (423).
    #[error("{0}")]
    Locked(String),
    /// The request names another identity than the token's subject.
    #[error("{0}")]
    Forbidden(String),
    /// An LWW write's stamp is further ahead of the relay's clock than the drift bound allows
    /// (422): storing it would make every later honest write `stale`.
    #[error("{0}; send a stamp from a clock near the relay's")]
    ClockAhead(aetherflow_crdt::register::clock::ClockError),
    /// The request body is larger than the relay accepts.
    #[error("{0}")]
    TooLarge(String),
    /// The update is over a size limit of the document (`--max-update-items`,
    /// `--max-doc-items`, `--max-doc-bytes`); nothing was applied.
    #[error("{0}")]
    DocumentLimit(String),
    /// The relay cannot write to its storage (a full disk, an I/O error); nothing changed.
    /// Reads keep working; `/healthz` is not ready until writes work again.
    #[error(
        "the relay cannot write to its storage (disk full, I/O error or storage cluster unreachable); nothing was changed, retry later"
    )]
    StorageUnavailable,
    /// The feature needs the embedded store, and this relay runs in cluster mode (501
    /// `not_in_cluster_mode`).
    #[error("{0} needs the embedded store; cluster mode (--cluster) does not have it yet")]
    NotInClusterMode(&'static str),
    /// Too many heavy reads run already (503 `busy`, `Retry-After: 1`).
    #[error("{0}")]
    Busy(String),
    /// The connection holds one of the places kept for `/healthz` while the relay is at its
    /// connection cap; only `/healthz` is served on it (503 `over_capacity`, `Retry-After: 1`).
    #[error("the relay is at its connection limit; only /healthz is served on this connection")]
    OverCapacity,
    /// A plain-HTTP request reached a port that serves TLS (400 `tls_required`); the
    /// connection is closed after the answer.
    #[error("this port serves TLS only: use https:// or wss://")]
    TlsRequired,
    /// The answer would be larger than the relay sends in this form (422); the text says
    /// which other form to use.
    #[error("{0}")]
    ContentTooLarge(String),
    /// The document's stored data fails its checksum (the file was damaged); other documents
    /// work. The text names the document and what is damaged, nothing else.
    #[error("{0}; the operator can run `aetherflow check`")]
    DocumentDamaged(String),
    /// The database engine failed reading damaged pages; the request failed alone. The text
    /// carries redb's message (offsets, no data).
    #[error("the database could not be read; the operator can run `aetherflow check`")]
    DatabaseDamaged(String),
    /// Something failed inside the relay; the error and its sources are logged, never sent.
    #[error("internal error: {0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl AppError {
    /// A failure inside the relay, kept whole (with its source chain) for the log.
    pub fn internal(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> AppError {
        AppError::Internal(error.into())
    }
}

/// An error and each of its sources, joined with ": ", for the log.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `Retry-After` of a 507: the relay retries its storage every second.
const STORAGE_RETRY_AFTER_SECS: u64 = 5;

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: String,
}

impl AppError {
    /// The status, code and client-facing message; a 5xx is logged here under a fresh id.
    pub fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
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
            AppError::ReadOnly => (StatusCode::FORBIDDEN, "read_only", self.to_string()),
            AppError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request", self.to_string()),
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", self.to_string()),
            AppError::Conflict(_) => (StatusCode::CONFLICT, "conflict", self.to_string()),
            AppError::Admin(e) => (
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED),
                e.code(),
                self.to_string(),
            ),
            AppError::RateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                self.to_string(),
            ),
            AppError::NoSigningSecret => {
                (StatusCode::CONFLICT, "no_signing_secret", self.to_string())
            }
            AppError::Locked(_) => (StatusCode::LOCKED, "locked", self.to_string()),
            AppError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", self.to_string()),
            AppError::ClockAhead(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "stamp_too_far_ahead",
                self.to_string(),
            ),
            AppError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", self.to_string()),
            AppError::DocumentLimit(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "document_limit",
                self.to_string(),
            ),
            AppError::StorageUnavailable => (
                StatusCode::INSUFFICIENT_STORAGE,
                "storage_unavailable",
                self.to_string(),
            ),
            AppError::NotInClusterMode(_) => (
                StatusCode::NOT_IMPLEMENTED,
                "not_in_cluster_mode",
                self.to_string(),
            ),
            AppError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy", self.to_string()),
            AppError::OverCapacity => (
                StatusCode::SERVICE_UNAVAILABLE,
                "over_capacity",
                self.to_string(),
            ),
            AppError::TlsRequired => (StatusCode::BAD_REQUEST, "tls_required", self.to_string()),
            AppError::ContentTooLarge(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "content_too_large",
                self.to_string(),
            ),
            AppError::DocumentDamaged(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "document_damaged",
                self.to_string(),
            ),
            AppError::DatabaseDamaged(detail) => {
                tracing::error!(error = %detail, "request failed on damaged database pages");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "database_damaged",
                    self.to_string(),
                )
            }
            AppError::Internal(detail) => {
                let id = uuid::Uuid::now_v7();
                tracing::error!(error_id = %id, error = %chain(detail.as_ref()), "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("internal error; reference {id}"),
                )
            }
        }
    }

    /// The JSON error body `{ "error": { "code", "message" } }`, for channels that are not
    /// HTTP responses (the live WebSocket).
    pub fn to_json(&self) -> serde_json::Value {
        let (_, code, message) = self.parts();
        serde_json::json!({ "error": { "code": code, "message": message } })
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        let body = Body {
            error: Detail { code, message },
        };
        let mut response = (status, Json(body)).into_response();
        let retry_after = match self {
            AppError::RateLimited(secs) => Some(secs),
            AppError::StorageUnavailable => Some(STORAGE_RETRY_AFTER_SECS),
            AppError::Busy(_) | AppError::OverCapacity => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_for_load_say_when_to_retry() {
        for error in [AppError::Busy("busy".into()), AppError::OverCapacity] {
            let response = error.into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(
                response.headers().get(axum::http::header::RETRY_AFTER),
                Some(&axum::http::HeaderValue::from(1))
            );
        }
        let (status, code, _) = AppError::ContentTooLarge("x".into()).parts();
        assert_eq!((status.as_u16(), code), (422, "content_too_large"));
    }
}
