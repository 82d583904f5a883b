//! Random command sequences. Actions are abstract (selectors, small numbers) and resolved into
//! concrete [`Command`]s against the reference model's state when they run, so that every
//! shrunk sequence is still meaningful.

use proptest::collection::vec;
use proptest::prelude::*;
use purser_core::{
    Actual, Amount, Attributes, Charge, Command, ConfigPatch, CreateNode, CurrencySpec, GrantKind,
    GrantSpec, LimitMode, LimitSpec, NodeRef, OnExhausted, Op, Period, PriceSpec, RateKind,
    RateLimitSpec, Reserve, RoleResolution, Rollover, RootSpec, TokenUsage, Window,
};

use super::cal::{self, DAY, HOUR, MINUTE, SECOND};
use super::narrow::narrowed;
use super::reference::{Model, AMOUNT_MAX};

#[derive(Clone, Debug)]
pub enum Dt {
    Same,
    Ms(u64),
    Secs(u64),
    Minutes(u64),
    /// To the next boundary of the period, plus an offset in -2..=2 ms (or a bit more).
    Boundary(Period, i64),
    Days(u64),
    Back(u64),
}

#[derive(Clone, Debug)]
pub enum Sent {
    Now,
    Older(u64),
    /// Exactly at the retention edge (still accepted).
    RetentionEdge,
    TooOld,
    FutureOk,
    TooFuture,
}

#[derive(Clone, Debug)]
pub enum Act {
    Root {
        currencies: u8,
        no_cap: bool,
        name: u8,
    },
    Child {
        parent: u16,
        name: u8,
    },
    Reserve {
        node: u16,
        cur: u8,
        exact: bool,
        a: u8,
        b: u8,
        ttl: u8,
        model: u8,
    },
    Settle {
        hold: u16,
        how: u8,
        k: u8,
    },
    Release {
        hold: u16,
    },
    Charge {
        node: u16,
        cur: u8,
        a: u8,
        tokens: bool,
        model: u8,
    },
    Tick,
    SetLimit {
        node: u16,
        cur: u8,
        window: u8,
        amount: u8,
        hard: bool,
        thr: u8,
        pause: bool,
    },
    RemoveLimit {
        node: u16,
        which: u8,
    },
    SetRate {
        node: u16,
        key: u8,
        cost: bool,
        cur: u8,
        amount: u8,
        period: u8,
    },
    RemoveRate {
        node: u16,
        which: u8,
    },
    AddGrant {
        node: u16,
        cur: u8,
        amount: u8,
        prio: u8,
        kind: u8,
        eff: u8,
        exp: u8,
        recur: u8,
        roll: u8,
    },
    DefineRole {
        root: u16,
        name: u8,
        limits: Vec<(u8, u8, u8, bool, u8, bool)>,
    },
    RemoveRole {
        root: u16,
        name: u8,
    },
    AssignRoles {
        node: u16,
        roles: Vec<u8>,
    },
    Resolution {
        root: u16,
        permissive: bool,
    },
    SetPrice {
        root: u16,
        model: u8,
        cur: u8,
        p: [u8; 4],
    },
    RemovePrice {
        root: u16,
        model: u8,
        cur: u8,
    },
    Pause {
        node: u16,
    },
    Resume {
        node: u16,
    },
    Close {
        node: u16,
    },
    Move {
        node: u16,
        parent: u16,
    },
    Config {
        which: u8,
        v: u8,
    },
    Retry {
        which: u16,
        same: bool,
    },
    Invalid {
        which: u8,
        sel: u16,
    },
}

#[derive(Clone, Debug)]
pub struct Step {
    pub dt: Dt,
    pub sent: Sent,
    pub by_path: bool,
    pub act: Act,
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub base: u64,
    pub steps: Vec<Step>,
    /// Where the determinism property snapshots (fraction of the length, 0..=255).
    pub cut: u8,
}

// ---- narrowing ----------------------------------------------------------------------------

// ---- catalogs -----------------------------------------------------------------------------

pub const CURRENCIES: [(&str, u8, bool); 4] = [
    ("usd", 0, true),
    ("tok", 0, false),
    ("eur", 2, false),
    ("pts", 1, true),
];

pub fn window_of(w: u8) -> Window {
    match w % 16 {
        0 => Window::Lifetime,
        1 => Window::Calendar(Period::Hour),
        2 => Window::Calendar(Period::Day),
        3 => Window::Calendar(Period::Week),
        4 => Window::Calendar(Period::Month),
        5 => Window::Sliding {
            duration_ms: MINUTE,
        },
        6 => Window::Sliding {
            duration_ms: 10 * MINUTE,
        },
        7 => Window::Sliding { duration_ms: HOUR },
        8 => Window::FirstUse {
            duration_ms: SECOND,
        },
        9 => Window::FirstUse {
            duration_ms: MINUTE,
        },
        10 => Window::FirstUse { duration_ms: HOUR },
        11 => Window::FirstUse { duration_ms: DAY },
        12 => Window::Calendar(Period::Day),
        13 => Window::Lifetime,
        14 => Window::Sliding {
            duration_ms: 400 * DAY,
        },
        _ => Window::Calendar(Period::Month),
    }
}

fn limit_amount(a: u8) -> i64 {
    [0, 5, 10, 20, 30, 40, 60, 100, 200, 15][(a % 10) as usize]
}

