//! Hand-written scenarios for paths that random sequences reach rarely. Every command goes
//! through the same harness as the properties (real state vs reference model, views,
//! invariants), and the key answers are also pinned here, worked out by hand from
//! `docs/semantics.md`.

use purser_core::{
    Actual, Amount, Attributes, Command, CreateNode, CurrencySpec, Denial, DenyRule, ErrorKind,
    GovernanceEvent, GrantKind, GrantSpec, LimitMode, LimitSpec, NodeRef, OnExhausted, Op, Outcome,
    Period, RateKind, RateLimitSpec, Reserve, RoleResolution, Rollover, RootSpec, Window,
};

use super::cal::{self, DAY, MINUTE};
use super::harness::Run;

pub struct Script {
    run: Run,
    t: u64,
    n: u64,
}

pub type Answer = Result<(Outcome, Vec<GovernanceEvent>), ErrorKind>;

impl Script {
    pub fn new(t: u64) -> Self {
        Script {
            run: Run::new(),
            t,
            n: 0,
        }
    }

    pub fn advance(&mut self, ms: u64) {
        self.t += ms;
    }

    /// Applies a client command (fresh request id, sent now) through the harness.
    pub fn op(&mut self, op: Op) -> Answer {
        self.n += 1;
        let cmd = Command::new(format!("s{}", self.n), self.t, op);
        self.send(cmd)
    }

    pub fn send(&mut self, cmd: Command) -> Answer {
        match self.run.step(self.t, cmd) {
            Ok(r) => r
                .map(|a| {
                    let gov = a
                        .events
                        .into_iter()
                        .filter_map(|e| match e {
                            purser_core::Event::Governance(g) => Some(g),
                            _ => None,
                        })
                        .collect();
                    (a.outcome, gov)
                })
                .map_err(|e| e.kind),
            Err(failure) => panic!("{failure}"),
        }
    }

    pub fn tick(&mut self) -> Answer {
        self.send(Command::tick())
    }

    pub fn finish(mut self) {
        if let Err(failure) = self.run.sweep() {
            panic!("{failure}");
        }
    }
}

pub fn root(name: &str, funded: bool) -> Op {
    Op::CreateNode(CreateNode {
        parent: None,
        name: name.into(),
        kind: "org".into(),
        tags: vec![],
        root: Some(RootSpec {
            currencies: vec![CurrencySpec {
                code: "usd".into(),
                scale: 0,
                funded,
            }],
            no_default_cap: true,
        }),
    })
}

pub fn child(parent: u64, name: &str) -> Op {
    Op::CreateNode(CreateNode {
        parent: Some(NodeRef::Id(parent)),
        name: name.into(),
        kind: "team".into(),
        tags: vec![],
        root: None,
    })
}

pub fn limit(window: Window, amount: i64, hard: bool) -> LimitSpec {
    LimitSpec {
        currency: "usd".into(),
        amount,
        window,
        mode: if hard {
            LimitMode::Hard
        } else {
            LimitMode::Soft
        },
        thresholds: vec![],
        on_exhausted: OnExhausted::Deny,
    }
}

pub fn reserve(node: u64, min: i64, max: i64) -> Op {
    Op::Reserve(Reserve {
        node: NodeRef::Id(node),
        currency: "usd".into(),
        amount: if min == max {
            Amount::Exact(min)
        } else {
            Amount::Range { min, max }
        },
        ttl_ms: MINUTE,
        attrs: Attributes::default(),
    })
}

pub fn grant(
    node: u64,
    amount: i64,
    recur: Option<Period>,
    rollover: Rollover,
    effective_at_ms: Option<u64>,
    expires_at_ms: Option<u64>,
) -> Op {
    Op::AddGrant {
        node: NodeRef::Id(node),
        grant: GrantSpec {
            currency: "usd".into(),
            amount,
            priority: 0,
            kind: GrantKind::Included,
            effective_at_ms,
            expires_at_ms,
            recur,
            rollover,
        },
    }
}

