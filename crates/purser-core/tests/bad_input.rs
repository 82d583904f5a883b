//! Bad input, table-driven: one fixed state, then every malformed or impossible command. Each
//! must fail with the right error kind and a message that says what was wrong, and must change
//! nothing at all (same digest, same clock, invariants intact).

#![allow(clippy::unwrap_used)]

mod common;

use purser_core::*;

use common::*;

const T: u64 = 1_773_144_000_000; // 2026-03-10 12:00 UTC

/// The fixed state the table runs against.
struct Fixture {
    s: State,
    /// When the table's commands are applied (a little after the state's clock: a failed
    /// command must not move the clock either).
    at: u64,
    acme: u64,
    team: u64,
    dev: u64,
    ops: u64,
    beta: u64,
    d4: u64,
    d5: u64,
    p: u64,
    old: u64,
    full: u64,
    rich: u64,
    big: u64,
    /// Open usd hold of 10 at dev.
    open: u64,
    /// Expired (by a tick) usd hold at dev.
    expired: u64,
    /// Open hold of 1 at big, whose counters are 2047 short of u64::MAX.
    big_hold: u64,
}

fn ok(s: &mut State, seq: &mut u64, at: u64, op: Op) -> Outcome {
    *seq += 1;
    let shown = format!("{op:?}");
    match s.apply(at, Command::new(format!("setup-{seq}"), at, op)) {
        Ok(applied) => applied.outcome,
        Err(e) => panic!("setup {shown} failed: {e}"),
    }
}

fn created(outcome: Outcome) -> u64 {
    match outcome {
        Outcome::NodeCreated { node_id } => node_id,
        other => panic!("{other:?}"),
    }
}

fn reserved(outcome: Outcome) -> u64 {
    match outcome {
        Outcome::Reserved(r) => r.reservation_id,
        other => panic!("{other:?}"),
    }
}

fn root_op(name: &str, currencies: Vec<CurrencySpec>, no_default_cap: bool) -> Op {
    Op::CreateNode(CreateNode {
        parent: None,
        name: name.into(),
        kind: "tenant".into(),
        tags: vec![],
        root: Some(RootSpec {
            currencies,
            no_default_cap,
        }),
    })
}

fn reserve_op(node: u64, currency: &str, amount: Amount, ttl_ms: u64) -> Op {
    Op::Reserve(Reserve {
        node: node.into(),
        currency: currency.into(),
        amount,
        ttl_ms,
        attrs: Attributes::default(),
    })
}

