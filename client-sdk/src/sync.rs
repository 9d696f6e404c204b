//! The sync session with the relay for one document, as a pure state machine: messages in,
//! messages out, no sockets and no clock.
//!
//! On every (re)connection both sides exchange state vectors (y-protocols sync step 1 and 2 in
//! both directions), so whichever side lacks updates gets them: the client sends its step 1,
//! the relay answers with step 2; the relay greets with its own step 1, the client answers
//! with step 2 holding everything the relay lacks, including every pending offline edit.
//!
//! **Acknowledgements.** y-websocket has no acks, but the relay answers a step 1 only after it
//! has applied (and, in durable mode, committed) every update the same connection sent before
//! it, and it answers step 1s in order. So after sending updates the client sends a step 1 as a
//! barrier; the step 2 answering it acknowledges every local update sent before the barrier.

use std::collections::VecDeque;

use aetherflow_crdt::protocol::{Message, SyncMessage};

/// One step 1 we sent and whose step 2 answer we await.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Barrier {
    /// Local updates up to this sequence number were sent before it.
    acks: Option<u64>,
    /// Its answer completes the initial exchange in both directions.
    completes_sync: bool,
}

/// What the caller must do after feeding the session a message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Actions {
    /// Remote v1 updates to apply to the local document.
    pub apply: Vec<Vec<u8>>,
    /// Pending local updates up to this sequence number are acknowledged.
    pub acked: Option<u64>,
    /// The initial exchange is complete: both sides hold each other's state.
    pub synced: bool,
    /// The relay asked for our presence.
    pub send_presence: bool,
    /// A remote presence update to apply.
    pub presence: Option<Vec<u8>>,
    /// The relay refused access.
    pub denied: Option<String>,
}

/// What the local document can tell the session.
pub trait LocalDoc {
    /// The encoded state vector.
    fn state_vector(&self) -> Vec<u8>;
    /// Everything the holder of `state_vector` lacks, as a v1 update; `None` if the state
    /// vector does not decode.
    fn diff(&self, state_vector: &[u8]) -> Option<Vec<u8>>;
}

impl LocalDoc for yrs::Doc {
    fn state_vector(&self) -> Vec<u8> {
        use yrs::updates::encoder::Encode;
        use yrs::{ReadTxn, Transact};
        self.transact().state_vector().encode_v1()
    }

    fn diff(&self, state_vector: &[u8]) -> Option<Vec<u8>> {
        use yrs::updates::decoder::Decode;
        use yrs::{ReadTxn, StateVector, Transact};
        let sv = StateVector::decode_v1(state_vector).ok()?;
        Some(self.transact().encode_state_as_update_v1(&sv))
    }
}

/// The session state of one connection.
#[derive(Debug, Default)]
pub struct SyncSession {
    barriers: VecDeque<Barrier>,
    /// Whether we have answered the relay's step 1, i.e. sent everything it lacked, offline
    /// edits included. Until then a barrier after live updates acknowledges nothing: the
    /// offline edits numbered before them have not been sent on this connection yet.
    answered_relay: bool,
}

impl SyncSession {
    /// Starts a session: returns the first message to send (our step 1).
    pub fn start(doc: &impl LocalDoc) -> (SyncSession, Message) {
        let mut session = SyncSession::default();
        session.barriers.push_back(Barrier {
            acks: None,
            completes_sync: false,
        });
        let step1 = Message::Sync(SyncMessage::Step1(doc.state_vector()));
        (session, step1)
    }

    /// Local updates up to `upto` were just sent: returns the barrier to send after them.
    pub fn barrier(&mut self, doc: &impl LocalDoc, upto: u64) -> Message {
        self.barriers.push_back(Barrier {
            acks: self.answered_relay.then_some(upto),
            completes_sync: false,
        });
        Message::Sync(SyncMessage::Step1(doc.state_vector()))
    }