fn thresholds(t: u8) -> Vec<u8> {
    match t % 8 {
        0..=2 => vec![],
        3 => vec![10],
        4 => vec![30, 90],
        5 => vec![100, 50],
        6 => vec![25, 50, 75, 100],
        _ => vec![1, 99],
    }
}

fn limit_spec(cur: &str, w: u8, a: u8, hard: bool, thr: u8, pause: bool) -> LimitSpec {
    LimitSpec {
        currency: cur.to_owned(),
        amount: limit_amount(a),
        window: window_of(w),
        mode: if hard {
            LimitMode::Hard
        } else {
            LimitMode::Soft
        },
        thresholds: thresholds(thr),
        on_exhausted: if pause && thr % 2 == 0 {
            OnExhausted::Pause
        } else {
            OnExhausted::Deny
        },
    }
}

const ROOT_NAMES: [&str; 3] = ["acme", "beta", "gamma"];
const CHILD_NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];
const ROLE_NAMES: [&str; 4] = ["r1", "r2", "r3", "r4"];
const MODELS: [Option<&str>; 4] = [None, Some("m1"), Some("m2"), None];

// ---- strategies ---------------------------------------------------------------------------

fn dt() -> impl Strategy<Value = Dt> {
    let period = prop_oneof![
        Just(Period::Hour),
        Just(Period::Day),
        Just(Period::Week),
        Just(Period::Month)
    ];
    prop_oneof![
        8 => Just(Dt::Same),
        20 => (1u64..3000).prop_map(Dt::Ms),
        10 => (1u64..120).prop_map(Dt::Secs),
        5 => (1u64..60).prop_map(Dt::Minutes),
        4 => (period, -2i64..=2).prop_map(|(p, o)| Dt::Boundary(p, o)),
        1 => (1u64..3).prop_map(Dt::Days),
        2 => (1u64..5000).prop_map(Dt::Back),
    ]
}

fn sent() -> impl Strategy<Value = Sent> {
    prop_oneof![
        40 => Just(Sent::Now),
        3 => (1u64..300_000).prop_map(Sent::Older),
        1 => Just(Sent::RetentionEdge),
        1 => Just(Sent::TooOld),
        1 => Just(Sent::FutureOk),
        1 => Just(Sent::TooFuture),
    ]
}

fn act() -> impl Strategy<Value = Act> {
    let n = any::<u16>();
    prop_oneof![
        2 => (any::<u8>(), any::<bool>(), any::<u8>())
            .prop_map(|(currencies, no_cap, name)| Act::Root { currencies, no_cap, name }),
        5 => (n, any::<u8>()).prop_map(|(parent, name)| Act::Child { parent, name }),
        30 => (n, any::<u8>(), any::<bool>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(node, cur, exact, a, b, ttl, model)| Act::Reserve { node, cur, exact, a, b, ttl, model }),
        22 => (n, any::<u8>(), any::<u8>()).prop_map(|(hold, how, k)| Act::Settle { hold, how, k }),
        5 => n.prop_map(|hold| Act::Release { hold }),
        10 => (n, any::<u8>(), any::<u8>(), any::<bool>(), any::<u8>())
            .prop_map(|(node, cur, a, tokens, model)| Act::Charge { node, cur, a, tokens, model }),
        7 => Just(Act::Tick),
        8 => (n, any::<u8>(), any::<u8>(), any::<u8>(), any::<bool>(), any::<u8>(), any::<bool>())
            .prop_map(|(node, cur, window, amount, hard, thr, pause)| Act::SetLimit { node, cur, window, amount, hard, thr, pause }),
        2 => (n, any::<u8>()).prop_map(|(node, which)| Act::RemoveLimit { node, which }),
        5 => (n, any::<u8>(), any::<bool>(), any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(node, key, cost, cur, amount, period)| Act::SetRate { node, key, cost, cur, amount, period }),
        1 => (n, any::<u8>()).prop_map(|(node, which)| Act::RemoveRate { node, which }),
        9 => (n, any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(node, cur, amount, prio, kind, eff, exp, recur, roll)| Act::AddGrant { node, cur, amount, prio, kind, eff, exp, recur, roll }),
        3 => (n, any::<u8>(), vec((any::<u8>(), any::<u8>(), any::<u8>(), any::<bool>(), any::<u8>(), any::<bool>()), 0..4))
            .prop_map(|(root, name, limits)| Act::DefineRole { root, name, limits }),
        1 => (n, any::<u8>()).prop_map(|(root, name)| Act::RemoveRole { root, name }),
        4 => (n, vec(any::<u8>(), 0..3)).prop_map(|(node, roles)| Act::AssignRoles { node, roles }),
        1 => (n, any::<bool>()).prop_map(|(root, permissive)| Act::Resolution { root, permissive }),
        2 => (n, any::<u8>(), any::<u8>(), any::<[u8; 4]>()).prop_map(|(root, model, cur, p)| Act::SetPrice { root, model, cur, p }),
        1 => (n, any::<u8>(), any::<u8>()).prop_map(|(root, model, cur)| Act::RemovePrice { root, model, cur }),
        1 => n.prop_map(|node| Act::Pause { node }),
        5 => n.prop_map(|node| Act::Resume { node }),
        1 => n.prop_map(|node| Act::Close { node }),
        4 => (n, n).prop_map(|(node, parent)| Act::Move { node, parent }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(which, v)| Act::Config { which, v }),
        8 => (n, any::<bool>()).prop_map(|(which, same)| Act::Retry { which, same }),
        4 => (any::<u8>(), n).prop_map(|(which, sel)| Act::Invalid { which, sel }),
    ]
}

