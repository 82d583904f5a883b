//! What must hold of the state, checked on both sides of every boundary (TigerBeetle style):
//!
//! - [`State::check_invariants`] walks the whole state: run on restore (a snapshot that fails
//!   it is refused), when a snapshot is built (a failure panics: the state in memory is
//!   broken), and by the tests after every command. Linear in the state.
//! - The postconditions of [`State::apply`] look only at what the command touched (its path,
//!   its hold, its grants, the id counters), so that their cost follows the command's — apply
//!   is the hot path. A broken one panics with a message that names it.

use std::collections::BTreeMap;

use crate::budget::role_counter;
use crate::command::{LimitMode, RoleResolution};
use crate::outcome::{Outcome, Reservation};
use crate::state::{limits, Ctx, LimitRule, Role, State, Touched};
use crate::window::Counter;

/// The counters a command may only move forward, read before it applies.
pub(crate) struct Before {
    /// The clock the command applies at: `max(state clock, leader's timestamp)`.
    at_ms: u64,
    now_ms: u64,
    nodes: u64,
    next_reservation_id: u64,
    next_grant_id: u64,
    next_webhook_id: u64,
    events_emitted: u64,
}

impl Before {
    pub fn of(state: &State, at_ms: u64) -> Self {
        Before {
            at_ms,
            now_ms: state.now_ms,
            nodes: state.nodes.len() as u64,
            next_reservation_id: state.next_reservation_id,
            next_grant_id: state.next_grant_id,
            next_webhook_id: state.next_webhook_id,
            events_emitted: state.events_emitted,
        }
    }

    /// The id counters and the event count of `state`, in the order of [`Before::ids`].
    fn ids_of(state: &State) -> [u64; 5] {
        [
            state.nodes.len() as u64,
            state.next_reservation_id,
            state.next_grant_id,
            state.next_webhook_id,
            state.events_emitted,
        ]
    }

    fn ids(&self) -> [u64; 5] {
        [
            self.nodes,
            self.next_reservation_id,
            self.next_grant_id,
            self.next_webhook_id,
            self.events_emitted,
        ]
    }

    /// An `Err` changed nothing: not the clock, no id, and it emitted nothing.
    pub fn assert_unchanged_by_error(&self, state: &State, ctx: &Ctx) {
        assert!(
            state.now_ms == self.now_ms && Before::ids_of(state) == self.ids(),
            "invariant `an error changes nothing` broken: clock {} -> {}, ids {:?} -> {:?}",
            self.now_ms,
            state.now_ms,
            self.ids(),
            Before::ids_of(state)
        );
        assert!(
            ctx.events.is_empty(),
            "invariant `an error emits nothing` broken: {} events",
            ctx.events.len()
        );
    }

    /// A duplicate (and a denial) moves the clock and nothing else.
    pub fn assert_only_clock_moved(&self, state: &State) {
        assert!(
            state.now_ms == self.at_ms && Before::ids_of(state) == self.ids(),
            "invariant `a duplicate or a denial changes only the clock` broken: ids {:?} -> {:?}",
            self.ids(),
            Before::ids_of(state)
        );
    }

    /// Ids only grow, each by one when its kind of thing is created and otherwise not at all;
    /// the event count grows by the events emitted; the clock is the one applied at.
    fn assert_advanced(&self, state: &State, outcome: &Outcome, events: usize) {
        let created = |yes: bool| u64::from(yes);
        let expected = [
            self.nodes + created(matches!(outcome, Outcome::NodeCreated { .. })),
            self.next_reservation_id + created(matches!(outcome, Outcome::Reserved(_))),
            self.next_grant_id + created(matches!(outcome, Outcome::GrantAdded { .. })),
            self.next_webhook_id + created(matches!(outcome, Outcome::WebhookAdded { .. })),
            self.events_emitted + events as u64,
        ];
        assert!(
            state.now_ms == self.at_ms && Before::ids_of(state) == expected,
            "invariant `ids are monotonic, one per creation` broken after {outcome:?}: \
             expected {expected:?}, have {:?} (clock {} for {})",
            Before::ids_of(state),
            state.now_ms,
            self.at_ms
        );
        let given = match *outcome {
            Outcome::NodeCreated { node_id } => Some((node_id, self.nodes + 1)),
            Outcome::GrantAdded { grant_id } => Some((grant_id, self.next_grant_id)),
            Outcome::WebhookAdded { webhook_id } => Some((webhook_id, self.next_webhook_id)),
            Outcome::Reserved(ref r) => Some((r.reservation_id, self.next_reservation_id)),
            _ => None,
        };
        if let Some((id, next)) = given {
            assert_eq!(id, next, "invariant `a new id is the next one` broken");
        }
    }
}

