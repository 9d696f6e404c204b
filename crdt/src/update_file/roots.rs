//! Which kind of shared type each root of an update is. An update does not record a root's
//! type (Yjs learns it when the application calls `getText`, `getArray`, ...), but its items
//! show it: a root holding strings is a text, one holding values an array, one whose items
//! carry keys a map, one holding XML elements or XML texts an XML fragment.
//!
//! Only items inserted with neither neighbour name their parent; the others inherit their
//! origin's parent (and key), so the walk resolves each item through its origins.

use std::collections::HashMap;

use crate::update_check::{ItemView, ParentView, UpdateCheckError, walk_update_v1};

/// What a root type is, as far as the update shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RootKind {
    /// `Y.Text`: strings, embeds, formatting.
    Text,
    /// `Y.Array`: values, binaries, nested types, subdocuments.
    Array,
    /// `Y.Map`: entries under keys.
    Map,
    /// `Y.XmlFragment`: XML elements and texts.
    XmlFragment,
    /// Nothing left to tell by: every item of it was deleted.
    Empty,
}

/// Where an item sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// In root number `root`; `entry` if as a map entry.
    Root { root: usize, entry: bool },
    /// In a nested type, or somewhere the update does not show.
    Elsewhere,
}

/// The part of an item the resolution needs.
#[derive(Debug)]
struct Item {
    id: (u64, u32),
    len: u32,
    origin: Option<(u64, u32)>,
    right_origin: Option<(u64, u32)>,
    /// Known where the item names its parent.
    place: Option<Place>,
    content_ref: u8,
    type_ref: Option<u8>,
}

/// The kind of every root that has items in `bytes`, by name.
pub(super) fn root_kinds(bytes: &[u8]) -> Result<HashMap<String, RootKind>, UpdateCheckError> {
    let mut names: Vec<String> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut items: Vec<Item> = Vec::new();
    walk_update_v1(bytes, &mut |item: ItemView<'_>| {
        let place = item.parent.map(|parent| match parent {
            ParentView::Root(name) => {
                let root = *index.entry(name.to_owned()).or_insert_with(|| {
                    names.push(name.to_owned());
                    names.len() - 1
                });
                Place::Root {
                    root,
                    entry: item.parent_sub,
                }
            }
            ParentView::Item(_) => Place::Elsewhere,
        });
        items.push(Item {
            id: item.id,
            len: item.len,
            origin: item.origin,
            right_origin: item.right_origin,
            place,
            content_ref: item.content_ref,
            type_ref: item.type_ref,
        });
    })?;
    let places = resolve(&items);
    let mut seen = vec![Seen::default(); names.len()];
    for (item, place) in items.iter().zip(places) {
        if let Place::Root { root, entry } = place {
            seen[root].add(item, entry);
        }
    }
    Ok(names.into_iter().zip(seen.iter().map(Seen::kind)).collect())
}

/// Gives every item the place of the first of its origins the update holds.
fn resolve(items: &[Item]) -> Vec<Place> {
    // Per client, its items' (first clock, index), sorted, to find the item holding an id.
    let mut by_client: HashMap<u64, Vec<(u32, usize)>> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        by_client.entry(item.id.0).or_default().push((item.id.1, i));
    }
    for ranges in by_client.values_mut() {
        ranges.sort_unstable();
    }
    let holder = |id: (u64, u32)| -> Option<usize> {
        let ranges = by_client.get(&id.0)?;
        let at = ranges.partition_point(|(clock, _)| *clock <= id.1);
        let (_, i) = *ranges.get(at.checked_sub(1)?)?;
        let item = &items[i];
        (u64::from(id.1) < u64::from(item.id.1) + u64::from(item.len)).then_some(i)
    };
    let mut places: Vec<Option<Place>> = items.iter().map(|item| item.place).collect();
    let mut visiting = vec![false; items.len()];
    let mut stack = Vec::new();
    for start in 0..items.len() {
        stack.push(start);
        while let Some(&i) = stack.last() {
            if places[i].is_some() {
                stack.pop();
                continue;
            }
            let item = &items[i];
            let source = item
                .origin
                .and_then(&holder)
                .or_else(|| item.right_origin.and_then(&holder));
            match source {
                Some(j) if places[j].is_some() => {
                    places[i] = places[j];
                    stack.pop();
                }
                // Not yet resolved and not on the way: resolve it first.
                Some(j) if !visiting[j] => {
                    visiting[i] = true;
                    stack.push(j);
                }
                // No origin in the update, or a cycle (only a hostile update has one).
                _ => {
                    places[i] = Some(Place::Elsewhere);
                    stack.pop();
                }
            }
        }
    }
    places
        .into_iter()
        .map(|place| place.unwrap_or(Place::Elsewhere))
        .collect()
}

/// What the items of one root hold.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    entries: bool,
    text: bool,
    values: bool,
    xml: bool,
}

impl Seen {
    fn add(&mut self, item: &Item, entry: bool) {
        if entry {
            self.entries = true;
            return;
        }
        match (item.content_ref, item.type_ref) {
            // Deleted: says nothing.
            (1, _) => {}
            // String, embed, format.
            (4..=6, _) => self.text = true,
            // XML element, XML hook, XML text.
            (7, Some(3 | 5 | 6)) => self.xml = true,
            // JSON, binary, any, doc, other types.
            _ => self.values = true,
        }
    }

    fn kind(&self) -> RootKind {
        if self.xml {
            RootKind::XmlFragment
        } else if self.text {
            RootKind::Text
        } else if self.values {
            RootKind::Array
        } else if self.entries {
            RootKind::Map
        } else {
            RootKind::Empty
        }
    }
}
