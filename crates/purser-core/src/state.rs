//! The state and its single entry point, [`State::apply`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::command::{
    Attributes, Command, GrantKind, LimitMode, OnExhausted, Op, RequestMeta, RoleResolution,
    Rollover, Window,
};
use crate::cow::{CowMap, CowVec};
use crate::error::{Error, Result};
use crate::hash::{fingerprint64, request_key, FxHashMap};
use crate::invariants::Before;
use crate::outcome::{Applied, NodeStatus, Outcome, Recorded};
use crate::time::Period;
use crate::window::Counter;

/// Hard ceilings that configuration cannot raise. Each bounds memory or work per command.
pub mod limits {
    /// Largest amount in one command, in minor units (2^53 - 1: exact in JSON and doubles).
    pub const AMOUNT_MAX: u64 = (1 << 53) - 1;
    pub const DEPTH_MAX_CEILING: u8 = 32;
    pub const NODES_MAX: u64 = 16_000_000;
    pub const CHILDREN_PER_NODE_MAX: usize = 1_000_000;
    /// Distinct node kinds (free-text labels) in the whole cluster.
    pub const KINDS_MAX: usize = 4_096;
    pub const TAGS_PER_NODE_MAX: usize = 32;
    pub const LIMITS_PER_NODE_MAX: usize = 32;
    pub const RATE_LIMITS_PER_NODE_MAX: usize = 16;
    pub const GRANTS_PER_NODE_MAX: usize = 64;
    pub const ROLES_PER_ROOT_MAX: usize = 64;
    pub const ROLES_PER_NODE_MAX: usize = 8;
    pub const LIMITS_PER_ROLE_MAX: usize = 16;
    pub const CURRENCIES_PER_ROOT_MAX: usize = 8;
    pub const CURRENCY_SCALE_MAX: u8 = 18;
    pub const PRICES_PER_ROOT_MAX: usize = 4096;
    pub const HOLDS_OPEN_MAX: usize = 10_000_000;
    /// Open holds one root is always let have (while the cluster has room): a quarter. Beyond
    /// it, see [`within_share`].
    pub const HOLDS_PER_ROOT_MAX: u64 = HOLDS_OPEN_MAX as u64 / 4;
    /// Request ids remembered at once (102 bytes each, measured; `dedup.rs`): 32M holds the
    /// 42k writes/s a 3-member cluster sustains for the default retention (10 min + 1 min of
    /// clock skew). Beyond it new requests are refused until old ids age out.
    pub const REMEMBERED_REQUESTS_MAX: usize = 32_000_000;
    /// Request ids one root is always let hold (while the cluster has room): a quarter.
    /// Beyond it, see [`within_share`].
    pub const REMEMBERED_PER_ROOT_MAX: usize = REMEMBERED_REQUESTS_MAX / 4;
    pub const ATTRIBUTE_TAGS_MAX: usize = 16;
    pub const TEXT_BYTES_MAX: usize = 128;
    pub const TAG_VALUE_BYTES_MAX: usize = 256;
    pub const REQUEST_ID_BYTES_MAX: usize = 128;
    /// A request's `sent_at_ms` may lead the replicated clock by at most this much.
    pub const CLOCK_SKEW_MS_MAX: u64 = 60_000;
    /// Due holds and grants handled by one `Tick`; the rest wait for the next one.
    pub const TICK_ITEMS_MAX: usize = 10_000;
    pub const RATE_PERIOD_MS_MAX: u64 = 366 * crate::time::DAY_MS;
    pub const WEBHOOKS_PER_ROOT_MAX: usize = 16;
    pub const WEBHOOKS_MAX: usize = 100_000;
    /// Tokens the cluster keeps, revoked and expired ones included (they stay, for the audit
    /// trail of the events that name them).
    pub const TOKENS_MAX: usize = 1_000_000;
    /// Event kinds one webhook subscribes to at most (there are 15 distinct ones).
    pub const WEBHOOK_KINDS_MAX: usize = 16;
    pub const WEBHOOK_URL_BYTES_MAX: usize = 2048;
    pub const WEBHOOK_SECRET_BYTES_MIN: usize = 16;
    pub const WEBHOOK_SECRET_BYTES_MAX: usize = 256;

