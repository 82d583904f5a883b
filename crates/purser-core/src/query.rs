//! Read-only queries. They read the state at its own clock, or at a later time given by the
//! caller (a leader answering a read passes its current timestamp).

use crate::command::RateKind;
use crate::error::{Error, Result};
use crate::outcome::{
    AccountView, Denial, GrantView, HoldView, LimitView, NodeView, RateLimitView,
};
use crate::state::{Grant, Hold, LimitRule, Node, RateUnit, State};
use crate::window::Counter;

/// Holds one `holds_of` query lists at most.
pub const HOLDS_LISTED_MAX: usize = 10_000;

impl State {
    /// `root/child/.../leaf` of a node.
    pub fn path_of(&self, id: u64) -> Result<String> {
        self.check_id(id)?;
        let path = self.path_ids(id);
        let names: Vec<&str> = path
            .as_slice()
            .iter()
            .rev()
            .map(|&i| &*self.node(i).name)
            .collect();
        Ok(names.join("/"))
    }

    fn check_id(&self, id: u64) -> Result<()> {
        if id == 0 || id > self.nodes.len() as u64 {
            return Err(Error::not_found(format!("node {id} does not exist")));
        }
        Ok(())
    }

    pub fn node_count(&self) -> u64 {
        self.nodes.len() as u64
    }

    pub fn open_holds(&self) -> u64 {
        self.holds.len() as u64
    }

    /// Request ids held for deduplication: the live ones and the dead ones still waiting to be
    /// dropped (a few per apply; see `dedup.rs`). What their memory is spent on.
    pub fn remembered_requests(&self) -> u64 {
        self.dedup.held() as u64
    }

    /// Everything `show` prints about a node, evaluated at `at_ms` (at least the state's clock).
    pub fn node_view(&self, id: u64, at_ms: u64) -> Result<NodeView> {
        self.check_id(id)?;
        let now = at_ms.max(self.now_ms);
        let node = self.node(id);
        let root = &self.roots[&node.root];
        let accounts = node
            .accounts
            .iter()
            .zip(&root.currencies)
            .map(|(a, c)| AccountView {
                currency: c.code.clone(),
                scale: c.scale,
                funded: c.funded,
                held: a.held,
                spent_total: a.spent_total,
                debt: a.debt,
            })
            .collect();
        let rate_limits = node
            .extra()
            .map(|e| e.rates.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|r| RateLimitView {
                key: r.key.clone(),
                kind: match r.unit {
                    RateUnit::Requests => RateKind::Requests,
                    RateUnit::Cost(c) => RateKind::Cost {
                        currency: root.currencies[c as usize].code.clone(),
                    },
                },
                amount: r.amount,
                period_ms: r.period_ms,
                available: crate::budget::gcra_capacity(r, now),
            })
            .collect();
        Ok(NodeView {
            id,
            path: self.path_of(id)?,
            parent: (node.parent != 0).then_some(node.parent),
            root: node.root,
            depth: u32::from(node.depth),
            kind: self.kinds[usize::from(node.kind)].clone(),
            status: node.status,
            tags: node.extra().map(|e| e.tags.clone()).unwrap_or_default(),
            roles: node.extra().map(|e| e.roles.clone()).unwrap_or_default(),
            children: node.children.len() as u32,
            holds_open: node.holds_open,
            accounts,
            limits: self.usage(id, now)?,
            rate_limits,
            grants: self.grants_of(id)?,
        })
    }

    /// Every limit of a node (own, then through roles) with its window's spend and holds.
    pub fn usage(&self, id: u64, at_ms: u64) -> Result<Vec<LimitView>> {
        self.check_id(id)?;
        let now = at_ms.max(self.now_ms);
        let node = self.node(id);
        let mut views: Vec<LimitView> = node
            .limits
            .iter()
            .map(|l| self.limit_view(node, None, &l.rule, &l.counter, now))
            .collect();
        for currency in 0..node.accounts.len() as u8 {
            for (role, rule) in self.role_rules(node, currency) {
                let counter = crate::budget::role_counter(node, currency, rule.window);
                views.push(self.limit_view(node, Some(role), rule, counter, now));
            }
        }
        Ok(views)
    }

