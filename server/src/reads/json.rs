//! A Yjs document's root types written as JSON straight into a byte buffer with a size cap,
//! for `GET .../content`.
//!
//! Rendering through `yrs::Any` and `serde_json::Value` held three more copies of the
//! document (the `Any` tree, the `Value` tree, the text), about 1.36 GB for a 1 M-entry map
//! (issue 14.4). Here maps and arrays are walked entry by entry and written at once, and the
//! writer stops with [`TooLarge`] as soon as the text would pass the cap, so the memory a
//! request holds besides the document is the cap.

use std::io::{self, Write};

use yrs::types::{AsPrelim, ToJson};
use yrs::{Any, Array, ArrayRef, Doc, GetString, In, Map, MapRef, Out, ReadTxn, Transact};

/// The JSON would be larger than the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the JSON is larger than {cap} bytes")]
pub struct TooLarge {
    /// The cap it would pass.
    pub cap: usize,
}

/// `{"name": name, "content": {root: value, ...}}` with the roots in name order: a map as an
/// object (keys in order), an array as an array, a text or XML type as a string. The relay
/// never declared the root types, so each one's type is inferred from its content, as yrs
/// does. Numbers JSON cannot hold (NaN, infinities) are written as `null`.
pub fn render(doc: &Doc, name: &str, cap: usize) -> Result<Vec<u8>, TooLarge> {
    let mut out = Capped {
        bytes: Vec::new(),
        cap,
    };
    match write_document(&mut out, doc, name) {
        Ok(()) => Ok(out.bytes),
        Err(_) => Err(TooLarge { cap }),
    }
}

/// The kind a root type is rendered as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKind {
    /// A `Y.Map`.
    Map,
    /// A `Y.Array`.
    Array,
    /// A `Y.Text`.
    Text,
    /// A `Y.XmlFragment` (or an XML element or text).
    Xml,
}

fn write_document(out: &mut Capped, doc: &Doc, name: &str) -> io::Result<()> {
    let mut roots: Vec<(String, RootKind)> = {
        let txn = doc.transact();
        txn.root_refs()
            .map(|(name, value)| (name.to_owned(), root_kind(&value, &txn)))
            .collect()
    };
    roots.sort_by(|a, b| a.0.cmp(&b.0));
    out.write_all(b"{\"name\":")?;
    write_any(out, &Any::from(name))?;
    out.write_all(b",\"content\":{")?;
    for (i, (root, kind)) in roots.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        write_any(out, &Any::from(root.as_str()))?;
        out.write_all(b":")?;
        // Typed handles on a private copy of the document: declaring a root's type changes
        // nothing another reader sees.
        match kind {
            RootKind::Map => {
                let map = doc.get_or_insert_map(root.as_str());
                write_map(out, &map, &doc.transact())?;
            }
            RootKind::Array => {
                let array = doc.get_or_insert_array(root.as_str());
                write_array(out, &array, &doc.transact())?;
            }
            RootKind::Text => {
                let text = doc.get_or_insert_text(root.as_str());
                let string = text.get_string(&doc.transact());
                write_any(out, &Any::from(string))?;
            }
            RootKind::Xml => {
                let xml = doc.get_or_insert_xml_fragment(root.as_str());
                let string = xml.get_string(&doc.transact());
                write_any(out, &Any::from(string))?;
            }
        }
    }
    out.write_all(b"}}")
}

/// What yrs would infer a root as. A root with map entries and no list items is a map, found
/// without a copy; otherwise yrs's own inference decides, which copies the root's content
/// once (texts and arrays; a map, the large case, is never copied).
/// The kind of root type `value` is, inferred from its content when no client declared it.
pub fn root_kind<T: ReadTxn>(value: &Out, txn: &T) -> RootKind {
    match value {
        Out::YMap(_) => return RootKind::Map,
        Out::YArray(_) => return RootKind::Array,
        Out::YText(_) => return RootKind::Text,
        Out::YXmlElement(_) | Out::YXmlFragment(_) | Out::YXmlText(_) => return RootKind::Xml,
        Out::UndefinedRef(branch) => {
            let has_list = branch.block_len > 0;
            if !has_list && MapRef::from(*branch).len(txn) > 0 {
                return RootKind::Map;
            }
        }
        _ => {}
    }
    match value.as_prelim(txn) {
        In::Text(_) => RootKind::Text,
        In::Array(_) => RootKind::Array,
        In::XmlFragment(_) | In::XmlElement(_) | In::XmlText(_) => RootKind::Xml,
        _ => RootKind::Map,
    }
}

