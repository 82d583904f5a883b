//! Administrative commands: the tree, limits, rate limits, roles and prices.
//! Each validates everything first and mutates only after, so an error changes nothing.

use crate::command::{
    CreateNode, LimitMode, LimitSpec, NodeRef, OnExhausted, PriceSpec, RateKind, RateLimitSpec,
    RoleResolution, RootSpec, Window,
};
use crate::error::{Error, Result};
use crate::event::{Event, GovernanceEvent};
use crate::hash::fingerprint64;
use crate::outcome::{NodeStatus, Outcome};
use crate::state::{
    covered_sub, limits, Account, Ctx, Currency, Limit, LimitRule, Node, PathIds, Price, RateLimit,
    RateUnit, Role, RoleCounter, Root, State, Thresholds, Touched,
};
use crate::time::Period;
use crate::validate;
use crate::window::Counter;

impl State {
    pub(crate) fn create_node(&mut self, ctx: &mut Ctx, create: CreateNode) -> Result<Outcome> {
        validate::name(&create.name)?;
        validate::text("kind", &create.kind, 32)?;
        validate::tags(&create.tags, limits::TAGS_PER_NODE_MAX)?;
        if self.nodes.len() as u64 >= limits::NODES_MAX {
            return Err(Error::exhausted(format!(
                "the cluster holds the maximum of {} nodes",
                limits::NODES_MAX
            )));
        }
        let parent = match (&create.parent, &create.root) {
            (None, Some(_)) => 0,
            (None, None) => return Err(Error::invalid("a root node needs its currencies")),
            (Some(_), Some(_)) => {
                return Err(Error::invalid("only a root node declares currencies"))
            }
            (Some(parent), None) => self.resolve(parent)?,
        };
        let name_key = self.free_name(parent, &create.name)?;
        let id = self.nodes.len() as u64 + 1;
        let (root_id, depth, new_root) = match create.root {
            Some(spec) => (id, 1, Some(self.new_root(spec)?)),
            None => {
                let (root_id, depth) = self.check_parent(parent)?;
                (root_id, depth, None)
            }
        };
        let currencies = match &new_root {
            Some((root, _)) => root.currencies.len(),
            None => self.roots[&root_id].currencies.len(),
        };
        let kind = self.intern_kind(&create.kind)?;
        let mut node = Node {
            parent,
            root: root_id,
            depth,
            status: NodeStatus::Active,
            kind,
            name: create.name.into_boxed_str(),
            children: Vec::new(),
            accounts: vec![Account::default(); currencies],
            limits: Vec::new(),
            extra: None,
            holds_open: 0,
        };
        if !create.tags.is_empty() {
            node.extra_mut().tags = create.tags;
        }
        if let Some((root, caps)) = new_root {
            node.limits = caps;
            self.roots.insert(id, root);
        }
        self.nodes.push(node);
        self.enter_depth(depth);
        self.names.insert(name_key, id);
        if parent != 0 {
            self.node_mut(parent).children.push(id);
        }
        ctx.touched = Touched::Node(id);
        Ok(Outcome::NodeCreated { node_id: id })
    }

    /// The name index key of `name` under `parent`, if no sibling has the name (or its
    /// fingerprint).
    fn free_name(&self, parent: u64, name: &str) -> Result<(u64, u64)> {
        let name_key = (parent, fingerprint64(name.as_bytes()));
        if self.child(parent, name).is_some() {
            return Err(Error::exists(format!("{name:?} already exists there")));
        }
        if self.names.contains_key(&name_key) {
            return Err(Error::exists(format!(
                "name {name:?} collides with a sibling's; choose another"
            )));
        }
        Ok(name_key)
    }

    /// The root and depth of a new child of `parent`, if the parent takes one more child.
    fn check_parent(&self, parent: u64) -> Result<(u64, u8)> {
        let p = self.node(parent);
        if p.status == NodeStatus::Closed {
            return Err(Error::precondition("the parent is closed"));
        }
        if p.depth >= self.config.depth_max {
            return Err(Error::invalid(format!(
                "the tree may be at most {} levels deep",
                self.config.depth_max
            )));
        }
        if p.children.len() >= limits::CHILDREN_PER_NODE_MAX {
            return Err(Error::exhausted(
                "the parent has the maximum number of children",
            ));
        }
        Ok((p.root, p.depth + 1))
    }

