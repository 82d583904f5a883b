//! Spend counters per window. Reading a counter never changes it (so evaluation stays pure);
//! only a settle rolls it into the current window and adds to it.

use serde::{Deserialize, Serialize};

use crate::command::Window;
use crate::error::{Error, Result};

/// Buckets per sliding window: a sliding window of duration D sums the settles of the last
/// 60 buckets of width D/60, the newest being the one that contains "now". The covered span
/// is therefore between D - D/60 and D.
pub const SLIDING_BUCKETS: u64 = 60;

/// Marks a counter that has not started a window yet.
const NOT_STARTED: u64 = u64::MAX;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counter {
    /// Calendar: start of the window `spent` belongs to. First-use: start of the window.
    start_ms: u64,
    /// Calendar: end of that window, kept so that reads need no calendar arithmetic.
    end_ms: u64,
    spent: u64,
    /// Sliding windows only: `(newest bucket index, ring of SLIDING_BUCKETS amounts)`.
    sliding: Option<Box<Ring>>,
}

/// The newest bucket index and a ring of `SLIDING_BUCKETS` amounts (index `i` at `i % 60`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Ring {
    newest: u64,
    buckets: Vec<u64>,
}

/// What rolling a counter into the current window closed, if it held any spend.
pub(crate) struct Closed {
    pub start_ms: u64,
    pub spent: u64,
}

impl Counter {
    pub fn fresh() -> Self {
        Counter {
            start_ms: NOT_STARTED,
            end_ms: 0,
            spent: 0,
            sliding: None,
        }
    }

    /// Settled spend that counts in the window current at `now_ms`.
    pub fn spent_at(&self, window: Window, now_ms: u64) -> u64 {
        match window {
            Window::Lifetime => self.spent,
            Window::Calendar(_) => {
                if self.start_ms <= now_ms && now_ms < self.end_ms {
                    self.spent
                } else {
                    0
                }
            }
            Window::FirstUse { duration_ms } => {
                if self.first_use_active(duration_ms, now_ms) {
                    self.spent
                } else {
                    0
                }
            }
            Window::Sliding { duration_ms } => match &self.sliding {
                None => 0,
                Some(ring) => {
                    let now_idx = now_ms / bucket_ms(duration_ms);
                    sliding_sum(ring, now_idx)
                }
            },
        }
    }

    fn first_use_active(&self, duration_ms: u64, now_ms: u64) -> bool {
        self.start_ms != NOT_STARTED && now_ms < self.start_ms.saturating_add(duration_ms)
    }

    /// Adds a settled amount at `now_ms`. Returns the spend in the current window before and
    /// after, and the window this closed (if it had spend). Checked: an overflow changes nothing.
    pub fn add(
        &mut self,
        window: Window,
        now_ms: u64,
        amount: u64,
    ) -> Result<(u64, u64, Option<Closed>)> {
        let before = self.spent_at(window, now_ms);
        let after = before.checked_add(amount).ok_or_else(overflow)?;
        let mut closed = None;
        match window {
            Window::Lifetime => self.spent = after,
            Window::Calendar(period) => {
                if !(self.start_ms <= now_ms && now_ms < self.end_ms) {
                    if self.start_ms != NOT_STARTED && self.spent > 0 {
                        closed = Some(Closed {
                            start_ms: self.start_ms,
                            spent: self.spent,
                        });
                    }
                    self.start_ms = period.start(now_ms);
                    self.end_ms = period.end(now_ms);
                }
                self.spent = after;
            }
            Window::FirstUse { duration_ms } => {
                if amount == 0 {
                    return Ok((before, before, None));
                }
                if !self.first_use_active(duration_ms, now_ms) {
                    if self.start_ms != NOT_STARTED && self.spent > 0 {
                        closed = Some(Closed {
                            start_ms: self.start_ms,
                            spent: self.spent,
                        });
                    }
                    self.start_ms = now_ms;
                }
                self.spent = after;
            }
            Window::Sliding { duration_ms } => {
                let now_idx = now_ms / bucket_ms(duration_ms);
                let ring = self.sliding.get_or_insert_with(|| {
                    Box::new(Ring {
                        newest: now_idx,
                        buckets: vec![0; SLIDING_BUCKETS as usize],
                    })
                });
                advance_ring(ring, now_idx);
                let slot = (now_idx % SLIDING_BUCKETS) as usize;
                ring.buckets[slot] = ring.buckets[slot]
                    .checked_add(amount)
                    .ok_or_else(overflow)?;
                self.spent = after;
            }
        }
        Ok((before, after, closed))
    }

