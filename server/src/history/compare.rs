//! Comparing versions: what changed between two versions of a document, and who wrote each
//! part of a text ("blame").
//!
//! A document is rebuilt without garbage collection from a base state, the later log entries
//! are applied one by one, and yrs's snapshot diff of each text root gives its inserted and
//! deleted runs. Who made a run comes from the log: an inserted run's item was created by a
//! Yjs client, and the entries carrying that client's updates name their authors; a deleted
//! run is credited to the authors of the entry whose delete set removed it. Maps and arrays
//! are compared as JSON (keys added, removed or changed; the array's changed middle), XML
//! roots as their text before and after.
//!
//! After thinning, an entry merged from dropped versions carries the kept version's authors,
//! so older runs may be credited to them; content in a base state that no entry carries (a
//! document from before history) is credited to nobody.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use serde_json::Value;
use yrs::types::ToJson;
use yrs::types::text::{ChangeKind, YChange};
use yrs::updates::decoder::Decode;
use yrs::{
    Any, ClientID, Doc, GetString, ID, IdSet, Options, Out, ReadTxn, Snapshot, Text, Transact,
    Update,
};

use super::restore::RestoreError;
use crate::reads::json::{RootKind, root_kind};

/// One log entry to replay, with who made it.
#[derive(Debug, Clone)]
pub struct Authored {
    /// The entry's v1 update.
    pub update: Vec<u8>,
    /// Its authors (token subjects; empty when unknown).
    pub authors: Vec<String>,
}

/// What happened to a run of text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// There before and after.
    Kept,
    /// Written in between.
    Inserted,
    /// Deleted in between.
    Deleted,
}

/// A run of text and who made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    /// What happened to it.
    pub kind: RunKind,
    /// The text.
    pub text: String,
    /// Who wrote it (inserted, kept) or deleted it (deleted); empty when unknown.
    pub by: Vec<String>,
}

/// How one root type changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RootChange {
    /// A text: its runs, in document order.
    Text {
        /// Kept, inserted and deleted runs.
        runs: Vec<Run>,
    },
    /// A map: its changed keys.
    Map {
        /// Key → `{before, after}` (a missing side is absent).
        changes: BTreeMap<String, Value>,
    },
    /// An array: the middle that changed, between an unchanged head and tail.
    Array {
        /// Index of the first changed element.
        index: usize,
        /// Elements removed there.
        deleted: Vec<Value>,
        /// Elements inserted there.
        inserted: Vec<Value>,
    },
    /// An XML fragment: its text before and after.
    Xml {
        /// Before.
        before: String,
        /// After.
        after: String,
    },
}

/// Who made what: Yjs clients and deletions, by log entry.
#[derive(Default)]
struct Credits {
    clients: HashMap<ClientID, BTreeSet<String>>,
    deletions: Vec<(IdSet, Vec<String>)>,
}

impl Credits {
    fn note(&mut self, update: &Update, authors: &[String]) {
        // Every client that inserted something in this update (not `state_vector`, which
        // leaves out a client whose blocks here do not start at its clock 0: one that had
        // written before).
        for (client, _) in update.insertions(true).iter() {
            self.clients
                .entry(*client)
                .or_default()
                .extend(authors.iter().cloned());
        }
        self.deletions
            .push((update.delete_set().clone(), authors.to_vec()));
    }