fn fixture() -> Fixture {
    let mut s = State::new();
    let mut seq = 0;

    // A whale whose spend counters are brought next to u64::MAX by 2048 settles of 2^53 - 1,
    // a day earlier so that their request ids are long forgotten.
    let early = T - DAY;
    let whale = created(ok(
        &mut s,
        &mut seq,
        early,
        root_op("whale", vec![currency("usd", 0, false)], true),
    ));
    let big = created(ok(&mut s, &mut seq, early, create_child(whale, "big")));
    for _ in 0..2048 {
        let r = reserved(ok(
            &mut s,
            &mut seq,
            early,
            reserve_op(big, "usd", Amount::Exact(AMOUNT_MAX as i64), MIN),
        ));
        ok(
            &mut s,
            &mut seq,
            early,
            Op::Settle {
                reservation_id: r,
                actual: Actual::Amount(AMOUNT_MAX as i64),
            },
        );
    }

    let acme = created(ok(
        &mut s,
        &mut seq,
        T,
        root_op(
            "acme",
            vec![currency("usd", 2, false), currency("credits", 0, true)],
            false,
        ),
    ));
    let team = created(ok(&mut s, &mut seq, T, create_child(acme, "team")));
    let dev = created(ok(&mut s, &mut seq, T, create_child(team, "dev")));
    let ops = created(ok(&mut s, &mut seq, T, create_child(acme, "ops")));
    created(ok(&mut s, &mut seq, T, create_child(team, "ops")));
    let beta = created(ok(
        &mut s,
        &mut seq,
        T,
        root_op("beta", vec![currency("usd", 2, false)], false),
    ));
    ok(
        &mut s,
        &mut seq,
        T,
        Op::SetConfig(ConfigPatch {
            depth_max: Some(5),
            ..ConfigPatch::default()
        }),
    );
    let d2 = created(ok(&mut s, &mut seq, T, create_child(acme, "d2")));
    let d3 = created(ok(&mut s, &mut seq, T, create_child(d2, "d3")));
    let d4 = created(ok(&mut s, &mut seq, T, create_child(d3, "d4")));
    let d5 = created(ok(&mut s, &mut seq, T, create_child(d4, "d5")));
    let p = created(ok(&mut s, &mut seq, T, create_child(acme, "p")));
    created(ok(&mut s, &mut seq, T, create_child(p, "q")));
    ok(
        &mut s,
        &mut seq,
        T,
        Op::SetLimit {
            node: p.into(),
            limit: hard("usd", 5, LIFETIME),
        },
    );
    let old = created(ok(&mut s, &mut seq, T, create_child(acme, "old")));
    ok(&mut s, &mut seq, T, Op::CloseNode { node: old.into() });

    // A node with the most limits and rate limits it may carry.
    let full = created(ok(&mut s, &mut seq, T, create_child(acme, "full")));
    for k in 1..=32u64 {
        ok(
            &mut s,
            &mut seq,
            T,
            Op::SetLimit {
                node: full.into(),
                limit: soft("usd", 1000, sliding(k * MIN)),
            },
        );
    }
    for k in 0..16 {
        let rate = RateLimitSpec {
            key: format!("m{k}"),
            kind: RateKind::Requests,
            amount: 10,
            period_ms: MIN,
        };
        ok(
            &mut s,
            &mut seq,
            T,
            Op::SetRateLimit {
                node: full.into(),
                rate,
            },
        );
    }
    // A node with the most grants it may own.
    let rich = created(ok(&mut s, &mut seq, T, create_child(acme, "rich")));
    for _ in 0..64 {
        ok(
            &mut s,
            &mut seq,
            T,
            Op::AddGrant {
                node: rich.into(),
                grant: grant("credits", 1, 0),
            },
        );
    }
    ok(
        &mut s,
        &mut seq,
        T,
        Op::AddGrant {
            node: acme.into(),
            grant: grant("credits", 1000, 0),
        },
    );

    for (name, limits) in [("dev", vec![hard("usd", 100, MONTHLY)]), ("spare", vec![])] {
        ok(
            &mut s,
            &mut seq,
            T,
            Op::DefineRole {
                root: acme.into(),
                name: name.into(),
                limits,
            },
        );
    }
    for k in 2..64 {
        ok(
            &mut s,
            &mut seq,
            T,
            Op::DefineRole {
                root: acme.into(),
                name: format!("r{k}"),
                limits: vec![],
            },
        );
    }
    ok(
        &mut s,
        &mut seq,
        T,
        Op::AssignRoles {
            node: dev.into(),
            roles: vec!["dev".into()],
        },
    );
    let price = |model: &str, input: i64| PriceSpec {
        provider: "openai".into(),
        model: model.into(),
        currency: "usd".into(),
        input_per_mtok: input,
        output_per_mtok: 0,
        cached_input_per_mtok: 0,
        reasoning_per_mtok: 0,
    };
    ok(
        &mut s,
        &mut seq,
        T,
        Op::SetPrice {
            root: acme.into(),
            price: price("gpt-4o", 2_500_000),
        },
    );
    ok(
        &mut s,
        &mut seq,
        T,
        Op::SetPrice {
            root: acme.into(),
            price: price("huge", AMOUNT_MAX as i64),
        },
    );

    let open = reserved(ok(
        &mut s,
        &mut seq,
        T,
        reserve_op(dev, "usd", Amount::Exact(10), MIN),
    ));
    let expired = reserved(ok(
        &mut s,
        &mut seq,
        T,
        reserve_op(dev, "usd", Amount::Exact(10), SEC),
    ));
    let big_hold = reserved(ok(
        &mut s,
        &mut seq,
        T,
        reserve_op(big, "usd", Amount::Exact(1), MIN),
    ));
    // A request id the table reuses with another payload.
    s.apply(T, Command::new("known", T, create_child(acme, "known")))
        .unwrap();
    s.apply(T + SEC, Command::tick()).unwrap();
    assert!(s.hold(expired).is_none() && s.hold(open).is_some());
    s.check_invariants().unwrap();

    Fixture {
        s,
        at: T + 5 * SEC,
        acme,
        team,
        dev,
        ops,
        beta,
        d4,
        d5,
        p,
        old,
        full,
        rich,
        big,
        open,
        expired,
        big_hold,
    }
}

struct Case {
    name: &'static str,
    command: Command,
    kind: ErrorKind,
    /// A piece of the message that says what was wrong.
    says: &'static str,
}

