//! The history contract as tests: every engine with a [`DocumentHistory`] runs [`run`] against
//! itself (opened through the same [`Engine`] as the storage conformance suite).
//!
//! A document is typed by two authors taking turns (so every entry is a version of its own),
//! compacted half way and at the end; then the timeline must list every entry with its
//! authors and size, the state at every entry must be the text typed up to it, labels must
//! come and go, everything must survive a reopen, and thinning must drop versions without
//! changing the state at any version it keeps.

use std::collections::BTreeMap;

use aetherflow_crdt::DocName;
use yrs::{Doc, GetString, ReadTxn, Text, Transact, Update, updates::decoder::Decode};

use super::Retention;
use crate::storage::conformance::{Checked, Engine, Violation, check};
use crate::storage::{DocumentHistory, Storage, StoredDoc};

/// Entries typed; every one is its own version (the authors alternate).
const ENTRIES: usize = 24;
/// The entry labelled (0-based).
const LABELLED: usize = 3;

/// Two writers typing one letter each in turn, and the text after every update.
struct Typed {
    updates: Vec<(Vec<u8>, &'static str)>,
    text_after: Vec<String>,
    /// The document after every update, as a snapshot.
    state_after: Vec<Vec<u8>>,
}

fn typed() -> Typed {
    let writers = [
        (Doc::with_client_id(1), "ada"),
        (Doc::with_client_id(2), "bob"),
    ];
    let mut typed = Typed {
        updates: Vec::new(),
        text_after: Vec::new(),
        state_after: Vec::new(),
    };
    for i in 0..ENTRIES {
        let (doc, author) = &writers[i % 2];
        let (other, _) = &writers[(i + 1) % 2];
        let text = doc.get_or_insert_text("t");
        let before = doc.transact().state_vector();
        let letter = char::from(b'a' + (i % 26) as u8).to_string();
        let len = text.len(&doc.transact());
        text.insert(&mut doc.transact_mut(), len, &letter);
        let update = doc.transact().encode_state_as_update_v1(&before);
        if let Ok(decoded) = Update::decode_v1(&update) {
            let _ = other.transact_mut().apply_update(decoded);
        }
        typed.text_after.push(text.get_string(&doc.transact()));
        let state = doc
            .transact()
            .encode_state_as_update_v1(&Default::default());
        typed.state_after.push(state);
        typed.updates.push((update, author));
    }
    typed
}

fn name() -> DocName {
    DocName::parse("history-conformance").expect("a valid test name")
}

/// The text of `t` in a stored state.
fn text_of(stored: &StoredDoc) -> Result<String, Violation> {
    let doc = super::restore::doc_of(stored)
        .map_err(|e| Violation(format!("a state does not decode: {e}")))?;
    let text = doc.get_or_insert_text("t");
    Ok(text.get_string(&doc.transact()))
}

/// Runs every check against `engine`; the first broken rule ends the run.
pub(crate) async fn run(engine: &mut impl Engine) -> Checked {
    let typed = typed();
    let storage = engine.open().await;
    let history = history_of(&storage)?;
    write(&storage, &typed).await?;
    let seqs = timeline_lists_every_entry(history.as_ref(), &typed).await?;
    states_are_the_text_typed_so_far(history.as_ref(), &typed, &seqs).await?;
    labels_come_and_go(history.as_ref(), &seqs).await?;
    drop((history, storage));
    let reopened = engine.open().await;
    let history = history_of(&reopened)?;
    let after = history.timeline(name()).await?;
    check(
        after.entries.len() == ENTRIES && after.labels.contains_key(&seqs[LABELLED]),
        || format!("after a reopen the timeline is {after:?}"),
    )?;
    states_are_the_text_typed_so_far(history.as_ref(), &typed, &seqs).await?;
    thinning_keeps_every_kept_state(history.as_ref(), &typed, &seqs).await
}

fn history_of(storage: &Storage) -> Result<std::sync::Arc<dyn DocumentHistory>, Violation> {
    storage
        .history
        .clone()
        .ok_or_else(|| Violation("the engine keeps no history".into()))
}

/// Appends every update with its author, compacting half way and at the end.
async fn write(storage: &Storage, typed: &Typed) -> Checked {
    for (i, (update, author)) in typed.updates.iter().enumerate() {
        let authors = vec![(*author).to_owned()];
        let committing = storage.log.append(name(), update.clone(), authors).await?;
        committing.await?;
        if i + 1 == ENTRIES / 2 || i + 1 == ENTRIES {
            storage
                .log
                .compact(name(), typed.state_after[i].clone())
                .await?;
        }
    }
    storage.log.flush().await?;
    Ok(())
}

/// The timeline holds every entry, in order, with its authors and size; their sequence
/// numbers.
async fn timeline_lists_every_entry(
    history: &dyn DocumentHistory,
    typed: &Typed,
) -> Result<Vec<u64>, Violation> {
    let timeline = history.timeline(name()).await?;
    let found: Vec<(Vec<String>, u64)> = timeline
        .entries
        .iter()
        .map(|e| (e.authors.clone(), e.bytes))
        .collect();
    let expected: Vec<(Vec<String>, u64)> = typed
        .updates
        .iter()
        .map(|(update, author)| (vec![(*author).to_owned()], update.len() as u64))
        .collect();
    check(found == expected, || {
        format!("the timeline lists {found:?}, not {expected:?}")
    })?;
    let seqs: Vec<u64> = timeline.entries.iter().map(|e| e.seq).collect();
    check(seqs.windows(2).all(|w| w[0] < w[1]), || {
        format!("sequence numbers {seqs:?} do not increase")
    })?;
    check(timeline.entries.iter().all(|e| e.time_ms > 0), || {
        "an entry has no time".into()
    })?;
    Ok(seqs)
}

async fn states_are_the_text_typed_so_far(
    history: &dyn DocumentHistory,
    typed: &Typed,
    seqs: &[u64],
) -> Checked {
    for (seq, expected) in seqs.iter().zip(&typed.text_after) {
        let Some(state) = history.at(name(), *seq).await? else {
            return Err(Violation(format!("no state at kept entry {seq}")));
        };
        let text = text_of(&state)?;
        check(text == *expected, || {
            format!("the state at entry {seq} is {text:?}, not {expected:?}")
        })?;
    }
    let past_the_end = seqs.last().map_or(1, |s| s + 1000);
    let none = history.at(name(), past_the_end).await?;
    check(none.is_none(), || {
        format!("entry {past_the_end} was never appended, yet has a state")
    })
}

async fn labels_come_and_go(history: &dyn DocumentHistory, seqs: &[u64]) -> Checked {
    let (labelled, other) = (seqs[LABELLED], seqs[LABELLED + 2]);
    check(
        history
            .label(name(), labelled, Some("draft".into()))
            .await?,
        || "labelling a kept entry failed".into(),
    )?;
    check(
        history.label(name(), other, Some("tmp".into())).await?,
        || "labelling a second entry failed".into(),
    )?;
    let unknown = seqs.last().map_or(1, |s| s + 1000);
    check(
        !history.label(name(), unknown, Some("x".into())).await?,
        || "an entry that does not exist was labelled".into(),
    )?;
    check(history.label(name(), other, None).await?, || {
        "removing a label failed".into()
    })?;
    check(!history.label(name(), other, None).await?, || {
        "removing a label twice succeeded".into()
    })?;
    let labels = history.timeline(name()).await?.labels;
    let expected = BTreeMap::from([(labelled, "draft".to_owned())]);
    check(labels == expected, || {
        format!("labels are {labels:?}, not {expected:?}")
    })
}

/// Thinning to the newest version (and the labelled one) drops versions, keeps the label,
/// and every entry it keeps has the same state as before.
async fn thinning_keeps_every_kept_state(
    history: &dyn DocumentHistory,
    typed: &Typed,
    seqs: &[u64],
) -> Checked {
    let retention = Retention {
        keep_all_ms: 0,
        hourly_ms: 0,
        keep_newest: 1,
    };
    let dropped = history.thin(name(), retention, u64::MAX / 2).await?;
    check(dropped > 0, || "thinning dropped no version".into())?;
    let timeline = history.timeline(name()).await?;
    check(timeline.entries.len() < ENTRIES, || {
        format!("{} entries are left after thinning", timeline.entries.len())
    })?;
    check(timeline.labels.contains_key(&seqs[LABELLED]), || {
        "thinning dropped a labelled version".into()
    })?;
    for entry in &timeline.entries {
        let Some(i) = seqs.iter().position(|s| *s == entry.seq) else {
            return Err(Violation(format!(
                "entry {} appeared from nowhere",
                entry.seq
            )));
        };
        let Some(state) = history.at(name(), entry.seq).await? else {
            return Err(Violation(format!("kept entry {} has no state", entry.seq)));
        };
        let text = text_of(&state)?;
        check(text == typed.text_after[i], || {
            format!("after thinning the state at {} is {text:?}", entry.seq)
        })?;
    }
    let newest = timeline.entries.last().map(|e| e.seq);
    check(newest == seqs.last().copied(), || {
        format!("the newest entry {newest:?} did not survive thinning")
    })
}
