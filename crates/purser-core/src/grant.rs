//! Credit pools: grants, the funding waterfall, debt, expiry and recurring allotments.

use std::cmp::Reverse;

use crate::command::{GrantSpec, NodeRef, Rollover};
use crate::error::{Error, Result};
use crate::event::{Event, GovernanceEvent};
use crate::outcome::Outcome;
use crate::state::{covered_sub, limits, Ctx, Grant, State};
use crate::time::DAY_MS;
use crate::validate;

/// How far ahead a grant may take effect (ten years).
const GRANT_HORIZON_MS: u64 = 3_653 * DAY_MS;

impl State {
    pub(crate) fn add_grant(
        &mut self,
        ctx: &mut Ctx,
        node: &NodeRef,
        spec: GrantSpec,
    ) -> Result<Outcome> {
        let id = self.resolve(node)?;
        let root = self.root_of(id);
        let currency = root.currency(&spec.currency)?;
        if !root.currencies[currency as usize].funded {
            return Err(Error::precondition(format!(
                "currency {:?} is capped, not funded: grants fund only funded currencies",
                spec.currency
            )));
        }
        let amount = validate::positive_amount("grant amount", spec.amount)?;
        let now = ctx.now_ms;
        let effective_at_ms = check_timing(&spec, now)?;
        let owned = self.node(id).extra().map_or(0, |e| e.grants.len());
        if owned >= limits::GRANTS_PER_NODE_MAX {
            return Err(Error::exhausted(format!(
                "a node owns at most {} grants",
                limits::GRANTS_PER_NODE_MAX
            )));
        }
        let grant_id = self.next_grant_id;
        self.next_grant_id += 1;
        let grant = Grant {
            id: grant_id,
            node: id,
            currency,
            amount,
            remaining: amount,
            held: 0,
            priority: spec.priority,
            kind: spec.kind,
            effective_at_ms,
            expires_at_ms: spec.expires_at_ms,
            recur: spec.recur,
            rollover: spec.rollover,
            next_renewal_ms: spec.recur.map(|p| p.end(effective_at_ms)),
            expired: false,
            pending: effective_at_ms > now,
        };
        self.node_mut(id).extra_mut().grants.push(grant_id);
        self.insert_grant(grant);
        if effective_at_ms <= now {
            self.pay_debts(ctx, grant_id);
        }
        Ok(Outcome::GrantAdded { grant_id })
    }

    fn insert_grant(&mut self, grant: Grant) {
        if let Some(due) = grant.due_ms() {
            self.grant_due.insert((due, grant.id));
        }
        self.grants.insert(grant.id, grant);
    }

    /// Grants that can fund a reservation at `leaf` now, in waterfall order: priority (lower
    /// first), then earliest expiry (never-expiring last), then nearest to the leaf, then id.
    pub(crate) fn waterfall(&self, now_ms: u64, leaf: u64, currency: u8) -> Vec<u64> {
        let mut candidates: Vec<(u32, u64, Reverse<u8>, u64)> = Vec::new();
        for &id in self.path_ids(leaf).as_slice() {
            let node = self.node(id);
            for &g in node
                .extra()
                .map(|e| e.grants.as_slice())
                .unwrap_or_default()
            {
                let grant = &self.grants[&g];
                let usable = grant.currency == currency
                    && !grant.expired
                    && !grant.pending
                    && grant.effective_at_ms <= now_ms
                    && grant.expires_at_ms.is_none_or(|e| now_ms < e)
                    && grant.available() > 0;
                if usable {
                    candidates.push((
                        grant.priority,
                        grant.expires_at_ms.unwrap_or(u64::MAX),
                        Reverse(node.depth),
                        g,
                    ));
                }
            }
        }
        candidates.sort_unstable();
        candidates.into_iter().map(|c| c.3).collect()
    }

    /// Lifts `part` of a hold off grant `g`, of which `take` is consumed. On an expired grant
    /// the released rest is forfeited; an expired grant that reaches zero is dropped.
    pub(crate) fn unhold_grant(
        &mut self,
        governance: &mut Vec<GovernanceEvent>,
        g: u64,
        part: u64,
        take: u64,
    ) {
        assert!(
            take <= part,
            "invariant `a part pays at most itself` broken"
        );
        let grant = self.grant_mut(g);
        grant.held = covered_sub(grant.held, part, "grant held covers its holds");
        grant.remaining = covered_sub(grant.remaining, take, "I2: remaining covers held");
        if grant.expired {
            grant.remaining = covered_sub(grant.remaining, part - take, "I2 of an expired grant");
            if grant.remaining == 0 {
                self.drop_grant(g);
            }
        } else if take > 0 && grant.remaining == 0 {
            governance.push(GovernanceEvent::GrantExhausted { grant_id: g });
        }
    }

