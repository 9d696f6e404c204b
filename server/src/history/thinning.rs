//! Which log entries thinning folds away: the pure plan every engine applies its own way (the
//! embedded engine folds a run of dropped versions into the next kept entry, [`fold_run`];
//! the cluster's engine folds it into a checkpoint).

use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, Transact, Update};

use super::{Retention, versions};
use crate::storage::Timeline;

/// One step of thinning: the entries of dropped versions merged into the first entry of the
/// next kept version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    /// The entry that takes the merged update (and keeps its time and authors).
    pub into: u64,
    /// The entries merged into it and removed.
    pub gone: Vec<u64>,
    /// How many versions they made up.
    pub versions: usize,
}

impl Merge {
    fn empty() -> Merge {
        Merge {
            into: 0,
            gone: Vec::new(),
            versions: 0,
        }
    }
}

/// What thinning `timeline` by `retention` as of `now_ms` merges, oldest first: each run of
/// dropped versions with the first entry of the kept version after it. Nothing while the
/// oldest entry is younger than `retention.keep_all_ms`.
pub fn plan(timeline: &Timeline, retention: Retention, now_ms: u64) -> Vec<Merge> {
    let oldest = timeline.entries.first();
    if oldest.is_none_or(|e| now_ms.saturating_sub(e.time_ms) <= retention.keep_all_ms) {
        return Vec::new();
    }
    let all = versions(&timeline.entries, &timeline.labels);
    let dropped = retention.dropped(&all, now_ms);
    let mut merges = Vec::new();
    let mut pending = Merge::empty();
    let mut entries = timeline.entries.iter().map(|e| e.seq).peekable();
    for version in &all {
        let mut seqs = Vec::new();
        while let Some(seq) = entries.next_if(|seq| *seq <= version.id) {
            seqs.push(seq);
        }
        if dropped.contains(&version.id) {
            pending.gone.extend(seqs);
            pending.versions += 1;
        } else if let (Some(&first), false) = (seqs.first(), pending.gone.is_empty()) {
            pending.into = first;
            merges.push(std::mem::replace(&mut pending, Merge::empty()));
        }
    }
    merges
}

/// A stored entry that does not decode or apply.
#[derive(Debug, thiserror::Error)]
#[error("a stored entry does not apply: {0}")]
pub struct Unappliable(String);

/// Applies one stored entry to `doc`, in a transaction of its own (as a document is loaded).
pub fn apply_entry(doc: &Doc, bytes: &[u8]) -> Result<(), Unappliable> {
    let update = Update::decode_v1(bytes).map_err(|e| Unappliable(e.to_string()))?;
    doc.transact_mut()
        .apply_update(update)
        .map_err(|e| Unappliable(e.to_string()))
}

/// The one entry that replaces a run of entries (oldest first): what applying them adds to
/// `doc`, which holds the state just before them (and the state after them on return),
/// encoded from `doc` itself. Not `yrs::merge_updates_v1`: a merged update keeps every edit a
/// block of its own, and yrs applies one that holds thousands of edits far more slowly than
/// the same edits encoded from a document, where consecutive typing is one block.
pub fn fold_run<'a>(
    doc: &Doc,
    run: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<u8>, Unappliable> {
    let before = doc.transact().state_vector();
    for bytes in run {
        apply_entry(doc, bytes)?;
    }
    Ok(doc.transact().encode_state_as_update_v1(&before))
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{GetString, Text};

    /// `n` one-character edits typed at the end by one client, after `prefix`: the state
    /// after the prefix and each edit as a stored entry.
    fn typed(prefix: &str, n: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
        let doc = Doc::with_client_id(7);
        let text = doc.get_or_insert_text("t");
        text.insert(&mut doc.transact_mut(), 0, prefix);
        let base = doc
            .transact()
            .encode_state_as_update_v1(&Default::default());
        let entries = (0..n)
            .map(|i| {
                let before = doc.transact().state_vector();
                let len = text.len(&doc.transact());
                let c = char::from(b'a' + (i % 26) as u8).to_string();
                text.insert(&mut doc.transact_mut(), len, &c);
                doc.transact().encode_state_as_update_v1(&before)
            })
            .collect();
        (base, entries)
    }

    fn text_of(doc: &Doc) -> String {
        let text = doc.get_or_insert_text("t");
        text.get_string(&doc.transact())
    }

    #[test]
    fn a_folded_run_gives_the_state_after_it_and_keeps_typing_as_one_block() {
        let (base, entries) = typed("hello ", 300);
        let before = Doc::new();
        apply_entry(&before, &base).expect("base applies");
        let folded = fold_run(&before, entries.iter().map(Vec::as_slice)).expect("folds");
        // Applied where the run began, the folded entry gives what the run gave.
        let replayed = Doc::new();
        apply_entry(&replayed, &base).expect("base applies");
        apply_entry(&replayed, &folded).expect("the folded entry applies");
        assert_eq!(text_of(&replayed), text_of(&before));
        assert_eq!(text_of(&replayed).len(), "hello ".len() + 300);
        // 300 keystrokes are one block to integrate, not 300 (what a merge keeps).
        let blocks = |update: &[u8]| {
            aetherflow_crdt::update_check::measure_update_v1(update)
                .expect("a valid update")
                .items
        };
        let merged = yrs::merge_updates_v1(entries.iter().map(Vec::as_slice)).expect("merges");
        assert_eq!(blocks(&folded), 1, "folded run");
        assert!(blocks(&merged) > 100, "merged run: {}", blocks(&merged));
    }

    #[test]
    fn a_run_that_does_not_apply_is_an_error() {
        assert!(fold_run(&Doc::new(), [&[0xff, 0xff, 0xff][..]]).is_err());
    }
}
