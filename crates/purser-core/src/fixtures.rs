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

/// What the standard workload reserves: `micro_usd` at node `user`, held for a minute.
pub fn reserve_usd(user: u64, micro_usd: i64) -> crate::command::Op {
    use crate::command::{Amount, Attributes, NodeRef, Op, Reserve};
    Op::Reserve(Reserve {
        node: NodeRef::Id(user),
        currency: "usd".into(),
        amount: Amount::Exact(micro_usd),
        ttl_ms: 60_000,
        attrs: Attributes::default(),
    })
}

/// The standard tree; returns the state and the ids of the users.
pub fn standard_tree(at_ms: u64, config: crate::state::Config) -> (State, Vec<u64>) {
    let mut setup = Setup {
        state: State::with_config(config),
        at_ms,
        seq: 0,
    };
    setup.apply(create(None, "org".into(), "org"));
    setup.limits("org", 1_000_000_000_000_000);
    let grant = GrantSpec {
        currency: "usd".into(),
        amount: 1 << 52,
        priority: 0,
        kind: GrantKind::Prepaid,
        effective_at_ms: None,
        expires_at_ms: None,
        recur: None,
        rollover: Rollover::None,
    };
    setup.apply(Op::AddGrant {
        node: "org".into(),
        grant,
    });
    let mut users = Vec::new();
    for d in 0..DIVISIONS {
        let div = format!("org/d{d}");
        setup.apply(create(Some("org"), format!("d{d}"), "division"));
        setup.limits(&div, 100_000_000_000_000);
        for t in 0..TEAMS_PER_DIVISION {
            let team = format!("{div}/t{t}");
            setup.apply(create(Some(&div), format!("t{t}"), "team"));
            setup.limits(&team, 10_000_000_000_000);
            for u in 0..USERS_PER_TEAM {
                match setup.apply(create(Some(&team), format!("u{u}"), "user")) {
                    Outcome::NodeCreated { node_id } => users.push(node_id),
                    other => panic!("unexpected {other:?}"),
                }
                setup.limits(&format!("{team}/u{u}"), 100_000_000_000);
            }
        }
    }
    (setup.state, users)
}

/// A state being set up, one command after the other at the same time.
struct Setup {
    state: State,
    at_ms: u64,
    seq: u64,
}

impl Setup {
    fn apply(&mut self, op: Op) -> Outcome {
        self.seq += 1;
        let command = Command::new(format!("setup-{}", self.seq), self.at_ms, op);
        match self.state.apply(self.at_ms, command) {
            Ok(applied) => applied.outcome,
            Err(e) => panic!("setup command {} of the standard tree fails: {e}", self.seq),
        }
    }

    /// A monthly hard limit of `month` and a daily one of a tenth of it.
    fn limits(&mut self, path: &str, month: i64) {
        for (window, amount) in [(Period::Month, month), (Period::Day, month / 10)] {
            let limit = LimitSpec {
                currency: "usd".into(),
                amount,
                window: Window::Calendar(window),
                mode: LimitMode::Hard,
                thresholds: Vec::new(),
                on_exhausted: OnExhausted::Deny,
            };
            self.apply(Op::SetLimit {
                node: path.into(),
                limit,
            });
        }
    }
}

fn create(parent: Option<&str>, name: String, kind: &str) -> Op {
    Op::CreateNode(CreateNode {
        parent: parent.map(NodeRef::from),
        name,
        kind: kind.to_owned(),
        tags: Vec::new(),
        root: parent.is_none().then(|| RootSpec {
            currencies: vec![CurrencySpec {
                code: "usd".into(),
                scale: 6,
                funded: true,
            }],
            no_default_cap: true,
        }),
    })
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
