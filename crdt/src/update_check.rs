//! A validating walk over a Yjs v1 update, run before yrs decodes it.
//!
//! yrs 0.28 decodes updates trustingly: `Any` values (and the JSON of embeds and formatting
//! attributes) are decoded recursively with no depth limit, so a deep enough value overflows the
//! stack and aborts the process; and declared counts (clients, blocks, `Any` map and array
//! lengths) reserve memory before anything checks that the elements are there, so nested maps
//! that each declare 2^27 entries pin hundreds of MiB per level. Neither can be caught with
//! [`std::panic::catch_unwind`].
//!
//! [`check_update_v1`] walks the same grammar as `Update::decode_v1` (block structure, item
//! contents, `Any` values, delete set) without building anything and without recursion: nested
//! `Any` containers are tracked on a fixed-size stack of [`MAX_NESTING`] levels. It passes only if
//! every declared element is actually present in the input, so once it passes, everything yrs
//! reserves while decoding is bounded by the size of the input. It also refuses the values on
//! which yrs trips its debug assertions or overflows: client ids of 2^53 or more, clocks and
//! lengths beyond `u32`, and block or delete ranges that run past `u32::MAX`.
//!
//! The walk is stricter than yrs only where no Yjs client goes: varints longer than 10 bytes
//! (9 for signed `Any` integers), counts and clocks that do not fit in the `u32` yrs reads them
//! into, content refs that Yjs itself does not know, and nesting deeper than [`MAX_NESTING`].
//! Like yrs (and Yjs), it ignores bytes after the delete set.
//!
//! ```
//! use aetherflow_crdt::update_check::{UpdateCheckError, check_update_v1};
//! use yrs::{Doc, ReadTxn, StateVector, Text, Transact};
//!
//! let doc = Doc::with_client_id(1);
//! let text = doc.get_or_insert_text("body");
//! text.insert(&mut doc.transact_mut(), 0, "hello");
//! let update = doc.transact().encode_state_as_update_v1(&StateVector::default());
//! assert_eq!(check_update_v1(&update), Ok(()));
//!
//! // One client whose single item holds an `Any` array nested 100 000 levels deep.
//! let mut hostile = vec![1, 1, 1, 0, 8, 1, 1, b't', 1];
//! hostile.extend([117, 1].repeat(100_000));
//! hostile.extend([126, 0]);
//! assert!(matches!(check_update_v1(&hostile), Err(UpdateCheckError::TooDeep { .. })));
//! ```

use crate::lib0::Reader;
use crate::protocol::DecodeError;

/// Deepest nesting of `Any` arrays and maps (and of JSON arrays and objects in embeds and
/// formatting attributes) that an update may hold. yrs recurses once per level; 64 levels keep
/// that far from any stack limit while leaving room for real documents.
pub const MAX_NESTING: usize = 64;

/// Client ids are JavaScript safe integers: yrs asserts they stay below 2^53.
const CLIENT_ID_LIMIT: u64 = 1 << 53;

/// Info byte of a skip block (a gap left in a merged update).
const SKIP_INFO: u8 = 10;
/// Info byte of a garbage-collected range.
const GC_INFO: u8 = 0;
/// Info flag: the item has a left origin.
const HAS_ORIGIN: u8 = 0b1000_0000;
/// Info flag: the item has a right origin.
const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
/// Info flag: the item is a map entry and carries its key (only when it has no origins).
const HAS_PARENT_SUB: u8 = 0b0010_0000;
/// Bits of the info byte that select the content (`BITS5` in Yjs).
const CONTENT_REF_MASK: u8 = 0b0001_1111;

