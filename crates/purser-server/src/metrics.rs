//! Where time goes inside one member: the write path's histograms (batch linger, proposal to
//! answer, replication round trip, read barrier) beside storage's own (log fsync, apply,
//! snapshot encoding), read back by the `Stats` RPC, so that a slow run can be explained from
//! the server's side.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use purser_storage::metrics::{Histogram, StoreMetrics};

/// One member's figures. Durations are in microseconds.
#[derive(Default)]
pub struct Metrics {
    /// A client write waiting in the queue until its batch is proposed (the batch linger).
    pub write_queued_us: Histogram,
    /// Commands per proposed log entry.
    pub batch_commands: Histogram,
    /// A batch from proposal to its applied result (append, replication, commit, apply).
    pub raft_write_us: Histogram,
    /// A client write from arrival to its answer.
    pub write_total_us: Histogram,
    /// One append-entries round trip to a follower (send, follower append + fsync, answer).
    pub replication_rtt_us: Histogram,
    /// A read or denial waiting for its linearizability barrier (read index or lease).
    pub read_barrier_us: Histogram,
    /// Reservations denied by the leader without a log entry.
    pub fast_denials: AtomicU64,
    /// What the member's storage records.
    pub store: Arc<StoreMetrics>,
}

impl Metrics {
    /// Every histogram with its name, in the order `Stats` has always listed them.
    pub fn histograms(&self) -> [(&'static str, &Histogram); 11] {
        let store = &self.store;
        [
            ("write_queued_us", &self.write_queued_us),
            ("batch_commands", &self.batch_commands),
            ("raft_write_us", &self.raft_write_us),
            ("write_total_us", &self.write_total_us),
            ("log_fsync_us", &store.log_fsync_us),
            ("appends_per_fsync", &store.appends_per_fsync),
            ("replication_rtt_us", &self.replication_rtt_us),
            ("apply_entry_us", &store.apply_entry_us),
            ("read_barrier_us", &self.read_barrier_us),
            ("snapshot_lock_us", &store.snapshot_lock_us),
            ("snapshot_encode_us", &store.snapshot_encode_us),
        ]
    }

    pub fn counters(&self) -> [(&'static str, u64); 1] {
        [("fast_denials", self.fast_denials.load(Ordering::Relaxed))]
    }

    pub fn reset(&self) {
        for (_, h) in self.histograms() {
            h.reset();
        }
        self.fast_denials.store(0, Ordering::Relaxed);
    }
}
