//! Unit and property tests of [`Room`].
#![allow(clippy::unwrap_used)]

use super::*;
use crate::protocol::{Limits, Message, SyncMessage};
use proptest::prelude::*;
use yrs::{GetString, Text, WriteTxn};

const A: ConnId = ConnId(1);
const B: ConnId = ConnId(2);

fn text_of(doc: &Doc) -> String {
    let text = doc.get_or_insert_text("t");
    text.get_string(&doc.transact())
}

/// Runs `f` on the text of `doc` in one transaction; returns that transaction's v1 update.
fn edit(doc: &Doc, f: impl FnOnce(&yrs::TextRef, &mut TransactionMut<'_>)) -> Vec<u8> {
    let mut txn = doc.transact_mut();
    let text = txn.get_or_insert_text("t");
    f(&text, &mut txn);
    txn.encode_update_v1()
}

fn insert(doc: &Doc, index: u32, s: &str) -> Vec<u8> {
    edit(doc, |t, txn| t.insert(txn, index, s))
}

fn apply(doc: &Doc, update: &[u8]) {
    doc.transact_mut()
        .apply_update(Update::decode_v1(update).unwrap())
        .unwrap();
}

fn decode(frame: &[u8]) -> Message {
    Message::decode(frame, &Limits::default()).unwrap()
}

#[test]
fn concurrent_edits_converge_in_any_order() {
    let d1 = Doc::with_client_id(1);
    let d2 = Doc::with_client_id(2);
    let u1 = insert(&d1, 0, "abc");
    let u2 = insert(&d2, 0, "xyz");
    apply(&d1, &u2);
    apply(&d2, &u1);
    assert_eq!(text_of(&d1), text_of(&d2));
    for order in [vec![&u1, &u2], vec![&u2, &u1, &u2], vec![&u1, &u1, &u2]] {
        let mut room = Room::new();
        for u in order {
            room.apply_updates(vec![(A, u.clone())]);
        }
        assert_eq!(text_of(room.doc()), text_of(&d1));
    }
}

#[test]
fn batch_broadcasts_one_merged_update_and_echoes_it() {
    let d1 = Doc::with_client_id(1);
    let d2 = Doc::with_client_id(2);
    let u1 = insert(&d1, 0, "abc");
    let u2 = insert(&d2, 0, "xyz");
    let mut room = Room::new();
    let batch = room.apply_updates(vec![(A, u1.clone()), (B, u2)]);
    assert_eq!(batch.accepted, 2);
    assert!(batch.rejected.is_empty());
    let entry = batch.log_entry.unwrap();
    assert_eq!(
        decode(&batch.broadcast.unwrap()),
        Message::Sync(SyncMessage::Update(entry.clone()))
    );
    let replay = Room::load(None, [entry.as_slice()]).unwrap();
    assert_eq!(text_of(replay.doc()), text_of(room.doc()));
    // A single accepted update is logged as is.
    let batch = Room::new().apply_updates(vec![(A, u1.clone())]);
    assert_eq!(batch.log_entry, Some(u1));
}

#[test]
fn invalid_update_is_rejected_while_valid_ones_apply() {
    let d1 = Doc::with_client_id(1);
    let u1 = insert(&d1, 0, "kept");
    let mut room = Room::new();
    let batch = room.apply_updates(vec![(B, vec![0xff, 0xff]), (A, u1.clone())]);
    assert_eq!(batch.accepted, 1);
    assert_eq!(batch.log_entry, Some(u1.clone()));
    assert_eq!(batch.broadcast, Some(encode_sync_update(&u1)));
    assert_eq!(batch.rejected.len(), 1);
    assert_eq!(batch.rejected[0].0, B);
    assert!(matches!(batch.rejected[0].1, RoomError::InvalidUpdate(_)));
    assert!(batch.rejected[0].1.reason().len() <= 120);
    assert!(
        !room.is_tainted(),
        "an undecodable update never touches the doc"
    );
    assert_eq!(text_of(room.doc()), "kept");
}

#[test]
fn five_byte_update_cannot_reserve_a_huge_client_table() {
    // 2^28 declared clients: yrs alone would initialise ~512 MiB of hash map control bytes.
    let mut room = Room::new();
    let batch = room.apply_updates(vec![(A, vec![0x80, 0x80, 0x80, 0x80, 0x01])]);
    assert!(matches!(batch.rejected[0].1, RoomError::InvalidUpdate(_)));
    assert!(!room.is_tainted());
}

#[test]
fn empty_batch_and_all_rejected_batch_broadcast_nothing() {
    let mut room = Room::new();
    let batch = room.apply_updates(Vec::new());
    assert!(batch.log_entry.is_none() && batch.broadcast.is_none() && batch.accepted == 0);
    let batch = room.apply_updates(vec![(A, Vec::new())]);
    assert!(batch.log_entry.is_none() && batch.broadcast.is_none());
    assert_eq!(batch.rejected.len(), 1);
}

/// A block whose parent is a string item, not a shared type: yrs refuses to integrate it.
fn update_with_non_type_parent() -> Vec<u8> {
    // clients: 1; blocks: 1; client 2, clock 0; info 4 (string, no origins); parent is an ID
    // (parent info 0) = (client 1, clock 0); string "x"; empty delete set.
    vec![1, 1, 2, 0, 4, 0, 1, 0, 1, b'x', 0]
}

#[test]
fn apply_failure_taints_the_room() {
    let d1 = Doc::with_client_id(1);
    let u1 = insert(&d1, 0, "abc");
    let mut room = Room::new();
    room.apply_updates(vec![(A, u1)]);
    let batch = room.apply_updates(vec![(B, update_with_non_type_parent())]);
    assert_eq!(batch.accepted, 0);
    assert_eq!(batch.rejected.len(), 1);
    assert!(
        matches!(batch.rejected[0].1, RoomError::ApplyFailed(_)),
        "{:?}",
        batch.rejected[0].1
    );
    assert!(room.is_tainted());
}

#[test]
fn answer_step1_brings_an_empty_doc_up_to_date() {
    let d1 = Doc::with_client_id(1);
    let mut room = Room::new();
    room.apply_updates(vec![(A, insert(&d1, 0, "hello"))]);
    let fresh = Doc::with_client_id(9);
    let sv = fresh.transact().state_vector().encode_v1();
    let Message::Sync(SyncMessage::Step2(diff)) = decode(&room.answer_step1(&sv).unwrap()) else {
        panic!("expected step 2");
    };
    apply(&fresh, &diff);
    assert_eq!(text_of(&fresh), "hello");
    // A peer that is already up to date gets nothing new.
    let sv = fresh.transact().state_vector().encode_v1();
    let Message::Sync(SyncMessage::Step2(diff)) = decode(&room.answer_step1(&sv).unwrap()) else {
        panic!("expected step 2");
    };
    apply(&fresh, &diff);
    assert_eq!(text_of(&fresh), "hello");
}

#[test]
fn answer_step1_rejects_bad_state_vectors() {
    let room = Room::new();
    for sv in [&[][..], &[0xff], &[0xff, 0xff, 0xff, 0xff, 0x0f], &[1, 1]] {
        assert!(
            matches!(room.answer_step1(sv), Err(RoomError::InvalidStateVector(_))),
            "{sv:?}"
        );
    }
}

#[test]
fn greeting_is_step1_then_awareness() {
    let mut room = Room::new();
    assert_eq!(room.greeting(), vec![vec![0, 0, 1, 0]]);
    assert_eq!(room.query_awareness(), None);
    let aw = [1, 5, 3, 3, b'"', b'a', b'"'];
    let out = room.apply_awareness(A, &aw).unwrap().unwrap();
    assert_eq!(decode(&out), Message::Awareness(aw.to_vec()));
    let greeting = room.greeting();
    assert_eq!(greeting.len(), 2);
    assert_eq!(
        decode(&greeting[0]),
        Message::Sync(SyncMessage::Step1(room.state_vector()))
    );
    assert_eq!(decode(&greeting[1]), Message::Awareness(aw.to_vec()));
    assert_eq!(room.query_awareness(), Some(greeting[1].clone()));
    let gone = room.disconnect(A).unwrap();
    assert_eq!(
        decode(&gone),
        Message::Awareness(vec![1, 5, 4, 4, b'n', b'u', b'l', b'l'])
    );
    assert_eq!(room.greeting().len(), 1);
    assert!(matches!(
        room.apply_awareness(A, &[1, 5, 1, 1, b'{']),
        Err(RoomError::Awareness(_))
    ));
}

#[test]
fn snapshot_and_load_round_trip() {
    let d1 = Doc::with_client_id(1);
    let u1 = insert(&d1, 0, "hello");
    let u2 = edit(&d1, |t, txn| t.remove_range(txn, 0, 1));
    let mut room = Room::new();
    room.apply_updates(vec![(A, u1)]);
    let snapshot = room.snapshot();
    room.apply_updates(vec![(A, u2.clone())]);
    let loaded = Room::load(Some(&snapshot), [u2.as_slice()]).unwrap();
    assert_eq!(text_of(loaded.doc()), "ello");
    assert_eq!(loaded.state_vector(), room.state_vector());
    assert!(Room::load(Some(&[0xff]), []).is_err());
    assert!(matches!(
        Room::load(None, [&[0xff][..]]),
        Err(RoomError::InvalidLogEntry { index: 0, .. })
    ));
}

#[test]
fn snapshot_keeps_pending_updates() {
    let d1 = Doc::with_client_id(1);
    let first = insert(&d1, 0, "hello");
    let second = insert(&d1, 5, " world");
    let mut room = Room::new();
    // `second` depends on `first`, which has not arrived: yrs keeps it pending.
    let batch = room.apply_updates(vec![(A, second)]);
    assert_eq!(batch.accepted, 1);
    assert_eq!(text_of(room.doc()), "");
    let mut loaded = Room::load(Some(&room.snapshot()), []).unwrap();
    loaded.apply_updates(vec![(A, first.clone())]);
    assert_eq!(text_of(loaded.doc()), "hello world");
    // The step 2 answer carries the pending update too, like Yjs' encodeStateAsUpdate.
    let fresh = Doc::with_client_id(9);
    let Message::Sync(SyncMessage::Step2(diff)) = decode(&room.answer_step1(&[0]).unwrap()) else {
        panic!("expected step 2");
    };
    apply(&fresh, &diff);
    apply(&fresh, &first);
    assert_eq!(text_of(&fresh), "hello world");
}

/// xorshift64*: a tiny seeded generator so delivery orders are reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// `items` shuffled, with about a quarter of them delivered twice.
    fn delivery<T: Clone>(&mut self, items: &[T]) -> Vec<T> {
        let mut out: Vec<T> = items.to_vec();
        for _ in 0..items.len() / 4 + 1 {
            if !items.is_empty() {
                out.push(items[self.below(items.len())].clone());
            }
        }
        for i in (1..out.len()).rev() {
            out.swap(i, self.below(i + 1));
        }
        out
    }
}

