//! Where time goes inside storage: lock-free histograms of the log's fsyncs, apply and
//! snapshot encoding, read back by the server's `Stats` RPC beside its own, so that a slow run
//! can be explained from the server's side.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets: exact below 8, then four per power of two (values within 25 % of each other share
/// a bucket), up to `u64::MAX`.
const BUCKETS: usize = 8 + 61 * 4;

fn bucket(value: u64) -> usize {
    if value < 8 {
        return value as usize;
    }
    let exp = 63 - value.leading_zeros() as usize;
    let sub = ((value >> (exp - 2)) & 3) as usize;
    8 + (exp - 3) * 4 + sub
}

/// The largest value that falls in bucket `index`.
fn bucket_top(index: usize) -> u64 {
    if index < 8 {
        return index as u64;
    }
    let exp = (index - 8) / 4 + 3;
    let sub = ((index - 8) % 4) as u64;
    let low = (4 + sub) << (exp - 2);
    low.saturating_add((1u64 << (exp - 2)) - 1)
}

/// A histogram of `u64` values (microseconds, or counts such as commands per entry).
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

/// What a histogram held when it was read. Quantiles are bucket tops: at most 25 % high.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub count: u64,
    pub sum: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Histogram {
    pub fn record(&self, value: u64) {
        self.buckets[bucket(value)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.max.fetch_max(value, Ordering::Relaxed);
    }

    pub fn record_duration(&self, elapsed: Duration) {
        self.record(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn summary(&self) -> Summary {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let max = self.max.load(Ordering::Relaxed);
        let quantile = |q: f64| {
            if total == 0 {
                return 0;
            }
            let rank = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, &c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return bucket_top(i).min(max);
                }
            }
            max
        };
        Summary {
            count: total,
            sum: self.sum.load(Ordering::Relaxed),
            p50: quantile(0.5),
            p99: quantile(0.99),
            p999: quantile(0.999),
            max,
        }
    }

    pub fn reset(&self) {
        for b in self.buckets.iter() {
            b.store(0, Ordering::Relaxed);
        }
        self.count.store(0, Ordering::Relaxed);
        self.sum.store(0, Ordering::Relaxed);
        self.max.store(0, Ordering::Relaxed);
    }
}

/// What storage measures. Durations are in microseconds. The server keeps its own figures
/// beside these (the write path's) and reports both.
#[derive(Default)]
pub struct StoreMetrics {
    /// One fsync of the log (the WAL), shared by every append queued meanwhile.
    pub log_fsync_us: Histogram,
    /// Appends made durable by one fsync.
    pub appends_per_fsync: Histogram,
    /// Applying one log entry to the state machine (its events are written after, off the
    /// state lock).
    pub apply_entry_us: Histogram,
    /// One write of the events of the entries applied meanwhile.
    pub events_write_us: Histogram,
    /// Freezing the state for a snapshot while holding the state lock: apply waits this long.
    pub snapshot_lock_us: Histogram,
    /// Encoding and checking a frozen state, off the lock: how long a snapshot takes to build.
    pub snapshot_encode_us: Histogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order_within_a_quarter() {
        let mut last = 0;
        for v in (0..10_000u64).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let b = bucket(v);
            assert!(b < BUCKETS, "{v} -> {b}");
            assert!(b >= last, "buckets ascend");
            last = b;
            let top = bucket_top(b);
            assert!(top >= v, "{v} above its bucket's top {top}");
            assert!(top - v <= v / 4 + 1, "{v}: top {top} too far");
        }
        assert_eq!(bucket_top(bucket(u64::MAX)), u64::MAX);
    }

    #[test]
    fn quantiles_come_from_the_recorded_values() {
        let h = Histogram::default();
        for v in 1..=1000 {
            h.record(v);
        }
        let s = h.summary();
        assert_eq!((s.count, s.sum, s.max), (1000, 500_500, 1000));
        assert!((500..=625).contains(&s.p50), "{s:?}");
        assert!((990..=1000).contains(&s.p99), "{s:?}");
        h.reset();
        assert_eq!(h.summary(), Summary::default());
    }
}