fn setup_act() -> impl Strategy<Value = Act> {
    let n = any::<u16>();
    prop_oneof![
        2 => (any::<u8>(), any::<bool>(), any::<u8>())
            .prop_map(|(currencies, no_cap, name)| Act::Root { currencies, no_cap, name }),
        5 => (n, any::<u8>()).prop_map(|(parent, name)| Act::Child { parent, name }),
        3 => (n, any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), Just(0u8), Just(0u8), any::<u8>(), any::<u8>())
            .prop_map(|(node, cur, amount, prio, kind, eff, exp, recur, roll)| Act::AddGrant { node, cur, amount, prio, kind, eff, exp, recur, roll }),
        2 => (n, any::<u8>(), any::<u8>(), any::<u8>(), any::<bool>(), any::<u8>(), any::<bool>())
            .prop_map(|(node, cur, window, amount, hard, thr, pause)| Act::SetLimit { node, cur, window, amount, hard, thr, pause }),
    ]
}

fn base() -> impl Strategy<Value = u64> {
    (0usize..5, 0u64..2 * HOUR).prop_map(|(i, off)| {
        let b = [
            cal::at(2024, 1, 31, 22),
            cal::at(2023, 12, 31, 21),
            cal::at(2024, 3, 10, 22),
            cal::at(2024, 2, 28, 22),
            cal::at(2025, 6, 15, 12),
        ][i];
        b + off
    })
}

pub fn scenario(min: usize, max: usize) -> impl Strategy<Value = Scenario> {
    let step =
        (dt(), sent(), prop::bool::weighted(0.25), act()).prop_map(|(dt, sent, by_path, act)| {
            Step {
                dt,
                sent,
                by_path,
                act,
            }
        });
    let setup = (Just(Dt::Ms(1)), Just(Sent::Now), Just(false), setup_act()).prop_map(
        |(dt, sent, by_path, act)| Step {
            dt,
            sent,
            by_path,
            act,
        },
    );
    let root =
        (any::<u8>(), any::<bool>(), any::<u8>()).prop_map(|(currencies, no_cap, name)| Step {
            dt: Dt::Ms(1),
            sent: Sent::Now,
            by_path: false,
            act: Act::Root {
                currencies,
                no_cap,
                name,
            },
        });
    (
        base(),
        root,
        vec(setup, 3..12),
        vec(step, min..max),
        any::<u8>(),
    )
        .prop_map(|(base, root, setup, steps, cut)| {
            let mut all = vec![root];
            all.extend(setup);
            all.extend(steps);
            Scenario {
                base,
                steps: all,
                cut,
            }
        })
}

// ---- resolution against the model --------------------------------------------------------

/// Builds commands; remembers client commands for retries.
pub struct Builder {
    pub next_id: u64,
    pub history: Vec<Command>,
}

fn pick<T: Clone>(v: &[T], sel: u16) -> Option<T> {
    if v.is_empty() {
        None
    } else {
        Some(v[sel as usize % v.len()].clone())
    }
}

impl Builder {
    pub fn new() -> Self {
        Builder {
            next_id: 1,
            history: Vec::new(),
        }
    }

    pub fn time(&self, now: u64, dt: &Dt) -> u64 {
        match *dt {
            Dt::Same => now,
            Dt::Ms(m) => now + m,
            Dt::Secs(s) => now + s * SECOND,
            Dt::Minutes(m) => now + m * MINUTE,
            Dt::Boundary(p, off) => cal::end(p, now).saturating_add_signed(off),
            Dt::Days(d) => now + d * DAY + 17,
            Dt::Back(m) => now.saturating_sub(m),
        }
    }

    fn node_ref(&self, m: &Model, id: u64, by_path: bool) -> NodeRef {
        if by_path {
            NodeRef::Path(m.path_string(id))
        } else {
            NodeRef::Id(id)
        }
    }

    fn node_sel(m: &Model, sel: u16) -> Option<u64> {
        if m.nodes.is_empty() {
            None
        } else {
            Some(u64::from(sel) % m.nodes.len() as u64 + 1)
        }
    }

    fn roots(m: &Model) -> Vec<u64> {
        m.nodes
            .iter()
            .filter(|n| n.parent.is_none())
            .map(|n| n.id)
            .collect()
    }

    fn cur_of(m: &Model, node: u64, sel: u8) -> String {
        let root = m.root_of(node);
        let cs = &m.node(root).currencies;
        cs[sel as usize % cs.len()].code.clone()
    }

    /// The op for an action, or `None` when nothing fits (the step is skipped).
    /// `Err(cmd)` is a fully formed command (retries and invalid shapes).
    pub fn build(&mut self, m: &Model, at: u64, step: &Step) -> Option<Command> {
        let sent_at = match step.sent {
            Sent::Now => at,
            Sent::Older(x) => at.saturating_sub(x.min(m.cfg.retention)),
            Sent::RetentionEdge => at.max(m.now).saturating_sub(m.cfg.retention),
            Sent::TooOld => at.max(m.now).saturating_sub(m.cfg.retention + 1),
            Sent::FutureOk => at.max(m.now) + 60_000,
            Sent::TooFuture => at.max(m.now) + 60_001,
        };
        let bp = step.by_path;
        let op = match &step.act {
            Act::Retry { which, same } => {
                // Mostly one of the recent commands.
                let recent = if which % 4 == 0 {
                    0
                } else {
                    self.history.len().saturating_sub(12)
                };
                let prev = pick(&self.history[recent..], *which)?;
                if *same {
                    return Some(prev);
                }
                let mut c = prev;
                c.op = match c.op {
                    Op::PauseNode { node } => Op::ResumeNode { node },
                    _ => Op::PauseNode {
                        node: NodeRef::Id(1),
                    },
                };
                return Some(c);
            }
            Act::Invalid { which, sel } => return self.invalid(m, at, *which, *sel),
            Act::Tick => return Some(Command::tick()),
            a => self.op(m, a, bp, at.max(m.now))?,
        };
        let cmd = Command::new(format!("q{}", self.next_id), sent_at, op);
        self.next_id += 1;
        self.history.push(cmd.clone());
        Some(cmd)
    }

