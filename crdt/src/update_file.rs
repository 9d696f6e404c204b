//! Offline tools for Yjs v1 update files (a document's state saved as one update, as written
//! by `Y.encodeStateAsUpdate` or yrs' `encode_state_as_update_v1`): merge several into one and
//! describe what one holds. The relay binary exposes them as `aetherflow merge` and
//! `aetherflow inspect`; the SDK's tests use them on replicas edited apart.
//!
//! Every input passes [`check_update_v1`] before yrs decodes it, so a hostile file is refused
//! with an error instead of crashing the tool.
//!
//! ```
//! use aetherflow_crdt::update_file::{inspect, merge};
//! use yrs::{Doc, ReadTxn, StateVector, Text, Transact};
//!
//! let save = |id, s: &str| {
//!     let doc = Doc::with_client_id(id);
//!     doc.get_or_insert_text("text").insert(&mut doc.transact_mut(), 0, s);
//!     doc.transact().encode_state_as_update_v1(&StateVector::default())
//! };
//! let merged = merge(&[save(1, "left "), save(2, "right")]).unwrap();
//! let summary = inspect(&merged).unwrap();
//! assert_eq!(summary.clients.len(), 2);
//! assert_eq!(summary.roots[0].name, "text");
//! assert_eq!(summary.roots[0].length, 10);
//! ```

use std::fmt;

use yrs::types::ToJson;
use yrs::updates::decoder::Decode;
use yrs::{Array, Doc, GetString, Map, ReadTxn, StateVector, Transact, Update, XmlFragment};

use crate::update_check::{UpdateCheckError, check_update_v1};

mod roots;

use roots::RootKind;

/// Longest content preview [`inspect`] returns, in characters (an array's preview ends at
/// the first element past it).
const PREVIEW_CHARS: usize = 60;

/// Why an update file cannot be used.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum UpdateFileError {
    /// Input number `index` (counted from 0) is not a well-formed v1 update.
    #[error("input {index} is not a valid Yjs v1 update: {reason}")]
    Invalid {
        /// Which input.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// Nothing to merge.
    #[error("no input to merge")]
    NoInput,
}

impl UpdateFileError {
    fn invalid(index: usize, reason: impl fmt::Display) -> UpdateFileError {
        UpdateFileError::Invalid {
            index,
            reason: reason.to_string(),
        }
    }
}

/// Applies every input to one document and returns its whole state as one v1 update. The
/// order of the inputs does not matter (CRDT merge); updates whose dependencies are missing
/// are kept in the output, not dropped.
pub fn merge<B: AsRef<[u8]>>(inputs: &[B]) -> Result<Vec<u8>, UpdateFileError> {
    if inputs.is_empty() {
        return Err(UpdateFileError::NoInput);
    }
    let doc = Doc::new();
    for (index, input) in inputs.iter().enumerate() {
        apply(&doc, index, input.as_ref())?;
    }
    Ok(doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default()))
}

fn apply(doc: &Doc, index: usize, bytes: &[u8]) -> Result<(), UpdateFileError> {
    check_update_v1(bytes).map_err(|e: UpdateCheckError| UpdateFileError::invalid(index, e))?;
    let update = Update::decode_v1(bytes).map_err(|e| UpdateFileError::invalid(index, e))?;
    doc.transact_mut()
        .apply_update(update)
        .map_err(|e| UpdateFileError::invalid(index, e))
}

/// What an update file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateSummary {
    /// Size of the file, in bytes.
    pub bytes: usize,
    /// Per client id, how many operations (clock values) of it the file holds, by id.
    pub clients: Vec<(u64, u32)>,
    /// Deleted ranges in the delete set.
    pub deleted_ranges: usize,
    /// Whether some updates lack their dependencies (the file is not a complete state).
    pub missing_dependencies: bool,
    /// The root types, by name.
    pub roots: Vec<RootSummary>,
}

/// One root type of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootSummary {
    /// Its name.
    pub name: String,
    /// `text`, `array`, `map` or `xml fragment`, as the root's items show (an update does not
    /// record a root's type), or `empty` when every item of it was deleted.
    pub kind: &'static str,
    /// Characters of a text, elements of an array, entries of a map, child nodes of an XML
    /// fragment.
    pub length: u32,
    /// The start of a text, an array's first elements as JSON, a map's keys (sorted), the
    /// start of an XML fragment's markup.
    pub preview: String,
}

