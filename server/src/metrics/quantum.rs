//! What the Quantum listener records: round-trip time, congestion window, retransmits, FEC
//! repairs and rejected datagrams, aggregated over every Quantum connection.
//!
//! The listener takes one [`QuantumConnectionMetrics`] per connection from
//! [`QuantumMetrics::connection`] and calls [`QuantumConnectionMetrics::record`] with the
//! connection's cumulative [`QuantumStats`] whenever it has fresh figures (say on each ACK it
//! processes, or on a timer); the recorder turns cumulative counts into increments itself.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// One Quantum connection's figures, as its congestion controller and FEC decoder see them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuantumStats {
    /// Smoothed round-trip time.
    pub rtt: Duration,
    /// Congestion window, in bytes.
    pub congestion_window: u64,
    /// Packets retransmitted since the connection opened (cumulative).
    pub retransmits: u64,
    /// Packets recovered by forward error correction since the connection opened (cumulative).
    pub fec_repairs: u64,
    /// Datagrams naming the connection that were dropped without effect: they failed
    /// authentication, replayed a packet number or came in clear after the handshake
    /// (cumulative). Sustained growth means someone is injecting or replaying.
    pub rejected: u64,
}

/// Quantum metrics, shared by every connection. Cheap to clone.
#[derive(Clone)]
pub struct QuantumMetrics {
    rtt: Histogram,
    congestion_window: Histogram,
    retransmits: Counter,
    fec_repairs: Counter,
    rejected: Counter,
}

impl QuantumMetrics {
    pub(super) fn register(registry: &mut Registry) -> QuantumMetrics {
        let rtt = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        registry.register_with_unit(
            "quantum_rtt",
            "Smoothed round-trip time of Quantum connections, per sample",
            Unit::Seconds,
            rtt.clone(),
        );
        let congestion_window = Histogram::new(exponential_buckets(1200.0, 2.0, 14));
        registry.register_with_unit(
            "quantum_congestion_window",
            "Congestion window of Quantum connections, per sample",
            Unit::Bytes,
            congestion_window.clone(),
        );
        let retransmits = Counter::default();
        registry.register(
            "quantum_retransmits",
            "Packets retransmitted on Quantum connections",
            retransmits.clone(),
        );
        let fec_repairs = Counter::default();
        registry.register(
            "quantum_fec_repairs",
            "Packets recovered by forward error correction on Quantum connections",
            fec_repairs.clone(),
        );
        let rejected = Counter::default();
        registry.register(
            "quantum_rejected_datagrams",
            "Datagrams for Quantum connections dropped without effect: not authentic, replayed, or in clear after the handshake",
            rejected.clone(),
        );
        QuantumMetrics {
            rtt,
            congestion_window,
            retransmits,
            fec_repairs,
            rejected,
        }
    }

    /// A recorder for one new connection.
    pub fn connection(&self) -> QuantumConnectionMetrics {
        QuantumConnectionMetrics {
            metrics: self.clone(),
            last: QuantumStats::default(),
        }
    }
}

/// Records one Quantum connection's figures; owned by that connection's driver.
pub struct QuantumConnectionMetrics {
    metrics: QuantumMetrics,
    /// The previous sample, to turn cumulative counts into increments.
    last: QuantumStats,
}

impl QuantumConnectionMetrics {
    /// Records a sample: observes RTT and window, adds the retransmits and repairs since the
    /// previous sample. A cumulative count that went backwards (a driver bug or a reset)
    /// adds nothing rather than wrapping.
    pub fn record(&mut self, stats: &QuantumStats) {
        self.metrics.rtt.observe(stats.rtt.as_secs_f64());
        self.metrics
            .congestion_window
            .observe(stats.congestion_window as f64);
        let retransmits = stats.retransmits.saturating_sub(self.last.retransmits);
        let repairs = stats.fec_repairs.saturating_sub(self.last.fec_repairs);
        self.metrics.retransmits.inc_by(retransmits);
        self.metrics.fec_repairs.inc_by(repairs);
        let rejected = stats.rejected.saturating_sub(self.last.rejected);
        self.metrics.rejected.inc_by(rejected);
        self.last = *stats;
    }
}

#[cfg(test)]
mod tests {
    use crate::metrics::Metrics;

    use super::QuantumStats;
    use std::time::Duration;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn cumulative_counts_become_increments_across_connections() {
        let metrics = Metrics::new();
        let mut a = metrics.quantum().connection();
        let mut b = metrics.quantum().connection();
        let sample = |retransmits, fec_repairs| QuantumStats {
            rtt: Duration::from_millis(20),
            congestion_window: 64_000,
            retransmits,
            fec_repairs,
            rejected: retransmits + 1,
        };
        a.record(&sample(3, 1));
        a.record(&sample(5, 1));
        b.record(&sample(2, 4));
        // A reset counter adds nothing instead of wrapping.
        b.record(&sample(0, 0));
        let text = metrics.render(&[]);
        assert_eq!(
            value(&text, "aetherflow_quantum_retransmits_total"),
            Some(7.0)
        );
        assert_eq!(
            value(&text, "aetherflow_quantum_fec_repairs_total"),
            Some(5.0)
        );
        assert_eq!(
            value(&text, "aetherflow_quantum_rejected_datagrams_total"),
            Some(9.0)
        );
        assert_eq!(
            value(&text, "aetherflow_quantum_rtt_seconds_count"),
            Some(4.0)
        );
        let sum = value(&text, "aetherflow_quantum_rtt_seconds_sum").unwrap_or_default();
        assert!((sum - 0.08).abs() < 1e-9, "rtt sum {sum}");
        assert_eq!(
            value(&text, "aetherflow_quantum_congestion_window_bytes_count"),
            Some(4.0)
        );
    }
}
