//! Determinism: equal logs give equal states; snapshots round-trip byte for byte; damaged
//! snapshots are refused.

use purser_core::*;

use crate::common::*;

const T: u64 = 1_773_144_000_000; // 2026-03-10 12:00 UTC

/// A log touching every kind of command, with errors and denials in it.
fn script() -> Vec<(u64, Command)> {
    let mut log = Vec::new();
    let mut n = 0;
    let mut push = |at: u64, op: Op| {
        n += 1;
        log.push((at, Command::new(format!("c{n}"), at, op)));
    };
    let root = |name: &str, currencies: Vec<CurrencySpec>| {
        Op::CreateNode(CreateNode {
            parent: None,
            name: name.into(),
            kind: "tenant".into(),
            tags: vec![("tier".into(), "gold".into())],
            root: Some(RootSpec {
                currencies,
                no_default_cap: false,
            }),
        })
    };
    push(
        T,
        root(
            "acme",
            vec![currency("usd", 6, false), currency("credits", 0, true)],
        ),
    );
    push(T, create_child(1, "team"));
    push(T, create_child(2, "dev"));
    push(T, create_child(1, "ops"));
    push(T, root("beta", vec![currency("eur", 2, false)]));
    push(
        T,
        Op::SetLimit {
            node: 2u64.into(),
            limit: with_thresholds(hard("usd", 5_000_000, DAILY), &[10, 90]),
        },
    );
    push(
        T,
        Op::SetLimit {
            node: 3u64.into(),
            limit: soft("credits", 50, sliding(HOUR)),
        },
    );
    push(
        T,
        Op::SetLimit {
            node: 4u64.into(),
            limit: pausing(hard("credits", 40, first_use(DAY))),
        },
    );
    push(
        T,
        Op::SetRateLimit {
            node: 3u64.into(),
            rate: RateLimitSpec {
                key: "*".into(),
                kind: RateKind::Requests,
                amount: 5,
                period_ms: MIN,
            },
        },
    );
    push(
        T,
        Op::AddGrant {
            node: 1u64.into(),
            grant: grant("credits", 500, 1),
        },
    );
    push(
        T,
        Op::AddGrant {
            node: 2u64.into(),
            grant: GrantSpec {
                recur: Some(Period::Day),
                rollover: Rollover::Percent(50),
                ..grant("credits", 30, 0)
            },
        },
    );
    push(
        T,
        Op::AddGrant {
            node: 4u64.into(),
            grant: expiring(grant("credits", 25, 0), T + 2 * HOUR),
        },
    );
    push(
        T,
        Op::DefineRole {
            root: 1u64.into(),
            name: "eng".into(),
            limits: vec![hard("usd", 3_000_000, MONTHLY)],
        },
    );
    push(
        T,
        Op::AssignRoles {
            node: 3u64.into(),
            roles: vec!["eng".into()],
        },
    );
    push(
        T,
        Op::SetPrice {
            root: 1u64.into(),
            price: PriceSpec {
                provider: "openai".into(),
                model: "gpt-4o".into(),
                currency: "usd".into(),
                input_per_mtok: 2_500_000,
                output_per_mtok: 10_000_000,
                cached_input_per_mtok: 1_250_000,
                reasoning_per_mtok: 0,
            },
        },
    );
    let reserve = |node: u64, currency: &str, amount: Amount, ttl_ms: u64| {
        Op::Reserve(Reserve {
            node: node.into(),
            currency: currency.into(),
            amount,
            ttl_ms,
            attrs: model("gpt-4o"),
        })
    };
    push(
        T + SEC,
        reserve(
            3,
            "usd",
            Amount::Range {
                min: 1000,
                max: 4_000_000,
            },
            MIN,
        ),
    ); // res 1
    push(T + SEC, reserve(3, "credits", Amount::Exact(45), 10 * SEC)); // res 2
    push(T + 2 * SEC, reserve(4, "credits", Amount::Exact(20), HOUR)); // res 3
    push(T + 2 * SEC, reserve(4, "usd", Amount::Exact(-1), HOUR)); // error
    push(
        T + 3 * SEC,
        Op::Settle {
            reservation_id: 1,
            actual: Actual::Tokens(tokens("openai", "gpt-4o", 1234, 567, 89, 0)),
        },
    );
    push(
        T + 3 * SEC,
        Op::Charge(Charge {
            node: 4u64.into(),
            currency: "credits".into(),
            actual: Actual::Amount(30),
            attrs: Attributes::default(),
        }),
    );
    push(
        T + 4 * SEC,
        Op::Settle {
            reservation_id: 3,
            actual: Actual::Amount(35),
        },
    );
    push(
        T + 5 * SEC,
        reserve(3, "usd", Amount::Exact(9_000_000), MIN),
    ); // denied by team's day cap
    push(
        T + 5 * SEC,
        Op::MoveNode {
            node: 3u64.into(),
            new_parent: 4u64.into(),
        },
    );
    push(T + 6 * SEC, Op::PauseNode { node: 4u64.into() });
    push(T + 6 * SEC, Op::ResumeNode { node: 4u64.into() });
    push(
        T + 7 * SEC,
        Op::SetConfig(ConfigPatch {
            request_retention_ms: Some(5 * MIN),
            ..ConfigPatch::default()
        }),
    );
    push(T + 8 * SEC, Op::Release { reservation_id: 2 });
    push(T + 9 * SEC, Op::CloseNode { node: 5u64.into() });
    for i in 0..5u64 {
        push(
            T + 10 * SEC + i,
            reserve(3, "credits", Amount::Range { min: 1, max: 10 }, SEC),
        );
    }
    // A grant that a later tick activates.
    push(
        T + 11 * SEC,
        Op::AddGrant {
            node: 1u64.into(),
            grant: GrantSpec {
                effective_at_ms: Some(T + 2 * HOUR),
                ..grant("credits", 40, 2)
            },
        },
    );
    // A duplicate and a conflicting retry of an early request.
    let (_, first) = log[15].clone();
    log.push((T + 11 * SEC, first.clone()));
    log.push((
        T + 11 * SEC,
        Command {
            op: Op::Release { reservation_id: 99 },
            ..first
        },
    ));
    log.push((T + 12 * SEC, Command::tick()));
    log.push((T + 3 * HOUR, Command::tick()));
    log.push((t(2026, 3, 12, 0), Command::tick()));
    log
}