impl State {
    /// The postconditions of one successful apply, on what it touched.
    pub(crate) fn assert_applied(
        &self,
        before: &Before,
        ctx: &Ctx,
        outcome: &Outcome,
        request_key: Option<u128>,
    ) {
        if let Outcome::Denied(_) = outcome {
            assert!(
                ctx.events.is_empty(),
                "invariant `a denial emits nothing` broken"
            );
            before.assert_only_clock_moved(self);
            return;
        }
        before.assert_advanced(self, outcome, ctx.events.len());
        if let Some(key) = request_key {
            assert!(
                self.is_remembered(key, self.now_ms),
                "invariant `a request that took effect is remembered` broken"
            );
        }
        match ctx.touched {
            Touched::Nothing => {}
            Touched::Account { node, currency } => self.assert_path(node, Some(currency)),
            Touched::Node(node) => self.assert_path(node, None),
        }
        match outcome {
            Outcome::Reserved(r) => self.assert_reserved(r, ctx),
            Outcome::Charged(s) => {
                let Touched::Account { node, currency } = ctx.touched else {
                    unreachable!("invariant `a charge touches its path` broken");
                };
                assert_eq!(node, s.node, "invariant `a charge touches its path` broken");
                self.assert_within_caps(node, currency, ctx.now_ms);
            }
            Outcome::GrantAdded { grant_id } => self.assert_grant_balanced(*grant_id),
            _ => {}
        }
    }

    /// A new hold is what the answer says, planned in full on usable grants, and fits under
    /// every hard limit of its path.
    fn assert_reserved(&self, r: &Reservation, ctx: &Ctx) {
        let Some(hold) = self.holds.get(&r.reservation_id) else {
            panic!("invariant `a reservation leaves a hold` broken: {r:?}");
        };
        assert!(
            hold.node == r.node && hold.amount == r.amount && hold.amount > 0,
            "invariant `the hold is the reservation` broken: {hold:?} for {r:?}"
        );
        assert_eq!(
            ctx.touched,
            Touched::Account {
                node: hold.node,
                currency: hold.currency
            },
            "invariant `a reservation touches its path` broken"
        );
        let planned: u64 = hold.plan.iter().map(|&(_, part)| part).sum();
        assert!(
            hold.plan.is_empty() || planned == hold.amount,
            "invariant `a plan covers its hold` broken: {planned} of {}",
            hold.amount
        );
        for &(g, part) in &hold.plan {
            assert!(part > 0, "invariant `plan parts are positive` broken");
            self.assert_grant_balanced(g);
        }
        assert!(
            self.node(hold.node).holds_open > 0,
            "invariant `holds_open counts the new hold` broken"
        );
        self.assert_within_caps(hold.node, hold.currency, ctx.now_ms);
    }

    /// I2 for one grant: it holds no more than it has left, and an expired one keeps only what
    /// it holds.
    pub(crate) fn assert_grant_balanced(&self, g: u64) {
        let Some(grant) = self.grants.get(&g) else {
            return; // An expired grant that was used up is dropped: nothing left to check.
        };
        assert!(
            grant.held <= grant.remaining && (!grant.expired || grant.remaining == grant.held),
            "invariant `I2: a grant is never overdrawn` broken: grant {g} holds {} of {} \
             remaining (expired: {})",
            grant.held,
            grant.remaining,
            grant.expired
        );
    }

