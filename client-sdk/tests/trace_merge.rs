//! Concurrent editing sessions (two or more people typing at once) replayed on replicas that
//! only see each other's edits when the session says so, then merged offline: every replica
//! must end with the session's final text.
//!
//! Runs on a seeded generated session always, and also on the real `friendsforever` trace
//! where `../shared/traces/` holds it (CI clones the repository with `shared/` beside it; a
//! plain clone has no such folder). Each run prints the data it used on stderr.
#![allow(clippy::unwrap_used, missing_docs)]

use std::io::Write;

use aetherflow_client::testing::Replicas;
use aetherflow_crdt::update_file;
use aetherflow_editing::{EditTrace, Fallback, session};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

/// Says which data a test ran on. Written to stderr directly, past the test harness's output
/// capture, so that it shows in every run, not only in failing ones.
fn announce(test: &str, what: &str) {
    let _ = writeln!(std::io::stderr(), "{test}: {what}");
}

/// Brings agent `doc` to the version of `parents`: applies every ancestor it has not seen, in
/// trace order (which is causal order).
fn catch_up(
    doc: &Doc,
    known: &mut [bool],
    trace: &EditTrace,
    updates: &[Vec<u8>],
    parents: &[usize],
) {
    let mut missing = Vec::new();
    let mut stack: Vec<usize> = parents.to_vec();
    while let Some(i) = stack.pop() {
        if !known[i] {
            known[i] = true;
            missing.push(i);
            stack.extend(&trace.txns[i].parents);
        }
    }
    missing.sort_unstable();
    let mut txn = doc.transact_mut();
    for i in missing {
        txn.apply_update(Update::decode_v1(&updates[i]).unwrap())
            .unwrap();
    }
}

/// Replays `trace` with one replica per agent, merges the replicas' saved states offline (as
/// `aetherflow merge` does) and by state-vector exchange, and checks both give the final text.
fn replay_apart_then_merge(trace: &EditTrace, source: &str) {
    // The positions count code points; these sessions are ASCII, where yrs' offsets agree.
    assert!(trace.end_content.is_ascii(), "{source}");
    let docs: Vec<Doc> = (0..trace.num_agents)
        .map(|agent| Doc::with_client_id(agent as u64 + 1))
        .collect();
    let mut known = vec![vec![false; trace.txns.len()]; trace.num_agents];
    let mut updates: Vec<Vec<u8>> = Vec::with_capacity(trace.txns.len());
    for (i, t) in trace.txns.iter().enumerate() {
        let doc = &docs[t.agent];
        catch_up(doc, &mut known[t.agent], trace, &updates, &t.parents);
        let text = doc.get_or_insert_text("text");
        let mut txn = doc.transact_mut();
        for (pos, deleted, inserted) in &t.patches {
            if *deleted > 0 {
                text.remove_range(&mut txn, *pos, *deleted);
            }
            if !inserted.is_empty() {
                text.insert(&mut txn, *pos, inserted);
            }
        }
        updates.push(txn.encode_update_v1());
        known[t.agent][i] = true;
    }

    // The replicas really were apart: they saw each other's typing only where the session's
    // parents say so (hundreds of merges; 2,258 in friendsforever), and at the end some
    // replica lacks another's last edits.
    let merges = trace.txns.iter().filter(|t| t.parents.len() > 1).count();
    assert!(merges > 100, "{source}: {merges} merges");
    let unseen: usize = known.iter().flatten().filter(|k| !**k).count();
    assert!(unseen > 0, "{source}");
    let replicas = Replicas::from_docs(docs);
    assert!(
        (0..trace.num_agents).any(|agent| replicas.text(agent, "text") != trace.end_content),
        "{source}"
    );
    // Merging their saved states offline, as `aetherflow merge` does, gives the final text...
    let saved: Vec<Vec<u8>> = (0..trace.num_agents)
        .map(|i| {
            replicas
                .get(i)
                .transact()
                .encode_state_as_update_v1(&StateVector::default())
        })
        .collect();
    let merged = update_file::merge(&saved).unwrap();
    let doc = Doc::new();
    let text = doc.get_or_insert_text("text");
    doc.transact_mut()
        .apply_update(Update::decode_v1(&merged).unwrap())
        .unwrap();
    assert_eq!(
        text.get_string(&doc.transact()),
        trace.end_content,
        "{source}"
    );
    // ...and so does a state-vector exchange between the replicas themselves.
    replicas.merge();
    assert_eq!(
        replicas.assert_converged("text"),
        trace.end_content,
        "{source}"
    );
}

#[test]
fn a_generated_two_person_session_replayed_apart_merges_to_the_final_text() {
    let fallback = Fallback::concurrent(20_261_207, 2, 6_000);
    let what = format!("ran on a generated two-person session ({fallback:?})");
    announce("trace_merge", &what);
    replay_apart_then_merge(&fallback.generate(), &what);
}

#[test]
fn the_real_friendsforever_trace_replayed_apart_merges_to_the_final_text_where_present() {
    // Falls back to a generated session of the same shape (2 agents, 26,078 txns) where the
    // real trace is absent, so the test means the same on a plain clone.
    let (trace, source) = session(
        "friendsforever.json.gz",
        Fallback::concurrent(26_078, 2, 26_078),
    )
    .unwrap();
    let what = format!("ran on {source}");
    announce("trace_merge", &what);
    assert_eq!(trace.num_agents, 2, "{what}");
    replay_apart_then_merge(&trace, &what);
}
