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
use crate::state::{limits, Ctx, Expired, Hold, LimitRule, Node, RateLimit, RateUnit, State};
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
        for &id in path.as_slice() {
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
        let mut allow = max;
        for &id in path.as_slice() {
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
        for &id in path.as_slice() {
            #[cfg(feature = "planted-bugs")]
            if crate::planted::skip_root_cap() && self.node(id).parent == 0 {
                continue;
            }
            allow = allow.min(self.level_capacity(id, currency, min, now_ms)?);
        }
        let mut plan = Vec::new();
        if self.root_of(leaf).currencies[currency as usize].funded {
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
            allow = allow.min(available);
            let mut left = allow;
            for g in candidates {
                if left == 0 {
                    break;
                }
                let take = self.grants[&g].available().min(left);
                plan.push((g, take));
                left -= take;
            }
        }
        debug_assert!(allow >= min && allow <= max);
        Ok(Decision {
            amount: allow,
            plan,
        })
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
        let mut capacity = u64::MAX;
        for limit in &node.limits {
            let rule = &limit.rule;
            if rule.currency != currency || rule.mode != LimitMode::Hard {
                continue;
            }
            let room = room(rule, &limit.counter, held, now_ms);
            if room < need {
                return Err(cap_denial(
                    id,
                    DenyRule::Cap,
                    rule,
                    &limit.counter,
                    held,
                    need,
                    room,
                    now_ms,
                ));
            }
            capacity = capacity.min(room);
        }
        let Some(extra) = node.extra() else {
            return Ok(capacity);
        };
        if extra.roles.is_empty() {
            return Ok(capacity);
        }
        let root = &self.roots[&node.root];
        // Per role: the room its hard limits leave, and the limit that binds.
        let mut best: Option<(u64, &str, Option<&LimitRule>)> = None;
        for role_name in &extra.roles {
            let Some(role) = root.roles.iter().find(|r| &r.name == role_name) else {
                continue;
            };
            let mut role_room = u64::MAX;
            let mut binding = None;
            for rule in role
                .limits
                .iter()
                .filter(|r| r.currency == currency && r.mode == LimitMode::Hard)
            {
                let counter = role_counter(node, currency, rule.window);
                let r = room(rule, counter, held, now_ms);
                if root.resolution == RoleResolution::MostRestrictive && r < need {
                    let rule_kind = DenyRule::RoleCap {
                        role: role.name.clone(),
                    };
                    return Err(cap_denial(
                        id, rule_kind, rule, counter, held, need, r, now_ms,
                    ));
                }
                if r < role_room {
                    role_room = r;
                    binding = Some(rule);
                }
            }
            match root.resolution {
                RoleResolution::MostRestrictive => capacity = capacity.min(role_room),
                RoleResolution::MostPermissive => {
                    if best.is_none_or(|(b, _, _)| role_room > b) {
                        best = Some((role_room, &role.name, binding));
                    }
                }
            }
        }
        if let Some((role_room, role, binding)) = best {
            if role_room < need {
                let rule = binding.expect("a role with less room than needed has a binding limit");
                let counter = role_counter(node, currency, rule.window);
                let rule_kind = DenyRule::RoleCap {
                    role: role.to_owned(),
                };
                return Err(cap_denial(
                    id, rule_kind, rule, counter, held, need, role_room, now_ms,
                ));
            }
            capacity = capacity.min(role_room);
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
        if self.holds.len() >= limits::HOLDS_OPEN_MAX {
            return Err(Error::exhausted(format!(
                "{} holds are open, the most the cluster keeps",
                limits::HOLDS_OPEN_MAX
            )));
        }
        Ok((leaf, currency, (min, max)))
    }

    pub(crate) fn reserve(&mut self, ctx: &mut Ctx, reserve: Reserve) -> Result<Outcome> {
        let (leaf, currency, (min, max)) = self.check_reserve(&reserve)?;
        let now = ctx.now_ms;
        let decision = match self.evaluate(
            now,
            leaf,
            currency,
            (min, max),
            reserve.attrs.model.as_deref(),
        ) {
            Ok(decision) => decision,
            Err(denial) => return Ok(Outcome::Denied(denial)),
        };
        let amount = decision.amount;
        let path = self.path_ids(leaf);
        for &id in path.as_slice() {
            if self.node(id).accounts[currency as usize]
                .held
                .checked_add(amount)
                .is_none()
            {
                return Err(Error::invalid("the amount overflows the held total"));
            }
        }
        // Decided: from here on, nothing fails.
        self.soft_limit_alerts(ctx, path.as_slice(), currency, amount);
        for &id in path.as_slice() {
            self.node_mut(id).accounts[currency as usize].held += amount;
        }
        self.take_rates(
            path.as_slice(),
            currency,
            reserve.attrs.model.as_deref(),
            amount,
            now,
        );
        for &(g, part) in &decision.plan {
            self.grants.get_mut(&g).expect("planned grant exists").held += part;
        }
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
        let headroom = path
            .as_slice()
            .iter()
            .map(|&id| {
                let capacity = self.level_capacity(id, currency, 0, now).unwrap_or(0);
                Headroom {
                    node: id,
                    remaining: (capacity != u64::MAX).then_some(capacity),
                }
            })
            .collect();
        Ok(Outcome::Reserved(Reservation {
            reservation_id,
            node: leaf,
            currency: reserve.currency,
            amount,
            expires_at_ms,
            plan,
            headroom,
        }))
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
        let (plan, attrs) = if late {
            let expired = self.expired.remove(&reservation_id).expect("checked above");
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
        Ok(Outcome::Released {
            reservation_id,
            amount: hold.amount,
        })
    }

    /// The record of an expired hold, unless its retention has passed (swept or not yet).
    fn live_expired(&self, reservation_id: u64, now_ms: u64) -> Option<&Expired> {
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
        let hold = self
            .holds
            .remove(&reservation_id)
            .expect("caller checked the hold");
        self.hold_due.remove(&(hold.expires_at_ms, reservation_id));
        let path = self.path_ids(hold.node);
        for &id in path.as_slice() {
            let account = &mut self.node_mut(id).accounts[hold.currency as usize];
            account.held = account
                .held
                .checked_sub(hold.amount)
                .expect("held covers every open hold");
        }
        let leaf = self.node_mut(hold.node);
        leaf.holds_open -= 1;
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
        for &(g, part) in &decision.plan {
            self.grants.get_mut(&g).expect("planned grant exists").held += part;
        }
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
        let funded = self.root_of(b.node).currencies[b.currency as usize].funded;
        let code = self
            .currency_code(self.node(b.node).root, b.currency)
            .to_owned();
        // What each grant paid, one entry per grant in first-use order, with its owner captured
        // now: an expired grant that reaches zero is dropped below.
        let mut parts: Vec<FundingPart> = Vec::new();
        let mut touched: Vec<u64> = Vec::new();
        let mut governance = Vec::new();
        let mut to_pay = b.amount;
        for &(g, part) in &b.plan {
            let take = part.min(to_pay);
            to_pay -= take;
            add_part(&mut parts, g, self.grants[&g].node, take);
            touched.push(g);
            self.unhold_grant(&mut governance, g, part, take);
        }
        let overrun = b.amount.saturating_sub(b.held);
        let mut debt = 0;
        if funded && to_pay > 0 {
            for g in self.waterfall(now, b.node, b.currency) {
                if to_pay == 0 {
                    break;
                }
                let take = self.grants[&g].available().min(to_pay);
                to_pay -= take;
                add_part(&mut parts, g, self.grants[&g].node, take);
                if !touched.contains(&g) {
                    touched.push(g);
                }
                let grant = self.grants.get_mut(&g).expect("candidate exists");
                grant.remaining -= take;
                if grant.remaining == 0 {
                    governance.push(GovernanceEvent::GrantExhausted { grant_id: g });
                }
            }
            debt = to_pay;
        }
        let path = self.path_ids(b.node);
        if debt > 0 {
            self.node_mut(b.node).accounts[b.currency as usize].debt += debt;
            for &id in path.as_slice() {
                self.node_mut(id).accounts[b.currency as usize].subtree_debt += debt;
            }
        }
        if overrun > 0 || b.late {
            governance.insert(
                0,
                GovernanceEvent::Overrun {
                    reservation_id: b.reservation_id,
                    node: b.node,
                    currency: code.clone(),
                    held: b.held,
                    actual: b.amount,
                    debt,
                    late: b.late,
                },
            );
        }
        let windows =
            self.charge_windows(&mut governance, path.as_slice(), b.currency, b.amount, now);
        let plan = parts;
        ctx.events.push(Event::Usage(UsageEvent {
            at_ms: now,
            reservation_id: b.reservation_id,
            node: b.node,
            currency: code.clone(),
            amount: b.amount,
            tokens: b.tokens,
            attrs: b.attrs,
        }));
        ctx.events.push(Event::Monetization(MonetizationEvent {
            at_ms: now,
            reservation_id: b.reservation_id,
            node: b.node,
            currency: code.clone(),
            amount: b.amount,
            parts: plan.clone(),
            debt,
        }));
        // A dropped grant (expired and used up) reports zero.
        let grants = touched
            .iter()
            .map(|g| match self.grants.get(g) {
                Some(grant) => GrantBalance {
                    grant_id: *g,
                    remaining: grant.remaining,
                    held: grant.held,
                },
                None => GrantBalance {
                    grant_id: *g,
                    remaining: 0,
                    held: 0,
                },
            })
            .collect();
        ctx.events.push(Event::Balance(BalanceEvent {
            at_ms: now,
            currency: code.clone(),
            grants,
            windows,
        }));
        ctx.events
            .extend(governance.into_iter().map(Event::Governance));
        Settlement {
            reservation_id: b.reservation_id,
            node: b.node,
            currency: code,
            charged: b.amount,
            released: b.held.saturating_sub(b.amount),
            overrun,
            debt,
            plan,
            late: b.late,
        }
    }

    /// Adds a settled amount to every counter on the path, with threshold, reset and pause
    /// events. Returns the window balances after the change.
    fn charge_windows(
        &mut self,
        governance: &mut Vec<GovernanceEvent>,
        path: &[u64],
        currency: u8,
        amount: u64,
        now: u64,
    ) -> Vec<WindowBalance> {
        let mut balances = Vec::new();
        for &id in path {
            let root_id = self.node(id).root;
            let code = &self.roots[&root_id].currencies[currency as usize].code;
            let code = code.clone();
            let mut pause = false;
            let node = &mut self.nodes[(id - 1) as usize];
            node.accounts[currency as usize].spent_total += amount;
            for limit in node
                .limits
                .iter_mut()
                .filter(|l| l.rule.currency == currency)
            {
                let (before, after, closed) = limit
                    .counter
                    .add(limit.rule.window, now, amount)
                    .expect("checked before");
                if let Some(closed) = closed {
                    governance.push(GovernanceEvent::WindowReset {
                        node: id,
                        from_roles: false,
                        currency: code.clone(),
                        window: limit.rule.window,
                        closed_start_ms: closed.start_ms,
                        spent: closed.spent,
                    });
                }
                pause |= crossings(governance, id, None, &code, &limit.rule, before, after);
                balances.push(WindowBalance {
                    node: id,
                    from_roles: false,
                    window: limit.rule.window,
                    spent: after,
                });
            }
            let mut role_spend: Vec<(Window, u64, u64)> = Vec::new();
            if let Some(extra) = node.extra.as_deref_mut() {
                for rc in extra
                    .role_counters
                    .iter_mut()
                    .filter(|c| c.currency == currency)
                {
                    let (before, after, closed) = rc
                        .counter
                        .add(rc.window, now, amount)
                        .expect("checked before");
                    if let Some(closed) = closed {
                        governance.push(GovernanceEvent::WindowReset {
                            node: id,
                            from_roles: true,
                            currency: code.clone(),
                            window: rc.window,
                            closed_start_ms: closed.start_ms,
                            spent: closed.spent,
                        });
                    }
                    role_spend.push((rc.window, before, after));
                    balances.push(WindowBalance {
                        node: id,
                        from_roles: true,
                        window: rc.window,
                        spent: after,
                    });
                }
            }
            if !role_spend.is_empty() {
                let node = self.node(id);
                for (role, rule) in self.role_rules(node, currency) {
                    if let Some(&(_, before, after)) =
                        role_spend.iter().find(|(w, _, _)| *w == rule.window)
                    {
                        pause |= crossings(governance, id, Some(role), &code, rule, before, after);
                    }
                }
            }
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

/// `amount - spent - held`, saturating.
fn room(rule: &LimitRule, counter: &Counter, held: u64, now_ms: u64) -> u64 {
    rule.amount
        .saturating_sub(counter.spent_at(rule.window, now_ms).saturating_add(held))
}

#[allow(clippy::too_many_arguments)]
fn cap_denial(
    node: u64,
    rule_kind: DenyRule,
    rule: &LimitRule,
    counter: &Counter,
    held: u64,
    need: u64,
    room: u64,
    now_ms: u64,
) -> Denial {
    Denial {
        node,
        rule: rule_kind,
        window: Some(rule.window),
        remaining: room,
        requested: need,
        retry_after_ms: counter.retry_after(rule.window, now_ms, rule.amount, held, need),
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
