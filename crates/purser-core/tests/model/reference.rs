//! A second, deliberately simple and slow implementation of `docs/semantics.md`.
//!
//! It uses purser-core's *types* for inputs and answers, but computes everything itself:
//! every settle is kept as a record and window spend is a brute-force sum over records; held
//! is the sum of the open holds whose node currently sits at or below the node; errors are
//! handled by working on a clone that is thrown away.

use std::collections::BTreeMap;

use purser_core::{
    AccountView, Actual, Amount, Applied, Attributes, BalanceEvent, Charge, Command, ConfigPatch,
    CreateNode, Denial, DenyRule, ErrorKind, Event, FundingPart, GovernanceEvent, GrantBalance,
    GrantKind, GrantSpec, GrantView, Headroom, HoldView, LimitMode, LimitSpec, LimitView,
    MonetizationEvent, NodeRef, NodeStatus, NodeView, OnExhausted, Op, Outcome, Period, PriceSpec,
    RateKind, RateLimitSpec, RateLimitView, Recorded, Reservation, Reserve, RoleResolution,
    Rollover, Settlement, TokenUsage, UsageEvent, Window, WindowBalance,
};

use super::cal::{self, DAY, MINUTE, SECOND};

pub const AMOUNT_MAX: u64 = (1 << 53) - 1;
pub const SKEW_MS: u64 = 60_000;
const DEFAULT_THRESHOLDS: [u8; 3] = [50, 75, 100];

#[derive(Clone, Debug)]
pub struct MErr {
    pub kind: ErrorKind,
    pub msg: String,
}

fn err<T>(kind: ErrorKind, msg: impl Into<String>) -> Result<T, MErr> {
    Err(MErr {
        kind,
        msg: msg.into(),
    })
}
fn invalid<T>(msg: impl Into<String>) -> Result<T, MErr> {
    err(ErrorKind::InvalidArgument, msg)
}
fn not_found<T>(msg: impl Into<String>) -> Result<T, MErr> {
    err(ErrorKind::NotFound, msg)
}
fn precondition<T>(msg: impl Into<String>) -> Result<T, MErr> {
    err(ErrorKind::FailedPrecondition, msg)
}
fn exhausted<T>(msg: impl Into<String>) -> Result<T, MErr> {
    err(ErrorKind::ResourceExhausted, msg)
}
fn overflow() -> MErr {
    MErr {
        kind: ErrorKind::InvalidArgument,
        msg: "overflow".into(),
    }
}

type R<T> = Result<T, MErr>;

#[derive(Clone, Debug)]
pub struct Cfg {
    pub depth_max: u8,
    pub retention: u64,
    pub ttl_min: u64,
    pub ttl_max: u64,
    pub cap_major: u64,
}

/// A limit (own or in a role definition).
#[derive(Clone, Debug)]
pub struct MLimit {
    pub currency: String,
    pub window: Window,
    pub amount: u64,
    pub mode: LimitMode,
    pub thresholds: Vec<u8>,
    pub on_exhausted: OnExhausted,
    /// Command sequence number at which the counter started (own limits only).
    pub since: u64,
    /// I1 may be violated: an overrun, a late settle or an admin change made it so.
    pub exempt: bool,
}

/// A member's counter shared by its roles' limits on one `(currency, window)`.
#[derive(Clone, Debug)]
pub struct MCounter {
    pub currency: String,
    pub window: Window,
    pub since: u64,
    pub exempt: bool,
}

#[derive(Clone, Debug)]
pub struct MRate {
    pub key: String,
    pub kind: RateKind,
    pub amount: u64,
    pub period: u64,
    /// Theoretical arrival time scaled by `amount`.
    pub tat: u128,
}

#[derive(Clone, Debug)]
pub struct MRole {
    pub name: String,
    pub limits: Vec<MLimit>,
}

#[derive(Clone, Debug)]
pub struct MNode {
    pub id: u64,
    pub name: String,
    pub parent: Option<u64>,
    pub kind: String,
    pub tags: Vec<(String, String)>,
    pub status: NodeStatus,
    pub roles: Vec<String>,
    pub limits: Vec<MLimit>,
    pub role_counters: Vec<MCounter>,
    pub rates: Vec<MRate>,
    pub debt: BTreeMap<String, u64>,
    // Root only.
    pub currencies: Vec<purser_core::CurrencySpec>,
    pub role_defs: Vec<MRole>,
    pub resolution: RoleResolution,
    pub prices: Vec<PriceSpec>,
}

#[derive(Clone, Debug)]
pub struct MGrant {
    pub id: u64,
    pub node: u64,
    pub currency: String,
    pub amount: u64,
    pub remaining: u64,
    pub held: u64,
    pub priority: u32,
    pub kind: GrantKind,
    pub effective_at: u64,
    pub expires_at: Option<u64>,
    pub recur: Option<Period>,
    pub rollover: Rollover,
    pub next_renewal: Option<u64>,
    pub activated: bool,
    pub expired: bool,
    pub dropped: bool,
}

impl MGrant {
    fn available(&self) -> u64 {
        self.remaining - self.held
    }
}

#[derive(Clone, Debug)]
pub struct MHold {
    pub id: u64,
    pub node: u64,
    pub currency: String,
    pub amount: u64,
    pub created: u64,
    pub expires_at: u64,
    pub plan: Vec<FundingPart>,
    pub attrs: Attributes,
}

#[derive(Clone, Debug)]
pub struct SettleRec {
    pub seq: u64,
    pub t: u64,
    /// The settling node and its ancestors at settle time, leaf first.
    pub path: Vec<u64>,
    pub currency: String,
    pub amount: u64,
}

#[derive(Clone, Debug)]
pub struct Remembered {
    pub id: String,
    pub op: Op,
    pub recorded: Recorded,
    pub applied_at: u64,
    pub retention: u64,
}

/// Per `(root, currency)` bookkeeping for the conservation law (I3).
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    /// Amounts put into grants (initial amounts and renewal allotments).
    pub credited: u64,
    /// Amounts taken out of grants without paying anything (expiry, renewal, forfeits).
    pub forfeited: u64,
    /// Grant money paid for settles.
    pub paid_settle: u64,
    /// Grant money paid to debts.
    pub paid_debt: u64,
    /// Debt created by settles.
    pub debt_created: u64,
}

#[derive(Clone, Debug)]
pub struct Model {
    /// Requests first sent before this are too old whatever the retention (rulebook: raising
    /// the retention).
    pub sent_floor: u64,
    pub now: u64,
    pub seq: u64,
    pub cfg: Cfg,
    pub nodes: Vec<MNode>,
    pub grants: Vec<MGrant>,
    pub next_res: u64,
    pub holds: Vec<MHold>,
    /// Holds expired by a tick, remembered for late settles: (hold, forgotten after).
    pub expired_holds: Vec<(MHold, u64)>,
    pub settles: Vec<SettleRec>,
    pub requests: Vec<Remembered>,
    pub ledger: BTreeMap<(u64, String), Ledger>,
}

/// Counter identity: the node and either an own limit index or a role counter.
#[derive(Clone, Debug)]
struct CounterRef {
    node: u64,
    role_counter: bool,
    currency: String,
    window: Window,
    since: u64,
}

/// A limit as seen from a node: own or through a role, with its counter.
#[derive(Clone, Debug)]
struct Eff {
    role: Option<String>,
    limit: MLimit,
    counter: CounterRef,
}

/// Free text never contains control characters.
fn check_free(s: &str, what: &str) -> R<()> {
    if s.chars().any(char::is_control) {
        return invalid(format!("{what}: control character"));
    }
    Ok(())
}

fn check_text(s: &str, what: &str) -> R<()> {
    if s.is_empty() || s.len() > 128 {
        return invalid(format!("{what}: 1..=128 bytes"));
    }
    check_free(s, what)
}

fn check_amount(a: i64, positive: bool, what: &str) -> R<u64> {
    if a < 0 || a as u64 > AMOUNT_MAX {
        return invalid(format!("{what} out of range"));
    }
    if positive && a == 0 {
        return invalid(format!("{what} must be positive"));
    }
    Ok(a as u64)
}

fn valid_node_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(c))
}

fn valid_currency_code(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 16
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

fn check_tags(tags: &[(String, String)], max: usize) -> R<()> {
    if tags.len() > max {
        return invalid("too many tags");
    }
    for (i, (k, v)) in tags.iter().enumerate() {
        if k.is_empty() || k.len() > 128 || v.len() > 256 {
            return invalid("bad tag");
        }
        check_free(k, "tag key")?;
        check_free(v, "tag value")?;
        if tags[..i].iter().any(|(k2, _)| k2 == k) {
            return invalid("duplicate tag");
        }
    }
    Ok(())
}

fn check_attrs(a: &Attributes) -> R<()> {
    for s in [&a.user, &a.model, &a.provider, &a.credential_type]
        .into_iter()
        .flatten()
    {
        check_text(s, "attribute")?;
    }
    if a.tags.len() > 16 {
        return invalid("too many attribute tags");
    }
    for (i, (k, v)) in a.tags.iter().enumerate() {
        if k.is_empty() || k.len() > 128 || v.len() > 256 {
            return invalid("bad attribute tag");
        }
        check_free(k, "attribute tag key")?;
        check_free(v, "attribute tag value")?;
        if a.tags[..i].iter().any(|(k2, _)| k2 == k) {
            return invalid("duplicate attribute tag");
        }
    }
    Ok(())
}

fn check_window(w: &Window) -> R<()> {
    match *w {
        Window::Lifetime => Ok(()),
        Window::Calendar(Period::Year) => invalid("calendar year window"),
        Window::Calendar(_) => Ok(()),
        Window::Sliding { duration_ms: d } => {
            if d % 60 != 0 || !(MINUTE..=400 * DAY).contains(&d) {
                invalid("sliding duration")
            } else {
                Ok(())
            }
        }
        Window::FirstUse { duration_ms: d } => {
            if !(SECOND..=400 * DAY).contains(&d) {
                invalid("first-use duration")
            } else {
                Ok(())
            }
        }
    }
}

fn limit_from_spec(spec: &LimitSpec, since: u64) -> R<MLimit> {
    let amount = check_amount(spec.amount, false, "limit amount")?;
    check_window(&spec.window)?;
    let thresholds = if spec.thresholds.is_empty() {
        DEFAULT_THRESHOLDS.to_vec()
    } else {
        for (i, p) in spec.thresholds.iter().enumerate() {
            if *p == 0 || *p > 100 || spec.thresholds[..i].contains(p) {
                return invalid("thresholds");
            }
        }
        let mut t = spec.thresholds.clone();
        t.sort_unstable();
        t
    };
    Ok(MLimit {
        currency: spec.currency.clone(),
        window: spec.window,
        amount,
        mode: spec.mode,
        thresholds,
        on_exhausted: spec.on_exhausted,
        since,
        exempt: true,
    })
}

/// Adds a payment, merging it into an earlier one from the same grant.
fn push_merged(parts: &mut Vec<FundingPart>, p: FundingPart) {
    match parts.iter_mut().find(|x| x.grant_id == p.grant_id) {
        Some(x) => x.amount += p.amount,
        None => parts.push(p),
    }
}

fn cmp_expiry(a: Option<u64>, b: Option<u64>) -> std::cmp::Ordering {
    match (a, b) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    }
}

