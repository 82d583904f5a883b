//! A planted bug in the rules, to test the chaos harness: with it armed, a reservation or
//! charge is evaluated against every cap on its path except the root's. Compiled in only with
//! the `planted-bugs` feature; armed once at start-up, before the first apply, on every member
//! alike (so replicas still agree, and only the checkers can tell).

use std::sync::atomic::{AtomicBool, Ordering};

static SKIP_ROOT_CAP: AtomicBool = AtomicBool::new(false);

/// Arms the `skip-root-cap` bug for the rest of the process.
pub fn arm_skip_root_cap() {
    SKIP_ROOT_CAP.store(true, Ordering::Relaxed);
}

pub(crate) fn skip_root_cap() -> bool {
    SKIP_ROOT_CAP.load(Ordering::Relaxed)
}
