//! The systems people hand-roll a hierarchical budget on, each driven the way a careful team
//! would: Redis with Lua scripts, etcd with compare-and-swap transactions, PostgreSQL with
//! row locks. All three keep per node `remaining = limit − spent − held` and `spent`, and
//! reserve by taking the amount off `remaining` at the user and at its three ancestors at once.

pub mod etcd;
pub mod postgres;
pub mod redis;

/// A granted reservation, as the peers need it to settle: where it holds and how much.
#[derive(Clone, Copy, Debug)]
pub struct ChainHold {
    /// The user, its team, its division and the organization (indices into `Tree::nodes`).
    pub chain: [usize; 4],
    pub amount: i64,
}

impl ChainHold {
    /// What a settlement gives back to `remaining` and adds to `spent`: `None` releases the
    /// whole hold. Panics if the runner passes an actual outside `0..=amount` (a bug there).
    pub fn split(&self, actual: Option<i64>) -> (i64, i64) {
        let actual = actual.unwrap_or(0);
        assert!(
            (0..=self.amount).contains(&actual),
            "actual {actual} outside the hold of {}",
            self.amount
        );
        (self.amount - actual, actual)
    }
}

/// Rejects an amount that no reservation may hold (the runner only asks for positive ones).
pub fn check_amount(amount: i64) -> crate::backend::Result<()> {
    if amount <= 0 {
        return Err(format!("a reservation must hold a positive amount, not {amount}").into());
    }
    Ok(())
}
