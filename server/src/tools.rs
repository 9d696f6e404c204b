//! Offline tools, run instead of starting the relay: `aetherflow merge` and `aetherflow inspect`
//! on Yjs v1 update files (the logic is in [`aetherflow_crdt::update_file`]; this module only
//! reads and writes the files), and `check`, `history` and `export` on a stopped relay's
//! database (run by `run_tool` in the crate root, since they need the store).

use std::path::{Path, PathBuf};

use aetherflow_crdt::update_file::{self, UpdateFileError};

/// The tool subcommands of the `aetherflow` binary.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Tool {
    /// Merge Yjs v1 update files (e.g. documents saved by replicas edited apart) into one.
    Merge {
        /// The update files to merge; their order does not matter.
        #[arg(required = true, value_name = "FILE")]
        inputs: Vec<PathBuf>,
        /// Where to write the merged update.
        #[arg(short, long, value_name = "OUT")]
        output: PathBuf,
    },
    /// Verify a stopped relay's database: redb's page checksums, then every document's
    /// snapshot and log entries against their stored checksums. Exits 1 if anything is
    /// damaged.
    Check {
        /// The relay's data directory (holding `aetherflow.redb`).
        #[arg(long, value_name = "DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Remove damaged snapshots and log entries (clients that hold those edits send them
        /// again when they next sync).
        #[arg(long)]
        repair: bool,
    },
    /// List a Yjs document's versions in a stopped relay's database, newest first: id, time,
    /// authors, bytes of the change, label.
    History {
        /// The document.
        #[arg(value_name = "DOCUMENT")]
        doc: String,
        /// The relay's data directory (holding `aetherflow.redb`).
        #[arg(long, value_name = "DIR", default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Write a Yjs document of a stopped relay's database as one Yjs v1 update file: as it is
    /// now, or as it was at a version (`--at`, an id from `aetherflow history`).
    Export {
        /// The document.
        #[arg(value_name = "DOCUMENT")]
        doc: String,
        /// The version to export (default: the document as it is now).
        #[arg(long, value_name = "VERSION")]
        at: Option<u64>,
        /// Where to write the update.
        #[arg(short, long, value_name = "OUT")]
        output: PathBuf,
        /// The relay's data directory (holding `aetherflow.redb`).
        #[arg(long, value_name = "DIR", default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Describe a Yjs v1 update file: clients, deletions, root types and their start.
    Inspect {
        /// The update file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// Why a tool failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// An input file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An input file is not a valid update.
    #[error("{path} is not a valid Yjs v1 update: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The database could not be checked.
    #[error("cannot check {path}: {reason}")]
    Check {
        /// The database file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The database could not be opened or read, or holds no such document or version.
    #[error("{path}: {reason}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The check found damaged documents (the report says which).
    #[error("{0}")]
    Damaged(String),
    /// The output file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Runs `tool`; returns what to print on stdout.
pub fn run(tool: &Tool) -> Result<String, ToolError> {
    match tool {
        Tool::Merge { inputs, output } => {
            let files = inputs
                .iter()
                .map(|path| read(path))
                .collect::<Result<Vec<_>, _>>()?;
            let merged = update_file::merge(&files).map_err(|e| invalid(inputs, e))?;
            std::fs::write(output, &merged).map_err(|source| ToolError::Write {
                path: output.clone(),
                source,
            })?;
            Ok(format!(
                "merged {} files into {} ({} bytes)\n",
                inputs.len(),
                output.display(),
                merged.len()
            ))
        }
        // Need the store, which this module stays below: `crate::run_tool` runs them.
        Tool::Check { .. } | Tool::History { .. } | Tool::Export { .. } => Err(ToolError::Check {
            path: PathBuf::new(),
            reason: "run through aetherflow_server::run_tool".into(),
        }),
        Tool::Inspect { file } => {
            let bytes = read(file)?;
            let summary =
                update_file::inspect(&bytes).map_err(|e| invalid(std::slice::from_ref(file), e))?;
            Ok(format!("{}\n{summary}", file.display()))
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ToolError> {
    std::fs::read(path).map_err(|source| ToolError::Read {
        path: path.to_owned(),
        source,
    })
}

fn invalid(paths: &[PathBuf], e: UpdateFileError) -> ToolError {
    match e {
        UpdateFileError::Invalid { index, reason } => ToolError::Invalid {
            path: paths.get(index).cloned().unwrap_or_default(),
            reason,
        },
        UpdateFileError::NoInput => ToolError::Invalid {
            path: PathBuf::new(),
            reason: e.to_string(),
        },
    }
}