/// Why an update was refused before yrs saw it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateCheckError {
    /// The input ends inside a value.
    #[error("update truncated")]
    Truncated,
    /// `Any` values or embedded JSON nest deeper than [`MAX_NESTING`] levels.
    #[error("values nest deeper than {limit} levels")]
    TooDeep {
        /// The nesting limit that was exceeded.
        limit: usize,
    },
    /// A declared number of elements cannot fit in the bytes that are left.
    #[error("declares {declared} {what} in {remaining} remaining bytes")]
    CountExceedsInput {
        /// What was counted (clients, blocks, values, ...).
        what: &'static str,
        /// The declared count.
        declared: u64,
        /// Bytes left in the input at that point.
        remaining: usize,
    },
    /// An item's info byte selects a content type that neither Yjs nor yrs decodes.
    #[error("unknown item content ref {0}")]
    UnknownContent(u8),
    /// A type item names a shared type that yrs does not know.
    #[error("unknown shared type ref {0}")]
    UnknownTypeRef(u8),
    /// An `Any` value starts with a tag lib0 does not define.
    #[error("unknown value tag {0}")]
    UnknownAnyTag(u8),
    /// A number does not fit where yrs stores it (a varint beyond its width, or a clock plus a
    /// length beyond `u32::MAX`).
    #[error("{0} overflows")]
    Overflow(&'static str),
    /// A client id is not below 2^53.
    #[error("client id {0} is not below 2^53")]
    ClientIdOutOfRange(u64),
    /// A string is not valid UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// A garbage-collected or skip range has length 0 (yrs refuses those too).
    #[error("empty block")]
    EmptyBlock,
}

impl From<DecodeError> for UpdateCheckError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::VarIntOverflow => UpdateCheckError::Overflow("varint"),
            DecodeError::InvalidUtf8 => UpdateCheckError::InvalidUtf8,
            _ => UpdateCheckError::Truncated,
        }
    }
}

/// What an update adds to a document, as [`measure_update_v1`] counts it: the measure the
/// relay's per-update and per-document size limits are stated in.
///
/// yrs holds every item as a block of its own (about 440 bytes of relay memory for a small map
/// entry, against 13 to 14 bytes encoded), so the item count, not the encoded size, is what
/// bounds the memory an update takes once integrated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateSize {
    /// Items: one per block that is not a garbage-collected or skipped range, plus one per
    /// value beyond the first of an `Any` or JSON content (each a value of its own in yrs).
    pub items: u64,
    /// Content bytes: the encoded bytes of those items (origins, parent, key and content);
    /// the delete set is not counted.
    pub content_bytes: u64,
}

impl UpdateSize {
    /// `self` plus `other`, saturating.
    pub fn plus(self, other: UpdateSize) -> UpdateSize {
        UpdateSize {
            items: self.items.saturating_add(other.items),
            content_bytes: self.content_bytes.saturating_add(other.content_bytes),
        }
    }
}

/// Checks that `bytes` is a v1 update yrs can decode with bounded stack and memory.
///
/// `Ok` means the block structure, every item content and the delete set are complete and
/// within the limits described in the [module docs](self); yrs may still refuse the update when
/// integrating it (a parent that is not a type, for instance), which is harmless.
pub fn check_update_v1(bytes: &[u8]) -> Result<(), UpdateCheckError> {
    walk_update_v1(bytes, &mut |_| {}).map(|_| ())
}

/// [`check_update_v1`], counting on the way what the update holds (see [`UpdateSize`]).
///
/// ```
/// use aetherflow_crdt::update_check::measure_update_v1;
/// use yrs::{Doc, Map, ReadTxn, StateVector, Transact};
///
/// let doc = Doc::with_client_id(1);
/// let map = doc.get_or_insert_map("m");
/// for i in 0..10 {
///     map.insert(&mut doc.transact_mut(), format!("k{i}"), i);
/// }
/// let update = doc.transact().encode_state_as_update_v1(&StateVector::default());
/// let size = measure_update_v1(&update).unwrap();
/// assert_eq!(size.items, 10);
/// assert!(size.content_bytes > 0 && size.content_bytes < update.len() as u64);
/// ```
pub fn measure_update_v1(bytes: &[u8]) -> Result<UpdateSize, UpdateCheckError> {
    walk_update_v1(bytes, &mut |_| {})
}

