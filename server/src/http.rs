//! HTTP routes: `/healthz`, the WebSocket endpoints `/ws/{document}` and `/hocuspocus` (see
//! [`crate::hocuspocus`]), and the browser demo
//! at `/` (see [`crate::web_demo`]).

use std::sync::atomic::Ordering;

use aetherflow_crdt::register::Kind;
use aetherflow_crdt::{ConnId, DocName};
use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Path, Query, State};
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::auth::Permission;
use crate::context::AppState;
use crate::error::AppError;
use crate::metrics::Rejection;
use crate::sessions::Transport;
use crate::websocket;

/// Read buffer of a WebSocket connection, and the most one read asks the socket for; see
/// [`websocket`]. Every idle connection holds it, zero-filled, so resident (issue 7). 256
/// bytes hold several of the small updates typing sends; a larger frame gets room for all
/// of itself once its header is read. Relay ingest with 256 rather than 1,024 bytes showed no
/// loss of throughput or more CPU time (`benches/RESULTS.md`).
const READ_BUFFER_BYTES: usize = 256;

/// Query parameters of the WebSocket endpoint (y-websocket's `params` option).
#[derive(serde::Deserialize)]
struct WsQuery {
    /// A client token (JWT); required unless the relay runs open.
    token: Option<String>,
}

/// The relay's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .route("/ws", get(empty_doc_name))
        .route("/ws/", get(empty_doc_name))
        .route("/ws/{*doc}", get(websocket))
        .merge(crate::hocuspocus::routes(&state))
        .merge(crate::api::routes())
        .merge(crate::api::scrape::routes())
        .merge(crate::web_demo::routes())
        .with_state(state)
}

/// Readiness: 200 while the relay can serve reads and writes; 503 while its storage cannot
/// be written (a full disk), so a load balancer sends writers elsewhere. It turns ready again
/// by itself once a write or the store's recovery probe succeeds.
async fn healthz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.storage.log.is_writable() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: storage cannot be written (disk full, I/O error or storage cluster unreachable)\n",
        )
    }
}

/// Liveness: 200 whenever the process serves HTTP at all; restart it only when this fails.
async fn livez() -> &'static str {
    "ok\n"
}

async fn empty_doc_name() -> AppError {
    AppError::InvalidDocName("document name is empty".into())
}

/// Upgrades to a y-websocket session on document `doc`. Too many connections from one
/// address (429), a bad name (400) or token (401, 403) is refused before the upgrade, so no
/// document data flows to an unauthorised client.
async fn websocket(
    State(state): State<AppState>,
    extensions: Extensions,
    headers: HeaderMap,
    doc: Result<Path<String>, PathRejection>,
    query: Result<Query<WsQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let remote = match crate::context::admit_connection(&state, &extensions, &headers) {
        Ok(remote) => remote,
        Err(e) => return e.into_response(),
    };
    let name = match doc {
        Ok(Path(name)) => name,
        Err(e) => {
            state.metrics.reject(Rejection::InvalidDocName);
            return AppError::InvalidDocName(e.body_text()).into_response();
        }
    };
    let doc = match DocName::parse(&name) {
        Ok(doc) => doc,
        Err(e) => {
            state.metrics.reject(Rejection::InvalidDocName);
            return AppError::InvalidDocName(e.to_string()).into_response();
        }
    };
    // An unparsable query carries no usable token: with auth on, that is a missing token.
    let token = query.ok().and_then(|Query(q)| q.token);
    let grant = match state.auth.authorize(token.as_deref(), &doc) {
        Ok(grant) => grant,
        Err(e) => {
            // The reason, never the token.
            tracing::debug!(%remote, %doc, reason = e.code(), "connection refused");
            state.metrics.reject(Rejection::from(&e));
            return AppError::Unauthorized(e).into_response();
        }
    };
    // Register documents (lww, manual) have no Yjs content to sync.
    match state.storage.catalog.document(doc.clone()).await {
        Ok(Some(meta)) if meta.kind != Kind::Yjs => {
            return AppError::Conflict(format!(
                "{doc} is a {:?} document; use /api/v1/docs/{doc}/register",
                meta.kind
            ))
            .into_response();
        }
        Ok(_) => {}
        Err(e) => return AppError::from(e).into_response(),
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(e) => return AppError::NotWebSocket(e.body_text()).into_response(),
    };
    let conn = ConnId(state.next_conn.fetch_add(1, Ordering::Relaxed));
    // Registered now, so the admin sees CONNECTING; dropped (CLOSED) if the upgrade fails.
    let handle = state.registry.open(
        &grant.user,
        Transport::Websocket,
        remote,
        vec![doc.as_str().to_owned()],
    );
    if let Some(exp) = grant.expires {
        handle.expires_at(exp);
    }
    let limit = state.sessions.limits.max_message_bytes;
    let ctx = state.sessions.clone();
    // Counted from now, not from when the upgrade completes: a shutdown that starts in
    // between still waits for this session to send its close frame.
    let in_flight = state.tracker.token();
    let tracker = state.tracker.clone();
    upgrade
        // Sized for idle connections (issue 7): tungstenite's default 128 KiB read buffer is
        // allocated and zero-filled per connection. The buffer still grows to hold a larger
        // frame (up to `limit`), and frames are written out as they are sent.
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            // The user and the address are in the session's registry entry (`handle`).
            let peer = websocket::Peer {
                conn,
                can_write: grant.permission == Permission::Write,
            };
            // The session gets a task of its own, and axum's upgrade task ends here: that
            // task would otherwise hold the upgrade's state and this closure's captures next
            // to the session for the connection's whole life, about 1.3 KiB per idle
            // connection (issue 7). The tracker counts the new task before `in_flight` drops,
            // so a shutdown never sees a gap.
            tracker.spawn(websocket::run(socket, doc, peer, handle, ctx));
            drop(in_flight);
            std::future::ready(())
        })
}

