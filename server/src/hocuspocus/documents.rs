//! The documents open on one Hocuspocus connection: authenticating an address with its
//! token, joining its room, and translating each message to the room (or answering it) and
//! each room frame back.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

use aetherflow_crdt::hocuspocus::{
    self as wire, Auth, Message, Payload, SCOPE_READ_ONLY, SCOPE_READ_WRITE,
};
use aetherflow_crdt::protocol::{self, SyncMessage};
use aetherflow_crdt::register::Kind;
use aetherflow_crdt::{ConnId, DocName, EMPTY_UPDATE};
use bytes::Bytes;
use tracing::{debug, warn};

use super::Endpoint;
use super::stateless::Registration;
use crate::auth::Permission;
use crate::connection::CloseReason;
use crate::metrics::Rejection;
use crate::rooms::{Membership, Outbound, OutboxReceiver, OutboxSender};
use crate::sessions::SessionHandle;

/// The acknowledgement of one applied update, without its address.
static APPLIED: [u8; 2] = wire::sync_status_body(true);

/// One open document.
struct Document {
    /// The connection id this address joined its room with: the tag of its room's frames in
    /// the connection's outbox.
    conn: ConnId,
    /// The document.
    doc: DocName,
    membership: Membership,
    can_write: bool,
    /// Updates handed to the room since the last acknowledgement was asked for.
    unacknowledged: u32,
    /// The stateless registration, dropped with the document.
    _stateless: Registration,
}

/// What the session does after a message.
pub(super) enum Next {
    /// Go on; send these answers first.
    Continue,
    /// Close the connection.
    Close(CloseReason),
}

/// The open documents of one connection, by address.
pub(super) struct Documents {
    open: HashMap<String, Document>,
    /// The address of each open document, by the connection id it joined its room with.
    addresses: HashMap<ConnId, Box<str>>,
    /// The connection's outbox, which every room it joins (and the stateless relay) writes
    /// to with a sender tagged by the document's connection id. Held here, so the outbox
    /// ends only by overflowing while the session lasts.
    outbox: OutboxSender,
    /// Answers of the session's own (auth results, sync status of read-only updates).
    pub(super) replies: Vec<Bytes>,
    /// The earliest `exp` of the tokens that opened documents.
    expires: Option<u64>,
}

impl Documents {
    /// No document open yet, and the outbox every room will write to, holding at most
    /// `outbox_max_bytes` of frames.
    pub(super) fn new(outbox_max_bytes: usize) -> (Documents, OutboxReceiver) {
        let (outbox, from_rooms) = crate::rooms::outbox::channel(outbox_max_bytes);
        let documents = Documents {
            open: HashMap::new(),
            addresses: HashMap::new(),
            outbox,
            replies: Vec::new(),
            expires: None,
        };
        (documents, from_rooms)
    }

    /// Leaves the document at `address`, if open.
    fn close(&mut self, address: &str) {
        if let Some(document) = self.open.remove(address) {
            self.addresses.remove(&document.conn);
        }
    }

    /// Handles one message from the client.
    pub(super) async fn on_message(
        &mut self,
        message: Message,
        endpoint: &Endpoint,
        handle: &SessionHandle,
    ) -> Next {
        let Message { address, payload } = message;
        match payload {
            Payload::Auth(Auth::Token { token, .. }) => {
                self.authenticate(address, &token, endpoint, handle).await;
                Next::Continue
            }
            Payload::Close(_) => {
                self.close(&address);
                Next::Continue
            }
            Payload::Yjs(message) => self.hand_to_room(address, message).await,
            Payload::Stateless(text) => {
                if let Some(open) = self.open.get(&address) {
                    let frame = wire::encode_stateless("", &text);
                    // The empty address is one byte (its length), left off: the receiving
                    // side addresses the frame to its own address.
                    let body = Bytes::from(frame).slice(1..);
                    endpoint.stateless.relay(&open.doc, open.conn, body);
                } else {
                    self.not_open(&address);
                }
                Next::Continue
            }
            // Only a server sends these; nothing to do.
            Payload::Auth(_) | Payload::SyncStatus(_) => Next::Continue,
        }
    }

    /// Asks each room to acknowledge the updates handed to it since the last call.
    pub(super) async fn acknowledge(&mut self) -> Next {
        for open in self.open.values_mut() {
            if open.unacknowledged == 0 {
                continue;
            }
            let times = std::mem::take(&mut open.unacknowledged);
            if open.membership.acknowledge(&APPLIED, times).await.is_err() {
                return room_gone();
            }
        }
        Next::Continue
    }

