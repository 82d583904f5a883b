//! Events emitted by apply, in order: what was used, what it cost and from where, balances
//! after the change, and governance signals.

use serde::{Deserialize, Serialize};

use crate::command::{Attributes, TokenUsage, Window};

/// How much of a settlement or charge one credit grant paid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundingPart {
    pub grant_id: u64,
    /// The node that owns the grant.
    pub node: u64,
    pub amount: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    Usage(UsageEvent),
    Monetization(MonetizationEvent),
    Balance(BalanceEvent),
    Governance(GovernanceEvent),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    pub at_ms: u64,
    pub reservation_id: Option<u64>,
    pub node: u64,
    pub currency: String,
    pub amount: u64,
    pub tokens: Option<TokenUsage>,
    pub attrs: Attributes,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonetizationEvent {
    pub at_ms: u64,
    pub reservation_id: Option<u64>,
    pub node: u64,
    pub currency: String,
    pub amount: u64,
    /// Which grant paid how much (funded currencies).
    pub parts: Vec<FundingPart>,
    /// What no grant covered.
    pub debt: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantBalance {
    pub grant_id: u64,
    pub remaining: u64,
    pub held: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowBalance {
    pub node: u64,
    /// The member's counter shared by its roles' limits on this window, not its own limit's.
    pub from_roles: bool,
    pub window: Window,
    pub spent: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceEvent {
    pub at_ms: u64,
    /// The currency of every balance below.
    pub currency: String,
    pub grants: Vec<GrantBalance>,
    pub windows: Vec<WindowBalance>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GovernanceEvent {
    ThresholdCrossed {
        node: u64,
        role: Option<String>,
        currency: String,
        window: Window,
        percent: u8,
        spent: u64,
        amount: u64,
    },
    /// A soft limit let a reservation through that takes `spent + held` above its amount.
    SoftLimitExceeded {
        node: u64,
        role: Option<String>,
        currency: String,
        window: Window,
        amount: u64,
        would_be: u64,
    },
    Paused {
        node: u64,
        by_limit: bool,
    },
    Resumed {
        node: u64,
    },
    /// A window closed; emitted at the first settle that lands in a later window.
    WindowReset {
        node: u64,
        from_roles: bool,
        currency: String,
        window: Window,
        closed_start_ms: u64,
        spent: u64,
    },
    GrantExpired {
        grant_id: u64,
        forfeited: u64,
    },
    GrantExhausted {
        grant_id: u64,
    },
    GrantRenewed {
        grant_id: u64,
        carried: u64,
        forfeited: u64,
        allotment: u64,
        remaining: u64,
    },
    DebtPaid {
        node: u64,
        grant_id: u64,
        currency: String,
        amount: u64,
    },
    Overrun {
        reservation_id: Option<u64>,
        node: u64,
        currency: String,
        held: u64,
        actual: u64,
        debt: u64,
        late: bool,
    },
    HoldExpired {
        reservation_id: u64,
        node: u64,
        currency: String,
        amount: u64,
    },
}
