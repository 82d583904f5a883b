//! The decision and the hold: reserve, settle, release, charge.
//!
//! Evaluation is one read-only pass, in the order of the SPEC, leaf to root at each step:
//! node status → rate limits → caps (every window, own and role limits) → funding waterfall.
//! Only when every level passes does anything change, so a denial changes nothing.

use crate::command::{
    Actual, Amount, Attributes, Charge, LimitMode, OnExhausted, Reserve, RoleResolution,
    TokenUsage, Window,
};
use crate::error::{Error, Result};
use crate::event::{
    BalanceEvent, Event, GovernanceEvent, GrantBalance, MonetizationEvent, UsageEvent,
    WindowBalance,
};
use crate::outcome::{
    Denial, DenyRule, FundingPart, Headroom, NodeStatus, Outcome, Reservation, Settlement,
};
use crate::state::{
    covered_sub, limits, Ctx, Expired, Hold, LimitRule, Node, RateLimit, RateUnit, Role, State,
    Touched,
};
use crate::validate;
use crate::window::Counter;

/// What a passing evaluation decided.
pub(crate) struct Decision {
    pub amount: u64,
    /// `(grant id, amount)` in waterfall order; empty for a capped currency.
    pub plan: Vec<(u64, u64)>,
}

impl State {
    /// Read-only: would a reservation of `min..=max` at `leaf` pass now, and for how much?
    pub(crate) fn evaluate(
        &self,
        now_ms: u64,
        leaf: u64,
        currency: u8,
        (min, max): (u64, u64),
        model: Option<&str>,
    ) -> std::result::Result<Decision, Denial> {
        let path = self.path_ids(leaf);
        self.check_status(path.as_slice(), min)?;
        let mut allow =
            max.min(self.rate_capacity(path.as_slice(), currency, model, min, now_ms)?);
        for &id in path.as_slice() {
            if self.caps_enforced(id) {
                allow = allow.min(self.level_capacity(id, currency, min, now_ms)?);
            }
        }
        let mut plan = Vec::new();
        if self.root_of(leaf).currencies[currency as usize].funded {
            (allow, plan) = self.funding_plan(now_ms, leaf, currency, min, allow)?;
        }
        assert!(
            min <= allow && allow <= max,
            "invariant `granted within min..=max` broken: {allow} for {min}..={max}"
        );
        Ok(Decision {
            amount: allow,
            plan,
        })
    }

    /// Whether the hard caps of `id` are checked: always, unless the planted bug that skips
    /// the root's is armed (then apply's postconditions skip it too, and the checkers see it).
    #[cfg(feature = "planted-bugs")]
    pub(crate) fn caps_enforced(&self, id: u64) -> bool {
        !(crate::planted::skip_root_cap() && self.node(id).parent == 0)
    }

    #[cfg(not(feature = "planted-bugs"))]
    pub(crate) fn caps_enforced(&self, _id: u64) -> bool {
        true
    }

    /// The first node on the path, from the leaf, that is not active denies.
    fn check_status(&self, path: &[u64], min: u64) -> std::result::Result<(), Denial> {
        for &id in path {
            let rule = match self.node(id).status {
                NodeStatus::Active => continue,
                NodeStatus::Paused => DenyRule::NodePaused,
                NodeStatus::Closed => DenyRule::NodeClosed,
            };
            return Err(Denial {
                node: id,
                rule,
                window: None,
                remaining: 0,
                requested: min,
                retry_after_ms: None,
            });
        }
        Ok(())
    }

    /// What the cost-rate limits on the path let through (`u64::MAX` when none applies), or
    /// the first rate limit, leaf to root, without room for `min` (one request for a
    /// request-rate limit).
    fn rate_capacity(
        &self,
        path: &[u64],
        currency: u8,
        model: Option<&str>,
        min: u64,
        now_ms: u64,
    ) -> std::result::Result<u64, Denial> {
        let mut allow = u64::MAX;
        for &id in path {
            for rate in self.matching_rates(id, currency, model) {
                let cost = if rate.unit == RateUnit::Requests {
                    1
                } else {
                    min
                };
                let capacity = gcra_capacity(rate, now_ms);
                if capacity < cost {
                    return Err(Denial {
                        node: id,
                        rule: DenyRule::RateLimit {
                            key: rate.key.clone(),
                        },
                        window: None,
                        remaining: capacity,
                        requested: min,
                        retry_after_ms: gcra_retry_after(rate, now_ms, cost),
                    });
                }
                if rate.unit != RateUnit::Requests {
                    allow = allow.min(capacity);
                }
            }
        }
        Ok(allow)
    }

    /// The waterfall's plan for `allow` at most (and `min` at least): the amount it covers and
    /// `(grant, part)` in waterfall order, or a funding denial.
    fn funding_plan(
        &self,
        now_ms: u64,
        leaf: u64,
        currency: u8,
        min: u64,
        allow: u64,
    ) -> std::result::Result<(u64, Vec<(u64, u64)>), Denial> {
        let candidates = self.waterfall(now_ms, leaf, currency);
        let available = candidates.iter().fold(0u64, |sum, g| {
            sum.saturating_add(self.grants[g].available())
        });
        if available < min {
            return Err(Denial {
                node: leaf,
                rule: DenyRule::Funding,
                window: None,
                remaining: available,
                requested: min,
                retry_after_ms: None,
            });
        }
        let amount = allow.min(available);
        let mut plan = Vec::new();
        let mut left = amount;
        for g in candidates {
            if left == 0 {
                break;
            }
            let take = self.grants[&g].available().min(left);
            plan.push((g, take));
            left -= take;
        }
        assert!(
            left == 0,
            "invariant `a plan covers its amount` broken: {left} of {amount} unplanned"
        );
        Ok((amount, plan))
    }

