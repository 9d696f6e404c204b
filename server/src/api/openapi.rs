//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 description of every `/api/v1` route.
//!
//! Each route group contributes a function returning its `paths` entries (see [`GROUPS`]);
//! shared schemas live in [`components`]. To describe a new group, add its function to
//! [`GROUPS`]. The schemathesis step of `tests/run-all.sh` generates requests from this
//! description and checks every response against it, which keeps the two true to each other.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use crate::http::AppState;

/// The route groups' path descriptions, merged in this order.
pub const GROUPS: &[fn() -> Value] = &[
    docs_paths,
    content_paths,
    register_paths,
    lock_paths,
    event_paths,
    openapi_paths,
    super::sessions::paths,
    super::tokens::paths,
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
fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_response(description: &str, body: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": body } } })
}

fn json_body(body: Value) -> Value {
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

fn operation(summary: &str, params: Value, ok: (u16, Value), error_statuses: &[u16]) -> Value {
    let mut responses = errors(error_statuses);
    responses.insert(ok.0.to_string(), ok.1);
    json!({ "summary": summary, "parameters": params, "responses": responses })
}

fn with_body(mut op: Value, body: Value) -> Value {
    op["requestBody"] = body;
    op
}

fn name_param() -> Value {
    json!({ "name": "name", "in": "path", "required": true, "description": "document name: 1-255 bytes, no control characters, no / or \\",
            "schema": { "type": "string", "minLength": 1, "maxLength": 255 } })
}

fn id_param() -> Value {
    json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "integer", "minimum": 0 } })
}

/// Statuses every route with a token and a document name may answer.
const AUTH: [u16; 3] = [400, 401, 403];

fn statuses(extra: &[u16]) -> Vec<u16> {
    let mut all = AUTH.to_vec();
    all.extend_from_slice(extra);
    all
}

fn docs_paths() -> Value {
    let list = operation(
        "List documents in name order, a page at a time",
        json!([
            { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000 } },
            { "name": "cursor", "in": "query", "schema": { "type": "string" } }
        ]),
        (
            200,
            json_response("a page of documents", schema("DocumentPage")),
        ),
        &[400, 401],
    );
    let create = with_body(
        operation(
            "Create a document of a kind",
            json!([]),
            (201, json_response("created", schema("Document"))),
            &statuses(&[409]),
        ),
        json_body(schema("CreateDocument")),
    );
    let get = operation(
        "A document's metadata",
        json!([name_param()]),
        (200, json_response("the document", schema("Document"))),
        &statuses(&[404]),
    );
    let mut delete = operation(
        "Delete a document: content, register, conflicts; its connections are closed (4410)",
        json!([name_param()]),
        (204, json!({ "description": "deleted" })),
        &statuses(&[404]),
    );
    delete["responses"]["204"] = json!({ "description": "deleted" });
    json!({
        "/api/v1/docs": { "get": list, "post": create },
        "/api/v1/docs/{name}": { "get": get, "delete": delete },
    })
}

