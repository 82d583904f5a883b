//! R-RATE: GCRA request and cost rate limits on the replicated clock.

use purser_core::*;

use crate::common::*;

const T: u64 = 1_773_144_000_000; // 2026-03-10 12:00 UTC

fn rate(key: &str, kind: RateKind, amount: i64, period_ms: u64) -> RateLimitSpec {
    RateLimitSpec {
        key: key.into(),
        kind,
        amount,
        period_ms,
    }
}

fn rate_denial(node: u64, key: &str, remaining: u64, requested: u64, retry: Option<u64>) -> Denial {
    Denial {
        node,
        rule: DenyRule::RateLimit { key: key.into() },
        window: None,
        remaining,
        requested,
        retry_after_ms: retry,
    }
}

fn world() -> (World, u64, u64) {
    let mut w = World::new(T);
    let r = w.root("r", &[currency("usd", 0, false), currency("eur", 0, false)]);
    let dev = w.child(r, "dev");
    (w, r, dev)
}

fn available(w: &World, node: u64) -> Vec<u64> {
    w.s.node_view(node, w.now)
        .unwrap()
        .rate_limits
        .iter()
        .map(|r| r.available)
        .collect()
}

#[test]
fn request_rate_allows_the_burst_then_denies_with_an_exact_retry_after() {
    let (mut w, _, dev) = world();
    w.done(Op::SetRateLimit {
        node: dev.into(),
        rate: rate("*", RateKind::Requests, 3, MIN),
    });
    assert_eq!(available(&w, dev), vec![3]);
    let mut holds = vec![];
    for left in [2, 1, 0] {
        holds.push(w.reserve(dev, "usd", 10).reservation_id);
        assert_eq!(available(&w, dev), vec![left]);
    }
    // One request takes period / amount = 20 s.
    assert_eq!(
        w.deny(dev, "usd", 10),
        rate_denial(dev, "*", 0, 10, Some(20 * SEC))
    );
    // Settles do not consume, denials do not consume.
    for h in holds {
        w.settle(h, 10);
    }
    w.at(T + 20 * SEC - 1);
    assert_eq!(
        w.deny(dev, "usd", 10),
        rate_denial(dev, "*", 0, 10, Some(1))
    );
    assert_eq!(
        w.deny(dev, "eur", 10).retry_after_ms,
        Some(1),
        "a request rate applies to every currency"
    );
    w.at(T + 20 * SEC);
    assert_eq!(available(&w, dev), vec![1]);
    w.reserve(dev, "usd", 10);
    assert_eq!(w.deny(dev, "usd", 10).retry_after_ms, Some(20 * SEC));

    // After a full period of quiet the whole burst is back.
    w.at(T + 80 * SEC);
    assert_eq!(available(&w, dev), vec![3]);
    // Charges consume too.
    w.charge(dev, "usd", 1);
    assert_eq!(available(&w, dev), vec![2]);

    // Replacing a rate limit starts it with a full bucket.
    w.done(Op::SetRateLimit {
        node: dev.into(),
        rate: rate("*", RateKind::Requests, 2, MIN),
    });
    assert_eq!(available(&w, dev), vec![2]);
}

#[test]
fn cost_rate_clips_a_range_and_denies_below_min() {
    let (mut w, _, dev) = world();
    // 100 usd per minute: one unit takes 600 ms.
    w.done(Op::SetRateLimit {
        node: dev.into(),
        rate: rate(
            "*",
            RateKind::Cost {
                currency: "usd".into(),
            },
            100,
            MIN,
        ),
    });
    assert_eq!(w.reserve_range(dev, "usd", 10, 80).amount, 80);
    assert_eq!(w.reserve_range(dev, "usd", 10, 80).amount, 20);
    assert_eq!(
        w.deny_range(dev, "usd", 10, 80),
        rate_denial(dev, "*", 0, 10, Some(6 * SEC))
    );
    // Other currencies are not limited by a usd cost rate.
    assert_eq!(w.reserve(dev, "eur", 1000).amount, 1000);

    w.at(T + 6 * SEC);
    assert_eq!(available(&w, dev), vec![10]);
    assert_eq!(
        w.deny_range(dev, "usd", 11, 80),
        rate_denial(dev, "*", 10, 11, Some(600))
    );
    assert_eq!(w.reserve_range(dev, "usd", 10, 80).amount, 10);

    // Asking more than the burst can never pass: no retry_after.
    w.at(T + 10 * MIN);
    assert_eq!(
        w.deny_range(dev, "usd", 150, 200),
        rate_denial(dev, "*", 100, 150, None)
    );
    assert_eq!(w.reserve(dev, "usd", 100).amount, 100);
}

