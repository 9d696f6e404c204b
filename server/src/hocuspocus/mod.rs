//! The Hocuspocus endpoint `/hocuspocus`: what Tiptap's `@hocuspocus/provider` speaks, many
//! documents over one WebSocket.
//!
//! A transport only: each message names its document ([`aetherflow_crdt::hocuspocus`]), and
//! the session translates it to the same rooms the y-websocket endpoint uses, so both kinds
//! of client edit one document together under one durability contract. The token travels
//! in-band, once per document (the provider's auth message), and is checked like a
//! `?token=` on `/ws/{doc}`: a refusal is Hocuspocus's permission-denied for that document
//! and the connection stays for the others; a read-only token is answered with the scope
//! `readonly`, and that document's updates with a sync status of 0, unapplied. Every applied
//! update is acknowledged with a sync status of 1 once it is committed (the provider's
//! "unsynced changes" count). Stateless messages go to the document's other Hocuspocus
//! connections ([`stateless`]). A connection holds at most `--hocuspocus-max-documents`
//! documents; a token for one more is refused with permission-denied.
//!
//! Not served: Hocuspocus server extensions and hooks (`onAuthenticate`, `onStoreDocument`,
//! webhooks ...): the relay's own auth, storage and API take their place.

mod documents;
mod session;
pub mod stateless;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::http::{Extensions, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::context::AppState;
use crate::error::AppError;
use crate::sessions::Transport;

use self::stateless::StatelessChannels;

/// Where the endpoint is served.
pub const PATH: &str = "/hocuspocus";

/// Read buffer of a connection: small, as on `/ws` (issue 7); it grows for a larger frame.
const READ_BUFFER_BYTES: usize = 256;

/// Bytes of frames the WebSocket layer collects before it writes them out: the session
/// flushes after each burst of room frames (a writer's acknowledgements come one frame per
/// update), so a burst goes out in one write. The buffer is allocated only when used.
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// What every Hocuspocus session shares.
pub(crate) struct Endpoint {
    /// The relay's context.
    app: AppState,
    /// Stateless messages between connections of one document.
    stateless: StatelessChannels,
    /// Most documents one connection may hold open.
    max_documents: usize,
}

/// The endpoint's route, sharing one set of stateless channels.
pub fn routes(state: &AppState) -> Router<AppState> {
    let endpoint = Arc::new(Endpoint {
        app: state.clone(),
        stateless: StatelessChannels::default(),
        max_documents: state.hocuspocus_max_documents,
    });
    let handler =
        move |extensions: Extensions,
              headers: HeaderMap,
              upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>| {
            let endpoint = Arc::clone(&endpoint);
            async move { upgrade_to_session(endpoint, extensions, headers, upgrade) }
        };
    Router::new().route(PATH, get(handler))
}

/// Upgrades to a Hocuspocus session. Only the per-address connection limit (429) applies
/// before the upgrade: tokens come later, one per document.
fn upgrade_to_session(
    endpoint: Arc<Endpoint>,
    extensions: Extensions,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let state = &endpoint.app;
    let remote = match crate::context::admit_connection(state, &extensions, &headers) {
        Ok(remote) => remote,
        Err(e) => return e.into_response(),
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(e) => return AppError::NotWebSocket(e.body_text()).into_response(),
    };
    let id = state.next_conn.fetch_add(1, Ordering::Relaxed);
    // The user is not known before the first token; the documents' users are in the room
    // events. Registered now, so the admin sees CONNECTING.
    let handle = state
        .registry
        .open("hocuspocus", Transport::Websocket, remote, Vec::new());
    let limit = state.sessions.limits.max_message_bytes;
    let in_flight = state.tracker.token();
    let tracker = state.tracker.clone();
    upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            tracker.spawn(session::run(socket, id, endpoint, handle));
            drop(in_flight);
            std::future::ready(())
        })
}