    /// A new root and its default monthly caps (spend governance is opt-out).
    fn new_root(&self, spec: RootSpec) -> Result<(Root, Vec<Limit>)> {
        let currencies = validate::currencies(spec.currencies)?;
        let caps = if spec.no_default_cap {
            Vec::new()
        } else {
            self.default_caps(&currencies)?
        };
        let root = Root {
            currencies,
            roles: Vec::new(),
            resolution: RoleResolution::MostRestrictive,
            prices: Default::default(),
        };
        Ok((root, caps))
    }

    /// A hard monthly cap of `default_root_cap_major` major units in each currency, if that
    /// amount fits at the currency's scale.
    fn default_caps(&self, currencies: &[Currency]) -> Result<Vec<Limit>> {
        let mut caps = Vec::new();
        for (index, c) in currencies.iter().enumerate() {
            let amount = 10u64
                .checked_pow(u32::from(c.scale))
                .and_then(|unit| unit.checked_mul(self.config.default_root_cap_major))
                .filter(|amount| *amount <= limits::AMOUNT_MAX)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "the default cap of {} {} does not fit at scale {}: opt out and set a limit",
                        self.config.default_root_cap_major, c.code, c.scale
                    ))
                })?;
            let rule = LimitRule {
                currency: index as u8,
                amount,
                window: Window::Calendar(Period::Month),
                mode: LimitMode::Hard,
                thresholds: Thresholds::DEFAULT,
                on_exhausted: OnExhausted::Deny,
            };
            caps.push(Limit {
                rule,
                counter: Counter::fresh(),
            });
        }
        Ok(caps)
    }

    fn intern_kind(&mut self, kind: &str) -> Result<u16> {
        if let Some(index) = self.kind_index.get(kind) {
            return Ok(*index);
        }
        if self.kinds.len() >= limits::KINDS_MAX {
            return Err(Error::exhausted(format!(
                "the cluster knows the maximum of {} node kinds",
                limits::KINDS_MAX
            )));
        }
        let index = self.kinds.len() as u16;
        self.kinds.push(kind.to_owned());
        self.kind_index.insert(kind.to_owned(), index);
        Ok(index)
    }

    pub(crate) fn move_node(
        &mut self,
        ctx: &mut Ctx,
        node: &NodeRef,
        new_parent: &NodeRef,
    ) -> Result<Outcome> {
        let id = self.resolve(node)?;
        let to = self.resolve(new_parent)?;
        let Some(step) = self.check_move(id, to, ctx.now_ms)? else {
            return Ok(Outcome::Done);
        };
        // All checks passed: mutate.
        self.relink(id, to, &step);
        ctx.touched = Touched::Node(id);
        for (currency, account) in step.moved.iter().enumerate() {
            for &a in step.gaining.iter().filter(|_| account.held > 0) {
                if let Some(over) = self.hard_limit_over(a, currency as u8, ctx.now_ms) {
                    panic!(
                        "invariant `a move fits the held amount under the gaining ancestors' \
                         hard limits` broken at node {a}: {over}"
                    );
                }
            }
        }
        Ok(Outcome::Done)
    }

    /// What moving `id` under `to` changes, if the rules allow it; `None` for a move to the
    /// current parent (a no-op success).
    fn check_move(&self, id: u64, to: u64, now_ms: u64) -> Result<Option<Move>> {
        let n = self.node(id);
        if n.parent == 0 {
            return Err(Error::invalid("a root cannot move"));
        }
        if self.node(to).root != n.root {
            return Err(Error::invalid("a node cannot move to another root"));
        }
        let new_path = self.path_ids(to);
        if new_path.as_slice().contains(&id) {
            return Err(Error::invalid("the move would create a cycle"));
        }
        if n.parent == to {
            return Ok(None);
        }
        self.check_new_parent(id, to)?;
        let old_path = self.path_ids(n.parent);
        let only_in = |path: &PathIds, other: &PathIds| -> Vec<u64> {
            let other = other.as_slice();
            path.as_slice()
                .iter()
                .copied()
                .filter(|a| !other.contains(a))
                .collect()
        };
        let step = Move {
            gaining: only_in(&new_path, &old_path),
            losing: only_in(&old_path, &new_path),
            moved: n.accounts.clone(),
        };
        // Ancestors that only the new path has must absorb the moved holds.
        for (currency, account) in step.moved.iter().enumerate() {
            for &ancestor in step.gaining.iter().filter(|_| account.held > 0) {
                if let Err(denial) =
                    self.level_capacity(ancestor, currency as u8, account.held, now_ms)
                {
                    return Err(Error::precondition(format!(
                        "node {} cannot absorb the {} held by the moved subtree (rule {:?}, remaining {})",
                        denial.node, account.held, denial.rule, denial.remaining
                    )));
                }
            }
        }
        Ok(Some(step))
    }

    /// Whether `to` can take `id` as a child: open, with room for one more child, without a
    /// child of that name, and shallow enough for the moved subtree.
    fn check_new_parent(&self, id: u64, to: u64) -> Result<()> {
        let (n, target) = (self.node(id), self.node(to));
        if target.status == NodeStatus::Closed {
            return Err(Error::precondition("the new parent is closed"));
        }
        if target.children.len() >= limits::CHILDREN_PER_NODE_MAX {
            return Err(Error::exhausted(
                "the new parent has the maximum number of children",
            ));
        }
        if self.child(to, &n.name).is_some()
            || self
                .names
                .contains_key(&(to, fingerprint64(n.name.as_bytes())))
        {
            return Err(Error::exists(format!(
                "the new parent already has a child named {:?}",
                n.name
            )));
        }
        let height = self.subtree_height(id);
        if u32::from(target.depth) + 1 + height > u32::from(self.config.depth_max) {
            return Err(Error::invalid(format!(
                "the move would make the tree deeper than {} levels",
                self.config.depth_max
            )));
        }
        Ok(())
    }

    /// Moves the subtree's held amounts and debts from the ancestors it leaves to those it
    /// joins, and re-links the node under `to`, one level below it.
    fn relink(&mut self, id: u64, to: u64, step: &Move) {
        let old_parent = self.node(id).parent;
        let name_key = fingerprint64(self.node(id).name.as_bytes());
        for (currency, moved) in step.moved.iter().enumerate() {
            for &a in &step.losing {
                let acc = &mut self.node_mut(a).accounts[currency];
                acc.held = covered_sub(acc.held, moved.held, "held covers the subtree");
                acc.subtree_debt = covered_sub(
                    acc.subtree_debt,
                    moved.subtree_debt,
                    "debt covers the subtree",
                );
            }
            for &a in &step.gaining {
                let acc = &mut self.node_mut(a).accounts[currency];
                acc.held += moved.held;
                acc.subtree_debt += moved.subtree_debt;
            }
        }
        self.node_mut(old_parent).children.retain(|c| *c != id);
        self.node_mut(to).children.push(id);
        self.names.remove(&(old_parent, name_key));
        self.names.insert((to, name_key), id);
        self.node_mut(id).parent = to;
        let delta = i32::from(self.node(to).depth) + 1 - i32::from(self.node(id).depth);
        let mut moved: Vec<u8> = Vec::new();
        self.for_each_in_subtree(id, |node| {
            moved.push(node.depth);
            node.depth = (i32::from(node.depth) + delta) as u8
        });
        for depth in moved {
            self.leave_depth(depth);
            self.enter_depth((i32::from(depth) + delta) as u8);
        }
    }

    pub(crate) fn enter_depth(&mut self, depth: u8) {
        let at = usize::from(depth);
        if self.nodes_at_depth.len() <= at {
            self.nodes_at_depth.resize(at + 1, 0);
        }
        self.nodes_at_depth[at] += 1;
    }

    fn leave_depth(&mut self, depth: u8) {
        let count = &mut self.nodes_at_depth[usize::from(depth)];
        *count = covered_sub(*count, 1, "a node leaves a depth it was counted at");
    }

    /// The depth of the deepest node (0 for an empty tree).
    pub(crate) fn deepest(&self) -> u8 {
        self.nodes_at_depth
            .iter()
            .rposition(|&count| count > 0)
            .unwrap_or(0) as u8
    }

    /// Levels below `id` (0 for a leaf). Iterative: no recursion over user-shaped data.
    fn subtree_height(&self, id: u64) -> u32 {
        let base = self.node(id).depth;
        let mut deepest = base;
        let mut stack = vec![id];
        while let Some(at) = stack.pop() {
            let node = self.node(at);
            deepest = deepest.max(node.depth);
            stack.extend_from_slice(&node.children);
        }
        u32::from(deepest - base)
    }

    pub(crate) fn for_each_in_subtree(&mut self, id: u64, mut f: impl FnMut(&mut Node)) {
        let mut stack = vec![id];
        while let Some(at) = stack.pop() {
            let node = self.node_mut(at);
            f(node);
            stack.extend_from_slice(&node.children);
        }
    }

    pub(crate) fn set_status(
        &mut self,
        ctx: &mut Ctx,
        node: &NodeRef,
        status: NodeStatus,
    ) -> Result<Outcome> {
        let id = self.resolve(node)?;
        let current = self.node(id).status;
        if current == NodeStatus::Closed {
            return Err(Error::precondition("the node is closed"));
        }
        if current == status {
            return Ok(Outcome::Done);
        }
        self.node_mut(id).status = status;
        let event = match status {
            NodeStatus::Paused => Some(GovernanceEvent::Paused {
                node: id,
                by_limit: false,
            }),
            NodeStatus::Active => Some(GovernanceEvent::Resumed { node: id }),
            NodeStatus::Closed => None,
        };
        ctx.events.extend(event.map(Event::Governance));
        Ok(Outcome::Done)
    }

    pub(crate) fn set_limit(&mut self, node: &NodeRef, spec: LimitSpec) -> Result<Outcome> {
        let id = self.resolve(node)?;
        let rule = validate::limit(self.root_of(id), spec)?;
        let n = self.node(id);
        let existing = n
            .limits
            .iter()
            .position(|l| l.rule.currency == rule.currency && l.rule.window == rule.window);
        if existing.is_none() && n.limits.len() >= limits::LIMITS_PER_NODE_MAX {
            return Err(Error::exhausted(format!(
                "a node carries at most {} limits",
                limits::LIMITS_PER_NODE_MAX
            )));
        }
        let n = self.node_mut(id);
        match existing {
            Some(i) => n.limits[i].rule = rule,
            None => n.limits.push(Limit {
                rule,
                counter: Counter::fresh(),
            }),
        }
        Ok(Outcome::Done)
    }

    pub(crate) fn remove_limit(
        &mut self,
        node: &NodeRef,
        currency: &str,
        window: Window,
    ) -> Result<Outcome> {
        let id = self.resolve(node)?;
        let currency = self.root_of(id).currency(currency)?;
        let n = self.node_mut(id);
        let before = n.limits.len();
        n.limits
            .retain(|l| !(l.rule.currency == currency && l.rule.window == window));
        if n.limits.len() == before {
            return Err(Error::not_found(
                "the node has no limit on that currency and window",
            ));
        }
        Ok(Outcome::Done)
    }

    pub(crate) fn set_rate_limit(
        &mut self,
        node: &NodeRef,
        spec: RateLimitSpec,
    ) -> Result<Outcome> {
        let id = self.resolve(node)?;
        validate::text("rate limit key", &spec.key, limits::TEXT_BYTES_MAX)?;
        let amount = validate::positive_amount("rate limit amount", spec.amount)?;
        if spec.period_ms == 0 || spec.period_ms > limits::RATE_PERIOD_MS_MAX {
            return Err(Error::invalid("rate limit period must be 1 ms..=366 days"));
        }
        let unit = self.rate_unit(id, &spec.kind)?;
        let n = self.node(id);
        let rates = n.extra().map(|e| e.rates.as_slice()).unwrap_or_default();
        let existing = rates
            .iter()
            .position(|r| r.key == spec.key && r.unit == unit);
        if existing.is_none() && rates.len() >= limits::RATE_LIMITS_PER_NODE_MAX {
            return Err(Error::exhausted(format!(
                "a node carries at most {} rate limits",
                limits::RATE_LIMITS_PER_NODE_MAX
            )));
        }
        let rates = &mut self.node_mut(id).extra_mut().rates;
        // A changed rate starts with a full bucket: its old arrival time is in other units.
        let rate = RateLimit {
            key: spec.key,
            unit,
            amount,
            period_ms: spec.period_ms,
            tat: 0,
        };
        match existing {
            Some(i) => rates[i] = rate,
            None => rates.push(rate),
        }
        Ok(Outcome::Done)
    }

    fn rate_unit(&self, id: u64, kind: &RateKind) -> Result<RateUnit> {
        Ok(match kind {
            RateKind::Requests => RateUnit::Requests,
            RateKind::Cost { currency } => RateUnit::Cost(self.root_of(id).currency(currency)?),
        })
    }

    pub(crate) fn remove_rate_limit(
        &mut self,
        node: &NodeRef,
        key: &str,
        kind: &RateKind,
    ) -> Result<Outcome> {
        let id = self.resolve(node)?;
        let unit = self.rate_unit(id, kind)?;
        let found = self
            .node(id)
            .extra()
            .is_some_and(|e| e.rates.iter().any(|r| r.key == key && r.unit == unit));
        if !found {
            return Err(Error::not_found("the node has no such rate limit"));
        }
        self.node_mut(id)
            .extra_mut()
            .rates
            .retain(|r| !(r.key == key && r.unit == unit));
        Ok(Outcome::Done)
    }

    fn root_id(&self, root: &NodeRef) -> Result<u64> {
        let id = self.resolve(root)?;
        if self.node(id).parent != 0 {
            return Err(Error::invalid(
                "roles, prices and role resolution belong to a root node",
            ));
        }
        Ok(id)
    }

    pub(crate) fn define_role(
        &mut self,
        root: &NodeRef,
        name: String,
        specs: Vec<LimitSpec>,
    ) -> Result<Outcome> {
        let root_id = self.root_id(root)?;
        validate::name(&name)?;
        if specs.len() > limits::LIMITS_PER_ROLE_MAX {
            return Err(Error::invalid(format!(
                "a role has at most {} limits",
                limits::LIMITS_PER_ROLE_MAX
            )));
        }
        let r = &self.roots[&root_id];
        let mut rules: Vec<LimitRule> = Vec::with_capacity(specs.len());
        for spec in specs {
            let rule = validate::limit(r, spec)?;
            if rules
                .iter()
                .any(|x| x.currency == rule.currency && x.window == rule.window)
            {
                return Err(Error::invalid(
                    "a role has one limit per currency and window",
                ));
            }
            rules.push(rule);
        }
        let existing = r.roles.iter().position(|x| x.name == name);
        if existing.is_none() && r.roles.len() >= limits::ROLES_PER_ROOT_MAX {
            return Err(Error::exhausted(format!(
                "a root defines at most {} roles",
                limits::ROLES_PER_ROOT_MAX
            )));
        }
        // Only the role's holders count against it; a new role has none yet.
        let holders: Vec<u64> = self
            .role_holders
            .get(&(root_id, name.clone()))
            .map(|nodes| nodes.iter().copied().collect())
            .unwrap_or_default();
        let roles = &mut self.root_mut(root_id).roles;
        let role = Role {
            name,
            limits: rules,
        };
        match existing {
            Some(i) => roles[i] = role,
            None => roles.push(role),
        }
        for id in holders {
            self.reconcile_role_counters(id);
        }
        Ok(Outcome::Done)
    }

    pub(crate) fn remove_role(&mut self, root: &NodeRef, name: &str) -> Result<Outcome> {
        let root_id = self.root_id(root)?;
        if !self.roots[&root_id].roles.iter().any(|r| r.name == name) {
            return Err(Error::not_found(format!("role {name:?} is not defined")));
        }
        if self.role_holders.contains_key(&(root_id, name.to_owned())) {
            return Err(Error::precondition(format!(
                "role {name:?} is still assigned to members"
            )));
        }
        self.root_mut(root_id).roles.retain(|r| r.name != name);
        Ok(Outcome::Done)
    }

    pub(crate) fn assign_roles(&mut self, node: &NodeRef, roles: Vec<String>) -> Result<Outcome> {
        let id = self.resolve(node)?;
        if roles.len() > limits::ROLES_PER_NODE_MAX {
            return Err(Error::invalid(format!(
                "a node holds at most {} roles",
                limits::ROLES_PER_NODE_MAX
            )));
        }
        let root = self.root_of(id);
        for (i, role) in roles.iter().enumerate() {
            if !root.roles.iter().any(|r| &r.name == role) {
                return Err(Error::not_found(format!("role {role:?} is not defined")));
            }
            if roles[..i].contains(role) {
                return Err(Error::invalid(format!("role {role:?} is given twice")));
            }
        }
        let old = std::mem::replace(&mut self.node_mut(id).extra_mut().roles, roles.clone());
        let root = self.node(id).root;
        for role in old {
            let key = (root, role);
            if let Some(holders) = self.role_holders.get_mut(&key) {
                holders.remove(&id);
                if holders.is_empty() {
                    self.role_holders.remove(&key);
                }
            }
        }
        for role in roles {
            self.role_holders
                .entry((root, role))
                .or_default()
                .insert(id);
        }
        self.reconcile_role_counters(id);
        Ok(Outcome::Done)
    }

    /// Keeps exactly one counter per `(currency, window)` that the node's roles use: existing
    /// ones keep counting, new ones start empty, unused ones are dropped.
    pub(crate) fn reconcile_role_counters(&mut self, id: u64) {
        let root = self.root_of(id);
        let mut wanted: Vec<(u8, Window)> = Vec::new();
        if let Some(extra) = self.node(id).extra() {
            for role in &extra.roles {
                let Some(role) = root.roles.iter().find(|r| &r.name == role) else {
                    continue;
                };
                for rule in &role.limits {
                    if !wanted.contains(&(rule.currency, rule.window)) {
                        wanted.push((rule.currency, rule.window));
                    }
                }
            }
        }
        if wanted.is_empty()
            && self
                .node(id)
                .extra()
                .is_none_or(|e| e.role_counters.is_empty())
        {
            return;
        }
        let counters = &mut self.node_mut(id).extra_mut().role_counters;
        counters.retain(|c| wanted.contains(&(c.currency, c.window)));
        for (currency, window) in wanted {
            if !counters
                .iter()
                .any(|c| c.currency == currency && c.window == window)
            {
                counters.push(RoleCounter {
                    currency,
                    window,
                    counter: Counter::fresh(),
                });
            }
        }
    }

    pub(crate) fn set_role_resolution(
        &mut self,
        root: &NodeRef,
        resolution: RoleResolution,
    ) -> Result<Outcome> {
        let root_id = self.root_id(root)?;
        self.root_mut(root_id).resolution = resolution;
        Ok(Outcome::Done)
    }

    pub(crate) fn set_price(&mut self, root: &NodeRef, spec: PriceSpec) -> Result<Outcome> {
        let root_id = self.root_id(root)?;
        validate::text("provider", &spec.provider, limits::TEXT_BYTES_MAX)?;
        validate::text("model", &spec.model, limits::TEXT_BYTES_MAX)?;
        let r = &self.roots[&root_id];
        let currency = r.currency(&spec.currency)?;
        let price = Price {
            input: validate::amount("input price", spec.input_per_mtok)?,
            output: validate::amount("output price", spec.output_per_mtok)?,
            cached_input: validate::amount("cached input price", spec.cached_input_per_mtok)?,
            reasoning: validate::amount("reasoning price", spec.reasoning_per_mtok)?,
        };
        let key = (spec.provider, spec.model, currency);
        if !r.prices.contains_key(&key) && r.prices.len() >= limits::PRICES_PER_ROOT_MAX {
            return Err(Error::exhausted(format!(
                "a price book holds at most {} entries",
                limits::PRICES_PER_ROOT_MAX
            )));
        }
        self.root_mut(root_id).prices.insert(key, price);
        Ok(Outcome::Done)
    }

    pub(crate) fn remove_price(
        &mut self,
        root: &NodeRef,
        provider: &str,
        model: &str,
        currency: &str,
    ) -> Result<Outcome> {
        let root_id = self.root_id(root)?;
        let currency = self.roots[&root_id].currency(currency)?;
        let removed = self.root_mut(root_id).prices.remove(&(
            provider.to_owned(),
            model.to_owned(),
            currency,
        ));
        removed
            .map(|_| Outcome::Done)
            .ok_or_else(|| Error::not_found("no such price"))
    }
}

/// What a move changes: the ancestors that gain the moved subtree, those that lose it, and
/// the subtree's balances (the moved node's accounts, one per currency).
struct Move {
    gaining: Vec<u64>,
    losing: Vec<u64>,
    moved: Vec<Account>,
}
