//! Which log entries thinning folds away: the pure plan every engine applies its own way (the
//! embedded engine merges a run of dropped versions into the next kept entry; the cluster's
//! engine folds it into a checkpoint).

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
