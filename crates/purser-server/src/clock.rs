//! The clock behind the leader's timestamps (`Batch::at_ms`) and the leader's fast-path
//! decisions: the monotonic clock sets the pace, the wall clock may only pull it along slowly.
//!
//! The replicated time is the leader's stamp, made monotonic on apply. Stamped straight from
//! the wall clock, one step of the leader's clock would move it for good: an hour forward and
//! every client request looks older than the request retention (refused as too old, also the
//! retries of requests that were applied), holds and grants expire early, and the cluster stays
//! an hour ahead until real time catches up; a step back freezes it, and after a minute every
//! new request looks like it comes from the future. So a stamp is the previous stamp plus the
//! monotonic time elapsed since, corrected toward the wall clock by at most 1 % of that elapsed
//! time (NTP slews by at most 0.05 %, so an honest wall clock is followed; a step is absorbed at
//! 36 s an hour). It never goes below the replicated time a member has seen applied, so a member
//! whose wall clock is behind continues the cluster's time when it is elected instead of
//! freezing it. See docs/architecture.md (Time).
//!
//! Every time source of the server is here: [`now_ms`] (the leader's stamps and decisions),
//! [`follow_replicated`] (the floor every member keeps), and [`unix_seconds`] (webhook
//! signatures, which receivers compare with their own wall clock).

use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The wall clock may move a stamp by at most 1 / `SLEW_DIVISOR` of the monotonic time elapsed.
pub const SLEW_DIVISOR: u64 = 100;

/// A stamp clock; one per process is enough ([`now_ms`]): the wall and monotonic clocks it
/// follows are the host's.
#[derive(Debug, Default)]
pub struct StampClock {
    /// The last stamp (µs since the epoch) and the monotonic time (µs) it was taken at.
    last: Option<(u64, u64)>,
}

impl StampClock {
    pub const fn new() -> Self {
        StampClock { last: None }
    }

    /// The stamp (ms since the epoch) at wall time `wall_ms` and monotonic time `mono_us` (any
    /// origin, never decreasing between calls), at least `floor_ms`. Never decreases.
    pub fn stamp(&mut self, wall_ms: u64, mono_us: u64, floor_ms: u64) -> u64 {
        let wall_us = wall_ms.saturating_mul(1000);
        let us = match self.last {
            None => wall_us,
            Some((last_us, last_mono_us)) => {
                let elapsed = mono_us.saturating_sub(last_mono_us);
                let predicted = last_us.saturating_add(elapsed);
                let slack = elapsed / SLEW_DIVISOR;
                wall_us.clamp(predicted - slack, predicted.saturating_add(slack))
            }
        }
        .max(floor_ms.saturating_mul(1000));
        self.last = Some((us, mono_us));
        us / 1000
    }
}

static CLOCK: Mutex<StampClock> = Mutex::new(StampClock::new());

/// The leader's time (ms since the epoch): the wall clock, as far as the monotonic clock lets
/// it move (a step of the wall clock is absorbed slowly).
pub fn now_ms() -> u64 {
    stamp(wall_ms(), 0)
}

/// Keeps this process's stamps at or above `replicated_ms`, the time the cluster has applied,
/// so that a member whose wall clock is behind continues the cluster's time when elected
/// instead of freezing it.
pub fn follow_replicated(replicated_ms: u64) {
    stamp(wall_ms(), replicated_ms);
}

/// Whole seconds since the epoch by the wall clock, as they are compared by a receiver.
pub fn unix_seconds() -> u64 {
    wall_ms() / 1000
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The process's stamp clock read at `wall_ms`, raised to `floor_ms`.
fn stamp(wall_ms: u64, floor_ms: u64) -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    // The clock is two integers, replaced together: a panic elsewhere cannot leave it torn.
    let mut clock = CLOCK.lock().unwrap_or_else(PoisonError::into_inner);
    // Read under the lock, so that monotonic readings reach the clock in order.
    let mono_us = origin.elapsed().as_micros() as u64;
    clock.stamp(wall_ms, mono_us, floor_ms)
}

#[cfg(test)]
mod tests {
    use purser_core::{Command, CreateNode, CurrencySpec, ErrorKind, Op, RootSpec, State};

    use super::*;

    const T0: u64 = 1_780_000_000_000;
    const SECOND_US: u64 = 1_000_000;
    const HOUR_MS: u64 = 3_600_000;

