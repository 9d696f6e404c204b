//! The offline tools that read a stopped relay's database: `aetherflow history` (a document's
//! versions) and `aetherflow export` (a document, now or at a version, as one Yjs v1 update).
//! The relay must be stopped: redb lets one process open the file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use aetherflow_crdt::DocName;
use aetherflow_crdt::room::Room;

use crate::history;
use crate::store::Store;
use crate::tools::ToolError;

/// Opens the database of `data_dir`, refusing to create one where there is none.
fn open(data_dir: &Path) -> Result<(Store, PathBuf), ToolError> {
    let path = data_dir.join("aetherflow.redb");
    if !path.exists() {
        return Err(ToolError::Database {
            path,
            reason: "no database here (is --data-dir the relay's?)".into(),
        });
    }
    let store = Store::open(&path).map_err(|e| database(&path, e))?;
    Ok((store, path))
}

fn database(path: &Path, e: impl std::fmt::Display) -> ToolError {
    ToolError::Database {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

fn name(path: &Path, doc: &str) -> Result<DocName, ToolError> {
    DocName::parse(doc).map_err(|e| database(path, format!("document name {doc:?}: {e}")))
}

/// `doc`'s versions, newest first, one line each.
pub fn versions(data_dir: &Path, doc: &str) -> Result<String, ToolError> {
    let (store, path) = open(data_dir)?;
    let doc = name(&path, doc)?;
    let timeline = store.timeline(&doc).map_err(|e| database(&path, e))?;
    let versions = history::versions(&timeline.entries, &timeline.labels);
    let mut out = format!("{} versions of {doc} (newest first)\n", versions.len());
    out.push_str("version\ttime_ms\tauthors\tbytes\tlabel\n");
    for version in versions.iter().rev() {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}",
            version.id,
            version.time_ms,
            version.authors.join(","),
            version.bytes,
            version.label.as_deref().unwrap_or("")
        );
    }
    Ok(out)
}

/// Writes `doc` (now, or at version `at`) to `output` as one v1 update.
pub fn export(
    data_dir: &Path,
    doc: &str,
    at: Option<u64>,
    output: &Path,
) -> Result<String, ToolError> {
    let (store, path) = open(data_dir)?;
    let doc = name(&path, doc)?;
    let stored = match at {
        Some(version) => store
            .at(&doc, version)
            .map_err(|e| database(&path, e))?
            .ok_or_else(|| database(&path, format!("{doc} has no version {version}")))?,
        None => store.load(&doc).map_err(|e| database(&path, e))?,
    };
    let room = Room::load(
        stored.snapshot.as_deref(),
        stored.log.iter().map(Vec::as_slice),
    )
    .map_err(|e| database(&path, e.reason()))?;
    let update = room.snapshot();
    std::fs::write(output, &update).map_err(|source| ToolError::Write {
        path: output.to_owned(),
        source,
    })?;
    let when = at.map_or("now".to_owned(), |v| format!("at version {v}"));
    Ok(format!(
        "{doc} {when}: {} bytes written to {}\n",
        update.len(),
        output.display()
    ))
}