    /// The shape of `leaf`'s path and its balances in `currency` (every currency when `None`):
    /// each level one deeper than its parent and in the same root, the root at depth 1, within
    /// the depth limit; held and subtree debt never smaller than the level's below (they sum
    /// the subtree); debt within subtree debt. O(depth × currencies).
    fn assert_path(&self, leaf: u64, currency: Option<u8>) {
        let path = self.path_ids(leaf);
        let ids = path.as_slice();
        let Some(&root) = ids.last() else {
            unreachable!("invariant `a path has a root` broken for node {leaf}");
        };
        let top = self.node(root);
        assert!(
            top.parent == 0 && top.root == root && top.depth == 1,
            "invariant `a path ends at its root` broken for node {leaf}"
        );
        assert!(
            ids.len() <= usize::from(self.config.depth_max),
            "invariant `depth within depth_max` broken for node {leaf}"
        );
        // The root node's accounts were made from its currencies (check_invariants compares).
        let currencies = top.accounts.len();
        let range = match currency {
            Some(c) => usize::from(c)..usize::from(c) + 1,
            None => 0..currencies,
        };
        for &id in ids {
            let node = self.node(id);
            assert!(
                node.root == root && node.accounts.len() == currencies,
                "invariant `one account per root currency` broken at node {id}"
            );
            for account in &node.accounts[range.clone()] {
                assert!(
                    account.debt <= account.subtree_debt,
                    "invariant `debt within subtree debt` broken at node {id}"
                );
            }
        }
        for pair in ids.windows(2) {
            let (child, parent) = (self.node(pair[0]), self.node(pair[1]));
            assert!(
                u16::from(child.depth) == u16::from(parent.depth) + 1,
                "invariant `a child is one level below its parent` broken at node {}",
                pair[0]
            );
            for c in range.clone() {
                let (below, above) = (&child.accounts[c], &parent.accounts[c]);
                assert!(
                    below.held <= above.held && below.subtree_debt <= above.subtree_debt,
                    "invariant `held and debt sum the subtree` broken: node {} holds {} \
                     (debt {}) under node {} holding {} (debt {})",
                    pair[0],
                    below.held,
                    below.subtree_debt,
                    pair[1],
                    above.held,
                    above.subtree_debt
                );
            }
        }
    }

    /// I1 right after a granted reservation or charge: the evaluation admitted only what fits,
    /// so on every level it checked, `spent + held <= amount` under each hard limit (own, and
    /// role limits under the root's resolution).
    fn assert_within_caps(&self, leaf: u64, currency: u8, now_ms: u64) {
        for &id in self.path_ids(leaf).as_slice() {
            if !self.caps_enforced(id) {
                continue;
            }
            if let Some(over) = self.hard_limit_over(id, currency, now_ms) {
                panic!(
                    "invariant `I1: held and spent within hard limits` broken at node {id}: {over}"
                );
            }
        }
    }

    /// The first hard limit at `id` in `currency` whose `spent + held` exceeds its amount, as
    /// a description; `None` when all fit. Not saturating, unlike the room evaluation uses.
    pub(crate) fn hard_limit_over(&self, id: u64, currency: u8, now_ms: u64) -> Option<String> {
        let node = self.node(id);
        let held = node.accounts[usize::from(currency)].held;
        let over = |rule: &LimitRule, counter: &Counter| {
            let used = u128::from(counter.spent_at(rule.window, now_ms)) + u128::from(held);
            (rule.currency == currency && rule.mode == LimitMode::Hard)
                .then_some(used)
                .filter(|used| *used > u128::from(rule.amount))
                .map(|used| format!("{used} used of {} ({:?})", rule.amount, rule.window))
        };
        if let Some(over) = node.limits.iter().find_map(|l| over(&l.rule, &l.counter)) {
            return Some(over);
        }
        let roles = node.extra().map(|e| e.roles.as_slice()).unwrap_or_default();
        if roles.is_empty() {
            return None;
        }
        let root = &self.roots[&node.root];
        let excess = |role: &Role| {
            let counter = |rule: &LimitRule| role_counter(node, currency, rule.window);
            role.limits
                .iter()
                .find_map(|rule| over(rule, counter(rule)))
                .map(|o| format!("role {:?}: {o}", role.name))
        };
        let mut assigned = roles
            .iter()
            .filter_map(|name| root.roles.iter().find(|r| &r.name == name));
        match root.resolution {
            RoleResolution::MostRestrictive => assigned.find_map(excess),
            // One role with room is enough; report the first role's excess when none has it.
            RoleResolution::MostPermissive => {
                let mut first = None;
                for role in assigned {
                    first.get_or_insert(excess(role)?);
                }
                first
            }
        }
    }