/// Describes an update file.
pub fn inspect(bytes: &[u8]) -> Result<UpdateSummary, UpdateFileError> {
    let doc = Doc::new();
    apply(&doc, 0, bytes)?;
    let update = Update::decode_v1(bytes).map_err(|e| UpdateFileError::invalid(0, e))?;
    let deleted_ranges = update
        .delete_set()
        .iter()
        .map(|(_, ranges)| ranges.iter().count())
        .sum();
    let mut clients: Vec<(u64, u32)> = {
        let txn = doc.transact();
        txn.state_vector()
            .iter()
            .map(|(client, clock)| (client.get(), *clock))
            .collect()
    };
    clients.sort_unstable();
    let missing_dependencies = doc.transact().has_missing_updates();
    let kinds = roots::root_kinds(bytes).map_err(|e| UpdateFileError::invalid(0, e))?;
    let names: Vec<String> = doc
        .transact()
        .root_refs()
        .map(|(name, _)| name.to_owned())
        .collect();
    let mut roots: Vec<RootSummary> = names
        .iter()
        .map(|name| {
            let kind = kinds.get(name).copied().unwrap_or(RootKind::Empty);
            summarize_root(&doc, name, kind)
        })
        .collect();
    roots.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(UpdateSummary {
        bytes: bytes.len(),
        clients,
        deleted_ranges,
        missing_dependencies,
        roots,
    })
}

/// Describes root `name` of `doc` as the kind its items in the update show.
fn summarize_root(doc: &Doc, name: &str, kind: RootKind) -> RootSummary {
    let summary = |kind, length: usize, preview: String| RootSummary {
        name: name.to_owned(),
        kind,
        length: u32::try_from(length).unwrap_or(u32::MAX),
        preview,
    };
    match kind {
        RootKind::Map => {
            let map = doc.get_or_insert_map(name);
            let txn = doc.transact();
            let mut keys: Vec<&str> = map.keys(&txn).collect();
            keys.sort_unstable();
            summary("map", keys.len(), keys.join(", "))
        }
        RootKind::Array => {
            let array = doc.get_or_insert_array(name);
            let txn = doc.transact();
            let mut preview = String::new();
            for (i, value) in array.iter(&txn).enumerate() {
                if preview.chars().count() >= PREVIEW_CHARS {
                    preview.push_str(", ...");
                    break;
                }
                if i > 0 {
                    preview.push_str(", ");
                }
                let mut json = String::new();
                value.to_json(&txn).to_json(&mut json);
                preview.push_str(&json);
            }
            summary("array", array.len(&txn) as usize, preview)
        }
        RootKind::XmlFragment => {
            let fragment = doc.get_or_insert_xml_fragment(name);
            let txn = doc.transact();
            let xml = fragment.get_string(&txn);
            let preview = xml.chars().take(PREVIEW_CHARS).collect();
            summary("xml fragment", fragment.len(&txn) as usize, preview)
        }
        RootKind::Text | RootKind::Empty => {
            let text = doc.get_or_insert_text(name);
            let txn = doc.transact();
            let content = text.get_string(&txn);
            let preview = content.chars().take(PREVIEW_CHARS).collect();
            let kind = if kind == RootKind::Text {
                "text"
            } else {
                "empty"
            };
            summary(kind, content.chars().count(), preview)
        }
    }
}

