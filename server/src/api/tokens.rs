//! `POST /api/v1/tokens`: an admin mints a client token, HS256-signed with `--jwt-secret`.
//!
//! Body: `{ "sub": "ada", "docs": ["notes", "team-*"], "perm": "read" | "write",
//! "ttl_secs": 3600 }` (`ttl_secs` optional, default [`DEFAULT_TTL_SECS`], at most
//! `--token-max-ttl-secs`). Answer 201: `{ "token", "sub", "docs", "perm", "exp" }`.

use std::time::{SystemTime, UNIX_EPOCH};

use aetherflow_crdt::DocName;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use jsonwebtoken::{Header, encode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::{Claims, Permission};
use crate::context::AppState;
use crate::error::AppError;

/// Lifetime of a minted token whose request names none: 1 hour (or the maximum, if lower).
pub const DEFAULT_TTL_SECS: u64 = 3600;
/// Most document patterns one token may carry.
pub const MAX_DOC_PATTERNS: usize = 100;
/// Longest subject, in bytes.
pub const MAX_SUB_BYTES: usize = 256;

/// The token route.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/tokens", post(mint))
}

/// This group's part of the OpenAPI description.
pub fn paths() -> Value {
    let perm = json!({ "type": "string", "enum": ["read", "write"] });
    let docs = json!({ "type": "array", "minItems": 1, "maxItems": MAX_DOC_PATTERNS,
        "items": { "type": "string", "description": "a document name, or a prefix ending in * (* alone: every document)" } });
    let request = json!({ "type": "object", "required": ["sub", "docs", "perm"], "additionalProperties": false,
        "properties": {
            "sub": { "type": "string", "minLength": 1, "maxLength": MAX_SUB_BYTES },
            "docs": docs, "perm": perm,
            "ttl_secs": { "type": "integer", "minimum": 1,
                "description": "lifetime; default 3600 (or the maximum if lower); at most --token-max-ttl-secs (default 86400)" } } });
    let minted = json!({ "type": "object", "required": ["token", "sub", "docs", "perm", "exp"], "properties": {
        "token": { "type": "string", "description": "HS256 JWT" },
        "sub": { "type": "string" }, "docs": { "type": "array", "items": { "type": "string" } },
        "perm": perm, "exp": { "type": "integer", "description": "expiry, seconds since the Unix epoch" } } });
    let mut mint = super::sessions::admin_operation(
        "Mint a client token signed with --jwt-secret (409 when the relay has none)",
        json!([]),
        &[(201, minted)],
        &[400, 401, 403, 409],
    );
    mint["requestBody"] =
        json!({ "required": true, "content": { "application/json": { "schema": request } } });
    json!({ "/api/v1/tokens": { "post": mint } })
}

/// What an admin asks for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintRequest {
    /// The user the token names.
    pub sub: String,
    /// Document names, or prefixes ending in `*` (`*` alone: every document).
    pub docs: Vec<String>,
    /// `read` or `write`.
    pub perm: Permission,
    /// Lifetime in seconds.
    #[serde(default, alias = "ttl")]
    pub ttl_secs: Option<u64>,
}

/// The minted token and what it says.
#[derive(Debug, Serialize)]
pub struct Minted {
    /// The JWT to give the client.
    pub token: String,
    /// Its claims, for the admin's records.
    #[serde(flatten)]
    pub claims: Claims,
}