pub fn settle(reservation_id: u64, actual: i64) -> Op {
    Op::Settle {
        reservation_id,
        actual: Actual::Amount(actual),
    }
}

fn denial(a: &Answer) -> Denial {
    match a {
        Ok((Outcome::Denied(d), _)) => d.clone(),
        other => panic!("expected a denial, got {other:?}"),
    }
}

fn granted(a: &Answer) -> u64 {
    match a {
        Ok((Outcome::Reserved(r), _)) => r.amount,
        other => panic!("expected a reservation, got {other:?}"),
    }
}

/// Role resolution: ties, unlimited roles, soft-only roles, and the room a move must find.
pub fn roles_and_moves() {
    let mut s = Script::new(cal::at(2024, 1, 31, 22));
    s.op(root("acme", false)).expect("root");
    s.op(child(1, "a")).expect("a");
    s.op(child(2, "b")).expect("b");
    s.op(child(1, "c")).expect("c");
    let role = |name: &str, limits: Vec<LimitSpec>| Op::DefineRole {
        root: NodeRef::Id(1),
        name: name.into(),
        limits,
    };
    s.op(role(
        "r1",
        vec![
            limit(Window::Lifetime, 10, true),
            limit(Window::Calendar(Period::Day), 8, true),
        ],
    ))
    .expect("r1");
    s.op(role(
        "r2",
        vec![limit(Window::Calendar(Period::Hour), 8, true)],
    ))
    .expect("r2");
    s.op(role("r3", vec![limit(Window::Lifetime, 3, false)]))
        .expect("r3");
    s.op(Op::SetRoleResolution {
        root: NodeRef::Id(1),
        resolution: RoleResolution::MostPermissive,
    })
    .expect("permissive");
    let assign = |node: u64, roles: &[&str]| Op::AssignRoles {
        node: NodeRef::Id(node),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
    };
    s.op(assign(3, &["r2", "r1"])).expect("assign");
    // r2 allows 8, r1 allows min(10, 8) = 8: a tie, the first role in the member's order.
    let d = denial(&s.op(reserve(3, 9, 9)));
    assert_eq!(
        (d.rule, d.window, d.remaining),
        (
            DenyRule::RoleCap { role: "r2".into() },
            Some(Window::Calendar(Period::Hour)),
            8
        )
    );
    assert_eq!(
        d.retry_after_ms, None,
        "held + min > amount: waiting cannot help"
    );
    assert_eq!(granted(&s.op(reserve(3, 1, 20))), 8);
    // A role without a hard limit in the currency gives unlimited room.
    s.op(assign(3, &["r2", "r1", "r3"])).expect("assign");
    assert_eq!(granted(&s.op(reserve(3, 1, 20))), 20);
    s.op(Op::SetRoleResolution {
        root: NodeRef::Id(1),
        resolution: RoleResolution::MostRestrictive,
    })
    .expect("restrictive");
    let d = denial(&s.op(reserve(3, 1, 20)));
    assert_eq!(
        (d.rule, d.remaining),
        (DenyRule::RoleCap { role: "r2".into() }, 0)
    );
    // Moving b (28 held) under c: c's role limit has room for 8 only.
    s.op(assign(4, &["r2"])).expect("assign");
    let moved = s.op(Op::MoveNode {
        node: NodeRef::Id(3),
        new_parent: NodeRef::Id(4),
    });
    assert_eq!(moved, Err(ErrorKind::FailedPrecondition));
    s.op(settle(1, 9)).expect("overrun settle");
    s.op(Op::ResumeNode {
        node: NodeRef::Id(3),
    })
    .expect("resume");
    s.op(Op::Release { reservation_id: 2 }).expect("release");
    s.advance(cal::HOUR);
    let moved = s.op(Op::MoveNode {
        node: NodeRef::Id(3),
        new_parent: NodeRef::Id(4),
    });
    assert_eq!(moved.map(|a| a.0), Ok(Outcome::Done));
    s.finish();
}

