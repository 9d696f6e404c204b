//! Editing traces from `../shared/traces/` (josephg/editing-traces format), turned into the
//! Yjs v1 updates a real editor would have sent, one per edit.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;
use yrs::{Doc, GetString, Text, Transact};

/// A sequential editing trace.
#[derive(Debug, Deserialize)]
pub struct Trace {
    /// Text before the first edit.
    #[serde(default, rename = "startContent")]
    pub start_content: String,
    /// Text after the last edit.
    #[serde(rename = "endContent")]
    pub end_content: String,
    /// The edits, grouped in transactions.
    pub txns: Vec<Txn>,
}

/// One transaction of a trace.
#[derive(Debug, Deserialize)]
pub struct Txn {
    /// `(position, deleted, inserted)`, positions in Unicode code points.
    pub patches: Vec<(u32, u32, String)>,
}

/// Where the shared traces live, relative to this crate.
pub fn traces_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces")
}

/// Reads a gzipped trace.
pub fn load(path: &Path) -> anyhow::Result<Trace> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut json = String::new();
    flate2::read::GzDecoder::new(file).read_to_string(&mut json)?;
    Ok(serde_json::from_str(&json)?)
}

/// Replays the trace on a yrs document, one transaction per patch, and returns each
/// transaction's v1 update plus the final text. Traces used here are ASCII, so code-point
/// positions equal byte offsets.
pub fn to_updates(trace: &Trace) -> (Vec<Vec<u8>>, String) {
    let doc = Doc::with_client_id(1);
    let text = doc.get_or_insert_text("text");
    let mut updates = Vec::new();
    if !trace.start_content.is_empty() {
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, &trace.start_content);
        updates.push(txn.encode_update_v1());
    }
    for txn in &trace.txns {
        for (pos, deleted, inserted) in &txn.patches {
            let mut t = doc.transact_mut();
            if *deleted > 0 {
                text.remove_range(&mut t, *pos, *deleted);
            }
            if !inserted.is_empty() {
                text.insert(&mut t, *pos, inserted);
            }
            updates.push(t.encode_update_v1());
        }
    }
    let end = text.get_string(&doc.transact());
    (updates, end)
}