    pub(crate) fn matching_rates<'a>(
        &'a self,
        id: u64,
        currency: u8,
        model: Option<&'a str>,
    ) -> impl Iterator<Item = &'a RateLimit> + 'a {
        let rates = self
            .node(id)
            .extra()
            .map(|e| e.rates.as_slice())
            .unwrap_or_default();
        rates.iter().filter(move |r| {
            (r.key == "*" || Some(r.key.as_str()) == model)
                && match r.unit {
                    RateUnit::Requests => true,
                    RateUnit::Cost(c) => c == currency,
                }
        })
    }

    /// How much more this node's hard limits (own and through roles) admit in `currency` now;
    /// `u64::MAX` when none applies. A denial when less than `need` fits.
    pub(crate) fn level_capacity(
        &self,
        id: u64,
        currency: u8,
        need: u64,
        now_ms: u64,
    ) -> std::result::Result<u64, Denial> {
        let node = self.node(id);
        let held = node.accounts[currency as usize].held;
        let level = Level {
            id,
            node,
            currency,
            held,
            need,
            now_ms,
        };
        let mut capacity = u64::MAX;
        for limit in &node.limits {
            let rule = &limit.rule;
            if rule.currency != currency || rule.mode != LimitMode::Hard {
                continue;
            }
            let room = level.room(rule, &limit.counter);
            if room < need {
                return Err(level.denial(DenyRule::Cap, rule, &limit.counter, room));
            }
            capacity = capacity.min(room);
        }
        if node.extra().is_none_or(|e| e.roles.is_empty()) {
            return Ok(capacity);
        }
        Ok(capacity.min(self.role_capacity(&level)?))
    }

    /// The room the level's roles leave under the root's resolution: every role's hard limits
    /// (`most_restrictive`), or the roomiest role's (`most_permissive`).
    fn role_capacity(&self, level: &Level) -> std::result::Result<u64, Denial> {
        let root = &self.roots[&level.node.root];
        let roles = level
            .node
            .extra()
            .map(|e| e.roles.as_slice())
            .unwrap_or_default();
        let mut capacity = u64::MAX;
        // Most permissive: the roomiest role so far, with the limit that binds it.
        let mut best: Option<(u64, &Role, Option<&LimitRule>)> = None;
        for role_name in roles {
            let Some(role) = root.roles.iter().find(|r| &r.name == role_name) else {
                continue;
            };
            let (room, binding) = level.role_room(role, root.resolution)?;
            match root.resolution {
                RoleResolution::MostRestrictive => capacity = capacity.min(room),
                RoleResolution::MostPermissive => {
                    if best.is_none_or(|(b, _, _)| room > b) {
                        best = Some((room, role, binding));
                    }
                }
            }
        }
        if let Some((room, role, binding)) = best {
            if room < level.need {
                let Some(rule) = binding else {
                    unreachable!("invariant `a role short of room has a binding limit` broken");
                };
                let counter = role_counter(level.node, level.currency, rule.window);
                return Err(level.denial(role_cap(role), rule, counter, room));
            }
            capacity = capacity.min(room);
        }
        Ok(capacity)
    }

    /// Everything a reservation is checked for before its evaluation: the one place shared by
    /// apply and the leader's denial fast path, so that both refuse the same requests.
    pub(crate) fn check_reserve(&self, reserve: &Reserve) -> Result<(u64, u8, (u64, u64))> {
        let leaf = self.resolve(&reserve.node)?;
        let currency = self.root_of(leaf).currency(&reserve.currency)?;
        let (min, max) = match reserve.amount {
            Amount::Exact(a) => {
                let a = validate::positive_amount("amount", a)?;
                (a, a)
            }
            Amount::Range { min, max } => {
                let min = validate::positive_amount("min", min)?;
                let max = validate::positive_amount("max", max)?;
                if min > max {
                    return Err(Error::invalid(format!("min {min} is above max {max}")));
                }
                (min, max)
            }
        };
        if reserve.ttl_ms < self.config.hold_ttl_ms_min
            || reserve.ttl_ms > self.config.hold_ttl_ms_max
        {
            return Err(Error::invalid(format!(
                "ttl {} ms is outside {}..={} ms",
                reserve.ttl_ms, self.config.hold_ttl_ms_min, self.config.hold_ttl_ms_max
            )));
        }
        validate_attrs(&reserve.attrs)?;
        let (total, share) = self
            .holds_caps
            .unwrap_or((limits::HOLDS_OPEN_MAX as u64, limits::HOLDS_PER_ROOT_MAX));
        let held = self.holds.len() as u64;
        if held >= total {
            return Err(Error::exhausted(format!(
                "{total} holds are open, the most the cluster keeps"
            )));
        }
        let root = self.node(leaf).root;
        let own = self.holds_per_root.get(&root).copied().unwrap_or(0);
        if !limits::within_share(own, share, held, total) {
            return Err(Error::exhausted(format!(
                "root {root} has {own} holds open, past its share of {share} while the cluster's room is low: settle or release some"
            )));
        }
        Ok((leaf, currency, (min, max)))
    }

    pub(crate) fn reserve(&mut self, ctx: &mut Ctx, reserve: Reserve) -> Result<Outcome> {
        let (leaf, currency, range) = self.check_reserve(&reserve)?;
        let model = reserve.attrs.model.as_deref();
        let decision = match self.evaluate(ctx.now_ms, leaf, currency, range, model) {
            Ok(decision) => decision,
            Err(denial) => return Ok(Outcome::Denied(denial)),
        };
        let path = self.path_ids(leaf);
        for &id in path.as_slice() {
            if self.node(id).accounts[currency as usize]
                .held
                .checked_add(decision.amount)
                .is_none()
            {
                return Err(Error::invalid("the amount overflows the held total"));
            }
        }
        // Decided: from here on, nothing fails.
        ctx.touched = Touched::Account {
            node: leaf,
            currency,
        };
        self.soft_limit_alerts(ctx, path.as_slice(), currency, decision.amount);
        Ok(Outcome::Reserved(
            self.place_hold(ctx.now_ms, leaf, currency, reserve, decision),
        ))
    }

    /// Sets the decided amount aside on every level of the path and on the planned grants,
    /// takes it from the rate limits, and files the hold.
    fn place_hold(
        &mut self,
        now: u64,
        leaf: u64,
        currency: u8,
        reserve: Reserve,
        decision: Decision,
    ) -> Reservation {
        let amount = decision.amount;
        let path = self.path_ids(leaf);
        for &id in path.as_slice() {
            self.node_mut(id).accounts[currency as usize].held += amount;
        }
        let model = reserve.attrs.model.as_deref();
        self.take_rates(path.as_slice(), currency, model, amount, now);
        self.hold_plan(&decision.plan);
        self.node_mut(leaf).holds_open += 1;
        let reservation_id = self.next_reservation_id;
        self.next_reservation_id += 1;
        let expires_at_ms = now + reserve.ttl_ms;
        let plan = self.funding_parts(&decision.plan);
        self.holds.insert(
            reservation_id,
            Hold {
                id: reservation_id,
                node: leaf,
                currency,
                amount,
                created_at_ms: now,
                expires_at_ms,
                plan: decision.plan,
                attrs: reserve.attrs,
            },
        );
        self.hold_due.insert((expires_at_ms, reservation_id));
        self.holds_by_node.insert((leaf, reservation_id));
        *self.holds_per_root.entry(self.node(leaf).root).or_default() += 1;
        Reservation {
            reservation_id,
            node: leaf,
            currency: reserve.currency,
            amount,
            expires_at_ms,
            plan,
            headroom: self.headroom(path.as_slice(), currency, now),
        }
    }

    /// Sets a plan's parts aside on their grants.
    fn hold_plan(&mut self, plan: &[(u64, u64)]) {
        for &(g, part) in plan {
            self.grant_mut(g).held += part;
        }
    }

    /// Each level's capacity as the cap step computes it (own hard limits, then roles under
    /// the root's resolution), or none when nothing limits that level.
    fn headroom(&self, path: &[u64], currency: u8, now: u64) -> Vec<Headroom> {
        path.iter()
            .map(|&id| {
                let capacity = self.level_capacity(id, currency, 0, now).unwrap_or(0);
                Headroom {
                    node: id,
                    remaining: (capacity != u64::MAX).then_some(capacity),
                }
            })
            .collect()
    }

    /// Charges the granted request to every matching rate limit on the path.
    fn take_rates(
        &mut self,
        path: &[u64],
        currency: u8,
        model: Option<&str>,
        amount: u64,
        now_ms: u64,
    ) {
        for &id in path {
            let Some(extra) = self.node_mut(id).extra.as_deref_mut() else {
                continue;
            };
            for rate in extra.rates.iter_mut() {
                if rate.key != "*" && Some(rate.key.as_str()) != model {
                    continue;
                }
                match rate.unit {
                    RateUnit::Requests => gcra_take(rate, now_ms, 1),
                    RateUnit::Cost(c) if c == currency => gcra_take(rate, now_ms, amount),
                    RateUnit::Cost(_) => {}
                }
            }
        }
    }

    pub(crate) fn funding_parts(&self, plan: &[(u64, u64)]) -> Vec<FundingPart> {
        plan.iter()
            .map(|&(g, amount)| FundingPart {
                grant_id: g,
                node: self.grants[&g].node,
                amount,
            })
            .collect()
    }

    fn soft_limit_alerts(&self, ctx: &mut Ctx, path: &[u64], currency: u8, amount: u64) {
        let now = ctx.now_ms;
        for &id in path {
            let node = self.node(id);
            let held = node.accounts[currency as usize].held;
            let mut alert = |role: Option<&str>, rule: &LimitRule, counter: &Counter| {
                if rule.currency != currency || rule.mode != LimitMode::Soft {
                    return;
                }
                let would_be = counter
                    .spent_at(rule.window, now)
                    .saturating_add(held)
                    .saturating_add(amount);
                if would_be > rule.amount {
                    ctx.events
                        .push(Event::Governance(GovernanceEvent::SoftLimitExceeded {
                            node: id,
                            role: role.map(str::to_owned),
                            currency: self.currency_code(node.root, currency).to_owned(),
                            window: rule.window,
                            amount: rule.amount,
                            would_be,
                        }));
                }
            };
            for limit in &node.limits {
                alert(None, &limit.rule, &limit.counter);
            }
            for (role, rule) in self.role_rules(node, currency) {
                alert(Some(role), rule, role_counter(node, currency, rule.window));
            }
        }
    }

    /// The node's role limits in `currency`, with the role that carries each.
    pub(crate) fn role_rules<'a>(
        &'a self,
        node: &'a Node,
        currency: u8,
    ) -> impl Iterator<Item = (&'a str, &'a LimitRule)> + 'a {
        let root = &self.roots[&node.root];
        let roles = node.extra().map(|e| e.roles.as_slice()).unwrap_or_default();
        roles
            .iter()
            .filter_map(move |name| root.roles.iter().find(|r| &r.name == name))
            .flat_map(move |role| {
                role.limits
                    .iter()
                    .filter(move |r| r.currency == currency)
                    .map(move |r| (role.name.as_str(), r))
            })
    }

    pub(crate) fn settle(
        &mut self,
        ctx: &mut Ctx,
        reservation_id: u64,
        actual: Actual,
    ) -> Result<Outcome> {
        let (node, currency, held, late) = if let Some(hold) = self.holds.get(&reservation_id) {
            (hold.node, hold.currency, hold.amount, false)
        } else if let Some(expired) = self.live_expired(reservation_id, ctx.now_ms) {
            (expired.node, expired.currency, 0, true)
        } else {
            return Err(Error::not_found(format!(
                "reservation {reservation_id} is not open"
            )));
        };
        let (amount, tokens) = self.price(node, currency, actual)?;
        self.check_charge_fits(node, currency, amount, ctx.now_ms)?;
        // Validated: from here on, nothing fails.
        ctx.touched = Touched::Account { node, currency };
        let (plan, attrs) = if late {
            let Some(expired) = self.expired.remove(&reservation_id) else {
                unreachable!("invariant `a live expired hold is remembered` broken: found above");
            };
            (Vec::new(), expired.attrs)
        } else {
            let hold = self.remove_hold(reservation_id);
            (hold.plan, hold.attrs)
        };
        let settlement = self.book(
            ctx,
            Booking {
                reservation_id: Some(reservation_id),
                node,
                currency,
                amount,
                held,
                plan,
                tokens,
                attrs,
                late,
            },
        );
        Ok(Outcome::Settled(settlement))
    }

    pub(crate) fn release(&mut self, ctx: &mut Ctx, reservation_id: u64) -> Result<Outcome> {
        if !self.holds.contains_key(&reservation_id) {
            if self.live_expired(reservation_id, ctx.now_ms).is_some() {
                return Err(Error::precondition(format!(
                    "reservation {reservation_id} expired and was already released"
                )));
            }
            return Err(Error::not_found(format!(
                "reservation {reservation_id} is not open"
            )));
        }
        let hold = self.release_hold(ctx, reservation_id);
        ctx.touched = Touched::Account {
            node: hold.node,
            currency: hold.currency,
        };
        Ok(Outcome::Released {
            reservation_id,
            amount: hold.amount,
        })
    }

    /// The record of an expired hold, unless its retention has passed (swept or not yet).
    pub(crate) fn live_expired(&self, reservation_id: u64, now_ms: u64) -> Option<&Expired> {
        self.expired
            .get(&reservation_id)
            .filter(|e| e.forget_at_ms >= now_ms)
    }

    /// Takes a hold out and gives its planned parts back to their grants, uncharged.
    fn release_hold(&mut self, ctx: &mut Ctx, reservation_id: u64) -> Hold {
        let hold = self.remove_hold(reservation_id);
        let mut governance = Vec::new();
        for &(g, part) in &hold.plan {
            self.unhold_grant(&mut governance, g, part, 0);
        }
        ctx.events
            .extend(governance.into_iter().map(Event::Governance));
        hold
    }

    /// Takes a hold out of the hot state and off its path; grant holds stay for the caller.
    pub(crate) fn remove_hold(&mut self, reservation_id: u64) -> Hold {
        let Some(hold) = self.holds.remove(&reservation_id) else {
            unreachable!("invariant `callers remove open holds only` broken: {reservation_id}");
        };
        let root = self.node(hold.node).root;
        if let Some(open) = self.holds_per_root.get_mut(&root) {
            *open -= 1;
            if *open == 0 {
                self.holds_per_root.remove(&root);
            }
        }
        let queued = self.hold_due.remove(&(hold.expires_at_ms, reservation_id));
        assert!(
            queued,
            "invariant `every open hold is queued for expiry` broken"
        );
        let indexed = self.holds_by_node.remove(&(hold.node, reservation_id));
        assert!(
            indexed,
            "invariant `every open hold is indexed by its node` broken"
        );
        let path = self.path_ids(hold.node);
        for &id in path.as_slice() {
            let account = &mut self.node_mut(id).accounts[hold.currency as usize];
            account.held = covered_sub(account.held, hold.amount, "held covers every open hold");
        }
        let leaf = self.node_mut(hold.node);
        leaf.holds_open = covered_sub(
            u64::from(leaf.holds_open),
            1,
            "holds_open counts the node's holds",
        ) as u32;
        hold
    }

    pub(crate) fn charge(&mut self, ctx: &mut Ctx, charge: Charge) -> Result<Outcome> {
        let leaf = self.resolve(&charge.node)?;
        let currency = self.root_of(leaf).currency(&charge.currency)?;
        validate_attrs(&charge.attrs)?;
        let (amount, tokens) = self.price(leaf, currency, charge.actual)?;
        if amount == 0 {
            return Err(Error::invalid("a charge must be positive"));
        }
        self.check_charge_fits(leaf, currency, amount, ctx.now_ms)?;
        let now = ctx.now_ms;
        let decision = match self.evaluate(
            now,
            leaf,
            currency,
            (amount, amount),
            charge.attrs.model.as_deref(),
        ) {
            Ok(decision) => decision,
            Err(denial) => return Ok(Outcome::Denied(denial)),
        };
        ctx.touched = Touched::Account {
            node: leaf,
            currency,
        };
        let path = self.path_ids(leaf);
        self.soft_limit_alerts(ctx, path.as_slice(), currency, amount);
        self.take_rates(
            path.as_slice(),
            currency,
            charge.attrs.model.as_deref(),
            amount,
            now,
        );
        // The plan was not held: hold it now so that booking treats it like a settle.
        self.hold_plan(&decision.plan);
        let settlement = self.book(
            ctx,
            Booking {
                reservation_id: None,
                node: leaf,
                currency,
                amount,
                held: amount,
                plan: decision.plan,
                tokens,
                attrs: charge.attrs,
                late: false,
            },
        );
        Ok(Outcome::Charged(settlement))
    }

    /// The actual amount of a settle or charge, priced through the root's book for tokens.
    fn price(&self, node: u64, currency: u8, actual: Actual) -> Result<(u64, Option<TokenUsage>)> {
        match actual {
            Actual::Amount(a) => Ok((validate::amount("actual", a)?, None)),
            Actual::Tokens(usage) => {
                let key = (usage.provider.clone(), usage.model.clone(), currency);
                let price = self.root_of(node).prices.get(&key).ok_or_else(|| {
                    Error::not_found(format!(
                        "the price book has no price for provider {:?} model {:?} in {}",
                        usage.provider,
                        usage.model,
                        self.currency_code(self.node(node).root, currency)
                    ))
                })?;
                let micro = u128::from(usage.input) * u128::from(price.input)
                    + u128::from(usage.output) * u128::from(price.output)
                    + u128::from(usage.cached_input) * u128::from(price.cached_input)
                    + u128::from(usage.reasoning) * u128::from(price.reasoning);
                // Round up: a fraction of a minor unit is still consumed.
                let amount = micro.div_ceil(1_000_000);
                if amount > u128::from(limits::AMOUNT_MAX) {
                    return Err(Error::invalid(
                        "the token usage costs more than the largest amount",
                    ));
                }
                Ok((amount as u64, Some(usage)))
            }
        }
    }

    /// Refuses a charge whose counters would overflow, before anything changes.
    fn check_charge_fits(&self, leaf: u64, currency: u8, amount: u64, now_ms: u64) -> Result<()> {
        let overflow = || Error::invalid("the amount overflows a spend counter");
        for &id in self.path_ids(leaf).as_slice() {
            let node = self.node(id);
            let account = &node.accounts[currency as usize];
            account
                .spent_total
                .checked_add(amount)
                .ok_or_else(overflow)?;
            account.debt.checked_add(amount).ok_or_else(overflow)?;
            account
                .subtree_debt
                .checked_add(amount)
                .ok_or_else(overflow)?;
            for limit in node.limits.iter().filter(|l| l.rule.currency == currency) {
                limit
                    .counter
                    .spent_at(limit.rule.window, now_ms)
                    .checked_add(amount)
                    .ok_or_else(overflow)?;
            }
            for rc in node
                .extra()
                .map(|e| e.role_counters.as_slice())
                .unwrap_or_default()
            {
                if rc.currency == currency {
                    rc.counter
                        .spent_at(rc.window, now_ms)
                        .checked_add(amount)
                        .ok_or_else(overflow)?;
                }
            }
        }
        Ok(())
    }

    /// Books a settled amount: pays it from the hold's plan, then the waterfall, then debt;
    /// charges every window on the path; emits the events. Infallible: callers validated.
    fn book(&mut self, ctx: &mut Ctx, b: Booking) -> Settlement {
        let now = ctx.now_ms;
        let code = self
            .currency_code(self.node(b.node).root, b.currency)
            .to_owned();
        let mut governance = Vec::new();
        let paid = self.pay(&mut governance, now, &b);
        let path = self.path_ids(b.node);
        if paid.debt > 0 {
            self.node_mut(b.node).accounts[b.currency as usize].debt += paid.debt;
            for &id in path.as_slice() {
                self.node_mut(id).accounts[b.currency as usize].subtree_debt += paid.debt;
            }
        }
        let overrun = b.amount.saturating_sub(b.held);
        if overrun > 0 || b.late {
            governance.insert(
                0,
                GovernanceEvent::Overrun {
                    reservation_id: b.reservation_id,
                    node: b.node,
                    currency: code.clone(),
                    held: b.held,
                    actual: b.amount,
                    debt: paid.debt,
                    late: b.late,
                },
            );
        }
        let windows =
            self.charge_windows(&mut governance, path.as_slice(), b.currency, b.amount, now);
        ctx.events.push(Event::Usage(UsageEvent {
            at_ms: now,
            reservation_id: b.reservation_id,
            node: b.node,
            currency: code.clone(),
            amount: b.amount,
            tokens: b.tokens,
            attrs: b.attrs,
        }));
        let settlement = Settlement {
            reservation_id: b.reservation_id,
            node: b.node,
            currency: code,
            charged: b.amount,
            released: b.held.saturating_sub(b.amount),
            overrun,
            debt: paid.debt,
            plan: paid.parts,
            late: b.late,
        };
        self.emit_booked(ctx, &settlement, &paid.touched, windows, governance);
        settlement
    }

    /// Pays `b.amount`: from the hold's plan first (what a part does not pay is released),
    /// then — in a funded currency — from the waterfall; what no grant covers is debt.
    fn pay(&mut self, governance: &mut Vec<GovernanceEvent>, now: u64, b: &Booking) -> Payment {
        let funded = self.root_of(b.node).currencies[b.currency as usize].funded;
        let mut paid = Payment::default();
        let mut to_pay = b.amount;
        for &(g, part) in &b.plan {
            let take = part.min(to_pay);
            to_pay -= take;
            add_part(&mut paid.parts, g, self.grants[&g].node, take);
            paid.touched.push(g);
            self.unhold_grant(governance, g, part, take);
        }
        if funded && to_pay > 0 {
            for g in self.waterfall(now, b.node, b.currency) {
                if to_pay == 0 {
                    break;
                }
                let grant = self.grant_mut(g);
                let take = grant.available().min(to_pay);
                grant.remaining -= take;
                let (owner, exhausted) = (grant.node, grant.remaining == 0);
                to_pay -= take;
                add_part(&mut paid.parts, g, owner, take);
                if !paid.touched.contains(&g) {
                    paid.touched.push(g);
                }
                if exhausted {
                    governance.push(GovernanceEvent::GrantExhausted { grant_id: g });
                }
            }
            paid.debt = to_pay;
        }
        self.assert_paid(b, funded, &paid);
        paid
    }

    /// Conservation inside one booking (what I3 rests on): in a funded currency the grants'
    /// parts and the debt add up to the amount charged; a capped currency touches no grant;
    /// no grant is left overdrawn.
    fn assert_paid(&self, b: &Booking, funded: bool, paid: &Payment) {
        let from_grants: u64 = paid.parts.iter().map(|p| p.amount).sum();
        if funded {
            assert!(
                from_grants + paid.debt == b.amount,
                "invariant `I3: grants and debt pay the whole charge` broken: {from_grants} \
                 from grants + {} debt for {}",
                paid.debt,
                b.amount
            );
        } else {
            assert!(
                b.plan.is_empty() && paid.parts.is_empty() && paid.debt == 0,
                "invariant `a capped currency touches no grant` broken"
            );
        }
        for &g in &paid.touched {
            self.assert_grant_balanced(g);
        }
    }

    /// The monetization, balance and governance events of a booking (after its usage event).
    fn emit_booked(
        &self,
        ctx: &mut Ctx,
        s: &Settlement,
        touched: &[u64],
        windows: Vec<WindowBalance>,
        governance: Vec<GovernanceEvent>,
    ) {
        ctx.events.push(Event::Monetization(MonetizationEvent {
            at_ms: ctx.now_ms,
            reservation_id: s.reservation_id,
            node: s.node,
            currency: s.currency.clone(),
            amount: s.charged,
            parts: s.plan.clone(),
            debt: s.debt,
        }));
        // A dropped grant (expired and used up) reports zero.
        let grants = touched
            .iter()
            .map(|&grant_id| {
                let (remaining, held) = self
                    .grants
                    .get(&grant_id)
                    .map_or((0, 0), |g| (g.remaining, g.held));
                GrantBalance {
                    grant_id,
                    remaining,
                    held,
                }
            })
            .collect();
        ctx.events.push(Event::Balance(BalanceEvent {
            at_ms: ctx.now_ms,
            currency: s.currency.clone(),
            grants,
            windows,
        }));
        ctx.events
            .extend(governance.into_iter().map(Event::Governance));
    }

    /// Adds a settled amount to every counter on the path, with threshold, reset and pause
    /// events. Returns the window balances after the change.
    fn charge_windows(
        &mut self,
        governance: &mut Vec<GovernanceEvent>,
        path: &[u64],
        currency: u8,
        amount: u64,
        now_ms: u64,
    ) -> Vec<WindowBalance> {
        let mut balances = Vec::new();
        for &id in path {
            let code = self.currency_code(self.node(id).root, currency).to_owned();
            let spend = Spend {
                node: id,
                code: &code,
                amount,
                now_ms,
            };
            let node = self.node_mut(id);
            node.accounts[currency as usize].spent_total += amount;
            let mut pause = false;
            for limit in node
                .limits
                .iter_mut()
                .filter(|l| l.rule.currency == currency)
            {
                let counter = &mut limit.counter;
                let (before, after) =
                    spend.count(governance, &mut balances, false, limit.rule.window, counter);
                pause |= crossings(governance, id, None, &code, &limit.rule, before, after);
            }
            let mut role_spend: Vec<(Window, u64, u64)> = Vec::new();
            if let Some(extra) = node.extra.as_deref_mut() {
                for rc in extra
                    .role_counters
                    .iter_mut()
                    .filter(|c| c.currency == currency)
                {
                    let (before, after) =
                        spend.count(governance, &mut balances, true, rc.window, &mut rc.counter);
                    role_spend.push((rc.window, before, after));
                }
            }
            pause |= self.role_crossings(governance, &spend, currency, &role_spend);
            if pause && self.node(id).status == NodeStatus::Active {
                self.node_mut(id).status = NodeStatus::Paused;
                governance.push(GovernanceEvent::Paused {
                    node: id,
                    by_limit: true,
                });
            }
        }
        balances
    }

    /// Threshold crossings of a node's role limits, from its role counters' spend before and
    /// after; true if one of them pauses the node.
    fn role_crossings(
        &self,
        governance: &mut Vec<GovernanceEvent>,
        spend: &Spend,
        currency: u8,
        role_spend: &[(Window, u64, u64)],
    ) -> bool {
        if role_spend.is_empty() {
            return false;
        }
        let mut pause = false;
        for (role, rule) in self.role_rules(self.node(spend.node), currency) {
            if let Some(&(_, before, after)) = role_spend.iter().find(|(w, _, _)| *w == rule.window)
            {
                pause |= crossings(
                    governance,
                    spend.node,
                    Some(role),
                    spend.code,
                    rule,
                    before,
                    after,
                );
            }
        }
        pause
    }

    /// Expires holds that are past their TTL (called by `Tick`).
    pub(crate) fn expire_hold(&mut self, ctx: &mut Ctx, reservation_id: u64) {
        let hold = self.release_hold(ctx, reservation_id);
        let code = self
            .currency_code(self.node(hold.node).root, hold.currency)
            .to_owned();
        ctx.events
            .push(Event::Governance(GovernanceEvent::HoldExpired {
                reservation_id,
                node: hold.node,
                currency: code,
                amount: hold.amount,
            }));
        let mut forget_at_ms =
            ctx.now_ms + self.config.request_retention_ms + limits::CLOCK_SKEW_MS_MAX;
        // Keep the queue in forget order even after the retention was shortened.
        if let Some(last) = self
            .expired_order
            .back()
            .and_then(|id| self.expired.get(id))
        {
            forget_at_ms = forget_at_ms.max(last.forget_at_ms);
        }
        self.expired.insert(
            reservation_id,
            Expired {
                node: hold.node,
                currency: hold.currency,
                amount: hold.amount,
                forget_at_ms,
                attrs: hold.attrs,
            },
        );
        self.expired_order.push_back(reservation_id);
    }
}

