//! The standard benchmark workload, shared by the example, the criterion bench and (later)
//! the load generator: 1 org → 10 divisions → 100 teams → 10,000 users, a monthly and a daily
//! hard limit on every node, one prepaid grant at the org, funded `usd`.

use crate::command::*;
use crate::outcome::Outcome;
use crate::state::State;
use crate::time::Period;

pub const DIVISIONS: u64 = 10;
pub const TEAMS_PER_DIVISION: u64 = 10;
pub const USERS_PER_TEAM: u64 = 100;

/// The standard tree; returns the state and the ids of the users.
pub fn standard_tree(at_ms: u64, config: crate::state::Config) -> (State, Vec<u64>) {
    let mut state = State::with_config(config);
    let mut seq = 0u64;
    let mut apply = |state: &mut State, op: Op| -> Outcome {
        seq += 1;
        state
            .apply(at_ms, Command::new(format!("setup-{seq}"), at_ms, op))
            .expect("setup command applies")
            .outcome
    };
    let usd = || "usd".to_owned();
    let create = |parent: Option<&str>, name: String, kind: &str| {
        Op::CreateNode(CreateNode {
            parent: parent.map(NodeRef::from),
            name,
            kind: kind.to_owned(),
            tags: Vec::new(),
            root: parent.is_none().then(|| RootSpec {
                currencies: vec![CurrencySpec {
                    code: usd(),
                    scale: 6,
                    funded: true,
                }],
                no_default_cap: true,
            }),
        })
    };
    let limits = |state: &mut State,
                  apply: &mut dyn FnMut(&mut State, Op) -> Outcome,
                  path: &str,
                  month: i64| {
        for (window, amount) in [(Period::Month, month), (Period::Day, month / 10)] {
            let limit = LimitSpec {
                currency: usd(),
                amount,
                window: Window::Calendar(window),
                mode: LimitMode::Hard,
                thresholds: Vec::new(),
                on_exhausted: OnExhausted::Deny,
            };
            apply(
                state,
                Op::SetLimit {
                    node: path.into(),
                    limit,
                },
            );
        }
    };
    apply(&mut state, create(None, "org".into(), "org"));
    limits(&mut state, &mut apply, "org", 1_000_000_000_000_000);
    let grant = GrantSpec {
        currency: usd(),
        amount: 1 << 52,
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
            node: "org".into(),
            grant,
        },
    );
    let mut users = Vec::new();
    for d in 0..DIVISIONS {
        let div = format!("org/d{d}");
        apply(&mut state, create(Some("org"), format!("d{d}"), "division"));
        limits(&mut state, &mut apply, &div, 100_000_000_000_000);
        for t in 0..TEAMS_PER_DIVISION {
            let team = format!("{div}/t{t}");
            apply(&mut state, create(Some(&div), format!("t{t}"), "team"));
            limits(&mut state, &mut apply, &team, 10_000_000_000_000);
            for u in 0..USERS_PER_TEAM {
                let user = format!("{team}/u{u}");
                match apply(&mut state, create(Some(&team), format!("u{u}"), "user")) {
                    Outcome::NodeCreated { node_id } => users.push(node_id),
                    other => panic!("unexpected {other:?}"),
                }
                limits(&mut state, &mut apply, &user, 100_000_000_000);
            }
        }
    }
    (state, users)
}

/// A small, seedable PRNG for workloads (never used inside apply).
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
