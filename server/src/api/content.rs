//! A Yjs document's content: as JSON (`GET .../content`), as one binary v1 update
//! (`GET .../update`), and changed by a binary v1 update (`POST .../update`).
//!
//! Reads come from the store, which holds everything any client has been shown (updates are
//! broadcast only after their commit). Writes go through the document's room, exactly like a
//! WebSocket writer's update: checked before yrs decodes it, committed, then broadcast; the
//! response waits for the commit.

use aetherflow_crdt::protocol::Limits;
use aetherflow_crdt::register::Kind;
use aetherflow_crdt::{DocName, Room};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use yrs::types::AsPrelim;
use yrs::types::ToJson;
use yrs::{Doc, In, ReadTxn, Transact};

use super::openapi::{json_response, name_param, operation, schema, statuses, with_body};
use super::{NamePath, authorize, blocking};
use crate::error::AppError;
use crate::http::AppState;
use crate::rooms::ApplyError;

/// The routes of this group.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/docs/{name}/content", get(get_content))
        .route(
            "/api/v1/docs/{name}/update",
            get(get_update)
                .post(post_update)
                // The room's own limit (`--max-message-bytes`) is checked in the handler,
                // with a JSON error; this only stops absurd bodies early.
                .layer(DefaultBodyLimit::max(
                    Limits::default().max_message_bytes.max(64 << 20),
                )),
        )
}

/// Loads a Yjs document from the store; 404 if it does not exist, 409 if it is a register.
async fn load_yjs(state: &AppState, doc: &DocName) -> Result<Room, AppError> {
    let store = state.sessions.rooms.store().clone();
    let lookup = doc.clone();
    let loaded = blocking(move || {
        let Some(meta) = store.document(&lookup)? else {
            return Ok(None);
        };
        if meta.kind != Kind::Yjs {
            return Ok(Some(Err(meta.kind)));
        }
        Ok(Some(Ok(store.load(&lookup)?)))
    })
    .await?;
    let stored = match loaded {
        None => return Err(AppError::NotFound(format!("no document {doc}"))),
        Some(Err(kind)) => return Err(not_yjs(doc, kind)),
        Some(Ok(stored)) => stored,
    };
    Room::load(
        stored.snapshot.as_deref(),
        stored.log.iter().map(Vec::as_slice),
    )
    .map_err(|e| AppError::Internal(format!("stored document does not load: {e}")))
}

fn not_yjs(doc: &DocName, kind: Kind) -> AppError {
    AppError::Conflict(format!(
        "{doc} is a {kind:?} document; use /api/v1/docs/{doc}/register"
    ))
}

async fn get_content(
    State(state): State<AppState>,
    headers: HeaderMap,
    NamePath(doc): NamePath,
) -> Result<Json<Value>, AppError> {
    authorize(&state, &headers, &doc, false)?;
    let room = load_yjs(&state, &doc).await?;
    Ok(Json(
        json!({ "name": doc.as_str(), "content": content_json(room.doc()) }),
    ))
}

/// The document's root types as JSON: a map as an object, an array as an array, a text as a
/// string. The relay never declared the root types, so each one's type is inferred from its
/// content (as yrs does): entries make a map, characters a text, other items an array.
pub fn content_json(doc: &Doc) -> Value {
    let kinds: Vec<(String, In)> = {
        let txn = doc.transact();
        txn.root_refs()
            .map(|(name, value)| (name.to_owned(), value.as_prelim(&txn)))
            .collect()
    };
    let mut out = Map::new();
    for (name, kind) in kinds {
        let any = match kind {
            In::Text(_) => {
                let text = doc.get_or_insert_text(name.as_str());
                let txn = doc.transact();
                yrs::Any::from(yrs::GetString::get_string(&text, &txn))
            }
            In::Array(_) => {
                let array = doc.get_or_insert_array(name.as_str());
                array.to_json(&doc.transact())
            }
            In::XmlFragment(_) | In::XmlElement(_) | In::XmlText(_) => {
                let xml = doc.get_or_insert_xml_fragment(name.as_str());
                yrs::Any::from(yrs::GetString::get_string(&xml, &doc.transact()))
            }
            _ => {
                let map = doc.get_or_insert_map(name.as_str());
                map.to_json(&doc.transact())
            }
        };
        // Numbers JSON cannot hold (NaN, infinities) have no JSON form; they become null.
        out.insert(name, serde_json::to_value(&any).unwrap_or(Value::Null));
    }
    Value::Object(out)
}

async fn get_update(
    State(state): State<AppState>,
    headers: HeaderMap,
    NamePath(doc): NamePath,
) -> Result<Response, AppError> {
    authorize(&state, &headers, &doc, false)?;
    let room = load_yjs(&state, &doc).await?;
    let update = room.snapshot();
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], update).into_response())
}

/// Applies the body, one binary Yjs v1 update, through the document's room (creating the
/// document as a Yjs document if it does not exist). Answers 204 after the commit.
async fn post_update(
    State(state): State<AppState>,
    headers: HeaderMap,
    NamePath(doc): NamePath,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, AppError> {
    authorize(&state, &headers, &doc, true)?;
    let limit = state.sessions.limits.max_message_bytes;
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => too_large(limit),
        _ => AppError::BadRequest(e.body_text()),
    })?;
    if body.len() > limit {
        return Err(too_large(limit));
    }
    if body.is_empty() {
        return Err(AppError::BadRequest(
            "the body must be a binary Yjs v1 update".into(),
        ));
    }
    let store = state.sessions.rooms.store().clone();
    let lookup = doc.clone();
    if let Some(meta) = blocking(move || store.document(&lookup)).await?
        && meta.kind != Kind::Yjs
    {
        return Err(not_yjs(&doc, meta.kind));
    }
    match state.sessions.rooms.apply(&doc, body.to_vec()).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(ApplyError::Invalid(reason)) => Err(AppError::BadRequest(format!(
            "not an acceptable Yjs v1 update: {reason}"
        ))),
        Err(e) => Err(AppError::from(e)),
    }
}

fn too_large(limit: usize) -> AppError {
    AppError::TooLarge(format!("the update is larger than {limit} bytes"))
}

/// This group's part of the OpenAPI description.
pub fn paths() -> Value {
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
    let mut post_update = with_body(
        operation(
            "Apply a binary Yjs v1 update through the document's room; answered after the commit",
            json!([name_param()]),
            (204, json!({ "description": "committed and broadcast" })),
            &statuses(&[409, 413, 507]),
        ),
        json!({ "required": true, "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } }),
    );
    post_update["responses"]["413"]["description"] = json!(
        "`too_large`: the body is over --max-message-bytes; `document_limit`: the update holds \
         more items than --max-update-items, or would take the document past --max-doc-items \
         items or --max-doc-bytes content bytes (nothing was applied)"
    );
    json!({
        "/api/v1/docs/{name}/content": { "get": content },
        "/api/v1/docs/{name}/update": { "get": get_update, "post": post_update },
    })
}
