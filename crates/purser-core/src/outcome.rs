//! What an applied command answers, and the read-only views of the state.

use serde::{Deserialize, Serialize};

use crate::command::{Attributes, GrantKind, LimitMode, OnExhausted, Rollover, Window};
use crate::event::Event;
pub use crate::event::FundingPart;
use crate::time::Period;

/// The result of one applied command: its answer and the events it emitted, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub outcome: Outcome,
    pub events: Vec<Event>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    NodeCreated {
        node_id: u64,
    },
    GrantAdded {
        grant_id: u64,
    },
    WebhookAdded {
        webhook_id: u64,
    },
    TokenCreated {
        token_id: u64,
        expires_at_ms: Option<u64>,
    },
    /// An admin command took effect.
    Done,
    Reserved(Reservation),
    Denied(Denial),
    Settled(Settlement),
    Released {
        reservation_id: u64,
        amount: u64,
    },
    Charged(Settlement),
    Ticked {
        holds_expired: u32,
        grants_expired: u32,
        grants_renewed: u32,
    },
    /// The request id was seen before with the same payload: this is what the first attempt did.
    Duplicate(Recorded),
}

/// The compact record kept per request id, returned to retries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Recorded {
    NodeCreated {
        node_id: u64,
    },
    GrantAdded {
        grant_id: u64,
    },
    WebhookAdded {
        webhook_id: u64,
    },
    TokenCreated {
        token_id: u64,
        expires_at_ms: Option<u64>,
    },
    Done,
    Reserved {
        reservation_id: u64,
        amount: u64,
        expires_at_ms: u64,
    },
    Settled {
        reservation_id: u64,
        charged: u64,
    },
    Released {
        reservation_id: u64,
        amount: u64,
    },
    Charged {
        charged: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Headroom {
    pub node: u64,
    /// Smallest `amount - spent - held` over the node's hard limits in the currency, after this
    /// hold; `None` when no hard limit applies at this level.
    pub remaining: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub reservation_id: u64,
    pub node: u64,
    pub currency: String,
    pub amount: u64,
    pub expires_at_ms: u64,
    /// Empty for a capped currency.
    pub plan: Vec<FundingPart>,
    /// Leaf first.
    pub headroom: Vec<Headroom>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DenyRule {
    NodeClosed,
    NodePaused,
    RateLimit {
        key: String,
    },
    /// A hard limit of the node itself.
    Cap,
    /// A hard limit that the node has through a role.
    RoleCap {
        role: String,
    },
    /// The grants on the path cannot cover the amount (funded currency).
    Funding,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    /// The blocking node.
    pub node: u64,
    pub rule: DenyRule,
    pub window: Option<Window>,
    /// The most the blocking rule would have allowed.
    pub remaining: u64,
    /// The least that was asked for (`min` of a range).
    pub requested: u64,
    pub retry_after_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    pub reservation_id: Option<u64>,
    pub node: u64,
    pub currency: String,
    pub charged: u64,
    /// What the hold had set aside and went back.
    pub released: u64,
    /// `charged - held` when the actual exceeded the hold (or the hold had expired).
    pub overrun: u64,
    /// The part of the charge that no grant covered, recorded as debt on the node.
    pub debt: u64,
    pub plan: Vec<FundingPart>,
    /// The hold had expired before this settle.
    pub late: bool,
}

// ---- read-only views -------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeStatus {
    Active,
    Paused,
    Closed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub id: u64,
    pub path: String,
    pub parent: Option<u64>,
    pub root: u64,
    pub depth: u32,
    pub kind: String,
    pub status: NodeStatus,
    pub tags: Vec<(String, String)>,
    pub roles: Vec<String>,
    pub children: u32,
    pub holds_open: u32,
    pub accounts: Vec<AccountView>,
    pub limits: Vec<LimitView>,
    pub rate_limits: Vec<RateLimitView>,
    pub grants: Vec<GrantView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    pub currency: String,
    pub scale: u8,
    pub funded: bool,
    /// Open holds at or below this node.
    pub held: u64,
    /// Settled at or below this node since it was created (or moved in).
    pub spent_total: u64,
    /// Uncovered overrun of this node itself, paid off first by the next grant.
    pub debt: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitView {
    /// `None` for the node's own limit, else the role it comes from.
    pub role: Option<String>,
    pub currency: String,
    pub amount: u64,
    pub window: Window,
    pub mode: LimitMode,
    pub thresholds: Vec<u8>,
    pub on_exhausted: OnExhausted,
    /// Start of the current window (`None` for lifetime, sliding, or a first-use window that
    /// has not started).
    pub window_start_ms: Option<u64>,
    /// End of the current window where one is defined.
    pub window_end_ms: Option<u64>,
    pub spent: u64,
    pub held: u64,
    /// `amount - spent - held`, saturating at zero.
    pub remaining: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitView {
    pub key: String,
    pub kind: crate::command::RateKind,
    pub amount: u64,
    pub period_ms: u64,
    /// What could pass right now (burst capacity left).
    pub available: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantView {
    pub id: u64,
    pub node: u64,
    pub currency: String,
    pub amount: u64,
    pub remaining: u64,
    pub held: u64,
    pub priority: u32,
    pub kind: GrantKind,
    pub effective_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub recur: Option<Period>,
    pub rollover: Rollover,
    pub next_renewal_ms: Option<u64>,
    pub expired: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldView {
    pub reservation_id: u64,
    pub node: u64,
    pub currency: String,
    pub amount: u64,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub plan: Vec<FundingPart>,
    pub attrs: Attributes,
}

/// A webhook subscription. `secret` is what the delivering leader signs with: services that
/// list subscriptions leave it out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookView {
    pub id: u64,
    pub root: u64,
    pub url: String,
    pub secret: crate::webhook::Secret,
    pub kinds: Vec<String>,
    /// Every event with an index at or below this was delivered (or did not match).
    pub delivered_through: u64,
}