fn write_map<T: ReadTxn>(out: &mut Capped, map: &MapRef, txn: &T) -> io::Result<()> {
    let mut entries: Vec<(&str, Out)> = map.iter(txn).collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.write_all(b"{")?;
    for (i, (key, value)) in entries.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        write_any(out, &Any::from(*key))?;
        out.write_all(b":")?;
        write_value(out, value, txn)?;
    }
    out.write_all(b"}")
}

fn write_array<T: ReadTxn>(out: &mut Capped, array: &ArrayRef, txn: &T) -> io::Result<()> {
    out.write_all(b"[")?;
    for (i, value) in array.iter(txn).enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        write_value(out, &value, txn)?;
    }
    out.write_all(b"]")
}

/// A value inside a map or array: nested maps and arrays are walked too; everything else is
/// what `yrs`'s `to_json` makes of it (texts and XML as strings, a subdocument as its guid).
fn write_value<T: ReadTxn>(out: &mut Capped, value: &Out, txn: &T) -> io::Result<()> {
    match value {
        Out::Any(any) => write_any(out, any),
        Out::YMap(map) => write_map(out, map, txn),
        Out::YArray(array) => write_array(out, array, txn),
        other => write_any(out, &other.to_json(txn)),
    }
}

fn write_any(out: &mut Capped, any: &Any) -> io::Result<()> {
    serde_json::to_writer(&mut *out, any).map_err(io::Error::other)
}

/// A byte buffer that refuses to grow past `cap`.
struct Capped {
    bytes: Vec<u8>,
    cap: usize,
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > self.cap {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, "over the cap"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::{Value, json};
    use yrs::{Array, Map, Text, Transact};

    use super::*;

    /// A document as the relay holds it: loaded from an update, root types undeclared.
    fn loaded(build: impl FnOnce(&Doc)) -> Doc {
        let source = Doc::new();
        build(&source);
        let update = source
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default());
        let doc = Doc::new();
        let update = yrs::Update::decode_v1(&update).unwrap();
        doc.transact_mut().apply_update(update).unwrap();
        doc
    }

    use yrs::updates::decoder::Decode;

    #[test]
    fn every_root_kind_renders_as_yrs_infers_it() {
        let doc = loaded(|doc| {
            let map = doc.get_or_insert_map("m");
            let text = doc.get_or_insert_text("t");
            let array = doc.get_or_insert_array("a");
            let mut txn = doc.transact_mut();
            map.insert(&mut txn, "b", 2);
            map.insert(&mut txn, "a", "x\"y");
            map.insert(&mut txn, "nan", f64::NAN);
            map.insert(&mut txn, "nested", yrs::MapPrelim::from([("k", 1)]));
            text.insert(&mut txn, 0, "hello");
            array.push_back(&mut txn, 1);
            array.push_back(&mut txn, "s");
            array.push_back(&mut txn, yrs::ArrayPrelim::from([true]));
        });
        let bytes = render(&doc, "d", 1 << 20).unwrap();
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            value,
            json!({ "name": "d", "content": {
                "m": { "a": "x\"y", "b": 2, "nan": null, "nested": { "k": 1 } },
                "t": "hello",
                "a": [1, "s", [true]],
            } })
        );
        assert_eq!(value["content"], through_any_tree(&doc));
    }

    /// What `GET .../content` answered before this module: the roots through yrs's `to_json`
    /// and `serde_json::Value`.
    fn through_any_tree(doc: &Doc) -> Value {
        let kinds: Vec<(String, In)> = {
            let txn = doc.transact();
            txn.root_refs()
                .map(|(name, value)| (name.to_owned(), value.as_prelim(&txn)))
                .collect()
        };
        let mut out = serde_json::Map::new();
        for (name, kind) in kinds {
            let any = match kind {
                In::Text(_) => {
                    let text = doc.get_or_insert_text(name.as_str());
                    Any::from(text.get_string(&doc.transact()))
                }
                In::Array(_) => doc
                    .get_or_insert_array(name.as_str())
                    .to_json(&doc.transact()),
                _ => doc
                    .get_or_insert_map(name.as_str())
                    .to_json(&doc.transact()),
            };
            out.insert(name, serde_json::to_value(&any).unwrap_or(Value::Null));
        }
        Value::Object(out)
    }

    #[test]
    fn a_document_over_the_cap_is_refused_not_truncated() {
        let doc = loaded(|doc| {
            let map = doc.get_or_insert_map("m");
            let mut txn = doc.transact_mut();
            for i in 0..1000 {
                map.insert(&mut txn, format!("key{i}"), i);
            }
        });
        let whole = render(&doc, "d", usize::MAX).unwrap();
        assert_eq!(render(&doc, "d", whole.len()).unwrap(), whole);
        assert_eq!(
            render(&doc, "d", whole.len() - 1),
            Err(TooLarge {
                cap: whole.len() - 1
            })
        );
    }
}
