//! The wall clock as the relay stores and shows time: milliseconds since the Unix epoch. The
//! one place that reads it for timestamps (creation and modification times, lock expiry,
//! session activity); pure cores take time as an argument instead.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
