//! Thinning in the redb engine: a run of dropped versions becomes one entry, folded from a
//! document rebuilt at the state before the run ([`fold_run`]), and replaces the first entry
//! of the next kept version, which keeps its time and authors. The rebuilding starts from a
//! base that stays (a checkpoint, never the current snapshot), so every state remains the
//! replay of a kept base and the kept entries after it, whichever base a read starts from.
//!
//! The plan and the folding read the store without the writer ([`Store::thin_plan`]): the
//! scan of the whole history and the rebuilding stay off the one writer task, which only
//! swaps entries, and skips a run whose entries changed since they were read (one of them
//! gone, labelled, or rewritten by another thinning).

use aetherflow_crdt::DocName;
use redb::{ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction};
use yrs::Doc;

use super::documents::Tables;
use super::history::{LABELS, lasting_base_at};
use super::{Store, UPDATE_LOG, checksum};
use crate::history::Retention;
use crate::history::thinning::{Merge, apply_entry, fold_run, plan};
use crate::storage::{Damage, StoreError};

/// A merge ready for the writer: the entry that replaces its run, and the CRC-32 of every
/// entry of the run as it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMerge {
    /// Which entries go, and which one takes the folded entry.
    pub merge: Merge,
    /// The run's entries folded into one (see [`fold_run`]).
    pub folded: Vec<u8>,
    /// Each entry of the run (`merge.gone`, then `merge.into`) with the CRC-32 it had.
    read: Vec<(u64, u32)>,
}

impl Store {
    /// What thinning `doc` by `retention` as of `now_ms` would do: the merges of its plan,
    /// each with its run folded, oldest first. A run that cannot be read or folded (a
    /// damaged entry) ends the plan there. Blocking.
    pub fn thin_plan(
        &self,
        doc: &DocName,
        retention: Retention,
        now_ms: u64,
    ) -> Result<Vec<PlannedMerge>, StoreError> {
        let merges = plan(&self.timeline(doc)?, retention, now_ms);
        if merges.is_empty() {
            return Ok(Vec::new());
        }
        self.contained(|| {
            let txn = self.database()?.begin_read()?;
            fold_merges(&txn, doc, merges)
        })
    }
}

/// Folds each merge's run, replaying `doc` once from the base before the first run.
fn fold_merges(
    txn: &ReadTransaction,
    doc: &DocName,
    merges: Vec<Merge>,
) -> Result<Vec<PlannedMerge>, StoreError> {
    let name = doc.as_str();
    let damaged = |damage| StoreError::Damaged {
        doc: doc.to_string(),
        damage,
    };
    let Some(first) = merges.first().map(run_start) else {
        return Ok(Vec::new());
    };
    let state = Doc::new();
    // Entries below `next` are in `state`.
    let mut next = 0;
    if let Some((at, bytes, sum)) = lasting_base_at(txn, name, first)? {
        checksum::verify(sum, &bytes, Damage::Snapshot).map_err(damaged)?;
        if apply_entry(&state, &bytes).is_err() {
            return Ok(Vec::new());
        }
        next = at;
    }
    let log = txn.open_table(UPDATE_LOG)?;
    let sums = txn.open_table(checksum::LOG_SUMS)?;
    let mut planned = Vec::with_capacity(merges.len());
    for merge in merges {
        let start = run_start(&merge);
        let mut run = Vec::new();
        let mut read = Vec::new();
        for entry in log.range((name, next)..=(name, merge.into))? {
            let (key, value) = entry?;
            let seq = key.value().1;
            let bytes = value.value();
            let stored = checksum::log_sum(&sums, name, seq)?;
            checksum::verify(stored, bytes, Damage::LogEntry(seq)).map_err(damaged)?;
            if seq < start {
                // A kept entry between runs.
                if apply_entry(&state, bytes).is_err() {
                    return Ok(planned);
                }
            } else {
                read.push((seq, checksum::sum(bytes)));
                run.push(bytes.to_vec());
            }
        }
        next = merge.into.saturating_add(1);
        let Ok(folded) = fold_run(&state, run.iter().map(Vec::as_slice)) else {
            tracing::warn!(%doc, "history entries not thinned: they do not apply");
            return Ok(planned);
        };
        let planned_seqs = merge.gone.iter().chain([&merge.into]);
        if read.iter().map(|(seq, _)| seq).eq(planned_seqs) {
            planned.push(PlannedMerge {
                merge,
                folded,
                read,
            });
        }
    }
    Ok(planned)
}

/// The first entry of a merge's run.
fn run_start(merge: &Merge) -> u64 {
    merge.gone.first().copied().unwrap_or(merge.into)
}

