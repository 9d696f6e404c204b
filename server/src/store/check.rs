//! `aetherflow check`: verifies a stopped relay's database offline, and repairs it.
//!
//! Two layers: redb's own page checksums (`Database::check_integrity`, which rolls the file
//! back to its last intact commit if it must), then every document's snapshot and log entries
//! against the checksums the relay stored beside them. Repair removes what is damaged: the
//! document then loads from what is left, and the clients that still hold the lost edits send
//! them again when they next sync (a Yjs client answers the relay's state vector with
//! whatever the relay lacks).

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable};

use super::checksum::{self, Damage, LOG_SUMS, SNAPSHOT_SUMS};
use super::{SNAPSHOTS, StoreError, UPDATE_LOG};

/// What a check found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// What redb's page check found.
    pub pages: PageCheck,
    /// Documents checked.
    pub documents: usize,
    /// Snapshots and log entries checked against a stored checksum.
    pub verified: usize,
    /// Damaged parts, by document.
    pub damaged: Vec<(String, Damage)>,
    /// Whether the damaged parts were removed.
    pub repaired: bool,
    /// redb failed inside while reading the documents (some damaged pages make it panic): the
    /// scan stopped there, so later documents were not checked.
    pub unreadable: Option<String>,
}

/// The outcome of redb's page check.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum PageCheck {
    /// Every page matched its checksum.
    #[default]
    Intact,
    /// Damaged pages were found and the file rolled back to its last intact commit.
    RolledBack,
    /// Damaged pages that redb could not repair; the documents are still checked one by one.
    Damaged(String),
}

/// Checks the database at `path` (the relay must be stopped: redb locks the file), removing
/// damaged snapshots and log entries if `repair`.
pub fn check(path: &Path, repair: bool) -> Result<CheckReport, StoreError> {
    let open = || {
        Database::open(path).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    };
    let pages = match open()?.check_integrity() {
        Ok(true) => PageCheck::Intact,
        Ok(false) => PageCheck::RolledBack,
        Err(e) => PageCheck::Damaged(e.to_string()),
    };
    // Opened again: a failed page check leaves its handle unable to write.
    let db = open()?;
    let scanned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scan(&db)));
    let mut report = match scanned {
        Ok(report) => report?,
        Err(panic) => CheckReport {
            unreadable: Some(super::panic_message(panic.as_ref())),
            ..CheckReport::default()
        },
    };
    report.pages = pages;
    if repair && !report.damaged.is_empty() {
        remove(&db, &report.damaged)?;
        report.repaired = true;
    }
    Ok(report)
}

/// The check the relay runs at start-up, before it opens the database for serving (unless
/// `--skip-integrity-check`): the same two layers as [`check`], repairing nothing. `None` for a
/// database that does not exist yet.
pub fn at_start(path: &Path) -> Result<Option<CheckReport>, StoreError> {
    if !path.exists() {
        return Ok(None);
    }
    check(path, false).map(Some)
}

impl CheckReport {
    /// Whether nothing damaged was found (or all of it was removed).
    pub fn is_sound(&self) -> bool {
        self.unreadable.is_none() && (self.damaged.is_empty() || self.repaired)
    }

    /// Names of the damaged documents, each once, sorted.
    pub fn damaged_documents(&self) -> Vec<&str> {
        let names: std::collections::BTreeSet<&str> =
            self.damaged.iter().map(|(n, _)| n.as_str()).collect();
        names.into_iter().collect()
    }

    /// Logs the start-up check's outcome: one line when all is well, an error naming the
    /// damaged documents (the first few) and the way to repair them otherwise.
    pub fn log_at_start(&self, took: std::time::Duration) {
        let damaged = self.damaged_documents();
        if self.pages == PageCheck::Intact && self.is_sound() {
            tracing::info!(
                documents = self.documents,
                verified = self.verified,
                took_ms = took.as_millis() as u64,
                "integrity check passed (skip it with --skip-integrity-check)"
            );
            return;
        }
        let shown: Vec<&str> = damaged.iter().take(10).copied().collect();
        tracing::error!(
            pages = %self.pages,
            unreadable = self.unreadable.as_deref().unwrap_or("no"),
            damaged_documents = damaged.len(),
            first = ?shown,
            took_ms = took.as_millis() as u64,
            "integrity check found damage: damaged documents are refused (1011 / 500 \
             document_damaged) while every other one is served; stop the relay and run \
             `aetherflow check --repair --data-dir DIR` to remove the damaged parts"
        );
    }
}

