//! Unit and property tests of [`check_update_v1`].
#![allow(clippy::unwrap_used)]

use super::*;
use crate::{ConnId, Room, RoomError};
use proptest::collection::{hash_map, vec};
use proptest::prelude::*;
use std::sync::Arc;
use yrs::types::Attrs;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{
    Any, Array, ClientID, Doc, GetString, Map, Number, Options, ReadTxn, StateVector, Text,
    Transact, TransactionMut, Update, WriteTxn, Xml, XmlElementPrelim, XmlFragment, XmlTextPrelim,
};

/// Runs `f` in one transaction of `doc`; returns that transaction's v1 update.
fn commit(doc: &Doc, f: impl FnOnce(&mut TransactionMut<'_>)) -> Vec<u8> {
    let mut txn = doc.transact_mut();
    f(&mut txn);
    txn.encode_update_v1()
}

fn full_state(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

fn int(n: i64) -> Any {
    Any::Number(Number::Int(n))
}

fn array(items: Vec<Any>) -> Any {
    Any::Array(items.into())
}

fn map(entries: Vec<(&str, Any)>) -> Any {
    let entries = entries.into_iter().map(|(k, v)| (k.to_owned(), v));
    Any::Map(Arc::new(entries.collect()))
}

fn attrs(entries: Vec<(&str, Any)>) -> Attrs {
    entries
        .into_iter()
        .map(|(k, v)| (Arc::from(k), v))
        .collect()
}

/// A map of arrays of maps holding every kind of scalar.
fn nested_value() -> Any {
    let leaf = map(vec![
        ("n", int(-42)),
        ("big", int(1 << 40)),
        ("huge", int(i64::MAX - 1)),
        ("f", Any::Number(Number::Float(1.5))),
        ("pi", Any::Number(Number::Float(std::f64::consts::PI))),
        ("t", Any::Bool(true)),
        ("no", Any::Bool(false)),
        ("null", Any::Null),
        ("undef", Any::Undefined),
        ("s", Any::String("héllo ✓".into())),
        ("bin", Any::Buffer(vec![0u8, 1, 2, 255].into())),
    ]);
    map(vec![(
        "rows",
        array(vec![
            leaf.clone(),
            array(vec![leaf, array(vec![])]),
            map(vec![]),
        ]),
    )])
}

/// One update per transaction of a document that uses every content type yrs produces.
fn real_updates(doc: &Doc) -> Vec<Vec<u8>> {
    let mut updates = Vec::new();
    updates.push(commit(doc, |txn| {
        let text = txn.get_or_insert_text("text");
        text.insert(txn, 0, "hello wörld 🎉");
    }));
    updates.push(commit(doc, |txn| {
        let text = txn.get_or_insert_text("text");
        text.remove_range(txn, 2, 4);
        text.insert_with_attributes(txn, 0, "bold ", attrs(vec![("bold", Any::Bool(true))]));
        let link = map(vec![("href", Any::String("https://x.test".into()))]);
        text.format(txn, 1, 3, attrs(vec![("link", link), ("size", int(3))]));
        text.insert_embed(txn, 2, map(vec![("image", array(vec![int(1), Any::Null]))]));
    }));
    updates.push(commit(doc, |txn| {
        let m = txn.get_or_insert_map("map");
        m.insert(txn, "nested", nested_value());
        m.insert(txn, "plain", "string value");
        m.insert(txn, "gone", 1.0);
    }));
    updates.push(commit(doc, |txn| {
        let m = txn.get_or_insert_map("map");
        m.remove(txn, "gone");
        let mut options = Options::with_client_id(ClientID::new(9));
        options.auto_load = true;
        options.collection_id = Some("collection".into());
        m.insert(txn, "subdoc", Doc::with_options(options));
        m.insert(txn, "plain-subdoc", Doc::with_client_id(10));
    }));
    updates.push(commit(doc, |txn| {
        let a = txn.get_or_insert_array("array");
        a.insert_range(txn, 0, [int(1), int(2), int(3), nested_value()]);
        a.push_back(txn, Any::Buffer(vec![9u8; 40].into()));
    }));
    updates.push(commit(doc, |txn| {
        let a = txn.get_or_insert_array("array");
        a.remove_range(txn, 1, 2);
    }));
    updates.push(commit(doc, |txn| {
        let xml = txn.get_or_insert_xml_fragment("xml");
        let p = xml.push_back(txn, XmlElementPrelim::empty("p"));
        p.insert_attribute(txn, "class", "note");
        let text = p.push_back(txn, XmlTextPrelim::new("some text"));
        text.insert_attribute(txn, "lang", "en");
        text.format(txn, 0, 4, attrs(vec![("em", Any::Bool(true))]));
        let inner = p.push_back(txn, XmlElementPrelim::empty("span"));
        inner.insert_attribute(txn, "data-x", "1");
    }));
    updates.push(commit(doc, |txn| {
        let xml = txn.get_or_insert_xml_fragment("xml");
        xml.remove_range(txn, 0, 1);
    }));
    updates
}

/// Asserts `update` passes the check and that a fresh room applies it without complaint.
fn assert_accepted(update: &[u8]) {
    assert_eq!(check_update_v1(update), Ok(()));
    let mut room = Room::new();
    let batch = room.apply_updates(vec![(ConnId(1), update.to_vec())]);
    assert!(batch.rejected.is_empty(), "{:?}", batch.rejected);
    assert!(!room.is_tainted());
}

/// Asserts a room refuses `update` up front and stays clean.
fn assert_refused(update: Vec<u8>) {
    let mut room = Room::new();
    let batch = room.apply_updates(vec![(ConnId(1), update)]);
    assert_eq!(batch.accepted, 0);
    assert!(matches!(
        batch.rejected.as_slice(),
        [(_, RoomError::InvalidUpdate(_))]
    ));
    assert!(!room.is_tainted());
}

#[test]
fn updates_of_every_content_type_pass_and_apply() {
    let doc = Doc::with_client_id(1);
    let updates = real_updates(&doc);
    let mut room = Room::new();
    for update in &updates {
        assert_accepted(update);
        let batch = room.apply_updates(vec![(ConnId(1), update.clone())]);
        assert!(batch.rejected.is_empty(), "{:?}", batch.rejected);
    }
    assert!(!room.is_tainted());
    assert_eq!(
        room.state_vector(),
        doc.transact().state_vector().encode_v1()
    );
    let text = room.doc().get_or_insert_text("text");
    let expected = doc.get_or_insert_text("text").get_string(&doc.transact());
    assert_eq!(text.get_string(&room.doc().transact()), expected);

    assert_accepted(&full_state(&doc));
    let merged = yrs::merge_updates_v1(updates.iter().map(Vec::as_slice)).unwrap();
    assert_accepted(&merged);
    assert_accepted(&room.snapshot());
}

#[test]
fn merged_updates_of_concurrent_clients_pass() {
    let docs: Vec<Doc> = (1..=4).map(Doc::with_client_id).collect();
    let mut updates = Vec::new();
    for doc in &docs {
        updates.extend(real_updates(doc));
    }
    let merged = yrs::merge_updates_v1(updates.iter().map(Vec::as_slice)).unwrap();
    assert_accepted(&merged);
    let mut room = Room::new();
    let batch = room.apply_updates(updates.into_iter().map(|u| (ConnId(1), u)).collect());
    assert!(batch.rejected.is_empty(), "{:?}", batch.rejected);
    assert_accepted(batch.log_entry.as_deref().unwrap());
}

/// `[1, 1, 1, 0]` one client with one block at clock 0; `8` an `Any` item with no origins;
/// `1, 1, b't'` parented to the root type "t"; `1` holding one value.
const ANY_ITEM_HEADER: [u8; 9] = [1, 1, 1, 0, 8, 1, 1, b't', 1];

/// An update whose single `Any` value is `depth` nested one-element arrays around a null.
fn nested_arrays(depth: usize) -> Vec<u8> {
    let mut bytes = ANY_ITEM_HEADER.to_vec();
    bytes.extend([117, 1].repeat(depth));
    bytes.extend([126, 0]);
    bytes
}

#[test]
fn deeply_nested_any_is_refused_before_it_overflows_the_stack() {
    let hostile = nested_arrays(100_000);
    assert_eq!(
        check_update_v1(&hostile),
        Err(UpdateCheckError::TooDeep { limit: MAX_NESTING })
    );
    assert_refused(hostile);
}

#[test]
fn nesting_limit_is_exactly_max_nesting() {
    assert_accepted(&nested_arrays(MAX_NESTING));
    assert_eq!(
        check_update_v1(&nested_arrays(MAX_NESTING + 1)),
        Err(UpdateCheckError::TooDeep { limit: MAX_NESTING })
    );
}

#[test]
fn maps_declaring_huge_sizes_are_refused_before_reserving_them() {
    // Each level declares 2^27 entries; its first key "a" holds the next level.
    let mut hostile = ANY_ITEM_HEADER.to_vec();
    for _ in 0..13 {
        hostile.extend([118, 0x80, 0x80, 0x80, 0x40, 1, b'a']);
    }
    hostile.extend([126, 0]);
    assert!(matches!(
        check_update_v1(&hostile),
        Err(UpdateCheckError::CountExceedsInput {
            declared: 0x0800_0000,
            ..
        })
    ));
    assert_refused(hostile);
}

#[test]
fn declared_counts_beyond_the_input_are_refused() {
    let cases: Vec<Vec<u8>> = vec![
        // 2^28 clients.
        vec![0x80, 0x80, 0x80, 0x80, 0x01],
        // One client with 2^32 - 1 blocks.
        vec![1, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 0, 0, 0],
        // An `Any` item declaring 2^28 values.
        [
            &ANY_ITEM_HEADER[..8],
            &[0x80, 0x80, 0x80, 0x80, 0x01, 126, 0],
        ]
        .concat(),
        // An `Any` array declaring 2^28 elements.
        [
            &ANY_ITEM_HEADER[..],
            &[117, 0x80, 0x80, 0x80, 0x80, 0x01, 126, 0],
        ]
        .concat(),
        // A delete set declaring 2^28 clients, then one declaring 2^28 ranges.
        vec![0, 0x80, 0x80, 0x80, 0x80, 0x01],
        vec![0, 1, 5, 0x80, 0x80, 0x80, 0x80, 0x01, 0, 1],
    ];
    for case in cases {
        assert!(
            matches!(
                check_update_v1(&case),
                Err(UpdateCheckError::CountExceedsInput { .. })
            ),
            "{case:?}: {:?}",
            check_update_v1(&case)
        );
        assert_refused(case);
    }
}

#[test]
fn ids_and_clocks_yrs_asserts_against_are_refused() {
    let too_big_client = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10]; // 2^53
    let cases: Vec<(Vec<u8>, UpdateCheckError)> = vec![
        (
            [&[1, 1][..], &too_big_client, &[0, 1, 1, 1, b't', 1, 0]].concat(),
            UpdateCheckError::ClientIdOutOfRange(1 << 53),
        ),
        (
            [&[0, 1][..], &too_big_client, &[1, 0, 1]].concat(),
            UpdateCheckError::ClientIdOutOfRange(1 << 53),
        ),
        (
            // A deleted item of 2 at clock u32::MAX.
            vec![1, 1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 1, 1, b't', 2, 0],
            UpdateCheckError::Overflow("block clock"),
        ),
        (
            // A delete range of 2 at clock u32::MAX.
            vec![0, 1, 1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f, 2],
            UpdateCheckError::Overflow("delete range"),
        ),
        (
            // A clock of 2^32.
            vec![1, 1, 1, 0x80, 0x80, 0x80, 0x80, 0x10, 0, 1, 0],
            UpdateCheckError::Overflow("clock"),
        ),
    ];
    for (case, expected) in cases {
        assert_eq!(check_update_v1(&case), Err(expected), "{case:?}");
        assert_refused(case);
    }
}

#[test]
fn malformed_contents_are_refused() {
    let item = |content: &[u8]| [&[1, 1, 1, 0][..], content, &[0]].concat();
    let deep_json = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let deep_embed = [&[5, 1, 1, b't', 200, 1][..], deep_json.as_bytes()].concat();
    let cases: Vec<(Vec<u8>, UpdateCheckError)> = vec![
        (
            item(&[11, 1, 1, b't']),
            UpdateCheckError::UnknownContent(11),
        ),
        (
            item(&[0x18, 1, 1, b't']),
            UpdateCheckError::UnknownContent(24),
        ),
        (
            item(&[7, 1, 1, b't', 8]),
            UpdateCheckError::UnknownTypeRef(8),
        ),
        (
            item(&[8, 1, 1, b't', 1, 115]),
            UpdateCheckError::UnknownAnyTag(115),
        ),
        (
            item(&[4, 1, 1, b't', 1, 0xff]),
            UpdateCheckError::InvalidUtf8,
        ),
        (item(&[0, 0]), UpdateCheckError::EmptyBlock),
        (item(&deep_embed), UpdateCheckError::TooDeep { limit: 64 }),
        (
            item(&[
                8, 1, 1, b't', 1, 125, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1,
            ]),
            UpdateCheckError::Overflow("integer value"),
        ),
        (item(&[4, 1, 1, b't', 5, b'a']), UpdateCheckError::Truncated),
    ];
    for (case, expected) in cases {
        assert_eq!(check_update_v1(&case), Err(expected), "{case:?}");
        assert_refused(case);
    }
}

#[test]
fn json_content_follows_yrs_one_extra_string() {
    // A JSON item (content ref 2) declaring 0 strings: yrs reads one anyway.
    let one = [1, 1, 1, 0, 2, 1, 1, b't', 0, 4, b'"', b'a', b'"', b' ', 0];
    assert_eq!(check_update_v1(&one), Ok(()));
    assert!(Update::decode_v1(&one).is_ok());
    // Declaring 1 string and holding one is short by one for yrs.
    let short = [1, 1, 1, 0, 2, 1, 1, b't', 1, 3, b'"', b'a', b'"', 0];
    assert_eq!(check_update_v1(&short), Err(UpdateCheckError::Truncated));
    assert!(Update::decode_v1(&short).is_err());
}

#[test]
fn bytes_after_the_delete_set_are_tolerated_like_yrs_does() {
    let doc = Doc::with_client_id(3);
    let mut update = commit(&doc, |txn| txn.get_or_insert_text("t").insert(txn, 0, "x"));
    update.extend([7, 7, 7]);
    assert!(Update::decode_v1(&update).is_ok());
    assert_accepted(&update);
}

#[test]
fn store_entries_are_checked_on_load() {
    let hostile = nested_arrays(100_000);
    assert!(matches!(
        Room::load(Some(&hostile), []),
        Err(RoomError::InvalidSnapshot(_))
    ));
    assert!(matches!(
        Room::load(None, [hostile.as_slice()]),
        Err(RoomError::InvalidLogEntry { index: 0, .. })
    ));
}

/// Any value, nested up to four levels.
fn arb_any() -> impl Strategy<Value = Any> {
    let leaf = prop_oneof![
        Just(Any::Null),
        Just(Any::Undefined),
        any::<bool>().prop_map(Any::Bool),
        any::<i64>().prop_map(int),
        any::<f64>().prop_map(|f| Any::Number(Number::Float(f))),
        ".{0,6}".prop_map(|s| Any::String(s.into())),
        vec(any::<u8>(), 0..6).prop_map(|b| Any::Buffer(b.into())),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(array),
            hash_map(".{0,4}", inner, 0..4).prop_map(|m| Any::Map(Arc::new(m))),
        ]
    })
}