    fn drop_grant(&mut self, g: u64) {
        let Some(grant) = self.grants.remove(&g) else {
            unreachable!("invariant `a grant is dropped once` broken: grant {g}");
        };
        assert_eq!(
            grant.held, 0,
            "invariant `a dropped grant holds nothing` broken"
        );
        if let Some(due) = grant.due_ms() {
            self.grant_due.remove(&(due, g));
        }
        if let Some(extra) = self.node_mut(grant.node).extra.as_deref_mut() {
            extra.grants.retain(|x| *x != g);
        }
    }

    /// A grant that arrives (added, activated or renewed) first pays the debts recorded in its
    /// owner's subtree, in node id order.
    pub(crate) fn pay_debts(&mut self, ctx: &mut Ctx, g: u64) {
        let (owner, currency) = {
            let grant = &self.grants[&g];
            (grant.node, grant.currency)
        };
        let c = currency as usize;
        if self.node(owner).accounts[c].subtree_debt == 0 {
            return;
        }
        let mut debtors = Vec::new();
        let mut stack = vec![owner];
        while let Some(at) = stack.pop() {
            let node = self.node(at);
            if node.accounts[c].debt > 0 {
                debtors.push(at);
            }
            stack.extend(
                node.children
                    .iter()
                    .copied()
                    .filter(|ch| self.node(*ch).accounts[c].subtree_debt > 0),
            );
        }
        debtors.sort_unstable();
        let code = self
            .currency_code(self.node(owner).root, currency)
            .to_owned();
        for debtor in debtors {
            let available = self.grants[&g].available();
            let pay = available.min(self.node(debtor).accounts[c].debt);
            if pay == 0 {
                break;
            }
            let grant = self.grant_mut(g);
            grant.remaining -= pay;
            let exhausted = grant.remaining == 0;
            let account = &mut self.node_mut(debtor).accounts[c];
            account.debt -= pay;
            for &id in self.path_ids(debtor).as_slice() {
                let account = &mut self.node_mut(id).accounts[c];
                account.subtree_debt = covered_sub(
                    account.subtree_debt,
                    pay,
                    "subtree debt sums the debts below",
                );
            }
            ctx.events
                .push(Event::Governance(GovernanceEvent::DebtPaid {
                    node: debtor,
                    grant_id: g,
                    currency: code.clone(),
                    amount: pay,
                }));
            if exhausted {
                ctx.events
                    .push(Event::Governance(GovernanceEvent::GrantExhausted {
                        grant_id: g,
                    }));
            }
        }
    }

    /// Expires due holds, then activates, renews and expires due grants, in due order. Each
    /// tick handles at most `TICK_ITEMS_MAX` items; the rest wait for the next.
    pub(crate) fn tick(&mut self, ctx: &mut Ctx) -> Outcome {
        let now = ctx.now_ms;
        let (mut holds_expired, mut grants_expired, mut grants_renewed) = (0u32, 0u32, 0u32);
        let mut budget = limits::TICK_ITEMS_MAX;
        while budget > 0 {
            let Some(&(due, id)) = self.hold_due.first() else {
                break;
            };
            if due > now {
                break;
            }
            self.expire_hold(ctx, id);
            holds_expired += 1;
            budget -= 1;
        }
        while budget > 0 {
            let Some(&(due, g)) = self.grant_due.first() else {
                break;
            };
            if due > now {
                break;
            }
            budget -= 1;
            self.grant_due.remove(&(due, g));
            let grant = self.grants[&g].clone();
            if grant.pending {
                self.grant_mut(g).pending = false;
                self.pay_debts(ctx, g);
            } else if grant.expires_at_ms.is_some_and(|e| e <= due) {
                self.expire_grant(ctx, g);
                grants_expired += 1;
            } else {
                self.renew_grant(ctx, g);
                grants_renewed += 1;
            }
            if let Some(grant) = self.grants.get(&g) {
                if let Some(next) = grant.due_ms() {
                    self.grant_due.insert((next, g));
                }
            }
        }
        let overdue = |first: Option<&(u64, u64)>| first.is_some_and(|&(due, _)| due <= now);
        assert!(
            budget == 0 || !(overdue(self.hold_due.first()) || overdue(self.grant_due.first())),
            "invariant `a tick leaves nothing due unless it ran out of budget` broken"
        );
        // An idle cluster gives back the memory of a burst of request ids.
        self.dedup.expire(now, crate::dedup::EXPIRE_PER_TICK);
        Outcome::Ticked {
            holds_expired,
            grants_expired,
            grants_renewed,
        }
    }

