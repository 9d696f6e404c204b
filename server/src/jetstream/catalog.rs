//! Which documents exist, and register documents, in key-value buckets (see the module docs).

use std::collections::BTreeSet;
use std::sync::Arc;

use aetherflow_crdt::DocName;
use aetherflow_crdt::register::{Command, Kind, Outcome, Register};
use async_nats::jetstream::kv;
use futures_util::TryStreamExt;

use super::large::RawEntry;
use super::log::snapshot_object;
use super::scan::Scope;
use super::{CAS_ATTEMPTS, JetStreamEngine, failed, key, lost_race, name_of};
use crate::storage::{
    Catalog, Created, DocStats, DocumentMeta, NameFilter, Pending, RegisterFailure, RegisterStore,
    StoreError,
};

fn record(e: serde_json::Error) -> StoreError {
    StoreError::Record(Arc::new(e))
}

impl JetStreamEngine {
    /// A document's metadata: its record, or for a Yjs document made by a first connection,
    /// whether it holds data.
    async fn meta(&self, doc: &DocName) -> Result<Option<DocumentMeta>, StoreError> {
        if let Some(bytes) = self.inner.documents.get(key(doc)).await.map_err(failed)? {
            return serde_json::from_slice(&bytes).map(Some).map_err(record);
        }
        let holds_data = self.index(doc).await?.is_some()
            || self
                .inner
                .log
                .get_last_raw_message_by_subject(&self.subject(doc))
                .await
                .is_ok();
        Ok(holds_data.then_some(DocumentMeta {
            kind: Kind::Yjs,
            created_ms: None,
        }))
    }

    /// The register of `doc` and its revision.
    async fn register_entry(&self, doc: &DocName) -> Result<Option<(Register, u64)>, StoreError> {
        super::versioned(&self.inner.registers, doc).await
    }

    /// Every document name any bucket or the log knows.
    async fn names(&self) -> Result<BTreeSet<String>, StoreError> {
        let mut names = BTreeSet::new();
        for bucket in [&self.inner.documents, &self.inner.index] {
            let keys: Vec<String> = bucket
                .keys()
                .await
                .map_err(failed)?
                .try_collect()
                .await
                .map_err(failed)?;
            names.extend(
                keys.iter()
                    .filter_map(|k| name_of(k))
                    .map(|d| d.as_str().to_owned()),
            );
        }
        let prefix = format!("{}.log.", self.inner.prefix);
        let subjects: Vec<(String, usize)> = self
            .inner
            .log
            .info_with_subjects(format!("{prefix}>"))
            .await
            .map_err(failed)?
            .try_collect()
            .await
            .map_err(failed)?;
        names.extend(
            subjects
                .iter()
                .filter_map(|(subject, _)| name_of(subject.strip_prefix(&prefix)?))
                .map(|d| d.as_str().to_owned()),
        );
        Ok(names)
    }
}