    /// Bounds of the current window, where the window kind defines them.
    pub fn bounds(&self, window: Window, now_ms: u64) -> (Option<u64>, Option<u64>) {
        match window {
            Window::Lifetime | Window::Sliding { .. } => (None, None),
            Window::Calendar(period) => (Some(period.start(now_ms)), Some(period.end(now_ms))),
            Window::FirstUse { duration_ms } => {
                if self.first_use_active(duration_ms, now_ms) {
                    (Some(self.start_ms), Some(self.start_ms + duration_ms))
                } else {
                    (None, None)
                }
            }
        }
    }

    /// How long until enough settled spend leaves the window that `need` more fits under
    /// `amount` with `held` outstanding; `None` when waiting cannot help.
    pub fn retry_after(
        &self,
        window: Window,
        now_ms: u64,
        amount: u64,
        held: u64,
        need: u64,
    ) -> Option<u64> {
        let room_needed = held.checked_add(need)?;
        if room_needed > amount {
            return None;
        }
        let allowed_spent = amount - room_needed;
        match window {
            Window::Lifetime => None,
            Window::Calendar(period) => Some(period.end(now_ms) - now_ms),
            Window::FirstUse { duration_ms } => self
                .first_use_active(duration_ms, now_ms)
                .then(|| self.start_ms + duration_ms - now_ms),
            Window::Sliding { duration_ms } => {
                let ring = self.sliding.as_ref()?;
                let width = bucket_ms(duration_ms);
                let now_idx = now_ms / width;
                let mut remaining = sliding_sum(ring, now_idx);
                let oldest = (ring.newest + 1)
                    .saturating_sub(SLIDING_BUCKETS)
                    .max((now_idx + 1).saturating_sub(SLIDING_BUCKETS));
                for idx in oldest..=ring.newest {
                    if remaining <= allowed_spent {
                        break;
                    }
                    remaining -= ring.buckets[(idx % SLIDING_BUCKETS) as usize];
                    if remaining <= allowed_spent {
                        // Bucket `idx` leaves the window when bucket idx + 60 becomes current.
                        return Some(((idx + SLIDING_BUCKETS) * width).saturating_sub(now_ms));
                    }
                }
                (remaining <= allowed_spent).then_some(0)
            }
        }
    }
}

pub(crate) fn bucket_ms(duration_ms: u64) -> u64 {
    duration_ms / SLIDING_BUCKETS
}

fn sliding_sum(ring: &Ring, now_idx: u64) -> u64 {
    let Ring { newest, buckets } = ring;
    if now_idx >= newest + SLIDING_BUCKETS {
        return 0;
    }
    // Buckets newer than the window's oldest one: (now_idx - 59) ..= newest.
    let oldest = (now_idx + 1)
        .saturating_sub(SLIDING_BUCKETS)
        .max((newest + 1).saturating_sub(SLIDING_BUCKETS));
    (oldest..=*newest)
        .map(|idx| buckets[(idx % SLIDING_BUCKETS) as usize])
        .sum()
}

fn advance_ring(ring: &mut Ring, now_idx: u64) {
    if now_idx <= ring.newest {
        return;
    }
    let stale = (now_idx - ring.newest).min(SLIDING_BUCKETS);
    for step in 1..=stale {
        ring.buckets[((ring.newest + step) % SLIDING_BUCKETS) as usize] = 0;
    }
    ring.newest = now_idx;
}

fn overflow() -> Error {
    Error::invalid("amount overflows the window counter")
}

/// Validates a window's parameters.
pub(crate) fn validate_window(window: Window) -> Result<()> {
    const DURATION_MAX_MS: u64 = 400 * crate::time::DAY_MS;
    match window {
        Window::Calendar(crate::time::Period::Year) => Err(Error::invalid(
            "calendar windows are hour, day, week or month (use first_use or sliding for longer spans)",
        )),
        Window::Lifetime | Window::Calendar(_) => Ok(()),
        Window::Sliding { duration_ms } => {
            if !(crate::time::MINUTE_MS..=DURATION_MAX_MS).contains(&duration_ms)
                || duration_ms % SLIDING_BUCKETS != 0
            {
                return Err(Error::invalid(format!(
                    "sliding window duration {duration_ms} ms must be a multiple of {SLIDING_BUCKETS} ms between 1 minute and 400 days"
                )));
            }
            Ok(())
        }
        Window::FirstUse { duration_ms } => {
            if !(crate::time::SECOND_MS..=DURATION_MAX_MS).contains(&duration_ms) {
                return Err(Error::invalid(format!(
                    "first-use window duration {duration_ms} ms must be between 1 second and 400 days"
                )));
            }
            Ok(())
        }
    }
}
