//! R-LIMIT: window kinds and their boundaries, hard and soft limits, thresholds, the default
//! monthly cap, and how open holds and settles meet windows.

use purser_core::*;

use crate::common::*;

/// A root `r` (usd, scale 0, capped, no default cap) with one child `dev` carrying `spec`.
fn one_limit(now: u64, spec: LimitSpec) -> (World, u64) {
    let mut w = World::new(now);
    let r = w.root("r", &[currency("usd", 0, false)]);
    let dev = w.child(r, "dev");
    w.set_limit(dev, spec);
    (w, dev)
}

fn cap_denial(
    node: u64,
    window: Window,
    remaining: u64,
    requested: u64,
    retry: Option<u64>,
) -> Denial {
    Denial {
        node,
        rule: DenyRule::Cap,
        window: Some(window),
        remaining,
        requested,
        retry_after_ms: retry,
    }
}

#[test]
fn calendar_month_ends_january_31_into_february() {
    let (mut w, dev) = one_limit(t(2025, 1, 31, 12), hard("usd", 100, MONTHLY));
    w.at(t(2025, 2, 1, 0) - 1); // 2025-01-31 23:59:59.999
    w.charge(dev, "usd", 100);
    let view = w.own_limit(dev, "usd", MONTHLY);
    assert_eq!(
        (view.window_start_ms, view.window_end_ms),
        (Some(t(2025, 1, 1, 0)), Some(t(2025, 2, 1, 0)))
    );
    assert_eq!((view.spent, view.remaining), (100, 0));
    assert_eq!(
        w.deny(dev, "usd", 1),
        cap_denial(dev, MONTHLY, 0, 1, Some(1))
    );

    w.at(t(2025, 2, 1, 0));
    let view = w.own_limit(dev, "usd", MONTHLY);
    // February 2025 has 28 days.
    assert_eq!(
        (view.window_start_ms, view.window_end_ms),
        (Some(t(2025, 2, 1, 0)), Some(t(2025, 3, 1, 0)))
    );
    assert_eq!(view.spent, 0);
    let (_, events) = w.charge(dev, "usd", 30);
    assert!(governance(&events).contains(&GovernanceEvent::WindowReset {
        node: dev,
        from_roles: false,
        currency: "usd".into(),
        window: MONTHLY,
        closed_start_ms: t(2025, 1, 1, 0),
        spent: 100,
    }));
    assert_eq!(w.spent(dev, "usd", MONTHLY), 30);
}

#[test]
fn calendar_month_february_in_leap_and_common_years() {
    assert_eq!(days_in_month(2024, 2), 29);
    // 2023: February 28 is the last day.
    let (mut w, dev) = one_limit(t(2023, 2, 28, 0), hard("usd", 100, MONTHLY));
    w.charge(dev, "usd", 100);
    assert_eq!(w.deny(dev, "usd", 1).retry_after_ms, Some(DAY));
    assert_eq!(
        w.own_limit(dev, "usd", MONTHLY).window_end_ms,
        Some(t(2023, 3, 1, 0))
    );
    w.at(t(2023, 3, 1, 0));
    assert_eq!(w.reserve(dev, "usd", 100).amount, 100);

    // 2024: February 29 exists and is still February.
    let (mut w, dev) = one_limit(t(2024, 2, 28, 0), hard("usd", 100, MONTHLY));
    w.charge(dev, "usd", 100);
    assert_eq!(w.deny(dev, "usd", 1).retry_after_ms, Some(2 * DAY));
    assert_eq!(
        w.own_limit(dev, "usd", MONTHLY).window_end_ms,
        Some(t(2024, 3, 1, 0))
    );
    w.at(t(2024, 2, 29, 0));
    assert_eq!(
        w.deny(dev, "usd", 1),
        cap_denial(dev, MONTHLY, 0, 1, Some(DAY))
    );
    w.at(t(2024, 3, 1, 0) - 1);
    assert_eq!(w.deny(dev, "usd", 1).retry_after_ms, Some(1));
    w.at(t(2024, 3, 1, 0));
    assert_eq!(w.reserve(dev, "usd", 100).amount, 100);
}

