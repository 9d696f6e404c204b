//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 description of every `/api/v1` route.
//!
//! Each route group describes its own routes next to their handlers, in a `paths()` function
//! built with the helpers here ([`operation`], [`schema`], ...); shared schemas live in
//! [`components`]. To describe a new group, give it a `paths()` and add it to [`GROUPS`]. The schemathesis step of `tests/run-all.sh` generates requests from this
//! description and checks every response against it, which keeps the two true to each other.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use crate::context::AppState;

/// The route groups' path descriptions, merged in this order.
pub const GROUPS: &[fn() -> Value] = &[
    super::docs::paths,
    super::content::paths,
    super::history::paths,
    super::compare::paths,
    super::registers::paths,
    super::locks::paths,
    super::events::paths,
    super::live::paths,
    super::sessions::paths,
    super::tokens::paths,
    super::webhooks::paths,
    super::quantum::paths,
    paths,
];

/// The routes of this group.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/openapi.json", get(|| async { Json(document()) }))
}

/// The whole description.
pub fn document() -> Value {
    let mut paths = Map::new();
    for group in GROUPS {
        if let Value::Object(group) = group() {
            for (path, item) in group {
                match paths.get_mut(&path) {
                    Some(Value::Object(existing)) => {
                        if let Value::Object(item) = item {
                            existing.extend(item);
                        }
                    }
                    _ => {
                        paths.insert(path, item);
                    }
                }
            }
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "AetherFlow relay API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Documents (yjs, lww, manual), their content, registers, conflicts, locks and events. Every route takes a client token as `Authorization: Bearer <JWT>` unless the relay runs open."
        },
        "servers": [{ "url": "/" }],
        "security": [{ "bearer": [] }, {}],
        "paths": paths,
        "components": components(),
    })
}

/// A `$ref` to a component schema.
pub fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// A response with a JSON body of schema `body`.
pub fn json_response(description: &str, body: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": body } } })
}

/// A required JSON request body of schema `body`.
pub fn request_body(body: Value) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": body } } })
}

/// The error responses a route can give, by status.
fn errors(statuses: &[u16]) -> Map<String, Value> {
    let mut out = Map::new();
    for status in statuses {
        out.insert(status.to_string(), json_response("error", schema("Error")));
    }
    out
}

/// An operation: summary, parameters, its success `(status, response)` and its error statuses.
pub fn operation(summary: &str, params: Value, ok: (u16, Value), error_statuses: &[u16]) -> Value {
    let mut responses = errors(error_statuses);
    responses.insert(ok.0.to_string(), ok.1);
    json!({ "summary": summary, "parameters": params, "responses": responses })
}

/// `op` with a request body.
pub fn with_body(mut op: Value, body: Value) -> Value {
    op["requestBody"] = body;
    op
}

/// The `{name}` path parameter: a document name.
pub fn name_param() -> Value {
    json!({ "name": "name", "in": "path", "required": true, "description": "document name: 1-255 bytes, no control characters, no / or \\",
            "schema": { "type": "string", "minLength": 1, "maxLength": 255 } })
}

/// The `{id}` path parameter: a conflict id.
pub fn id_param() -> Value {
    json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "integer", "minimum": 0 } })
}

/// Statuses every route with a token and a document name may answer.
pub const AUTH: [u16; 3] = [400, 401, 403];

/// The statuses of [`AUTH`] (bad name, bad token, wrong document) plus `extra`.
pub fn statuses(extra: &[u16]) -> Vec<u16> {
    let mut all = AUTH.to_vec();
    all.extend_from_slice(extra);
    all
}

/// This group's part of the description: the description itself.
pub fn paths() -> Value {
    json!({ "/api/v1/openapi.json": { "get": {
        "summary": "This description",
        "security": [{}],
        "responses": { "200": { "description": "OpenAPI 3.1", "content": { "application/json": { "schema": { "type": "object" } } } } }
    } } })
}

