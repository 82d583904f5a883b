//! When this member builds a snapshot. Every `snapshot_period` entries (config.rs staggers it
//! per member), as openraft's own policy would, but a large snapshot is not built again before
//! the log has grown by half its size since the last one.
//!
//! Why: a snapshot's cost grows with the state (a full request-id table is hundreds of
//! megabytes to encode), while a fixed entry count fires as often at 30M remembered ids as at
//! 30. In a 30-minute soak, encoding snapshots took about 40 % of the box's CPU at steady
//! state. Weighed against the log written since, the encoding work stays proportional to the
//! writes (at most twice their bytes), and so do the log kept on disk and what a restart
//! re-applies (at most about half a snapshot's worth of entries, plus the period).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;

use crate::write::WritePath;

/// Below this size a snapshot is built every period whatever the log: it is cheap.
pub const SIZE_FLOOR: u64 = 64 << 20;
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// Whether a snapshot is due: `entries` applied and `logged` bytes appended since the last one,
/// whose encoding was `snapshot_bytes` long.
pub fn due(entries: u64, period: u64, logged: u64, snapshot_bytes: u64) -> bool {
    entries >= period && (snapshot_bytes <= SIZE_FLOOR || logged >= snapshot_bytes / 2)
}

/// Asks openraft for a snapshot when one is [`due`]; one at a time (a request is repeated only
/// if no snapshot came of it within another period).
pub(crate) async fn trigger(path: Weak<WritePath>, appended: Arc<AtomicU64>, period: u64) {
    // (snapshot index, bytes appended when it was seen)
    let mut base: Option<(u64, u64)> = None;
    let mut asked_at: Option<u64> = None;
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let Some(path) = path.upgrade() else { return };
        let (applied, snapshot) = {
            let metrics = path.raft.metrics();
            let m = metrics.borrow_watched();
            (
                m.last_applied.map_or(0, |id| id.index),
                m.snapshot.map_or(0, |id| id.index),
            )
        };
        let logged = appended.load(Ordering::Relaxed);
        let since = match base {
            Some((index, at)) if index == snapshot => logged.saturating_sub(at),
            _ => {
                base = Some((snapshot, logged));
                asked_at = None;
                0
            }
        };
        if asked_at.is_some_and(|at| applied < at.saturating_add(period)) {
            continue;
        }
        let entries = applied.saturating_sub(snapshot);
        if due(entries, period, since, path.sm.snapshot_bytes()) {
            if path.raft.trigger().snapshot().await.is_err() {
                return;
            }
            asked_at = Some(applied);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_snapshots_follow_the_period_large_ones_the_log_too() {
        assert!(!due(9_999, 10_000, u64::MAX, 0), "before the period");
        assert!(
            due(10_000, 10_000, 0, SIZE_FLOOR),
            "a small state: every period"
        );
        let large = 400 << 20;
        assert!(
            !due(50_000, 10_000, 199 << 20, large),
            "under half the snapshot logged"
        );
        assert!(due(50_000, 10_000, 200 << 20, large));
        assert!(
            !due(5_000, 10_000, 1 << 40, large),
            "never before the period"
        );
    }
}