    /// Structural invariants that hold after every applied command (I2, and the bookkeeping
    /// that I1 and I3 rest on). Cost is linear in the state: for restore, snapshots, tests
    /// and audits.
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        self.check_tree()?;
        let layout = AccountLayout::of(self);
        let sums = self.sum_holds(&layout)?;
        self.check_accounts(&layout, &sums)?;
        self.check_grants(&sums.grant_held)?;
        self.check_expired()?;
        self.check_webhooks()?;
        self.check_holds_per_root()?;
        self.check_tree_indexes()?;
        self.dedup.check()?;
        self.check_tokens()
    }

    /// The open-hold count of each root is its holds, counted.
    fn check_holds_per_root(&self) -> std::result::Result<(), String> {
        let mut counted: crate::hash::FxHashMap<u64, u64> = Default::default();
        for hold in self.holds.values() {
            *counted.entry(self.node(hold.node).root).or_default() += 1;
        }
        if counted != self.holds_per_root {
            return Err("invariant `each root's open-hold count is its holds` broken".into());
        }
        Ok(())
    }

    /// The depth counts and role holders kept as nodes change are the nodes, counted.
    fn check_tree_indexes(&self) -> std::result::Result<(), String> {
        fn trimmed(counts: &[u64]) -> &[u64] {
            let len = counts.iter().rposition(|&c| c > 0).map_or(0, |at| at + 1);
            &counts[..len]
        }
        let (at_depth, holders) = self.tree_indexes();
        if trimmed(&at_depth) != trimmed(&self.nodes_at_depth) {
            return Err("invariant `nodes are counted at their depth` broken".into());
        }
        if holders != self.role_holders {
            return Err("invariant `each role lists its holders` broken".into());
        }
        Ok(())
    }

    /// Every node one level below its parent, in its parent's root and child list, within the
    /// depth limit (so walking up a path ends at a root); one account per root currency.
    fn check_tree(&self) -> std::result::Result<(), String> {
        if self.config.depth_max == 0 || self.config.depth_max > limits::DEPTH_MAX_CEILING {
            return Err(format!(
                "depth_max {} is out of range",
                self.config.depth_max
            ));
        }
        let count = self.nodes.len() as u64;
        if count > limits::NODES_MAX {
            return Err(format!("{count} nodes, more than the ceiling"));
        }
        let (mut roots, mut children) = (0usize, 0usize);
        for (i, node) in self.nodes.iter().enumerate() {
            let id = i as u64 + 1;
            let root = self
                .roots
                .get(&node.root)
                .ok_or_else(|| format!("node {id} has no root"))?;
            if node.accounts.len() != root.currencies.len() {
                return Err(format!(
                    "node {id} has {} accounts for {} currencies",
                    node.accounts.len(),
                    root.currencies.len()
                ));
            }
            let placed = if node.parent == 0 {
                roots += 1;
                node.root == id && node.depth == 1
            } else {
                node.parent <= count && {
                    let parent = self.node(node.parent);
                    u16::from(node.depth) == u16::from(parent.depth) + 1 && node.root == parent.root
                }
            };
            if !placed || node.depth > self.config.depth_max {
                return Err(format!("node {id} is not one level below its parent"));
            }
            if usize::from(node.kind) >= self.kinds.len() {
                return Err(format!("node {id} has an unknown kind"));
            }
            for &child in &node.children {
                if child == 0 || child > count || self.node(child).parent != id {
                    return Err(format!("node {id} lists {child}, not its child"));
                }
            }
            children += node.children.len();
        }
        if roots != self.roots.len() || children + roots != self.nodes.len() {
            return Err(format!(
                "{roots} root nodes for {} roots, {children} children listed for {} nodes",
                self.roots.len(),
                self.nodes.len()
            ));
        }
        Ok(())
    }

    /// Sums the open holds per account and per grant, checking each hold on the way.
    fn sum_holds(&self, layout: &AccountLayout) -> std::result::Result<HoldSums, String> {
        let count = self.nodes.len() as u64;
        let mut sums = HoldSums {
            held: vec![0; layout.len],
            holds_open: vec![0; self.nodes.len()],
            grant_held: BTreeMap::new(),
        };
        for hold in self.holds.values() {
            let (id, c) = (hold.id, usize::from(hold.currency));
            if hold.node == 0 || hold.node > count {
                return Err(format!("hold {id} on a missing node"));
            }
            if id == 0 || id >= self.next_reservation_id || hold.amount == 0 {
                return Err(format!(
                    "hold {id} has an id not given yet, or holds nothing"
                ));
            }
            if c >= self.node(hold.node).accounts.len() {
                return Err(format!("hold {id} in an undeclared currency"));
            }
            if !self.hold_due.contains(&(hold.expires_at_ms, id)) {
                return Err(format!("hold {id} is missing from the expiry queue"));
            }
            if !self.holds_by_node.contains(&(hold.node, id)) {
                return Err(format!("hold {id} is missing from its node's index"));
            }
            sums.holds_open[hold.node as usize - 1] += 1;
            for &at in self.path_ids(hold.node).as_slice() {
                let held = &mut sums.held[layout.at(at, c)];
                *held = held.checked_add(hold.amount).ok_or("held overflows")?;
            }
            let planned = hold.plan.iter().try_fold(0u64, |sum, &(g, part)| {
                let grant = sums.grant_held.entry(g).or_default();
                *grant = grant.checked_add(part)?;
                (part > 0).then_some(sum.checked_add(part)?)
            });
            if !hold.plan.is_empty() && planned != Some(hold.amount) {
                return Err(format!("hold {id} plans {planned:?} of {}", hold.amount));
            }
        }
        if self.hold_due.len() != self.holds.len() || self.holds_by_node.len() != self.holds.len() {
            return Err(format!(
                "the expiry queue lists {} holds and the node index {}, {} are open",
                self.hold_due.len(),
                self.holds_by_node.len(),
                self.holds.len()
            ));
        }
        Ok(sums)
    }

    /// Held and subtree debt sum the subtree; open holds are counted where they are placed.
    fn check_accounts(
        &self,
        layout: &AccountLayout,
        sums: &HoldSums,
    ) -> std::result::Result<(), String> {
        let mut subtree_debt = vec![0u64; layout.len];
        for (i, node) in self.nodes.iter().enumerate() {
            for (c, account) in node.accounts.iter().enumerate() {
                if account.debt > 0 {
                    for &id in self.path_ids(i as u64 + 1).as_slice() {
                        let debt = &mut subtree_debt[layout.at(id, c)];
                        *debt = debt.checked_add(account.debt).ok_or("debt overflows")?;
                    }
                }
            }
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let id = i as u64 + 1;
            if node.holds_open != sums.holds_open[i] {
                return Err(format!(
                    "node {id} counts {} open holds, has {}",
                    node.holds_open, sums.holds_open[i]
                ));
            }
            for (c, account) in node.accounts.iter().enumerate() {
                let at = layout.at(id, c);
                if account.held != sums.held[at] {
                    return Err(format!(
                        "node {id} holds {} but its subtree's holds sum to {}",
                        account.held, sums.held[at]
                    ));
                }
                if account.subtree_debt != subtree_debt[at] {
                    return Err(format!(
                        "node {id} subtree debt {} != {}",
                        account.subtree_debt, subtree_debt[at]
                    ));
                }
            }
        }
        Ok(())
    }

    /// I2 for every grant, its held part equal to what the holds plan on it, its owner listing
    /// it, its currency funded, and its next due time queued.
    fn check_grants(&self, grant_held: &BTreeMap<u64, u64>) -> std::result::Result<(), String> {
        let mut due = 0;
        for grant in self.grants.values() {
            let id = grant.id;
            if id == 0 || id >= self.next_grant_id {
                return Err(format!("grant {id} has an id not given yet"));
            }
            let owner = (grant.node != 0 && grant.node <= self.nodes.len() as u64)
                .then(|| self.node(grant.node))
                .ok_or_else(|| format!("grant {id} of a missing node"))?;
            let funded = self.roots[&owner.root]
                .currencies
                .get(usize::from(grant.currency))
                .is_some_and(|c| c.funded);
            let listed = owner.extra().is_some_and(|e| e.grants.contains(&id));
            if !funded || !listed {
                return Err(format!(
                    "grant {id} is not a listed grant of a funded currency"
                ));
            }
            if grant.held > grant.remaining {
                return Err(format!(
                    "grant {id} holds {} of {} remaining (I2)",
                    grant.held, grant.remaining
                ));
            }
            let expected = grant_held.get(&id).copied().unwrap_or(0);
            if grant.held != expected {
                return Err(format!(
                    "grant {id} held {} but holds plan {expected}",
                    grant.held
                ));
            }
            if grant.expired && grant.remaining != grant.held {
                return Err(format!("expired grant {id} keeps more than it holds"));
            }
            if let Some(at) = grant.due_ms() {
                if !self.grant_due.contains(&(at, id)) {
                    return Err(format!("grant {id} is missing from the due queue"));
                }
                due += 1;
            }
        }
        if due != self.grant_due.len() {
            return Err(format!(
                "{due} grants are due, the queue lists {}",
                self.grant_due.len()
            ));
        }
        match grant_held.keys().find(|g| !self.grants.contains_key(g)) {
            Some(g) => Err(format!("a hold plans on missing grant {g}")),
            None => Ok(()),
        }
    }

    /// Remembered expired holds were reservations once, and are no longer open.
    fn check_expired(&self) -> std::result::Result<(), String> {
        for id in self.expired.keys() {
            if *id == 0 || *id >= self.next_reservation_id || self.holds.contains_key(id) {
                return Err(format!("expired hold {id} is open or was never given"));
            }
        }
        Ok(())
    }
}

