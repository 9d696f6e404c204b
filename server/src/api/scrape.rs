//! `GET /metrics`: the relay's metrics (see [`crate::metrics`]), outside `/api/v1`.
//!
//! Who may scrape: with `--admin-key` set, only a request carrying that key (as
//! `Authorization: Bearer KEY`, which Prometheus sends with `authorization: {credentials:
//! KEY}`, or `X-Admin-Key`). Without an admin key, only clients on a loopback address, so a
//! relay exposed on a public address does not hand out its session counts, document counts
//! and traffic to anyone; a scraper on the same host (or behind a local agent) still works.
//! With `--trusted-proxies` set the key is required all the same: a reverse proxy on the same
//! host makes every request it forwards come from loopback, and the relay cannot tell a
//! local scraper from a forwarded stranger by headers the proxy may not set.
//! Metrics never hold tokens, user names or document names: every label is a fixed word.

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::auth::AdminError;
use crate::context::AppState;
use crate::error::AppError;

/// The OpenMetrics text content type, which Prometheus negotiates and parses.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `/metrics` route.
pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: Extensions,
) -> Response {
    if let Err(refusal) = admit(&state, &headers, &extensions) {
        return refusal.into_response();
    }
    // The webhook outbox's depth as of this scrape (two table lengths, no rows read).
    if let Some(hooks) = &state.webhooks
        && let Ok((pending, parked)) = hooks.depth().await
    {
        state.metrics.webhooks().outbox_depth(pending, parked);
    }
    let text = state.metrics.render(&state.registry.census());
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        text,
    )
        .into_response()
}

/// The admin key when one is configured, else a loopback peer, unless proxies are trusted.
fn admit(state: &AppState, headers: &HeaderMap, extensions: &Extensions) -> Result<(), AppError> {
    match state.admin.require(&state.auth, headers) {
        Ok(()) => Ok(()),
        Err(AppError::Admin(AdminError::Disabled)) if !state.proxies.is_empty() => {
            Err(AppError::Forbidden(
                "with --trusted-proxies set, metrics are served only with --admin-key".into(),
            ))
        }
        Err(AppError::Admin(AdminError::Disabled)) => {
            let loopback = extensions
                .get::<ConnectInfo<std::net::SocketAddr>>()
                .is_some_and(|ConnectInfo(peer)| peer.ip().is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(AppError::Forbidden(
                    "metrics are served to loopback clients only unless --admin-key is set".into(),
                ))
            }
        }
        Err(other) => Err(other),
    }
}