    fn writers(&self, id: &ID) -> Vec<String> {
        self.clients
            .get(&id.client)
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn deleters(&self, id: &ID) -> Vec<String> {
        self.deletions
            .iter()
            .find(|(deleted, _)| deleted.contains(id))
            .map(|(_, authors)| authors.clone())
            .unwrap_or_default()
    }
}

/// The roots of `doc` with their kinds and JSON values (texts and XML as strings). Roots
/// loaded from updates are untyped: each is read through a handle of its inferred kind.
fn roots(doc: &Doc) -> BTreeMap<String, (RootKind, Any)> {
    let kinds: Vec<(String, RootKind)> = {
        let txn = doc.transact();
        txn.root_refs()
            .map(|(name, value)| (name.to_owned(), root_kind(&value, &txn)))
            .collect()
    };
    let mut out = BTreeMap::new();
    for (name, kind) in kinds {
        let json = match kind {
            RootKind::Text => {
                let text = doc.get_or_insert_text(name.as_str());
                Any::from(text.get_string(&doc.transact()))
            }
            RootKind::Xml => {
                let xml = doc.get_or_insert_xml_fragment(name.as_str());
                Any::from(xml.get_string(&doc.transact()))
            }
            RootKind::Map => {
                let map = doc.get_or_insert_map(name.as_str());
                map.to_json(&doc.transact())
            }
            RootKind::Array => {
                let array = doc.get_or_insert_array(name.as_str());
                array.to_json(&doc.transact())
            }
        };
        out.insert(name, (kind, json));
    }
    out
}

fn apply(doc: &Doc, bytes: &[u8]) -> Result<Update, RestoreError> {
    let update = Update::decode_v1(bytes).map_err(|e| RestoreError::Stored(e.to_string()))?;
    let kept = Update::decode_v1(bytes).map_err(|e| RestoreError::Stored(e.to_string()))?;
    doc.transact_mut()
        .apply_update(update)
        .map_err(|e| RestoreError::Stored(e.to_string()))?;
    Ok(kept)
}

/// What changed in each root between `base` (a state, as v1 updates) and `base` plus
/// `later`; unchanged roots are left out.
pub fn diff(
    base: &[Vec<u8>],
    later: &[Authored],
) -> Result<BTreeMap<String, RootChange>, RestoreError> {
    let doc = Doc::with_options(Options {
        skip_gc: true,
        ..Options::default()
    });
    for bytes in base {
        apply(&doc, bytes)?;
    }
    let before = roots(&doc);
    let from: Snapshot = doc.transact().snapshot();
    let mut credits = Credits::default();
    for entry in later {
        let update = apply(&doc, &entry.update)?;
        credits.note(&update, &entry.authors);
    }
    let to: Snapshot = doc.transact().snapshot();
    let after = roots(&doc);
    let mut changes = BTreeMap::new();
    for (name, (kind, now)) in &after {
        let was = before.get(name).map(|(_, json)| json);
        if was == Some(now) {
            continue;
        }
        let change = match kind {
            RootKind::Text => text_runs(&doc, name, &from, &to, &credits),
            RootKind::Map => map_changes(was, now),
            RootKind::Array => array_changes(was, now),
            RootKind::Xml => RootChange::Xml {
                before: was.map(any_text).unwrap_or_default(),
                after: any_text(now),
            },
        };
        changes.insert(name.clone(), change);
    }
    Ok(changes)
}

/// Who wrote each part of every text root of the state `base` plus `entries`: its runs, all
/// kept or inserted. Content of `base` itself is credited to nobody.
pub fn blame(
    base: &[Vec<u8>],
    entries: &[Authored],
) -> Result<BTreeMap<String, Vec<Run>>, RestoreError> {
    let changes = diff(base, entries)?;
    let mut out = BTreeMap::new();
    for (name, change) in changes {
        if let RootChange::Text { runs } = change {
            let present = runs
                .into_iter()
                .filter(|run| run.kind != RunKind::Deleted)
                .collect();
            out.insert(name, present);
        }
    }
    Ok(out)
}

fn text_runs(
    doc: &Doc,
    name: &str,
    from: &Snapshot,
    to: &Snapshot,
    credits: &Credits,
) -> RootChange {
    let text = doc.get_or_insert_text(name);
    let mut txn = doc.transact_mut();
    let chunks = text.diff_range(&mut txn, Some(to), Some(from), YChange::identity);
    let mut runs: Vec<Run> = Vec::new();
    for chunk in chunks {
        let content = match &chunk.insert {
            Out::Any(Any::String(s)) => s.to_string(),
            // Embeds count as one character each.
            _ => "\u{fffc}".to_owned(),
        };
        let (kind, by) = match &chunk.ychange {
            None => (RunKind::Kept, Vec::new()),
            Some(YChange {
                kind: ChangeKind::Added,
                id,
            }) => (RunKind::Inserted, credits.writers(id)),
            Some(YChange {
                kind: ChangeKind::Removed,
                id,
            }) => (RunKind::Deleted, credits.deleters(id)),
        };
        match runs.last_mut() {
            Some(last) if last.kind == kind && last.by == by => last.text.push_str(&content),
            _ => runs.push(Run {
                kind,
                text: content,
                by,
            }),
        }
    }
    RootChange::Text { runs }
}

fn json(any: &Any) -> Value {
    serde_json::to_value(any).unwrap_or(Value::Null)
}

fn any_text(any: &Any) -> String {
    match any {
        Any::String(s) => s.to_string(),
        other => json(other).to_string(),
    }
}

fn map_changes(was: Option<&Any>, now: &Any) -> RootChange {
    let empty = std::collections::HashMap::new();
    let old = match was {
        Some(Any::Map(map)) => map.as_ref(),
        _ => &empty,
    };
    let new = match now {
        Any::Map(map) => map.as_ref(),
        _ => &empty,
    };
    let mut changes = BTreeMap::new();
    for (key, value) in new {
        match old.get(key) {
            Some(before) if before == value => {}
            Some(before) => {
                changes.insert(
                    key.clone(),
                    serde_json::json!({ "before": json(before), "after": json(value) }),
                );
            }
            None => {
                changes.insert(key.clone(), serde_json::json!({ "after": json(value) }));
            }
        }
    }
    for (key, value) in old {
        if !new.contains_key(key) {
            changes.insert(key.clone(), serde_json::json!({ "before": json(value) }));
        }
    }
    RootChange::Map { changes }
}

fn array_changes(was: Option<&Any>, now: &Any) -> RootChange {
    let old: &[Any] = match was {
        Some(Any::Array(items)) => items,
        _ => &[],
    };
    let new: &[Any] = match now {
        Any::Array(items) => items,
        _ => &[],
    };
    let head = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let tail = old[head..]
        .iter()
        .rev()
        .zip(new[head..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    RootChange::Array {
        index: head,
        deleted: old[head..old.len() - tail].iter().map(json).collect(),
        inserted: new[head..new.len() - tail].iter().map(json).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{Array, Map};

    /// A client of user `who` editing a shared document.
    struct Writer {
        doc: Doc,
        who: &'static str,
    }

    impl Writer {
        fn new(client: u64, who: &'static str) -> Writer {
            Writer {
                doc: Doc::with_client_id(client),
                who,
            }
        }

        /// Catches up with `log`, runs `edit` (which opens its own transaction), and returns
        /// its entry.
        fn edit(&self, log: &[Authored], edit: impl FnOnce(&Doc)) -> Authored {
            for entry in log {
                let update = Update::decode_v1(&entry.update).expect("valid");
                self.doc
                    .transact_mut()
                    .apply_update(update)
                    .expect("applies");
            }
            let before = self.doc.transact().state_vector();
            edit(&self.doc);
            Authored {
                update: self.doc.transact().encode_state_as_update_v1(&before),
                authors: vec![self.who.to_owned()],
            }
        }
    }

    fn run(kind: RunKind, text: &str, by: &[&str]) -> Run {
        Run {
            kind,
            text: text.to_owned(),
            by: by.iter().map(|b| (*b).to_owned()).collect(),
        }
    }

    #[test]
    fn a_text_diff_shows_who_inserted_and_who_deleted_each_run() {
        let ada = Writer::new(1, "ada");
        let bob = Writer::new(2, "bob");
        let mut log = Vec::new();
        let entry = ada.edit(&log, |doc| {
            let text = doc.get_or_insert_text("t");
            text.insert(&mut doc.transact_mut(), 0, "hello world");
        });
        log.push(entry);
        let entry = bob.edit(&log, |doc| {
            let text = doc.get_or_insert_text("t");
            let mut txn = doc.transact_mut();
            text.remove_range(&mut txn, 0, 6);
            text.insert(&mut txn, 5, "!");
        });
        log.push(entry);
        let base = [log[0].update.clone()];
        let changes = diff(&base, &log[1..]).expect("diffs");
        let RootChange::Text { runs } = &changes["t"] else {
            panic!("a text change: {changes:?}");
        };
        assert_eq!(
            runs,
            &[
                run(RunKind::Deleted, "hello ", &["bob"]),
                run(RunKind::Kept, "world", &[]),
                run(RunKind::Inserted, "!", &["bob"]),
            ]
        );
        let blamed = blame(&[], &log).expect("blames");
        assert_eq!(
            blamed["t"],
            [
                run(RunKind::Inserted, "world", &["ada"]),
                run(RunKind::Inserted, "!", &["bob"])
            ]
        );
    }

    #[test]
    fn map_and_array_diffs_show_what_changed() {
        let ada = Writer::new(1, "ada");
        let first = ada.edit(&[], |doc| {
            let map = doc.get_or_insert_map("m");
            let array = doc.get_or_insert_array("a");
            let mut txn = doc.transact_mut();
            map.insert(&mut txn, "keep", 1);
            map.insert(&mut txn, "change", "a");
            map.insert(&mut txn, "drop", true);
            array.insert_range(&mut txn, 0, ["w", "x", "y", "z"]);
        });
        let second = ada.edit(&[], |doc| {
            let map = doc.get_or_insert_map("m");
            let array = doc.get_or_insert_array("a");
            let mut txn = doc.transact_mut();
            map.insert(&mut txn, "change", "b");
            map.remove(&mut txn, "drop");
            map.insert(&mut txn, "new", 2);
            array.remove_range(&mut txn, 1, 2);
            array.insert(&mut txn, 1, "new");
        });
        let changes = diff(&[first.update], &[second]).expect("diffs");
        let RootChange::Map { changes: keys } = &changes["m"] else {
            panic!("a map change: {changes:?}");
        };
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["change", "drop", "new"]);
        assert_eq!(
            keys["change"],
            serde_json::json!({ "before": "a", "after": "b" })
        );
        assert_eq!(
            changes["a"],
            RootChange::Array {
                index: 1,
                deleted: vec!["x".into(), "y".into()],
                inserted: vec!["new".into()],
            }
        );
    }
}