/// An item as the walk meets it (garbage-collected ranges and skips are not items).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ItemView<'a> {
    /// The item's id: client and first clock.
    pub id: (u64, u32),
    /// Its length in clock units.
    pub len: u32,
    /// Its left origin's id, if any.
    pub origin: Option<(u64, u32)>,
    /// Its right origin's id, if any.
    pub right_origin: Option<(u64, u32)>,
    /// Its parent, when written (only for items without origins, which inherit it otherwise).
    pub parent: Option<ParentView<'a>>,
    /// Whether it is a map entry with its key written.
    pub parent_sub: bool,
    /// Its content ref (`BITS5` of the info byte): 1 deleted, 2 JSON, 3 binary, 4 string,
    /// 5 embed, 6 format, 7 type, 8 any, 9 doc.
    pub content_ref: u8,
    /// For type content, the type ref: 0 array, 1 map, 2 text, 3 XML element, 4 XML
    /// fragment, 5 XML hook, 6 XML text.
    pub type_ref: Option<u8>,
}

/// An item's parent as written in an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParentView<'a> {
    /// A root type, by name.
    Root(&'a str),
    /// A nested type: the item that holds it.
    Item((u64, u32)),
}

/// [`measure_update_v1`], showing `visit` every item it walks; stops at the first error.
pub(crate) fn walk_update_v1(
    bytes: &[u8],
    visit: &mut dyn FnMut(ItemView<'_>),
) -> Result<UpdateSize, UpdateCheckError> {
    let mut r = Reader::new(bytes);
    let mut size = UpdateSize::default();
    // Per client: block count, client id and first clock, then at least one block.
    let clients = read_count(&mut r, "clients", 3)?;
    for _ in 0..clients {
        // Every block takes an info byte and at least one more.
        let blocks = read_count(&mut r, "blocks", 2)?;
        let client = read_client(&mut r)?;
        let mut clock = u64::from(read_u32(&mut r, "clock")?);
        for _ in 0..blocks {
            let at = u32::try_from(clock).map_err(|_| UpdateCheckError::Overflow("block clock"))?;
            let before = r.remaining();
            let block = check_block(&mut r, (client, at), visit)?;
            clock += u64::from(block.len);
            if clock > u64::from(u32::MAX) {
                return Err(UpdateCheckError::Overflow("block clock"));
            }
            if block.items > 0 {
                size.items += block.items;
                size.content_bytes += (before - r.remaining()) as u64;
            }
        }
    }
    check_delete_set(&mut r)?;
    // Bytes after the delete set are ignored, as yrs and Yjs do.
    Ok(size)
}

/// One walked block: how far it advances its client's clock, and how many items it holds.
struct Block {
    len: u32,
    items: u64,
}

/// Walks one block (yrs drops zero-length items without advancing the clock).
fn check_block(
    r: &mut Reader<'_>,
    id: (u64, u32),
    visit: &mut dyn FnMut(ItemView<'_>),
) -> Result<Block, UpdateCheckError> {
    let info = r.read_u8()?;
    if info == SKIP_INFO || info == GC_INFO {
        let len = read_u32(r, "block length")?;
        return if len == 0 {
            Err(UpdateCheckError::EmptyBlock)
        } else {
            Ok(Block { len, items: 0 })
        };
    }
    let origin = if info & HAS_ORIGIN != 0 {
        Some(read_id(r)?)
    } else {
        None
    };
    let right_origin = if info & HAS_RIGHT_ORIGIN != 0 {
        Some(read_id(r)?)
    } else {
        None
    };
    let mut parent = None;
    let mut parent_sub = false;
    if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
        parent = Some(if read_u32(r, "parent info")? == 1 {
            ParentView::Root(read_string(r)?)
        } else {
            ParentView::Item(read_id(r)?)
        });
        if info & HAS_PARENT_SUB != 0 {
            read_string(r)?;
            parent_sub = true;
        }
    }
    let content_ref = info & CONTENT_REF_MASK;
    let (len, type_ref) = check_content(r, content_ref)?;
    visit(ItemView {
        id,
        len,
        origin,
        right_origin,
        parent,
        parent_sub,
        content_ref,
        type_ref,
    });
    // An `Any` or JSON content holds one value per clock unit.
    let items = match content_ref {
        2 | 8 => u64::from(len).max(1),
        _ => 1,
    };
    Ok(Block { len, items })
}

/// Walks an item's content; returns its length in clock units as yrs counts it and, for a
/// type, its type ref.
fn check_content(
    r: &mut Reader<'_>,
    content_ref: u8,
) -> Result<(u32, Option<u8>), UpdateCheckError> {
    if content_ref == 7 {
        // Type: a type ref byte, plus a tag name for XML elements.
        let type_ref = r.read_u8()?;
        match type_ref {
            3 => {
                read_string(r)?;
            }
            0 | 1 | 2 | 4 | 5 | 6 | 9 | 15 => {}
            other => return Err(UpdateCheckError::UnknownTypeRef(other)),
        }
        return Ok((1, Some(type_ref)));
    }
    check_value_content(r, content_ref).map(|len| (len, None))
}

/// Walks an item's content other than a type; returns its length in clock units.
fn check_value_content(r: &mut Reader<'_>, content_ref: u8) -> Result<u32, UpdateCheckError> {
    match content_ref {
        // Deleted: only a length.
        1 => read_u32(r, "deleted length"),
        // JSON: yrs reads one more string than the count says (`while remaining >= 0`), and
        // refuses counts that are negative as an i32; mirror both so the walk stays in step.
        2 => {
            let count = read_u32(r, "JSON count")?;
            if i32::try_from(count).is_err() {
                return Err(UpdateCheckError::Overflow("JSON count"));
            }
            let strings = count + 1;
            ensure_fits(r, "JSON strings", u64::from(strings), 1)?;
            for _ in 0..strings {
                read_string(r)?;
            }
            Ok(strings)
        }
        // Binary.
        3 => {
            read_u32_len_bytes(r)?;
            Ok(1)
        }
        // String: yrs measures it in UTF-16 code units.
        4 => {
            let s = read_string(r)?;
            let units = s.encode_utf16().count();
            u32::try_from(units).map_err(|_| UpdateCheckError::Overflow("string length"))
        }
        // Embed: a JSON string that yrs parses.
        5 => {
            check_json_nesting(read_string(r)?)?;
            Ok(1)
        }
        // Format: a key, then a JSON string that yrs parses.
        6 => {
            read_string(r)?;
            check_json_nesting(read_string(r)?)?;
            Ok(1)
        }
        // Any: a count, then that many values.
        8 => {
            let count = read_u32(r, "value count")?;
            ensure_fits(r, "values", u64::from(count), 1)?;
            for _ in 0..count {
                check_any(r)?;
            }
            Ok(count)
        }
        // Doc: a guid, then its options as one `Any` value.
        9 => {
            read_string(r)?;
            check_any(r)?;
            Ok(1)
        }
        other => Err(UpdateCheckError::UnknownContent(other)),
    }
}

/// Walks the delete set: per client, its id and its `(clock, len)` ranges.
fn check_delete_set(r: &mut Reader<'_>) -> Result<(), UpdateCheckError> {
    // Per client: its id and its range count.
    let clients = read_count(r, "delete set clients", 2)?;
    for _ in 0..clients {
        read_client(r)?;
        let ranges = read_count(r, "delete ranges", 2)?;
        for _ in 0..ranges {
            let clock = read_u32(r, "delete clock")?;
            let len = read_u32(r, "delete length")?;
            if clock.checked_add(len).is_none() {
                return Err(UpdateCheckError::Overflow("delete range"));
            }
        }
    }
    Ok(())
}

/// One `Any` array or map whose elements are still being read.
#[derive(Debug, Clone, Copy, Default)]
struct OpenContainer {
    /// Elements (or map entries) not read yet.
    left: u64,
    /// A map: every element is preceded by its key.
    is_map: bool,
}

/// Walks one lib0 `Any` value (`readAny`), nested containers included, without recursion.
fn check_any(r: &mut Reader<'_>) -> Result<(), UpdateCheckError> {
    let mut open = [OpenContainer::default(); MAX_NESTING];
    let mut depth = 0;
    loop {
        match r.read_u8()? {
            // undefined, null, false, true
            127 | 126 | 121 | 120 => {}
            // integer
            125 => skip_var_int(r)?,
            // float32
            124 => {
                r.read_exact(4)?;
            }
            // float64, bigint
            123 | 122 => {
                r.read_exact(8)?;
            }
            // string
            119 => {
                read_string(r)?;
            }
            // buffer
            116 => {
                read_u32_len_bytes(r)?;
            }
            // map (key + value per entry, at least two bytes) or array
            tag @ (118 | 117) => {
                let is_map = tag == 118;
                let left = read_count(r, "nested values", if is_map { 2 } else { 1 })?;
                let slot = open
                    .get_mut(depth)
                    .ok_or(UpdateCheckError::TooDeep { limit: MAX_NESTING })?;
                *slot = OpenContainer { left, is_map };
                depth += 1;
            }
            tag => return Err(UpdateCheckError::UnknownAnyTag(tag)),
        }
        // Move to the next element, closing the containers that are complete.
        loop {
            let Some(top) = depth.checked_sub(1).and_then(|i| open.get_mut(i)) else {
                return Ok(());
            };
            if top.left == 0 {
                depth -= 1;
                continue;
            }
            top.left -= 1;
            if top.is_map {
                read_string(r)?;
            }
            break;
        }
    }
}

/// Skips a lib0 signed varint (6 bits in the first byte, 7 in each next one). yrs shifts past
/// 64 bits (a debug panic) from the tenth byte on, and lib0 writes at most five; refuse beyond
/// nine, which keeps the value below 2^62.
fn skip_var_int(r: &mut Reader<'_>) -> Result<(), UpdateCheckError> {
    const MAX_BYTES: usize = 9;
    for _ in 0..MAX_BYTES {
        if r.read_u8()? & 0x80 == 0 {
            return Ok(());
        }
    }
    Err(UpdateCheckError::Overflow("integer value"))
}

/// Refuses JSON text whose arrays and objects nest deeper than [`MAX_NESTING`]. Only brackets
/// outside string literals count; malformed JSON is left for the JSON parser to refuse.
fn check_json_nesting(json: &str) -> Result<(), UpdateCheckError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for byte in json.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(UpdateCheckError::TooDeep { limit: MAX_NESTING });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Reads a count of elements that each take at least `min_bytes`, refusing counts that cannot
/// fit in what is left of the input (yrs reserves memory for them before reading any) and counts
/// beyond the `u32` that yrs reads most of them into.
fn read_count(
    r: &mut Reader<'_>,
    what: &'static str,
    min_bytes: usize,
) -> Result<u64, UpdateCheckError> {
    let count = r.read_var_uint()?;
    ensure_fits(r, what, count, min_bytes)?;
    if count > u64::from(u32::MAX) {
        return Err(UpdateCheckError::Overflow(what));
    }
    Ok(count)
}

/// Refuses `count` elements of at least `min_bytes` each if the rest of the input is shorter.
fn ensure_fits(
    r: &Reader<'_>,
    what: &'static str,
    count: u64,
    min_bytes: usize,
) -> Result<(), UpdateCheckError> {
    let remaining = r.remaining();
    if count > (remaining / min_bytes.max(1)) as u64 {
        return Err(UpdateCheckError::CountExceedsInput {
            what,
            declared: count,
            remaining,
        });
    }
    Ok(())
}

/// Reads a varuint that yrs stores in a `u32`.
fn read_u32(r: &mut Reader<'_>, what: &'static str) -> Result<u32, UpdateCheckError> {
    u32::try_from(r.read_var_uint()?).map_err(|_| UpdateCheckError::Overflow(what))
}

/// Reads a client id, refusing ids yrs asserts against.
fn read_client(r: &mut Reader<'_>) -> Result<u64, UpdateCheckError> {
    let client = r.read_var_uint()?;
    if client >= CLIENT_ID_LIMIT {
        return Err(UpdateCheckError::ClientIdOutOfRange(client));
    }
    Ok(client)
}

/// Reads an item id: client, then clock.
fn read_id(r: &mut Reader<'_>) -> Result<(u64, u32), UpdateCheckError> {
    Ok((read_client(r)?, read_u32(r, "id clock")?))
}

/// Reads a string with a `u32` byte length, as yrs does.
fn read_string<'a>(r: &mut Reader<'a>) -> Result<&'a str, UpdateCheckError> {
    std::str::from_utf8(read_u32_len_bytes(r)?).map_err(|_| UpdateCheckError::InvalidUtf8)
}

/// Reads a byte array with a `u32` length, as yrs does.
fn read_u32_len_bytes<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], UpdateCheckError> {
    let len = read_u32(r, "byte length")?;
    Ok(r.read_exact(u64::from(len))?)
}

#[cfg(test)]
mod tests;
