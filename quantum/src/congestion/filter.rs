//! A windowed maximum over round trips, for BBR's bottleneck-bandwidth estimate.

use std::collections::VecDeque;

/// The largest value seen in the last `window` rounds.
///
/// A monotonic queue: values strictly decrease from front to back, so the front is the
/// maximum, and a sample can only leave by being outdone or by ageing out. Ageing is applied
/// when a sample is added, never on reads: a sender that stops supplying samples (because it
/// is application-limited) keeps its estimate, as Linux's `minmax` does.
#[derive(Debug, Clone)]
pub(crate) struct MaxFilter {
    /// Rounds a sample stays valid.
    window: u64,
    /// `(round, value)`, values strictly decreasing, rounds increasing.
    samples: VecDeque<(u64, u64)>,
}

impl MaxFilter {
    /// An empty filter remembering samples for `window` rounds.
    pub fn new(window: u64) -> MaxFilter {
        MaxFilter {
            window,
            samples: VecDeque::new(),
        }
    }

    /// The current maximum, zero when empty.
    pub fn get(&self) -> u64 {
        self.samples.front().map_or(0, |&(_, value)| value)
    }

    /// Adds `value` measured in `round` and forgets what is older than the window.
    pub fn update(&mut self, round: u64, value: u64) {
        while self.samples.back().is_some_and(|&(_, v)| v <= value) {
            self.samples.pop_back();
        }
        // An older, larger sample of the same round already dominates this one.
        if self.samples.back().is_none_or(|&(r, _)| r < round) {
            self.samples.push_back((round, value));
        }
        while self
            .samples
            .front()
            .is_some_and(|&(r, _)| r + self.window <= round)
        {
            self.samples.pop_front();
        }
        if self.samples.is_empty() {
            self.samples.push_back((round, value));
        }
    }

    /// Forgets everything.
    #[cfg(test)]
    pub fn reset(&mut self) {
        self.samples.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_maximum_for_the_window_then_lets_it_age_out() {
        let mut filter = MaxFilter::new(10);
        filter.update(0, 100);
        filter.update(1, 50);
        filter.update(5, 70);
        assert_eq!(filter.get(), 100);
        filter.update(9, 60);
        assert_eq!(filter.get(), 100, "round 9 is still within ten rounds of 0");
        filter.update(10, 40);
        assert_eq!(
            filter.get(),
            70,
            "round 0 aged out; 70 from round 5 is next"
        );
        filter.update(15, 10);
        assert_eq!(filter.get(), 60);
        filter.update(30, 5);
        assert_eq!(filter.get(), 5, "everything else aged out");
    }

    #[test]
    fn a_larger_sample_replaces_at_once() {
        let mut filter = MaxFilter::new(10);
        filter.update(3, 100);
        filter.update(4, 300);
        assert_eq!(filter.get(), 300);
        filter.reset();
        assert_eq!(filter.get(), 0);
    }

    #[test]
    fn without_new_samples_the_estimate_is_kept() {
        let mut filter = MaxFilter::new(10);
        filter.update(0, 100);
        // No update for a long time (an application-limited sender): still 100.
        assert_eq!(filter.get(), 100);
        // Many samples in one round add at most one entry: memory stays bounded by the window.
        for value in (0..1000).rev() {
            filter.update(1, value);
        }
        assert_eq!(filter.get(), 999);
        assert_eq!(filter.samples.len(), 1);
        filter.update(2, 5);
        assert_eq!(filter.samples.len(), 2);
    }
}
