//! R-AMOUNT: minor units, the price book and token settles.

use purser_core::*;

use crate::common::*;

const T0: u64 = 1_772_000_000_000;

fn price(
    model: &str,
    currency: &str,
    input: i64,
    output: i64,
    cached: i64,
    reasoning: i64,
) -> PriceSpec {
    PriceSpec {
        provider: "openai".into(),
        model: model.into(),
        currency: currency.into(),
        input_per_mtok: input,
        output_per_mtok: output,
        cached_input_per_mtok: cached,
        reasoning_per_mtok: reasoning,
    }
}

fn priced_world() -> (World, u64, u64) {
    let mut w = World::new(T0);
    let r = w.root("r", &[currency("usd", 6, false), currency("eur", 6, false)]);
    let dev = w.child(r, "dev");
    // Micro-dollars per million tokens: $2.50 in, $10 out, $1.25 cached, $10 reasoning.
    w.done(Op::SetPrice {
        root: r.into(),
        price: price(
            "gpt-4o", "usd", 2_500_000, 10_000_000, 1_250_000, 10_000_000,
        ),
    });
    (w, r, dev)
}

#[test]
fn token_settle_costs_the_ceiling_of_the_weighted_sum() {
    let (mut w, _, dev) = priced_world();
    let hold = w.reserve(dev, "usd", 10_000).reservation_id;
    // 1234*2.5 + 567*10 + 89*1.25 + 10*10 = 8966.25 micro-dollars -> 8967.
    let usage = tokens("openai", "gpt-4o", 1234, 567, 89, 10);
    let (settled, events) = w.settle_with(hold, Actual::Tokens(usage.clone()));
    assert_eq!(
        (settled.charged, settled.released, settled.overrun),
        (8967, 1033, 0)
    );
    assert_eq!(w.account(dev, "usd").spent_total, 8967);
    match &events[0] {
        Event::Usage(u) => {
            assert_eq!(u.amount, 8967);
            assert_eq!(u.tokens.as_ref(), Some(&usage));
            assert_eq!(u.reservation_id, Some(hold));
        }
        other => panic!("first event should be Usage, got {other:?}"),
    }

    // An exact product is not rounded up.
    let hold = w.reserve(dev, "usd", 10_000_000).reservation_id;
    let (settled, _) = w.settle_with(
        hold,
        Actual::Tokens(tokens("openai", "gpt-4o", 1_000_000, 0, 0, 0)),
    );
    assert_eq!(settled.charged, 2_500_000);
    // A single token costs at least one minor unit.
    w.done(Op::SetPrice {
        root: 1u64.into(),
        price: price("tiny", "usd", 1, 1, 1, 1),
    });
    let hold = w.reserve(dev, "usd", 10).reservation_id;
    let (settled, _) = w.settle_with(hold, Actual::Tokens(tokens("openai", "tiny", 0, 0, 0, 1)));
    assert_eq!(settled.charged, 1);
    // 999_999 tokens at 1 per Mtok: still 1; 1_000_001: 2.
    let hold = w.reserve(dev, "usd", 10).reservation_id;
    assert_eq!(
        w.settle_with(
            hold,
            Actual::Tokens(tokens("openai", "tiny", 999_999, 0, 0, 0))
        )
        .0
        .charged,
        1
    );
    let hold = w.reserve(dev, "usd", 10).reservation_id;
    assert_eq!(
        w.settle_with(
            hold,
            Actual::Tokens(tokens("openai", "tiny", 1_000_001, 0, 0, 0))
        )
        .0
        .charged,
        2
    );
    // No tokens cost nothing (a settle may be 0).
    let hold = w.reserve(dev, "usd", 10).reservation_id;
    let (settled, _) = w.settle_with(hold, Actual::Tokens(tokens("openai", "tiny", 0, 0, 0, 0)));
    assert_eq!((settled.charged, settled.released), (0, 10));
    w.invariants();
}