#[test]
fn calendar_month_december_into_january() {
    let (mut w, dev) = one_limit(t(2024, 12, 31, 18), hard("usd", 100, MONTHLY));
    w.charge(dev, "usd", 100);
    assert_eq!(w.deny(dev, "usd", 1).retry_after_ms, Some(6 * HOUR));
    let view = w.own_limit(dev, "usd", MONTHLY);
    assert_eq!(
        (view.window_start_ms, view.window_end_ms),
        (Some(t(2024, 12, 1, 0)), Some(t(2025, 1, 1, 0)))
    );
    w.at(t(2025, 1, 1, 0));
    let view = w.own_limit(dev, "usd", MONTHLY);
    assert_eq!(
        (view.window_start_ms, view.window_end_ms),
        (Some(t(2025, 1, 1, 0)), Some(t(2025, 2, 1, 0)))
    );
    assert_eq!(w.reserve(dev, "usd", 100).amount, 100);
}

#[test]
fn calendar_day_and_hour_boundaries() {
    let mut w = World::new(tm(2026, 5, 17, 13, 59));
    let r = w.root("r", &[currency("usd", 0, false)]);
    let day = w.child(r, "day");
    let hour = w.child(r, "hour");
    w.set_limit(day, hard("usd", 100, DAILY));
    w.set_limit(hour, hard("usd", 100, HOURLY));
    w.charge(day, "usd", 100);
    w.charge(hour, "usd", 100);
    assert_eq!(
        w.deny(day, "usd", 1),
        cap_denial(day, DAILY, 0, 1, Some(10 * HOUR + MIN))
    );
    assert_eq!(
        w.deny(hour, "usd", 1),
        cap_denial(hour, HOURLY, 0, 1, Some(MIN))
    );
    let view = w.own_limit(hour, "usd", HOURLY);
    assert_eq!(
        (view.window_start_ms, view.window_end_ms),
        (Some(t(2026, 5, 17, 13)), Some(t(2026, 5, 17, 14)))
    );

    w.at(t(2026, 5, 17, 14) - 1);
    assert_eq!(w.deny(hour, "usd", 1).retry_after_ms, Some(1));
    w.at(t(2026, 5, 17, 14));
    assert_eq!(w.reserve(hour, "usd", 100).amount, 100);
    assert_eq!(w.deny(day, "usd", 1).retry_after_ms, Some(10 * HOUR));

    w.at(t(2026, 5, 18, 0) - 1);
    assert_eq!(w.deny(day, "usd", 1).retry_after_ms, Some(1));
    w.at(t(2026, 5, 18, 0));
    let view = w.own_limit(day, "usd", DAILY);
    assert_eq!(
        (view.window_start_ms, view.window_end_ms, view.spent),
        (Some(t(2026, 5, 18, 0)), Some(t(2026, 5, 19, 0)), 0)
    );
    assert_eq!(w.reserve(day, "usd", 100).amount, 100);
}

#[test]
fn calendar_week_starts_on_monday() {
    assert_eq!(weekday(2026, 11, 22), 7, "2026-11-22 is a Sunday");
    assert_eq!(weekday(2026, 11, 23), 1, "2026-11-23 is a Monday");
    let (mut w, dev) = one_limit(t(2026, 11, 22, 23), hard("usd", 100, WEEKLY));
    w.charge(dev, "usd", 100);
    let view = w.own_limit(dev, "usd", WEEKLY);
    assert_eq!(
        (view.window_start_ms, view.window_end_ms),
        (Some(t(2026, 11, 16, 0)), Some(t(2026, 11, 23, 0)))
    );
    assert_eq!(
        w.deny(dev, "usd", 1),
        cap_denial(dev, WEEKLY, 0, 1, Some(HOUR))
    );

    w.at(t(2026, 11, 23, 0));
    let (_, events) = w.charge(dev, "usd", 100);
    assert!(governance(&events).iter().any(|g| matches!(
        g,
        GovernanceEvent::WindowReset { closed_start_ms, spent: 100, .. } if *closed_start_ms == t(2026, 11, 16, 0)
    )));
    // The whole week through Sunday 23:59:59.999 is the same window.
    w.at(t(2026, 11, 30, 0) - 1);
    assert_eq!(w.deny(dev, "usd", 1).retry_after_ms, Some(1));
    assert_eq!(
        w.own_limit(dev, "usd", WEEKLY).window_start_ms,
        Some(t(2026, 11, 23, 0))
    );
    w.at(t(2026, 11, 30, 0));
    assert_eq!(w.reserve(dev, "usd", 100).amount, 100);
}