    fn create_root(n: u64, sent_at_ms: u64) -> Command {
        let usd = CurrencySpec {
            code: "usd".into(),
            scale: 6,
            funded: false,
        };
        let root = CreateNode {
            parent: None,
            name: format!("r{n}"),
            kind: "org".into(),
            tags: vec![],
            root: Some(RootSpec {
                currencies: vec![usd],
                no_default_cap: false,
            }),
        };
        Command::new(format!("req-{n}"), sent_at_ms, Op::CreateNode(root))
    }

    /// A tick and one request a second for `seconds`, the request sent by a client with a true
    /// clock, both stamped by a leader whose wall clock reads true time + `offset_ms(second)`:
    /// what apply answers the requests.
    fn run(
        seconds: u64,
        offset_ms: impl Fn(u64) -> i64,
        mut stamp: impl FnMut(u64, u64) -> u64,
    ) -> Vec<Result<(), ErrorKind>> {
        let mut state = State::new();
        (0..seconds)
            .map(|s| {
                let true_ms = T0 + s * 1000;
                let wall_ms = true_ms.saturating_add_signed(offset_ms(s));
                let at_ms = stamp(wall_ms, s * SECOND_US);
                // The leader's tick is in every second's entries, and it is never refused.
                state.apply(at_ms, Command::tick()).expect("a tick applies");
                state
                    .apply(at_ms, create_root(s, true_ms))
                    .map(|_| ())
                    .map_err(|e| e.kind)
            })
            .collect()
    }

    #[test]
    fn a_leader_clock_an_hour_ahead_does_not_make_requests_too_old() {
        // Ten seconds of true time, then the wall clock an hour ahead for 20 s, then right again.
        let offset = |s: u64| {
            if (10..30).contains(&s) {
                HOUR_MS as i64
            } else {
                0
            }
        };
        let mut clock = StampClock::new();
        let answers = run(60, offset, |wall, mono| clock.stamp(wall, mono, 0));
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        // The stamp moved by at most 1 % of the elapsed time toward the jumped clock.
        let mut clock = StampClock::new();
        for s in 0..30 {
            let stamp = clock.stamp(T0 + s * 1000 + offset(s) as u64, s * SECOND_US, 0);
            assert!(stamp <= T0 + s * 1000 + s * 10, "second {s}: {stamp}");
        }
        // Stamping the wall clock as it reads, every request after the jump is too old.
        let raw = run(60, offset, |wall, _| wall);
        assert!(
            raw[10..]
                .iter()
                .all(|r| *r == Err(ErrorKind::FailedPrecondition)),
            "{raw:?}"
        );
    }

    #[test]
    fn a_leader_clock_stepped_back_neither_freezes_time_nor_refuses_requests() {
        // Five minutes back for two minutes: the replicated time would freeze, and requests sent
        // more than a minute after it would be refused as coming from the future.
        let offset = |s: u64| if (10..130).contains(&s) { -300_000 } else { 0 };
        let mut clock = StampClock::new();
        let mut last = 0;
        for s in 0..200 {
            let stamp = clock.stamp(
                T0.saturating_add_signed(s as i64 * 1000 + offset(s)),
                s * SECOND_US,
                0,
            );
            assert!(stamp >= last, "stamps never decrease");
            assert!(stamp + s * 10 >= T0 + s * 1000, "second {s}: {stamp}");
            last = stamp;
        }
        let mut clock = StampClock::new();
        let answers = run(200, offset, |wall, mono| clock.stamp(wall, mono, 0));
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        let raw = run(200, offset, |wall, _| wall);
        assert!(raw.contains(&Err(ErrorKind::InvalidArgument)));
    }

    #[test]
    fn a_lasting_offset_is_absorbed_at_the_slew_rate() {
        let mut clock = StampClock::new();
        clock.stamp(T0, 0, 0);
        // The wall clock is corrected 10 s forward and stays there.
        let after_100s = clock.stamp(T0 + 110_000, 100 * SECOND_US, 0);
        assert_eq!(after_100s, T0 + 101_000);
        let later = clock.stamp(T0 + 10_000 + 2_000_000, 2_000 * SECOND_US, 0);
        assert_eq!(
            later,
            T0 + 10_000 + 2_000_000,
            "caught up with the wall clock"
        );
    }

    #[test]
    fn a_member_behind_continues_the_replicated_time() {
        let mut clock = StampClock::new();
        // Its wall clock is five minutes behind; the cluster's time is right.
        let behind = |s: u64| T0 - 300_000 + s * 1000;
        assert_eq!(clock.stamp(behind(0), 0, T0), T0);
        let stamp = clock.stamp(behind(10), 10 * SECOND_US, 0);
        assert!((T0 + 9_900..=T0 + 10_000).contains(&stamp), "{stamp}");
    }
}