    /// Translates one frame with the connection id of the room that queued it (`None`: the
    /// outbox overflowed); `None` if that document is no longer open under that connection
    /// id (the frame is stale).
    pub(super) fn translate_room_frame(
        &mut self,
        item: Option<(ConnId, Outbound)>,
    ) -> Option<Result<Bytes, CloseReason>> {
        let Some((conn, out)) = item else {
            return Some(Err(CloseReason::new(
                CloseReason::TRY_AGAIN_LATER,
                "connection fell behind; reconnect to resync",
            )));
        };
        let address = self.addresses.get(&conn)?;
        Some(match out {
            Outbound::Frame(frame) => Ok(translated(address, frame)),
            Outbound::Close(reason) if reason.code == CloseReason::DOCUMENT_DELETED => {
                // Only this document ends; the provider hears why.
                let close = Message {
                    address: address.to_string(),
                    payload: Payload::Close(Some(reason.reason)),
                };
                self.close(&close.address);
                Ok(Bytes::from(close.encode()))
            }
            Outbound::Close(reason) => Err(reason),
        })
    }

    async fn hand_to_room(&mut self, address: String, message: protocol::Message) -> Next {
        let Some(open) = self.open.get_mut(&address) else {
            self.not_open(&address);
            return Next::Continue;
        };
        if let protocol::Message::Sync(SyncMessage::Step2(update) | SyncMessage::Update(update)) =
            &message
        {
            if !open.can_write {
                let applied = is_step2(&message) && carries_nothing(update);
                self.replies
                    .push(Bytes::from(wire::encode_sync_status(&address, applied)));
                return Next::Continue;
            }
            open.unacknowledged = open.unacknowledged.saturating_add(1);
        }
        if open.membership.send(message).await.is_err() {
            return room_gone();
        }
        Next::Continue
    }

    /// A message for an address that has no open document: refused like a token would be,
    /// and the connection stays.
    fn not_open(&mut self, address: &str) {
        let refusal = Auth::PermissionDenied {
            reason: "not authenticated for this document: send its token first".into(),
        };
        self.replies
            .push(Bytes::from(wire::encode_auth(address, &refusal)));
    }

    async fn authenticate(
        &mut self,
        address: String,
        token: &str,
        endpoint: &Endpoint,
        handle: &SessionHandle,
    ) {
        if let Some(open) = self.open.get(&address) {
            // Already open: a token refresh changes nothing here; say where it stands.
            let scope = scope(open.can_write);
            let answer = wire::encode_auth(&address, &Auth::Authenticated { scope });
            self.replies.push(Bytes::from(answer));
            return;
        }
        let answer = match self.open(&address, token, endpoint, handle).await {
            Ok(can_write) => Auth::Authenticated {
                scope: scope(can_write),
            },
            Err(reason) => Auth::PermissionDenied { reason },
        };
        self.replies
            .push(Bytes::from(wire::encode_auth(&address, &answer)));
    }

    /// Authorises and joins the document at `address`; says whether it may write, or why not.
    async fn open(
        &mut self,
        address: &str,
        token: &str,
        endpoint: &Endpoint,
        handle: &SessionHandle,
    ) -> Result<bool, String> {
        let app = &endpoint.app;
        let metrics = app.sessions.rooms.metrics();
        let doc = DocName::parse(wire::document_of(address)).map_err(|e| {
            metrics.reject(Rejection::InvalidDocName);
            format!("invalid document name: {e}")
        })?;
        if self.open.len() >= endpoint.max_documents {
            metrics.reject(Rejection::TooManyDocuments);
            return Err(format!(
                "too many documents on this connection (limit {}); close one first",
                endpoint.max_documents
            ));
        }
        let token = (!token.is_empty()).then_some(token);
        let grant = app.auth.authorize(token, &doc).map_err(|e| {
            debug!(%doc, reason = e.code(), "document refused");
            metrics.reject(Rejection::from(&e));
            e.code().to_owned()
        })?;
        check_kind(endpoint, &doc).await?;
        let conn = ConnId(app.next_conn.fetch_add(1, Ordering::Relaxed));
        let outbox = self.outbox.for_conn(conn);
        let stateless = endpoint.stateless.register(&doc, conn, outbox.clone());
        let can_write = grant.permission == Permission::Write;
        let membership = app
            .sessions
            .rooms
            .join(&doc, conn, &grant.user, can_write, outbox)
            .await
            .map_err(|e| {
                warn!(error = %e, "join failed");
                "document unavailable".to_owned()
            })?;
        if let Some(exp) = grant.expires {
            let earliest = self.expires.map_or(exp, |e| e.min(exp));
            self.expires = Some(earliest);
            handle.expires_at(earliest);
        }
        handle.add_document(doc.as_str());
        self.addresses.insert(conn, address.into());
        let document = Document {
            conn,
            doc,
            membership,
            can_write,
            unacknowledged: 0,
            _stateless: stateless,
        };
        self.open.insert(address.to_owned(), document);
        Ok(can_write)
    }
}