/// Where each node's accounts sit in one flat vector: a linear check of a million nodes
/// allocates two vectors, not two per node.
struct AccountLayout {
    base: Vec<usize>,
    len: usize,
}

impl AccountLayout {
    fn of(state: &State) -> Self {
        let mut base = Vec::with_capacity(state.nodes.len());
        let mut len = 0;
        for node in &state.nodes {
            base.push(len);
            len += node.accounts.len();
        }
        AccountLayout { base, len }
    }

    fn at(&self, id: u64, currency: usize) -> usize {
        self.base[(id - 1) as usize] + currency
    }
}

struct HoldSums {
    /// Per account, in [`AccountLayout`] order.
    held: Vec<u64>,
    holds_open: Vec<u32>,
    /// Per grant id: what the holds' plans place on it.
    grant_held: BTreeMap<u64, u64>,
}

#[cfg(test)]
mod tests {
    //! The checks must fire: each test breaks the state the way a bookkeeping bug would (the
    //! rules never do) and expects the invariant's name in the refusal or the panic.

    use super::*;
    use crate::command::*;

    const NOW: u64 = 1_780_000_000_000;

    /// `acme` (funded usd, a 1,000 lifetime hard cap) with a child `team`, and one granted
    /// hold of 100 on `team` funded by a grant of 10,000 at `acme`.
    fn small() -> State {
        let mut state = State::new();
        let mut seq = 0;
        let mut apply = |state: &mut State, op: Op| {
            seq += 1;
            let applied = state.apply(NOW, Command::new(format!("t{seq}"), NOW, op));
            applied.expect("the setup applies").outcome
        };
        let currencies = vec![CurrencySpec {
            code: "usd".into(),
            scale: 2,
            funded: true,
        }];
        let root = RootSpec {
            currencies,
            no_default_cap: true,
        };
        for (parent, name, root) in [(None, "acme", Some(root)), (Some("acme"), "team", None)] {
            let create = CreateNode {
                parent: parent.map(NodeRef::from),
                name: name.into(),
                kind: "org".into(),
                tags: Vec::new(),
                root,
            };
            apply(&mut state, Op::CreateNode(create));
        }
        let limit = LimitSpec {
            currency: "usd".into(),
            amount: 1_000,
            window: Window::Lifetime,
            mode: LimitMode::Hard,
            thresholds: Vec::new(),
            on_exhausted: OnExhausted::Deny,
        };
        apply(
            &mut state,
            Op::SetLimit {
                node: "acme".into(),
                limit,
            },
        );
        let grant = GrantSpec {
            currency: "usd".into(),
            amount: 10_000,
            priority: 0,
            kind: GrantKind::Prepaid,
            effective_at_ms: None,
            expires_at_ms: None,
            recur: None,
            rollover: Rollover::None,
        };
        apply(
            &mut state,
            Op::AddGrant {
                node: "acme".into(),
                grant,
            },
        );
        apply(&mut state, reserve(100));
        state
    }