    /// Handles one message from the relay; `last_seq` is the highest local sequence number
    /// assigned so far, read *before* the document is read for an answer, so every update it
    /// counts is in the answer. Returns what to do and the messages to send, in order.
    pub fn receive(
        &mut self,
        doc: &impl LocalDoc,
        message: Message,
        last_seq: Option<u64>,
    ) -> (Actions, Vec<Message>) {
        let mut actions = Actions::default();
        let mut send = Vec::new();
        match message {
            Message::Sync(SyncMessage::Step1(sv)) => {
                // The relay's state vector: answer with all it lacks, then a barrier whose
                // answer tells us it has stored all of it.
                if let Some(diff) = doc.diff(&sv) {
                    self.answered_relay = true;
                    send.push(Message::Sync(SyncMessage::Step2(diff)));
                    self.barriers.push_back(Barrier {
                        acks: last_seq,
                        completes_sync: true,
                    });
                    send.push(Message::Sync(SyncMessage::Step1(doc.state_vector())));
                }
            }
            Message::Sync(SyncMessage::Step2(update)) => {
                actions.apply.push(update);
                if let Some(barrier) = self.barriers.pop_front() {
                    actions.acked = barrier.acks;
                    actions.synced = barrier.completes_sync;
                }
            }
            Message::Sync(SyncMessage::Update(update)) => actions.apply.push(update),
            Message::Awareness(update) => actions.presence = Some(update),
            Message::QueryAwareness => actions.send_presence = true,
            Message::Auth(aetherflow_crdt::protocol::AuthMessage::PermissionDenied { reason }) => {
                actions.denied = Some(reason);
            }
        }
        (actions, send)
    }
}

