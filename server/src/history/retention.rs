//! Which versions thinning drops: everything is kept for a while, then one version per hour,
//! then one per day; labelled versions and the newest few are always kept.

use std::collections::BTreeSet;

use super::Version;

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

/// How long versions are kept at which density.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Every version younger than this is kept, in milliseconds.
    pub keep_all_ms: u64,
    /// Versions younger than this (and older than `keep_all_ms`) are kept one per hour (the
    /// newest of each hour); older ones one per day.
    pub hourly_ms: u64,
    /// The newest versions kept whatever their age.
    pub keep_newest: usize,
}

impl Retention {
    /// Everything for 30 days, then one version per hour for a year, then one a day; the
    /// newest 50 always.
    pub const DEFAULT: Retention = Retention {
        keep_all_ms: 30 * DAY_MS,
        hourly_ms: 365 * DAY_MS,
        keep_newest: 50,
    };

    /// The ids of the versions (given oldest first) that thinning drops as of `now_ms`.
    pub fn dropped(&self, versions: &[Version], now_ms: u64) -> BTreeSet<u64> {
        let protected_from = versions.len().saturating_sub(self.keep_newest.max(1));
        let mut dropped = BTreeSet::new();
        for (i, version) in versions.iter().enumerate() {
            let keep = i >= protected_from
                || version.label.is_some()
                || self.is_newest_of_its_bucket(version, versions.get(i + 1), now_ms);
            if !keep {
                dropped.insert(version.id);
            }
        }
        dropped
    }

    /// Whether `version` survives by age: young enough to keep, or the last of its hour or
    /// day (by the bucket its age falls in) before `next`.
    fn is_newest_of_its_bucket(&self, version: &Version, next: Option<&Version>, now: u64) -> bool {
        let age = now.saturating_sub(version.time_ms);
        if age <= self.keep_all_ms {
            return true;
        }
        let bucket = if age <= self.hourly_ms {
            HOUR_MS
        } else {
            DAY_MS
        };
        match next {
            None => true,
            Some(next) => next.time_ms / bucket != version.time_ms / bucket,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(id: u64, time_ms: u64, label: Option<&str>) -> Version {
        Version {
            id,
            first_seq: id,
            time_ms,
            started_ms: time_ms,
            authors: vec!["ada".into()],
            bytes: 1,
            entries: 1,
            label: label.map(str::to_owned),
        }
    }

    #[test]
    fn old_versions_are_thinned_to_one_per_hour_keeping_labels_and_the_newest() {
        let policy = Retention {
            keep_all_ms: DAY_MS,
            hourly_ms: 10 * DAY_MS,
            keep_newest: 2,
        };
        let now = 20 * DAY_MS;
        let old = 15 * DAY_MS; // in the hourly band
        let versions = [
            version(1, old, None),
            version(2, old + 60_000, Some("sent")),
            version(3, old + 120_000, None),
            version(4, old + HOUR_MS, None),
            version(5, old + HOUR_MS + 1, None),
            version(6, now - 10, None),
            version(7, now - 5, None),
        ];
        let dropped = policy.dropped(&versions, now);
        assert_eq!(dropped, BTreeSet::from([1, 4]));
    }

    #[test]
    fn the_newest_versions_are_kept_whatever_their_age() {
        let policy = Retention {
            keep_all_ms: 0,
            hourly_ms: 0,
            keep_newest: 1,
        };
        let versions = [version(1, 0, None), version(2, 1, None)];
        assert_eq!(policy.dropped(&versions, 100 * DAY_MS), BTreeSet::from([1]));
    }
}