/// One edit: insert `text` at `pos` (mod length + 1), or delete `len` chars from `pos`.
#[derive(Debug, Clone)]
enum Op {
    Insert { pos: u32, text: String },
    Delete { pos: u32, len: u32 },
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<u32>(), "[a-z]{1,4}").prop_map(|(pos, text)| Op::Insert { pos, text }),
        (any::<u32>(), 1u32..4).prop_map(|(pos, len)| Op::Delete { pos, len }),
    ]
}

fn run_op(doc: &Doc, op: &Op) -> Vec<u8> {
    edit(doc, |t, txn| {
        let len = t.len(txn);
        match op {
            Op::Insert { pos, text } => t.insert(txn, pos % (len + 1), text),
            Op::Delete { pos, len: n } if len > 0 => {
                let at = pos % len;
                t.remove_range(txn, at, (*n).min(len - at));
            }
            Op::Delete { .. } => {}
        }
    })
}

#[test]
fn empty_handshake_updates_are_neither_logged_nor_broadcast() {
    let mut room = Room::new();
    let batch = room.apply_updates(vec![(ConnId(1), vec![0, 0]), (ConnId(2), vec![0, 0])]);
    assert!(batch.rejected.is_empty());
    assert_eq!(batch.accepted, 0);
    assert!(batch.log_entry.is_none());
    assert!(batch.broadcast.is_none());
}

