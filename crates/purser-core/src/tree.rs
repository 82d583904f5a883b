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
    limits, Account, Ctx, Currency, Limit, LimitRule, Node, Price, RateLimit, RateUnit, Role,
    RoleCounter, Root, State, Thresholds,
};
use crate::time::Period;
use crate::validate;
use crate::window::Counter;

impl State {
    pub(crate) fn create_node(&mut self, create: CreateNode) -> Result<Outcome> {
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
        let name_key = (parent, fingerprint64(create.name.as_bytes()));
        if self.child(parent, &create.name).is_some() {
            return Err(Error::exists(format!(
                "{:?} already exists there",
                create.name
            )));
        }
        if self.names.contains_key(&name_key) {
            return Err(Error::exists(format!(
                "name {:?} collides with a sibling's; choose another",
                create.name
            )));
        }
        let id = self.nodes.len() as u64 + 1;
        let (root_id, depth, new_root) = match create.root {
            Some(spec) => (id, 1, Some(self.new_root(spec)?)),
            None => {
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
                (p.root, p.depth + 1, None)
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
        self.names.insert(name_key, id);
        if parent != 0 {
            self.node_mut(parent).children.push(id);
        }
        Ok(Outcome::NodeCreated { node_id: id })
    }

    /// A new root and its default monthly caps (spend governance is opt-out).
    fn new_root(&self, spec: RootSpec) -> Result<(Root, Vec<Limit>)> {
        if spec.currencies.is_empty() || spec.currencies.len() > limits::CURRENCIES_PER_ROOT_MAX {
            return Err(Error::invalid(format!(
                "a root declares 1..={} currencies",
                limits::CURRENCIES_PER_ROOT_MAX
            )));
        }
        let mut currencies: Vec<Currency> = Vec::new();
        for c in spec.currencies {
            let code = c.code.as_bytes();
            let ok = !code.is_empty()
                && code.len() <= 16
                && code[0].is_ascii_lowercase()
                && code
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
            if !ok {
                return Err(Error::invalid(format!(
                    "currency code {:?} must match [a-z][a-z0-9_]{{0,15}}",
                    c.code
                )));
            }
            if c.scale > limits::CURRENCY_SCALE_MAX {
                return Err(Error::invalid(format!(
                    "currency scale must be 0..={}",
                    limits::CURRENCY_SCALE_MAX
                )));
            }
            if currencies.iter().any(|x| x.code == c.code) {
                return Err(Error::invalid(format!(
                    "currency {:?} is declared twice",
                    c.code
                )));
            }
            currencies.push(Currency {
                code: c.code,
                scale: c.scale,
                funded: c.funded,
            });
        }
        let mut caps = Vec::new();
        if !spec.no_default_cap {
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
        }
        let root = Root {
            currencies,
            roles: Vec::new(),
            resolution: RoleResolution::MostRestrictive,
            prices: Default::default(),
        };
        Ok((root, caps))
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
        ctx: &Ctx,
        node: &NodeRef,
        new_parent: &NodeRef,
    ) -> Result<Outcome> {
        let id = self.resolve(node)?;
        let to = self.resolve(new_parent)?;
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
            return Ok(Outcome::Done);
        }
        let target = self.node(to);
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
        let old_path = self.path_ids(n.parent);
        // Ancestors that only the new path has must absorb the moved holds.
        let gaining: Vec<u64> = new_path
            .as_slice()
            .iter()
            .copied()
            .filter(|a| !old_path.as_slice().contains(a))
            .collect();
        let losing: Vec<u64> = old_path
            .as_slice()
            .iter()
            .copied()
            .filter(|a| !new_path.as_slice().contains(a))
            .collect();
        let moved: Vec<Account> = n.accounts.clone();
        for (currency, account) in moved.iter().enumerate() {
            if account.held == 0 {
                continue;
            }
            for &ancestor in &gaining {
                if let Err(denial) =
                    self.level_capacity(ancestor, currency as u8, account.held, ctx.now_ms)
                {
                    return Err(Error::precondition(format!(
                        "node {} cannot absorb the {} held by the moved subtree (rule {:?}, remaining {})",
                        denial.node, account.held, denial.rule, denial.remaining
                    )));
                }
            }
        }
        // All checks passed: mutate.
        let old_parent = n.parent;
        let name_key = fingerprint64(n.name.as_bytes());
        for (currency, account) in moved.iter().enumerate() {
            for &a in &losing {
                let acc = &mut self.node_mut(a).accounts[currency];
                acc.held -= account.held;
                acc.subtree_debt -= account.subtree_debt;
            }
            for &a in &gaining {
                let acc = &mut self.node_mut(a).accounts[currency];
                acc.held += account.held;
                acc.subtree_debt += account.subtree_debt;
            }
        }
        self.node_mut(old_parent).children.retain(|c| *c != id);
        self.node_mut(to).children.push(id);
        self.names.remove(&(old_parent, name_key));
        self.names.insert((to, name_key), id);
        self.node_mut(id).parent = to;
        let delta = i32::from(self.node(to).depth) + 1 - i32::from(self.node(id).depth);
        self.for_each_in_subtree(id, |node| {
            node.depth = (i32::from(node.depth) + delta) as u8
        });
        Ok(Outcome::Done)
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
        let roles = &mut self.roots.get_mut(&root_id).expect("root exists").roles;
        let role = Role {
            name,
            limits: rules,
        };
        match existing {
            Some(i) => roles[i] = role,
            None => roles.push(role),
        }
        self.reconcile_role_counters_of_root(root_id);
        Ok(Outcome::Done)
    }

    pub(crate) fn remove_role(&mut self, root: &NodeRef, name: &str) -> Result<Outcome> {
        let root_id = self.root_id(root)?;
        if !self.roots[&root_id].roles.iter().any(|r| r.name == name) {
            return Err(Error::not_found(format!("role {name:?} is not defined")));
        }
        let assigned = self.nodes.iter().any(|n| {
            n.root == root_id && n.extra().is_some_and(|e| e.roles.iter().any(|r| r == name))
        });
        if assigned {
            return Err(Error::precondition(format!(
                "role {name:?} is still assigned to members"
            )));
        }
        self.roots
            .get_mut(&root_id)
            .expect("root exists")
            .roles
            .retain(|r| r.name != name);
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
        self.node_mut(id).extra_mut().roles = roles;
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

    fn reconcile_role_counters_of_root(&mut self, root_id: u64) {
        let members: Vec<u64> = (1..=self.nodes.len() as u64)
            .filter(|id| {
                let n = self.node(*id);
                n.root == root_id && n.extra().is_some_and(|e| !e.roles.is_empty())
            })
            .collect();
        for id in members {
            self.reconcile_role_counters(id);
        }
    }

    pub(crate) fn set_role_resolution(
        &mut self,
        root: &NodeRef,
        resolution: RoleResolution,
    ) -> Result<Outcome> {
        let root_id = self.root_id(root)?;
        self.roots
            .get_mut(&root_id)
            .expect("root exists")
            .resolution = resolution;
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
        self.roots
            .get_mut(&root_id)
            .expect("root exists")
            .prices
            .insert(key, price);
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
        let removed = self
            .roots
            .get_mut(&root_id)
            .expect("root exists")
            .prices
            .remove(&(provider.to_owned(), model.to_owned(), currency));
        removed
            .map(|_| Outcome::Done)
            .ok_or_else(|| Error::not_found("no such price"))
    }
}