    fn reserve(amount: i64) -> Op {
        Op::Reserve(Reserve {
            node: "acme/team".into(),
            currency: "usd".into(),
            amount: Amount::Exact(amount),
            ttl_ms: 60_000,
            attrs: Attributes::default(),
        })
    }

    #[test]
    fn a_sound_state_passes_every_check() {
        let state = small();
        assert_eq!(state.check_invariants(), Ok(()));
        assert!(State::restore(&state.snapshot()).is_ok());
    }

    #[test]
    #[should_panic(expected = "invariant broken when building a snapshot: node 1 holds 101")]
    fn a_snapshot_is_not_built_from_a_broken_state() {
        let mut state = small();
        state.nodes[0].accounts[0].held += 1;
        state.snapshot();
    }

    #[test]
    fn restore_refuses_a_tree_out_of_shape() {
        let mut state = small();
        state.nodes[1].depth = 3;
        let refused = State::restore(&state.encode()).expect_err("refused");
        assert!(
            refused
                .message
                .contains("node 2 is not one level below its parent"),
            "{}",
            refused.message
        );
    }

    #[test]
    #[should_panic(expected = "invariant `held and debt sum the subtree` broken")]
    fn apply_checks_the_path_it_touched() {
        let mut state = small();
        state.nodes[0].accounts[0].held = 0;
        let _ = state.apply(NOW, Command::new("again", NOW, reserve(5)));
    }