    fn op(&self, m: &Model, act: &Act, bp: bool, now: u64) -> Option<Op> {
        Some(match act {
            Act::Root {
                currencies,
                no_cap,
                name,
            } => {
                let mut cs: Vec<CurrencySpec> = Vec::new();
                for (i, (code, scale, funded)) in CURRENCIES.iter().enumerate() {
                    if currencies & (1 << i) != 0 {
                        cs.push(CurrencySpec {
                            code: (*code).into(),
                            scale: *scale,
                            funded: *funded,
                        });
                    }
                }
                if currencies & 0b0011_0000 == 0b0011_0000 {
                    // A currency whose default cap may not fit in 2^53 - 1 minor units.
                    let scale = if currencies & 0b0100_0000 != 0 {
                        13
                    } else {
                        14
                    };
                    cs.push(CurrencySpec {
                        code: "big".into(),
                        scale,
                        funded: false,
                    });
                }
                if cs.is_empty() {
                    let (code, scale, funded) = CURRENCIES[(currencies >> 4) as usize % 4];
                    cs.push(CurrencySpec {
                        code: code.into(),
                        scale,
                        funded,
                    });
                }
                Op::CreateNode(CreateNode {
                    parent: None,
                    name: ROOT_NAMES[*name as usize % ROOT_NAMES.len()].into(),
                    kind: "org".into(),
                    tags: if name % 3 == 0 {
                        vec![("env".into(), "prod".into())]
                    } else {
                        vec![]
                    },
                    root: Some(RootSpec {
                        currencies: cs,
                        no_default_cap: *no_cap,
                    }),
                })
            }
            Act::Child { parent, name } => {
                let p = Self::node_sel(m, *parent)?;
                Op::CreateNode(CreateNode {
                    parent: Some(self.node_ref(m, p, bp)),
                    name: CHILD_NAMES[*name as usize % CHILD_NAMES.len()].into(),
                    kind: "team".into(),
                    tags: vec![],
                    root: None,
                })
            }
            Act::Reserve {
                node,
                cur,
                exact,
                a,
                b,
                ttl,
                model,
            } => {
                let id = Self::node_sel(m, *node)?;
                let amount = if *exact {
                    Amount::Exact(i64::from(a % 30) + 1)
                } else {
                    let lo = i64::from(a % 12) + 1;
                    Amount::Range {
                        min: lo,
                        max: lo + i64::from(b % 40),
                    }
                };
                let ttl_ms = [
                    SECOND,
                    5 * SECOND,
                    MINUTE,
                    10 * MINUTE,
                    HOUR,
                    DAY,
                    30 * SECOND,
                ][*ttl as usize % 7];
                Op::Reserve(Reserve {
                    node: self.node_ref(m, id, bp),
                    currency: Self::cur_of(m, id, *cur),
                    amount,
                    ttl_ms,
                    attrs: Attributes {
                        model: MODELS[*model as usize % 4].map(str::to_owned),
                        user: if model % 5 == 0 {
                            Some("u1".into())
                        } else {
                            None
                        },
                        ..Attributes::default()
                    },
                })
            }
            Act::Settle { hold, how, k } => {
                // Open holds mostly; sometimes expired ones (late settles) or unknown ids.
                let open: Vec<u64> = m.holds.iter().map(|h| h.id).collect();
                let expired: Vec<u64> = m.expired_holds.iter().map(|(h, _)| h.id).collect();
                let (rid, held) = if how % 8 == 7 && !expired.is_empty() {
                    let id = pick(&expired, *hold)?;
                    let h = &m.expired_holds.iter().find(|(h, _)| h.id == id)?.0;
                    (id, h.amount)
                } else if let Some(id) = pick(&open, *hold) {
                    (id, m.holds.iter().find(|h| h.id == id)?.amount)
                } else if m.next_res > 1 && how % 4 == 0 {
                    (u64::from(*hold) % m.next_res + 1, 5)
                } else {
                    return None;
                };
                let k = u64::from(*k);
                let actual = match how % 8 {
                    0 => Actual::Amount(0),
                    1 | 2 => Actual::Amount((held * (k % 101) / 100) as i64),
                    3 => Actual::Amount(held as i64),
                    4 => Actual::Amount((held + 1 + k % 60) as i64),
                    5 => Actual::Tokens(tokens(*hold as u8, k as u8)),
                    6 => Actual::Amount((held / 2) as i64),
                    _ => Actual::Amount((k % 15) as i64),
                };
                Op::Settle {
                    reservation_id: rid,
                    actual,
                }
            }
            Act::Release { hold } => {
                let open: Vec<u64> = m.holds.iter().map(|h| h.id).collect();
                let rid = match pick(&open, *hold) {
                    Some(id) if hold % 7 != 0 => id,
                    _ => u64::from(*hold) % m.next_res.max(2) + 1,
                };
                Op::Release {
                    reservation_id: rid,
                }
            }
            Act::Charge {
                node,
                cur,
                a,
                tokens: tk,
                model,
            } => {
                let id = Self::node_sel(m, *node)?;
                let actual = if *tk && a % 3 == 0 {
                    Actual::Tokens(tokens(*a, *model))
                } else {
                    Actual::Amount(i64::from(a % 25) + 1)
                };
                Op::Charge(Charge {
                    node: self.node_ref(m, id, bp),
                    currency: Self::cur_of(m, id, *cur),
                    actual,
                    attrs: Attributes {
                        model: MODELS[*model as usize % 4].map(str::to_owned),
                        ..Attributes::default()
                    },
                })
            }
            Act::SetLimit {
                node,
                cur,
                window,
                amount,
                hard,
                thr,
                pause,
            } => {
                let id = Self::node_sel(m, *node)?;
                Op::SetLimit {
                    node: self.node_ref(m, id, bp),
                    limit: limit_spec(
                        &Self::cur_of(m, id, *cur),
                        *window,
                        *amount,
                        *hard,
                        *thr,
                        *pause,
                    ),
                }
            }
            Act::RemoveLimit { node, which } => {
                let id = Self::node_sel(m, *node)?;
                let ls = &m.node(id).limits;
                let (currency, window) = match pick(ls, u16::from(*which)) {
                    Some(l) if which % 5 != 0 => (l.currency.clone(), l.window),
                    _ => (Self::cur_of(m, id, *which), window_of(*which)),
                };
                Op::RemoveLimit {
                    node: self.node_ref(m, id, bp),
                    currency,
                    window,
                }
            }
            Act::SetRate {
                node,
                key,
                cost,
                cur,
                amount,
                period,
            } => {
                let id = Self::node_sel(m, *node)?;
                let kind = if *cost {
                    RateKind::Cost {
                        currency: Self::cur_of(m, id, *cur),
                    }
                } else {
                    RateKind::Requests
                };
                let amount = if *cost {
                    i64::from(amount % 60) + 5
                } else {
                    i64::from(amount % 4) + 1
                };
                Op::SetRateLimit {
                    node: self.node_ref(m, id, bp),
                    rate: RateLimitSpec {
                        key: ["*", "m1", "m2", "*"][*key as usize % 4].into(),
                        kind,
                        amount,
                        period_ms: [SECOND, 10 * SECOND, MINUTE, HOUR, 7][*period as usize % 5],
                    },
                }
            }
            Act::RemoveRate { node, which } => {
                let id = Self::node_sel(m, *node)?;
                let (key, kind) = match pick(&m.node(id).rates, u16::from(*which)) {
                    Some(r) if which % 5 != 0 => (r.key.clone(), r.kind.clone()),
                    _ => ("*".to_owned(), RateKind::Requests),
                };
                Op::RemoveRateLimit {
                    node: self.node_ref(m, id, bp),
                    key,
                    kind,
                }
            }
            Act::AddGrant {
                node,
                cur,
                amount,
                prio,
                kind,
                eff,
                exp,
                recur,
                roll,
            } => {
                let id = Self::node_sel(m, *node)?;
                // Prefer a funded currency.
                let root = m.root_of(id);
                let cs = &m.node(root).currencies;
                let funded: Vec<&CurrencySpec> = cs.iter().filter(|c| c.funded).collect();
                let currency = if !funded.is_empty() && cur % 8 != 0 {
                    funded[*cur as usize % funded.len()].code.clone()
                } else {
                    cs[*cur as usize % cs.len()].code.clone()
                };
                let effective_at_ms = match eff % 8 {
                    0..=3 => None,
                    4 => Some(now.saturating_sub(5 * SECOND)),
                    5 => Some(now + 30 * MINUTE),
                    6 => Some(now + DAY),
                    _ => Some(now),
                };
                let e = effective_at_ms.unwrap_or(now);
                let expires_at_ms = match exp % 8 {
                    0..=3 => None,
                    4 => Some(e + HOUR),
                    5 => Some(e + DAY),
                    6 => Some(e + 10 * SECOND),
                    // Exactly at the first renewal of a recurring grant (expiry wins ties).
                    7 if recur % 8 >= 4 => Some(cal::end(
                        [Period::Day, Period::Week, Period::Month, Period::Year]
                            [(recur % 4) as usize],
                        e,
                    )),
                    _ => Some(e + 45 * DAY),
                };
                let recur = match recur % 8 {
                    0..=3 => None,
                    4 => Some(Period::Day),
                    5 => Some(Period::Week),
                    6 => Some(Period::Month),
                    _ => Some(Period::Year),
                };
                let rollover = if recur.is_none() {
                    Rollover::None
                } else {
                    match roll % 6 {
                        0 | 1 => Rollover::None,
                        2 => Rollover::CapMultiple(1),
                        3 => Rollover::CapMultiple(3),
                        4 => Rollover::Percent(50),
                        _ => Rollover::Percent(100),
                    }
                };
                Op::AddGrant {
                    node: self.node_ref(m, id, bp),
                    grant: GrantSpec {
                        currency,
                        amount: [10, 30, 60, 100, 200, 400, 5, 15][*amount as usize % 8],
                        priority: u32::from(prio % 3),
                        kind: [
                            GrantKind::Included,
                            GrantKind::Free,
                            GrantKind::Promotional,
                            GrantKind::Prepaid,
                            GrantKind::Commitment,
                            GrantKind::OnDemand,
                        ][*kind as usize % 6],
                        effective_at_ms,
                        expires_at_ms,
                        recur,
                        rollover,
                    },
                }
            }
            Act::DefineRole { root, name, limits } => {
                let r = pick(&Self::roots(m), *root)?;
                let mut ls: Vec<LimitSpec> = Vec::new();
                for (cur, w, a, hard, thr, pause) in limits {
                    let hard = *hard || a % 3 == 0;
                    let spec = limit_spec(&Self::cur_of(m, r, *cur), *w, *a, hard, *thr, *pause);
                    if !ls
                        .iter()
                        .any(|l| l.currency == spec.currency && l.window == spec.window)
                    {
                        ls.push(spec);
                    }
                }
                Op::DefineRole {
                    root: self.node_ref(m, r, bp),
                    name: ROLE_NAMES[*name as usize % 4].into(),
                    limits: ls,
                }
            }
            Act::RemoveRole { root, name } => {
                let r = pick(&Self::roots(m), *root)?;
                Op::RemoveRole {
                    root: self.node_ref(m, r, bp),
                    name: ROLE_NAMES[*name as usize % 4].into(),
                }
            }
            Act::AssignRoles { node, roles } => {
                let id = Self::node_sel(m, *node)?;
                let root = m.root_of(id);
                let defined: Vec<String> = m
                    .node(root)
                    .role_defs
                    .iter()
                    .map(|r| r.name.clone())
                    .collect();
                let mut rs: Vec<String> = Vec::new();
                for r in roles {
                    let name = if r % 9 == 8 || defined.is_empty() {
                        ROLE_NAMES[*r as usize % 4].to_owned()
                    } else {
                        defined[*r as usize % defined.len()].clone()
                    };
                    if !rs.contains(&name) {
                        rs.push(name);
                    }
                }
                Op::AssignRoles {
                    node: self.node_ref(m, id, bp),
                    roles: rs,
                }
            }
            Act::Resolution { root, permissive } => {
                let r = pick(&Self::roots(m), *root)?;
                Op::SetRoleResolution {
                    root: self.node_ref(m, r, bp),
                    resolution: if *permissive {
                        RoleResolution::MostPermissive
                    } else {
                        RoleResolution::MostRestrictive
                    },
                }
            }
            Act::SetPrice {
                root,
                model,
                cur,
                p,
            } => {
                let r = pick(&Self::roots(m), *root)?;
                let price = |x: u8| [0, 1_000_000, 250_000, 3_000_000, 1][x as usize % 5];
                Op::SetPrice {
                    root: self.node_ref(m, r, bp),
                    price: PriceSpec {
                        provider: "p".into(),
                        model: ["m1", "m2"][*model as usize % 2].into(),
                        currency: Self::cur_of(m, r, *cur),
                        input_per_mtok: price(p[0]),
                        output_per_mtok: price(p[1]),
                        cached_input_per_mtok: price(p[2]),
                        reasoning_per_mtok: price(p[3]),
                    },
                }
            }
            Act::RemovePrice { root, model, cur } => {
                let r = pick(&Self::roots(m), *root)?;
                Op::RemovePrice {
                    root: self.node_ref(m, r, bp),
                    provider: "p".into(),
                    model: ["m1", "m2"][*model as usize % 2].into(),
                    currency: Self::cur_of(m, r, *cur),
                }
            }
            Act::Pause { node } => Op::PauseNode {
                node: self.node_ref(m, Self::node_sel(m, *node)?, bp),
            },
            Act::Resume { node } => {
                // Mostly a paused node.
                let paused: Vec<u64> = m
                    .nodes
                    .iter()
                    .filter(|n| n.status == purser_core::NodeStatus::Paused)
                    .map(|n| n.id)
                    .collect();
                let id = match pick(&paused, *node) {
                    Some(id) if node % 5 != 0 => id,
                    _ => Self::node_sel(m, *node)?,
                };
                Op::ResumeNode {
                    node: self.node_ref(m, id, bp),
                }
            }
            Act::Close { node } => {
                // Mostly below the roots: a closed root blocks its whole tree.
                let id = Self::node_sel(m, *node)?;
                if (m.node(id).parent.is_none() && node % 4 != 0) || node % 3 != 0 {
                    return None;
                }
                Op::CloseNode {
                    node: self.node_ref(m, id, bp),
                }
            }
            Act::Move { node, parent } => {
                let id = Self::node_sel(m, *node)?;
                // Mostly within the same root.
                let same: Vec<u64> = m
                    .nodes
                    .iter()
                    .filter(|n| m.root_of(n.id) == m.root_of(id))
                    .map(|n| n.id)
                    .collect();
                let p = if parent % 6 == 0 {
                    Self::node_sel(m, *parent)?
                } else {
                    pick(&same, *parent)?
                };
                Op::MoveNode {
                    node: self.node_ref(m, id, bp),
                    new_parent: self.node_ref(m, p, bp),
                }
            }
            Act::Config { which, v } => {
                let mut p = ConfigPatch::default();
                match which % 6 {
                    0 => p.depth_max = Some([3, 4, 6, 16, 32, 0, 33, 1][*v as usize % 8]),
                    1 => {
                        let r = [MINUTE, 10 * MINUTE, HOUR, 5 * MINUTE, MINUTE - 1, DAY + 1]
                            [*v as usize % 6];
                        if narrowed("retention-raise") && r > m.cfg.retention {
                            return None;
                        }
                        p.request_retention_ms = Some(r);
                    }
                    2 => p.hold_ttl_ms_min = Some([SECOND, 5 * SECOND, 2 * DAY][*v as usize % 3]),
                    3 => {
                        p.hold_ttl_ms_max =
                            Some([DAY, HOUR, 500, 30 * DAY, 30 * DAY + 1][*v as usize % 5])
                    }
                    4 => p.default_root_cap_major = Some([1, 100, 0, 50][*v as usize % 4]),
                    _ => {
                        p.hold_ttl_ms_min = Some(SECOND);
                        p.hold_ttl_ms_max = Some(DAY);
                    }
                }
                Op::SetConfig(p)
            }
            Act::Tick | Act::Retry { .. } | Act::Invalid { .. } => unreachable!(),
        })
    }