proptest! {
    /// Three replicas edit concurrently; every replica and the room receive all updates in a
    /// seeded random order with duplicates, in random batches; all end with the same text.
    #[test]
    fn replicas_and_room_converge(
        ops in proptest::collection::vec(proptest::collection::vec(arb_op(), 0..6), 3),
        seed in 1u64..,
    ) {
        let mut rng = Rng(seed);
        let replicas: Vec<Doc> = (1..=3).map(Doc::with_client_id).collect();
        let mut updates: Vec<(usize, Vec<u8>)> = Vec::new();
        for (i, (doc, ops)) in replicas.iter().zip(&ops).enumerate() {
            updates.extend(ops.iter().map(|op| (i, run_op(doc, op))));
        }
        let mut room = Room::new();
        let mut pending = rng.delivery(&updates);
        while !pending.is_empty() {
            let take = 1 + rng.below(pending.len());
            let batch = pending.drain(..take).map(|(i, u)| (ConnId(i as u64), u)).collect();
            let result = room.apply_updates(batch);
            prop_assert!(result.rejected.is_empty(), "seed {}", seed);
        }
        for (i, doc) in replicas.iter().enumerate() {
            for (from, u) in rng.delivery(&updates) {
                if from != i {
                    apply(doc, &u);
                }
            }
        }
        let expected = text_of(&replicas[0]);
        for doc in &replicas[1..] {
            prop_assert_eq!(&text_of(doc), &expected, "seed {}", seed);
        }
        prop_assert_eq!(&text_of(room.doc()), &expected, "seed {}", seed);
        let reloaded = Room::load(Some(&room.snapshot()), []).unwrap();
        prop_assert_eq!(&text_of(reloaded.doc()), &expected, "seed {}", seed);
    }

    /// Arbitrary bytes never panic out of the room, and the room stays usable.
    #[test]
    fn arbitrary_update_bytes_never_panic(
        batch in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..96), 1..4),
    ) {
        let mut room = Room::new();
        let batch = batch.into_iter().map(|b| (A, b)).collect();
        let result = room.apply_updates(batch);
        prop_assert!(result.accepted + result.rejected.len() >= 1);
        let _ = room.snapshot();
        let _ = room.answer_step1(&[0]);
    }

    /// Valid updates with random byte flips, insertions and truncations never panic out of the
    /// room, whatever it already holds.
    #[test]
    fn mutated_updates_never_panic(
        ops in proptest::collection::vec(arb_op(), 1..6),
        mutations in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let doc = Doc::with_client_id(5);
        let updates: Vec<Vec<u8>> = ops.iter().map(|op| run_op(&doc, op)).collect();
        let mut room = Room::new();
        room.apply_updates(vec![(A, updates[0].clone())]);
        let mut bytes = updates.last().cloned().unwrap_or_default();
        for (at, value, kind) in mutations {
            let at = at % (bytes.len() + 1);
            match kind {
                0 if at < bytes.len() => bytes[at] = value,
                1 => bytes.insert(at, value),
                _ => bytes.truncate(at),
            }
        }
        let _ = room.apply_updates(vec![(B, bytes)]);
        let _ = room.snapshot();
        let _ = room.answer_step1(&room.state_vector());
    }

    /// Arbitrary state vectors never panic.
    #[test]
    fn arbitrary_state_vectors_never_panic(sv in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = Room::new().answer_step1(&sv);
    }
}

