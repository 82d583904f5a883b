//! Shared helpers for the rule-by-rule tests (`tests/rules.rs`, `tests/bad_input.rs`).
//!
//! A tiny DSL over [`State::apply`]: a world with its own clock and request-id counter, UTC
//! timestamps computed independently of the crate's calendar code, and helpers that unwrap the
//! outcome they expect (and fail the test, naming the outcome, when it is something else).
#![allow(dead_code)]

use purser_core::*;

pub const SEC: u64 = 1_000;
pub const MIN: u64 = 60 * SEC;
pub const HOUR: u64 = 60 * MIN;
pub const DAY: u64 = 24 * HOUR;
/// 2^53 - 1, the largest amount a command may carry.
pub const AMOUNT_MAX: u64 = (1 << 53) - 1;

pub const LIFETIME: Window = Window::Lifetime;
pub const HOURLY: Window = Window::Calendar(Period::Hour);
pub const DAILY: Window = Window::Calendar(Period::Day);
pub const WEEKLY: Window = Window::Calendar(Period::Week);
pub const MONTHLY: Window = Window::Calendar(Period::Month);

pub fn sliding(duration_ms: u64) -> Window {
    Window::Sliding { duration_ms }
}

pub fn first_use(duration_ms: u64) -> Window {
    Window::FirstUse { duration_ms }
}

// ---- calendar, written independently of purser_core::time ----------------------------------

fn is_leap(y: u64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

pub fn days_in_month(y: u64, m: u64) -> u64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => panic!("month {m}"),
    }
}

/// Days since 1970-01-01 (by counting, no clever formula).
pub fn days(y: u64, m: u64, d: u64) -> u64 {
    assert!(
        y >= 1970 && (1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m),
        "bad date {y}-{m}-{d}"
    );
    let mut n = 0;
    for year in 1970..y {
        n += if is_leap(year) { 366 } else { 365 };
    }
    for month in 1..m {
        n += days_in_month(y, month);
    }
    n + d - 1
}

/// UTC timestamp in ms of `y-m-d h:00:00.000`.
pub fn t(y: u64, m: u64, d: u64, h: u64) -> u64 {
    days(y, m, d) * DAY + h * HOUR
}

/// UTC timestamp in ms of `y-m-d h:mi:00.000`.
pub fn tm(y: u64, m: u64, d: u64, h: u64, mi: u64) -> u64 {
    t(y, m, d, h) + mi * MIN
}

/// ISO weekday of a date: 1 = Monday ... 7 = Sunday (1970-01-01 was a Thursday).
pub fn weekday(y: u64, m: u64, d: u64) -> u64 {
    (days(y, m, d) + 3) % 7 + 1
}

// ---- specs ----------------------------------------------------------------------------------

pub fn currency(code: &str, scale: u8, funded: bool) -> CurrencySpec {
    CurrencySpec {
        code: code.into(),
        scale,
        funded,
    }
}

pub fn limit(currency: &str, amount: u64, window: Window, mode: LimitMode) -> LimitSpec {
    LimitSpec {
        currency: currency.into(),
        amount: amount as i64,
        window,
        mode,
        thresholds: vec![],
        on_exhausted: OnExhausted::Deny,
    }
}

pub fn hard(currency: &str, amount: u64, window: Window) -> LimitSpec {
    limit(currency, amount, window, LimitMode::Hard)
}

pub fn soft(currency: &str, amount: u64, window: Window) -> LimitSpec {
    limit(currency, amount, window, LimitMode::Soft)
}

pub fn pausing(mut spec: LimitSpec) -> LimitSpec {
    spec.on_exhausted = OnExhausted::Pause;
    spec
}

pub fn with_thresholds(mut spec: LimitSpec, thresholds: &[u8]) -> LimitSpec {
    spec.thresholds = thresholds.to_vec();
    spec
}

pub fn grant(currency: &str, amount: u64, priority: u32) -> GrantSpec {
    GrantSpec {
        currency: currency.into(),
        amount: amount as i64,
        priority,
        kind: GrantKind::Included,
        effective_at_ms: None,
        expires_at_ms: None,
        recur: None,
        rollover: Rollover::None,
    }
}