    #[test]
    #[should_panic(expected = "invariant `I2: a grant is never overdrawn` broken: grant 1")]
    fn an_overdrawn_grant_is_caught() {
        let mut state = small();
        state.grants.get_mut(&1).expect("grant 1").remaining = 100;
        state.grants.get_mut(&1).expect("grant 1").held = 200;
        state.assert_grant_balanced(1);
    }

    #[test]
    #[should_panic(expected = "invariant `I1: held and spent within hard limits` broken at node 1")]
    fn a_cap_overshot_after_a_grant_is_caught() {
        let mut state = small();
        // What an evaluation that skipped the root's cap would leave behind.
        state.nodes[0].accounts[0].held = 1_001;
        state.nodes[1].accounts[0].held = 1_001;
        assert!(state.hard_limit_over(1, 0, NOW).is_some());
        assert!(
            state.hard_limit_over(2, 0, NOW).is_none(),
            "the child has no cap"
        );
        state.assert_within_caps(2, 0, NOW);
    }

    #[test]
    #[should_panic(expected = "invariant `ids are monotonic, one per creation` broken")]
    fn an_id_that_did_not_advance_is_caught() {
        let state = small();
        let before = Before::of(&state, state.now_ms);
        before.assert_advanced(&state, &Outcome::NodeCreated { node_id: 3 }, 0);
    }

    #[test]
    #[should_panic(expected = "invariant `an error changes nothing` broken")]
    fn an_error_that_changed_an_id_is_caught() {
        let mut state = small();
        let before = Before::of(&state, state.now_ms);
        state.next_grant_id += 1;
        before.assert_unchanged_by_error(&state, &Ctx::new(NOW));
    }
}
