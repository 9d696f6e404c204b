//! `GET /api/v1/quantum`: where the relay's Quantum (reliable UDP) listener runs and the
//! public key clients pin for its Noise handshake.
//!
//! Answer 200: `{ "addr": "203.0.113.5:4433", "public_key": "<64 hex digits>",
//! "key_encoding": "hex", "noise": "Noise_NK_25519_AESGCM_BLAKE2s", "version": 2 }`;
//! 404 `not_found` when the relay runs without Quantum. Public and unauthenticated: the
//! key is no secret, and over plain HTTP an attacker on the path could change the answer, so
//! production clients pin the key printed at start-up instead of trusting this route (see
//! the README, "Quantum security").

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::context::AppState;
use crate::error::AppError;

/// The route.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/quantum", get(describe))
}

/// This group's part of the OpenAPI description.
pub fn paths() -> Value {
    let answer = json!({ "type": "object",
        "required": ["addr", "public_key", "key_encoding", "noise", "version"],
        "properties": {
            "addr": { "type": "string", "description": "UDP address of the Quantum listener, IP:port" },
            "public_key": { "type": "string", "pattern": "^[0-9a-f]{64}$", "description": "the relay's Noise static public key (Curve25519), lower-case hex; clients pin it" },
            "key_encoding": { "type": "string", "enum": ["hex"] },
            "noise": { "type": "string", "description": "the handshake pattern" },
            "version": { "type": "integer", "description": "Quantum wire version" } } });
    json!({ "/api/v1/quantum": { "get": {
        "summary": "Where the Quantum listener runs and the key clients pin",
        "security": [{}],
        "responses": {
            "200": { "description": "Quantum is on", "content": { "application/json": { "schema": answer } } },
            "404": { "description": "Quantum is off (`not_found`)", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }
        }
    } } })
}

async fn describe(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    let info = state
        .quantum
        .ok_or_else(|| AppError::NotFound("the relay runs without Quantum".into()))?;
    Ok(Json(json!({
        "addr": info.addr.to_string(),
        "public_key": aetherflow_quantum::crypto::to_hex(&info.public_key),
        "key_encoding": "hex",
        "noise": aetherflow_quantum::crypto::handshake::RELAY_PATTERN,
        "version": aetherflow_quantum::packet::VERSION,
    })))
}