/// The serving side of a peer link (the `peer` module), as a pure function: what the relay
/// does for one subscriber. A step 1 is answered with everything its sender lacks, in order,
/// so the connecting side's barriers work against a peer exactly as against the relay; a peer
/// never acknowledges or denies anything.
pub fn serve(doc: &impl LocalDoc, message: Message) -> (Actions, Vec<Message>) {
    let mut actions = Actions::default();
    let mut send = Vec::new();
    match message {
        Message::Sync(SyncMessage::Step1(sv)) => {
            if let Some(diff) = doc.diff(&sv) {
                send.push(Message::Sync(SyncMessage::Step2(diff)));
            }
        }
        Message::Sync(SyncMessage::Step2(update) | SyncMessage::Update(update)) => {
            actions.apply.push(update);
        }
        Message::Awareness(update) => actions.presence = Some(update),
        Message::QueryAwareness => actions.send_presence = true,
        // Only a relay denies access; a peer that claims to is ignored.
        Message::Auth(_) => {}
    }
    (actions, send)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use aetherflow_crdt::{ConnId, Room};
    use yrs::updates::decoder::Decode;
    use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

    fn apply(doc: &Doc, update: &[u8]) {
        let update = Update::decode_v1(update).unwrap();
        doc.transact_mut().apply_update(update).unwrap();
    }

    /// Plays the relay's side with the real [`Room`]: updates before step 1 answers.
    fn relay_handle(room: &mut Room, message: Message) -> Vec<Message> {
        match message {
            Message::Sync(SyncMessage::Step1(sv)) => {
                let step2 = room.answer_step1(&sv).unwrap();
                vec![Message::decode(&step2, &Default::default()).unwrap()]
            }
            Message::Sync(SyncMessage::Step2(u) | SyncMessage::Update(u)) => {
                room.apply_updates(vec![(ConnId(1), u)]);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    #[test]
    fn offline_edits_reach_the_relay_and_are_acknowledged_by_the_barrier() {
        let mut room = Room::new();
        // The relay already holds someone else's text.
        let other = Doc::with_client_id(9);
        other
            .get_or_insert_text("t")
            .insert(&mut other.transact_mut(), 0, "relay ");
        room.apply_updates(vec![(
            ConnId(2),
            other
                .transact()
                .encode_state_as_update_v1(&StateVector::default()),
        )]);
        // The client edited offline (local seq 0 and 1).
        let client = Doc::with_client_id(1);
        let text = client.get_or_insert_text("t");
        text.insert(&mut client.transact_mut(), 0, "a");
        text.insert(&mut client.transact_mut(), 1, "b");

        let (mut session, step1) = SyncSession::start(&client);
        let mut to_relay = vec![step1];
        // The relay's greeting.
        let greeting = Message::decode(&room.greeting()[0], &Default::default()).unwrap();
        let (_, answer) = session.receive(&client, greeting, Some(1));
        to_relay.extend(answer);
        let mut acked = None;
        let mut synced = false;
        for message in to_relay {
            for reply in relay_handle(&mut room, message) {
                let (actions, more) = session.receive(&client, reply, Some(1));
                assert!(more.is_empty());
                for u in &actions.apply {
                    apply(&client, u);
                }
                acked = actions.acked.or(acked);
                synced |= actions.synced;
            }
        }
        assert_eq!(acked, Some(1), "both offline edits are acknowledged");
        assert!(synced);
        let relay_text = room.doc().get_or_insert_text("t");
        let relay_text = relay_text.get_string(&room.doc().transact());
        assert_eq!(relay_text, text.get_string(&client.transact()));
        assert!(relay_text.contains("ab") && relay_text.contains("relay"));
    }

    #[test]
    fn a_live_edit_before_the_handshake_does_not_acknowledge_older_offline_edits() {
        // Regression: seeded simulation (tests/sync_sim.rs) found a barrier after a live edit
        // acknowledging an offline edit that was still waiting for the relay's step 1.
        let mut room = Room::new();
        let client = Doc::with_client_id(1);
        let text = client.get_or_insert_text("t");
        text.insert(&mut client.transact_mut(), 0, "offline"); // seq 0
        let (mut session, step1) = SyncSession::start(&client);
        text.insert(&mut client.transact_mut(), 7, "!"); // seq 1, made online
        let live = client
            .transact()
            .encode_diff_v1(&StateVector::from_iter([(yrs::block::ClientID::new(1), 7)]));
        let barrier = session.barrier(&client, 1);
        // The relay handles step 1, the live update and the barrier before the client has
        // read its greeting.
        let mut acked = None;
        for message in [step1, Message::Sync(SyncMessage::Update(live)), barrier] {
            for reply in relay_handle(&mut room, message) {
                let (actions, _) = session.receive(&client, reply, Some(1));
                acked = actions.acked.or(acked);
            }
        }
        assert_eq!(acked, None, "the relay lacks the offline edit");
        // Now the greeting: the answer carries the offline edit, and its barrier acks both.
        let greeting = Message::decode(&room.greeting()[0], &Default::default()).unwrap();
        let (_, answer) = session.receive(&client, greeting, Some(1));
        for message in answer {
            for reply in relay_handle(&mut room, message) {
                let (actions, _) = session.receive(&client, reply, Some(1));
                acked = actions.acked.or(acked);
            }
        }
        assert_eq!(acked, Some(1));
        let relay_text = room.doc().get_or_insert_text("t");
        assert_eq!(relay_text.get_string(&room.doc().transact()), "offline!");
    }

    #[test]
    fn a_step2_without_a_barrier_acknowledges_nothing() {
        let client = Doc::new();
        let mut session = SyncSession::default();
        let (actions, send) = session.receive(
            &client,
            Message::Sync(SyncMessage::Step2(vec![0, 0])),
            Some(5),
        );
        assert_eq!(actions.acked, None);
        assert!(!actions.synced);
        assert!(send.is_empty());
    }

    #[test]
    fn an_undecodable_state_vector_is_not_answered() {
        let client = Doc::new();
        let mut session = SyncSession::default();
        let (_, send) =
            session.receive(&client, Message::Sync(SyncMessage::Step1(vec![0xff])), None);
        assert!(send.is_empty());
    }

    #[test]
    fn a_connecting_session_against_a_serving_peer_syncs_both_ways_and_settles() {
        let near = Doc::with_client_id(1);
        near.get_or_insert_text("t")
            .insert(&mut near.transact_mut(), 0, "near ");
        let far = Doc::with_client_id(2);
        far.get_or_insert_text("t")
            .insert(&mut far.transact_mut(), 0, "far ");
        let (mut session, step1) = SyncSession::start(&near);
        // The serving side greets with its step 1, as the relay does.
        let mut to_far = vec![step1];
        let mut to_near = vec![Message::Sync(SyncMessage::Step1(far.state_vector()))];
        let mut synced = false;
        let mut rounds = 0;
        while !to_far.is_empty() || !to_near.is_empty() {
            rounds += 1;
            assert!(rounds < 10, "the exchange must settle, not ping-pong");
            for message in std::mem::take(&mut to_far) {
                let (actions, replies) = serve(&far, message);
                actions.apply.iter().for_each(|u| apply(&far, u));
                to_near.extend(replies);
            }
            for message in std::mem::take(&mut to_near) {
                let (actions, replies) = session.receive(&near, message, None);
                actions.apply.iter().for_each(|u| apply(&near, u));
                synced |= actions.synced;
                assert_eq!(actions.acked, None, "nothing is acknowledged without a seq");
                to_far.extend(replies);
            }
        }
        assert!(synced);
        let read = |d: &Doc| d.get_or_insert_text("t").get_string(&d.transact());
        assert_eq!(read(&near), read(&far));
        assert!(read(&near).contains("near") && read(&near).contains("far"));
    }

    #[test]
    fn a_serving_peer_ignores_a_claimed_denial_and_bad_state_vectors() {
        let doc = Doc::new();
        let denial = Message::Auth(aetherflow_crdt::protocol::AuthMessage::PermissionDenied {
            reason: "no".into(),
        });
        let (actions, send) = serve(&doc, denial);
        assert_eq!(actions, Actions::default());
        assert!(send.is_empty());
        let (_, send) = serve(&doc, Message::Sync(SyncMessage::Step1(vec![0xff])));
        assert!(send.is_empty());
    }
}