pub(crate) struct Booking {
    pub reservation_id: Option<u64>,
    pub node: u64,
    pub currency: u8,
    pub amount: u64,
    /// What was set aside for it (0 for a late settle).
    pub held: u64,
    pub plan: Vec<(u64, u64)>,
    pub tokens: Option<TokenUsage>,
    pub attrs: Attributes,
    pub late: bool,
}

/// What one booking paid: the grants' parts, every grant it touched (in first-use order) and
/// the debt left.
#[derive(Default)]
struct Payment {
    parts: Vec<FundingPart>,
    touched: Vec<u64>,
    debt: u64,
}

/// A settled amount being added to the counters of one node.
struct Spend<'a> {
    node: u64,
    code: &'a str,
    amount: u64,
    now_ms: u64,
}

impl Spend<'_> {
    /// Adds the amount to one counter (an own limit's, or a role counter when `from_roles`
    /// is set): the window-reset event if it closed a window with spend, and the balance after.
    /// Returns the spend in the window before and after.
    fn count(
        &self,
        governance: &mut Vec<GovernanceEvent>,
        balances: &mut Vec<WindowBalance>,
        from_roles: bool,
        window: Window,
        counter: &mut Counter,
    ) -> (u64, u64) {
        let Ok((before, after, closed)) = counter.add(window, self.now_ms, self.amount) else {
            unreachable!("invariant `counters fit what a booking adds` broken: checked before");
        };
        if let Some(closed) = closed {
            governance.push(GovernanceEvent::WindowReset {
                node: self.node,
                from_roles,
                currency: self.code.to_owned(),
                window,
                closed_start_ms: closed.start_ms,
                spent: closed.spent,
            });
        }
        balances.push(WindowBalance {
            node: self.node,
            from_roles,
            window,
            spent: after,
        });
        (before, after)
    }
}

