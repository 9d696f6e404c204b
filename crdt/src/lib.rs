//! AetherFlow's pure sync core: the y-websocket protocol codec, the multi-document
//! [`envelope`] codec, awareness, document names and
//! the [`Room`] state machine that merges Yjs updates.
//!
//! Nothing here touches a socket, a clock, a thread or a random number generator: the server
//! feeds bytes in and gets bytes out, which keeps every rule testable in memory. Every Yjs
//! update passes [`update_check`] before yrs decodes it, so hostile bytes cannot overflow the
//! stack or reserve memory out of proportion to their size.
//!
//! ```
//! use aetherflow_crdt::protocol::{Limits, Message, SyncMessage};
//! use aetherflow_crdt::{ConnId, Room};
//! use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact};
//!
//! // A client edits its own document...
//! let client = Doc::with_client_id(1);
//! let text = client.get_or_insert_text("body");
//! text.insert(&mut client.transact_mut(), 0, "hello");
//! let update = client.transact().encode_state_as_update_v1(&StateVector::default());
//!
//! // ...and the relay's room applies it and hands back one message for everyone.
//! let mut room = Room::new();
//! let batch = room.apply_updates(vec![(ConnId(7), update.clone())]);
//! assert_eq!(batch.accepted, 1);
//! let frame = batch.broadcast.expect("one update was accepted");
//! assert_eq!(
//!     Message::decode(&frame, &Limits::default()),
//!     Ok(Message::Sync(SyncMessage::Update(update)))
//! );
//! let body = room.doc().get_or_insert_text("body");
//! assert_eq!(body.get_string(&room.doc().transact()), "hello");
//! ```

pub mod awareness;
pub mod code;
mod decode;
pub mod doc_name;
pub mod envelope;
pub mod event;
pub mod hocuspocus;
mod lib0;
pub mod protocol;
pub mod register;
pub mod room;
pub mod update_check;
pub mod update_file;
pub mod version;
pub mod webhook;

pub use awareness::{Awareness, AwarenessError};
pub use doc_name::{DocName, DocNameError, MAX_DOC_NAME_BYTES};
pub use room::{EMPTY_UPDATE, Room, RoomError, UpdateBatch};
pub use update_check::{UpdateCheckError, check_update_v1};

/// Identifies one connection to a room; assigned by the server, unique while it is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);