/// Debt, its payment by an added, an activated and a renewed grant; many overdue renewals in
/// one tick; an expiry that falls exactly on a renewal.
pub fn renewals_and_debt() {
    let t0 = cal::at(2024, 1, 30, 12);
    let mut s = Script::new(t0);
    s.op(root("acme", true)).expect("root");
    s.op(child(1, "a")).expect("a");
    s.op(grant(1, 10, None, Rollover::None, None, None))
        .expect("grant");
    s.op(reserve(2, 5, 5)).expect("reserve");
    match s.op(settle(1, 30)) {
        Ok((Outcome::Settled(st), _)) => {
            assert_eq!((st.overrun, st.debt, st.plan.len()), (25, 20, 1));
        }
        other => panic!("{other:?}"),
    }
    let third_renewal = cal::end(
        Period::Month,
        cal::end(Period::Month, cal::end(Period::Month, t0)),
    );
    s.op(grant(
        1,
        7,
        Some(Period::Month),
        Rollover::Percent(50),
        None,
        Some(third_renewal),
    ))
    .expect("monthly");
    s.op(grant(
        1,
        4,
        Some(Period::Week),
        Rollover::CapMultiple(2),
        Some(t0 + 3 * DAY),
        None,
    ))
    .expect("weekly, later");
    s.advance(200 * DAY);
    match s.tick() {
        Ok((Outcome::Ticked { grants_expired, .. }, events)) => {
            assert_eq!(
                grants_expired, 1,
                "the monthly grant expires on its third renewal"
            );
            let paid: u64 = events
                .iter()
                .map(|e| match e {
                    GovernanceEvent::DebtPaid { amount, .. } => *amount,
                    _ => 0,
                })
                .sum();
            assert_eq!(paid, 13, "7 at the addition, the rest in the tick");
        }
        other => panic!("{other:?}"),
    }
    s.finish();
}

/// Retry hints of a sliding window and of a cost rate limit.
pub fn sliding_and_rate_retry() {
    let mut s = Script::new(cal::at(2024, 3, 10, 23) + 7);
    s.op(root("acme", false)).expect("root");
    s.op(Op::SetLimit {
        node: NodeRef::Id(1),
        limit: limit(
            Window::Sliding {
                duration_ms: 10 * MINUTE,
            },
            20,
            true,
        ),
    })
    .expect("sliding");
    s.op(Op::SetLimit {
        node: NodeRef::Id(1),
        limit: limit(Window::Calendar(Period::Week), 1000, true),
    })
    .expect("week");
    for id in 1..=5 {
        s.advance(97_000);
        s.op(reserve(1, 4, 4)).expect("reserve");
        s.op(settle(id, 4)).expect("settle");
    }
    let d = denial(&s.op(reserve(1, 2, 9)));
    assert_eq!(
        d.window,
        Some(Window::Sliding {
            duration_ms: 10 * MINUTE
        })
    );
    assert!(d.retry_after_ms.is_some());
    s.op(Op::SetRateLimit {
        node: NodeRef::Id(1),
        rate: RateLimitSpec {
            key: "*".into(),
            kind: RateKind::Cost {
                currency: "usd".into(),
            },
            amount: 5,
            period_ms: 10_000,
        },
    })
    .expect("rate");
    s.advance(10 * MINUTE);
    let d = denial(&s.op(reserve(1, 6, 6)));
    assert_eq!(
        (d.remaining, d.retry_after_ms),
        (5, None),
        "asked more than the burst"
    );
    assert_eq!(granted(&s.op(reserve(1, 1, 9))), 5);
    let d = denial(&s.op(reserve(1, 2, 2)));
    assert_eq!(d.retry_after_ms, Some(4_000), "two units at 2 s each");
    s.finish();
}