/// Adds a grant's payment, merging with an earlier payment by the same grant.
fn add_part(parts: &mut Vec<FundingPart>, grant_id: u64, node: u64, amount: u64) {
    if amount == 0 {
        return;
    }
    match parts.iter_mut().find(|p| p.grant_id == grant_id) {
        Some(part) => part.amount += amount,
        None => parts.push(FundingPart {
            grant_id,
            node,
            amount,
        }),
    }
}

/// One level of a path, evaluated for `need` more in `currency`.
struct Level<'a> {
    id: u64,
    node: &'a Node,
    currency: u8,
    held: u64,
    need: u64,
    now_ms: u64,
}

impl<'a> Level<'a> {
    /// The room a role's hard limits leave (the smallest), and the limit that binds; under
    /// `most_restrictive`, the first limit without room for `need` denies.
    fn role_room<'r>(
        &self,
        role: &'r Role,
        resolution: RoleResolution,
    ) -> std::result::Result<(u64, Option<&'r LimitRule>), Denial> {
        let mut room = u64::MAX;
        let mut binding = None;
        for rule in role
            .limits
            .iter()
            .filter(|r| r.currency == self.currency && r.mode == LimitMode::Hard)
        {
            let counter = role_counter(self.node, self.currency, rule.window);
            let r = self.room(rule, counter);
            if resolution == RoleResolution::MostRestrictive && r < self.need {
                return Err(self.denial(role_cap(role), rule, counter, r));
            }
            if r < room {
                room = r;
                binding = Some(rule);
            }
        }
        Ok((room, binding))
    }

    /// `amount - spent - held` under one limit, saturating.
    fn room(&self, rule: &LimitRule, counter: &Counter) -> u64 {
        let used = counter
            .spent_at(rule.window, self.now_ms)
            .saturating_add(self.held);
        rule.amount.saturating_sub(used)
    }

    fn denial(
        &self,
        rule_kind: DenyRule,
        rule: &LimitRule,
        counter: &Counter,
        room: u64,
    ) -> Denial {
        let (amount, held, need) = (rule.amount, self.held, self.need);
        Denial {
            node: self.id,
            rule: rule_kind,
            window: Some(rule.window),
            remaining: room,
            requested: need,
            retry_after_ms: counter.retry_after(rule.window, self.now_ms, amount, held, need),
        }
    }
}