#[test]
fn sliding_window_spend_leaves_exactly_when_its_bucket_leaves() {
    // D = 1 h, buckets of 1 min. base is aligned on a minute.
    let d = HOUR;
    let base = t(2026, 3, 2, 10);
    let (mut w, dev) = one_limit(base + 30 * SEC, hard("usd", 100, sliding(d)));
    w.charge(dev, "usd", 60); // bucket base/1min
    w.at(base + 10 * MIN + 30 * SEC);
    w.charge(dev, "usd", 40); // bucket base/1min + 10
    w.at(base + 20 * MIN);
    let view = w.own_limit(dev, "usd", sliding(d));
    assert_eq!(
        (view.spent, view.window_start_ms, view.window_end_ms),
        (100, None, None)
    );

    // Need spent <= 70: the first bucket (60) leaves when bucket +60 becomes current.
    assert_eq!(
        w.deny(dev, "usd", 30),
        cap_denial(dev, sliding(d), 0, 30, Some(40 * MIN))
    );
    // Need spent <= 30: both buckets must leave, the second at base + 70 min.
    assert_eq!(w.deny(dev, "usd", 70).retry_after_ms, Some(50 * MIN));
    // More than the limit itself can never fit.
    assert_eq!(w.deny(dev, "usd", 101).retry_after_ms, None);

    // The spend settled at base + 30 s leaves at base + 60 min (59.5 min later), not before.
    w.at(base + HOUR - 1);
    assert_eq!(w.spent(dev, "usd", sliding(d)), 100);
    assert_eq!(w.deny(dev, "usd", 30).retry_after_ms, Some(1));
    w.at(base + HOUR);
    assert_eq!(w.spent(dev, "usd", sliding(d)), 40);
    let hold = w.reserve(dev, "usd", 60);
    assert_eq!(hold.headroom[0].remaining, Some(0));
    w.release(hold.reservation_id);
    w.at(base + 70 * MIN - 1);
    assert_eq!(w.spent(dev, "usd", sliding(d)), 40);
    w.at(base + 70 * MIN);
    assert_eq!(w.spent(dev, "usd", sliding(d)), 0);
    assert_eq!(w.reserve(dev, "usd", 100).amount, 100);
}

#[test]
fn sliding_thresholds_are_stateless_and_cross_again() {
    let base = t(2026, 3, 2, 10);
    let (mut w, dev) = one_limit(base, soft("usd", 100, sliding(HOUR)));
    let (_, events) = w.charge(dev, "usd", 60);
    assert_eq!(crossings(&events), vec![(dev, 50)]);
    w.at(base + HOUR);
    assert_eq!(w.spent(dev, "usd", sliding(HOUR)), 0);
    let (_, events) = w.charge(dev, "usd", 60);
    assert_eq!(
        crossings(&events),
        vec![(dev, 50)],
        "spend that dropped and rose again crosses again"
    );
    // No window-reset events for sliding windows.
    assert!(!governance(&events)
        .iter()
        .any(|g| matches!(g, GovernanceEvent::WindowReset { .. })));
}