    /// Whether a root that has `own` entries of a cluster-wide table (request ids, open holds)
    /// holding `held` of at most `total` may add one. Under its `share` a root may fill the
    /// table. Past it, a root may use free room only while more than a quarter of the table is
    /// free: that last quarter is kept for roots under their shares. So the only tenant of a
    /// cluster may use three quarters of the table, and one tenant's burst still leaves every
    /// other tenant room.
    pub fn within_share(own: u64, share: u64, held: u64, total: u64) -> bool {
        held < total && (own < share || held < total - total / 4)
    }
}

/// Cluster-wide settings, changed by [`Op::SetConfig`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub depth_max: u8,
    pub request_retention_ms: u64,
    pub hold_ttl_ms_min: u64,
    pub hold_ttl_ms_max: u64,
    /// The monthly hard cap a new root gets in each currency unless it opts out, in major units.
    pub default_root_cap_major: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            depth_max: 16,
            request_retention_ms: 10 * crate::time::MINUTE_MS,
            hold_ttl_ms_min: crate::time::SECOND_MS,
            hold_ttl_ms_max: crate::time::DAY_MS,
            default_root_cap_major: 100,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Currency {
    pub code: String,
    pub scale: u8,
    pub funded: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Price {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub reasoning: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Role {
    pub name: String,
    pub limits: Vec<LimitRule>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Root {
    pub currencies: Vec<Currency>,
    pub roles: Vec<Role>,
    pub resolution: RoleResolution,
    /// `(provider, model, currency index)`.
    pub prices: BTreeMap<(String, String, u8), Price>,
}

impl Root {
    pub fn currency(&self, code: &str) -> Result<u8> {
        self.currencies
            .iter()
            .position(|c| c.code == code)
            .map(|i| i as u8)
            .ok_or_else(|| {
                Error::not_found(format!("currency {code:?} is not declared by this root"))
            })
    }
}

/// A set of percentages 1..=100 as a bitmask: 16 bytes instead of a heap allocation per limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Thresholds(u128);

impl Thresholds {
    pub const DEFAULT: Thresholds = Thresholds((1 << 50) | (1 << 75) | (1 << 100));

    pub fn from_percents(percents: &[u8]) -> Self {
        Thresholds(percents.iter().fold(0, |mask, p| mask | (1u128 << p)))
    }

    /// Ascending.
    pub fn iter(self) -> impl Iterator<Item = u8> {
        let mut rest = self.0;
        std::iter::from_fn(move || {
            if rest == 0 {
                return None;
            }
            let percent = rest.trailing_zeros() as u8;
            rest &= rest - 1;
            Some(percent)
        })
    }
}

/// A limit's rule (without its counter).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LimitRule {
    pub currency: u8,
    pub amount: u64,
    pub window: Window,
    pub mode: LimitMode,
    pub thresholds: Thresholds,
    pub on_exhausted: OnExhausted,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Limit {
    pub rule: LimitRule,
    pub counter: Counter,
}

/// Spend counter of a member for a `(currency, window)` used by one of its roles' limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RoleCounter {
    pub currency: u8,
    pub window: Window,
    pub counter: Counter,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum RateUnit {
    Requests,
    Cost(u8),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RateLimit {
    pub key: String,
    pub unit: RateUnit,
    pub amount: u64,
    pub period_ms: u64,
    /// GCRA theoretical arrival time, in milliseconds scaled by `amount`.
    pub tat: u128,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Account {
    /// Open holds at or below this node.
    pub held: u64,
    pub spent_total: u64,
    pub debt: u64,
    /// Debt of this node and its whole subtree: lets a new grant find debts without a full walk.
    pub subtree_debt: u64,
}

/// Rarely used parts of a node, boxed so that a million plain nodes stay small.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NodeExtra {
    pub tags: Vec<(String, String)>,
    pub rates: Vec<RateLimit>,
    pub roles: Vec<String>,
    pub role_counters: Vec<RoleCounter>,
    pub grants: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Node {
    /// 0 for a root.
    pub parent: u64,
    pub root: u64,
    /// 1 for a root.
    pub depth: u8,
    pub status: NodeStatus,
    /// Index into `State::kinds`.
    pub kind: u16,
    pub name: Box<str>,
    pub children: Vec<u64>,
    /// Indexed by the root's currency index.
    pub accounts: Vec<Account>,
    pub limits: Vec<Limit>,
    pub extra: Option<Box<NodeExtra>>,
    pub holds_open: u32,
}

impl Node {
    pub fn extra(&self) -> Option<&NodeExtra> {
        self.extra.as_deref()
    }
    pub fn extra_mut(&mut self) -> &mut NodeExtra {
        self.extra.get_or_insert_with(Default::default)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Grant {
    pub id: u64,
    pub node: u64,
    pub currency: u8,
    /// The original amount, or the allotment of a recurring grant.
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
    /// Past `expires_at_ms`: only its held part remains, and goes when the holds resolve.
    pub expired: bool,
    /// Not yet effective; a tick activates it (and lets it pay debts) at `effective_at_ms`.
    pub pending: bool,
}

impl Grant {
    pub fn available(&self) -> u64 {
        covered_sub(
            self.remaining,
            self.held,
            "I2: a grant's remaining covers its held part",
        )
    }
    /// Next time a tick must look at this grant.
    pub fn due_ms(&self) -> Option<u64> {
        if self.expired {
            return None;
        }
        if self.pending {
            return Some(self.effective_at_ms);
        }
        match (self.next_renewal_ms, self.expires_at_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hold {
    pub id: u64,
    pub node: u64,
    pub currency: u8,
    pub amount: u64,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    /// `(grant id, amount)` in waterfall order.
    pub plan: Vec<(u64, u64)>,
    pub attrs: Attributes,
}

/// What is left of a hold that expired, so that a late settle is charged, never lost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Expired {
    pub node: u64,
    pub currency: u8,
    pub amount: u64,
    pub forget_at_ms: u64,
    pub attrs: Attributes,
}

pub(crate) use crate::dedup::{Dedup, DedupEntry};

/// `(root, role name)` → the nodes holding that role.
pub(crate) type RoleHolders = FxHashMap<(u64, String), BTreeSet<u64>>;

/// The whole replicated state. Two replicas that applied the same commands are equal, and
/// their [`State::digest`]s are equal.
#[derive(Clone, Debug, Default)]
pub struct State {
    pub(crate) now_ms: u64,
    pub(crate) config: Config,
    /// Node `id` lives at `nodes[id - 1]`; ids are never reused.
    pub(crate) nodes: CowVec<Node>,
    pub(crate) kinds: Vec<String>,
    pub(crate) roots: CowMap<u64, Root>,
    /// `(parent id or 0, fingerprint of the name)` → child id.
    pub(crate) names: FxHashMap<(u64, u64), u64>,
    pub(crate) grants: CowMap<u64, Grant>,
    pub(crate) holds: CowMap<u64, Hold>,
    pub(crate) expired: CowMap<u64, Expired>,
    /// Expired-hold ids in expiry order (so `forget_at_ms` order); may name ids already settled.
    pub(crate) expired_order: VecDeque<u64>,
    pub(crate) dedup: Dedup,
    pub(crate) next_grant_id: u64,
    pub(crate) next_reservation_id: u64,
    /// Requests first sent before this are too old whatever the retention: raising the
    /// retention must not make fresh again a request whose id may already be forgotten.
    pub(crate) sent_floor_ms: u64,
    pub(crate) webhooks: BTreeMap<u64, crate::webhook::Webhook>,
    pub(crate) next_webhook_id: u64,
    pub(crate) tokens: BTreeMap<u64, crate::access::Token>,
    pub(crate) next_token_id: u64,
    /// Events emitted by every command applied so far (the storage numbers them from 1).
    pub(crate) events_emitted: u64,
    /// Derived indexes, rebuilt on restore.
    pub(crate) hold_due: BTreeSet<(u64, u64)>,
    /// Nodes at each depth (index 0 unused): the deepest level without a walk of the tree.
    pub(crate) nodes_at_depth: Vec<u64>,
    /// `(root, role name)` → the nodes holding that role: a role's change touches its holders
    /// only, never a walk of every node.
    pub(crate) role_holders: RoleHolders,
    /// `(node, reservation id)` of every open hold: a node's holds without a walk of them all.
    pub(crate) holds_by_node: BTreeSet<(u64, u64)>,
    /// Open holds per root, for each root's share of them.
    pub(crate) holds_per_root: FxHashMap<u64, u64>,
    /// Tests only: smaller caps of open holds than [`limits`], `(cluster, per root)`.
    pub(crate) holds_caps: Option<(u64, u64)>,
    pub(crate) grant_due: BTreeSet<(u64, u64)>,
    pub(crate) kind_index: FxHashMap<String, u16>,
    /// Token secret hash → token id.
    pub(crate) token_index: BTreeMap<crate::access::SecretHash, u64>,
    /// Reused encoding buffer (not state): saves an allocation per command.
    pub(crate) scratch: Vec<u8>,
}

/// What apply needs to know about the request while it runs.
pub(crate) struct Ctx {
    pub now_ms: u64,
    pub events: Vec<crate::event::Event>,
    /// What the command changed, for the postconditions apply checks after it.
    pub touched: Touched,
}

impl Ctx {
    pub(crate) fn new(now_ms: u64) -> Self {
        Ctx {
            now_ms,
            events: Vec::new(),
            touched: Touched::Nothing,
        }
    }
}

/// The part of the state a command changed that apply's postconditions look at: they check
/// that part only, so that their cost follows the command's, not the state's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Touched {
    Nothing,
    /// Held, spend or debt changed on the path of `node`, in `currency`.
    Account {
        node: u64,
        currency: u8,
    },
    /// A node joined the tree or moved in it: its path's shape changed.
    Node(u64),
}

/// How a client command's request id was admitted.
enum Admission {
    /// A system command: no request id, nothing remembered.
    System,
    /// A new request id: its outcome is remembered under `key` with the payload's fingerprint,
    /// against the share of `root`.
    Fresh { key: u128, payload: u64, root: u64 },
    /// A retry of a remembered request with the same payload: the first outcome answers.
    Duplicate(Recorded),
}

impl State {
    pub fn new() -> Self {
        State {
            next_grant_id: 1,
            next_reservation_id: 1,
            next_webhook_id: 1,
            next_token_id: 1,
            ..Default::default()
        }
    }

    pub fn with_config(config: Config) -> Self {
        State {
            config,
            ..State::new()
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Applies one command at the leader's timestamp `at_ms` (made monotonic here).
    /// An `Err` means the command was invalid or cannot apply, and the state is unchanged.
    pub fn apply(&mut self, at_ms: u64, command: Command) -> Result<Applied> {
        let now_ms = self.now_ms.max(at_ms);
        let before = Before::of(self, now_ms);
        let Command { request, actor, op } = command;
        // A dead token is refused before anything is looked at. A retry of a request this
        // token made is answered with its first outcome before it is authorized again (it
        // may no longer be allowed, its reservation being settled): request ids are kept per
        // token, so a token only ever finds its own.
        if let Some(actor) = actor {
            self.live_token(actor, now_ms)?;
        }
        let request_key = match self.admit(now_ms, request.as_ref(), actor, &op)? {
            Admission::System => None,
            Admission::Fresh { key, payload, root } => {
                if let Some(actor) = actor {
                    self.authorize_op(actor, now_ms, &op)?;
                }
                Some((key, payload, root))
            }
            Admission::Duplicate(recorded) => {
                self.advance(now_ms);
                before.assert_only_clock_moved(self);
                return Ok(Applied {
                    outcome: Outcome::Duplicate(recorded),
                    events: Vec::new(),
                });
            }
        };
        let mut ctx = Ctx::new(now_ms);
        let outcome = self
            .dispatch(&mut ctx, actor, op)
            .inspect_err(|_| before.assert_unchanged_by_error(self, &ctx))?;
        self.advance(now_ms);
        self.events_emitted += ctx.events.len() as u64;
        if let (Some((key, payload, root)), Some(recorded)) = (request_key, recorded(&outcome)) {
            self.record(key, payload, root, recorded);
        }
        self.assert_applied(&before, &ctx, &outcome, request_key.map(|(key, ..)| key));
        Ok(Applied {
            outcome,
            events: ctx.events,
        })
    }

    /// Checks a client command's request id (a system command has none): too old, too far
    /// ahead, reused with another payload, or one more than the cluster remembers is refused.
    fn admit(
        &mut self,
        now_ms: u64,
        request: Option<&RequestMeta>,
        actor: Option<u64>,
        op: &Op,
    ) -> Result<Admission> {
        let system = matches!(op, Op::Tick | Op::WebhookDelivered { .. });
        let meta = match request {
            None if system => return Ok(Admission::System),
            None => return Err(Error::invalid("a client command needs a request id")),
            Some(_) if system => {
                return Err(Error::invalid(
                    "tick and webhook-delivered are system commands and take no request id",
                ))
            }
            Some(meta) => meta,
        };
        let key = self.check_request(now_ms, actor, &meta.id, meta.sent_at_ms)?;
        let payload = payload_fingerprint(&mut self.scratch, op);
        if let Some(entry) = self.dedup.get(key, now_ms) {
            if entry.payload != payload {
                return Err(Error::exists(format!(
                    "request id {:?} was already used with a different payload",
                    meta.id
                )));
            }
            return Ok(Admission::Duplicate(entry.recorded.clone()));
        }
        let root = self.request_root(op, now_ms);
        // Dead entries are invisible (lookups and snapshots skip them), so removing some here
        // changes no observable state even if the command then fails.
        self.dedup
            .make_room(now_ms, root)
            .map_err(Error::exhausted)?;
        Ok(Admission::Fresh { key, payload, root })
    }

    /// The root whose share of the request-id table a request counts against: the root of
    /// the node, root or reservation its operation names (0 for one that names none, or a
    /// name that does not resolve: that request fails and is not remembered). One hash
    /// lookup at most: a path's root is its first segment.
    fn request_root(&self, op: &Op, now_ms: u64) -> u64 {
        let named = match op {
            Op::Reserve(reserve) => Some(&reserve.node),
            Op::Charge(charge) => Some(&charge.node),
            Op::CreateNode(create) => create.parent.as_ref(),
            Op::MoveNode { node, .. }
            | Op::CloseNode { node }
            | Op::PauseNode { node }
            | Op::ResumeNode { node }
            | Op::SetLimit { node, .. }
            | Op::RemoveLimit { node, .. }
            | Op::SetRateLimit { node, .. }
            | Op::RemoveRateLimit { node, .. }
            | Op::AddGrant { node, .. }
            | Op::AssignRoles { node, .. } => Some(node),
            Op::DefineRole { root, .. }
            | Op::RemoveRole { root, .. }
            | Op::SetRoleResolution { root, .. }
            | Op::SetPrice { root, .. }
            | Op::RemovePrice { root, .. }
            | Op::AddWebhook { root, .. } => Some(root),
            Op::Settle { reservation_id, .. } | Op::Release { reservation_id } => {
                let node = self.reservation_node(*reservation_id, now_ms);
                return node.map_or(0, |id| self.node(id).root);
            }
            _ => None,
        };
        let id = match named {
            Some(crate::command::NodeRef::Id(id)) if (1..=self.nodes.len() as u64).contains(id) => {
                Some(*id)
            }
            Some(crate::command::NodeRef::Path(path)) => {
                self.child(0, path.split('/').next().unwrap_or(path))
            }
            _ => None,
        };
        id.map_or(0, |id| self.node(id).root)
    }

    /// A request id whose outcome is still remembered: applying it answers a duplicate.
    pub(crate) fn is_remembered(&self, key: u128, now_ms: u64) -> bool {
        self.dedup.get(key, now_ms).is_some()
    }

    /// Whether `id` took effect and is still remembered: a retry of it is a duplicate.
    pub fn remembers_request(&self, actor: Option<u64>, id: &str) -> bool {
        self.is_remembered(request_key(actor, id), self.now_ms)
    }

    /// The request-id table is at its cap: a new request must first make room, or is
    /// refused.
    pub(crate) fn remembered_full(&self) -> bool {
        self.dedup.held() >= self.dedup.caps().0
    }

    /// Tests only, never in a cluster (every replica must apply with the same caps): holds
    /// at most `total` request ids, and `per_root` for one root, so that a test can fill the
    /// table.
    #[doc(hidden)]
    pub fn cap_remembered_requests_for_tests(&mut self, total: usize, per_root: usize) {
        self.dedup.set_caps(total, per_root);
    }

    /// Tests only, like [`State::cap_remembered_requests_for_tests`]: at most `total` open
    /// holds, and `per_root` for one root.
    #[doc(hidden)]
    pub fn cap_holds_for_tests(&mut self, total: u64, per_root: u64) {
        self.holds_caps = Some((total, per_root));
    }

    pub(crate) fn check_request(
        &self,
        now_ms: u64,
        actor: Option<u64>,
        id: &str,
        sent_at_ms: u64,
    ) -> Result<u128> {
        if id.is_empty() || id.len() > limits::REQUEST_ID_BYTES_MAX {
            return Err(Error::invalid(format!(
                "request id must be 1..={} bytes",
                limits::REQUEST_ID_BYTES_MAX
            )));
        }
        if sent_at_ms.saturating_add(self.config.request_retention_ms) < now_ms
            || sent_at_ms < self.sent_floor_ms
        {
            return Err(Error::precondition(format!(
                "request {id:?} was first sent at {sent_at_ms} ms, longer ago than the {} ms request retention: send it as a new request",
                self.config.request_retention_ms
            )));
        }
        if sent_at_ms > now_ms.saturating_add(limits::CLOCK_SKEW_MS_MAX) {
            return Err(Error::invalid(format!(
                "request {id:?} claims to be sent at {sent_at_ms} ms, more than {} ms after the cluster time {now_ms} ms",
                limits::CLOCK_SKEW_MS_MAX
            )));
        }
        Ok(request_key(actor, id))
    }

    fn dispatch(&mut self, ctx: &mut Ctx, actor: Option<u64>, op: Op) -> Result<Outcome> {
        match op {
            Op::CreateNode(create) => self.create_node(ctx, create),
            Op::MoveNode { node, new_parent } => self.move_node(ctx, &node, &new_parent),
            Op::CloseNode { node } => self.set_status(ctx, &node, NodeStatus::Closed),
            Op::PauseNode { node } => self.set_status(ctx, &node, NodeStatus::Paused),
            Op::ResumeNode { node } => self.set_status(ctx, &node, NodeStatus::Active),
            Op::SetLimit { node, limit } => self.set_limit(&node, limit),
            Op::RemoveLimit {
                node,
                currency,
                window,
            } => self.remove_limit(&node, &currency, window),
            Op::SetRateLimit { node, rate } => self.set_rate_limit(&node, rate),
            Op::RemoveRateLimit { node, key, kind } => self.remove_rate_limit(&node, &key, &kind),
            Op::AddGrant { node, grant } => self.add_grant(ctx, &node, grant),
            Op::DefineRole { root, name, limits } => self.define_role(&root, name, limits),
            Op::RemoveRole { root, name } => self.remove_role(&root, &name),
            Op::AssignRoles { node, roles } => self.assign_roles(&node, roles),
            Op::SetRoleResolution { root, resolution } => {
                self.set_role_resolution(&root, resolution)
            }
            Op::SetPrice { root, price } => self.set_price(&root, price),
            Op::RemovePrice {
                root,
                provider,
                model,
                currency,
            } => self.remove_price(&root, &provider, &model, &currency),
            Op::Reserve(reserve) => self.reserve(ctx, reserve),
            Op::Settle {
                reservation_id,
                actual,
            } => self.settle(ctx, reservation_id, actual),
            Op::Release { reservation_id } => self.release(ctx, reservation_id),
            Op::Charge(charge) => self.charge(ctx, charge),
            Op::SetConfig(patch) => self.set_config(ctx.now_ms, patch),
            Op::Tick => Ok(self.tick(ctx)),
            Op::AddWebhook {
                root,
                url,
                secret,
                kinds,
            } => self.add_webhook(&root, url, secret, kinds),
            Op::RemoveWebhook { id } => self.remove_webhook(id),
            Op::WebhookDelivered { id, through_index } => self.webhook_delivered(id, through_index),
            Op::CreateToken {
                scope,
                access,
                name,
                expires_in_ms,
                secret_hash,
            } => self.create_token(
                ctx,
                actor,
                crate::access::NewToken {
                    scope,
                    access,
                    name,
                    expires_in_ms,
                    secret_hash,
                },
            ),
            Op::RevokeToken { id } => self.revoke_token(ctx, id),
        }
    }

    /// Moves the replicated clock and forgets what has passed its retention.
    fn advance(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        self.dedup.expire(now_ms, crate::dedup::EXPIRE_PER_APPLY);
        while let Some(id) = self.expired_order.front() {
            match self.expired.get(id) {
                Some(entry) if entry.forget_at_ms >= now_ms => break,
                _ => {
                    let id = *id;
                    self.expired_order.pop_front();
                    self.expired.remove(&id);
                }
            }
        }
    }

    fn record(&mut self, key: u128, payload: u64, root: u64, recorded: Recorded) {
        let forget_at_ms =
            self.now_ms + self.config.request_retention_ms + limits::CLOCK_SKEW_MS_MAX;
        self.dedup.insert(
            key,
            DedupEntry {
                payload,
                forget_at_ms,
                root,
                recorded,
            },
        );
    }

    fn set_config(&mut self, now_ms: u64, patch: crate::command::ConfigPatch) -> Result<Outcome> {
        let mut config = self.config.clone();
        if let Some(depth) = patch.depth_max {
            if depth == 0 || depth > limits::DEPTH_MAX_CEILING {
                return Err(Error::invalid(format!(
                    "depth_max must be 1..={}",
                    limits::DEPTH_MAX_CEILING
                )));
            }
            let deepest = self.deepest();
            if depth < deepest {
                return Err(Error::precondition(format!(
                    "the tree is already {deepest} levels deep"
                )));
            }
            config.depth_max = depth;
        }
        if let Some(ms) = patch.request_retention_ms {
            if !(crate::time::MINUTE_MS..=crate::time::DAY_MS).contains(&ms) {
                return Err(Error::invalid(
                    "request_retention_ms must be between 1 minute and 1 day",
                ));
            }
            config.request_retention_ms = ms;
        }
        config.hold_ttl_ms_min = patch.hold_ttl_ms_min.unwrap_or(config.hold_ttl_ms_min);
        config.hold_ttl_ms_max = patch.hold_ttl_ms_max.unwrap_or(config.hold_ttl_ms_max);
        if config.hold_ttl_ms_min == 0
            || config.hold_ttl_ms_min > config.hold_ttl_ms_max
            || config.hold_ttl_ms_max > 30 * crate::time::DAY_MS
        {
            return Err(Error::invalid(
                "hold TTL bounds must satisfy 0 < min <= max <= 30 days",
            ));
        }
        if let Some(cap) = patch.default_root_cap_major {
            if cap == 0 || cap > 1_000_000_000 {
                return Err(Error::invalid("default_root_cap_major must be 1..=1e9"));
            }
            config.default_root_cap_major = cap;
        }
        let (was, will) = (
            self.config.request_retention_ms,
            config.request_retention_ms,
        );
        if will > was {
            // Remembered ids live as long as the new retention asks; ids already forgotten
            // belong to requests that stay too old.
            self.dedup.extend(now_ms, will - was);
            self.sent_floor_ms = self.sent_floor_ms.max(now_ms.saturating_sub(was));
        } else if will < was {
            // A retry is accepted only within the retention of its first sending, so an id
            // need live no longer than if it had been recorded under the new one.
            self.dedup.shorten(was - will);
        }
        self.config = config;
        Ok(Outcome::Done)
    }

    // ---- lookups shared by every operation ------------------------------------------------

    pub(crate) fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    pub(crate) fn node_mut(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    /// A grant that a hold's plan, the due queue or a candidate list names. Each of them loses
    /// the id when the grant is dropped, so a miss is broken bookkeeping, never bad input.
    pub(crate) fn grant_mut(&mut self, g: u64) -> &mut Grant {
        let Some(grant) = self.grants.get_mut(&g) else {
            panic!("invariant `indexed grants exist` broken: grant {g} is named but gone");
        };
        grant
    }

    /// The settings of a root node: created with the node, never removed.
    pub(crate) fn root_mut(&mut self, root_id: u64) -> &mut Root {
        let Some(root) = self.roots.get_mut(&root_id) else {
            panic!("invariant `every root node has its root` broken: node {root_id}");
        };
        root
    }

    pub(crate) fn child(&self, parent: u64, name: &str) -> Option<u64> {
        let id = *self.names.get(&(parent, fingerprint64(name.as_bytes())))?;
        (&*self.node(id).name == name).then_some(id)
    }

    /// The id of a node named by id or path.
    pub fn resolve(&self, node: &crate::command::NodeRef) -> Result<u64> {
        match node {
            crate::command::NodeRef::Id(id) => {
                if *id == 0 || *id > self.nodes.len() as u64 {
                    return Err(Error::not_found(format!("node {id} does not exist")));
                }
                Ok(*id)
            }
            crate::command::NodeRef::Path(path) => self.resolve_path(path),
        }
    }

    /// Resolves `root/child/.../leaf`.
    pub fn resolve_path(&self, path: &str) -> Result<u64> {
        let mut parent = 0;
        let mut depth = 0u8;
        for segment in path.split('/') {
            depth = depth.saturating_add(1);
            if depth > limits::DEPTH_MAX_CEILING {
                return Err(Error::invalid(format!(
                    "path {path:?} is deeper than any tree"
                )));
            }
            parent = self
                .child(parent, segment)
                .ok_or_else(|| Error::not_found(format!("node {path:?} does not exist")))?;
        }
        Ok(parent)
    }

    pub(crate) fn root_of(&self, id: u64) -> &Root {
        &self.roots[&self.node(id).root]
    }

    /// Ids from `id` up to its root, leaf first. Bounded by the depth ceiling.
    pub(crate) fn path_ids(&self, id: u64) -> PathIds {
        let mut path = PathIds {
            ids: [0; limits::DEPTH_MAX_CEILING as usize],
            len: 0,
        };
        let mut at = id;
        while at != 0 {
            assert!(path.len < path.ids.len(), "tree deeper than the ceiling");
            path.ids[path.len] = at;
            path.len += 1;
            at = self.node(at).parent;
        }
        path
    }

    pub(crate) fn currency_code(&self, root: u64, currency: u8) -> &str {
        &self.roots[&root].currencies[currency as usize].code
    }
}

/// `from - amount` for a balance the bookkeeping promises covers `amount` (held covers the
/// holds below, a grant's remaining covers what it pays, debt covers what is paid back). A
/// shortfall is a broken invariant, named by `what`: it panics rather than wrap around.
#[track_caller]
pub(crate) fn covered_sub(from: u64, amount: u64, what: &str) -> u64 {
    let Some(rest) = from.checked_sub(amount) else {
        panic!("invariant `{what}` broken: {from} does not cover {amount}");
    };
    rest
}

/// A node's path as ids, leaf first, without allocating.
pub(crate) struct PathIds {
    ids: [u64; limits::DEPTH_MAX_CEILING as usize],
    len: usize,
}

impl PathIds {
    pub fn as_slice(&self) -> &[u64] {
        &self.ids[..self.len]
    }
}

/// The fingerprint of what a request asks (request ids are kept per token: `request_key`).
fn payload_fingerprint(scratch: &mut Vec<u8>, op: &Op) -> u64 {
    scratch.clear();
    if let Err(e) = bincode::serde::encode_into_std_write(op, scratch, bincode::config::standard())
    {
        unreachable!("invariant `commands encode`: plain data into memory cannot fail: {e}");
    }
    fingerprint64(scratch)
}

/// What a request id remembers of an outcome; denials are not remembered, because they
/// changed nothing: a retry is evaluated afresh.
fn recorded(outcome: &Outcome) -> Option<Recorded> {
    Some(match outcome {
        Outcome::NodeCreated { node_id } => Recorded::NodeCreated { node_id: *node_id },
        Outcome::GrantAdded { grant_id } => Recorded::GrantAdded {
            grant_id: *grant_id,
        },
        Outcome::WebhookAdded { webhook_id } => Recorded::WebhookAdded {
            webhook_id: *webhook_id,
        },
        Outcome::Done => Recorded::Done,
        Outcome::Reserved(r) => Recorded::Reserved {
            reservation_id: r.reservation_id,
            amount: r.amount,
            expires_at_ms: r.expires_at_ms,
        },
        Outcome::Settled(s) => Recorded::Settled {
            reservation_id: s.reservation_id.unwrap_or(0),
            charged: s.charged,
        },
        Outcome::Released {
            reservation_id,
            amount,
        } => Recorded::Released {
            reservation_id: *reservation_id,
            amount: *amount,
        },
        Outcome::Charged(s) => Recorded::Charged { charged: s.charged },
        Outcome::TokenCreated {
            token_id,
            expires_at_ms,
        } => Recorded::TokenCreated {
            token_id: *token_id,
            expires_at_ms: *expires_at_ms,
        },
        Outcome::Denied(_) | Outcome::Ticked { .. } | Outcome::Duplicate(_) => return None,
    })
}