    fn expire_grant(&mut self, ctx: &mut Ctx, g: u64) {
        let grant = self.grant_mut(g);
        let forfeited = grant.available();
        grant.remaining = grant.held;
        grant.expired = true;
        ctx.events
            .push(Event::Governance(GovernanceEvent::GrantExpired {
                grant_id: g,
                forfeited,
            }));
        if self.grants[&g].remaining == 0 {
            self.drop_grant(g);
        }
    }

    /// A fresh allotment at the period boundary; the unused rest follows the rollover rule.
    fn renew_grant(&mut self, ctx: &mut Ctx, g: u64) {
        let grant = self.grant_mut(g);
        let (Some(boundary), Some(period)) = (grant.next_renewal_ms, grant.recur) else {
            unreachable!("invariant `a renewing grant recurs` broken: grant {g}");
        };
        let unused = grant.available();
        let carry = match grant.rollover {
            Rollover::None => 0,
            Rollover::CapMultiple(n) => unused.min(grant.amount.saturating_mul(u64::from(n) - 1)),
            Rollover::Percent(p) => ((u128::from(unused) * u128::from(p)) / 100) as u64,
        };
        // Keep balances far from overflow however many periods pass.
        let ceiling = u64::MAX >> 4;
        let carry = carry.min(
            ceiling
                .saturating_sub(grant.held)
                .saturating_sub(grant.amount),
        );
        grant.remaining = grant.held + carry + grant.amount;
        grant.next_renewal_ms = Some(period.end(boundary));
        let event = GovernanceEvent::GrantRenewed {
            grant_id: g,
            carried: carry,
            forfeited: unused - carry,
            allotment: grant.amount,
            remaining: grant.remaining,
        };
        ctx.events.push(Event::Governance(event));
        self.pay_debts(ctx, g);
    }
}

/// When a grant takes effect (now unless set), after checking its timing: effective between a
/// day ago and ten years ahead, expiring after that, after now and within a hundred years;
/// recurring daily or longer; a rollover only on a recurring grant.
fn check_timing(spec: &GrantSpec, now: u64) -> Result<u64> {
    let effective_at_ms = spec.effective_at_ms.unwrap_or(now);
    // Bounded: a grant backdated by years would replay a renewal per past period, and
    // calendar arithmetic near u64::MAX would overflow.
    if effective_at_ms < now.saturating_sub(DAY_MS)
        || effective_at_ms > now.saturating_add(GRANT_HORIZON_MS)
    {
        return Err(Error::invalid(
            "a grant takes effect between one day ago and ten years ahead",
        ));
    }
    if spec
        .expires_at_ms
        .is_some_and(|e| e > now.saturating_add(10 * GRANT_HORIZON_MS))
    {
        return Err(Error::invalid(
            "a grant expires at most a hundred years ahead",
        ));
    }
    if let Some(expires) = spec.expires_at_ms {
        if expires <= effective_at_ms || expires <= now {
            return Err(Error::invalid(
                "a grant must expire after it takes effect and after now",
            ));
        }
    }
    if spec.recur == Some(crate::time::Period::Hour) {
        return Err(Error::invalid(
            "a grant recurs every day, week, month or year",
        ));
    }
    match (spec.recur, spec.rollover) {
        (None, Rollover::None) => Ok(effective_at_ms),
        (None, _) => Err(Error::invalid("rollover applies to recurring grants only")),
        (Some(_), Rollover::CapMultiple(n)) if n == 0 || n > 1000 => {
            Err(Error::invalid("rollover cap multiple must be 1..=1000"))
        }
        (Some(_), Rollover::Percent(p)) if p > 100 => {
            Err(Error::invalid("rollover percent must be 0..=100"))
        }
        (Some(_), _) => Ok(effective_at_ms),
    }
}