#[test]
fn first_use_window_starts_at_the_first_consuming_settle_and_restarts_after_it_ends() {
    let t0 = t(2026, 6, 1, 0);
    let fu = first_use(DAY);
    let (mut w, dev) = one_limit(t0, hard("usd", 100, fu));
    let view = w.own_limit(dev, "usd", fu);
    assert_eq!(
        (view.window_start_ms, view.window_end_ms, view.spent),
        (None, None, 0)
    );
    // A zero settle does not start the window.
    let hold = w.reserve(dev, "usd", 10).reservation_id;
    w.settle(hold, 0);
    assert_eq!(w.own_limit(dev, "usd", fu).window_start_ms, None);

    let s = t0 + HOUR;
    w.at(s);
    w.charge(dev, "usd", 30);
    let view = w.own_limit(dev, "usd", fu);
    assert_eq!(
        (view.window_start_ms, view.window_end_ms, view.spent),
        (Some(s), Some(s + DAY), 30)
    );

    w.at(s + DAY - 1);
    let (_, events) = w.charge(dev, "usd", 70);
    assert_eq!(crossings(&events), vec![(dev, 50), (dev, 75), (dev, 100)]);
    assert_eq!(
        w.own_limit(dev, "usd", fu).window_start_ms,
        Some(s),
        "a later settle does not move the start"
    );
    assert_eq!(w.deny(dev, "usd", 1), cap_denial(dev, fu, 0, 1, Some(1)));

    // The window covers [s, s + D): at s + D spend is 0 until the next consuming settle.
    w.at(s + DAY);
    let view = w.own_limit(dev, "usd", fu);
    assert_eq!(
        (view.window_start_ms, view.spent, view.remaining),
        (None, 0, 100)
    );
    let hold = w.reserve(dev, "usd", 100).reservation_id;
    w.release(hold);

    let s2 = t0 + DAY + 5 * HOUR;
    w.at(s2);
    let (_, events) = w.charge(dev, "usd", 20);
    assert_eq!(
        governance(&events),
        vec![GovernanceEvent::WindowReset {
            node: dev,
            from_roles: false,
            currency: "usd".into(),
            window: fu,
            closed_start_ms: s,
            spent: 100,
        }]
    );
    let view = w.own_limit(dev, "usd", fu);
    assert_eq!(
        (view.window_start_ms, view.window_end_ms, view.spent),
        (Some(s2), Some(s2 + DAY), 20)
    );
}

#[test]
fn lifetime_never_resets_and_has_no_retry() {
    let (mut w, dev) = one_limit(t(2026, 1, 1, 0), hard("usd", 100, LIFETIME));
    w.charge(dev, "usd", 100);
    w.at(t(2030, 1, 1, 0));
    assert_eq!(w.spent(dev, "usd", LIFETIME), 100);
    assert_eq!(w.deny(dev, "usd", 1), cap_denial(dev, LIFETIME, 0, 1, None));
}

#[test]
fn hard_limits_deny_soft_limits_only_alert() {
    let mut w = World::new(t(2026, 3, 10, 12));
    let r = w.root("r", &[currency("usd", 0, false)]);
    let dev = w.child(r, "dev");
    w.set_limit(dev, soft("usd", 100, MONTHLY));
    w.charge(dev, "usd", 40);
    let _open = w.reserve(dev, "usd", 50);
    // spent 40 + held 50 + 10 = 100: not above, no alert.
    let applied = w.try_reserve(dev, "usd", Amount::Exact(10), Attributes::default());
    assert!(applied.events.is_empty(), "{:?}", applied.events);
    // 40 + 60 + 1 = 101.
    let applied = w.try_reserve(dev, "usd", Amount::Exact(1), Attributes::default());
    assert_eq!(expect_reserved(applied.outcome).amount, 1);
    let alert = |would_be| {
        vec![Event::Governance(GovernanceEvent::SoftLimitExceeded {
            node: dev,
            role: None,
            currency: "usd".into(),
            window: MONTHLY,
            amount: 100,
            would_be,
        })]
    };
    assert_eq!(applied.events, alert(101));
    let applied = w.try_reserve(dev, "usd", Amount::Exact(1000), Attributes::default());
    assert_eq!(expect_reserved(applied.outcome).amount, 1000);
    assert_eq!(applied.events, alert(40 + 61 + 1000));

    // Under a hard limit the holds alone use the room (a new limit's counter starts empty).
    w.set_limit(r, hard("usd", 1061, MONTHLY));
    assert_eq!(w.deny(dev, "usd", 1).node, r);
    assert_eq!(w.deny(dev, "usd", 1).remaining, 0);
}

