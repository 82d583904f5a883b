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
    /// The process's CPU time (user + system) at the last reset, in microseconds.
    cpu_us_at_reset: AtomicU64,
    /// What the member's storage records.
    pub store: Arc<StoreMetrics>,
}

impl Metrics {
    /// Every histogram with its name, in the order `Stats` has always listed them.
    pub fn histograms(&self) -> [(&'static str, &Histogram); 12] {
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
            ("events_write_us", &store.events_write_us),
        ]
    }

    /// `cpu_us`: the CPU time this member's process spent since the last reset, so that a
    /// benchmark can tell the CPU an operation costs on each member. `heap_allocated_bytes`
    /// and `heap_resident_bytes`: the allocator's figures now (not since a reset), so that a
    /// soak can tell live memory from memory freed but kept; absent (not 0) when the
    /// allocator cannot tell.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let cpu_us = process_cpu_us().saturating_sub(self.cpu_us_at_reset.load(Ordering::Relaxed));
        let mut counters = vec![
            ("fast_denials", self.fast_denials.load(Ordering::Relaxed)),
            ("cpu_us", cpu_us),
        ];
        if let Some(heap) = crate::memory::heap() {
            counters.push(("heap_allocated_bytes", heap.allocated));
            counters.push(("heap_resident_bytes", heap.resident));
        }
        counters
    }

    pub fn reset(&self) {
        for (_, h) in self.histograms() {
            h.reset();
        }
        self.fast_denials.store(0, Ordering::Relaxed);
        self.cpu_us_at_reset
            .store(process_cpu_us(), Ordering::Relaxed);
    }
}

/// User + system CPU time of this process, from `/proc/self/stat` (fields 14 and 15, in
/// clock ticks of `USER_HZ`, which Linux fixes at 100 for user space: 10 ms resolution, enough
/// for runs of seconds); 0 where there is no `/proc`.
fn process_cpu_us() -> u64 {
    const USER_HZ: u64 = 100;
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    let Some((_, after)) = stat.rsplit_once(')') else {
        return 0;
    };
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    ticks * 1_000_000 / USER_HZ
}
