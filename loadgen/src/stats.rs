//! Percentiles and the figures a scenario prints.

use std::fmt;
use std::time::Duration;

/// p50/p99/max of a set of durations (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// The nearest-rank percentile `q` (0 < q ≤ 1) of sorted samples: the smallest sample with
/// at least `q` of all samples at or below it. `None` for no samples.
pub fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

impl Summary {
    /// Summarises samples in microseconds (sorted in place).
    pub fn of_micros(samples: &mut [u64]) -> Summary {
        samples.sort_unstable();
        let us = |q| Duration::from_micros(percentile(samples, q).unwrap_or(0));
        Summary {
            count: samples.len(),
            p50: us(0.50),
            p99: us(0.99),
            max: Duration::from_micros(samples.last().copied().unwrap_or(0)),
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "n={} p50={} p99={} max={}",
            self.count,
            ms(self.p50),
            ms(self.p99),
            ms(self.max)
        )
    }
}

/// Milliseconds with three decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.3}ms", d.as_secs_f64() * 1e3)
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1}MiB", bytes as f64 / (1u64 << 20) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.50), Some(50));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&v, 1.0), Some(100));
        assert_eq!(percentile(&[7], 0.99), Some(7));
        assert_eq!(percentile(&[1, 2], 0.5), Some(1));
        assert_eq!(percentile(&[1, 2], 0.51), Some(2));
        assert_eq!(percentile(&[], 0.5), None);
        // q near zero still picks the first sample, never index -1.
        assert_eq!(percentile(&[3, 4], 0.0), Some(3));
    }

    #[test]
    fn summary_sorts_and_reports_max() {
        let mut v = vec![5_000, 1_000, 3_000, 2_000, 4_000];
        let s = Summary::of_micros(&mut v);
        assert_eq!(s.count, 5);
        assert_eq!(s.p50, Duration::from_millis(3));
        assert_eq!(s.p99, Duration::from_millis(5));
        assert_eq!(s.max, Duration::from_millis(5));
        assert_eq!(Summary::of_micros(&mut []), Summary::default());
    }
}