pub fn expiring(mut spec: GrantSpec, expires_at_ms: u64) -> GrantSpec {
    spec.expires_at_ms = Some(expires_at_ms);
    spec
}

pub fn model(name: &str) -> Attributes {
    Attributes {
        model: Some(name.into()),
        ..Attributes::default()
    }
}

pub fn tokens(
    provider: &str,
    model: &str,
    input: u64,
    output: u64,
    cached: u64,
    reasoning: u64,
) -> TokenUsage {
    TokenUsage {
        provider: provider.into(),
        model: model.into(),
        input,
        output,
        cached_input: cached,
        reasoning,
    }
}

pub fn part(grant_id: u64, node: u64, amount: u64) -> FundingPart {
    FundingPart {
        grant_id,
        node,
        amount,
    }
}

/// The governance events among `events`, in order.
pub fn governance(events: &[Event]) -> Vec<GovernanceEvent> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Governance(g) => Some(g.clone()),
            _ => None,
        })
        .collect()
}

/// The threshold percentages crossed among `events`, as `(node, percent)`.
pub fn crossings(events: &[Event]) -> Vec<(u64, u8)> {
    governance(events)
        .into_iter()
        .filter_map(|g| match g {
            GovernanceEvent::ThresholdCrossed { node, percent, .. } => Some((node, percent)),
            _ => None,
        })
        .collect()
}

// ---- the world --------------------------------------------------------------------------------

/// A state with a test-side clock. Every client command gets a fresh request id, sent now.
pub struct World {
    pub s: State,
    pub now: u64,
    seq: u64,
}

impl World {
    pub fn new(now: u64) -> Self {
        World {
            s: State::new(),
            now,
            seq: 0,
        }
    }

    /// Moves the test clock to `now` (forward only).
    #[track_caller]
    pub fn at(&mut self, now: u64) -> &mut Self {
        assert!(now >= self.now, "the test clock goes forward only");
        self.now = now;
        self
    }

    pub fn later(&mut self, ms: u64) -> &mut Self {
        self.now += ms;
        self
    }

    pub fn next_request_id(&mut self) -> String {
        self.seq += 1;
        format!("req-{}", self.seq)
    }

    pub fn command(&mut self, op: Op) -> Command {
        let id = self.next_request_id();
        Command::new(id, self.now, op)
    }

    pub fn try_apply(&mut self, op: Op) -> Result<Applied> {
        let command = self.command(op);
        self.s.apply(self.now, command)
    }

    #[track_caller]
    pub fn ok(&mut self, op: Op) -> Applied {
        let shown = format!("{op:?}");
        match self.try_apply(op) {
            Ok(applied) => applied,
            Err(e) => panic!("{shown} failed: {e}"),
        }
    }

    #[track_caller]
    pub fn done(&mut self, op: Op) -> Vec<Event> {
        let applied = self.ok(op);
        assert_eq!(applied.outcome, Outcome::Done);
        applied.events
    }

    #[track_caller]
    pub fn err(&mut self, op: Op) -> Error {
        let shown = format!("{op:?}");
        let before = self.s.digest();
        match self.try_apply(op) {
            Ok(applied) => panic!("{shown} should have failed, got {applied:?}"),
            Err(e) => {
                assert_eq!(
                    self.s.digest(),
                    before,
                    "a failed command changed the state"
                );
                e
            }
        }
    }

    #[track_caller]
    pub fn tick(&mut self) -> Applied {
        self.s
            .apply(self.now, Command::tick())
            .expect("tick never fails")
    }

    /// A root with `no_default_cap` set, so tests add exactly the limits they mean.
    #[track_caller]
    pub fn root(&mut self, name: &str, currencies: &[CurrencySpec]) -> u64 {
        self.root_with(name, currencies, true)
    }