#[test]
fn charge_by_tokens_uses_the_same_price() {
    let (mut w, _, dev) = priced_world();
    let applied = w.ok(Op::Charge(Charge {
        node: dev.into(),
        currency: "usd".into(),
        actual: Actual::Tokens(tokens("openai", "gpt-4o", 1234, 567, 89, 10)),
        attrs: Attributes::default(),
    }));
    match applied.outcome {
        Outcome::Charged(s) => assert_eq!(s.charged, 8967),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_missing_price_is_not_found_and_changes_nothing() {
    let (mut w, r, dev) = priced_world();
    let hold = w.reserve(dev, "usd", 100).reservation_id;
    // Unknown model.
    let e = w.err(Op::Settle {
        reservation_id: hold,
        actual: Actual::Tokens(tokens("openai", "o9", 1, 1, 0, 0)),
    });
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message.contains("price"), "{e}");
    // Unknown provider.
    let e = w.err(Op::Settle {
        reservation_id: hold,
        actual: Actual::Tokens(tokens("other", "gpt-4o", 1, 1, 0, 0)),
    });
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(
        w.s.hold(hold).is_some(),
        "the hold stays open after a refused settle"
    );

    // The price book is keyed by currency: a usd price does not price a eur hold.
    let eur_hold = w.reserve(dev, "eur", 100).reservation_id;
    let e = w.err(Op::Settle {
        reservation_id: eur_hold,
        actual: Actual::Tokens(tokens("openai", "gpt-4o", 1, 1, 0, 0)),
    });
    assert_eq!(e.kind, ErrorKind::NotFound);

    // ... and per root.
    let other = w.root("other", &[currency("usd", 6, false)]);
    let ohold = w.reserve(other, "usd", 100).reservation_id;
    let e = w.err(Op::Settle {
        reservation_id: ohold,
        actual: Actual::Tokens(tokens("openai", "gpt-4o", 1, 1, 0, 0)),
    });
    assert_eq!(e.kind, ErrorKind::NotFound);

    // Replacing and removing a price.
    w.done(Op::SetPrice {
        root: r.into(),
        price: price("gpt-4o", "usd", 3_000_000, 0, 0, 0),
    });
    let (settled, _) = w.settle_with(
        hold,
        Actual::Tokens(tokens("openai", "gpt-4o", 10, 1000, 0, 0)),
    );
    assert_eq!(settled.charged, 30);
    w.done(Op::RemovePrice {
        root: r.into(),
        provider: "openai".into(),
        model: "gpt-4o".into(),
        currency: "usd".into(),
    });
    let hold = w.reserve(dev, "usd", 100).reservation_id;
    let e = w.err(Op::Settle {
        reservation_id: hold,
        actual: Actual::Tokens(tokens("openai", "gpt-4o", 1, 0, 0, 0)),
    });
    assert_eq!(e.kind, ErrorKind::NotFound);
    w.invariants();
}

#[test]
fn amounts_are_minor_units_up_to_two_to_the_53_minus_one() {
    let mut w = World::new(T0);
    let r = w.root("r", &[currency("usd", 0, false)]);
    let hold = w.reserve(r, "usd", AMOUNT_MAX);
    assert_eq!(hold.amount, AMOUNT_MAX);
    let (settled, _) = w.settle(hold.reservation_id, AMOUNT_MAX);
    assert_eq!(settled.charged, AMOUNT_MAX);
    let e = w.err(World::reserve_op(
        r,
        "usd",
        Amount::Exact(AMOUNT_MAX as i64 + 1),
        Attributes::default(),
    ));
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    // A limit may be 0: then nothing fits.
    w.set_limit(r, hard("usd", 0, LIFETIME));
    let d = w.deny(r, "usd", 1);
    assert_eq!(
        (d.rule, d.remaining, d.requested, d.retry_after_ms),
        (DenyRule::Cap, 0, 1, None)
    );
}