/// Applies `merges` (planned by [`Store::thin_plan`] from an earlier read) to `doc`; how many
/// versions they dropped. A merge whose entries changed meanwhile (gone, rewritten, or one of
/// them labelled since) is skipped.
pub(super) fn thin(
    txn: &WriteTransaction,
    tables: &mut Tables<'_>,
    doc: &DocName,
    merges: &[PlannedMerge],
) -> Result<usize, StoreError> {
    let name = doc.as_str();
    let labels = txn.open_table(LABELS)?;
    let mut dropped = 0;
    'merges: for planned in merges {
        let merge = &planned.merge;
        for &(seq, sum) in &planned.read {
            let labelled = seq != merge.into && labels.get((name, seq))?.is_some();
            let unchanged = tables
                .log
                .get((name, seq))?
                .is_some_and(|entry| checksum::sum(entry.value()) == sum);
            if labelled || !unchanged {
                continue 'merges;
            }
        }
        for seq in &merge.gone {
            tables.remove_entry(doc, *seq)?;
        }
        tables.replace_entry(doc, merge.into, &planned.folded)?;
        dropped += merge.versions;
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StoreWriter, WriteMode, WriteOp, WriteResult};
    use yrs::{GetString, ReadTxn, Text, Transact};

    /// A store with `doc` written by one Yjs client: each `(text, who)` appended at the end of
    /// text `t` as an entry of its own, authored by `who`.
    async fn typed(
        doc: &DocName,
        edits: &[(&str, &str)],
    ) -> (tempfile::TempDir, Store, StoreWriter) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("db.redb")).expect("store");
        let (writer, _task) = StoreWriter::spawn(store.clone(), WriteMode::Durable);
        let text = yrs::Doc::with_client_id(1);
        let root = text.get_or_insert_text("t");
        for (s, who) in edits {
            let before = text.transact().state_vector();
            let len = root.len(&text.transact());
            root.insert(&mut text.transact_mut(), len, s);
            let append = WriteOp::Append {
                doc: doc.clone(),
                update: text.transact().encode_state_as_update_v1(&before),
                authors: vec![(*who).to_owned()],
            };
            writer.commit(append).await.expect("appended");
        }
        (dir, store, writer)
    }

    /// Every version old, only the newest kept.
    const NEWEST_ONLY: Retention = Retention {
        keep_all_ms: 0,
        hourly_ms: 0,
        keep_newest: 1,
    };

    /// Far ahead: every entry is old.
    const LATER: u64 = u64::MAX / 2;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_thinned_run_of_typing_is_stored_as_one_block_and_keeps_the_text() {
        let doc = DocName::parse("typed").expect("a valid name");
        // 300 keystrokes by ada (one version), then one by bob (the version kept).
        let mut edits = vec![("a", "ada"); 300];
        edits.push(("b", "bob"));
        let (_dir, store, writer) = typed(&doc, &edits).await;
        let merges = store.thin_plan(&doc, NEWEST_ONLY, LATER).expect("planned");
        let thin = WriteOp::Thin {
            doc: doc.clone(),
            merges,
        };
        assert_eq!(
            writer.commit(thin).await.expect("committed"),
            WriteResult::Thinned(1)
        );
        let timeline = store.timeline(&doc).expect("read");
        assert_eq!(timeline.entries.len(), 1, "bob's entry is left");
        let kept = timeline.entries[0].seq;
        let state = store.at(&doc, kept).expect("read").expect("kept");
        assert_eq!(state.log.len(), 1);
        // ada's typing is one block to integrate, bob's another: not 301 blocks.
        let size = aetherflow_crdt::update_check::measure_update_v1(&state.log[0]).expect("valid");
        assert!(
            size.items <= 2,
            "the kept entry holds {} blocks",
            size.items
        );
        let rebuilt = crate::history::restore::doc_of(&state).expect("loads");
        let t = rebuilt.get_or_insert_text("t");
        assert_eq!(
            t.get_string(&rebuilt.transact()),
            format!("{}b", "a".repeat(300))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_version_labelled_after_thinning_was_planned_is_kept() {
        let doc = DocName::parse("race").expect("a valid name");
        let (_dir, store, writer) = typed(&doc, &[("0", "ada"), ("1", "bob"), ("2", "ada")]).await;
        let merges = store.thin_plan(&doc, NEWEST_ONLY, LATER).expect("planned");
        assert_eq!(merges.len(), 1, "versions 0 and 1 merge into 2: {merges:?}");
        let label = WriteOp::Label {
            doc: doc.clone(),
            seq: 0,
            label: Some("keep".into()),
        };
        writer.commit(label).await.expect("labelled");
        let thin = WriteOp::Thin {
            doc: doc.clone(),
            merges,
        };
        assert_eq!(
            writer.commit(thin).await.expect("committed"),
            WriteResult::Thinned(0)
        );
        let timeline = store.timeline(&doc).expect("read");
        let kept: Vec<u64> = timeline.entries.iter().map(|e| e.seq).collect();
        assert_eq!(
            kept,
            [0, 1, 2],
            "nothing merged away from under the new label"
        );
    }
}