impl Catalog for JetStreamEngine {
    fn create(&self, doc: DocName, meta: DocumentMeta) -> Pending<'_, Created> {
        Box::pin(async move {
            if let Some(existing) = self.meta(&doc).await? {
                return Ok(Created::Exists(existing));
            }
            let value = serde_json::to_vec(&meta).map_err(record)?;
            match self.inner.documents.create(key(&doc), value.into()).await {
                Ok(_) => {}
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    // Another relay created it first.
                    let existing = self.meta(&doc).await?.unwrap_or(meta);
                    return Ok(Created::Exists(existing));
                }
                Err(e) => return Err(failed(e)),
            }
            if let Some(register) = Register::new(meta.kind) {
                let value = serde_json::to_vec(&register).map_err(record)?;
                self.inner
                    .registers
                    .put(key(&doc), value.into())
                    .await
                    .map_err(failed)?;
            }
            self.committed();
            Ok(Created::New(meta))
        })
    }

    fn document(&self, doc: DocName) -> Pending<'_, Option<DocumentMeta>> {
        Box::pin(async move { super::unless_unanswered(|| self.meta(&doc)).await })
    }

    fn stats(&self, doc: DocName) -> Pending<'_, DocStats> {
        Box::pin(async move {
            let mut stats = DocStats::default();
            if let Some((index, _)) = self.index(&doc).await? {
                let info = self
                    .inner
                    .snapshots
                    .info(&index.object)
                    .await
                    .map_err(failed)?;
                stats.size_bytes += info.size as u64;
            }
            let entries = self.entries_after_snapshot(&doc).await?;
            stats.updates = entries.len() as u64;
            stats.size_bytes += entries.iter().map(|e| e.update.len() as u64).sum::<u64>();
            if let Some((register, _)) = self.register_entry(&doc).await? {
                stats.size_bytes += serde_json::to_vec(&register).map_err(record)?.len() as u64;
            }
            if let Ok(last) = self
                .inner
                .log
                .get_last_raw_message_by_subject(&self.subject(&doc))
                .await
            {
                let ms = last.time.unix_timestamp_nanos() / 1_000_000;
                stats.modified_ms = u64::try_from(ms).ok();
            }
            Ok(stats)
        })
    }

    fn list(
        &self,
        after: Option<String>,
        limit: usize,
        keep: NameFilter,
    ) -> Pending<'_, Vec<(DocName, DocumentMeta)>> {
        Box::pin(async move {
            let names = self.names().await?;
            let mut out = Vec::new();
            for name in names
                .iter()
                .filter(|n| after.as_deref().is_none_or(|a| n.as_str() > a) && keep(n))
            {
                if out.len() >= limit {
                    break;
                }
                let Ok(doc) = DocName::parse(name) else {
                    continue;
                };
                if let Some(meta) = self.meta(&doc).await? {
                    out.push((doc, meta));
                }
            }
            Ok(out)
        })
    }

    fn delete(&self, doc: DocName) -> Pending<'_, bool> {
        Box::pin(async move {
            let existed = super::unless_unanswered(|| self.meta(&doc))
                .await?
                .is_some();
            // Every step is idempotent, so a step the cluster did not answer (a request timing
            // out under load, a leader changing) is tried again, all of them from the start.
            super::unless_unanswered(|| self.delete_once(&doc)).await?;
            self.inner
                .appends
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&doc);
            self.committed();
            Ok(existed)
        })
    }
}

impl JetStreamEngine {
    /// Purges `doc`'s log (and the objects of its large entries), snapshot, checkpoints,
    /// labels and records.
    async fn delete_once(&self, doc: &DocName) -> Result<(), StoreError> {
        let entries = self.scan(doc, 1, u64::MAX, Scope::HeadersOnly).await?;
        self.inner
            .log
            .purge()
            .filter(self.subject(doc))
            .await
            .map_err(failed)?;
        let entries = entries
            .into_iter()
            .map(|m| RawEntry::new(m.seq, m.headers.as_ref(), m.payload));
        self.drop_objects(entries).await;
        if let Some((index, _)) = self.index(doc).await? {
            for checkpoint in &index.checkpoints {
                let _ = self
                    .inner
                    .snapshots
                    .delete(&snapshot_object(doc, *checkpoint))
                    .await;
            }
            let _ = self.inner.snapshots.delete(&index.object).await;
        }
        let name = key(doc);
        for bucket in [
            &self.inner.index,
            &self.inner.documents,
            &self.inner.registers,
            &self.inner.labels,
        ] {
            bucket.purge(&name).await.map_err(failed)?;
        }
        Ok(())
    }
}

impl RegisterStore for JetStreamEngine {
    fn register(&self, doc: DocName) -> Pending<'_, Option<Register>> {
        Box::pin(async move { Ok(self.register_entry(&doc).await?.map(|(r, _)| r)) })
    }

    fn apply(
        &self,
        doc: DocName,
        command: Command,
    ) -> Pending<'_, Result<Outcome, RegisterFailure>> {
        Box::pin(async move {
            for _ in 0..CAS_ATTEMPTS {
                let Some((mut register, revision)) = self.register_entry(&doc).await? else {
                    return Ok(Err(match self.meta(&doc).await? {
                        Some(meta) => RegisterFailure::NotARegister(meta.kind),
                        None => RegisterFailure::NotFound,
                    }));
                };
                let outcome = match register.apply(command.clone()) {
                    Ok(outcome) => outcome,
                    Err(e) => return Ok(Err(e.into())),
                };
                let value = serde_json::to_vec(&register).map_err(record)?;
                match self
                    .inner
                    .registers
                    .update(key(&doc), value.into(), revision)
                    .await
                {
                    Ok(_) => {
                        self.committed();
                        return Ok(Ok(outcome));
                    }
                    // Another writer changed it since it was read: read and apply again.
                    Err(e) if lost_race(&e) => continue,
                    Err(e) => return Err(failed(e)),
                }
            }
            Err(StoreError::Io(
                "the register kept changing under concurrent writers".into(),
            ))
        })
    }
}
