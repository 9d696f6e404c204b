//! Editing traces turned into the Yjs v1 updates a real editor would have sent, one per edit:
//! the real `automerge-paper` trace from `../shared/traces/` where it exists, otherwise a
//! seeded generated session of the same length (see [`aetherflow_editing`]); [`ingest_session`]
//! says which, and the benches print it.

use std::path::Path;

use aetherflow_editing::{EditTrace, Fallback, Source};
use yrs::{Doc, GetString, Text, Transact};

/// The real trace the ingest benches replay by default.
pub const DEFAULT_TRACE: &str = "automerge-paper.json.gz";

/// Seed of the generated session used when [`DEFAULT_TRACE`] is absent.
pub const FALLBACK_SEED: u64 = 2026;

/// Edits of the generated session: as many as the real trace has.
pub const FALLBACK_EDITS: usize = 259_778;

/// The session to replay: the trace at `path` if given (it must exist), else [`DEFAULT_TRACE`]
/// or, where that is absent, the generated fallback.
pub fn ingest_session(path: Option<&Path>) -> anyhow::Result<(EditTrace, Source)> {
    match path {
        Some(path) => Ok((
            aetherflow_editing::load(path)?,
            Source::Real(path.to_owned()),
        )),
        None => Ok(aetherflow_editing::session(
            DEFAULT_TRACE,
            Fallback::sequential(FALLBACK_SEED, FALLBACK_EDITS),
        )?),
    }
}

/// A short name for reports: the trace's file name, or `generated-seed-N` for a generated
/// session.
pub fn source_name(source: &Source) -> String {
    match source {
        Source::Real(path) => path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
        Source::Generated { fallback, .. } => match fallback {
            Fallback::Sequential { seed, .. } | Fallback::Concurrent { seed, .. } => {
                format!("generated-seed-{seed}")
            }
        },
    }
}

/// Replays a sequential trace on a yrs document, one transaction per patch, and returns each
/// transaction's v1 update plus the final text. Traces used here are ASCII, so code-point
/// positions equal byte offsets.
pub fn to_updates(trace: &EditTrace) -> (Vec<Vec<u8>>, String) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_fallback_replays_to_its_end_content_as_the_ingest_benches_check() {
        let session = Fallback::sequential(FALLBACK_SEED, 20_000).generate();
        let (updates, end) = to_updates(&session);
        assert_eq!(updates.len(), 20_000);
        assert_eq!(end, session.end_content);
    }
}