/// Values that survive the JSON encoding v1 uses for embeds and formatting attributes.
fn arb_json() -> impl Strategy<Value = Any> {
    let leaf = prop_oneof![
        Just(Any::Null),
        any::<bool>().prop_map(Any::Bool),
        (-1_000_000i64..1_000_000).prop_map(int),
        "[a-z\"\\\\\\[{]{0,6}".prop_map(|s| Any::String(s.into())),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(array),
            hash_map("[a-z]{0,4}", inner, 0..4).prop_map(|m| Any::Map(Arc::new(m))),
        ]
    })
}

/// One random edit on a document's text "t", map "m" or array "a".
#[derive(Debug, Clone)]
enum Edit {
    Insert(u32, String),
    Delete(u32, u32),
    Format(u32, u32, String, Any),
    Embed(u32, Any),
    MapSet(String, Any),
    MapRemove(String),
    ArrayInsert(u32, Vec<Any>),
    ArrayRemove(u32, u32),
}

fn arb_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        // ASCII: the editors count text offsets in bytes, and yrs panics on an offset inside a
        // character.
        (any::<u32>(), "[a-z ]{1,5}").prop_map(|(i, s)| Edit::Insert(i, s)),
        (any::<u32>(), 1u32..5).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<u32>(), 1u32..5, "[a-z]{1,3}", arb_json())
            .prop_map(|(i, n, k, v)| Edit::Format(i, n, k, v)),
        (any::<u32>(), arb_json()).prop_map(|(i, v)| Edit::Embed(i, v)),
        ("[a-c]", arb_any()).prop_map(|(k, v)| Edit::MapSet(k, v)),
        "[a-c]".prop_map(Edit::MapRemove),
        (any::<u32>(), vec(arb_any(), 1..4)).prop_map(|(i, v)| Edit::ArrayInsert(i, v)),
        (any::<u32>(), 1u32..4).prop_map(|(i, n)| Edit::ArrayRemove(i, n)),
    ]
}