impl fmt::Display for UpdateSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "size: {} bytes (Yjs v1 update)", self.bytes)?;
        writeln!(f, "clients: {}", self.clients.len())?;
        for (client, clock) in &self.clients {
            writeln!(f, "  client {client}: {clock} operations")?;
        }
        writeln!(f, "deleted ranges: {}", self.deleted_ranges)?;
        writeln!(
            f,
            "missing dependencies: {}",
            if self.missing_dependencies {
                "yes"
            } else {
                "no"
            }
        )?;
        writeln!(f, "roots: {}", self.roots.len())?;
        for root in &self.roots {
            writeln!(
                f,
                "  {:?}: {}, length {}: {:?}",
                root.name, root.kind, root.length, root.preview
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use yrs::Text;

    fn save(doc: &Doc) -> Vec<u8> {
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    fn edited(id: u64, s: &str) -> Doc {
        let doc = Doc::with_client_id(id);
        doc.get_or_insert_text("text")
            .insert(&mut doc.transact_mut(), 0, s);
        doc
    }

    #[test]
    fn merged_replicas_hold_both_sides_whatever_the_order() {
        let base = edited(1, "shared ");
        let a = Doc::with_client_id(2);
        let b = Doc::with_client_id(3);
        for doc in [&a, &b] {
            let u = Update::decode_v1(&save(&base)).unwrap();
            doc.transact_mut().apply_update(u).unwrap();
        }
        a.get_or_insert_text("text")
            .push(&mut a.transact_mut(), "A");
        b.get_or_insert_text("text")
            .remove_range(&mut b.transact_mut(), 0, 1);
        let ab = merge(&[save(&a), save(&b)]).unwrap();
        let ba = merge(&[save(&b), save(&a)]).unwrap();
        let summary = inspect(&ab).unwrap();
        assert_eq!(summary.roots[0].preview, "hared A");
        assert_eq!(inspect(&ba).unwrap().roots, summary.roots);
        assert_eq!(summary.deleted_ranges, 1);
        assert_eq!(summary.clients, vec![(1, 7), (2, 1)]);
        assert!(!summary.missing_dependencies);
    }

    #[test]
    fn a_map_root_is_described_by_its_keys() {
        let doc = Doc::with_client_id(5);
        let map = doc.get_or_insert_map("settings");
        map.insert(&mut doc.transact_mut(), "theme", "dark");
        let summary = inspect(&save(&doc)).unwrap();
        assert_eq!(summary.roots[0].kind, "map");
        assert_eq!(summary.roots[0].preview, "theme");
    }

    #[test]
    fn every_kind_of_root_is_described_as_what_it_is() {
        use yrs::{Array, MapPrelim, XmlElementPrelim, XmlFragment, XmlTextPrelim};
        let doc = Doc::with_client_id(7);
        let list = doc.get_or_insert_array("list");
        let notes = doc.get_or_insert_text("notes");
        let settings = doc.get_or_insert_map("settings");
        let page = doc.get_or_insert_xml_fragment("page");
        {
            let mut txn = doc.transact_mut();
            list.insert_range(&mut txn, 0, ["ab", "c"]);
            list.push_back(&mut txn, 3);
            list.insert(&mut txn, 1, MapPrelim::default());
            notes.insert(&mut txn, 0, "hello world");
            // The first insertion, the only item naming its root, goes: what is left was
            // typed after it and names only its origin.
            notes.remove_range(&mut txn, 0, 6);
            settings.insert(&mut txn, "theme", "dark");
            settings.insert(&mut txn, "theme", "light");
            settings.insert(&mut txn, "font", "serif");
            let p = page.push_back(&mut txn, XmlElementPrelim::empty("p"));
            p.push_back(&mut txn, XmlTextPrelim::new("hi"));
        }
        notes.insert(&mut doc.transact_mut(), 5, "!");
        let summary = inspect(&save(&doc)).unwrap();
        let kinds: Vec<(&str, &str, u32)> = summary
            .roots
            .iter()
            .map(|r| (r.name.as_str(), r.kind, r.length))
            .collect();
        assert_eq!(
            kinds,
            [
                ("list", "array", 4),
                ("notes", "text", 6),
                ("page", "xml fragment", 1),
                ("settings", "map", 2)
            ]
        );
        assert_eq!(summary.roots[0].preview, r#""ab", {}, "c", 3"#);
        assert_eq!(summary.roots[1].preview, "world!");
        assert_eq!(summary.roots[2].preview, "<p>hi</p>");
        assert_eq!(summary.roots[3].preview, "font, theme");
    }

    #[test]
    fn an_update_without_its_dependencies_is_kept_and_reported() {
        let doc = edited(1, "ab");
        let before = doc.transact().state_vector();
        doc.get_or_insert_text("text")
            .push(&mut doc.transact_mut(), "c");
        let tail = doc.transact().encode_state_as_update_v1(&before);
        let summary = inspect(&tail).unwrap();
        assert!(summary.missing_dependencies);
        // Merging it with its missing part gives the whole document.
        let whole = merge(&[
            tail,
            edited(1, "ab")
                .transact()
                .encode_state_as_update_v1(&StateVector::default()),
        ])
        .unwrap();
        assert_eq!(inspect(&whole).unwrap().roots[0].preview, "abc");
    }

    #[test]
    fn invalid_inputs_are_errors_naming_the_input() {
        assert_eq!(merge::<Vec<u8>>(&[]), Err(UpdateFileError::NoInput));
        let good = save(&edited(1, "x"));
        assert!(matches!(
            merge(&[good, b"not an update".to_vec()]),
            Err(UpdateFileError::Invalid { index: 1, .. })
        ));
        assert!(matches!(
            inspect(&[]),
            Err(UpdateFileError::Invalid { index: 0, .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = inspect(&bytes);
            let _ = merge(&[bytes]);
        }
    }
}
