//! A real concurrent editing trace (two people typing at once) replayed on two replicas that
//! only see each other's edits when the trace says so, then merged offline: both must end with
//! the trace's final text.
#![allow(clippy::unwrap_used, missing_docs)]

use std::io::Read;
use std::path::Path;

use aetherflow_client::testing::Replicas;
use aetherflow_crdt::update_file;
use serde::Deserialize;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

#[derive(Deserialize)]
struct Trace {
    #[serde(rename = "endContent")]
    end_content: String,
    #[serde(rename = "numAgents")]
    num_agents: usize,
    txns: Vec<Txn>,
}

#[derive(Deserialize)]
struct Txn {
    parents: Vec<usize>,
    agent: usize,
    /// `(position, deleted, inserted)`, applied one after the other.
    patches: Vec<(u32, u32, String)>,
}

fn load(path: &Path) -> Trace {
    let file = std::fs::File::open(path).unwrap();
    let mut json = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut json)
        .unwrap();
    serde_json::from_str(&json).unwrap()
}

/// Brings agent `doc` to the version of `parents`: applies every ancestor it has not seen, in
/// trace order (which is causal order).
fn catch_up(doc: &Doc, known: &mut [bool], trace: &Trace, updates: &[Vec<u8>], parents: &[usize]) {
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

#[test]
fn friendsforever_replayed_on_two_disconnected_replicas_merges_to_the_final_text() {
    // The workplace's shared traces sit beside the repository (CI clones it with shared/ next
    // to it); they are data, not part of the repository.
    let trace = load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces/friendsforever.json.gz"),
    );
    assert_eq!(trace.num_agents, 2);
    // The positions count code points; this trace is ASCII, where yrs' offsets agree.
    assert!(trace.end_content.is_ascii());
    let docs: Vec<Doc> = (0..trace.num_agents)
        .map(|agent| Doc::with_client_id(agent as u64 + 1))
        .collect();
    let mut known = vec![vec![false; trace.txns.len()]; trace.num_agents];
    let mut updates: Vec<Vec<u8>> = Vec::with_capacity(trace.txns.len());
    for (i, t) in trace.txns.iter().enumerate() {
        let doc = &docs[t.agent];
        catch_up(doc, &mut known[t.agent], &trace, &updates, &t.parents);
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

    // The replicas really were apart: they saw each other's typing only where the trace's
    // parents say so (2,258 merges), and one of them ends without the other's last edits.
    let merges = trace.txns.iter().filter(|t| t.parents.len() > 1).count();
    assert!(merges > 1000, "{merges}");
    let unseen = |agent: usize| known[agent].iter().filter(|k| !**k).count();
    assert!(unseen(0) + unseen(1) > 0);
    let replicas = Replicas::from_docs(docs);
    assert!((0..2).any(|agent| replicas.text(agent, "text") != trace.end_content));
    // Merging their saved states offline, as `aetherflow merge` does, gives the final text...
    let saved: Vec<Vec<u8>> = (0..2)
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
    assert_eq!(text.get_string(&doc.transact()), trace.end_content);
    // ...and so does a state-vector exchange between the replicas themselves.
    replicas.merge();
    assert_eq!(replicas.assert_converged("text"), trace.end_content);
}
