//! One document on the client: a local yrs document, its persistence and its sync task.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use aetherflow_crdt::protocol::Message;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{debug, warn};
use yrs::sync::{Awareness, AwarenessUpdate};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, Origin, Transact, Update};

use crate::error::ClientError;
use crate::store::{StoredDoc, WriteOp};
use crate::transport::TransportKind;

/// Transaction origin of updates that came from the relay.
pub const REMOTE_ORIGIN: &str = "aetherflow-remote";
/// Prefix of the transaction origin of updates that came from another SDK instance (a peer);
/// an id of the link follows it. They are kept as pending until the relay acknowledges them, so
/// they reach the relay like local edits.
pub const PEER_ORIGIN: &str = "aetherflow-peer";
/// Transaction origin of state read back from the local database.
const LOAD_ORIGIN: &str = "aetherflow-load";
/// How many changes a slow [`Changes`] reader may fall behind before it misses some.
const CHANGES_CAPACITY: usize = 1024;

/// Where a document's connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// No connection and none being attempted right now (waiting out the backoff, or closed).
    Offline,
    /// Opening a connection; `attempt` counts from 1 since the last success.
    Connecting {
        /// Attempts since the last successful connection.
        attempt: u32,
    },
    /// Connected over this transport.
    Online(TransportKind),
}

/// A document's sync state, published on [`DocHandle::state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncState {
    /// The connection.
    pub connection: Connection,
    /// Both sides have exchanged state vectors on the current connection: the client has all
    /// the relay held and the relay has stored all the client held at that moment.
    pub synced: bool,
    /// Local updates, and updates from peers, that the relay has not acknowledged yet (kept in
    /// the local database).
    pub pending: usize,
    /// Why the relay last refused access, or why the TLS handshake with it failed (`TLS:
    /// ...`, an untrusted or mismatched certificate), if it did; cleared once connected.
    pub denied: Option<String>,
    /// The links to peers configured with [`crate::ClientConfig::peer`], by peer address.
    pub peers: BTreeMap<SocketAddr, PeerState>,
}

/// Where the link of one document to one configured peer stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerState {
    /// The link is open: the peer accepted our secret and the subscription.
    pub online: bool,
    /// Both sides have exchanged state vectors on the current link.
    pub synced: bool,
    /// Why the peer last refused us (e.g. a wrong secret), if it did.
    pub denied: Option<String>,
}

/// One change of the local document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A local edit, as a v1 update.
    Local(Vec<u8>),
    /// An update from the relay or a peer, as applied.
    Remote(Vec<u8>),
    /// Someone's presence changed (see [`DocHandle::presence`]).
    Presence,
}

/// What the document's task must send.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A local update with its local sequence number.
    Update { seq: u64, update: Vec<u8> },
    /// Our presence changed.
    Presence(Vec<u8>),
}

/// The state shared by the handle, the yrs observer and the sync task.
pub(crate) struct Shared {
    pub name: String,
    pub doc: Doc,
    pub awareness: Mutex<Awareness>,
    pub state: watch::Sender<SyncState>,
    pub changes: broadcast::Sender<Change>,
    /// Our own presence updates, for the peer links (the relay's goes through the outbox).
    pub presence_out: broadcast::Sender<Vec<u8>>,
    /// Every stored update with the peer link it came from, if any: peer links forward all but
    /// their own, so a peer does not get its updates echoed back.
    pub forward: broadcast::Sender<(Option<u64>, Vec<u8>)>,
    /// Source of peer link ids.
    next_link: AtomicU64,
    pending: Mutex<BTreeSet<u64>>,
    next_seq: AtomicU64,
    store: std::sync::mpsc::Sender<WriteOp>,
    outbox: mpsc::UnboundedSender<Outgoing>,
}

/// A document opened with [`crate::Client::doc`]. Cheap to clone.
///
/// Edit [`DocHandle::doc`] with ordinary yrs transactions: every committed local transaction is
/// stored locally and sent to the relay; updates from the relay are applied with the origin
/// [`REMOTE_ORIGIN`].
#[derive(Clone)]
pub struct DocHandle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for DocHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocHandle")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

/// A stream of [`Change`]s.
#[derive(Debug)]
pub struct Changes(broadcast::Receiver<Change>);

