//! Property test of the history: whatever the appends, compactions, labels, thinning and
//! restarts, the state at every kept entry is the replay of the log up to it.

use aetherflow_crdt::DocName;
use proptest::prelude::*;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact};

use super::{Store, StoreWriter, WriteMode, WriteOp};
use crate::history::{Retention, restore::doc_of};

#[derive(Debug, Clone)]
enum Step {
    /// Insert `text` at `at` (modulo the length) as author `by`.
    Insert { at: u8, text: String, by: u8 },
    /// Delete up to `len` characters from `at`.
    Delete { at: u8, len: u8 },
    /// Fold the log into a snapshot of the state so far.
    Compact,
    /// Label the last entry.
    Label,
    /// Thin keeping the newest `keep` versions only.
    Thin { keep: u8 },
    /// A new writer (as after a restart): its sequence numbers come from the tables.
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (any::<u8>(), "[a-z]{1,3}", 0u8..3).prop_map(|(at, text, by)| Step::Insert { at, text, by }),
        2 => (any::<u8>(), 1u8..4).prop_map(|(at, len)| Step::Delete { at, len }),
        2 => Just(Step::Compact),
        1 => Just(Step::Label),
        1 => (1u8..4).prop_map(|keep| Step::Thin { keep }),
        1 => Just(Step::Restart),
    ]
}

/// The model: a yrs document edited by the steps, and the text after each appended entry.
struct Model {
    doc: Doc,
    text_after: Vec<String>,
}

impl Model {
    /// Applies an edit to the model; the update it made, if any.
    fn edit(&mut self, step: &Step) -> Option<Vec<u8>> {
        let text = self.doc.get_or_insert_text("t");
        let before = self.doc.transact().state_vector();
        {
            let mut txn = self.doc.transact_mut();
            let len = text.len(&txn);
            match step {
                Step::Insert { at, text: s, .. } => {
                    text.insert(&mut txn, u32::from(*at) % (len + 1), s);
                }
                Step::Delete { at, len: n } if len > 0 => {
                    let at = u32::from(*at) % len;
                    text.remove_range(&mut txn, at, u32::from(*n).min(len - at));
                }
                _ => return None,
            }
        }
        let update = self.doc.transact().encode_state_as_update_v1(&before);
        self.text_after.push(text.get_string(&self.doc.transact()));
        Some(update)
    }
}

fn text_of(stored: &crate::storage::StoredDoc) -> String {
    let doc = doc_of(stored).expect("the stored state loads");
    let text = doc.get_or_insert_text("t");
    text.get_string(&doc.transact())
}

/// The write `step` makes, editing the model; `None` for a step that writes nothing.
fn op_of(store: &Store, step: &Step, doc: &DocName, model: &mut Model) -> Option<WriteOp> {
    Some(match step {
        Step::Insert { by, .. } | Step::Delete { at: by, .. } => WriteOp::Append {
            doc: doc.clone(),
            update: model.edit(step)?,
            authors: vec![format!("author-{}", by % 3)],
        },
        Step::Compact => WriteOp::Compact {
            doc: doc.clone(),
            snapshot: model
                .doc
                .transact()
                .encode_state_as_update_v1(&StateVector::default()),
        },
        Step::Label => WriteOp::Label {
            doc: doc.clone(),
            seq: model.text_after.len().checked_sub(1)? as u64,
            label: Some(format!("label {}", model.text_after.len())),
        },
        Step::Thin { keep } => {
            let retention = Retention {
                keep_all_ms: 0,
                hourly_ms: 0,
                keep_newest: usize::from(*keep),
            };
            // Far ahead: every version is old, and all fall in one day.
            let merges = store
                .thin_plan(doc, retention, u64::MAX / 2)
                .expect("planned");
            WriteOp::Thin {
                doc: doc.clone(),
                merges,
            }
        }
        Step::Restart => return None,
    })
}

async fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("db.redb")).expect("store");
    let (mut writer, _task) = StoreWriter::spawn(store.clone(), WriteMode::Durable);
    let doc = DocName::parse("props").expect("a valid name");
    let mut model = Model {
        doc: Doc::with_client_id(1),
        text_after: Vec::new(),
    };
    for step in &steps {
        if let Step::Restart = step {
            // A new writer, as after a restart: sequence numbers come from the tables.
            (writer, _) = StoreWriter::spawn(store.clone(), WriteMode::Durable);
        } else if let Some(op) = op_of(&store, step, &doc, &mut model) {
            writer.commit(op).await.expect("committed");
        }
    }
    check(&store, &doc, &model)
}

/// Checks the store's history of `doc` against the model.
fn check(store: &Store, doc: &DocName, model: &Model) -> Result<(), TestCaseError> {
    let timeline = store.timeline(doc).expect("timeline");
    let seqs: Vec<u64> = timeline.entries.iter().map(|e| e.seq).collect();
    prop_assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs {seqs:?}");
    if let Some(&last) = seqs.last() {
        // Numbers never restart: the last entry has the number of the last append.
        prop_assert_eq!(last as usize + 1, model.text_after.len());
    }
    for label in timeline.labels.keys() {
        prop_assert!(
            seqs.contains(label),
            "labelled entry {label} was thinned away"
        );
    }
    for seq in seqs {
        let at = store.at(doc, seq).expect("readable").expect("a kept entry");
        prop_assert_eq!(
            &text_of(&at),
            &model.text_after[seq as usize],
            "at entry {}",
            seq
        );
    }
    let loaded = store.load(doc).expect("loads");
    let now = model.text_after.last().cloned().unwrap_or_default();
    prop_assert_eq!(text_of(&loaded), now, "the current document");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_state_at_every_kept_entry_is_the_replay_of_the_log_up_to_it(
        steps in proptest::collection::vec(step(), 1..60)
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(run(steps))?;
    }
}
