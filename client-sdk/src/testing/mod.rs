//! Test helpers for offline editing: fork replicas of a document, edit them apart, merge them
//! by exchanging state vectors, and check that they converged. [`live`] has helpers for tests
//! that drive live document handles, [`envelopes`] for raw envelope protocol tests.
//!
//! ```
//! use aetherflow_client::testing::Replicas;
//! use yrs::{Doc, Text, Transact};
//!
//! let base = Doc::new();
//! base.get_or_insert_text("text").insert(&mut base.transact_mut(), 0, "hello");
//! let replicas = Replicas::fork(&base, 3);
//! replicas.edit_text(0, "text", |text, txn| text.insert(txn, 0, "A: "));
//! replicas.edit_text(2, "text", |text, txn| text.push(txn, "!"));
//! replicas.merge();
//! assert_eq!(replicas.assert_converged("text"), "A: hello!");
//! ```

pub mod envelopes;
pub mod live;

pub use live::{append_text, assert_exactly_once, text, wait_state, wait_text};

use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, TextRef, Transact, TransactionMut, Update};

/// Several replicas of one document, each with its own client id.
#[derive(Debug)]
pub struct Replicas {
    docs: Vec<Doc>,
}

/// Why two documents could not be synced.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// A state vector or update did not decode.
    #[error("cannot decode: {0}")]
    Decode(String),
    /// yrs refused to apply an update.
    #[error("cannot apply: {0}")]
    Apply(String),
}

/// Sends `to` everything `from` has that `to` lacks, by state vector.
pub fn send_missing(from: &Doc, to: &Doc) -> Result<(), MergeError> {
    let sv = to.transact().state_vector().encode_v1();
    let sv = StateVector::decode_v1(&sv).map_err(|e| MergeError::Decode(e.to_string()))?;
    let diff = from.transact().encode_state_as_update_v1(&sv);
    let update = Update::decode_v1(&diff).map_err(|e| MergeError::Decode(e.to_string()))?;
    to.transact_mut()
        .apply_update(update)
        .map_err(|e| MergeError::Apply(e.to_string()))
}

/// Exchanges state vectors between `a` and `b` in both directions (sync step 1 and 2 each way).
pub fn sync_pair(a: &Doc, b: &Doc) -> Result<(), MergeError> {
    send_missing(a, b)?;
    send_missing(b, a)
}

impl Replicas {
    /// `n` replicas holding `base`'s state, each with a fresh client id.
    pub fn fork(base: &Doc, n: usize) -> Replicas {
        let state = base
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let docs = (0..n)
            .map(|_| {
                let doc = Doc::new();
                let update = Update::decode_v1(&state).expect("a document's own state decodes");
                doc.transact_mut()
                    .apply_update(update)
                    .expect("a document's own state applies");
                doc
            })
            .collect();
        Replicas { docs }
    }

    /// Wraps existing documents.
    pub fn from_docs(docs: Vec<Doc>) -> Replicas {
        Replicas { docs }
    }

    /// Replica `i`.
    pub fn get(&self, i: usize) -> &Doc {
        &self.docs[i]
    }

    /// How many replicas there are.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Edits root text `name` of replica `i` in one transaction.
    pub fn edit_text(
        &self,
        i: usize,
        name: &str,
        edit: impl FnOnce(&TextRef, &mut TransactionMut),
    ) {
        let doc = &self.docs[i];
        let text = doc.get_or_insert_text(name);
        let mut txn = doc.transact_mut();
        edit(&text, &mut txn);
    }

    /// Root text `name` of replica `i`.
    pub fn text(&self, i: usize, name: &str) -> String {
        let doc = &self.docs[i];
        let text = doc.get_or_insert_text(name);
        text.get_string(&doc.transact())
    }

    /// Merges every replica with every other, as reconnecting peers do.
    pub fn merge(&self) {
        for a in &self.docs {
            for b in &self.docs {
                if !std::ptr::eq(a, b) {
                    send_missing(a, b).expect("replicas of one document merge");
                }
            }
        }
    }

    /// Asserts that every replica has the same state vector and the same root text `name`;
    /// returns that text.
    ///
    /// # Panics
    ///
    /// When the replicas differ, with the differing replica's index and contents.
    pub fn assert_converged(&self, name: &str) -> String {
        let first_text = self.text(0, name);
        let first_sv = self.docs[0].transact().state_vector();
        for i in 1..self.docs.len() {
            assert_eq!(
                self.docs[i].transact().state_vector(),
                first_sv,
                "replica {i} has a different state vector from replica 0"
            );
            assert_eq!(
                self.text(i, name),
                first_text,
                "replica {i} differs from replica 0"
            );
        }
        first_text
    }
}
