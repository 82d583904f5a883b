//! Test-only faults around the Raft network, compiled in only with the `fault-hooks` feature
//! and driven by the control file that `purser_storage::faults` polls (`delay_ms`,
//! `duplicate_percent`). This kernel has no netem, so delays and duplicates are made here, on
//! the sending side of every Raft RPC.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use purser_storage::faults::settings;

/// What to do to one outgoing RPC.
pub struct Plan {
    /// Wait this long before sending.
    pub delay: Duration,
    /// Send a copy too, this long after the original (its answer is dropped).
    pub duplicate_after: Option<Duration>,
}

/// Draws the fate of one outgoing RPC from the settings in force. Snapshots are not
/// duplicated (`may_duplicate`): a copy would stream megabytes for nothing.
pub fn plan(may_duplicate: bool) -> Plan {
    let s = settings();
    let delay = || Duration::from_millis(between(s.delay_min_ms, s.delay_max_ms));
    let first = delay();
    let duplicate_after = (may_duplicate
        && s.duplicate_percent > 0
        && between(0, 99) < u64::from(s.duplicate_percent))
    // The copy goes out after the original and some more delay, so that it can arrive after
    // newer messages: a reordered, stale duplicate is the interesting case.
    .then(|| first + delay() + Duration::from_millis(between(0, 20)));
    Plan {
        delay: first,
        duplicate_after,
    }
}

/// Uniform in `lo..=hi`, from a process-wide SplitMix64 stream (no reproducibility wanted:
/// the harness records what it asked for, not each message's fate).
fn between(lo: u64, hi: u64) -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut z = STATE
        .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        .wrapping_add(seed());
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    lo + z % (hi.saturating_sub(lo) + 1)
}

fn seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        t ^ u64::from(std::process::id()).rotate_left(32)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_stay_in_range() {
        for _ in 0..1000 {
            let x = between(5, 40);
            assert!((5..=40).contains(&x));
            assert_eq!(between(7, 7), 7);
        }
    }
}
