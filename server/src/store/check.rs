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
    let mut report = scan(&db)?;
    report.pages = pages;
    if repair && !report.damaged.is_empty() {
        remove(&db, &report.damaged)?;
        report.repaired = true;
    }
    Ok(report)
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
        for (name, damage) in damaged {
            match damage {
                Damage::Snapshot => {
                    snapshots.remove(name.as_str())?;
                    snapshot_sums.remove(name.as_str())?;
                }
                Damage::LogEntry(seq) => {
                    log.remove((name.as_str(), *seq))?;
                    log_sums.remove((name.as_str(), *seq))?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}

impl std::fmt::Display for CheckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.pages {
            PageCheck::Intact => writeln!(f, "pages: intact")?,
            PageCheck::RolledBack => {
                writeln!(f, "pages: damaged, rolled back to the last intact commit")?
            }
            PageCheck::Damaged(why) => writeln!(f, "pages: damaged ({why})")?,
        }
        writeln!(
            f,
            "documents: {}, snapshots and log entries verified: {}",
            self.documents, self.verified
        )?;
        for (name, damage) in &self.damaged {
            let done = if self.repaired { " (removed)" } else { "" };
            writeln!(f, "damaged: document {name:?}, {damage}{done}")?;
        }
        if self.damaged.is_empty() {
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