/// What one check allows: `None` is unlimited.
struct Check {
    node: u64,
    rule: DenyRule,
    window: Option<Window>,
    capacity: u64,
    retry: Option<u64>,
}

pub struct MApplied {
    pub applied: Applied,
    /// Nodes whose views may have changed (for the harness).
    pub touched: Vec<u64>,
}

impl Model {
    pub fn new() -> Self {
        Model {
            sent_floor: 0,
            now: 0,
            seq: 0,
            cfg: Cfg {
                depth_max: 16,
                retention: 10 * MINUTE,
                ttl_min: SECOND,
                ttl_max: DAY,
                cap_major: 100,
            },
            nodes: Vec::new(),
            grants: Vec::new(),
            next_res: 1,
            holds: Vec::new(),
            expired_holds: Vec::new(),
            settles: Vec::new(),
            requests: Vec::new(),
            ledger: BTreeMap::new(),
        }
    }

    // ---- tree helpers ---------------------------------------------------------------------

    pub fn node(&self, id: u64) -> &MNode {
        &self.nodes[(id - 1) as usize]
    }
    fn node_mut(&mut self, id: u64) -> &mut MNode {
        &mut self.nodes[(id - 1) as usize]
    }
    pub fn exists(&self, id: u64) -> bool {
        id >= 1 && id <= self.nodes.len() as u64
    }
    /// Leaf first.
    pub fn path_ids(&self, id: u64) -> Vec<u64> {
        let mut out = vec![id];
        let mut cur = id;
        while let Some(p) = self.node(cur).parent {
            out.push(p);
            cur = p;
        }
        out
    }
    pub fn root_of(&self, id: u64) -> u64 {
        *self.path_ids(id).last().expect("non-empty")
    }
    pub fn depth(&self, id: u64) -> u32 {
        self.path_ids(id).len() as u32
    }
    pub fn path_string(&self, id: u64) -> String {
        let mut names: Vec<&str> = self
            .path_ids(id)
            .iter()
            .map(|n| self.node(*n).name.as_str())
            .collect();
        names.reverse();
        names.join("/")
    }
    pub fn is_at_or_below(&self, node: u64, anc: u64) -> bool {
        self.path_ids(node).contains(&anc)
    }
    pub fn children(&self, id: u64) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.parent == Some(id))
            .map(|n| n.id)
            .collect()
    }
    /// Subtree of `id` (including it), ascending ids.
    pub fn subtree(&self, id: u64) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| self.is_at_or_below(n.id, id))
            .map(|n| n.id)
            .collect()
    }
    fn max_depth_below(&self, id: u64) -> u32 {
        // Depth of the deepest node of the subtree, relative to `id` (id itself = 0).
        let base = self.depth(id);
        self.subtree(id)
            .iter()
            .map(|n| self.depth(*n) - base)
            .max()
            .unwrap_or(0)
    }
    pub fn currency(&self, node: u64, code: &str) -> Option<purser_core::CurrencySpec> {
        self.node(self.root_of(node))
            .currencies
            .iter()
            .find(|c| c.code == code)
            .cloned()
    }

    pub fn resolve(&self, r: &NodeRef) -> R<u64> {
        match r {
            NodeRef::Id(id) => {
                if self.exists(*id) {
                    Ok(*id)
                } else {
                    not_found(format!("node {id}"))
                }
            }
            NodeRef::Path(p) => {
                let mut cur: Option<u64> = None;
                for part in p.split('/') {
                    let next = self
                        .nodes
                        .iter()
                        .find(|n| n.parent == cur && n.name == part)
                        .map(|n| n.id);
                    match next {
                        Some(n) => cur = Some(n),
                        None => return not_found(format!("path {p}")),
                    }
                }
                cur.map_or_else(|| not_found("empty path"), Ok)
            }
        }
    }

    fn resolve_root(&self, r: &NodeRef) -> R<u64> {
        let id = self.resolve(r)?;
        if self.node(id).parent.is_some() {
            return invalid("not a root");
        }
        Ok(id)
    }

    // ---- accounting helpers ---------------------------------------------------------------

    /// Open holds at or below `node` in `currency`.
    pub fn held(&self, node: u64, currency: &str) -> u64 {
        self.holds
            .iter()
            .filter(|h| h.currency == currency && self.is_at_or_below(h.node, node))
            .map(|h| h.amount)
            .sum()
    }

    pub fn spent_total(&self, node: u64, currency: &str) -> u64 {
        self.settles
            .iter()
            .filter(|s| s.currency == currency && s.path.contains(&node))
            .map(|s| s.amount)
            .sum()
    }

    fn counted<'a>(&'a self, c: &'a CounterRef) -> impl Iterator<Item = &'a SettleRec> + 'a {
        self.settles.iter().filter(move |s| {
            s.seq > c.since && s.currency == c.currency && s.path.contains(&c.node)
        })
    }

    /// Start of the first-use window as of the counted settles.
    fn first_use_start(&self, c: &CounterRef, d: u64) -> Option<u64> {
        let mut start: Option<u64> = None;
        for s in self.counted(c) {
            if s.amount == 0 {
                continue;
            }
            match start {
                Some(st) if s.t < st + d => {}
                _ => start = Some(s.t),
            }
        }
        start
    }

    /// Spend of the counter in the window current at `t` (t >= every counted settle).
    fn spend(&self, c: &CounterRef, t: u64) -> u64 {
        match c.window {
            Window::Lifetime => self.counted(c).map(|s| s.amount).sum(),
            Window::Calendar(p) => {
                let st = cal::start(p, t);
                self.counted(c)
                    .filter(|s| cal::start(p, s.t) == st)
                    .map(|s| s.amount)
                    .sum()
            }
            Window::Sliding { duration_ms } => {
                let w = duration_ms / 60;
                let b = t / w;
                self.counted(c)
                    .filter(|s| s.t / w + 59 >= b && s.t / w <= b)
                    .map(|s| s.amount)
                    .sum()
            }
            Window::FirstUse { duration_ms } => match self.first_use_start(c, duration_ms) {
                Some(st) if t < st + duration_ms => self
                    .counted(c)
                    .filter(|s| s.t >= st)
                    .map(|s| s.amount)
                    .sum(),
                _ => 0,
            },
        }
    }

    /// Window bounds shown in a view at `t`.
    fn window_bounds(&self, c: &CounterRef, t: u64) -> (Option<u64>, Option<u64>) {
        match c.window {
            Window::Lifetime | Window::Sliding { .. } => (None, None),
            Window::Calendar(p) => (Some(cal::start(p, t)), Some(cal::end(p, t))),
            Window::FirstUse { duration_ms } => match self.first_use_start(c, duration_ms) {
                Some(st) if t < st + duration_ms => (Some(st), Some(st + duration_ms)),
                _ => (None, None),
            },
        }
    }

    fn role_def(&self, root: u64, name: &str) -> Option<&MRole> {
        self.node(root).role_defs.iter().find(|r| r.name == name)
    }

    /// Own limits then role limits of a node in a currency (all modes), with their counters.
    fn effective_limits(&self, node: u64, currency: Option<&str>) -> Vec<Eff> {
        let n = self.node(node);
        let mut out = Vec::new();
        for l in &n.limits {
            if currency.is_some_and(|c| c != l.currency) {
                continue;
            }
            out.push(Eff {
                role: None,
                limit: l.clone(),
                counter: CounterRef {
                    node,
                    role_counter: false,
                    currency: l.currency.clone(),
                    window: l.window,
                    since: l.since,
                },
            });
        }
        let root = self.root_of(node);
        // Grouped by the root's currency order, then roles in the member's order, then the
        // role's limits in order.
        let currencies: Vec<String> = match currency {
            Some(c) => vec![c.to_owned()],
            None => self
                .node(root)
                .currencies
                .iter()
                .map(|c| c.code.clone())
                .collect(),
        };
        for (cur, rn) in currencies
            .iter()
            .flat_map(|c| n.roles.iter().map(move |r| (c, r)))
        {
            let Some(role) = self.role_def(root, rn) else {
                continue;
            };
            for l in &role.limits {
                if l.currency != *cur {
                    continue;
                }
                let rc = n
                    .role_counters
                    .iter()
                    .find(|c| c.currency == l.currency && c.window == l.window)
                    .expect("role counter exists for every used window");
                let mut limit = l.clone();
                limit.exempt = rc.exempt;
                out.push(Eff {
                    role: Some(rn.clone()),
                    limit,
                    counter: CounterRef {
                        node,
                        role_counter: true,
                        currency: l.currency.clone(),
                        window: l.window,
                        since: rc.since,
                    },
                });
            }
        }
        out
    }

    fn room(&self, e: &Eff, extra_held: u64) -> u64 {
        let spent = self.spend(&e.counter, self.now);
        let held = self.held(e.counter.node, &e.counter.currency) + extra_held;
        e.limit.amount.saturating_sub(spent.saturating_add(held))
    }

    fn cap_retry(&self, e: &Eff, min: u64) -> Option<u64> {
        let held = self.held(e.counter.node, &e.counter.currency);
        if held.saturating_add(min) > e.limit.amount {
            return None;
        }
        let now = self.now;
        match e.limit.window {
            Window::Lifetime => None,
            Window::Calendar(p) => Some(cal::end(p, now) - now),
            Window::FirstUse { duration_ms } => {
                let st = self.first_use_start(&e.counter, duration_ms)?;
                Some(st + duration_ms - now)
            }
            Window::Sliding { duration_ms } => {
                let w = duration_ms / 60;
                let b = now / w;
                for nb in b + 1..=b + 60 {
                    let t = nb * w;
                    if self.spend(&e.counter, t) + held + min <= e.limit.amount {
                        return Some(t - now);
                    }
                }
                Some((b + 60) * w - now)
            }
        }
    }

    fn cap_check(&self, e: &Eff, min: u64) -> Check {
        let capacity = self.room(e, 0);
        let retry = if capacity < min {
            self.cap_retry(e, min)
        } else {
            None
        };
        Check {
            node: e.counter.node,
            rule: match &e.role {
                None => DenyRule::Cap,
                Some(r) => DenyRule::RoleCap { role: r.clone() },
            },
            window: Some(e.limit.window),
            capacity,
            retry,
        }
    }

    /// The hard-cap checks of one node, in order (own, then roles per resolution).
    fn cap_checks(&self, node: u64, currency: &str, min: u64) -> Vec<Check> {
        let effs = self.effective_limits(node, Some(currency));
        let mut out: Vec<Check> = effs
            .iter()
            .filter(|e| e.role.is_none() && e.limit.mode == LimitMode::Hard)
            .map(|e| self.cap_check(e, min))
            .collect();
        let root = self.root_of(node);
        match self.node(root).resolution {
            RoleResolution::MostRestrictive => {
                out.extend(
                    effs.iter()
                        .filter(|e| e.role.is_some() && e.limit.mode == LimitMode::Hard)
                        .map(|e| self.cap_check(e, min)),
                );
            }
            RoleResolution::MostPermissive => {
                let roles = &self.node(node).roles;
                if roles.is_empty() {
                    return out;
                }
                // Per role: binding (smallest-room) hard limit, or unlimited.
                let mut best: Option<Check> = None;
                for rn in roles {
                    let mut binding: Option<Check> = None;
                    for e in effs.iter().filter(|e| {
                        e.role.as_deref() == Some(rn.as_str()) && e.limit.mode == LimitMode::Hard
                    }) {
                        let c = self.cap_check(e, min);
                        if binding.as_ref().is_none_or(|b| c.capacity < b.capacity) {
                            binding = Some(c);
                        }
                    }
                    match binding {
                        None => return out, // unlimited through this role
                        Some(b) => {
                            if best.as_ref().is_none_or(|x| b.capacity > x.capacity) {
                                best = Some(b);
                            }
                        }
                    }
                }
                out.extend(best);
            }
        }
        out
    }

    fn rate_capacity(r: &MRate, now: u64) -> u64 {
        let a = u128::from(r.amount);
        let p = u128::from(r.period);
        let lag = r.tat.saturating_sub(u128::from(now) * a);
        ((p * a).saturating_sub(lag) / p) as u64
    }

    fn rate_retry(r: &MRate, now: u64, k: u64) -> Option<u64> {
        if k > r.amount {
            return None;
        }
        let a = u128::from(r.amount);
        let p = u128::from(r.period);
        // Need tat - t*a <= p*(a-k)  <=>  t >= (tat - p*(a-k)) / a.
        let need = r.tat.saturating_sub(p * (a - u128::from(k)));
        let t = need.div_ceil(a) as u64;
        Some(t.saturating_sub(now))
    }

    fn rate_matches(r: &MRate, model: Option<&str>, currency: &str, any_cost: bool) -> bool {
        let key_ok = r.key == "*" || model == Some(r.key.as_str());
        let kind_ok = match &r.kind {
            RateKind::Requests => true,
            RateKind::Cost { currency: c } => any_cost || c == currency,
        };
        key_ok && kind_ok
    }

    fn candidates(&self, leaf: u64, currency: &str) -> Vec<u64> {
        let path = self.path_ids(leaf);
        let mut c: Vec<&MGrant> = self
            .grants
            .iter()
            .filter(|g| {
                !g.dropped
                    && g.currency == currency
                    && path.contains(&g.node)
                    && !g.expired
                    && g.activated
                    && g.effective_at <= self.now
                    && g.expires_at.is_none_or(|e| e > self.now)
                    && g.available() > 0
            })
            .collect();
        c.sort_by(|a, b| {
            a.priority
                .cmp(&b.priority)
                .then(cmp_expiry(a.expires_at, b.expires_at))
                .then(self.depth(b.node).cmp(&self.depth(a.node)))
                .then(a.id.cmp(&b.id))
        });
        c.into_iter().map(|g| g.id).collect()
    }

    fn grant(&self, id: u64) -> &MGrant {
        &self.grants[(id - 1) as usize]
    }
    fn grant_mut(&mut self, id: u64) -> &mut MGrant {
        &mut self.grants[(id - 1) as usize]
    }

    /// Plan for `amount` from the waterfall (may fall short).
    fn plan(&self, leaf: u64, currency: &str, amount: u64) -> Vec<FundingPart> {
        let mut left = amount;
        let mut out = Vec::new();
        for gid in self.candidates(leaf, currency) {
            if left == 0 {
                break;
            }
            let g = self.grant(gid);
            let take = g.available().min(left);
            left -= take;
            out.push(FundingPart {
                grant_id: gid,
                node: g.node,
                amount: take,
            });
        }
        out
    }

    fn ledger(&mut self, node: u64, currency: &str) -> &mut Ledger {
        let root = self.root_of(node);
        self.ledger.entry((root, currency.to_owned())).or_default()
    }

    /// Evaluate a reservation of `min..=max` (one read-only pass).
    fn evaluate(
        &self,
        leaf: u64,
        currency: &str,
        min: u64,
        max: u64,
        model: Option<&str>,
    ) -> Result<u64, Denial> {
        let path = self.path_ids(leaf);
        let deny = |c: Check| Denial {
            node: c.node,
            rule: c.rule,
            window: c.window,
            remaining: c.capacity,
            requested: min,
            retry_after_ms: c.retry,
        };
        for n in &path {
            match self.node(*n).status {
                NodeStatus::Closed => {
                    return Err(deny(Check {
                        node: *n,
                        rule: DenyRule::NodeClosed,
                        window: None,
                        capacity: 0,
                        retry: None,
                    }))
                }
                NodeStatus::Paused => {
                    return Err(deny(Check {
                        node: *n,
                        rule: DenyRule::NodePaused,
                        window: None,
                        capacity: 0,
                        retry: None,
                    }))
                }
                NodeStatus::Active => {}
            }
        }
        let mut allow = max;
        for n in &path {
            for r in &self.node(*n).rates {
                if !Self::rate_matches(r, model, currency, false) {
                    continue;
                }
                let cap = Self::rate_capacity(r, self.now);
                match &r.kind {
                    RateKind::Requests => {
                        if cap < 1 {
                            return Err(deny(Check {
                                node: *n,
                                rule: DenyRule::RateLimit { key: r.key.clone() },
                                window: None,
                                capacity: cap,
                                retry: Self::rate_retry(r, self.now, 1),
                            }));
                        }
                    }
                    RateKind::Cost { .. } => {
                        if cap < min {
                            return Err(deny(Check {
                                node: *n,
                                rule: DenyRule::RateLimit { key: r.key.clone() },
                                window: None,
                                capacity: cap,
                                retry: Self::rate_retry(r, self.now, min),
                            }));
                        }
                        allow = allow.min(cap);
                    }
                }
            }
        }
        for n in &path {
            for c in self.cap_checks(*n, currency, min) {
                if c.capacity < min {
                    return Err(deny(c));
                }
                allow = allow.min(c.capacity);
            }
        }
        let funded = self.currency(leaf, currency).is_some_and(|c| c.funded);
        if funded {
            let cap: u64 = self
                .candidates(leaf, currency)
                .iter()
                .map(|g| self.grant(*g).available())
                .sum();
            if cap < min {
                return Err(deny(Check {
                    node: leaf,
                    rule: DenyRule::Funding,
                    window: None,
                    capacity: cap,
                    retry: None,
                }));
            }
            allow = allow.min(cap);
        }
        Ok(allow)
    }

    fn consume_rates(&mut self, leaf: u64, currency: &str, model: Option<&str>, amount: u64) {
        let now = self.now;
        for n in self.path_ids(leaf) {
            for r in &mut self.node_mut(n).rates {
                if !Self::rate_matches(r, model, currency, false) {
                    continue;
                }
                let k = match r.kind {
                    RateKind::Requests => 1,
                    RateKind::Cost { .. } => amount,
                };
                let base = r.tat.max(u128::from(now) * u128::from(r.amount));
                r.tat = base + u128::from(k) * u128::from(r.period);
            }
        }
    }

    fn soft_alerts(&self, leaf: u64, currency: &str, amount: u64) -> Vec<Event> {
        let mut ev = Vec::new();
        for n in self.path_ids(leaf) {
            let held_before = self.held(n, currency);
            for e in self.effective_limits(n, Some(currency)) {
                if e.limit.mode != LimitMode::Soft {
                    continue;
                }
                let would_be = self.spend(&e.counter, self.now) + held_before + amount;
                if would_be > e.limit.amount {
                    ev.push(Event::Governance(GovernanceEvent::SoftLimitExceeded {
                        node: n,
                        role: e.role.clone(),
                        currency: currency.to_owned(),
                        window: e.limit.window,
                        amount: e.limit.amount,
                        would_be,
                    }));
                }
            }
        }
        ev
    }

    fn headroom(&self, leaf: u64, currency: &str) -> Vec<Headroom> {
        self.path_ids(leaf)
            .into_iter()
            .map(|n| {
                // The same checks a reservation passes (roles per the resolution).
                let remaining = self
                    .cap_checks(n, currency, 0)
                    .iter()
                    .map(|c| c.capacity)
                    .min();
                Headroom { node: n, remaining }
            })
            .collect()
    }

    fn price(&self, node: u64, currency: &str, t: &TokenUsage) -> R<u64> {
        let root = self.root_of(node);
        let Some(p) = self
            .node(root)
            .prices
            .iter()
            .find(|p| p.provider == t.provider && p.model == t.model && p.currency == currency)
        else {
            return not_found("no price");
        };
        let sum = u128::from(t.input) * p.input_per_mtok as u128
            + u128::from(t.output) * p.output_per_mtok as u128
            + u128::from(t.cached_input) * p.cached_input_per_mtok as u128
            + u128::from(t.reasoning) * p.reasoning_per_mtok as u128;
        let cost = sum.div_ceil(1_000_000);
        u64::try_from(cost).map_err(|_| overflow())
    }

    // ---- events on settle -----------------------------------------------------------------

    /// Books a settle of `actual` on `node`; `hold` is the open hold being settled (if any).
    /// Returns the settlement and the events.
    #[allow(clippy::too_many_arguments)]
    fn book(
        &mut self,
        node: u64,
        currency: &str,
        actual: u64,
        hold: Option<&MHold>,
        late: bool,
        reservation_id: Option<u64>,
        tokens: Option<TokenUsage>,
        attrs: Attributes,
        charge_plan: Option<Vec<FundingPart>>,
    ) -> R<(Settlement, Vec<Event>)> {
        let now = self.now;
        let funded = self.currency(node, currency).is_some_and(|c| c.funded);
        let mut payments: Vec<FundingPart> = Vec::new();
        let mut touched_grants: Vec<u64> = Vec::new();
        // Balance lists every grant touched once: the hold's plan (even a part that paid
        // nothing), then the grants drawn for the overrun.
        let mut balance_parts: Vec<u64> = Vec::new();
        let mut exhausted_grants: Vec<u64> = Vec::new();
        let mut left = actual;
        let held_amount = hold.map_or(0, |h| h.amount);
        let mut released = 0;
        if let Some(h) = hold {
            for part in &h.plan {
                let pay = left.min(part.amount);
                left -= pay;
                let rel = part.amount - pay;
                released += rel;
                let g = self.grant_mut(part.grant_id);
                g.held -= part.amount;
                g.remaining -= pay;
                let mut forfeit = 0;
                let expired_grant = g.expired;
                if g.expired {
                    g.remaining -= rel;
                    forfeit = rel;
                }
                let (gnode, gid, rem) = (g.node, g.id, g.remaining);
                if !balance_parts.contains(&gid) {
                    balance_parts.push(gid);
                }
                let lg = self.ledger(gnode, currency);
                lg.paid_settle += pay;
                lg.forfeited += forfeit;
                if (pay > 0 || forfeit > 0) && !touched_grants.contains(&gid) {
                    touched_grants.push(gid);
                }
                // "An expired grant whose remaining reaches zero is dropped without a
                // GrantExhausted event (its GrantExpired was the notice)."
                if rem == 0 && pay > 0 && !expired_grant {
                    exhausted_grants.push(gid);
                }
                if pay > 0 {
                    push_merged(
                        &mut payments,
                        FundingPart {
                            grant_id: gid,
                            node: gnode,
                            amount: pay,
                        },
                    );
                }
            }
            debug_assert_eq!(
                released,
                if h.plan.is_empty() {
                    0
                } else {
                    held_amount.saturating_sub(actual)
                }
            );
            released = held_amount.saturating_sub(actual);
        }
        let mut debt = 0;
        if funded && left > 0 {
            let plan = match charge_plan {
                Some(p) => p,
                None => self.plan(node, currency, left),
            };
            for part in plan {
                let g = self.grant_mut(part.grant_id);
                g.remaining -= part.amount;
                let (gnode, gid, rem) = (g.node, g.id, g.remaining);
                left -= part.amount;
                if !balance_parts.contains(&gid) {
                    balance_parts.push(gid);
                }
                self.ledger(gnode, currency).paid_settle += part.amount;
                if !touched_grants.contains(&gid) {
                    touched_grants.push(gid);
                }
                if rem == 0 && !exhausted_grants.contains(&gid) {
                    exhausted_grants.push(gid);
                }
                push_merged(&mut payments, part);
            }
            debt = left;
            if debt > 0 {
                let d = self
                    .node_mut(node)
                    .debt
                    .entry(currency.to_owned())
                    .or_insert(0);
                *d = d.checked_add(debt).ok_or_else(overflow)?;
                self.ledger(node, currency).debt_created += debt;
            }
        }
        // Drop expired grants that reached 0.
        for gid in &touched_grants {
            let g = self.grant_mut(*gid);
            if g.expired && g.remaining == 0 {
                g.dropped = true;
            }
        }

        // Window counters: before/after per limit, resets, thresholds, pause.
        let path = self.path_ids(node);
        let overrun = if late {
            actual
        } else if hold.is_some() {
            actual.saturating_sub(held_amount)
        } else {
            0
        };
        let mut gov: Vec<Event> = Vec::new();
        if overrun > 0 || late {
            gov.push(Event::Governance(GovernanceEvent::Overrun {
                reservation_id,
                node,
                currency: currency.to_owned(),
                held: if late { 0 } else { held_amount },
                actual,
                debt,
                late,
            }));
        }
        for gid in &exhausted_grants {
            gov.push(Event::Governance(GovernanceEvent::GrantExhausted {
                grant_id: *gid,
            }));
        }
        let mut pauses: Vec<u64> = Vec::new();
        struct PerNode {
            resets: Vec<Event>,
            thresholds: Vec<Event>,
        }
        let mut per_node: Vec<(u64, PerNode)> = Vec::new();
        for n in &path {
            let mut pn = PerNode {
                resets: Vec::new(),
                thresholds: Vec::new(),
            };
            let effs = self.effective_limits(*n, Some(currency));
            // Own limits, each with its own counter: its window reset, then its threshold
            // crossings. Role limits share the member's counters: first every role counter's
            // reset, then the role limits' crossings.
            let own: Vec<&Eff> = effs.iter().filter(|e| e.role.is_none()).collect();
            let roles: Vec<&Eff> = effs.iter().filter(|e| e.role.is_some()).collect();
            let mut seen: Vec<Window> = Vec::new();
            let mut order: Vec<(&Eff, bool, bool)> = Vec::new(); // (limit, reset?, thresholds?)
            for e in &own {
                order.push((e, true, true));
            }
            for c in &self.node(*n).role_counters {
                if c.currency != currency {
                    continue;
                }
                if let Some(e) = roles.iter().find(|e| e.counter.window == c.window) {
                    if !seen.contains(&c.window) {
                        seen.push(c.window);
                        order.push((e, true, false));
                    }
                }
            }
            for e in &roles {
                order.push((e, false, true));
            }
            for (e, reset, thresholds) in order {
                if reset {
                    if let Some((closed_start, spent)) = self.reset_of(&e.counter, now, actual) {
                        pn.thresholds
                            .push(Event::Governance(GovernanceEvent::WindowReset {
                                node: *n,
                                from_roles: e.counter.role_counter,
                                currency: currency.to_owned(),
                                window: e.counter.window,
                                closed_start_ms: closed_start,
                                spent,
                            }));
                    }
                }
                if !thresholds {
                    continue;
                }
                // Spend in the window current at settle time, before this settle (0 when the
                // settle opens a new window).
                let before = self.spend(&e.counter, now);
                let after = before + actual;
                let amount = e.limit.amount;
                for p in &e.limit.thresholds {
                    let pa = u128::from(*p) * u128::from(amount);
                    if u128::from(before) * 100 < pa && pa <= u128::from(after) * 100 {
                        pn.thresholds
                            .push(Event::Governance(GovernanceEvent::ThresholdCrossed {
                                node: *n,
                                role: e.role.clone(),
                                currency: currency.to_owned(),
                                window: e.limit.window,
                                percent: *p,
                                spent: after,
                                amount,
                            }));
                    }
                }
                if e.limit.on_exhausted == OnExhausted::Pause
                    && before < amount
                    && after >= amount
                    && !pauses.contains(n)
                {
                    pauses.push(*n);
                }
            }
            per_node.push((*n, pn));
        }
        // Record the settle.
        self.settles.push(SettleRec {
            seq: self.seq,
            t: now,
            path: path.clone(),
            currency: currency.to_owned(),
            amount: actual,
        });
        // Mark I1 exemptions for counters that an overrun / late settle pushed.
        if overrun > 0 || late {
            for n in &path {
                let nd = self.node_mut(*n);
                for l in nd.limits.iter_mut().filter(|l| l.currency == currency) {
                    l.exempt = true;
                }
                for c in nd
                    .role_counters
                    .iter_mut()
                    .filter(|c| c.currency == currency)
                {
                    c.exempt = true;
                }
            }
        }
        for (n, pn) in per_node {
            gov.extend(pn.resets);
            gov.extend(pn.thresholds);
            if pauses.contains(&n) && self.node(n).status == NodeStatus::Active {
                self.node_mut(n).status = NodeStatus::Paused;
                gov.push(Event::Governance(GovernanceEvent::Paused {
                    node: n,
                    by_limit: true,
                }));
            }
        }

        let mut events = vec![
            Event::Usage(UsageEvent {
                at_ms: now,
                reservation_id,
                node,
                currency: currency.to_owned(),
                amount: actual,
                tokens,
                attrs,
            }),
            Event::Monetization(MonetizationEvent {
                at_ms: now,
                reservation_id,
                node,
                currency: currency.to_owned(),
                amount: actual,
                parts: payments.clone(),
                debt,
            }),
        ];
        let mut windows = Vec::new();
        for n in &path {
            let effs = self.effective_limits(*n, Some(currency));
            let mut counters: Vec<&Eff> = effs.iter().filter(|e| e.role.is_none()).collect();
            for c in &self.node(*n).role_counters {
                if let Some(e) = effs.iter().find(|e| {
                    e.role.is_some() && e.counter.window == c.window && c.currency == currency
                }) {
                    counters.push(e);
                }
            }
            for e in counters {
                windows.push(WindowBalance {
                    node: *n,
                    from_roles: e.counter.role_counter,
                    window: e.counter.window,
                    spent: self.spend(&e.counter, now),
                });
            }
        }
        events.push(Event::Balance(BalanceEvent {
            at_ms: now,
            currency: currency.to_owned(),
            grants: balance_parts
                .iter()
                .map(|gid| {
                    let g = self.grant(*gid);
                    GrantBalance {
                        grant_id: g.id,
                        remaining: g.remaining,
                        held: g.held,
                    }
                })
                .collect(),
            windows,
        }));
        events.extend(gov);
        let settlement = Settlement {
            reservation_id,
            node,
            currency: currency.to_owned(),
            charged: actual,
            released: if late { 0 } else { released },
            overrun,
            debt,
            plan: payments,
            late,
        };
        Ok((settlement, events))
    }

    /// The window a settle of `actual` at `t` closes: `(closed start, spend)`.
    fn reset_of(&self, c: &CounterRef, t: u64, actual: u64) -> Option<(u64, u64)> {
        match c.window {
            Window::Calendar(p) => {
                let last = self.counted(c).last()?;
                let last_start = cal::start(p, last.t);
                if cal::start(p, t) > last_start {
                    let spent: u64 = self
                        .counted(c)
                        .filter(|s| cal::start(p, s.t) == last_start)
                        .map(|s| s.amount)
                        .sum();
                    if spent > 0 {
                        return Some((last_start, spent));
                    }
                }
                None
            }
            Window::FirstUse { duration_ms } => {
                if actual == 0 {
                    return None;
                }
                let st = self.first_use_start(c, duration_ms)?;
                if t >= st + duration_ms {
                    let spent: u64 = self
                        .counted(c)
                        .filter(|s| s.t >= st)
                        .map(|s| s.amount)
                        .sum();
                    if spent > 0 {
                        return Some((st, spent));
                    }
                }
                None
            }
            _ => None,
        }
    }

    // ---- grants ---------------------------------------------------------------------------

    /// A grant pays the debts of its owner's subtree, ascending node id.
    fn pay_debts(&mut self, gid: u64, events: &mut Vec<Event>) {
        let (owner, currency) = {
            let g = self.grant(gid);
            (g.node, g.currency.clone())
        };
        for n in self.subtree(owner) {
            let avail = self.grant(gid).available();
            if avail == 0 {
                break;
            }
            let d = self.node(n).debt.get(&currency).copied().unwrap_or(0);
            if d == 0 {
                continue;
            }
            let pay = d.min(avail);
            *self.node_mut(n).debt.get_mut(&currency).expect("debt") -= pay;
            self.grant_mut(gid).remaining -= pay;
            self.ledger(owner, &currency).paid_debt += pay;
            events.push(Event::Governance(GovernanceEvent::DebtPaid {
                node: n,
                grant_id: gid,
                currency: currency.clone(),
                amount: pay,
            }));
            if self.grant(gid).remaining == 0 {
                events.push(Event::Governance(GovernanceEvent::GrantExhausted {
                    grant_id: gid,
                }));
            }
        }
    }

    /// Next due item of a grant: (due, kind) with kind 0 activation, 1 expiry, 2 renewal.
    fn grant_due(g: &MGrant) -> Option<(u64, u8)> {
        if g.dropped || g.expired {
            return None;
        }
        if !g.activated {
            return Some((g.effective_at, 0));
        }
        match (g.expires_at, g.next_renewal) {
            (Some(e), Some(r)) => {
                if e <= r {
                    Some((e, 1))
                } else {
                    Some((r, 2))
                }
            }
            (Some(e), None) => Some((e, 1)),
            (None, Some(r)) => Some((r, 2)),
            (None, None) => None,
        }
    }

    /// Releases a hold's parts (no charge) back to its grants.
    fn release_parts(&mut self, h: &MHold) {
        for part in &h.plan {
            let g = self.grant_mut(part.grant_id);
            g.held -= part.amount;
            if g.expired {
                g.remaining -= part.amount;
                let (gnode, rem, gid) = (g.node, g.remaining, g.id);
                if rem == 0 {
                    // Forfeited to zero: dropped, without GrantExhausted.
                    self.grant_mut(gid).dropped = true;
                }
                self.ledger(gnode, &h.currency).forfeited += part.amount;
            }
        }
    }

    // ---- apply ----------------------------------------------------------------------------

    fn remembered(&self, id: &str, now: u64) -> Option<&Remembered> {
        self.requests
            .iter()
            .find(|r| r.id == id && now <= r.applied_at + r.retention + SKEW_MS)
    }

    pub fn apply(&mut self, at: u64, cmd: &Command) -> Result<MApplied, MErr> {
        let now = self.now.max(at);
        match (&cmd.request, &cmd.op) {
            (None, Op::Tick) => {}
            (None, _) => return invalid("client command without request"),
            (Some(_), Op::Tick) => return invalid("tick with request"),
            (Some(r), _) => {
                if r.id.is_empty() || r.id.len() > 128 {
                    return invalid("request id");
                }
                if r.sent_at_ms > now + SKEW_MS {
                    return invalid("sent in the future");
                }
                if r.sent_at_ms + self.cfg.retention < now || r.sent_at_ms < self.sent_floor {
                    return precondition("request too old");
                }
                if let Some(rem) = self.remembered(&r.id, now) {
                    if rem.op == cmd.op {
                        let recorded = rem.recorded.clone();
                        self.now = now;
                        return Ok(MApplied {
                            applied: Applied {
                                outcome: Outcome::Duplicate(recorded),
                                events: vec![],
                            },
                            touched: vec![],
                        });
                    }
                    return err(ErrorKind::AlreadyExists, "request id reused");
                }
            }
        }
        let mut m = self.clone();
        m.now = now;
        m.seq += 1;
        let mut touched = Vec::new();
        let applied = m.exec(&cmd.op, &mut touched)?;
        if let Outcome::Denied(_) = applied.outcome {
            self.now = now;
            return Ok(MApplied { applied, touched });
        }
        if let Some(r) = &cmd.request {
            let recorded = match &applied.outcome {
                Outcome::NodeCreated { node_id } => Recorded::NodeCreated { node_id: *node_id },
                Outcome::GrantAdded { grant_id } => Recorded::GrantAdded {
                    grant_id: *grant_id,
                },
                Outcome::Done => Recorded::Done,
                Outcome::Reserved(res) => Recorded::Reserved {
                    reservation_id: res.reservation_id,
                    amount: res.amount,
                    expires_at_ms: res.expires_at_ms,
                },
                Outcome::Settled(s) => Recorded::Settled {
                    reservation_id: s.reservation_id.expect("settle has an id"),
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
                other => panic!("unexpected outcome to remember: {other:?}"),
            };
            m.requests.retain(|x| x.id != r.id);
            m.requests.push(Remembered {
                id: r.id.clone(),
                op: cmd.op.clone(),
                recorded,
                applied_at: now,
                retention: m.cfg.retention,
            });
        }
        *self = m;
        Ok(MApplied { applied, touched })
    }

    fn exec(&mut self, op: &Op, touched: &mut Vec<u64>) -> R<Applied> {
        let mut events = Vec::new();
        let outcome = match op {
            Op::CreateNode(c) => self.create_node(c, touched)?,
            Op::MoveNode { node, new_parent } => self.move_node(node, new_parent, touched)?,
            Op::CloseNode { node } => {
                let id = self.resolve(node)?;
                touched.push(id);
                if self.node(id).status == NodeStatus::Closed {
                    return precondition("already closed");
                }
                self.node_mut(id).status = NodeStatus::Closed;
                Outcome::Done
            }
            Op::PauseNode { node } => {
                let id = self.resolve(node)?;
                touched.push(id);
                match self.node(id).status {
                    NodeStatus::Closed => return precondition("closed"),
                    NodeStatus::Paused => {}
                    NodeStatus::Active => {
                        self.node_mut(id).status = NodeStatus::Paused;
                        events.push(Event::Governance(GovernanceEvent::Paused {
                            node: id,
                            by_limit: false,
                        }));
                    }
                }
                Outcome::Done
            }
            Op::ResumeNode { node } => {
                let id = self.resolve(node)?;
                touched.push(id);
                match self.node(id).status {
                    NodeStatus::Closed => return precondition("closed"),
                    NodeStatus::Active => {}
                    NodeStatus::Paused => {
                        self.node_mut(id).status = NodeStatus::Active;
                        events.push(Event::Governance(GovernanceEvent::Resumed { node: id }));
                    }
                }
                Outcome::Done
            }
            Op::SetLimit { node, limit } => {
                let id = self.resolve(node)?;
                touched.push(id);
                if self.currency(id, &limit.currency).is_none() {
                    return not_found("currency");
                }
                let seq = self.seq;
                let l = limit_from_spec(limit, seq)?;
                let n = self.node_mut(id);
                if let Some(old) = n
                    .limits
                    .iter_mut()
                    .find(|x| x.currency == l.currency && x.window == l.window)
                {
                    let since = old.since;
                    *old = MLimit { since, ..l };
                } else {
                    if n.limits.len() >= 32 {
                        return exhausted("too many limits");
                    }
                    n.limits.push(l);
                }
                Outcome::Done
            }
            Op::RemoveLimit {
                node,
                currency,
                window,
            } => {
                let id = self.resolve(node)?;
                touched.push(id);
                let n = self.node_mut(id);
                let before = n.limits.len();
                n.limits
                    .retain(|x| !(x.currency == *currency && x.window == *window));
                if n.limits.len() == before {
                    return not_found("no such limit");
                }
                Outcome::Done
            }
            Op::SetRateLimit { node, rate } => self.set_rate(node, rate, touched)?,
            Op::RemoveRateLimit { node, key, kind } => {
                let id = self.resolve(node)?;
                touched.push(id);
                let n = self.node_mut(id);
                let before = n.rates.len();
                n.rates.retain(|r| !(r.key == *key && r.kind == *kind));
                if n.rates.len() == before {
                    return not_found("no such rate limit");
                }
                Outcome::Done
            }
            Op::AddGrant { node, grant } => self.add_grant(node, grant, touched, &mut events)?,
            Op::DefineRole { root, name, limits } => {
                self.define_role(root, name, limits, touched)?
            }
            Op::RemoveRole { root, name } => {
                let rid = self.resolve_root(root)?;
                touched.push(rid);
                if self.role_def(rid, name).is_none() {
                    return not_found("role");
                }
                if self
                    .nodes
                    .iter()
                    .any(|n| self.root_of(n.id) == rid && n.roles.contains(name))
                {
                    return precondition("role in use");
                }
                self.node_mut(rid).role_defs.retain(|r| r.name != *name);
                Outcome::Done
            }
            Op::AssignRoles { node, roles } => {
                let id = self.resolve(node)?;
                touched.push(id);
                if roles.len() > 8 {
                    return invalid("too many roles");
                }
                let root = self.root_of(id);
                for r in roles {
                    if self.role_def(root, r).is_none() {
                        return not_found("role");
                    }
                }
                for (i, r) in roles.iter().enumerate() {
                    if roles[..i].contains(r) {
                        return invalid("duplicate role");
                    }
                }
                self.node_mut(id).roles = roles.clone();
                self.refresh_role_counters(id, true);
                Outcome::Done
            }
            Op::SetRoleResolution { root, resolution } => {
                let rid = self.resolve_root(root)?;
                touched.push(rid);
                if self.node(rid).resolution != *resolution {
                    self.node_mut(rid).resolution = *resolution;
                    for n in self.subtree(rid) {
                        for c in &mut self.node_mut(n).role_counters {
                            c.exempt = true;
                        }
                    }
                }
                Outcome::Done
            }
            Op::SetPrice { root, price } => {
                let rid = self.resolve_root(root)?;
                touched.push(rid);
                check_text(&price.provider, "provider")?;
                check_text(&price.model, "model")?;
                for p in [
                    price.input_per_mtok,
                    price.output_per_mtok,
                    price.cached_input_per_mtok,
                    price.reasoning_per_mtok,
                ] {
                    check_amount(p, false, "price")?;
                }
                if self.currency(rid, &price.currency).is_none() {
                    return not_found("currency");
                }
                let n = self.node_mut(rid);
                if let Some(old) = n.prices.iter_mut().find(|p| {
                    p.provider == price.provider
                        && p.model == price.model
                        && p.currency == price.currency
                }) {
                    *old = price.clone();
                } else {
                    if n.prices.len() >= 4096 {
                        return exhausted("too many prices");
                    }
                    n.prices.push(price.clone());
                }
                Outcome::Done
            }
            Op::RemovePrice {
                root,
                provider,
                model,
                currency,
            } => {
                let rid = self.resolve_root(root)?;
                touched.push(rid);
                let n = self.node_mut(rid);
                let before = n.prices.len();
                n.prices.retain(|p| {
                    !(p.provider == *provider && p.model == *model && p.currency == *currency)
                });
                if n.prices.len() == before {
                    return not_found("no such price");
                }
                Outcome::Done
            }
            Op::Reserve(r) => self.reserve(r, touched, &mut events)?,
            Op::Settle {
                reservation_id,
                actual,
            } => self.settle(*reservation_id, actual, touched, &mut events)?,
            Op::Release { reservation_id } => {
                let Some(pos) = self.holds.iter().position(|h| h.id == *reservation_id) else {
                    if self.expired_hold(*reservation_id).is_some() {
                        return precondition("hold expired");
                    }
                    return not_found("reservation");
                };
                let h = self.holds.remove(pos);
                touched.extend(self.path_ids(h.node));
                self.release_parts(&h);
                Outcome::Released {
                    reservation_id: h.id,
                    amount: h.amount,
                }
            }
            Op::Charge(c) => self.charge(c, touched, &mut events)?,
            Op::SetConfig(p) => self.set_config(p)?,
            Op::Tick => self.tick(touched, &mut events),
            // Webhook subscriptions and tokens are covered by tests/rules/webhook.rs and
            // tests/rules/access.rs; the generator does not produce them.
            Op::AddWebhook { .. }
            | Op::RemoveWebhook { .. }
            | Op::WebhookDelivered { .. }
            | Op::CreateToken { .. }
            | Op::RevokeToken { .. } => {
                unreachable!("the model generates no webhook or token commands")
            }
        };
        Ok(Applied { outcome, events })
    }

    fn create_node(&mut self, c: &CreateNode, touched: &mut Vec<u64>) -> R<Outcome> {
        if !valid_node_name(&c.name) {
            return invalid("node name");
        }
        if c.kind.is_empty() || c.kind.len() > 32 {
            return invalid("kind");
        }
        check_free(&c.kind, "kind")?;
        check_tags(&c.tags, 32)?;
        let id = self.nodes.len() as u64 + 1;
        let mut node = MNode {
            id,
            name: c.name.clone(),
            parent: None,
            kind: c.kind.clone(),
            tags: c.tags.clone(),
            status: NodeStatus::Active,
            roles: vec![],
            limits: vec![],
            role_counters: vec![],
            rates: vec![],
            debt: BTreeMap::new(),
            currencies: vec![],
            role_defs: vec![],
            resolution: RoleResolution::MostRestrictive,
            prices: vec![],
        };
        match &c.parent {
            None => {
                let Some(rs) = &c.root else {
                    return invalid("root without currencies");
                };
                if rs.currencies.is_empty() || rs.currencies.len() > 8 {
                    return invalid("1..=8 currencies");
                }
                for (i, cur) in rs.currencies.iter().enumerate() {
                    if !valid_currency_code(&cur.code) || cur.scale > 18 {
                        return invalid("currency");
                    }
                    if rs.currencies[..i].iter().any(|x| x.code == cur.code) {
                        return invalid("duplicate currency");
                    }
                }
                if self
                    .nodes
                    .iter()
                    .any(|n| n.parent.is_none() && n.name == c.name)
                {
                    return err(ErrorKind::AlreadyExists, "root name taken");
                }
                node.currencies = rs.currencies.clone();
                if !rs.no_default_cap {
                    for cur in &rs.currencies {
                        let amount = 10u64
                            .checked_pow(u32::from(cur.scale))
                            .and_then(|p| p.checked_mul(self.cfg.cap_major))
                            .filter(|a| *a <= AMOUNT_MAX)
                            .ok_or_else(overflow)?;
                        node.limits.push(MLimit {
                            currency: cur.code.clone(),
                            window: Window::Calendar(Period::Month),
                            amount,
                            mode: LimitMode::Hard,
                            thresholds: DEFAULT_THRESHOLDS.to_vec(),
                            on_exhausted: OnExhausted::Deny,
                            since: self.seq,
                            exempt: false,
                        });
                    }
                }
            }
            Some(p) => {
                if c.root.is_some() {
                    return invalid("child declares currencies");
                }
                let pid = self.resolve(p)?;
                if self
                    .nodes
                    .iter()
                    .any(|n| n.parent == Some(pid) && n.name == c.name)
                {
                    return err(ErrorKind::AlreadyExists, "name taken");
                }
                if self.node(pid).status == NodeStatus::Closed {
                    return precondition("parent closed");
                }
                if self.depth(pid) + 1 > u32::from(self.cfg.depth_max) {
                    return invalid("too deep");
                }
                node.parent = Some(pid);
                touched.push(pid);
            }
        }
        self.nodes.push(node);
        touched.push(id);
        Ok(Outcome::NodeCreated { node_id: id })
    }

    fn move_node(
        &mut self,
        node: &NodeRef,
        new_parent: &NodeRef,
        touched: &mut Vec<u64>,
    ) -> R<Outcome> {
        let id = self.resolve(node)?;
        let np = self.resolve(new_parent)?;
        let Some(old_parent) = self.node(id).parent else {
            return invalid("cannot move a root");
        };
        if self.root_of(np) != self.root_of(id) {
            return invalid("across roots");
        }
        if np == old_parent {
            return Ok(Outcome::Done);
        }
        if self.is_at_or_below(np, id) {
            return invalid("cycle");
        }
        if self.node(np).status == NodeStatus::Closed {
            return precondition("new parent closed");
        }
        if self
            .nodes
            .iter()
            .any(|n| n.parent == Some(np) && n.name == self.node(id).name)
        {
            return err(ErrorKind::AlreadyExists, "name taken");
        }
        if self.depth(np) + 1 + self.max_depth_below(id) > u32::from(self.cfg.depth_max) {
            return invalid("too deep");
        }
        let old_path = self.path_ids(id);
        let new_anc: Vec<u64> = self
            .path_ids(np)
            .into_iter()
            .filter(|a| !old_path.contains(a))
            .collect();
        let root = self.root_of(id);
        let currencies: Vec<String> = self
            .node(root)
            .currencies
            .iter()
            .map(|c| c.code.clone())
            .collect();
        for cur in &currencies {
            let h = self.held(id, cur);
            if h == 0 {
                continue;
            }
            for a in &new_anc {
                for c in self.cap_checks(*a, cur, h) {
                    if c.capacity < h {
                        return precondition("no room for the moved holds");
                    }
                }
            }
        }
        touched.extend(old_path.iter().copied());
        self.node_mut(id).parent = Some(np);
        touched.extend(self.path_ids(id));
        Ok(Outcome::Done)
    }

    fn set_rate(
        &mut self,
        node: &NodeRef,
        rate: &RateLimitSpec,
        touched: &mut Vec<u64>,
    ) -> R<Outcome> {
        let id = self.resolve(node)?;
        touched.push(id);
        check_text(&rate.key, "rate key")?;
        let amount = check_amount(rate.amount, true, "rate amount")?;
        if rate.period_ms == 0 || rate.period_ms > 366 * DAY {
            return invalid("rate period");
        }
        if let RateKind::Cost { currency } = &rate.kind {
            if self.currency(id, currency).is_none() {
                return not_found("currency");
            }
        }
        let r = MRate {
            key: rate.key.clone(),
            kind: rate.kind.clone(),
            amount,
            period: rate.period_ms,
            tat: 0,
        };
        let n = self.node_mut(id);
        if let Some(old) = n
            .rates
            .iter_mut()
            .find(|x| x.key == r.key && x.kind == r.kind)
        {
            *old = r;
        } else {
            if n.rates.len() >= 16 {
                return exhausted("too many rate limits");
            }
            n.rates.push(r);
        }
        Ok(Outcome::Done)
    }

    fn add_grant(
        &mut self,
        node: &NodeRef,
        spec: &GrantSpec,
        touched: &mut Vec<u64>,
        events: &mut Vec<Event>,
    ) -> R<Outcome> {
        let id = self.resolve(node)?;
        touched.push(id);
        let Some(cur) = self.currency(id, &spec.currency) else {
            return not_found("currency");
        };
        if !cur.funded {
            return precondition("capped currency");
        }
        let amount = check_amount(spec.amount, true, "grant amount")?;
        let effective_at = spec.effective_at_ms.unwrap_or(self.now);
        if let Some(e) = spec.expires_at_ms {
            if e <= effective_at || e <= self.now {
                return invalid("expiry");
            }
        }
        if spec.recur == Some(Period::Hour) {
            return invalid("hourly recurrence");
        }
        match spec.rollover {
            Rollover::None => {}
            Rollover::CapMultiple(n) => {
                if spec.recur.is_none() || !(1..=1000).contains(&n) {
                    return invalid("rollover");
                }
            }
            Rollover::Percent(p) => {
                if spec.recur.is_none() || p > 100 {
                    return invalid("rollover");
                }
            }
        }
        let live = self
            .grants
            .iter()
            .filter(|g| g.node == id && !g.dropped)
            .count();
        if live >= 64 {
            return exhausted("too many grants");
        }
        let gid = self.grants.len() as u64 + 1;
        let activated = effective_at <= self.now;
        self.grants.push(MGrant {
            id: gid,
            node: id,
            currency: spec.currency.clone(),
            amount,
            remaining: amount,
            held: 0,
            priority: spec.priority,
            kind: spec.kind,
            effective_at,
            expires_at: spec.expires_at_ms,
            recur: spec.recur,
            rollover: spec.rollover,
            next_renewal: spec.recur.map(|p| cal::end(p, effective_at)),
            activated,
            expired: false,
            dropped: false,
        });
        self.ledger(id, &spec.currency).credited += amount;
        if activated {
            self.pay_debts(gid, events);
        }
        touched.extend(self.subtree(id));
        Ok(Outcome::GrantAdded { grant_id: gid })
    }

    fn define_role(
        &mut self,
        root: &NodeRef,
        name: &str,
        limits: &[LimitSpec],
        touched: &mut Vec<u64>,
    ) -> R<Outcome> {
        let rid = self.resolve_root(root)?;
        touched.push(rid);
        if !valid_node_name(name) {
            return invalid("role name");
        }
        if limits.len() > 16 {
            return invalid("too many role limits");
        }
        let mut ls = Vec::new();
        for spec in limits {
            let l = limit_from_spec(spec, 0)?;
            if self.currency(rid, &l.currency).is_none() {
                return not_found("currency");
            }
            if ls
                .iter()
                .any(|x: &MLimit| x.currency == l.currency && x.window == l.window)
            {
                return invalid("duplicate role limit");
            }
            ls.push(l);
        }
        // Shown grouped by the root's currency order (stable within a currency).
        let order: Vec<String> = self
            .node(rid)
            .currencies
            .iter()
            .map(|c| c.code.clone())
            .collect();
        ls.sort_by_key(|l| order.iter().position(|c| *c == l.currency));
        let n = self.node_mut(rid);
        if let Some(old) = n.role_defs.iter_mut().find(|r| r.name == name) {
            old.limits = ls;
        } else {
            if n.role_defs.len() >= 64 {
                return exhausted("too many roles");
            }
            n.role_defs.push(MRole {
                name: name.to_owned(),
                limits: ls,
            });
        }
        for m in self.subtree(rid) {
            if self.node(m).roles.iter().any(|r| r == name) {
                self.refresh_role_counters(m, true);
                touched.push(m);
            }
        }
        Ok(Outcome::Done)
    }

    /// Recomputes a member's shared role counters after its roles or their definitions changed.
    fn refresh_role_counters(&mut self, node: u64, mark_exempt: bool) {
        let root = self.root_of(node);
        let mut used: Vec<(String, Window)> = Vec::new();
        for rn in self.node(node).roles.clone() {
            if let Some(r) = self.role_def(root, &rn) {
                for l in &r.limits {
                    let k = (l.currency.clone(), l.window);
                    if !used.contains(&k) {
                        used.push(k);
                    }
                }
            }
        }
        let seq = self.seq;
        let n = self.node_mut(node);
        // Counters still used keep their place (and count); new ones are appended.
        let mut next: Vec<MCounter> = n
            .role_counters
            .iter()
            .filter(|c| {
                used.iter()
                    .any(|(cur, w)| *cur == c.currency && *w == c.window)
            })
            .map(|c| MCounter {
                exempt: c.exempt || mark_exempt,
                ..c.clone()
            })
            .collect();
        for (cur, w) in used {
            if !next.iter().any(|c| c.currency == cur && c.window == w) {
                next.push(MCounter {
                    currency: cur,
                    window: w,
                    since: seq,
                    exempt: true,
                });
            }
        }
        n.role_counters = next;
    }

    fn reserve(
        &mut self,
        r: &Reserve,
        touched: &mut Vec<u64>,
        events: &mut Vec<Event>,
    ) -> R<Outcome> {
        let leaf = self.resolve(&r.node)?;
        if self.currency(leaf, &r.currency).is_none() {
            return not_found("currency");
        }
        let (min, max) = match r.amount {
            Amount::Exact(a) => {
                let a = check_amount(a, true, "amount")?;
                (a, a)
            }
            Amount::Range { min, max } => {
                let lo = check_amount(min, true, "min")?;
                let hi = check_amount(max, true, "max")?;
                if lo > hi {
                    return invalid("min > max");
                }
                (lo, hi)
            }
        };
        if r.ttl_ms < self.cfg.ttl_min || r.ttl_ms > self.cfg.ttl_max {
            return invalid("ttl");
        }
        check_attrs(&r.attrs)?;
        let allow = match self.evaluate(leaf, &r.currency, min, max, r.attrs.model.as_deref()) {
            Ok(a) => a,
            Err(d) => return Ok(Outcome::Denied(d)),
        };
        touched.extend(self.path_ids(leaf));
        let plan = if self.currency(leaf, &r.currency).is_some_and(|c| c.funded) {
            self.plan(leaf, &r.currency, allow)
        } else {
            vec![]
        };
        events.extend(self.soft_alerts(leaf, &r.currency, allow));
        self.consume_rates(leaf, &r.currency, r.attrs.model.as_deref(), allow);
        for p in &plan {
            self.grant_mut(p.grant_id).held += p.amount;
        }
        let id = self.next_res;
        self.next_res += 1;
        let expires_at = self.now + r.ttl_ms;
        self.holds.push(MHold {
            id,
            node: leaf,
            currency: r.currency.clone(),
            amount: allow,
            created: self.now,
            expires_at,
            plan: plan.clone(),
            attrs: r.attrs.clone(),
        });
        Ok(Outcome::Reserved(Reservation {
            reservation_id: id,
            node: leaf,
            currency: r.currency.clone(),
            amount: allow,
            expires_at_ms: expires_at,
            plan,
            headroom: self.headroom(leaf, &r.currency),
        }))
    }

    /// An expired hold still remembered for late settles: for the request retention (+ the
    /// 60 s clock skew allowance, as for request ids) after the tick that expired it.
    pub fn expired_hold(&self, id: u64) -> Option<&MHold> {
        self.expired_holds
            .iter()
            .find(|(h, deadline)| h.id == id && self.now <= *deadline)
            .map(|(h, _)| h)
    }

    fn settle(
        &mut self,
        rid: u64,
        actual: &Actual,
        touched: &mut Vec<u64>,
        events: &mut Vec<Event>,
    ) -> R<Outcome> {
        let (hold, late) = match self.holds.iter().find(|h| h.id == rid) {
            Some(h) => (h.clone(), false),
            None => match self.expired_hold(rid) {
                Some(h) => (h.clone(), true),
                None => return not_found("reservation"),
            },
        };
        let (amount, tokens) = match actual {
            Actual::Amount(a) => (check_amount(*a, false, "actual")?, None),
            Actual::Tokens(t) => {
                check_text(&t.provider, "provider")?;
                check_text(&t.model, "model")?;
                (self.price(hold.node, &hold.currency, t)?, Some(t.clone()))
            }
        };
        touched.extend(self.path_ids(hold.node));
        let (s, ev) = if late {
            self.expired_holds.retain(|(h, _)| h.id != rid);
            self.book(
                hold.node,
                &hold.currency,
                amount,
                None,
                true,
                Some(rid),
                tokens,
                hold.attrs.clone(),
                None,
            )?
        } else {
            self.holds.retain(|h| h.id != rid);
            self.book(
                hold.node,
                &hold.currency,
                amount,
                Some(&hold),
                false,
                Some(rid),
                tokens,
                hold.attrs.clone(),
                None,
            )?
        };
        events.extend(ev);
        Ok(Outcome::Settled(s))
    }

    fn charge(
        &mut self,
        c: &Charge,
        touched: &mut Vec<u64>,
        events: &mut Vec<Event>,
    ) -> R<Outcome> {
        check_attrs(&c.attrs)?;
        if let Actual::Amount(a) = &c.actual {
            check_amount(*a, true, "charge")?;
        }
        if let Actual::Tokens(t) = &c.actual {
            check_text(&t.provider, "provider")?;
            check_text(&t.model, "model")?;
        }
        let leaf = self.resolve(&c.node)?;
        if self.currency(leaf, &c.currency).is_none() {
            return not_found("currency");
        }
        let (amount, tokens) = match &c.actual {
            Actual::Amount(a) => (*a as u64, None),
            Actual::Tokens(t) => {
                let cost = self.price(leaf, &c.currency, t)?;
                if cost == 0 {
                    return invalid("charge must be positive");
                }
                if cost > AMOUNT_MAX {
                    return invalid("charge too large");
                }
                (cost, Some(t.clone()))
            }
        };
        let allow = match self.evaluate(leaf, &c.currency, amount, amount, c.attrs.model.as_deref())
        {
            Ok(a) => a,
            Err(d) => return Ok(Outcome::Denied(d)),
        };
        debug_assert_eq!(allow, amount);
        touched.extend(self.path_ids(leaf));
        let funded = self.currency(leaf, &c.currency).is_some_and(|x| x.funded);
        let plan = if funded {
            Some(self.plan(leaf, &c.currency, amount))
        } else {
            None
        };
        // A charge is a reservation plus a settle: the reservation's soft-limit alerts first.
        events.extend(self.soft_alerts(leaf, &c.currency, amount));
        self.consume_rates(leaf, &c.currency, c.attrs.model.as_deref(), amount);
        let (s, ev) = self.book(
            leaf,
            &c.currency,
            amount,
            None,
            false,
            None,
            tokens,
            c.attrs.clone(),
            plan,
        )?;
        events.extend(ev);
        Ok(Outcome::Charged(s))
    }

    fn set_config(&mut self, p: &ConfigPatch) -> R<Outcome> {
        let mut cfg = self.cfg.clone();
        if let Some(d) = p.depth_max {
            if d == 0 || d > 32 {
                return invalid("depth_max");
            }
            let deepest = self
                .nodes
                .iter()
                .map(|n| self.depth(n.id))
                .max()
                .unwrap_or(0);
            if u32::from(d) < deepest {
                return precondition("depth_max below the deepest node");
            }
            cfg.depth_max = d;
        }
        // Bounds not in the rulebook (as the implementation states them).
        if let Some(r) = p.request_retention_ms {
            if !(MINUTE..=DAY).contains(&r) {
                return invalid("request_retention_ms");
            }
            cfg.retention = r;
        }
        if let Some(v) = p.hold_ttl_ms_min {
            cfg.ttl_min = v;
        }
        if let Some(v) = p.hold_ttl_ms_max {
            cfg.ttl_max = v;
        }
        if cfg.ttl_min > cfg.ttl_max || cfg.ttl_min == 0 || cfg.ttl_max > 30 * DAY {
            return invalid("ttl bounds");
        }
        if let Some(v) = p.default_root_cap_major {
            if !(1..=1_000_000_000).contains(&v) {
                return invalid("default_root_cap_major");
            }
            cfg.cap_major = v;
        }
        if cfg.retention > self.cfg.retention {
            let now = self.now;
            let raise = cfg.retention - self.cfg.retention;
            for r in self.requests.iter_mut() {
                if now <= r.applied_at + r.retention + SKEW_MS {
                    r.retention += raise;
                }
            }
            self.sent_floor = self.sent_floor.max(now.saturating_sub(self.cfg.retention));
        }
        self.cfg = cfg;
        Ok(Outcome::Done)
    }

    fn tick(&mut self, touched: &mut Vec<u64>, events: &mut Vec<Event>) -> Outcome {
        let now = self.now;
        let mut due: Vec<MHold> = self
            .holds
            .iter()
            .filter(|h| h.expires_at <= now)
            .cloned()
            .collect();
        due.sort_by_key(|h| (h.expires_at, h.id));
        let mut holds_expired = 0;
        for h in due {
            self.holds.retain(|x| x.id != h.id);
            touched.extend(self.path_ids(h.node));
            events.push(Event::Governance(GovernanceEvent::HoldExpired {
                reservation_id: h.id,
                node: h.node,
                currency: h.currency.clone(),
                amount: h.amount,
            }));
            self.release_parts(&h);
            let deadline = now + self.cfg.retention + SKEW_MS;
            self.expired_holds.push((h, deadline));
            holds_expired += 1;
        }
        let mut grants_expired = 0;
        let mut grants_renewed = 0;
        loop {
            let next = self
                .grants
                .iter()
                .filter_map(|g| Self::grant_due(g).map(|(d, k)| (d, g.id, k)))
                .filter(|(d, _, _)| *d <= now)
                .min();
            let Some((_, gid, kind)) = next else { break };
            touched.extend(self.subtree(self.grant(gid).node));
            match kind {
                0 => {
                    self.grant_mut(gid).activated = true;
                    self.pay_debts(gid, events);
                }
                1 => {
                    let g = self.grant_mut(gid);
                    let forfeited = g.remaining - g.held;
                    g.remaining = g.held;
                    g.expired = true;
                    let (gnode, cur, rem) = (g.node, g.currency.clone(), g.remaining);
                    if rem == 0 {
                        self.grant_mut(gid).dropped = true;
                    }
                    self.ledger(gnode, &cur).forfeited += forfeited;
                    events.push(Event::Governance(GovernanceEvent::GrantExpired {
                        grant_id: gid,
                        forfeited,
                    }));
                    grants_expired += 1;
                }
                _ => {
                    let g = self.grant_mut(gid);
                    let unused = g.remaining - g.held;
                    let carry = match g.rollover {
                        Rollover::None => 0,
                        Rollover::CapMultiple(n) => {
                            unused.min(u64::from(n.saturating_sub(1)) * g.amount)
                        }
                        Rollover::Percent(p) => (u128::from(unused) * u128::from(p) / 100) as u64,
                    };
                    let forfeited = unused - carry;
                    g.remaining = g.held + carry + g.amount;
                    let p = g.recur.expect("recurring");
                    let nr = g.next_renewal.expect("recurring");
                    g.next_renewal = Some(cal::end(p, nr));
                    let (gnode, cur, amount, remaining) =
                        (g.node, g.currency.clone(), g.amount, g.remaining);
                    let lg = self.ledger(gnode, &cur);
                    lg.credited += amount;
                    lg.forfeited += forfeited;
                    events.push(Event::Governance(GovernanceEvent::GrantRenewed {
                        grant_id: gid,
                        carried: carry,
                        forfeited,
                        allotment: amount,
                        remaining,
                    }));
                    grants_renewed += 1;
                    self.pay_debts(gid, events);
                }
            }
        }
        Outcome::Ticked {
            holds_expired,
            grants_expired,
            grants_renewed,
        }
    }

    // ---- views ----------------------------------------------------------------------------

    pub fn limit_views(&self, id: u64) -> Vec<LimitView> {
        self.effective_limits(id, None)
            .into_iter()
            .map(|e| {
                let spent = self.spend(&e.counter, self.now);
                let held = self.held(id, &e.limit.currency);
                let (ws, we) = self.window_bounds(&e.counter, self.now);
                LimitView {
                    role: e.role.clone(),
                    currency: e.limit.currency.clone(),
                    amount: e.limit.amount,
                    window: e.limit.window,
                    mode: e.limit.mode,
                    thresholds: e.limit.thresholds.clone(),
                    on_exhausted: e.limit.on_exhausted,
                    window_start_ms: ws,
                    window_end_ms: we,
                    spent,
                    held,
                    remaining: e.limit.amount.saturating_sub(spent + held),
                }
            })
            .collect()
    }

    pub fn grant_view(&self, g: &MGrant) -> GrantView {
        GrantView {
            id: g.id,
            node: g.node,
            currency: g.currency.clone(),
            amount: g.amount,
            remaining: g.remaining,
            held: g.held,
            priority: g.priority,
            kind: g.kind,
            effective_at_ms: g.effective_at,
            expires_at_ms: g.expires_at,
            recur: g.recur,
            rollover: g.rollover,
            next_renewal_ms: g.next_renewal,
            expired: g.expired,
        }
    }

    pub fn grants_of(&self, id: u64) -> Vec<GrantView> {
        self.grants
            .iter()
            .filter(|g| g.node == id && !g.dropped)
            .map(|g| self.grant_view(g))
            .collect()
    }

    pub fn live_grant(&self, gid: u64) -> Option<GrantView> {
        self.grants
            .get((gid.checked_sub(1)?) as usize)
            .filter(|g| !g.dropped)
            .map(|g| self.grant_view(g))
    }

    pub fn node_view(&self, id: u64) -> NodeView {
        let n = self.node(id);
        let root = self.root_of(id);
        NodeView {
            id,
            path: self.path_string(id),
            parent: n.parent,
            root,
            depth: self.depth(id),
            kind: n.kind.clone(),
            status: n.status,
            tags: n.tags.clone(),
            roles: n.roles.clone(),
            children: self.children(id).len() as u32,
            holds_open: self.holds.iter().filter(|h| h.node == id).count() as u32,
            accounts: self
                .node(root)
                .currencies
                .iter()
                .map(|c| AccountView {
                    currency: c.code.clone(),
                    scale: c.scale,
                    funded: c.funded,
                    held: self.held(id, &c.code),
                    spent_total: self.spent_total(id, &c.code),
                    debt: n.debt.get(&c.code).copied().unwrap_or(0),
                })
                .collect(),
            limits: self.limit_views(id),
            rate_limits: n
                .rates
                .iter()
                .map(|r| RateLimitView {
                    key: r.key.clone(),
                    kind: r.kind.clone(),
                    amount: r.amount,
                    period_ms: r.period,
                    available: Self::rate_capacity(r, self.now),
                })
                .collect(),
            grants: self.grants_of(id),
        }
    }

    pub fn hold_view(&self, id: u64) -> Option<HoldView> {
        self.holds.iter().find(|h| h.id == id).map(|h| HoldView {
            reservation_id: h.id,
            node: h.node,
            currency: h.currency.clone(),
            amount: h.amount,
            created_at_ms: h.created,
            expires_at_ms: h.expires_at,
            plan: h.plan.clone(),
            attrs: h.attrs.clone(),
        })
    }

    /// I1 violations the model does not know a reason for: (node, role, currency, window).
    pub fn unexplained_i1(&self, id: u64) -> Vec<String> {
        let root = self.root_of(id);
        let restrictive = self.node(root).resolution == RoleResolution::MostRestrictive;
        let mut out = Vec::new();
        for e in self.effective_limits(id, None) {
            if e.limit.mode != LimitMode::Hard || (e.role.is_some() && !restrictive) {
                continue;
            }
            let spent = self.spend(&e.counter, self.now);
            let held = self.held(id, &e.limit.currency);
            if spent + held > e.limit.amount && !e.limit.exempt {
                out.push(format!(
                    "node {id} role {:?} {} {:?}: spent {spent} + held {held} > {}",
                    e.role, e.limit.currency, e.limit.window, e.limit.amount
                ));
            }
        }
        out
    }

    /// Clears I1 exemptions of counters that are back within bounds.
    pub fn refresh_exemptions(&mut self, id: u64) {
        let effs = self.effective_limits(id, None);
        let mut own_ok = Vec::new();
        let mut role_ok: Vec<(String, Window, bool)> = Vec::new();
        for e in &effs {
            let ok = self.spend(&e.counter, self.now) + self.held(id, &e.limit.currency)
                <= e.limit.amount;
            if e.role.is_none() {
                own_ok.push((e.limit.currency.clone(), e.limit.window, ok));
            } else {
                match role_ok
                    .iter_mut()
                    .find(|x| x.0 == e.limit.currency && x.1 == e.limit.window)
                {
                    Some(x) => x.2 &= ok,
                    None => role_ok.push((e.limit.currency.clone(), e.limit.window, ok)),
                }
            }
        }
        let n = self.node_mut(id);
        for (cur, w, ok) in own_ok {
            if ok {
                if let Some(l) = n
                    .limits
                    .iter_mut()
                    .find(|l| l.currency == cur && l.window == w)
                {
                    l.exempt = false;
                }
            }
        }
        for (cur, w, ok) in role_ok {
            if ok {
                if let Some(c) = n
                    .role_counters
                    .iter_mut()
                    .find(|c| c.currency == cur && c.window == w)
                {
                    c.exempt = false;
                }
            }
        }
    }
}