impl Changes {
    /// The next change; `None` once the document is gone. A reader that fell more than 1,024
    /// changes behind skips the ones it missed (the document itself holds them all).
    pub async fn next(&mut self) -> Option<Change> {
        loop {
            match self.0.recv().await {
                Ok(change) => return Some(change),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl DocHandle {
    /// Builds the document from its stored state and wires the observer. Returns the handle
    /// and the receiving end of its outbox, for the sync task.
    pub(crate) fn load(
        name: String,
        stored: StoredDoc,
        store: std::sync::mpsc::Sender<WriteOp>,
    ) -> Result<(DocHandle, mpsc::UnboundedReceiver<Outgoing>), ClientError> {
        let doc = Doc::new();
        apply_stored(&doc, &name, &stored)?;
        let pending: BTreeSet<u64> = stored.pending.keys().copied().collect();
        let next_seq = pending.last().map_or(0, |last| last + 1);
        let (outbox, outbox_rx) = mpsc::unbounded_channel();
        let (state, _) = watch::channel(SyncState {
            connection: Connection::Offline,
            synced: false,
            pending: pending.len(),
            denied: None,
            peers: BTreeMap::new(),
        });
        let shared = Arc::new(Shared {
            name,
            awareness: Mutex::new(Awareness::new(doc.clone())),
            doc,
            state,
            changes: broadcast::channel(CHANGES_CAPACITY).0,
            presence_out: broadcast::channel(CHANGES_CAPACITY).0,
            forward: broadcast::channel(CHANGES_CAPACITY).0,
            next_link: AtomicU64::new(0),
            pending: Mutex::new(pending),
            next_seq: AtomicU64::new(next_seq),
            store,
            outbox,
        });
        let weak = Arc::downgrade(&shared);
        shared
            .doc
            .observe_update_v1("aetherflow-client", move |txn, event| {
                on_update(&weak, txn.origin(), &event.update);
            })
            .map_err(|e| ClientError::Store(format!("cannot observe the document: {e}")))?;
        Ok((DocHandle { shared }, outbox_rx))
    }

    /// The document's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The local yrs document. Edit it with `transact_mut()`; do not keep a transaction open
    /// across an `.await`, since the sync task needs it to apply remote updates.
    pub fn doc(&self) -> &Doc {
        &self.shared.doc
    }

    /// A receiver of the document's sync state; `wait_for` on it to await a condition.
    pub fn state(&self) -> watch::Receiver<SyncState> {
        self.shared.state.subscribe()
    }

    /// Waits until the state satisfies `condition`; returns that state.
    pub async fn wait_for(&self, condition: impl FnMut(&SyncState) -> bool) -> SyncState {
        let mut state = self.state();
        let result = state.wait_for(condition).await;
        // The sender lives in `self.shared`, so it cannot be dropped while we wait.
        result
            .map(|s| s.clone())
            .expect("the state sender outlives the handle")
    }

    /// A stream of the document's changes from now on.
    pub fn changes(&self) -> Changes {
        Changes(self.shared.changes.subscribe())
    }

    /// Sets this client's presence (any JSON value, e.g. a name and a cursor) and shares it.
    pub fn set_presence(&self, state: &serde_json::Value) -> Result<(), ClientError> {
        let update = {
            let mut awareness = lock(&self.shared.awareness);
            awareness
                .set_local_state(state)
                .map_err(|e| ClientError::Presence(e.to_string()))?;
            local_presence(&awareness)
        };
        if let Some(update) = update {
            let _ = self.shared.presence_out.send(update.clone());
            let _ = self.shared.outbox.send(Outgoing::Presence(update));
        }
        Ok(())
    }

    /// Everyone's presence, by yrs client id, including this client's own.
    pub fn presence(&self) -> BTreeMap<u64, serde_json::Value> {
        let awareness = lock(&self.shared.awareness);
        awareness
            .iter()
            .filter_map(|(id, state)| {
                let json = state.data?;
                serde_json::from_str(&json)
                    .ok()
                    .map(|value| (id.get(), value))
            })
            .collect()
    }

    /// Waits until every change made so far is committed to the local database.
    pub async fn flush(&self) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .store
            .send(WriteOp::Flush(tx))
            .map_err(|_| ClientError::Closed)?;
        rx.await
            .map_err(|_| ClientError::Closed)?
            .map_err(ClientError::Store)
    }
}

/// Locks `mutex`, recovering the data if a panicking thread poisoned it: the awareness map and
/// the pending set stay consistent between statements.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The encoded awareness update carrying only our own state.
pub(crate) fn local_presence(awareness: &Awareness) -> Option<Vec<u8>> {
    awareness
        .update_with_clients([awareness.client_id()])
        .ok()
        .map(|u| u.encode_v1())
}

fn apply_stored(doc: &Doc, name: &str, stored: &StoredDoc) -> Result<(), ClientError> {
    let corrupt = |e: &dyn std::fmt::Display| ClientError::Corrupt {
        doc: name.to_owned(),
        reason: e.to_string(),
    };
    let mut txn = doc.transact_mut_with(LOAD_ORIGIN);
    for bytes in stored.snapshot.iter().chain(&stored.log) {
        let update = Update::decode_v1(bytes).map_err(|e| corrupt(&e))?;
        txn.apply_update(update).map_err(|e| corrupt(&e))?;
    }
    Ok(())
}

/// The yrs observer: stores every change, queues local ones for the relay.
fn on_update(shared: &Weak<Shared>, origin: Option<&Origin>, update: &[u8]) {
    let Some(shared) = shared.upgrade() else {
        return;
    };
    if origin == Some(&Origin::from(LOAD_ORIGIN)) || update == aetherflow_crdt::EMPTY_UPDATE {
        return;
    }
    let from_relay = origin == Some(&Origin::from(REMOTE_ORIGIN));
    let link = origin.and_then(peer_link_of);
    let from_peer = link.is_some();
    // What came from a peer may be missing at the relay: it is pending like a local edit.
    let seq = (!from_relay).then(|| shared.next_seq.fetch_add(1, Ordering::SeqCst));
    let record = WriteOp::Record {
        doc: shared.name.clone(),
        update: update.to_vec(),
        pending: seq,
    };
    if shared.store.send(record).is_err() {
        warn!(doc = %shared.name, "client closed: change not stored");
    }
    if let Some(seq) = seq {
        let count = {
            let mut pending = lock(&shared.pending);
            pending.insert(seq);
            pending.len()
        };
        shared.state.send_modify(|s| s.pending = count);
        let _ = shared.outbox.send(Outgoing::Update {
            seq,
            update: update.to_vec(),
        });
    }
    let _ = shared.forward.send((link, update.to_vec()));
    let change = if from_relay || from_peer {
        Change::Remote(update.to_vec())
    } else {
        Change::Local(update.to_vec())
    };
    let _ = shared.changes.send(change);
}

/// The peer link id in a [`PEER_ORIGIN`] origin.
fn peer_link_of(origin: &Origin) -> Option<u64> {
    let id = origin.as_ref().strip_prefix(PEER_ORIGIN.as_bytes())?;
    Some(u64::from_be_bytes(id.try_into().ok()?))
}

impl Shared {
    /// The highest local sequence number assigned so far.
    pub fn last_seq(&self) -> Option<u64> {
        self.next_seq.load(Ordering::SeqCst).checked_sub(1)
    }

    /// The relay has every local update up to `upto`.
    pub fn ack(&self, upto: u64) {
        let count = {
            let mut pending = lock(&self.pending);
            pending.retain(|&seq| seq > upto);
            pending.len()
        };
        let _ = self.store.send(WriteOp::Ack {
            doc: self.name.clone(),
            upto,
        });
        self.state.send_modify(|s| s.pending = count);
    }

    /// Applies an update from the relay. Returns false if it is malformed.
    pub fn apply_remote(&self, bytes: &[u8]) -> bool {
        self.apply_with_origin(bytes, Origin::from(REMOTE_ORIGIN))
    }

    /// A new id for a peer link.
    pub fn new_link_id(&self) -> u64 {
        self.next_link.fetch_add(1, Ordering::Relaxed)
    }

    /// Applies an update from the peer on link `link`. Returns false if it is malformed.
    pub fn apply_from_peer(&self, bytes: &[u8], link: u64) -> bool {
        let mut origin = PEER_ORIGIN.as_bytes().to_vec();
        origin.extend(link.to_be_bytes());
        self.apply_with_origin(bytes, Origin::from(origin.as_slice()))
    }

    /// Our whole state as one v1 update, for a peer link that fell behind the change stream.
    pub fn full_state(&self) -> Vec<u8> {
        use yrs::ReadTxn;
        self.doc
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default())
    }

    fn apply_with_origin(&self, bytes: &[u8], origin: Origin) -> bool {
        if let Err(e) = aetherflow_crdt::check_update_v1(bytes) {
            warn!(doc = %self.name, error = %e, "malformed remote update");
            return false;
        }
        let Ok(update) = Update::decode_v1(bytes) else {
            warn!(doc = %self.name, "undecodable remote update");
            return false;
        };
        let mut txn = self.doc.transact_mut_with(origin);
        if let Err(e) = txn.apply_update(update) {
            warn!(doc = %self.name, error = %e, "remote update not applied");
            return false;
        }
        true
    }

    /// Applies a presence update from the relay or a peer.
    pub fn apply_presence(&self, bytes: &[u8]) {
        let Ok(update) = AwarenessUpdate::decode_v1(bytes) else {
            debug!(doc = %self.name, "undecodable presence update");
            return;
        };
        let applied = lock(&self.awareness).apply_update(update);
        match applied {
            Ok(()) => {
                let _ = self.changes.send(Change::Presence);
            }
            Err(e) => debug!(doc = %self.name, error = %e, "presence update not applied"),
        }
    }

    /// Our presence, if set, as an awareness message.
    pub fn presence_message(&self) -> Option<Message> {
        let awareness = lock(&self.awareness);
        awareness.local_state_raw()?;
        local_presence(&awareness).map(Message::Awareness)
    }
}
