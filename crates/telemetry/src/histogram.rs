//! A lock-free latency histogram with fixed buckets, shared by every role's
//! metrics (histogram exposition through [`crate::metrics::Exposition`]
//! and p99 estimates).
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (µs) of the latency histogram buckets; a last bucket
/// (+Inf) follows.
pub const LATENCY_BUCKETS_US: [u64; 16] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000, 30_000_000,
];

/// Lock-free cumulative histogram of latencies.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Sum of observations in microseconds.
    pub sum_us: AtomicU64,
    /// Per bucket (not cumulative); index 16 is +Inf.
    pub counts: [AtomicU64; 17],
}

impl LatencyHistogram {
    pub fn observe_us(&self, us: u64) {
        let i = LATENCY_BUCKETS_US.partition_point(|&b| b < us);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> [u64; 17] {
        std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed))
    }

    /// The `q` quantile (0..1) of the observations between two snapshots,
    /// in milliseconds, by linear interpolation inside the bucket.
    pub fn quantile_ms(before: &[u64; 17], after: &[u64; 17], q: f64) -> Option<f64> {
        let delta: Vec<u64> = after.iter().zip(before).map(|(a, b)| a.saturating_sub(*b)).collect();
        let total: u64 = delta.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &n) in delta.iter().enumerate() {
            if seen + n >= rank {
                let lo = if i == 0 { 0 } else { LATENCY_BUCKETS_US[i - 1] } as f64;
                let hi = LATENCY_BUCKETS_US.get(i).copied().unwrap_or(LATENCY_BUCKETS_US[15] * 2) as f64;
                let frac = (rank - seen) as f64 / n as f64;
                return Some((lo + (hi - lo) * frac) / 1000.0);
            }
            seen += n;
        }
        None
    }
}

impl LatencyHistogram {
    /// Record one duration.
    pub fn observe(&self, d: std::time::Duration) {
        let us = d.as_micros() as u64;
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.observe_us(us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles() {
        let h = LatencyHistogram::default();
        let before = h.snapshot();
        for _ in 0..99 {
            h.observe_us(800); // (500, 1000] bucket
        }
        h.observe_us(40_000); // (25ms, 50ms] bucket
        let after = h.snapshot();
        let p50 = LatencyHistogram::quantile_ms(&before, &after, 0.5).unwrap();
        assert!(p50 > 0.5 && p50 <= 1.0, "{p50}");
        let p100 = LatencyHistogram::quantile_ms(&before, &after, 1.0).unwrap();
        assert!(p100 > 25.0 && p100 <= 50.0, "{p100}");
        assert_eq!(LatencyHistogram::quantile_ms(&after, &after, 0.99), None);
    }
}