#[cfg(test)]
mod tests {
    //! The router's answers that need no socket and no process: readiness, liveness and the
    //! refusals of the WebSocket endpoint and the content reads, through `oneshot`.

    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::config::{Config, Settings};
    use crate::context::Foundation;
    use crate::metrics::Metrics;
    use crate::store::{self, Store, WriteMode};

    /// The router of an open relay (no tokens) on a fresh store in `dir`. Needs a runtime.
    fn router_in(dir: &std::path::Path) -> Router {
        let config = Config::from_settings(Settings::default()).expect("the default config");
        let store = Store::open(&dir.join("db.redb")).expect("store");
        let (storage, writer, _) = store::start(store.clone(), WriteMode::Durable, Metrics::new());
        let foundation = Foundation::for_tests(storage, store, writer);
        router(AppState::build(&config, foundation, None))
    }

    /// Status, and the error code of a JSON error body (empty for other bodies).
    async fn get(router: &Router, path: &str) -> (StatusCode, String, String) {
        let request = Request::get(path).body(Body::empty()).expect("a request");
        let response = router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("a body");
        let text = String::from_utf8_lossy(&body).into_owned();
        let code = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
            .unwrap_or_default();
        (status, code, text)
    }

    #[tokio::test]
    async fn healthz_is_ready_while_the_store_writes_and_livez_always_answers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let router = router_in(dir.path());
        let (status, _, body) = get(&router, "/healthz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
        let (status, _, body) = get(&router, "/livez").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
    }

    #[tokio::test]
    async fn the_websocket_endpoint_refuses_bad_names_and_plain_requests_with_json_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let router = router_in(dir.path());
        let (status, code, _) = get(&router, "/ws/").await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_REQUEST, "invalid_doc_name")
        );
        // A valid name, but no upgrade: told this endpoint speaks WebSocket.
        let (status, code, body) = get(&router, "/ws/notes").await;
        assert!(status.is_client_error(), "{status} {body}");
        assert_eq!(code, "websocket_required", "{body}");
    }

    #[tokio::test]
    async fn reading_a_document_that_does_not_exist_is_a_404() {
        let dir = tempfile::tempdir().expect("temp dir");
        let router = router_in(dir.path());
        let (status, code, body) = get(&router, "/api/v1/docs/nothing-here/content").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(code, "not_found", "{body}");
    }
}