fn role_cap(role: &Role) -> DenyRule {
    DenyRule::RoleCap {
        role: role.name.clone(),
    }
}

pub(crate) fn role_counter(node: &Node, currency: u8, window: Window) -> &Counter {
    static FRESH: std::sync::OnceLock<Counter> = std::sync::OnceLock::new();
    node.extra()
        .and_then(|e| {
            e.role_counters
                .iter()
                .find(|c| c.currency == currency && c.window == window)
        })
        .map(|c| &c.counter)
        .unwrap_or_else(|| FRESH.get_or_init(Counter::fresh))
}

/// Threshold events for spend going from `before` to `after`; true if the node must pause.
fn crossings(
    out: &mut Vec<GovernanceEvent>,
    node: u64,
    role: Option<&str>,
    code: &str,
    rule: &LimitRule,
    before: u64,
    after: u64,
) -> bool {
    let amount = u128::from(rule.amount);
    for percent in rule.thresholds.iter() {
        let mark = amount * u128::from(percent);
        if u128::from(before) * 100 < mark && u128::from(after) * 100 >= mark {
            out.push(GovernanceEvent::ThresholdCrossed {
                node,
                role: role.map(str::to_owned),
                currency: code.to_owned(),
                window: rule.window,
                percent,
                spent: after,
                amount: rule.amount,
            });
        }
    }
    rule.on_exhausted == OnExhausted::Pause && before < rule.amount && after >= rule.amount
}