fn run_edit(doc: &Doc, edit: &Edit) -> Vec<u8> {
    commit(doc, |txn| {
        let text = txn.get_or_insert_text("t");
        let m = txn.get_or_insert_map("m");
        let a = txn.get_or_insert_array("a");
        let text_len = text.len(txn);
        let array_len = a.len(txn);
        match edit.clone() {
            Edit::Insert(i, s) => text.insert(txn, i % (text_len + 1), &s),
            Edit::Delete(i, n) if text_len > 0 => {
                let at = i % text_len;
                text.remove_range(txn, at, n.min(text_len - at));
            }
            Edit::Format(i, n, k, v) if text_len > 0 => {
                let at = i % text_len;
                text.format(txn, at, n.min(text_len - at), attrs(vec![(&k, v)]));
            }
            Edit::Embed(i, v) => {
                text.insert_embed(txn, i % (text_len + 1), v);
            }
            Edit::MapSet(k, v) => {
                m.insert(txn, k, v);
            }
            Edit::MapRemove(k) => {
                m.remove(txn, &k);
            }
            Edit::ArrayInsert(i, v) => a.insert_range(txn, i % (array_len + 1), v),
            Edit::ArrayRemove(i, n) if array_len > 0 => {
                let at = i % array_len;
                a.remove_range(txn, at, n.min(array_len - at));
            }
            Edit::Delete(..) | Edit::Format(..) | Edit::ArrayRemove(..) => {}
        }
    })
}