#[test]
fn thresholds_fire_exactly_once_per_window() {
    let (mut w, dev) = one_limit(t(2026, 3, 10, 12), soft("usd", 100, MONTHLY));
    let steps = [
        (49, vec![]),
        (1, vec![50]),
        (24, vec![]),
        (1, vec![75]),
        (25, vec![100]),
        (50, vec![]),
        (10, vec![]),
    ];
    for (amount, expected) in steps {
        let (_, events) = w.charge(dev, "usd", amount);
        let got: Vec<u8> = crossings(&events).into_iter().map(|(_, p)| p).collect();
        assert_eq!(got, expected, "after charging {amount}");
    }
    let (_, events) = w.charge(dev, "usd", 1);
    assert!(crossings(&events).is_empty());
    assert_eq!(w.spent(dev, "usd", MONTHLY), 161);

    // Next month, one settle crosses all three at once, in ascending order, after the reset.
    w.at(t(2026, 4, 1, 0));
    let (_, events) = w.charge(dev, "usd", 100);
    let threshold = |percent| GovernanceEvent::ThresholdCrossed {
        node: dev,
        role: None,
        currency: "usd".into(),
        window: MONTHLY,
        percent,
        spent: 100,
        amount: 100,
    };
    assert_eq!(
        governance(&events),
        vec![
            GovernanceEvent::WindowReset {
                node: dev,
                from_roles: false,
                currency: "usd".into(),
                window: MONTHLY,
                closed_start_ms: t(2026, 3, 1, 0),
                spent: 161,
            },
            threshold(50),
            threshold(75),
            threshold(100),
        ]
    );
}

#[test]
fn custom_thresholds() {
    let (mut w, dev) = one_limit(
        t(2026, 3, 10, 12),
        with_thresholds(soft("usd", 200, MONTHLY), &[90, 10]),
    );
    assert_eq!(w.own_limit(dev, "usd", MONTHLY).thresholds, vec![10, 90]);
    assert_eq!(crossings(&w.charge(dev, "usd", 19).1), vec![]);
    assert_eq!(crossings(&w.charge(dev, "usd", 1).1), vec![(dev, 10)]);
    assert_eq!(crossings(&w.charge(dev, "usd", 159).1), vec![]);
    assert_eq!(crossings(&w.charge(dev, "usd", 1).1), vec![(dev, 90)]);
    assert_eq!(
        crossings(&w.charge(dev, "usd", 100).1),
        vec![],
        "no 100% threshold was asked for"
    );
}

#[test]
fn new_roots_get_a_default_monthly_cap_unless_they_opt_out() {
    let mut w = World::new(t(2026, 3, 10, 12));
    let acme = w.root_with(
        "acme",
        &[currency("usd", 6, false), currency("credits", 0, true)],
        false,
    );
    let limits = w.s.usage(acme, w.now).unwrap();
    let expected = |currency: &str, amount: u64| LimitView {
        role: None,
        currency: currency.into(),
        amount,
        window: MONTHLY,
        mode: LimitMode::Hard,
        thresholds: vec![50, 75, 100],
        on_exhausted: OnExhausted::Deny,
        window_start_ms: Some(t(2026, 3, 1, 0)),
        window_end_ms: Some(t(2026, 4, 1, 0)),
        spent: 0,
        held: 0,
        remaining: amount,
    };
    assert_eq!(
        limits,
        vec![expected("usd", 100_000_000), expected("credits", 100)]
    );
    let d = w.deny(acme, "usd", 100_000_001);
    assert_eq!(d, cap_denial(acme, MONTHLY, 100_000_000, 100_000_001, None));
    assert_eq!(w.reserve(acme, "usd", 100_000_000).amount, 100_000_000);

    // The default is configurable and applies to roots created afterwards.
    w.done(Op::SetConfig(ConfigPatch {
        default_root_cap_major: Some(5),
        ..ConfigPatch::default()
    }));
    let beta = w.root_with("beta", &[currency("eur", 2, false)], false);
    assert_eq!(w.own_limit(beta, "eur", MONTHLY).amount, 500);
    assert_eq!(w.own_limit(acme, "usd", MONTHLY).amount, 100_000_000);

    // Opting out leaves the root without limits.
    let gamma = w.root_with("gamma", &[currency("usd", 6, false)], true);
    assert!(w.s.usage(gamma, w.now).unwrap().is_empty());
    assert_eq!(w.reserve(gamma, "usd", AMOUNT_MAX).amount, AMOUNT_MAX);
}