fn content_paths() -> Value {
    let content = operation(
        "A Yjs document's root types as JSON (map: object, array: array, text: string)",
        json!([name_param()]),
        (200, json_response("the content", schema("Content"))),
        &statuses(&[404, 409]),
    );
    let binary = json!({ "description": "the document's state as one Yjs v1 update",
        "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } });
    let get_update = operation(
        "A Yjs document's state as one binary v1 update",
        json!([name_param()]),
        (200, binary),
        &statuses(&[404, 409]),
    );
    let post_update = with_body(
        operation(
            "Apply a binary Yjs v1 update through the document's room; answered after the commit",
            json!([name_param()]),
            (204, json!({ "description": "committed and broadcast" })),
            &statuses(&[409, 413]),
        ),
        json!({ "required": true, "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } }),
    );
    json!({
        "/api/v1/docs/{name}/content": { "get": content },
        "/api/v1/docs/{name}/update": { "get": get_update, "post": post_update },
    })
}

fn register_paths() -> Value {
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
            &statuses(&[404, 409, 423]),
        ),
        json_body(json!({ "oneOf": [schema("LwwWrite"), schema("ManualWrite")] })),
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
        json_body(schema("Resolution")),
    );
    json!({
        "/api/v1/docs/{name}/register": { "get": get, "put": put },
        "/api/v1/docs/{name}/conflicts": { "get": list },
        "/api/v1/docs/{name}/conflicts/{id}": { "get": one },
        "/api/v1/docs/{name}/conflicts/{id}/resolve": { "post": resolve },
    })
}

fn lock_paths() -> Value {
    let get = operation(
        "The document's lock, if any",
        json!([name_param()]),
        (200, json_response("the lock", schema("Lock"))),
        &statuses(&[404]),
    );
    let acquire = with_body(
        operation(
            "Acquire the lock for ttl_ms (or renew one's own)",
            json!([name_param()]),
            (200, json_response("the lock", schema("Lock"))),
            &statuses(&[404, 423]),
        ),
        json_body(schema("LockRequest")),
    );
    let renew = with_body(
        operation(
            "Renew one's own lock",
            json!([name_param()]),
            (200, json_response("the lock", schema("Lock"))),
            &statuses(&[409, 423]),
        ),
        json_body(schema("LockRequest")),
    );
    let release = operation(
        "Release one's own lock",
        json!([name_param(), { "name": "holder", "in": "query", "schema": { "type": "string" },
            "description": "the holder (open relays only; otherwise the token's subject)" }]),
        (204, json!({ "description": "released" })),
        &statuses(&[409, 423]),
    );
    json!({ "/api/v1/docs/{name}/lock": { "get": get, "post": acquire, "put": renew, "delete": release } })
}

fn event_paths() -> Value {
    let sse = json!({ "description": "Server-Sent Events; each event's name is its type, its data the Event JSON",
        "content": { "text/event-stream": { "schema": { "type": "string" } } } });
    let mut events = operation(
        "The document's events as Server-Sent Events (token also as ?token=)",
        json!([name_param(), { "name": "token", "in": "query", "schema": { "type": "string" } }]),
        (200, sse),
        &statuses(&[404]),
    );
    events["x-event-schema"] = schema("Event");
    let mut live = operation(
        "WebSocket (JSON text frames) for register documents: events, writes, resolutions; see the relay's docs",
        json!([name_param(), { "name": "token", "in": "query", "schema": { "type": "string" } }]),
        (101, json!({ "description": "switching to WebSocket" })),
        &statuses(&[404, 409, 426]),
    );
    live["x-websocket"] = json!(true);
    json!({
        "/api/v1/docs/{name}/events": { "get": events },
        "/api/v1/docs/{name}/live": { "get": live },
    })
}

fn openapi_paths() -> Value {
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
    json!({
        "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
        "schemas": {
            "Error": { "type": "object", "required": ["error"], "properties": { "error": {
                "type": "object", "required": ["code", "message"],
                "properties": { "code": { "type": "string" }, "message": { "type": "string" } } } } },
            "Kind": { "type": "string", "enum": ["yjs", "lww", "manual"] },
            "CreateDocument": { "type": "object", "required": ["name"], "properties": {
                "name": { "type": "string" }, "kind": schema("Kind") } },
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
            "LwwWrite": { "type": "object", "required": ["value", "stamp"], "properties": {
                "value": {}, "stamp": schema("WriteStamp") } },
            "ManualWrite": { "type": "object", "required": ["value", "base_version"], "properties": {
                "value": {}, "base_version": { "type": "integer", "minimum": 0 }, "author": { "type": "string" } } },
            "Resolution": { "type": "object", "required": ["value"], "properties": {
                "value": {}, "author": { "type": "string" } } },
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
                    "lock_released", "lock_expired", "deleted", "lagged"] } } },
        }
    })
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
