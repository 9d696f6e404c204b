//! Seeded simulation of the SDK's sync session against the relay's real [`Room`]: clients
//! edit, disconnect (losing whatever was in flight), reconnect and edit offline in random
//! order. Checks, at every acknowledgement, that the room really holds the acknowledged
//! update, and at the end that everyone converged with nothing pending. Prints the seed on
//! failure.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::{BTreeMap, VecDeque};

use aetherflow_client::sync::SyncSession;
use aetherflow_crdt::protocol::{Limits, Message, SyncMessage};
use aetherflow_crdt::{ConnId, Room};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

const CLIENTS: usize = 3;

struct SimClient {
    doc: Doc,
    session: Option<SyncSession>,
    to_relay: VecDeque<Message>,
    to_client: VecDeque<Message>,
    pending: BTreeMap<u64, Vec<u8>>,
    next_seq: u64,
}

fn decode(frame: &[u8]) -> Message {
    Message::decode(frame, &Limits::default()).unwrap()
}

fn text(doc: &Doc) -> String {
    doc.get_or_insert_text("t").get_string(&doc.transact())
}

fn apply(doc: &Doc, update: &[u8]) {
    doc.transact_mut()
        .apply_update(Update::decode_v1(update).unwrap())
        .unwrap();
}

/// Whether applying `update` to the room's state would change nothing.
fn room_holds(room: &Room, update: &[u8]) -> bool {
    let copy = Doc::new();
    apply(&copy, &room.snapshot());
    // One statement per transaction: a read transaction alive in the same statement would
    // block `text`'s write transaction.
    let sv = copy.transact().state_vector();
    let before = text(&copy);
    apply(&copy, update);
    let sv_after = copy.transact().state_vector();
    sv_after == sv && text(&copy) == before
}

struct Sim {
    room: Room,
    clients: Vec<SimClient>,
    seed: u64,
}

impl Sim {
    fn edit(&mut self, i: usize, rng: &mut ChaCha8Rng) {
        let c = &mut self.clients[i];
        let body = c.doc.get_or_insert_text("t");
        let update = {
            let mut txn = c.doc.transact_mut();
            let len = body.len(&txn);
            if len > 0 && rng.random_bool(0.3) {
                let at = rng.random_range(0..len);
                body.remove_range(&mut txn, at, 1);
            } else {
                let at = rng.random_range(0..=len);
                body.insert(&mut txn, at, &char::from(b'a' + i as u8).to_string());
            }
            txn.encode_update_v1()
        };
        let seq = c.next_seq;
        c.next_seq += 1;
        c.pending.insert(seq, update.clone());
        if let Some(session) = &mut c.session {
            c.to_relay
                .push_back(Message::Sync(SyncMessage::Update(update)));
            c.to_relay.push_back(session.barrier(&c.doc, seq));
        }
    }

    fn connect(&mut self, i: usize) {
        let c = &mut self.clients[i];
        let (session, step1) = SyncSession::start(&c.doc);
        c.session = Some(session);
        c.to_relay.push_back(step1);
        c.to_client
            .extend(self.room.greeting().iter().map(|f| decode(f)));
    }

    fn disconnect(&mut self, i: usize) {
        let c = &mut self.clients[i];
        c.session = None;
        c.to_relay.clear();
        c.to_client.clear();
    }

    /// The relay handles client `i`'s next message, in order, as the room task does.
    fn deliver_to_relay(&mut self, i: usize) {
        let Some(message) = self.clients[i].to_relay.pop_front() else {
            return;
        };
        match message {
            Message::Sync(SyncMessage::Update(u) | SyncMessage::Step2(u)) => {
                let batch = self.room.apply_updates(vec![(ConnId(i as u64), u)]);
                assert!(batch.rejected.is_empty(), "seed {}", self.seed);
                if let Some(frame) = batch.broadcast {
                    for c in self.clients.iter_mut().filter(|c| c.session.is_some()) {
                        c.to_client.push_back(decode(&frame));
                    }
                }
            }
            Message::Sync(SyncMessage::Step1(sv)) => {
                let step2 = self.room.answer_step1(&sv).unwrap();
                self.clients[i].to_client.push_back(decode(&step2));
            }
            _ => {}
        }
    }

    /// Client `i` handles the relay's next message.
    fn deliver_to_client(&mut self, i: usize) {
        let seed = self.seed;
        let c = &mut self.clients[i];
        let (Some(session), Some(message)) = (&mut c.session, c.to_client.pop_front()) else {
            return;
        };
        let last_seq = c.next_seq.checked_sub(1);
        let (actions, replies) = session.receive(&c.doc, message, last_seq);
        for update in &actions.apply {
            apply(&c.doc, update);
        }
        if let Some(upto) = actions.acked {
            for (seq, update) in c.pending.range(..=upto) {
                assert!(
                    room_holds(&self.room, update),
                    "seed {seed}: client {i} update {seq} acknowledged but not in the room"
                );
            }
            c.pending.retain(|&seq, _| seq > upto);
        }
        c.to_relay.extend(replies);
    }

    fn settle(&mut self) {
        let mut rounds = 0;
        for i in 0..CLIENTS {
            if self.clients[i].session.is_none() {
                self.connect(i);
            }
        }
        while self
            .clients
            .iter()
            .any(|c| !c.to_relay.is_empty() || !c.to_client.is_empty())
        {
            rounds += 1;
            assert!(rounds < 10_000, "seed {}: messages never stop", self.seed);
            for i in 0..CLIENTS {
                self.deliver_to_relay(i);
                self.deliver_to_client(i);
            }
        }
    }
}

fn run(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let clients = (0..CLIENTS)
        .map(|i| SimClient {
            doc: Doc::with_client_id(i as u64 + 1),
            session: None,
            to_relay: VecDeque::new(),
            to_client: VecDeque::new(),
            pending: BTreeMap::new(),
            next_seq: 0,
        })
        .collect();
    let mut sim = Sim {
        room: Room::new(),
        clients,
        seed,
    };
    for _ in 0..400 {
        let i = rng.random_range(0..CLIENTS);
        let op = rng.random_range(0..100);
        match op {
            0..30 => sim.edit(i, &mut rng),
            30..60 => sim.deliver_to_relay(i),
            60..90 => sim.deliver_to_client(i),
            90..95 => sim.disconnect(i),
            _ => {
                if sim.clients[i].session.is_none() {
                    sim.connect(i);
                }
            }
        }
    }
    sim.settle();
    let expected = text(sim.room.doc());
    for (i, c) in sim.clients.iter().enumerate() {
        assert_eq!(text(&c.doc), expected, "seed {seed}: client {i} diverged");
        assert!(
            c.pending.is_empty(),
            "seed {seed}: client {i} still has pending updates"
        );
        let full = c
            .doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        assert!(
            room_holds(&sim.room, &full),
            "seed {seed}: client {i} has more than the room"
        );
    }
}

#[test]
fn random_edits_disconnects_and_reconnects_converge_with_every_ack_truthful() {
    for seed in 0..60 {
        run(seed);
    }
}
