//! The systems people hand-roll a hierarchical budget on, each driven the way a careful team
//! would: Redis with Lua scripts, etcd with compare-and-swap transactions, PostgreSQL with
//! row locks. All three keep per node `remaining = limit − spent − held` and `spent`, and
//! reserve by taking the amount off `remaining` at the user and at its three ancestors at once.

use std::future::Future;

use crate::backend::{Reserved, Result, Session};
use crate::workload::Tree;

pub mod etcd;
pub mod postgres;
pub mod redis;

/// What a peer's session implements in its own protocol: the two all-or-nothing steps on a
/// chain of four nodes. The runner's [`Session`] is built on them once, below, so that every
/// peer checks an amount, finds a user's chain and splits a settlement the same way.
pub trait ChainSession: Send + 'static {
    /// Takes `hold.amount` off `remaining` at every node of `hold.chain`, all or nothing;
    /// `false` (nothing taken) when one of them has less than that left.
    fn hold_chain(&mut self, hold: &ChainHold) -> impl Future<Output = Result<bool>> + Send;

    /// Adds `back` to `remaining` and `spent` to `spent` at every node of `chain`.
    fn settle_chain(
        &mut self,
        chain: &[usize; 4],
        back: i64,
        spent: i64,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Optimistic-concurrency conflicts this session retried (0 for systems without them).
    fn conflicts_retried(&self) -> u64 {
        0
    }
}

impl<S: ChainSession> Session for S {
    type Hold = ChainHold;

    async fn reserve(
        &mut self,
        tree: &Tree,
        user: usize,
        amount: i64,
    ) -> Result<Reserved<ChainHold>> {
        check_amount(amount)?;
        let hold = ChainHold {
            chain: tree.chains[user],
            amount,
        };
        Ok(if self.hold_chain(&hold).await? {
            Reserved::Held(hold)
        } else {
            Reserved::Denied
        })
    }

    async fn settle(&mut self, _tree: &Tree, hold: ChainHold, actual: Option<i64>) -> Result<()> {
        let (back, spent) = hold.split(actual);
        self.settle_chain(&hold.chain, back, spent).await
    }

    fn conflicts(&self) -> u64 {
        self.conflicts_retried()
    }
}

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
fn check_amount(amount: i64) -> Result<()> {
    if amount <= 0 {
        return Err(format!("a reservation must hold a positive amount, not {amount}").into());
    }
    Ok(())
}