#[test]
fn every_bad_command_fails_with_its_kind_and_reason_and_changes_nothing() {
    let f = fixture();
    let at = f.at;
    let cases = cases(&f);
    assert!(cases.len() >= 100, "{} cases", cases.len());
    let digest = f.s.digest();
    let now = f.s.now_ms();
    let mut failures = Vec::new();
    for case in cases {
        let mut s = f.s.clone();
        let shown = format!("{:?}", case.command.op);
        let shown = if shown.len() > 160 {
            format!("{}…", &shown[..160])
        } else {
            shown
        };
        match s.apply(at, case.command) {
            Ok(applied) => failures.push(format!(
                "{}: accepted ({shown}): {:?}",
                case.name, applied.outcome
            )),
            Err(e) => {
                if e.kind != case.kind {
                    failures.push(format!(
                        "{}: kind {:?}, expected {:?} ({e})",
                        case.name, e.kind, case.kind
                    ));
                }
                if !e.message.contains(case.says) {
                    failures.push(format!(
                        "{}: message {:?} does not say {:?}",
                        case.name, e.message, case.says
                    ));
                }
            }
        }
        if s.digest() != digest {
            failures.push(format!("{}: the state changed", case.name));
        }
        if s.now_ms() != now {
            failures.push(format!("{}: the clock moved", case.name));
        }
        if let Err(why) = s.check_invariants() {
            failures.push(format!("{}: invariants broken: {why}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_fixture_accepts_good_commands_up_to_the_limits() {
    let f = fixture();
    // The counters of big are exactly 2047 short of overflowing.
    let mut s = f.s.clone();
    let settle = Op::Settle {
        reservation_id: f.big_hold,
        actual: Actual::Amount(2047),
    };
    assert!(matches!(
        s.apply(f.at, Command::new("fits", f.at, settle))
            .unwrap()
            .outcome,
        Outcome::Settled(_)
    ));
    assert_eq!(
        s.node_view(f.big, f.at).unwrap().accounts[0].spent_total,
        u64::MAX
    );
    // One more limit, rate limit or grant fits after removing one.
    let mut s = f.s.clone();
    let remove = Op::RemoveLimit {
        node: f.full.into(),
        currency: "usd".into(),
        window: sliding(MIN),
    };
    s.apply(f.at, Command::new("rm", f.at, remove)).unwrap();
    let add = Op::SetLimit {
        node: f.full.into(),
        limit: hard("usd", 1, LIFETIME),
    };
    s.apply(f.at, Command::new("add", f.at, add)).unwrap();
    // Names at the edge of the grammar are accepted.
    let mut s = f.s.clone();
    for (i, name) in ["a", "0", &"a".repeat(63), "a-b_c.d", "9lives"]
        .into_iter()
        .enumerate()
    {
        let id = format!("name-{i}");
        assert!(
            s.apply(f.at, Command::new(id, f.at, create_child(f.ops, name)))
                .is_ok(),
            "{name:?}"
        );
    }
    // A request id of 128 bytes, sent exactly 60 s ahead or exactly one retention ago.
    let mut s = f.s.clone();
    let op = || create_child(f.ops, "x");
    assert!(s
        .apply(f.at, Command::new("r".repeat(128), f.at + MIN, op()))
        .is_ok());
    let op2 = create_child(f.ops, "y");
    assert!(s
        .apply(f.at, Command::new("r2", f.at - 10 * MIN, op2))
        .is_ok());
}

fn cases(f: &Fixture) -> Vec<Case> {
    let at = f.at;
    let mut seq = 0u32;
    let mut out: Vec<Case> = Vec::new();
    let mut case = |name: &'static str, op: Op, kind: ErrorKind, says: &'static str| {
        seq += 1;
        out.push(Case {
            name,
            command: Command::new(format!("bad-{seq}"), at, op),
            kind,
            says,
        });
    };
    use ErrorKind::*;
    let (acme, team, dev, ops, beta, d4, d5, p, old, full, rich, big) = (
        f.acme, f.team, f.dev, f.ops, f.beta, f.d4, f.d5, f.p, f.old, f.full, f.rich, f.big,
    );
    let usd_reserve = |amount: Amount| reserve_op(dev, "usd", amount, MIN);
    let named = |parent: u64, name: &str| create_child(parent, name);
    let with_kind = |kind: &str| {
        Op::CreateNode(CreateNode {
            parent: Some(ops.into()),
            name: "k".into(),
            kind: kind.into(),
            tags: vec![],
            root: None,
        })
    };
    let with_tags = |tags: Vec<(String, String)>| {
        Op::CreateNode(CreateNode {
            parent: Some(ops.into()),
            name: "t".into(),
            kind: "team".into(),
            tags,
            root: None,
        })
    };
    let tag = |k: &str, v: &str| (k.to_string(), v.to_string());
    let with_attrs = |attrs: Attributes| {
        Op::Reserve(Reserve {
            node: dev.into(),
            currency: "usd".into(),
            amount: Amount::Exact(1),
            ttl_ms: MIN,
            attrs,
        })
    };
    let set_limit = |node: u64, limit: LimitSpec| Op::SetLimit {
        node: node.into(),
        limit,
    };
    let add_grant = |spec: GrantSpec| Op::AddGrant {
        node: acme.into(),
        grant: spec,
    };
    let recurring = |rollover| GrantSpec {
        recur: Some(Period::Month),
        rollover,
        ..grant("credits", 10, 0)
    };
    let rate =
        |node: u64, key: &str, kind: RateKind, amount: i64, period_ms: u64| Op::SetRateLimit {
            node: node.into(),
            rate: RateLimitSpec {
                key: key.into(),
                kind,
                amount,
                period_ms,
            },
        };
    let price = |root: u64, provider: &str, currency: &str, input: i64| Op::SetPrice {
        root: root.into(),
        price: PriceSpec {
            provider: provider.into(),
            model: "m".into(),
            currency: currency.into(),
            input_per_mtok: input,
            output_per_mtok: 0,
            cached_input_per_mtok: 0,
            reasoning_per_mtok: 0,
        },
    };
    let settle = |reservation_id: u64, actual: i64| Op::Settle {
        reservation_id,
        actual: Actual::Amount(actual),
    };
    let settle_tokens = |model: &str, input: u64| Op::Settle {
        reservation_id: f.open,
        actual: Actual::Tokens(tokens("openai", model, input, 0, 0, 0)),
    };
    let config = |patch: ConfigPatch| Op::SetConfig(patch);
    let define = |root: u64, name: &str, limits: Vec<LimitSpec>| Op::DefineRole {
        root: root.into(),
        name: name.into(),
        limits,
    };
    let assign = |roles: &[&str]| Op::AssignRoles {
        node: dev.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
    };
    let currencies = |n: usize| {
        (0..n)
            .map(|i| currency(&format!("c{i}"), 0, false))
            .collect::<Vec<_>>()
    };

    // ---- nodes and names ------------------------------------------------------------------
    case(
        "unknown node id",
        usd_reserve(Amount::Exact(1)).with_node(999),
        NotFound,
        "999",
    );
    case(
        "unknown node id 0",
        usd_reserve(Amount::Exact(1)).with_node(0),
        NotFound,
        "0",
    );
    case(
        "unknown node path",
        Op::Reserve(Reserve {
            node: "acme/nobody".into(),
            currency: "usd".into(),
            amount: Amount::Exact(1),
            ttl_ms: MIN,
            attrs: Attributes::default(),
        }),
        NotFound,
        "acme/nobody",
    );
    case("unknown parent", named(999, "x"), NotFound, "999");
    case(
        "name with uppercase",
        named(ops, "Alice"),
        InvalidArgument,
        "Alice",
    );
    case("empty name", named(ops, ""), InvalidArgument, "must match");
    case(
        "name of 64 bytes",
        named(ops, &"a".repeat(64)),
        InvalidArgument,
        "must match",
    );
    case(
        "name with a leading '-'",
        named(ops, "-lead"),
        InvalidArgument,
        "must match",
    );
    case(
        "name with a leading '_'",
        named(ops, "_lead"),
        InvalidArgument,
        "must match",
    );
    case(
        "name with a leading '.'",
        named(ops, ".lead"),
        InvalidArgument,
        "must match",
    );
    case(
        "name with a slash",
        named(ops, "a/b"),
        InvalidArgument,
        "must match",
    );
    case(
        "name with a space",
        named(ops, "a b"),
        InvalidArgument,
        "must match",
    );
    case(
        "name with non-ASCII",
        named(ops, "caf\u{e9}"),
        InvalidArgument,
        "must match",
    );
    case("empty kind", with_kind(""), InvalidArgument, "kind");
    case(
        "kind of 33 bytes",
        with_kind(&"k".repeat(33)),
        InvalidArgument,
        "kind",
    );
    case(
        "duplicate sibling name",
        named(acme, "team"),
        AlreadyExists,
        "team",
    );
    case(
        "duplicate root name",
        root_op("acme", vec![currency("usd", 2, false)], true),
        AlreadyExists,
        "acme",
    );
    case(
        "33 tags",
        with_tags((0..33).map(|i| tag(&format!("k{i}"), "v")).collect()),
        InvalidArgument,
        "32",
    );
    case(
        "duplicate tag keys",
        with_tags(vec![tag("team", "a"), tag("team", "b")]),
        InvalidArgument,
        "twice",
    );
    case(
        "empty tag key",
        with_tags(vec![tag("", "a")]),
        InvalidArgument,
        "tag key",
    );
    case(
        "tag key of 129 bytes",
        with_tags(vec![tag(&"k".repeat(129), "a")]),
        InvalidArgument,
        "tag key",
    );
    case(
        "child under a closed node",
        named(old, "x"),
        FailedPrecondition,
        "closed",
    );
    case(
        "child below depth_max",
        named(d5, "d6"),
        InvalidArgument,
        "5 levels",
    );
    case(
        "root without currencies",
        Op::CreateNode(CreateNode {
            parent: None,
            name: "r".into(),
            kind: "tenant".into(),
            tags: vec![],
            root: None,
        }),
        InvalidArgument,
        "currencies",
    );
    case(
        "root with 0 currencies",
        root_op("r", vec![], true),
        InvalidArgument,
        "1..=8",
    );
    case(
        "root with 9 currencies",
        root_op("r", currencies(9), true),
        InvalidArgument,
        "1..=8",
    );
    case(
        "child declaring currencies",
        Op::CreateNode(CreateNode {
            parent: Some(acme.into()),
            name: "c".into(),
            kind: "team".into(),
            tags: vec![],
            root: Some(RootSpec {
                currencies: currencies(1),
                no_default_cap: true,
            }),
        }),
        InvalidArgument,
        "root",
    );
    case(
        "uppercase currency code",
        root_op("r", vec![currency("USD", 2, false)], true),
        InvalidArgument,
        "USD",
    );
    case(
        "currency code with a leading digit",
        root_op("r", vec![currency("1usd", 2, false)], true),
        InvalidArgument,
        "1usd",
    );
    case(
        "currency code of 17 bytes",
        root_op("r", vec![currency(&"u".repeat(17), 2, false)], true),
        InvalidArgument,
        "must match",
    );
    case(
        "empty currency code",
        root_op("r", vec![currency("", 2, false)], true),
        InvalidArgument,
        "must match",
    );
    case(
        "currency scale 19",
        root_op("r", vec![currency("usd", 19, false)], true),
        InvalidArgument,
        "scale",
    );
    case(
        "duplicate currency",
        root_op(
            "r",
            vec![currency("usd", 2, false), currency("usd", 6, true)],
            true,
        ),
        InvalidArgument,
        "twice",
    );
    case(
        "default cap that does not fit",
        root_op("r", vec![currency("wei", 14, false)], false),
        InvalidArgument,
        "does not fit",
    );

    // ---- amounts ------------------------------------------------------------------------------
    case(
        "negative reserve",
        usd_reserve(Amount::Exact(-1)),
        InvalidArgument,
        "negative",
    );
    case(
        "i64::MIN reserve",
        usd_reserve(Amount::Exact(i64::MIN)),
        InvalidArgument,
        "negative",
    );
    case(
        "reserve of 2^53",
        usd_reserve(Amount::Exact(1 << 53)),
        InvalidArgument,
        "exceeds",
    );
    case(
        "reserve of i64::MAX",
        usd_reserve(Amount::Exact(i64::MAX)),
        InvalidArgument,
        "exceeds",
    );
    case(
        "zero reserve",
        usd_reserve(Amount::Exact(0)),
        InvalidArgument,
        "positive",
    );
    case(
        "negative min",
        usd_reserve(Amount::Range { min: -1, max: 5 }),
        InvalidArgument,
        "negative",
    );
    case(
        "zero min",
        usd_reserve(Amount::Range { min: 0, max: 5 }),
        InvalidArgument,
        "positive",
    );
    case(
        "max of 2^53",
        usd_reserve(Amount::Range {
            min: 1,
            max: 1 << 53,
        }),
        InvalidArgument,
        "exceeds",
    );
    case(
        "min above max",
        usd_reserve(Amount::Range { min: 20, max: 10 }),
        InvalidArgument,
        "above max",
    );
    case(
        "negative settle",
        settle(f.open, -1),
        InvalidArgument,
        "negative",
    );
    case(
        "settle of 2^53",
        settle(f.open, 1 << 53),
        InvalidArgument,
        "exceeds",
    );
    case(
        "zero charge",
        World::charge_op(dev, "usd", 0),
        InvalidArgument,
        "positive",
    );
    case(
        "negative charge",
        Op::Charge(Charge {
            node: dev.into(),
            currency: "usd".into(),
            actual: Actual::Amount(-5),
            attrs: Attributes::default(),
        }),
        InvalidArgument,
        "negative",
    );
    case(
        "charge of tokens that cost nothing",
        Op::Charge(Charge {
            node: dev.into(),
            currency: "usd".into(),
            actual: Actual::Tokens(tokens("openai", "gpt-4o", 0, 0, 0, 0)),
            attrs: Attributes::default(),
        }),
        InvalidArgument,
        "positive",
    );
    case(
        "zero grant",
        add_grant(grant("credits", 0, 0)),
        InvalidArgument,
        "positive",
    );
    case(
        "negative grant",
        add_grant(GrantSpec {
            amount: -1,
            ..grant("credits", 1, 0)
        }),
        InvalidArgument,
        "negative",
    );
    case(
        "negative limit",
        set_limit(
            dev,
            LimitSpec {
                amount: -1,
                ..hard("usd", 1, LIFETIME)
            },
        ),
        InvalidArgument,
        "negative",
    );
    case(
        "limit of 2^53",
        set_limit(
            dev,
            LimitSpec {
                amount: 1 << 53,
                ..hard("usd", 1, LIFETIME)
            },
        ),
        InvalidArgument,
        "exceeds",
    );
    case(
        "negative price",
        price(acme, "openai", "usd", -1),
        InvalidArgument,
        "negative",
    );
    case(
        "price of 2^53",
        price(acme, "openai", "usd", 1 << 53),
        InvalidArgument,
        "exceeds",
    );
    case(
        "zero rate amount",
        rate(dev, "*", RateKind::Requests, 0, MIN),
        InvalidArgument,
        "positive",
    );
    case(
        "negative rate amount",
        rate(dev, "*", RateKind::Requests, -3, MIN),
        InvalidArgument,
        "negative",
    );

    // ---- counters that would overflow u64 -----------------------------------------------------
    case(
        "settle overflowing the spend counters",
        settle(f.big_hold, AMOUNT_MAX as i64),
        InvalidArgument,
        "overflow",
    );
    case(
        "settle overflowing by one",
        settle(f.big_hold, 2048),
        InvalidArgument,
        "overflow",
    );
    case(
        "charge overflowing the spend counters",
        World::charge_op(big, "usd", 2048),
        InvalidArgument,
        "overflow",
    );
    case(
        "tokens costing more than 2^53 - 1",
        settle_tokens("huge", 10_000_000),
        InvalidArgument,
        "costs more",
    );

    // ---- currencies ----------------------------------------------------------------------------
    case(
        "reserve in an unknown currency",
        reserve_op(dev, "xyz", Amount::Exact(1), MIN),
        NotFound,
        "xyz",
    );
    case(
        "reserve in another root's currency",
        reserve_op(beta, "credits", Amount::Exact(1), MIN),
        NotFound,
        "credits",
    );
    case(
        "limit in an unknown currency",
        set_limit(dev, hard("xyz", 1, LIFETIME)),
        NotFound,
        "xyz",
    );
    case(
        "grant in an unknown currency",
        add_grant(grant("xyz", 1, 0)),
        NotFound,
        "xyz",
    );
    case(
        "price for an unknown currency",
        price(acme, "openai", "xyz", 1),
        NotFound,
        "xyz",
    );
    case(
        "cost rate in an unknown currency",
        rate(
            dev,
            "*",
            RateKind::Cost {
                currency: "xyz".into(),
            },
            1,
            MIN,
        ),
        NotFound,
        "xyz",
    );
    case(
        "charge in an unknown currency",
        World::charge_op(dev, "xyz", 1),
        NotFound,
        "xyz",
    );

    // ---- hold TTL -----------------------------------------------------------------------------
    case(
        "ttl below the minimum",
        reserve_op(dev, "usd", Amount::Exact(1), SEC - 1),
        InvalidArgument,
        "ttl",
    );
    case(
        "ttl of 0",
        reserve_op(dev, "usd", Amount::Exact(1), 0),
        InvalidArgument,
        "ttl",
    );
    case(
        "ttl above the maximum",
        reserve_op(dev, "usd", Amount::Exact(1), DAY + 1),
        InvalidArgument,
        "ttl",
    );

    // ---- moves --------------------------------------------------------------------------------
    let mv = |node: u64, to: u64| Op::MoveNode {
        node: node.into(),
        new_parent: to.into(),
    };
    case(
        "move under its own child",
        mv(team, dev),
        InvalidArgument,
        "cycle",
    );
    case(
        "move under itself",
        mv(team, team),
        InvalidArgument,
        "cycle",
    );
    case("move across roots", mv(dev, beta), InvalidArgument, "root");
    case("move a root", mv(acme, beta), InvalidArgument, "root");
    case(
        "move deeper than depth_max",
        mv(p, d4),
        InvalidArgument,
        "deeper",
    );
    case(
        "move a leaf below depth_max",
        mv(ops, d5),
        InvalidArgument,
        "deeper",
    );
    case(
        "move under a closed node",
        mv(ops, old),
        FailedPrecondition,
        "closed",
    );
    case(
        "move onto a taken name",
        mv(ops, team),
        AlreadyExists,
        "ops",
    );
    case(
        "move holds where they do not fit",
        mv(dev, p),
        FailedPrecondition,
        "absorb",
    );
    case("move an unknown node", mv(999, acme), NotFound, "999");

    // ---- status -------------------------------------------------------------------------------
    case(
        "close a closed node",
        Op::CloseNode { node: old.into() },
        FailedPrecondition,
        "closed",
    );
    case(
        "pause a closed node",
        Op::PauseNode { node: old.into() },
        FailedPrecondition,
        "closed",
    );
    case(
        "resume a closed node",
        Op::ResumeNode { node: old.into() },
        FailedPrecondition,
        "closed",
    );

    // ---- grants -------------------------------------------------------------------------------
    case(
        "grant in a capped currency",
        add_grant(grant("usd", 10, 0)),
        FailedPrecondition,
        "capped",
    );
    case(
        "rollover without recur",
        add_grant(GrantSpec {
            rollover: Rollover::CapMultiple(2),
            ..grant("credits", 10, 0)
        }),
        InvalidArgument,
        "recurring",
    );
    case(
        "percent rollover without recur",
        add_grant(GrantSpec {
            rollover: Rollover::Percent(50),
            ..grant("credits", 10, 0)
        }),
        InvalidArgument,
        "recurring",
    );
    case(
        "rollover cap multiple 0",
        add_grant(recurring(Rollover::CapMultiple(0))),
        InvalidArgument,
        "cap multiple",
    );
    case(
        "rollover cap multiple 1001",
        add_grant(recurring(Rollover::CapMultiple(1001))),
        InvalidArgument,
        "cap multiple",
    );
    case(
        "rollover percent 101",
        add_grant(recurring(Rollover::Percent(101))),
        InvalidArgument,
        "percent",
    );
    case(
        "grant expiring before now",
        add_grant(expiring(grant("credits", 10, 0), at - 1)),
        InvalidArgument,
        "expire",
    );
    case(
        "grant expiring now",
        add_grant(expiring(grant("credits", 10, 0), at)),
        InvalidArgument,
        "expire",
    );
    case(
        "grant expiring before it takes effect",
        add_grant(GrantSpec {
            effective_at_ms: Some(at + HOUR),
            ..expiring(grant("credits", 10, 0), at + MIN)
        }),
        InvalidArgument,
        "expire",
    );
    case(
        "65th grant of a node",
        Op::AddGrant {
            node: rich.into(),
            grant: grant("credits", 1, 0),
        },
        ResourceExhausted,
        "64",
    );

    // ---- roles --------------------------------------------------------------------------------
    case(
        "assign an unknown role",
        assign(&["ghost"]),
        NotFound,
        "ghost",
    );
    case(
        "assign a role twice",
        assign(&["dev", "dev"]),
        InvalidArgument,
        "twice",
    );
    case(
        "assign 9 roles",
        assign(&["a", "b", "c", "d", "e", "f", "g", "h", "i"]),
        InvalidArgument,
        "8",
    );
    case(
        "remove an assigned role",
        Op::RemoveRole {
            root: acme.into(),
            name: "dev".into(),
        },
        FailedPrecondition,
        "assigned",
    );
    case(
        "65th role of a root",
        define(acme, "r64", vec![]),
        ResourceExhausted,
        "64",
    );
    case(
        "remove an unknown role",
        Op::RemoveRole {
            root: acme.into(),
            name: "ghost".into(),
        },
        NotFound,
        "ghost",
    );
    case(
        "define a role on a non-root",
        define(team, "r", vec![]),
        InvalidArgument,
        "root",
    );
    case(
        "define a role with a bad name",
        define(acme, "Dev", vec![]),
        InvalidArgument,
        "Dev",
    );
    case(
        "define a role with two limits on one window",
        define(
            acme,
            "r",
            vec![hard("usd", 1, MONTHLY), soft("usd", 2, MONTHLY)],
        ),
        InvalidArgument,
        "one limit per",
    );
    case(
        "define a role with 17 limits",
        define(
            acme,
            "r",
            (1..=17u64)
                .map(|k| hard("usd", 1, sliding(k * MIN)))
                .collect(),
        ),
        InvalidArgument,
        "16",
    );
    case(
        "define a role limit in an unknown currency",
        define(acme, "r", vec![hard("xyz", 1, MONTHLY)]),
        NotFound,
        "xyz",
    );
    case(
        "role resolution on a non-root",
        Op::SetRoleResolution {
            root: dev.into(),
            resolution: RoleResolution::MostPermissive,
        },
        InvalidArgument,
        "root",
    );

    // ---- prices -------------------------------------------------------------------------------
    case(
        "price with an empty provider",
        price(acme, "", "usd", 1),
        InvalidArgument,
        "provider",
    );
    case(
        "price on a non-root",
        price(team, "openai", "usd", 1),
        InvalidArgument,
        "root",
    );
    case(
        "remove a missing price",
        Op::RemovePrice {
            root: acme.into(),
            provider: "openai".into(),
            model: "nope".into(),
            currency: "usd".into(),
        },
        NotFound,
        "price",
    );
    let hook = |root: u64, url: &str, secret: &str, kinds: &[&str]| Op::AddWebhook {
        root: root.into(),
        url: url.into(),
        secret: secret.into(),
        kinds: kinds.iter().map(|k| k.to_string()).collect(),
    };
    let (url, secret) = ("http://127.0.0.1:9/h", "0123456789abcdef");
    case(
        "webhook on a non-root",
        hook(team, url, secret, &["usage"]),
        InvalidArgument,
        "root",
    );
    case(
        "webhook on a missing root",
        hook(999_999, url, secret, &["usage"]),
        NotFound,
        "999999",
    );
    case(
        "webhook over another scheme",
        hook(acme, "ftp://example.com:21/h", secret, &["usage"]),
        InvalidArgument,
        "must look like http://host:port/path or https://host:port/path",
    );
    case(
        "webhook url without a port",
        hook(acme, "http://example.com/h", secret, &["usage"]),
        InvalidArgument,
        "port",
    );
    case(
        "webhook secret too short",
        hook(acme, url, "short", &["usage"]),
        InvalidArgument,
        "secret",
    );
    case(
        "webhook with an unknown kind",
        hook(acme, url, secret, &["governance.spent"]),
        InvalidArgument,
        "unknown event kind",
    );
    case(
        "webhook without kinds",
        hook(acme, url, secret, &[]),
        InvalidArgument,
        "event kinds",
    );
    case(
        "remove a missing webhook",
        Op::RemoveWebhook { id: 7 },
        NotFound,
        "webhook 7",
    );
    case(
        "settle tokens without a price",
        settle_tokens("nope", 1),
        NotFound,
        "price",
    );

    // ---- reservations -------------------------------------------------------------------------
    case(
        "settle an unknown reservation",
        settle(999, 1),
        NotFound,
        "999",
    );
    case(
        "release an unknown reservation",
        Op::Release {
            reservation_id: 999,
        },
        NotFound,
        "999",
    );
    case(
        "release an expired reservation",
        Op::Release {
            reservation_id: f.expired,
        },
        FailedPrecondition,
        "expired",
    );
    case(
        "17 attribute tags",
        with_attrs(Attributes {
            tags: (0..17).map(|i| tag(&format!("k{i}"), "v")).collect(),
            ..Attributes::default()
        }),
        InvalidArgument,
        "16",
    );
    case(
        "duplicate attribute tag keys",
        with_attrs(Attributes {
            tags: vec![tag("a", "1"), tag("a", "2")],
            ..Attributes::default()
        }),
        InvalidArgument,
        "twice",
    );
    case(
        "user of 129 bytes",
        with_attrs(Attributes {
            user: Some("u".repeat(129)),
            ..Attributes::default()
        }),
        InvalidArgument,
        "user",
    );
    case(
        "empty model",
        with_attrs(Attributes {
            model: Some(String::new()),
            ..Attributes::default()
        }),
        InvalidArgument,
        "model",
    );

    // ---- windows, thresholds, limits ----------------------------------------------------------
    case(
        "sliding window below a minute",
        set_limit(dev, hard("usd", 1, sliding(MIN - 60))),
        InvalidArgument,
        "sliding",
    );
    case(
        "sliding window of 0",
        set_limit(dev, hard("usd", 1, sliding(0))),
        InvalidArgument,
        "sliding",
    );
    case(
        "sliding window not a multiple of 60 ms",
        set_limit(dev, hard("usd", 1, sliding(MIN + 1))),
        InvalidArgument,
        "sliding",
    );
    case(
        "sliding window above 400 days",
        set_limit(dev, hard("usd", 1, sliding(400 * DAY + 60))),
        InvalidArgument,
        "sliding",
    );
    case(
        "first-use window below a second",
        set_limit(dev, hard("usd", 1, first_use(SEC - 1))),
        InvalidArgument,
        "first-use",
    );
    case(
        "first-use window above 400 days",
        set_limit(dev, hard("usd", 1, first_use(400 * DAY + 1))),
        InvalidArgument,
        "first-use",
    );
    case(
        "threshold 0",
        set_limit(dev, with_thresholds(hard("usd", 1, MONTHLY), &[0])),
        InvalidArgument,
        "thresholds",
    );
    case(
        "threshold 101",
        set_limit(dev, with_thresholds(hard("usd", 1, MONTHLY), &[50, 101])),
        InvalidArgument,
        "thresholds",
    );
    case(
        "duplicate thresholds",
        set_limit(dev, with_thresholds(hard("usd", 1, MONTHLY), &[50, 50])),
        InvalidArgument,
        "thresholds",
    );
    case(
        "33rd limit of a node",
        set_limit(full, hard("usd", 1, LIFETIME)),
        ResourceExhausted,
        "32",
    );
    case(
        "remove a missing limit",
        Op::RemoveLimit {
            node: dev.into(),
            currency: "usd".into(),
            window: WEEKLY,
        },
        NotFound,
        "limit",
    );

    // ---- rate limits --------------------------------------------------------------------------
    case(
        "rate period of 0",
        rate(dev, "*", RateKind::Requests, 1, 0),
        InvalidArgument,
        "period",
    );
    case(
        "rate period above 366 days",
        rate(dev, "*", RateKind::Requests, 1, 366 * DAY + 1),
        InvalidArgument,
        "period",
    );
    case(
        "empty rate key",
        rate(dev, "", RateKind::Requests, 1, MIN),
        InvalidArgument,
        "key",
    );
    case(
        "17th rate limit of a node",
        rate(full, "m16", RateKind::Requests, 1, MIN),
        ResourceExhausted,
        "16",
    );
    case(
        "remove a missing rate limit",
        Op::RemoveRateLimit {
            node: dev.into(),
            key: "*".into(),
            kind: RateKind::Requests,
        },
        NotFound,
        "rate limit",
    );

    // ---- configuration ------------------------------------------------------------------------
    case(
        "depth_max 0",
        config(ConfigPatch {
            depth_max: Some(0),
            ..ConfigPatch::default()
        }),
        InvalidArgument,
        "depth_max",
    );
    case(
        "depth_max 33",
        config(ConfigPatch {
            depth_max: Some(33),
            ..ConfigPatch::default()
        }),
        InvalidArgument,
        "depth_max",
    );
    case(
        "depth_max below the deepest node",
        config(ConfigPatch {
            depth_max: Some(4),
            ..ConfigPatch::default()
        }),
        FailedPrecondition,
        "5 levels",
    );
    case(
        "retention below a minute",
        config(ConfigPatch {
            request_retention_ms: Some(MIN - 1),
            ..ConfigPatch::default()
        }),
        InvalidArgument,
        "request_retention_ms",
    );
    case(
        "retention above a day",
        config(ConfigPatch {
            request_retention_ms: Some(DAY + 1),
            ..ConfigPatch::default()
        }),
        InvalidArgument,
        "request_retention_ms",
    );
    case(
        "hold TTL min 0",
        config(ConfigPatch {
            hold_ttl_ms_min: Some(0),
            ..ConfigPatch::default()
        }),
        InvalidArgument,
        "TTL",
    );
    case(
        "hold TTL max above 30 days",
        config(ConfigPatch {
            hold_ttl_ms_max: Some(30 * DAY + 1),
            ..ConfigPatch::default()
        }),
        InvalidArgument,
        "TTL",
    );
    case(
        "hold TTL min above max",
        config(ConfigPatch {
            hold_ttl_ms_min: Some(2 * DAY),
            ..ConfigPatch::default()
        }),
        InvalidArgument,
        "TTL",
    );
    case(
        "default cap 0",
        config(ConfigPatch {
            default_root_cap_major: Some(0),
            ..ConfigPatch::default()
        }),
        InvalidArgument,
        "default_root_cap_major",
    );
    case(
        "a patch with one bad field changes no field",
        config(ConfigPatch {
            depth_max: Some(8),
            request_retention_ms: Some(1),
            ..ConfigPatch::default()
        }),
        InvalidArgument,
        "request_retention_ms",
    );

    // ---- request metadata ---------------------------------------------------------------------
    let good_op = || named(ops, "fresh");
    let mut raw = |name: &'static str, command: Command, kind: ErrorKind, says: &'static str| {
        out.push(Case {
            name,
            command,
            kind,
            says,
        });
    };
    raw(
        "request id reused with another payload",
        Command::new("known", at, good_op()),
        AlreadyExists,
        "known",
    );
    raw(
        "missing request id",
        Command {
            request: None,
            actor: None,
            op: good_op(),
        },
        InvalidArgument,
        "request id",
    );
    raw(
        "empty request id",
        Command::new("", at, good_op()),
        InvalidArgument,
        "request id",
    );
    raw(
        "request id of 129 bytes",
        Command::new("r".repeat(129), at, good_op()),
        InvalidArgument,
        "request id",
    );
    raw(
        "tick with a request id",
        Command::new("tick", at, Op::Tick),
        InvalidArgument,
        "system command",
    );
    raw(
        "webhook-delivered with a request id",
        Command::new(
            "delivered",
            at,
            Op::WebhookDelivered {
                id: 1,
                through_index: 1,
            },
        ),
        InvalidArgument,
        "system command",
    );
    raw(
        "webhook-delivered for a missing webhook",
        Command {
            request: None,
            actor: None,
            op: Op::WebhookDelivered {
                id: 1,
                through_index: 1,
            },
        },
        NotFound,
        "webhook 1",
    );
    raw(
        "request older than the retention",
        Command::new("old", at - 10 * MIN - 1, good_op()),
        FailedPrecondition,
        "retention",
    );
    raw(
        "request from more than 60 s ahead",
        Command::new("future", at + MIN + 1, good_op()),
        InvalidArgument,
        "after the cluster time",
    );
    out
}

trait WithNode {
    fn with_node(self, node: u64) -> Op;
}

impl WithNode for Op {
    fn with_node(self, node: u64) -> Op {
        match self {
            Op::Reserve(r) => Op::Reserve(Reserve {
                node: node.into(),
                ..r
            }),
            other => other,
        }
    }
}
