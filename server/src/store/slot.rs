//! The open database, replaceable while the relay runs.
//!
//! After one I/O error (a full disk, say) redb fails every later operation with "Previous I/O
//! error occurred" until the database is closed and opened again, even once the disk has
//! room. Opening it again recovers the last commit. So the [`Store`](super::Store) holds the
//! database in a slot: readers take a reference for one transaction, and recovery empties the
//! slot, waits for those references to go, and opens the file anew. redb locks the file, so
//! the old handle must be gone before the new one opens.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redb::Database;
use tokio::sync::watch;

use super::StoreError;

/// Longest wait for readers of the old database to finish before reopening.
const READERS_GRACE: Duration = Duration::from_secs(5);

/// The database slot and whether writes currently work.
pub(super) struct Slot {
    path: PathBuf,
    db: RwLock<Option<Arc<Database>>>,
    writable: AtomicBool,
    /// Set when a write failed on I/O: redb then fails everything until reopened.
    poisoned: AtomicBool,
    /// Recovery probes that succeeded in a row.
    probes: AtomicU32,
    /// Tells followers of [`Slot::watch`] when writability changes.
    changes: watch::Sender<bool>,
}

impl Slot {
    pub fn new(path: &Path, db: Database) -> Slot {
        Slot {
            path: path.to_owned(),
            db: RwLock::new(Some(Arc::new(db))),
            writable: AtomicBool::new(true),
            poisoned: AtomicBool::new(false),
            probes: AtomicU32::new(0),
            changes: watch::Sender::new(true),
        }
    }

    /// The open database, or an I/O error while it is being reopened.
    pub fn get(&self) -> Result<Arc<Database>, StoreError> {
        let slot = self.db.read().unwrap_or_else(|p| p.into_inner());
        slot.clone().ok_or_else(|| {
            StoreError::Io("the database is closed after an I/O error; reopening".into())
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counts a recovery probe's outcome; returns how many succeeded in a row.
    pub fn probed(&self, ok: bool) -> u32 {
        if ok {
            self.probes.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            self.probes.store(0, Ordering::Release);
            0
        }
    }

    /// A write failed on I/O: the open database refuses everything from now on.
    pub fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
    }

    /// [`Slot::reopen`] if a failed write poisoned the database.
    pub fn reopen_if_poisoned(
        &self,
        open: impl FnOnce(&Path) -> Result<Database, StoreError>,
    ) -> Result<(), StoreError> {
        if !self.poisoned.load(Ordering::Acquire) {
            return Ok(());
        }
        self.reopen(open)?;
        self.poisoned.store(false, Ordering::Release);
        Ok(())
    }

    /// Closes the database and opens it again with `open`. Blocking. On failure the slot
    /// stays empty (every operation fails as I/O) until a later call succeeds.
    pub fn reopen(
        &self,
        open: impl FnOnce(&Path) -> Result<Database, StoreError>,
    ) -> Result<(), StoreError> {
        let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.take() {
            // Readers hold the database for one transaction at most.
            let deadline = Instant::now() + READERS_GRACE;
            while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if Arc::strong_count(&old) > 1 {
                *slot = Some(old);
                return Err(StoreError::Io(
                    "the database is still in use; reopening later".into(),
                ));
            }
            drop(old);
        }
        *slot = Some(Arc::new(open(&self.path)?));
        Ok(())
    }

    pub fn is_writable(&self) -> bool {
        self.writable.load(Ordering::Acquire)
    }

    pub fn set_writable(&self, writable: bool) {
        if self.writable.swap(writable, Ordering::AcqRel) != writable {
            self.changes.send_replace(writable);
        }
    }

    pub fn watch(&self) -> watch::Receiver<bool> {
        self.changes.subscribe()
    }
}