    fn limit_view(
        &self,
        node: &Node,
        role: Option<&str>,
        rule: &LimitRule,
        counter: &Counter,
        now: u64,
    ) -> LimitView {
        let spent = counter.spent_at(rule.window, now);
        let held = node.accounts[rule.currency as usize].held;
        let (start, end) = counter.bounds(rule.window, now);
        LimitView {
            role: role.map(str::to_owned),
            currency: self.currency_code(node.root, rule.currency).to_owned(),
            amount: rule.amount,
            window: rule.window,
            mode: rule.mode,
            thresholds: rule.thresholds.iter().collect(),
            on_exhausted: rule.on_exhausted,
            window_start_ms: start,
            window_end_ms: end,
            spent,
            held,
            remaining: rule.amount.saturating_sub(spent.saturating_add(held)),
        }
    }

    /// Grants owned by a node, by id.
    pub fn grants_of(&self, id: u64) -> Result<Vec<GrantView>> {
        self.check_id(id)?;
        let ids = self
            .node(id)
            .extra()
            .map(|e| e.grants.clone())
            .unwrap_or_default();
        let mut views: Vec<GrantView> = ids
            .iter()
            .map(|g| self.grant_view(&self.grants[g]))
            .collect();
        views.sort_unstable_by_key(|g| g.id);
        Ok(views)
    }

    pub fn grant(&self, grant_id: u64) -> Option<GrantView> {
        self.grants.get(&grant_id).map(|g| self.grant_view(g))
    }

    fn grant_view(&self, g: &Grant) -> GrantView {
        GrantView {
            id: g.id,
            node: g.node,
            currency: self
                .currency_code(self.node(g.node).root, g.currency)
                .to_owned(),
            amount: g.amount,
            remaining: g.remaining,
            held: g.held,
            priority: g.priority,
            kind: g.kind,
            effective_at_ms: g.effective_at_ms,
            expires_at_ms: g.expires_at_ms,
            recur: g.recur,
            rollover: g.rollover,
            next_renewal_ms: g.next_renewal_ms,
            expired: g.expired,
        }
    }

    pub fn hold(&self, reservation_id: u64) -> Option<HoldView> {
        self.holds.get(&reservation_id).map(|h| self.hold_view(h))
    }

    /// Open holds placed directly on a node, oldest first, at most `HOLDS_LISTED_MAX` (the
    /// node's `holds_open` says how many there are), from the index of holds by node: the
    /// cost follows the holds listed, not every open hold.
    pub fn holds_of(&self, id: u64) -> Result<Vec<HoldView>> {
        self.check_id(id)?;
        Ok(self
            .holds_by_node
            .range((id, 0)..=(id, u64::MAX))
            .take(HOLDS_LISTED_MAX)
            .map(|(_, hold)| self.hold_view(&self.holds[hold]))
            .collect())
    }

    fn hold_view(&self, h: &Hold) -> HoldView {
        HoldView {
            reservation_id: h.id,
            node: h.node,
            currency: self
                .currency_code(self.node(h.node).root, h.currency)
                .to_owned(),
            amount: h.amount,
            created_at_ms: h.created_at_ms,
            expires_at_ms: h.expires_at_ms,
            plan: self.funding_parts(&h.plan),
            attrs: h.attrs.clone(),
        }
    }

    /// The denial that applying `command` at `at_ms` would answer, when that is certain from
    /// this state alone: a first-time `Reserve` (not a retry of a remembered request) that
    /// passes every check and that the evaluation denies. Such an apply changes nothing but
    /// the clock, so a leader that has confirmed it holds every committed write can answer
    /// the denial without a log entry. `None` means "apply it" (a grant, an error, a retry).
    pub fn fast_denial(&self, at_ms: u64, command: &crate::command::Command) -> Option<Denial> {
        let (Some(meta), crate::command::Op::Reserve(reserve)) = (&command.request, &command.op)
        else {
            return None;
        };
        let now = at_ms.max(self.now_ms);
        let key = self
            .check_request(now, command.actor, &meta.id, meta.sent_at_ms)
            .ok()?;
        if self.is_remembered(key, now) || self.remembered_full() {
            return None;
        }
        let (leaf, currency, range) = self.check_reserve(reserve).ok()?;
        self.evaluate(now, leaf, currency, range, reserve.attrs.model.as_deref())
            .err()
    }
}