fn run(log: &[(u64, Command)]) -> (State, Vec<Result<Applied>>) {
    let mut s = State::new();
    let results = log.iter().map(|(at, c)| s.apply(*at, c.clone())).collect();
    (s, results)
}

#[test]
fn the_same_log_gives_the_same_results_and_digest() {
    let log = script();
    let (a, ra) = run(&log);
    let (b, rb) = run(&log);
    assert_eq!(ra, rb);
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.snapshot(), b.snapshot());
    a.check_invariants().unwrap();
    // The script really exercised things: some errors, some denials, some events.
    assert!(ra.iter().any(|r| r.is_err()));
    assert!(ra.iter().any(|r| matches!(
        r,
        Ok(Applied {
            outcome: Outcome::Denied(_),
            ..
        })
    )));
    assert!(ra.iter().any(|r| matches!(
        r,
        Ok(Applied {
            outcome: Outcome::Duplicate(_),
            ..
        })
    )));
    assert!(
        ra.iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|a| a.events.len())
            .sum::<usize>()
            > 15
    );

    // A different log gives a different digest.
    let mut other = log.clone();
    let settle = Op::Settle {
        reservation_id: 3,
        actual: Actual::Amount(36),
    };
    assert!(matches!(
        other[21].1.op,
        Op::Settle {
            reservation_id: 3,
            ..
        }
    ));
    other[21].1 = Command::new("c22", T + 4 * SEC, settle);
    let (c, _) = run(&other);
    assert_ne!(a.digest(), c.digest());
}

#[test]
fn snapshot_restore_snapshot_is_byte_identical_and_the_restored_state_continues_identically() {
    let log = script();
    for cut in [0, 5, 16, 22, log.len() - 3, log.len()] {
        let (mut original, _) = run(&log[..cut]);
        let bytes = original.snapshot();
        let mut restored = State::restore(&bytes).unwrap();
        assert_eq!(restored.snapshot(), bytes, "cut at {cut}");
        assert_eq!(restored.digest(), original.digest());
        for (at, c) in &log[cut..] {
            assert_eq!(
                original.apply(*at, c.clone()),
                restored.apply(*at, c.clone()),
                "cut at {cut}"
            );
        }
        assert_eq!(original.snapshot(), restored.snapshot());
    }
}

#[test]
fn a_damaged_snapshot_is_refused() {
    let (state, _) = run(&script());
    let bytes = state.snapshot();
    assert!(State::restore(&bytes).is_ok());
    let refused = |damaged: &[u8], what: &str| {
        let e = State::restore(damaged)
            .err()
            .unwrap_or_else(|| panic!("{what} was accepted"));
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{what}");
        assert!(e.message.contains("snapshot"), "{what}: {e}");
    };
    // Every single flipped byte, wherever it is (magic, version, length, body, checksum).
    for i in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[i] ^= 0x01;
        refused(&damaged, &format!("bit flip at byte {i}"));
    }
    for len in [0, 1, 8, 27, bytes.len() / 2, bytes.len() - 1] {
        refused(&bytes[..len], &format!("truncation to {len} bytes"));
    }
    let mut longer = bytes.clone();
    longer.push(0);
    refused(&longer, "a trailing byte");
}
