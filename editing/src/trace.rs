//! The editing-trace format of josephg/editing-traces, gzipped JSON: sequential traces are a
//! list of transactions of patches; concurrent traces add each transaction's `agent` and the
//! transactions it was made on top of (`parents`).

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One edit: `(position, deleted, inserted)`; positions count Unicode code points.
pub type Patch = (u32, u32, String);

/// An editing session: what the document held before and after, and every transaction.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EditTrace {
    /// Text before the first edit.
    #[serde(default, rename = "startContent")]
    pub start_content: String,
    /// Text after the last edit, every agent's edits merged.
    #[serde(rename = "endContent")]
    pub end_content: String,
    /// How many agents (typists) edited; 1 for a sequential trace.
    #[serde(default = "one", rename = "numAgents")]
    pub num_agents: usize,
    /// The transactions, in causal order.
    pub txns: Vec<EditTxn>,
}

/// One transaction of a trace.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EditTxn {
    /// Indexes of the transactions this one was made on top of (empty for the first; a
    /// sequential trace leaves them out, meaning "the one before").
    #[serde(default)]
    pub parents: Vec<usize>,
    /// Which agent made it (0 in a sequential trace).
    #[serde(default)]
    pub agent: usize,
    /// The edits, applied one after the other.
    pub patches: Vec<Patch>,
}

fn one() -> usize {
    1
}

/// Why a trace file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be opened or decompressed.
    #[error("cannot read trace {path}: {source}")]
    Read {
        /// The trace file.
        path: PathBuf,
        /// The I/O or gzip error.
        source: std::io::Error,
    },
    /// The file is not a trace in the editing-traces format.
    #[error("{path} is not an editing trace: {source}")]
    Parse {
        /// The trace file.
        path: PathBuf,
        /// What the JSON parser said.
        source: serde_json::Error,
    },
}

/// Reads a gzipped trace.
pub fn load(path: &Path) -> Result<EditTrace, TraceError> {
    let read_error = |source| TraceError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut json = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut json)
        .map_err(read_error)?;
    serde_json::from_str(&json).map_err(|source| TraceError::Parse {
        path: path.to_owned(),
        source,
    })
}