/// The shared schemas.
pub fn components() -> Value {
    let stamp = json!({ "type": "object", "required": ["clock", "writer"], "properties": {
        "clock": { "type": "object", "required": ["wall_ms", "counter"], "properties": {
            "wall_ms": { "type": "integer", "minimum": 0 },
            "counter": { "type": "integer", "minimum": 0, "maximum": 4294967295u64 } } },
        "writer": { "type": "string" } } });
    let revision = json!({ "type": "object", "required": ["version", "value", "author", "at_ms"], "properties": {
        "version": { "type": "integer" }, "value": {}, "author": { "type": "string" }, "at_ms": { "type": "integer" } } });
    let author = json!({ "type": "string", "description": "must be the token's subject (403 `forbidden` otherwise); only an open relay records the name given here (default `anonymous`)" });
    let mut components = json!({
        "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
        "schemas": {
            "Error": { "type": "object", "required": ["error"], "properties": { "error": {
                "type": "object", "required": ["code", "message"],
                "properties": { "code": { "type": "string" }, "message": { "type": "string" } } } } },
            "Kind": { "type": "string", "enum": ["yjs", "lww", "manual"] },
            "CreateDocument": { "type": "object", "required": ["name"], "properties": {
                "name": { "type": "string" }, "kind": schema("Kind") } },
            "EnsureDocument": { "type": "object", "properties": { "kind": schema("Kind") } },
            "Document": { "type": "object", "required": ["name", "kind", "created_ms"], "properties": {
                "name": { "type": "string" }, "kind": schema("Kind"),
                "created_ms": { "type": ["integer", "null"] },
                "updates": { "type": "integer", "description": "log entries since the last snapshot" },
                "size_bytes": { "type": "integer" },
                "modified_ms": { "type": ["integer", "null"] } } },
            "DocumentPage": { "type": "object", "required": ["docs", "next_cursor"], "properties": {
                "docs": { "type": "array", "items": schema("Document") },
                "next_cursor": { "type": ["string", "null"] } } },
            "Content": { "type": "object", "required": ["name", "content"], "properties": {
                "name": { "type": "string" }, "content": { "type": "object" } } },
            "WriteStamp": stamp,
            "Revision": revision,
            "LwwWrite": { "type": "object", "required": ["value", "stamp"],
                "description": "a stamp more than 60 s ahead of the relay's clock is refused with 422 `stamp_too_far_ahead`", "properties": {
                "value": {}, "stamp": schema("WriteStamp") } },
            "ManualWrite": { "type": "object", "required": ["value", "base_version"], "properties": {
                "value": {}, "base_version": { "type": "integer", "minimum": 0 }, "author": author } },
            "Resolution": { "type": "object", "required": ["value"], "properties": {
                "value": {}, "author": author } },
            "Register": { "type": "object", "required": ["kind", "value"], "properties": {
                "kind": { "type": "string", "enum": ["lww", "manual"] }, "value": {},
                "stamp": { "oneOf": [schema("WriteStamp"), { "type": "null" }] },
                "version": { "type": "integer" },
                "revision": { "oneOf": [schema("Revision"), { "type": "null" }] },
                "open_conflicts": { "type": "integer" } } },
            "Conflict": { "type": "object", "required": ["id", "base_version", "current", "proposed"], "properties": {
                "id": { "type": "integer" }, "base_version": { "type": "integer" },
                "current": schema("Revision"), "proposed": { "type": "object" } } },
            "Outcome": { "type": "object", "required": ["outcome"], "properties": {
                "outcome": { "type": "string", "enum": ["applied", "duplicate", "stale", "conflict"] },
                "current": schema("WriteStamp"), "revision": schema("Revision"), "conflict": schema("Conflict") } },
            "LockRequest": { "type": "object", "required": ["ttl_ms"], "additionalProperties": false, "properties": {
                "ttl_ms": { "type": "integer", "minimum": 1, "maximum": 3600000 },
                "holder": { "type": "string", "description": "open relays only; otherwise the token's subject" } } },
            "Lock": { "type": "object", "required": ["name", "locked"], "properties": {
                "name": { "type": "string" }, "locked": { "type": "boolean" },
                "holder": { "type": "string" }, "expires_ms": { "type": "integer" } } },
            "Event": { "type": "object", "required": ["type"], "properties": {
                "type": { "type": "string", "enum": ["user_joined", "user_left", "updated",
                    "conflict_detected", "conflict_resolved", "lock_acquired", "lock_renewed",
                    "lock_released", "lock_expired", "version_labelled", "version_restored",
                    "deleted", "lagged", "token_expired"],
                    "description": "token_expired (SSE only) is a stream's last event when its token expires, with code 4401 and a reason" } } },
        }
    });
    if let (Some(Value::Object(all)), Value::Object(more)) =
        (components.get_mut("schemas"), super::history::schemas())
    {
        all.extend(more);
    }
    components
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_is_in_the_document_and_every_ref_resolves() {
        let doc = document();
        let paths = doc["paths"].as_object().expect("paths");
        for path in [
            "/api/v1/docs",
            "/api/v1/docs/{name}",
            "/api/v1/docs/{name}/content",
            "/api/v1/docs/{name}/update",
            "/api/v1/docs/{name}/history",
            "/api/v1/docs/{name}/history/{version}/restore",
            "/api/v1/docs/{name}/register",
            "/api/v1/docs/{name}/conflicts",
            "/api/v1/docs/{name}/conflicts/{id}",
            "/api/v1/docs/{name}/conflicts/{id}/resolve",
            "/api/v1/docs/{name}/lock",
            "/api/v1/docs/{name}/events",
            "/api/v1/docs/{name}/live",
            "/api/v1/openapi.json",
        ] {
            assert!(paths.contains_key(path), "{path} missing");
        }
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for reference in text.split("#/components/schemas/").skip(1) {
            let name: String = reference
                .chars()
                .take_while(|c| c.is_alphanumeric())
                .collect();
            assert!(schemas.contains_key(&name), "dangling $ref {name}");
        }
    }
}
