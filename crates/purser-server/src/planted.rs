//! Planted bugs, to test the chaos harness (`jepsen/`): a checker that cannot fail does not
//! count. Compiled in only with the `planted-bugs` feature (`cargo build --release -p
//! purser-cli --features planted-bugs`), and then armed by `PURSER_PLANTED_BUG`:
//!
//! - `double-apply`: every 20th reservation or charge is written a second time under another
//!   request id, so it takes effect twice while the client sees one answer (breaks I4 and
//!   conservation).
//! - `skip-root-cap`: reservations and charges are evaluated against every cap on their path
//!   but the root's (in the rules, `purser_core::planted`, on every member alike), so the
//!   root's cap is overshot (breaks I1).
//!
//! Without the feature, [`double_apply`] never fires and [`arm`] does nothing. The write path
//! (`WritePath::write`) asks [`double_apply`] about every command it writes.

use purser_core::Command;

/// Arms a planted bug that lives in the rules; called once when a member starts, before it
/// applies anything.
pub fn arm() {
    #[cfg(feature = "planted-bugs")]
    if armed::bug() == Some("skip-root-cap") {
        purser_core::planted::arm_skip_root_cap();
    }
}

/// A second copy of `command` to write after it, under another request id, when the
/// `double-apply` bug is armed and fires.
pub fn double_apply(command: &Command) -> Option<Command> {
    #[cfg(feature = "planted-bugs")]
    return armed::double_apply(command);
    #[cfg(not(feature = "planted-bugs"))]
    {
        let _ = command;
        None
    }
}

#[cfg(feature = "planted-bugs")]
mod armed {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    use purser_core::{Command, Op};

    /// Environment variable naming the planted bug.
    pub const PLANTED_BUG_ENV: &str = "PURSER_PLANTED_BUG";
    /// One reservation or charge in this many is applied twice.
    const DOUBLE_APPLY_EVERY: u64 = 20;

    pub fn bug() -> Option<&'static str> {
        static BUG: OnceLock<Option<String>> = OnceLock::new();
        BUG.get_or_init(|| {
            let bug = std::env::var(PLANTED_BUG_ENV).ok();
            if let Some(bug) = &bug {
                tracing::warn!("planted bug armed: {bug}");
            }
            bug
        })
        .as_deref()
    }

    /// The second copy of `command` when the `double-apply` bug fires.
    pub fn double_apply(command: &Command) -> Option<Command> {
        static SEEN: AtomicU64 = AtomicU64::new(0);
        if bug() != Some("double-apply") || !matches!(command.op, Op::Reserve(_) | Op::Charge(_)) {
            return None;
        }
        if SEEN.fetch_add(1, Ordering::Relaxed) % DOUBLE_APPLY_EVERY != DOUBLE_APPLY_EVERY - 1 {
            return None;
        }
        let mut copy = command.clone();
        if let Some(request) = copy.request.as_mut() {
            request.id.push_str("#planted");
        }
        Some(copy)
    }
}