/// Flips, inserts or truncates bytes of `bytes` as `mutations` say.
fn mutate(mut bytes: Vec<u8>, mutations: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, value, kind) in mutations {
        let at = at % (bytes.len() + 1);
        match kind {
            0 if at < bytes.len() => bytes[at] = value,
            1 => bytes.insert(at, value),
            _ => bytes.truncate(at),
        }
    }
    bytes
}

proptest! {
    /// Updates of random edits by two clients always pass (no false rejections) and a room
    /// applies them all to the same state as the editors.
    #[test]
    fn random_edits_always_pass(
        edits in vec((0usize..2, arb_edit()), 1..12),
    ) {
        let docs = [Doc::with_client_id(1), Doc::with_client_id(2)];
        let mut room = Room::new();
        for (who, edit) in &edits {
            let update = run_edit(&docs[*who], edit);
            prop_assert_eq!(check_update_v1(&update), Ok(()), "{:?}", update);
            let other = &docs[1 - who];
            other.transact_mut().apply_update(Update::decode_v1(&update).unwrap()).unwrap();
            let batch = room.apply_updates(vec![(ConnId(1), update)]);
            prop_assert!(batch.rejected.is_empty(), "{:?}", batch.rejected);
        }
        prop_assert!(!room.is_tainted());
        prop_assert_eq!(room.state_vector(), docs[0].transact().state_vector().encode_v1());
        prop_assert_eq!(check_update_v1(&full_state(&docs[0])), Ok(()));
        prop_assert_eq!(check_update_v1(&room.snapshot()), Ok(()));
    }

    /// The check never panics on arbitrary bytes, nor on arbitrary bytes behind a valid start.
    #[test]
    fn check_never_panics_on_arbitrary_bytes(
        bytes in vec(any::<u8>(), 0..256),
        tail in vec(any::<u8>(), 0..256),
    ) {
        let _ = check_update_v1(&bytes);
        let _ = check_update_v1(&[&ANY_ITEM_HEADER[..], &tail].concat());
    }

    /// Mutated real updates never panic in the check, in yrs' decoding of what passes it, or in
    /// the room; what passes the check decodes in yrs unless its JSON is malformed.
    #[test]
    fn mutated_updates_never_panic(
        edits in vec(arb_edit(), 1..6),
        mutations in vec((any::<usize>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let doc = Doc::with_client_id(5);
        let updates: Vec<Vec<u8>> = edits.iter().map(|e| run_edit(&doc, e)).collect();
        let bytes = mutate(full_state(&doc), &mutations);
        if check_update_v1(&bytes).is_ok() {
            match Update::decode_v1(&bytes) {
                Ok(_) | Err(yrs::encoding::read::Error::InvalidJSON(_)) => {}
                Err(e) => prop_assert!(false, "checked update failed to decode: {e}"),
            }
        }
        let mut room = Room::new();
        room.apply_updates(vec![(ConnId(1), updates[0].clone())]);
        let batch = room.apply_updates(vec![(ConnId(2), bytes)]);
        prop_assert!(
            !batch.rejected.iter().any(|(_, e)| matches!(e, RoomError::Panicked)),
            "{:?}", batch.rejected
        );
        let _ = room.snapshot();
    }
}
