//! Restoring a version: the change that brings a document back to its content at an earlier
//! version, as one ordinary v1 update that converges with concurrent edits.
//!
//! The document at the version is rebuilt, the later changes are applied to it under a
//! tracked origin with a yrs `UndoManager` over every root type, and that one step is undone:
//! the undo deletes what was inserted since and re-inserts (as new items) what was deleted
//! since, formatting attributes, map entries, array elements and XML nodes included. The
//! restore change is what the undo added, relative to the current state. Being new items and
//! deletions, it merges with edits made meanwhile like any other edit.

use yrs::undo::Options;
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, UndoManager, Update};

use crate::reads::json::{RootKind, root_kind};
use crate::storage::StoredDoc;

/// Origin of the transaction that replays the later changes.
const REPLAY_ORIGIN: &str = "aetherflow-history-restore";

/// Why a restore change could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// A stored update does not decode or apply.
    #[error("a stored update does not load: {0}")]
    Stored(String),
}

/// A document rebuilt from its stored form.
pub fn doc_of(stored: &StoredDoc) -> Result<Doc, RestoreError> {
    let doc = Doc::new();
    {
        let mut txn = doc.transact_mut();
        for bytes in stored.snapshot.iter().chain(&stored.log) {
            apply(&mut txn, bytes)?;
        }
    }
    Ok(doc)
}

fn apply(txn: &mut yrs::TransactionMut<'_>, bytes: &[u8]) -> Result<(), RestoreError> {
    let update = Update::decode_v1(bytes).map_err(|e| RestoreError::Stored(e.to_string()))?;
    txn.apply_update(update)
        .map_err(|e| RestoreError::Stored(e.to_string()))
}

/// The v1 update that turns `current` back into `past`'s content, or `None` when they hold
/// the same content already. `past` must be an earlier state of the same document.
pub fn restore_update(
    past: &StoredDoc,
    current: &StoredDoc,
) -> Result<Option<Vec<u8>>, RestoreError> {
    let now = doc_of(current)?;
    let target = doc_of(past)?;
    let roots: Vec<(String, RootKind)> = {
        let txn = now.transact();
        txn.root_refs()
            .map(|(name, value)| (name.to_owned(), root_kind(&value, &txn)))
            .collect()
    };
    let mut undo: UndoManager = UndoManager::with_options(Options {
        // One stack item for the whole replay, however long it takes.
        capture_timeout_millis: u64::MAX,
        ..Options::default()
    });
    for (name, kind) in &roots {
        let name = name.as_str();
        match kind {
            RootKind::Map => undo.expand_scope(&target, &target.get_or_insert_map(name)),
            RootKind::Array => undo.expand_scope(&target, &target.get_or_insert_array(name)),
            RootKind::Text => undo.expand_scope(&target, &target.get_or_insert_text(name)),
            RootKind::Xml => {
                undo.expand_scope(&target, &target.get_or_insert_xml_fragment(name));
            }
        }
    }
    undo.include_origin(REPLAY_ORIGIN);
    let later = {
        let since = target.transact().state_vector();
        now.transact().encode_state_as_update_v1(&since)
    };
    {
        let mut txn = target.transact_mut_with(REPLAY_ORIGIN);
        apply(&mut txn, &later)?;
    }
    if !undo.undo_blocking() {
        return Ok(None);
    }
    let known: StateVector = now.transact().state_vector();
    let change = target.transact().encode_state_as_update_v1(&known);
    Ok(Some(change))
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::types::Attrs;
    use yrs::{Any, Array, GetString, Map, Text, WriteTxn, XmlFragment, XmlTextPrelim};

    fn stored(doc: &Doc) -> StoredDoc {
        StoredDoc {
            snapshot: Some(
                doc.transact()
                    .encode_state_as_update_v1(&StateVector::default()),
            ),
            ..StoredDoc::default()
        }
    }

    fn json(doc: &Doc) -> String {
        crate::reads::json::render(doc, "d", usize::MAX)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Applies `change` to a copy of `current` and returns its JSON.
    fn restored(current: &StoredDoc, change: &[u8]) -> Doc {
        let doc = doc_of(current).expect("loads");
        let mut txn = doc.transact_mut();
        apply(&mut txn, change).expect("the change applies");
        drop(txn);
        doc
    }

    #[test]
    fn restoring_brings_back_text_with_formatting_maps_arrays_and_xml() {
        let doc = Doc::with_client_id(7);
        let text = doc.get_or_insert_text("text");
        let map = doc.get_or_insert_map("map");
        let array = doc.get_or_insert_array("array");
        let xml = doc.get_or_insert_xml_fragment("prosemirror");
        {
            let mut txn = doc.transact_mut();
            let bold = Attrs::from([("bold".into(), Any::Bool(true))]);
            text.insert_with_attributes(&mut txn, 0, "hello", bold);
            map.insert(&mut txn, "k", "v1");
            array.insert_range(&mut txn, 0, [1, 2, 3]);
            xml.insert(&mut txn, 0, XmlTextPrelim::new("para"));
        }
        let past = stored(&doc);
        // Both sides loaded afresh, so root types are inferred the same way.
        let wanted = json(&doc_of(&past).expect("loads"));
        {
            let mut txn = doc.transact_mut();
            text.remove_range(&mut txn, 0, 2);
            text.insert(&mut txn, 3, " world");
            map.insert(&mut txn, "k", "v2");
            map.insert(&mut txn, "new", 1);
            array.remove_range(&mut txn, 0, 2);
            xml.remove_range(&mut txn, 0, 1);
            let _ = txn.get_or_insert_map("later-root");
        }
        let current = stored(&doc);
        let change = restore_update(&past, &current)
            .expect("restores")
            .expect("something changed");
        let back = restored(&current, &change);
        assert_eq!(json(&back), wanted);
        let text = back.get_or_insert_text("text");
        let array = back.get_or_insert_array("array");
        let txn = back.transact();
        let diff = text.diff(&txn, yrs::types::text::YChange::identity);
        assert_eq!(diff.len(), 1, "one run: {diff:?}");
        assert!(diff[0].attributes.is_some(), "bold is back: {diff:?}");
        assert_eq!(text.get_string(&txn), "hello");
        assert_eq!(array.len(&txn), 3);
    }

    #[test]
    fn restoring_the_current_content_changes_nothing() {
        let doc = Doc::with_client_id(7);
        doc.get_or_insert_text("t")
            .insert(&mut doc.transact_mut(), 0, "same");
        let state = stored(&doc);
        assert!(restore_update(&state, &state).expect("restores").is_none());
    }
}