    #[track_caller]
    pub fn root_with(
        &mut self,
        name: &str,
        currencies: &[CurrencySpec],
        no_default_cap: bool,
    ) -> u64 {
        let op = Op::CreateNode(CreateNode {
            parent: None,
            name: name.into(),
            kind: "tenant".into(),
            tags: vec![],
            root: Some(RootSpec {
                currencies: currencies.to_vec(),
                no_default_cap,
            }),
        });
        match self.ok(op).outcome {
            Outcome::NodeCreated { node_id } => node_id,
            other => panic!("expected NodeCreated, got {other:?}"),
        }
    }

    #[track_caller]
    pub fn child(&mut self, parent: u64, name: &str) -> u64 {
        let op = create_child(parent, name);
        match self.ok(op).outcome {
            Outcome::NodeCreated { node_id } => node_id,
            other => panic!("expected NodeCreated, got {other:?}"),
        }
    }

    #[track_caller]
    pub fn set_limit(&mut self, node: u64, limit: LimitSpec) {
        self.done(Op::SetLimit {
            node: node.into(),
            limit,
        });
    }

    pub fn reserve_op(node: u64, currency: &str, amount: Amount, attrs: Attributes) -> Op {
        Op::Reserve(Reserve {
            node: node.into(),
            currency: currency.into(),
            amount,
            ttl_ms: MIN,
            attrs,
        })
    }

    #[track_caller]
    pub fn try_reserve(
        &mut self,
        node: u64,
        currency: &str,
        amount: Amount,
        attrs: Attributes,
    ) -> Applied {
        self.ok(Self::reserve_op(node, currency, amount, attrs))
    }

    #[track_caller]
    pub fn reserve(&mut self, node: u64, currency: &str, amount: u64) -> Reservation {
        let applied = self.try_reserve(
            node,
            currency,
            Amount::Exact(amount as i64),
            Attributes::default(),
        );
        expect_reserved(applied.outcome)
    }

    #[track_caller]
    pub fn reserve_ttl(
        &mut self,
        node: u64,
        currency: &str,
        amount: u64,
        ttl_ms: u64,
    ) -> Reservation {
        let op = Op::Reserve(Reserve {
            node: node.into(),
            currency: currency.into(),
            amount: Amount::Exact(amount as i64),
            ttl_ms,
            attrs: Attributes::default(),
        });
        expect_reserved(self.ok(op).outcome)
    }

    #[track_caller]
    pub fn reserve_range(&mut self, node: u64, currency: &str, min: u64, max: u64) -> Reservation {
        let amount = Amount::Range {
            min: min as i64,
            max: max as i64,
        };
        expect_reserved(
            self.try_reserve(node, currency, amount, Attributes::default())
                .outcome,
        )
    }

    #[track_caller]
    pub fn deny(&mut self, node: u64, currency: &str, amount: u64) -> Denial {
        let applied = self.try_reserve(
            node,
            currency,
            Amount::Exact(amount as i64),
            Attributes::default(),
        );
        expect_denied(applied.outcome)
    }

    #[track_caller]
    pub fn deny_range(&mut self, node: u64, currency: &str, min: u64, max: u64) -> Denial {
        let amount = Amount::Range {
            min: min as i64,
            max: max as i64,
        };
        expect_denied(
            self.try_reserve(node, currency, amount, Attributes::default())
                .outcome,
        )
    }

    #[track_caller]
    pub fn settle_with(&mut self, reservation_id: u64, actual: Actual) -> (Settlement, Vec<Event>) {
        let applied = self.ok(Op::Settle {
            reservation_id,
            actual,
        });
        match applied.outcome {
            Outcome::Settled(s) => (s, applied.events),
            other => panic!("expected Settled, got {other:?}"),
        }
    }

    #[track_caller]
    pub fn settle(&mut self, reservation_id: u64, amount: u64) -> (Settlement, Vec<Event>) {
        self.settle_with(reservation_id, Actual::Amount(amount as i64))
    }

    #[track_caller]
    pub fn release(&mut self, reservation_id: u64) -> u64 {
        match self.ok(Op::Release { reservation_id }).outcome {
            Outcome::Released {
                reservation_id: r,
                amount,
            } => {
                assert_eq!(r, reservation_id);
                amount
            }
            other => panic!("expected Released, got {other:?}"),
        }
    }