#[test]
fn an_echo_of_a_known_update_is_neither_logged_nor_broadcast() {
    let d1 = Doc::with_client_id(1);
    let u1 = insert(&d1, 0, "hello");
    let delete = edit(&d1, |t, txn| t.remove_range(txn, 0, 2));
    let mut room = Room::new();
    room.apply_updates(vec![(A, u1.clone()), (A, delete.clone())]);
    // pycrdt's provider sends back every update it applies; a joiner may send the whole doc.
    let whole = room.snapshot();
    for echo in [u1, delete, whole] {
        let batch = room.apply_updates(vec![(B, echo)]);
        assert!(batch.rejected.is_empty());
        assert_eq!((batch.accepted, batch.redundant), (1, 1));
        assert!(batch.log_entry.is_none() && batch.broadcast.is_none());
    }
    assert_eq!(text_of(room.doc()), "llo");
}

#[test]
fn a_batch_with_echoes_logs_and_broadcasts_only_what_is_new() {
    let d1 = Doc::with_client_id(1);
    let d2 = Doc::with_client_id(2);
    let known = insert(&d1, 0, &"x".repeat(4096));
    let fresh = insert(&d2, 0, "new");
    let mut room = Room::new();
    room.apply_updates(vec![(A, known.clone())]);
    let batch = room.apply_updates(vec![(A, known.clone()), (B, fresh.clone()), (A, known)]);
    assert_eq!((batch.accepted, batch.redundant), (3, 0));
    let entry = batch.log_entry.unwrap();
    assert!(
        entry.len() < 100,
        "the log entry carries the 4 KiB echo: {} bytes",
        entry.len()
    );
    let fresh_only = Room::load(None, [entry.as_slice()]).unwrap();
    assert_eq!(text_of(fresh_only.doc()), "new");
}