/// Refuses register documents (lww, manual), which have no Yjs content.
async fn check_kind(endpoint: &Endpoint, doc: &DocName) -> Result<(), String> {
    match endpoint.app.storage.catalog.document(doc.clone()).await {
        Ok(Some(meta)) if meta.kind != Kind::Yjs => Err(format!(
            "{doc} is a {:?} document, which has no Yjs content",
            meta.kind
        )),
        Ok(_) => Ok(()),
        Err(e) => {
            warn!(error = %e, "document lookup failed");
            Err("document unavailable".into())
        }
    }
}

fn scope(can_write: bool) -> String {
    if can_write {
        SCOPE_READ_WRITE.into()
    } else {
        SCOPE_READ_ONLY.into()
    }
}

fn is_step2(message: &protocol::Message) -> bool {
    matches!(message, protocol::Message::Sync(SyncMessage::Step2(_)))
}

/// Whether a read-only client's step 2 adds nothing: no items (a delete set alone is what
/// every client holding deletions answers a step 1 with).
fn carries_nothing(update: &[u8]) -> bool {
    update == EMPTY_UPDATE
        || aetherflow_crdt::update_check::measure_update_v1(update)
            .is_ok_and(|size| size.items == 0)
}

fn room_gone() -> Next {
    Next::Close(CloseReason::new(
        CloseReason::INTERNAL_ERROR,
        "document reloading, reconnect",
    ))
}

/// Largest room frame whose translation [`translated`] keeps for the next reader.
const KEPT_TRANSLATION: usize = 16 * 1024;

/// [`translate`], done once for all the readers of a broadcast that one worker thread
/// serves: a room hands the same frame to each of its readers, and their sessions run one
/// after another, so the last translation is kept (with its frame, so that the frame's
/// memory cannot be reused by another while it is the key). Only small frames are kept, so
/// a thread holds at most [`KEPT_TRANSLATION`] bytes past their use.
fn translated(address: &str, frame: Bytes) -> Bytes {
    thread_local! {
        static LAST: RefCell<Option<(Bytes, Box<str>, Bytes)>> = const { RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| {
        if let Some((source, to, out)) = last.as_ref()
            && source.as_ptr() == frame.as_ptr()
            && source.len() == frame.len()
            && &**to == address
        {
            return out.clone();
        }
        let out = Bytes::from(translate(address, &frame));
        *last = (frame.len() <= KEPT_TRANSLATION).then(|| (frame, address.into(), out.clone()));
        out
    })
}

/// A room frame (a y-websocket message) as the Hocuspocus message for `address`: the same
/// bytes behind the address, except y-websocket's permission-denied, whose auth sub-type
/// Hocuspocus numbers differently.
fn translate(address: &str, frame: &[u8]) -> Vec<u8> {
    if frame.first() == Some(&(protocol::MESSAGE_AUTH as u8))
        && let Ok(protocol::Message::Auth(protocol::AuthMessage::PermissionDenied { reason })) =
            protocol::Message::decode(frame, &protocol::Limits::default())
    {
        return wire::encode_auth(address, &Auth::PermissionDenied { reason });
    }
    wire::encode_prefixed(address, frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_frames_keep_their_bytes_behind_the_address_but_permission_denied_is_renumbered() {
        let update = protocol::encode_sync_update(&[0, 0]);
        assert_eq!(translate("d", &update), wire::encode_prefixed("d", &update));
        let denied = protocol::Message::Auth(protocol::AuthMessage::PermissionDenied {
            reason: "read-only".into(),
        });
        let translated = translate("d", &denied.encode());
        let decoded = wire::Frame::decode(&translated, &protocol::Limits::default());
        assert_eq!(
            decoded,
            Ok(wire::Frame::Message(Message {
                address: "d".into(),
                payload: Payload::Auth(Auth::PermissionDenied {
                    reason: "read-only".into()
                })
            }))
        );
    }

    #[test]
    fn a_read_only_step2_with_only_deletions_adds_nothing() {
        assert!(carries_nothing(EMPTY_UPDATE));
        // No clients, one deleted range: client 1, clock 0, length 2.
        assert!(carries_nothing(&[0, 1, 1, 1, 0, 2]));
        assert!(!carries_nothing(&[1, 1, 1, 0, 4, 1, 1, b'b', 1, b'x', 0]));
    }
}