#[test]
fn model_keyed_rates_match_only_their_model_and_star_matches_all() {
    let (mut w, r, dev) = world();
    w.done(Op::SetRateLimit {
        node: dev.into(),
        rate: rate("gpt-4o", RateKind::Requests, 1, MIN),
    });
    w.done(Op::SetRateLimit {
        node: r.into(),
        rate: rate("*", RateKind::Requests, 3, MIN),
    });
    let reserve = |w: &mut World, m: Option<&str>| {
        let attrs = m.map(model).unwrap_or_default();
        w.try_reserve(dev, "usd", Amount::Exact(1), attrs).outcome
    };
    assert!(matches!(
        reserve(&mut w, Some("gpt-4o")),
        Outcome::Reserved(_)
    ));
    assert_eq!(
        expect_denied(reserve(&mut w, Some("gpt-4o"))),
        rate_denial(dev, "gpt-4o", 0, 1, Some(MIN))
    );
    assert!(matches!(
        reserve(&mut w, Some("claude")),
        Outcome::Reserved(_)
    ));
    assert!(matches!(reserve(&mut w, None), Outcome::Reserved(_)));
    // The root's `*` limit saw three requests (the denied one did not count).
    assert_eq!(
        expect_denied(reserve(&mut w, Some("claude"))),
        rate_denial(r, "*", 0, 1, Some(20 * SEC))
    );
    // A model-keyed cost rate.
    w.done(Op::SetRateLimit {
        node: dev.into(),
        rate: rate(
            "claude",
            RateKind::Cost {
                currency: "usd".into(),
            },
            5,
            MIN,
        ),
    });
    w.at(T + MIN);
    let clipped = w
        .try_reserve(
            dev,
            "usd",
            Amount::Range { min: 1, max: 50 },
            model("claude"),
        )
        .outcome;
    assert_eq!(expect_reserved(clipped).amount, 5);
    let unclipped = w
        .try_reserve(
            dev,
            "usd",
            Amount::Range { min: 1, max: 50 },
            model("gpt-4o"),
        )
        .outcome;
    assert_eq!(expect_reserved(unclipped).amount, 50);
}

#[test]
fn rate_limits_are_checked_after_status_and_before_caps() {
    let (mut w, r, dev) = world();
    w.done(Op::SetRateLimit {
        node: dev.into(),
        rate: rate("*", RateKind::Requests, 1, MIN),
    });
    w.set_limit(r, hard("usd", 10, LIFETIME));
    w.reserve(dev, "usd", 10);
    // Both the rate and the cap are exhausted: the rate is named.
    assert_eq!(
        w.deny(dev, "usd", 5).rule,
        DenyRule::RateLimit { key: "*".into() }
    );
    w.done(Op::PauseNode { node: r.into() });
    assert_eq!(w.deny(dev, "usd", 5).rule, DenyRule::NodePaused);
    w.done(Op::ResumeNode { node: r.into() });
    // A denial by a cap consumes no rate capacity.
    w.at(T + MIN);
    assert_eq!(available(&w, dev), vec![1]);
    assert_eq!(w.deny(dev, "usd", 5).rule, DenyRule::Cap);
    assert_eq!(available(&w, dev), vec![1]);
}