#[test]
fn a_partly_new_update_is_logged_whole_and_a_pending_one_is_not_an_echo() {
    let d1 = Doc::with_client_id(1);
    let first = insert(&d1, 0, "ab");
    let second = insert(&d1, 2, "cd");
    let mut room = Room::new();
    // `second` depends on `first`: held pending, which is new to the room.
    let batch = room.apply_updates(vec![(A, second.clone())]);
    assert_eq!(batch.redundant, 0);
    assert_eq!(batch.log_entry, Some(second));
    let batch = room.apply_updates(vec![(A, first)]);
    assert_eq!(batch.redundant, 0);
    assert_eq!(text_of(room.doc()), "abcd");
    // A replica's whole state: "abcd" is known, "!" is new.
    insert(&d1, 4, "!");
    let whole = d1
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let batch = room.apply_updates(vec![(B, whole.clone())]);
    assert_eq!(batch.redundant, 0);
    assert_eq!(
        batch.log_entry,
        Some(whole),
        "a single update is logged whole"
    );
    assert_eq!(text_of(room.doc()), "abcd!");
}

/// One update setting `entries` keys of map `m`, from client `client`.
fn map_entries(client: u64, entries: u32) -> Vec<u8> {
    use yrs::Map;
    let doc = Doc::with_client_id(client);
    let map = doc.get_or_insert_map("m");
    let mut txn = doc.transact_mut();
    for i in 0..entries {
        map.insert(&mut txn, format!("k{i}"), i64::from(i));
    }
    txn.encode_update_v1()
}

fn too_large(batch: &UpdateBatch) -> Option<&SizeLimit> {
    batch.rejected.iter().find_map(|(_, e)| match e {
        RoomError::TooLarge(limit) => Some(limit),
        _ => None,
    })
}

#[test]
fn an_update_over_the_per_update_item_limit_is_refused_before_yrs_and_leaves_the_room_clean() {
    let mut room = Room::new();
    room.set_limits(DocLimits {
        max_update_items: 100,
        ..DocLimits::default()
    });
    let batch = room.apply_updates(vec![(A, map_entries(1, 101))]);
    assert_eq!(
        too_large(&batch),
        Some(&SizeLimit::UpdateItems {
            items: 101,
            limit: 100
        })
    );
    assert!(batch.broadcast.is_none() && batch.log_entry.is_none());
    assert!(!room.is_tainted());
    assert_eq!(room.size(), UpdateSize::default());
    let map = room.doc().get_or_insert_map("m");
    assert_eq!(yrs::Map::len(&map, &room.doc().transact()), 0);
    // One within the limit goes through.
    let batch = room.apply_updates(vec![(B, map_entries(2, 100))]);
    assert!(batch.rejected.is_empty() && batch.broadcast.is_some());
    assert_eq!(room.size().items, 100);
}

#[test]
fn a_document_refuses_updates_past_its_item_and_byte_limits_and_keeps_what_it_has() {
    let mut room = Room::new();
    room.set_limits(DocLimits {
        max_doc_items: 150,
        ..DocLimits::default()
    });
    assert!(
        room.apply_updates(vec![(A, map_entries(1, 100))])
            .rejected
            .is_empty()
    );
    let batch = room.apply_updates(vec![(B, map_entries(2, 60))]);
    assert_eq!(
        too_large(&batch),
        Some(&SizeLimit::DocItems {
            items: 160,
            limit: 150
        })
    );
    assert!(!room.is_tainted());
    assert!(
        room.apply_updates(vec![(B, map_entries(3, 50))])
            .rejected
            .is_empty()
    );

    let update = map_entries(1, 10);
    let bytes = measure_update_v1(&update).unwrap().content_bytes;
    let mut room = Room::new();
    room.set_limits(DocLimits {
        max_doc_bytes: bytes * 2 - 1,
        ..DocLimits::default()
    });
    assert!(room.apply_updates(vec![(A, update)]).rejected.is_empty());
    let batch = room.apply_updates(vec![(B, map_entries(2, 10))]);
    assert!(
        matches!(too_large(&batch), Some(SizeLimit::DocBytes { .. })),
        "{batch:?}"
    );
    // A reload measures what is stored, and holds later updates to the same limits.
    let snapshot = room.snapshot();
    let loaded = Room::load(Some(&snapshot), []).unwrap();
    assert_eq!(loaded.size().items, 10);
}

#[test]
fn typing_one_character_at_a_time_is_not_refused_for_items_yrs_has_merged() {
    let doc = Doc::with_client_id(1);
    let mut room = Room::new();
    room.set_limits(DocLimits {
        max_doc_items: 5,
        ..DocLimits::default()
    });
    for i in 0..50 {
        let update = insert(&doc, i, "x");
        let batch = room.apply_updates(vec![(A, update)]);
        assert!(batch.rejected.is_empty(), "keystroke {i}: {batch:?}");
    }
    assert_eq!(text_of(room.doc()), "x".repeat(50));
    assert!(room.size().items <= 5, "{:?}", room.size());
}