fn validate_attrs(attrs: &Attributes) -> Result<()> {
    for (what, value) in [
        ("user", &attrs.user),
        ("model", &attrs.model),
        ("provider", &attrs.provider),
        ("credential_type", &attrs.credential_type),
    ] {
        if let Some(value) = value {
            validate::text(what, value, limits::TEXT_BYTES_MAX)?;
        }
    }
    validate::tags(&attrs.tags, limits::ATTRIBUTE_TAGS_MAX)
}

// ---- GCRA on the replicated clock -------------------------------------------------------
// Time is kept in milliseconds scaled by the rate's amount, so one unit costs `period_ms`
// scaled units and the burst is `amount` units: integer-exact, no division per request.

/// What a rate limit lets through at `now_ms` (burst capacity left).
pub(crate) fn gcra_capacity(rate: &RateLimit, now_ms: u64) -> u64 {
    let n = u128::from(rate.amount);
    let period = u128::from(rate.period_ms);
    let now = u128::from(now_ms) * n;
    let used = rate.tat.max(now) - now;
    let free = (period * n).saturating_sub(used) / period;
    free.min(u128::from(u64::MAX)) as u64
}

fn gcra_retry_after(rate: &RateLimit, now_ms: u64, cost: u64) -> Option<u64> {
    if cost > rate.amount {
        return None;
    }
    let n = u128::from(rate.amount);
    let period = u128::from(rate.period_ms);
    let now = u128::from(now_ms) * n;
    let tat = rate.tat.max(now);
    let ready = (tat + period * u128::from(cost))
        .saturating_sub(period * n)
        .div_ceil(n);
    Some((ready.saturating_sub(u128::from(now_ms))).min(u128::from(u64::MAX)) as u64)
}

pub(crate) fn gcra_take(rate: &mut RateLimit, now_ms: u64, cost: u64) {
    let now = u128::from(now_ms) * u128::from(rate.amount);
    rate.tat = rate.tat.max(now) + u128::from(rate.period_ms) * u128::from(cost);
}