    pub fn charge_op(node: u64, currency: &str, amount: u64) -> Op {
        Op::Charge(Charge {
            node: node.into(),
            currency: currency.into(),
            actual: Actual::Amount(amount as i64),
            attrs: Attributes::default(),
        })
    }

    #[track_caller]
    pub fn charge(&mut self, node: u64, currency: &str, amount: u64) -> (Settlement, Vec<Event>) {
        let applied = self.ok(Self::charge_op(node, currency, amount));
        match applied.outcome {
            Outcome::Charged(s) => (s, applied.events),
            other => panic!("expected Charged, got {other:?}"),
        }
    }

    #[track_caller]
    pub fn charge_denied(&mut self, node: u64, currency: &str, amount: u64) -> Denial {
        expect_denied(self.ok(Self::charge_op(node, currency, amount)).outcome)
    }

    #[track_caller]
    pub fn add_grant(&mut self, node: u64, spec: GrantSpec) -> (u64, Vec<Event>) {
        let applied = self.ok(Op::AddGrant {
            node: node.into(),
            grant: spec,
        });
        match applied.outcome {
            Outcome::GrantAdded { grant_id } => (grant_id, applied.events),
            other => panic!("expected GrantAdded, got {other:?}"),
        }
    }

    #[track_caller]
    pub fn grant_view(&self, grant_id: u64) -> GrantView {
        self.s
            .grant(grant_id)
            .unwrap_or_else(|| panic!("grant {grant_id} is gone"))
    }

    /// The node's own limit on `(currency, window)`, read at the world's clock.
    #[track_caller]
    pub fn own_limit(&self, node: u64, currency: &str, window: Window) -> LimitView {
        self.s
            .usage(node, self.now)
            .expect("node exists")
            .into_iter()
            .find(|l| l.role.is_none() && l.currency == currency && l.window == window)
            .unwrap_or_else(|| panic!("node {node} has no own {currency} {window:?} limit"))
    }

    #[track_caller]
    pub fn role_limit(&self, node: u64, role: &str, currency: &str, window: Window) -> LimitView {
        self.s
            .usage(node, self.now)
            .expect("node exists")
            .into_iter()
            .find(|l| {
                l.role.as_deref() == Some(role) && l.currency == currency && l.window == window
            })
            .unwrap_or_else(|| panic!("node {node} has no {role} {currency} {window:?} limit"))
    }

    /// Spend in the window current at the world's clock.
    pub fn spent(&self, node: u64, currency: &str, window: Window) -> u64 {
        self.own_limit(node, currency, window).spent
    }

    #[track_caller]
    pub fn account(&self, node: u64, currency: &str) -> AccountView {
        self.s
            .node_view(node, self.now)
            .expect("node exists")
            .accounts
            .into_iter()
            .find(|a| a.currency == currency)
            .unwrap_or_else(|| panic!("node {node} has no {currency} account"))
    }

    pub fn status(&self, node: u64) -> NodeStatus {
        self.s
            .node_view(node, self.now)
            .expect("node exists")
            .status
    }

    #[track_caller]
    pub fn invariants(&self) {
        if let Err(why) = self.s.check_invariants() {
            panic!("invariants broken: {why}");
        }
    }
}

pub fn create_child(parent: u64, name: &str) -> Op {
    Op::CreateNode(CreateNode {
        parent: Some(parent.into()),
        name: name.into(),
        kind: "team".into(),
        tags: vec![],
        root: None,
    })
}

#[track_caller]
pub fn expect_reserved(outcome: Outcome) -> Reservation {
    match outcome {
        Outcome::Reserved(r) => r,
        other => panic!("expected Reserved, got {other:?}"),
    }
}

#[track_caller]
pub fn expect_denied(outcome: Outcome) -> Denial {
    match outcome {
        Outcome::Denied(d) => d,
        other => panic!("expected Denied, got {other:?}"),
    }
}