/// Checks `request` and turns it into claims expiring `ttl` after `now_secs`. Every refusal
/// says which field is wrong.
pub fn claims_for(
    request: MintRequest,
    max_ttl_secs: u64,
    now_secs: u64,
) -> Result<Claims, String> {
    let sub = request.sub.trim();
    if sub.is_empty() || sub.len() > MAX_SUB_BYTES || sub.chars().any(char::is_control) {
        return Err(format!(
            "sub must be 1 to {MAX_SUB_BYTES} bytes without control characters"
        ));
    }
    if request.docs.is_empty() || request.docs.len() > MAX_DOC_PATTERNS {
        return Err(format!(
            "docs must list 1 to {MAX_DOC_PATTERNS} document names or prefixes ending in *"
        ));
    }
    for pattern in &request.docs {
        let name = match pattern.strip_suffix('*') {
            Some("") => continue,
            Some(prefix) => prefix,
            None => pattern.as_str(),
        };
        if name.contains('*') {
            return Err(format!("docs: {pattern:?} may hold * only at its end"));
        }
        DocName::parse(name).map_err(|e| format!("docs: {pattern:?}: {e}"))?;
    }
    let ttl = request
        .ttl_secs
        .unwrap_or(DEFAULT_TTL_SECS.min(max_ttl_secs));
    if ttl == 0 || ttl > max_ttl_secs {
        return Err(format!("ttl_secs must be between 1 and {max_ttl_secs}"));
    }
    Ok(Claims {
        sub: sub.to_owned(),
        docs: request.docs,
        perm: request.perm,
        exp: now_secs.saturating_add(ttl),
    })
}

async fn mint(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<MintRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Minted>), AppError> {
    state.admin.require(&state.auth, &headers)?;
    let signing = state
        .admin
        .signing
        .as_ref()
        .ok_or(AppError::NoSigningSecret)?;
    let request = body
        .map(|Json(request)| request)
        .map_err(|e| AppError::BadRequest(e.body_text()))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(AppError::internal)?
        .as_secs();
    let claims = claims_for(request, state.admin.token_max_ttl.as_secs(), now)
        .map_err(AppError::BadRequest)?;
    let token = encode(&Header::default(), &claims, signing).map_err(AppError::internal)?;
    tracing::info!(sub = %claims.sub, perm = ?claims.perm, exp = claims.exp, "token minted");
    Ok((StatusCode::CREATED, Json(Minted { token, claims })))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn request(sub: &str, docs: &[&str], ttl: Option<u64>) -> MintRequest {
        MintRequest {
            sub: sub.into(),
            docs: docs.iter().map(|d| d.to_string()).collect(),
            perm: Permission::Read,
            ttl_secs: ttl,
        }
    }

    #[test]
    fn a_good_request_expires_after_its_ttl() {
        let claims = claims_for(
            request("ada", &["notes", "team-*", "*"], Some(60)),
            3600,
            1000,
        )
        .unwrap();
        assert_eq!(claims.exp, 1060);
        assert_eq!(claims.sub, "ada");
        assert_eq!(claims.docs.len(), 3);
    }

    #[test]
    fn the_default_ttl_never_exceeds_the_maximum() {
        let claims = claims_for(request("ada", &["a"], None), 600, 0).unwrap();
        assert_eq!(claims.exp, 600);
        let claims = claims_for(request("ada", &["a"], None), 86400, 0).unwrap();
        assert_eq!(claims.exp, DEFAULT_TTL_SECS);
    }

    #[test]
    fn each_bad_field_is_named_in_its_refusal() {
        let long_sub = "x".repeat(MAX_SUB_BYTES + 1);
        let many: Vec<String> = (0..=MAX_DOC_PATTERNS).map(|i| format!("d{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let cases = [
            (request("", &["a"], None), "sub"),
            (request("  ", &["a"], None), "sub"),
            (request(&long_sub, &["a"], None), "sub"),
            (request("a\u{7}b", &["a"], None), "sub"),
            (request("ada", &[], None), "docs"),
            (request("ada", &many, None), "docs"),
            (request("ada", &["a/b"], None), "docs"),
            (request("ada", &["te*am"], None), "docs"),
            (request("ada", &[""], None), "docs"),
            (request("ada", &["a"], Some(0)), "ttl_secs"),
            (request("ada", &["a"], Some(3601)), "ttl_secs"),
        ];
        for (request, field) in cases {
            let why = format!("{request:?}");
            let err = claims_for(request, 3600, 0).unwrap_err();
            assert!(err.starts_with(field), "{why}: {err}");
        }
    }

    #[test]
    fn a_huge_ttl_cannot_overflow_the_expiry() {
        let claims = claims_for(request("ada", &["a"], Some(u64::MAX)), u64::MAX, 10).unwrap();
        assert_eq!(claims.exp, u64::MAX);
    }
}