#[test]
fn an_open_hold_counts_in_every_window_and_a_settle_charges_the_window_current_at_settle() {
    let (mut w, dev) = one_limit(t(2025, 1, 31, 22), hard("usd", 100, MONTHLY));
    w.charge(dev, "usd", 30);
    w.at(t(2025, 1, 31, 23));
    let hold = w.reserve_ttl(dev, "usd", 60, 2 * HOUR).reservation_id;
    assert_eq!(
        w.deny(dev, "usd", 20),
        cap_denial(dev, MONTHLY, 10, 20, Some(HOUR))
    );

    // In February the January spend is gone but the hold still counts.
    w.at(tm(2025, 2, 1, 0, 30));
    let view = w.own_limit(dev, "usd", MONTHLY);
    assert_eq!((view.spent, view.held, view.remaining), (0, 60, 40));
    // held + min > amount: waiting cannot help, no retry_after.
    assert_eq!(
        w.deny(dev, "usd", 50),
        cap_denial(dev, MONTHLY, 40, 50, None)
    );
    let fits = w.reserve(dev, "usd", 40).reservation_id;
    w.release(fits);

    // The settle lands in February, the window current at settle time.
    let (_, events) = w.settle(hold, 60);
    assert_eq!(w.spent(dev, "usd", MONTHLY), 60);
    let gov = governance(&events);
    assert_eq!(
        gov[0],
        GovernanceEvent::WindowReset {
            node: dev,
            from_roles: false,
            currency: "usd".into(),
            window: MONTHLY,
            closed_start_ms: t(2025, 1, 1, 0),
            spent: 30,
        }
    );
    assert_eq!(crossings(&events), vec![(dev, 50)]);
    match &events[2] {
        Event::Balance(b) => assert_eq!(
            b.windows,
            vec![WindowBalance {
                node: dev,
                from_roles: false,
                window: MONTHLY,
                spent: 60
            }]
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_clock_never_goes_back() {
    let (mut w, dev) = one_limit(t(2025, 2, 1, 0), hard("usd", 100, MONTHLY));
    // A command stamped in January is applied at the state's clock, in February.
    let cmd = Command::new(
        "late-stamp",
        t(2025, 2, 1, 0),
        World::charge_op(dev, "usd", 40),
    );
    w.s.apply(t(2025, 1, 31, 12), cmd).unwrap();
    assert_eq!(w.s.now_ms(), t(2025, 2, 1, 0));
    assert_eq!(w.spent(dev, "usd", MONTHLY), 40);
    assert_eq!(
        w.own_limit(dev, "usd", MONTHLY).window_start_ms,
        Some(t(2025, 2, 1, 0))
    );
}

#[test]
fn a_limit_counts_only_settles_made_while_it_exists() {
    let (mut w, dev) = one_limit(t(2026, 3, 10, 12), hard("usd", 1000, MONTHLY));
    w.charge(dev, "usd", 50);
    w.set_limit(dev, hard("usd", 100, LIFETIME));
    assert_eq!(w.spent(dev, "usd", LIFETIME), 0, "a new limit starts empty");
    w.charge(dev, "usd", 30);
    assert_eq!(w.spent(dev, "usd", LIFETIME), 30);
    // Replacing the rule keeps the counter.
    w.set_limit(dev, hard("usd", 40, LIFETIME));
    let view = w.own_limit(dev, "usd", LIFETIME);
    assert_eq!((view.amount, view.spent, view.remaining), (40, 30, 10));
    assert_eq!(w.deny(dev, "usd", 11).remaining, 10);
    // Removing drops the counter.
    w.done(Op::RemoveLimit {
        node: dev.into(),
        currency: "usd".into(),
        window: LIFETIME,
    });
    w.set_limit(dev, hard("usd", 40, LIFETIME));
    assert_eq!(w.spent(dev, "usd", LIFETIME), 0);
    assert_eq!(w.spent(dev, "usd", MONTHLY), 80);
}

#[test]
fn a_first_use_settle_exactly_at_the_window_end_starts_the_next_window() {
    let t0 = t(2026, 6, 1, 0);
    let fu = first_use(HOUR);
    let (mut w, dev) = one_limit(t0, hard("usd", 100, fu));
    w.charge(dev, "usd", 100);
    w.at(t0 + HOUR);
    let (_, events) = w.charge(dev, "usd", 10);
    assert!(
        matches!(governance(&events)[0], GovernanceEvent::WindowReset { closed_start_ms, spent: 100, .. } if closed_start_ms == t0)
    );
    let view = w.own_limit(dev, "usd", fu);
    assert_eq!(
        (view.window_start_ms, view.window_end_ms, view.spent),
        (Some(t0 + HOUR), Some(t0 + 2 * HOUR), 10)
    );
}
