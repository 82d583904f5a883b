//! What every system under test implements: the same four-level reservation, the same
//! settlement, and an audit of the final balances. A system that runs out of budget answers
//! `Denied`; anything else that fails is an error, counted and never retried blindly here
//! (a backend retries what its own protocol says is safe to retry, like an etcd conflict).

use std::future::Future;

use crate::workload::Tree;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

pub enum Reserved<H> {
    Held(H),
    Denied,
}

/// Balances of one node of the tree at the end of a run, in micro-USD.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeAudit {
    pub limit: i64,
    pub spent: i64,
    pub held: i64,
}

pub trait Backend: Send + Sync + 'static {
    type Session: Session;

    /// Creates the tree with the limits it describes, replacing whatever an earlier run left.
    fn setup(&self, tree: &Tree) -> impl Future<Output = Result<()>> + Send;

    /// One closed-loop client's connection.
    fn session(&self, index: usize) -> impl Future<Output = Result<Self::Session>> + Send;

    /// Replaces the organization's cap (the exhaustion mode lowers it mid-run).
    fn set_org_limit(&self, tree: &Tree, limit: i64) -> impl Future<Output = Result<()>> + Send;

    /// The final balances of every node, in `tree.nodes` order.
    fn audit(&self, tree: &Tree) -> impl Future<Output = Result<Vec<NodeAudit>>> + Send;

    /// Called when the measured run starts (after the warm-up), e.g. to reset server-side
    /// timers.
    fn measuring_started(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Attempts the system's client sent again so far, and why the newest was, if it can say.
    fn retries(&self) -> Option<(u64, Option<String>)> {
        None
    }

    /// Where time went inside the system during the measured run, if it can say.
    fn server_stats(&self) -> impl Future<Output = Option<serde_json::Value>> + Send {
        async { None }
    }
}

pub trait Session: Send + 'static {
    type Hold: Send + 'static;

    /// Holds `amount` at the user and at its team, division and organization, all or nothing.
    fn reserve(
        &mut self,
        tree: &Tree,
        user: usize,
        amount: i64,
    ) -> impl Future<Output = Result<Reserved<Self::Hold>>> + Send;

    /// `Some(actual)` (0 ≤ actual ≤ held) charges the actual and returns the rest of the hold;
    /// `None` releases the whole hold.
    fn settle(
        &mut self,
        tree: &Tree,
        hold: Self::Hold,
        actual: Option<i64>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Optimistic-concurrency conflicts this session retried (0 for systems without them).
    fn conflicts(&self) -> u64 {
        0
    }
}