    /// Malformed or unknown inputs, one fault each.
    fn invalid(&mut self, m: &Model, at: u64, which: u8, sel: u16) -> Option<Command> {
        let node = Self::node_sel(m, sel)?;
        let cur = Self::cur_of(m, node, sel as u8);
        let reserve = |amount: Amount, ttl_ms: u64| {
            Op::Reserve(Reserve {
                node: NodeRef::Id(node),
                currency: cur.clone(),
                amount,
                ttl_ms,
                attrs: Attributes::default(),
            })
        };
        let grant = |cur: &str,
                     rollover: Rollover,
                     recur: Option<Period>,
                     expires_at_ms: Option<u64>| Op::AddGrant {
            node: NodeRef::Id(node),
            grant: GrantSpec {
                currency: cur.to_owned(),
                amount: 5,
                priority: 0,
                kind: GrantKind::Free,
                effective_at_ms: None,
                expires_at_ms,
                recur,
                rollover,
            },
        };
        let funded = m
            .node(m.root_of(node))
            .currencies
            .iter()
            .find(|c| c.funded)
            .map(|c| c.code.clone());
        let now = at.max(m.now);
        let op = match which % 38 {
            32 => Op::CreateNode(CreateNode {
                parent: Some(NodeRef::Id(node)),
                name: "x".into(),
                kind: "te\tam".into(),
                tags: vec![],
                root: None,
            }),
            33 => Op::CreateNode(CreateNode {
                parent: Some(NodeRef::Id(node)),
                name: "x".into(),
                kind: "team".into(),
                tags: vec![("k".into(), "v\n".into())],
                root: None,
            }),
            34 => Op::Reserve(Reserve {
                node: NodeRef::Id(node),
                currency: cur.clone(),
                amount: Amount::Exact(1),
                ttl_ms: SECOND,
                attrs: Attributes {
                    model: Some("m\u{7}".into()),
                    ..Attributes::default()
                },
            }),
            35 => Op::SetRateLimit {
                node: NodeRef::Id(node),
                rate: RateLimitSpec {
                    key: "m\r".into(),
                    kind: RateKind::Requests,
                    amount: 1,
                    period_ms: SECOND,
                },
            },
            36 => Op::DefineRole {
                root: NodeRef::Id(m.root_of(node)),
                name: if sel % 2 == 0 {
                    "Admin".into()
                } else {
                    "-x".into()
                },
                limits: vec![],
            },
            37 => Op::SetPrice {
                root: NodeRef::Id(m.root_of(node)),
                price: PriceSpec {
                    provider: "p\u{0}".into(),
                    model: "m1".into(),
                    currency: cur.clone(),
                    input_per_mtok: 1,
                    output_per_mtok: 1,
                    cached_input_per_mtok: 1,
                    reasoning_per_mtok: 1,
                },
            },
            24 => grant(
                funded.as_deref().unwrap_or("usd"),
                Rollover::CapMultiple(0),
                Some(Period::Month),
                None,
            ),
            25 => grant(
                funded.as_deref().unwrap_or("usd"),
                Rollover::CapMultiple(1001),
                Some(Period::Day),
                None,
            ),
            26 => grant(
                funded.as_deref().unwrap_or("usd"),
                Rollover::Percent(101),
                Some(Period::Week),
                None,
            ),
            27 => grant(
                funded.as_deref().unwrap_or("usd"),
                Rollover::None,
                None,
                Some(now),
            ),
            28 if !narrowed("hourly-recur") => grant(
                funded.as_deref().unwrap_or("usd"),
                Rollover::None,
                Some(Period::Hour),
                None,
            ),
            29 => Op::SetRateLimit {
                node: NodeRef::Id(node),
                rate: RateLimitSpec {
                    key: "*".into(),
                    kind: RateKind::Requests,
                    amount: 1,
                    period_ms: if sel % 2 == 0 { 0 } else { 366 * DAY + 1 },
                },
            },
            30 => Op::AssignRoles {
                node: NodeRef::Id(node),
                roles: vec!["r1".into(), "r1".into()],
            },
            31 => {
                let (currency, period) = if sel % 2 == 0 && !narrowed("year-window") {
                    (cur.clone(), Period::Year)
                } else {
                    ("zzz".to_owned(), Period::Day)
                };
                Op::SetLimit {
                    node: NodeRef::Id(node),
                    limit: LimitSpec {
                        currency,
                        amount: 5,
                        window: Window::Calendar(period),
                        mode: LimitMode::Hard,
                        thresholds: vec![],
                        on_exhausted: OnExhausted::Deny,
                    },
                }
            }
            0 => reserve(Amount::Exact(0), SECOND),
            1 => reserve(Amount::Exact(-3), SECOND),
            2 => reserve(Amount::Exact(AMOUNT_MAX as i64 + 1), SECOND),
            3 => reserve(Amount::Range { min: 5, max: 4 }, SECOND),
            4 => reserve(Amount::Exact(3), 999),
            5 => reserve(Amount::Exact(3), DAY + 1),
            6 => Op::Reserve(Reserve {
                node: NodeRef::Id(9999),
                currency: cur.clone(),
                amount: Amount::Exact(1),
                ttl_ms: SECOND,
                attrs: Attributes::default(),
            }),
            7 => Op::Reserve(Reserve {
                node: NodeRef::Id(node),
                currency: "zzz".into(),
                amount: Amount::Exact(1),
                ttl_ms: SECOND,
                attrs: Attributes::default(),
            }),
            8 => Op::Settle {
                reservation_id: 10_000 + u64::from(sel),
                actual: Actual::Amount(1),
            },
            9 => {
                let rid = m.holds.first().map_or(1, |h| h.id);
                Op::Settle {
                    reservation_id: rid,
                    actual: Actual::Amount(-1),
                }
            }
            10 => Op::CreateNode(CreateNode {
                parent: Some(NodeRef::Id(node)),
                name: "Bad".into(),
                kind: "k".into(),
                tags: vec![],
                root: None,
            }),
            11 => Op::CreateNode(CreateNode {
                parent: Some(NodeRef::Path("nope/x".into())),
                name: "x".into(),
                kind: "k".into(),
                tags: vec![],
                root: None,
            }),
            12 => Op::CreateNode(CreateNode {
                parent: None,
                name: "zeta".into(),
                kind: "k".into(),
                tags: vec![],
                root: Some(RootSpec {
                    currencies: vec![],
                    no_default_cap: true,
                }),
            }),
            13 => Op::CreateNode(CreateNode {
                parent: Some(NodeRef::Id(node)),
                name: "x".into(),
                kind: String::new(),
                tags: vec![],
                root: None,
            }),
            14 => Op::SetLimit {
                node: NodeRef::Id(node),
                limit: LimitSpec {
                    currency: cur,
                    amount: -1,
                    window: Window::Lifetime,
                    mode: LimitMode::Hard,
                    thresholds: vec![],
                    on_exhausted: OnExhausted::Deny,
                },
            },
            15 => Op::SetLimit {
                node: NodeRef::Id(node),
                limit: LimitSpec {
                    currency: cur,
                    amount: 5,
                    window: Window::Sliding {
                        duration_ms: 59_999,
                    },
                    mode: LimitMode::Hard,
                    thresholds: vec![],
                    on_exhausted: OnExhausted::Deny,
                },
            },
            16 => Op::SetLimit {
                node: NodeRef::Id(node),
                limit: LimitSpec {
                    currency: cur,
                    amount: 5,
                    window: Window::FirstUse { duration_ms: 999 },
                    mode: LimitMode::Hard,
                    thresholds: vec![],
                    on_exhausted: OnExhausted::Deny,
                },
            },
            17 => Op::SetLimit {
                node: NodeRef::Id(node),
                limit: LimitSpec {
                    currency: cur,
                    amount: 5,
                    window: Window::Lifetime,
                    mode: LimitMode::Hard,
                    thresholds: vec![50, 50],
                    on_exhausted: OnExhausted::Deny,
                },
            },
            18 => Op::AddGrant {
                node: NodeRef::Id(node),
                grant: GrantSpec {
                    currency: cur,
                    amount: 0,
                    priority: 0,
                    kind: GrantKind::Free,
                    effective_at_ms: None,
                    expires_at_ms: None,
                    recur: None,
                    rollover: Rollover::None,
                },
            },
            19 => Op::AddGrant {
                node: NodeRef::Id(node),
                grant: GrantSpec {
                    currency: cur,
                    amount: 5,
                    priority: 0,
                    kind: GrantKind::Free,
                    effective_at_ms: None,
                    expires_at_ms: None,
                    recur: None,
                    rollover: Rollover::Percent(50),
                },
            },
            20 => Op::Charge(Charge {
                node: NodeRef::Id(node),
                currency: cur,
                actual: Actual::Amount(0),
                attrs: Attributes::default(),
            }),
            21 => {
                // A tick that carries a request, or a client command without one.
                if sel % 2 == 0 {
                    return Some(Command::new("bad-tick", at, Op::Tick));
                }
                return Some(Command {
                    request: None,
                    actor: None,
                    op: Op::PauseNode {
                        node: NodeRef::Id(node),
                    },
                });
            }
            22 => {
                return Some(Command::new(
                    String::new(),
                    at,
                    Op::PauseNode {
                        node: NodeRef::Id(node),
                    },
                ))
            }
            _ => {
                return Some(Command::new(
                    "x".repeat(129),
                    at,
                    Op::PauseNode {
                        node: NodeRef::Id(node),
                    },
                ))
            }
        };
        let cmd = Command::new(format!("q{}", self.next_id), at, op);
        self.next_id += 1;
        Some(cmd)
    }
}

fn tokens(a: u8, b: u8) -> TokenUsage {
    TokenUsage {
        provider: "p".into(),
        model: ["m1", "m2"][(a % 2) as usize].into(),
        input: u64::from(a % 40),
        output: u64::from(b % 30),
        cached_input: u64::from((a / 7) % 10),
        reasoning: u64::from((b / 5) % 8),
    }
}