impl std::fmt::Display for PageCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PageCheck::Intact => f.write_str("intact"),
            PageCheck::RolledBack => f.write_str("damaged, rolled back to the last intact commit"),
            PageCheck::Damaged(why) => write!(f, "damaged ({why})"),
        }
    }
}

fn scan(db: &Database) -> Result<CheckReport, StoreError> {
    let txn = db.begin_read()?;
    let mut report = CheckReport::default();
    let mut names = std::collections::BTreeSet::new();
    let snapshot_sums = txn.open_table(SNAPSHOT_SUMS).ok();
    for entry in txn.open_table(SNAPSHOTS)?.iter()? {
        let (name, bytes) = entry?;
        names.insert(name.value().to_owned());
        let stored = match &snapshot_sums {
            Some(sums) => sums.get(name.value())?.map(|v| v.value()),
            None => None,
        };
        report.verified += usize::from(stored.is_some());
        if checksum::verify(stored, bytes.value(), Damage::Snapshot).is_err() {
            report
                .damaged
                .push((name.value().to_owned(), Damage::Snapshot));
        }
    }
    let log_sums = txn.open_table(LOG_SUMS).ok();
    for entry in txn.open_table(UPDATE_LOG)?.iter()? {
        let (key, bytes) = entry?;
        let (name, seq) = key.value();
        names.insert(name.to_owned());
        let stored = match &log_sums {
            Some(sums) => checksum::log_sum(sums, name, seq)?,
            None => None,
        };
        report.verified += usize::from(stored.is_some());
        if checksum::verify(stored, bytes.value(), Damage::LogEntry(seq)).is_err() {
            report
                .damaged
                .push((name.to_owned(), Damage::LogEntry(seq)));
        }
    }
    report.documents = names.len();
    Ok(report)
}

fn remove(db: &Database, damaged: &[(String, Damage)]) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    {
        let mut snapshots = txn.open_table(SNAPSHOTS)?;
        let mut snapshot_sums = txn.open_table(SNAPSHOT_SUMS)?;
        let mut log = txn.open_table(UPDATE_LOG)?;
        let mut log_sums = txn.open_table(LOG_SUMS)?;
        // A removed entry leaves the history too.
        let mut meta = txn.open_table(super::history::ENTRY_META)?;
        for (name, damage) in damaged {
            match damage {
                Damage::Snapshot => {
                    snapshots.remove(name.as_str())?;
                    snapshot_sums.remove(name.as_str())?;
                }
                Damage::LogEntry(seq) => {
                    log.remove((name.as_str(), *seq))?;
                    log_sums.remove((name.as_str(), *seq))?;
                    meta.remove((name.as_str(), *seq))?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}

impl std::fmt::Display for CheckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "pages: {}", self.pages)?;
        writeln!(
            f,
            "documents: {}, snapshots and log entries verified: {}",
            self.documents, self.verified
        )?;
        if let Some(why) = &self.unreadable {
            writeln!(
                f,
                "unreadable: redb failed reading the documents ({why}); later documents were \
                 not checked. Copy the documents you can read with the relay's HTTP API and \
                 restore the rest from a backup"
            )?;
        }
        for (name, damage) in &self.damaged {
            let done = if self.repaired { " (removed)" } else { "" };
            writeln!(f, "damaged: document {name:?}, {damage}{done}")?;
        }
        if self.damaged.is_empty() && self.unreadable.is_none() {
            writeln!(f, "no damaged document")?;
        } else if !self.repaired {
            writeln!(
                f,
                "run again with --repair (relay stopped) to remove the damaged parts; clients \
                 that hold those edits send them again when they next sync"
            )?;
        }
        Ok(())
    }
}
