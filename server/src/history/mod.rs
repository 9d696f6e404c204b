//! Version history: the pure rules over a document's kept log (see
//! [`crate::storage::DocumentHistory`]).
//!
//! - [`versions`]: which entries form one version. Consecutive entries by the same authors
//!   (the same set of token subjects) with at most [`VERSION_GAP_MS`] between one and the next
//!   form one version; a labelled entry always ends its version. A version's id is the
//!   sequence number of its last entry, and its content is the document just after that entry.
//!   The newest version keeps growing while its authors keep editing (its id moves with it);
//!   every other version's id is final.
//! - [`retention`]: which versions thinning drops; [`thinning`]: which entries that frees.
//! - [`restore`]: the change that brings a document back to an earlier version.
//! - [`compare`]: what changed between two versions, and who wrote each part of a text.
//!
//! ```
//! use aetherflow_server::history::{VERSION_GAP_MS, versions};
//! use aetherflow_server::storage::HistoryEntry;
//!
//! let entry = |seq, time_ms, who: &str| HistoryEntry {
//!     seq,
//!     time_ms,
//!     authors: vec![who.to_owned()],
//!     bytes: 10,
//! };
//! let log = [entry(0, 0, "ada"), entry(1, 1_000, "ada"), entry(2, 2_000, "bob")];
//! let found = versions(&log, &Default::default());
//! assert_eq!(found.iter().map(|v| v.id).collect::<Vec<_>>(), [1, 2]);
//! assert!(VERSION_GAP_MS >= 1_000);
//! ```

pub mod compare;
#[cfg(test)]
pub(crate) mod conformance;
pub mod restore;
pub mod retention;
pub mod thinning;

use std::collections::BTreeMap;

pub use retention::Retention;

/// A compaction keeps its snapshot as a history checkpoint once the entries since the last
/// checkpoint weigh more than this many times the snapshot: checkpoints then cost at most a
/// `1 / CHECKPOINT_FACTOR` share of the update bytes, and producing any state replays at most
/// about this many times the document's size (plus one compaction interval). 2 keeps a past
/// state of the automerge-paper trace under 40 ms at p99 for 1.10 × the raw update stream on
/// disk; 4 let the p99 reach 53 ms (`benches/RESULTS.md`).
pub const CHECKPOINT_FACTOR: u64 = 2;

use crate::storage::HistoryEntry;

/// Longest pause between two entries of one version, in milliseconds.
pub const VERSION_GAP_MS: u64 = 60_000;

pub use aetherflow_crdt::version::{ANONYMOUS, Version};

/// The versions of a log, oldest first (see the module docs for the rule).
pub fn versions(entries: &[HistoryEntry], labels: &BTreeMap<u64, String>) -> Vec<Version> {
    let mut out: Vec<Version> = Vec::new();
    let mut open = false;
    for entry in entries {
        let authors = shown_authors(&entry.authors);
        let joins = open
            && out.last().is_some_and(|last| {
                last.authors == authors
                    && entry.time_ms.saturating_sub(last.time_ms) <= VERSION_GAP_MS
            });
        if joins && let Some(last) = out.last_mut() {
            last.id = entry.seq;
            last.time_ms = entry.time_ms.max(last.time_ms);
            last.bytes += entry.bytes;
            last.entries += 1;
        } else {
            out.push(Version {
                id: entry.seq,
                first_seq: entry.seq,
                time_ms: entry.time_ms,
                started_ms: entry.time_ms,
                authors,
                bytes: entry.bytes,
                entries: 1,
                label: None,
            });
        }
        let label = labels.get(&entry.seq);
        if let (Some(label), Some(last)) = (label, out.last_mut()) {
            last.label = Some(label.clone());
        }
        open = label.is_none();
    }
    out
}

/// The authors as shown: the subjects, or [`ANONYMOUS`] when none is known.
fn shown_authors(authors: &[String]) -> Vec<String> {
    if authors.is_empty() {
        vec![ANONYMOUS.to_owned()]
    } else {
        authors.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, time_ms: u64, who: &[&str]) -> HistoryEntry {
        HistoryEntry {
            seq,
            time_ms,
            authors: who.iter().map(|w| (*w).to_owned()).collect(),
            bytes: 5,
        }
    }

    #[test]
    fn a_pause_or_another_author_starts_a_new_version() {
        let log = [
            entry(3, 0, &["ada"]),
            entry(4, 60_000, &["ada"]),
            entry(5, 120_001, &["ada"]),
            entry(6, 120_002, &["ada", "bob"]),
            entry(7, 120_003, &[]),
        ];
        let found = versions(&log, &BTreeMap::new());
        let ids: Vec<(u64, u64)> = found.iter().map(|v| (v.first_seq, v.id)).collect();
        assert_eq!(ids, [(3, 4), (5, 5), (6, 6), (7, 7)]);
        assert_eq!(found[0].bytes, 10);
        assert_eq!(found[3].authors, [ANONYMOUS]);
    }

    #[test]
    fn a_label_ends_its_version() {
        let log = [
            entry(0, 0, &["ada"]),
            entry(1, 1, &["ada"]),
            entry(2, 2, &["ada"]),
        ];
        let labels = BTreeMap::from([(0, "draft".to_owned())]);
        let found = versions(&log, &labels);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].id, 0);
        assert_eq!(found[0].label.as_deref(), Some("draft"));
        assert_eq!((found[1].first_seq, found[1].id), (1, 2));
    }
}
