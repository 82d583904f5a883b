//! R-RESERVE: clipping, denials, settle / release / charge, TTL expiry, late settles, overruns,
//! and idempotency (I4).

use purser_core::*;

use crate::common::*;

const T: u64 = 1_773_144_000_000; // 2026-03-10 12:00 UTC

#[test]
fn a_range_is_clipped_to_the_largest_amount_every_check_allows() {
    let mut w = World::new(T);
    let acme = w.root("acme", &[currency("credits", 0, true)]);
    let team = w.child(acme, "team");
    let dev = w.child(team, "dev");
    w.set_limit(acme, hard("credits", 100, MONTHLY));
    w.set_limit(dev, hard("credits", 70, LIFETIME));
    let g0 = w.add_grant(acme, grant("credits", 20, 0)).0;
    let h0 = w.reserve(acme, "credits", 20);
    assert_eq!(h0.plan, vec![part(g0, acme, 20)]);
    let g1 = w.add_grant(dev, grant("credits", 40, 0)).0;
    let g2 = w.add_grant(acme, grant("credits", 25, 1)).0;

    // Caps: dev 70, acme 100 - 20 held = 80; funding: 40 + 25 = 65 (g0 is fully held).
    let r = w.reserve_range(dev, "credits", 10, 1000);
    assert_eq!(r.amount, 65);
    assert_eq!(r.plan, vec![part(g1, dev, 40), part(g2, acme, 25)]);
    assert_eq!(
        r.headroom,
        vec![
            Headroom {
                node: dev,
                remaining: Some(5)
            },
            Headroom {
                node: team,
                remaining: None
            },
            Headroom {
                node: acme,
                remaining: Some(15)
            },
        ]
    );
    assert_eq!(r.expires_at_ms, T + MIN);
    assert_eq!((r.node, r.currency.as_str()), (dev, "credits"));
    w.release(r.reservation_id);

    // More funding: dev's cap binds.
    let g3 = w.add_grant(team, grant("credits", 100, 0)).0;
    let r = w.reserve_range(dev, "credits", 10, 1000);
    assert_eq!(r.amount, 70);
    assert_eq!(r.plan, vec![part(g1, dev, 40), part(g3, team, 30)]);
    w.release(r.reservation_id);

    // A wider dev cap: acme's binds.
    w.set_limit(dev, hard("credits", 1000, LIFETIME));
    let r = w.reserve_range(dev, "credits", 10, 1000);
    assert_eq!(r.amount, 80);
    assert_eq!(r.plan, vec![part(g1, dev, 40), part(g3, team, 40)]);
    w.release(r.reservation_id);

    // A cost rate binds tighter still; max binds when it is the smallest.
    let rate = RateLimitSpec {
        key: "*".into(),
        kind: RateKind::Cost {
            currency: "credits".into(),
        },
        amount: 50,
        period_ms: MIN,
    };
    w.done(Op::SetRateLimit {
        node: dev.into(),
        rate,
    });
    let r = w.reserve_range(dev, "credits", 10, 1000);
    assert_eq!(r.amount, 50);
    assert_eq!(r.plan, vec![part(g1, dev, 40), part(g3, team, 10)]);
    w.release(r.reservation_id);
    w.at(T + MIN);
    assert_eq!(w.reserve_range(dev, "credits", 10, 30).amount, 30);
    w.invariants();
}

#[test]
fn a_denial_names_the_blocking_node_rule_window_room_and_retry() {
    let mut w = World::new(T);
    let acme = w.root("acme", &[currency("usd", 0, false)]);
    let team = w.child(acme, "team");
    let dev = w.child(team, "dev");
    w.set_limit(acme, hard("usd", 100, MONTHLY));
    w.set_limit(team, hard("usd", 50, DAILY));
    w.charge(dev, "usd", 30);

    let team_denial = |remaining, requested, retry| Denial {
        node: team,
        rule: DenyRule::Cap,
        window: Some(DAILY),
        remaining,
        requested,
        retry_after_ms: retry,
    };
    assert_eq!(w.deny(dev, "usd", 25), team_denial(20, 25, Some(12 * HOUR)));
    assert_eq!(
        w.deny_range(dev, "usd", 25, 40),
        team_denial(20, 25, Some(12 * HOUR))
    );
    // Leaf to root: team is named before acme even when both fail.
    assert_eq!(w.deny(dev, "usd", 90), team_denial(20, 90, None));
    assert_eq!(
        w.deny(acme, "usd", 80),
        Denial {
            node: acme,
            rule: DenyRule::Cap,
            window: Some(MONTHLY),
            remaining: 70,
            requested: 80,
            retry_after_ms: Some(t(2026, 4, 1, 0) - T),
        }
    );
    // With 20 held at team: 20 + 40 > 50 can never fit, 20 + 10 can once the day ends.
    w.reserve(dev, "usd", 20);
    assert_eq!(w.deny(dev, "usd", 40), team_denial(0, 40, None));
    assert_eq!(w.deny(dev, "usd", 10), team_denial(0, 10, Some(12 * HOUR)));
}

#[test]
fn settle_by_amount_release_and_charge() {
    let mut w = World::new(T);
    let acme = w.root("acme", &[currency("usd", 0, false)]);
    let dev = w.child(acme, "dev");

    let r = w.reserve(dev, "usd", 40);
    let hold = w.s.hold(r.reservation_id).unwrap();
    assert_eq!(
        (
            hold.node,
            hold.amount,
            hold.created_at_ms,
            hold.expires_at_ms
        ),
        (dev, 40, T, T + MIN)
    );
    assert_eq!(w.s.node_view(dev, w.now).unwrap().holds_open, 1);
    assert_eq!(w.account(acme, "usd").held, 40);
    let (s, _) = w.settle(r.reservation_id, 25);
    assert_eq!(
        s,
        Settlement {
            reservation_id: Some(r.reservation_id),
            node: dev,
            currency: "usd".into(),
            charged: 25,
            released: 15,
            overrun: 0,
            debt: 0,
            plan: vec![],
            late: false,
        }
    );
    assert!(w.s.hold(r.reservation_id).is_none());
    assert_eq!(
        (
            w.account(acme, "usd").held,
            w.account(acme, "usd").spent_total
        ),
        (0, 25)
    );
    assert_eq!(
        w.err(Op::Settle {
            reservation_id: r.reservation_id,
            actual: Actual::Amount(1)
        })
        .kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        w.err(Op::Release {
            reservation_id: r.reservation_id
        })
        .kind,
        ErrorKind::NotFound
    );

    let r = w.reserve(dev, "usd", 30);
    let applied = w.ok(Op::Release {
        reservation_id: r.reservation_id,
    });
    assert_eq!(
        applied.outcome,
        Outcome::Released {
            reservation_id: r.reservation_id,
            amount: 30
        }
    );
    assert!(applied.events.is_empty());
    assert_eq!(
        (
            w.account(dev, "usd").held,
            w.account(dev, "usd").spent_total
        ),
        (0, 25)
    );
    assert_eq!(w.s.node_view(dev, w.now).unwrap().holds_open, 0);

    let (s, events) = w.charge(dev, "usd", 15);
    assert_eq!(
        s,
        Settlement {
            reservation_id: None,
            node: dev,
            currency: "usd".into(),
            charged: 15,
            released: 0,
            overrun: 0,
            debt: 0,
            plan: vec![],
            late: false,
        }
    );
    assert!(matches!(
        events[0],
        Event::Usage(UsageEvent {
            amount: 15,
            reservation_id: None,
            ..
        })
    ));
    assert_eq!(w.account(acme, "usd").spent_total, 40);
    assert_eq!(w.s.open_holds(), 0);

    // A charge is denied like a reservation, and a denial changes nothing.
    w.set_limit(dev, hard("usd", 50, LIFETIME));
    let before = w.s.digest();
    let d = w.charge_denied(dev, "usd", 51);
    assert_eq!(
        (d.node, d.rule, d.remaining, d.requested),
        (dev, DenyRule::Cap, 50, 51)
    );
    assert_eq!(w.s.digest(), before);
    // ... except the clock, which a denial moves.
    w.later(SEC);
    w.charge_denied(dev, "usd", 51);
    assert_eq!(w.s.now_ms(), T + SEC);
    assert_eq!(w.charge(dev, "usd", 50).0.charged, 50);
}

#[test]
fn holds_expire_at_a_tick_and_a_late_settle_is_charged_and_flagged() {
    let mut w = World::new(T);
    let acme = w.root("acme", &[currency("credits", 0, true)]);
    let dev = w.child(acme, "dev");
    let g = w.add_grant(acme, grant("credits", 1000, 0)).0;
    let h1 = w.reserve_ttl(dev, "credits", 30, 2 * SEC).reservation_id;
    let h2 = w.reserve_ttl(dev, "credits", 20, SEC).reservation_id;
    let h3 = w.reserve_ttl(dev, "credits", 10, 10 * SEC).reservation_id;
    assert_eq!(w.s.hold(h2).unwrap().expires_at_ms, T + SEC);

    w.at(T + SEC - 1);
    let ticked = w.tick();
    assert_eq!(
        ticked.outcome,
        Outcome::Ticked {
            holds_expired: 0,
            grants_expired: 0,
            grants_renewed: 0
        }
    );
    assert!(ticked.events.is_empty());

    w.at(T + 2 * SEC);
    let ticked = w.tick();
    assert_eq!(
        ticked.outcome,
        Outcome::Ticked {
            holds_expired: 2,
            grants_expired: 0,
            grants_renewed: 0
        }
    );
    let expired = |reservation_id, amount| {
        Event::Governance(GovernanceEvent::HoldExpired {
            reservation_id,
            node: dev,
            currency: "credits".into(),
            amount,
        })
    };
    assert_eq!(
        ticked.events,
        vec![expired(h2, 20), expired(h1, 30)],
        "in (expires_at, id) order"
    );
    assert_eq!(w.account(acme, "credits").held, 10);
    assert_eq!(
        (w.grant_view(g).remaining, w.grant_view(g).held),
        (1000, 10)
    );
    assert!(w.s.hold(h1).is_none());
    assert_eq!(
        w.s.holds_of(dev)
            .unwrap()
            .iter()
            .map(|h| h.reservation_id)
            .collect::<Vec<_>>(),
        vec![h3]
    );

    // A late settle is charged in full through the waterfall and flagged.
    w.at(T + 3 * SEC);
    let (s, events) = w.settle(h2, 30);
    assert_eq!(
        s,
        Settlement {
            reservation_id: Some(h2),
            node: dev,
            currency: "credits".into(),
            charged: 30,
            released: 0,
            overrun: 30,
            debt: 0,
            plan: vec![part(g, acme, 30)],
            late: true,
        }
    );
    assert_eq!(
        governance(&events),
        vec![GovernanceEvent::Overrun {
            reservation_id: Some(h2),
            node: dev,
            currency: "credits".into(),
            held: 0,
            actual: 30,
            debt: 0,
            late: true,
        }]
    );
    assert_eq!(w.grant_view(g).remaining, 970);
    assert_eq!(w.account(dev, "credits").spent_total, 30);
    // The record is forgotten: a second settle is NotFound.
    let e = w.err(Op::Settle {
        reservation_id: h2,
        actual: Actual::Amount(30),
    });
    assert_eq!(e.kind, ErrorKind::NotFound);
    // Releasing an expired hold is a precondition failure.
    let e = w.err(Op::Release { reservation_id: h1 });
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    assert!(e.message.contains("expired"), "{e}");
    w.invariants();
}

/// An expired hold is remembered for the request retention (10 min + 60 s skew after the tick
/// that expired it), then forgotten: settle and release are NotFound.
///
/// BUG: the record is only purged by the *next* command's clock advance, after dispatch, so
/// whether a settle after the forget time is a late settle or NotFound depends on whether some
/// unrelated command (here a Tick) was applied first.
#[test]
fn an_expired_hold_is_forgotten_after_the_request_retention() {
    let forget = T + SEC + 10 * MIN + MIN;
    for tick_first in [true, false] {
        let mut w = World::new(T);
        let acme = w.root("acme", &[currency("usd", 0, false)]);
        let h = w.reserve_ttl(acme, "usd", 10, SEC).reservation_id;
        w.at(T + SEC);
        w.tick();
        // Still remembered at the forget time itself.
        w.at(forget);
        let e = w.err(Op::Release { reservation_id: h });
        assert_eq!(e.kind, ErrorKind::FailedPrecondition);
        w.at(forget + 1);
        if tick_first {
            w.tick();
        }
        let settle = w.try_apply(Op::Settle {
            reservation_id: h,
            actual: Actual::Amount(10),
        });
        assert_eq!(
            settle.map(|a| a.outcome).map_err(|e| e.kind),
            Err(ErrorKind::NotFound),
            "settle after the retention (tick first: {tick_first})"
        );
    }
}

#[test]
fn an_overrun_is_charged_beyond_a_hard_cap_and_flagged() {
    let mut w = World::new(T);
    let acme = w.root("acme", &[currency("usd", 0, false)]);
    let dev = w.child(acme, "dev");
    w.set_limit(dev, hard("usd", 50, MONTHLY));
    let r = w.reserve(dev, "usd", 40);
    let (s, events) = w.settle(r.reservation_id, 70);
    assert_eq!(
        (s.charged, s.released, s.overrun, s.debt, s.late),
        (70, 0, 30, 0, false)
    );
    let gov = governance(&events);
    assert_eq!(
        gov[0],
        GovernanceEvent::Overrun {
            reservation_id: Some(r.reservation_id),
            node: dev,
            currency: "usd".into(),
            held: 40,
            actual: 70,
            debt: 0,
            late: false,
        }
    );
    assert_eq!(crossings(&events), vec![(dev, 50), (dev, 75), (dev, 100)]);
    let view = w.own_limit(dev, "usd", MONTHLY);
    assert_eq!((view.spent, view.remaining), (70, 0));
    assert_eq!(w.deny(dev, "usd", 1).remaining, 0);
}

#[test]
fn a_retry_with_the_same_id_and_payload_is_a_duplicate_with_no_second_effect() {
    let mut w = World::new(T);
    let acme = w.root("acme", &[currency("usd", 0, false)]);
    let dev = w.child(acme, "dev");
    let reserve =
        |amount| World::reserve_op(dev, "usd", Amount::Exact(amount), Attributes::default());

    let cmd = Command::new("op-1", T, reserve(40));
    let first = expect_reserved(w.s.apply(T, cmd.clone()).unwrap().outcome);
    let digest = w.s.digest();
    let record = Recorded::Reserved {
        reservation_id: first.reservation_id,
        amount: 40,
        expires_at_ms: T + MIN,
    };
    let again = w.s.apply(T, cmd.clone()).unwrap();
    assert_eq!(again.outcome, Outcome::Duplicate(record.clone()));
    assert!(again.events.is_empty());
    assert_eq!(w.s.digest(), digest);
    assert_eq!(w.s.open_holds(), 1);

    // Also after a snapshot and restore.
    let mut restored = State::restore(&w.s.snapshot()).unwrap();
    assert_eq!(
        restored.apply(T, cmd.clone()).unwrap().outcome,
        Outcome::Duplicate(record.clone())
    );
    assert_eq!(restored.digest(), digest);

    // Same id, other payload: refused, nothing changes.
    let e =
        w.s.apply(T, Command::new("op-1", T, reserve(41)))
            .unwrap_err();
    assert_eq!(e.kind, ErrorKind::AlreadyExists);
    assert!(e.message.contains("op-1"), "{e}");
    assert_eq!(w.s.digest(), digest);

    // A duplicate settle does not charge twice.
    let settle = Command::new(
        "op-2",
        T,
        Op::Settle {
            reservation_id: first.reservation_id,
            actual: Actual::Amount(25),
        },
    );
    assert!(matches!(
        w.s.apply(T, settle.clone()).unwrap().outcome,
        Outcome::Settled(_)
    ));
    assert_eq!(
        w.s.apply(T, settle.clone()).unwrap().outcome,
        Outcome::Duplicate(Recorded::Settled {
            reservation_id: first.reservation_id,
            charged: 25
        })
    );
    assert_eq!(w.account(dev, "usd").spent_total, 25);

    // A duplicate moves the clock and nothing else.
    let later = w.s.apply(T + 5 * SEC, settle).unwrap();
    assert!(matches!(later.outcome, Outcome::Duplicate(_)));
    assert_eq!(w.s.now_ms(), T + 5 * SEC);
    assert_eq!(w.account(dev, "usd").spent_total, 25);
}

#[test]
fn request_age_and_id_retention() {
    let mut w = World::new(T);
    let acme = w.root("acme", &[currency("usd", 0, false)]);
    let dev = w.child(acme, "dev");
    let op = World::reserve_op(dev, "usd", Amount::Exact(1), Attributes::default());
    let now = T + 10 * MIN + 1;
    // sent_at + retention < now: too old.
    let e =
        w.s.apply(now, Command::new("old", T, op.clone()))
            .unwrap_err();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    assert_eq!(w.s.now_ms(), T, "an error does not move the clock");
    // sent_at + retention == now: still accepted.
    assert!(matches!(
        w.s.apply(now, Command::new("old", T + 1, op.clone()))
            .unwrap()
            .outcome,
        Outcome::Reserved(_)
    ));
    // More than 60 s in the future: refused; exactly 60 s: accepted.
    let e =
        w.s.apply(now, Command::new("future", now + MIN + 1, op.clone()))
            .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);

    // Remembered until apply time + retention + 60 s.
    let a = now;
    let cmd = Command::new("kept", a + MIN, op.clone());
    let first = expect_reserved(w.s.apply(a, cmd.clone()).unwrap().outcome);
    let remembered = w.s.remembered_requests();
    assert!(remembered >= 2);
    let again = w.s.apply(a + 11 * MIN, cmd.clone()).unwrap();
    assert!(
        matches!(again.outcome, Outcome::Duplicate(Recorded::Reserved { reservation_id, .. }) if reservation_id == first.reservation_id)
    );
    // One ms later the retry is too old (it carries the first attempt's sent_at) ...
    let e = w.s.apply(a + 11 * MIN + 1, cmd).unwrap_err();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    // ... and the id is forgotten: a new request with the same id is applied afresh.
    let fresh = Command::new("kept", a + 11 * MIN + 1, op.clone());
    let second = expect_reserved(w.s.apply(a + 11 * MIN + 1, fresh).unwrap().outcome);
    assert_ne!(second.reservation_id, first.reservation_id);
    // Forgotten ids leave memory by the second: once the second they died in is over.
    w.at(a + 11 * MIN + 1 + SEC);
    w.tick();
    assert_eq!(
        w.s.remembered_requests(),
        1,
        "only the fresh request is remembered"
    );
}

#[test]
fn denials_are_not_remembered() {
    let mut w = World::new(T);
    let acme = w.root("acme", &[currency("usd", 0, false)]);
    let dev = w.child(acme, "dev");
    w.set_limit(dev, hard("usd", 1000, LIFETIME));
    let cmd = Command::new(
        "big",
        T,
        World::reserve_op(dev, "usd", Amount::Exact(2000), Attributes::default()),
    );
    assert!(matches!(
        w.s.apply(T, cmd.clone()).unwrap().outcome,
        Outcome::Denied(_)
    ));
    w.set_limit(dev, hard("usd", 5000, LIFETIME));
    assert_eq!(
        expect_reserved(w.s.apply(T, cmd).unwrap().outcome).amount,
        2000
    );
}

#[test]
fn a_tick_handles_at_most_ten_thousand_items() {
    let mut w = World::new(T);
    let acme = w.root("acme", &[currency("usd", 0, false)]);
    for i in 0..10_001u64 {
        let cmd = Command::new(
            format!("h{i}"),
            T,
            Op::Reserve(Reserve {
                node: acme.into(),
                currency: "usd".into(),
                amount: Amount::Exact(1),
                ttl_ms: SEC,
                attrs: Attributes::default(),
            }),
        );
        w.s.apply(T, cmd).unwrap();
    }
    w.at(T + SEC);
    assert_eq!(
        w.tick().outcome,
        Outcome::Ticked {
            holds_expired: 10_000,
            grants_expired: 0,
            grants_renewed: 0
        }
    );
    assert_eq!(w.s.open_holds(), 1);
    assert_eq!(
        w.tick().outcome,
        Outcome::Ticked {
            holds_expired: 1,
            grants_expired: 0,
            grants_renewed: 0
        }
    );
    assert_eq!(w.account(acme, "usd").held, 0);
}

/// The leader's log-free denial path answers exactly what apply would, and only when apply
/// would deny: never for a grant, a bad request, a remembered retry or a charge.
#[test]
fn fast_denials_are_exactly_the_denials_apply_gives() {
    let mut w = World::new(T);
    let acme = w.root("acme", &[currency("usd", 0, false)]);
    let dev = w.child(acme, "dev");
    w.set_limit(acme, hard("usd", 1000, LIFETIME));
    let op = |amount| World::reserve_op(dev, "usd", Amount::Exact(amount), Attributes::default());

    let denied = Command::new("too-big", T, op(2000));
    let fast =
        w.s.fast_denial(T, &denied)
            .expect("a cap denial is known in advance");
    assert_eq!(fast.node, acme, "the blocking node is the ancestor");
    let digest = w.s.digest();
    assert_eq!(
        w.s.apply(T, denied).unwrap(),
        Applied {
            outcome: Outcome::Denied(fast),
            events: Vec::new()
        }
    );
    assert_eq!(
        w.s.digest(),
        digest,
        "a denial changes nothing at the same time"
    );

    let granted = Command::new("fits", T, op(600));
    assert_eq!(
        w.s.fast_denial(T, &granted),
        None,
        "a grant goes through the log"
    );
    w.s.apply(T, granted).unwrap();
    // The same id again is a retry of a remembered grant: apply answers the duplicate, even
    // though a fresh 600 would now be denied.
    let retry = Command::new("fits", T, op(600));
    assert_eq!(w.s.fast_denial(T, &retry), None);
    assert!(matches!(
        w.s.apply(T, retry).unwrap().outcome,
        Outcome::Duplicate(_)
    ));
    let fresh = Command::new("fits-again", T, op(600));
    assert!(w.s.fast_denial(T, &fresh).is_some());

    let mut bad_ttl = Reserve {
        node: NodeRef::Id(dev),
        currency: "usd".into(),
        amount: Amount::Exact(5000),
        ttl_ms: 1,
        attrs: Attributes::default(),
    };
    let bad = Command::new("bad-ttl", T, Op::Reserve(bad_ttl.clone()));
    assert_eq!(
        w.s.fast_denial(T, &bad),
        None,
        "an error is apply's to give"
    );
    assert!(w.s.apply(T, bad).is_err());
    bad_ttl.currency = "eur".into();
    let unknown = Command::new("eur", T, Op::Reserve(bad_ttl));
    assert_eq!(w.s.fast_denial(T, &unknown), None);
    let stale = Command::new("old", T - 24 * HOUR, op(5000));
    assert_eq!(
        w.s.fast_denial(T, &stale),
        None,
        "a too-old request is refused by apply"
    );
    assert_eq!(
        w.s.fast_denial(T, &Command::new("c", T, World::charge_op(dev, "usd", 5000))),
        None,
        "only reservations take the fast path"
    );
}

/// The request-id table in bounded memory: many times its cap of distinct ids within a few
/// retentions, never refused while the live ones fit, each apply removing at most a few dead
/// ids (no walk of the table), retries still answered with their first outcome, and one
/// root's burst refused at its share while another root goes on.
#[test]
fn the_request_id_table_stays_bounded_and_expires_a_few_ids_per_apply() {
    let mut w = World::new(T);
    let acme = w.root("acme", &[currency("usd", 0, false)]);
    let beta = w.root("beta", &[currency("usd", 0, false)]);
    // The shortest retention: an id lives 1 min + 60 s of clock skew.
    w.done(Op::SetConfig(ConfigPatch {
        request_retention_ms: Some(MIN),
        ..ConfigPatch::default()
    }));
    w.s.cap_remembered_requests_for_tests(4_000, 2_000);
    // 12 charges a second for 10 minutes: 7,200 distinct ids, under 1,450 alive at once.
    let mut most_held = 0;
    let mut kept = None;
    for i in 0..7_200u64 {
        w.at(T + i * 1_000 / 12);
        let before = w.s.remembered_requests();
        let id = format!("c{i}");
        let op = World::charge_op(acme, "usd", 1);
        let applied =
            w.s.apply(w.now, Command::new(&id, w.now, op.clone()))
                .unwrap_or_else(|e| panic!("charge {i} refused: {e}"));
        assert!(matches!(applied.outcome, Outcome::Charged(_)));
        let after = w.s.remembered_requests();
        // It added one id and removed at most 16 dead ones.
        assert!(
            after + 16 > before,
            "one apply removed {} ids: expiry walks the table",
            before + 1 - after
        );
        most_held = most_held.max(after);
        if i == 7_000 {
            kept = Some((id, op, w.now));
        }
    }
    assert!(most_held <= 1_500, "dead ids linger: {most_held} held");
    // A retry within the retention is its first outcome, applied once.
    let (id, op, sent) = kept.unwrap();
    let retry = w.s.apply(w.now, Command::new(&id, sent, op)).unwrap();
    assert!(
        matches!(
            retry.outcome,
            Outcome::Duplicate(Recorded::Charged { charged: 1 })
        ),
        "{retry:?}"
    );
    // Once the last id has aged out (and the second it dies in is over: ids leave by the
    // second), an idle cluster's tick gives back the memory.
    w.later(2 * MIN + SEC);
    w.tick();
    assert_eq!(w.s.remembered_requests(), 0);

    // A burst of one root takes free room past its share until a quarter of the table is
    // left; that quarter is another root's, until the table is full.
    let burst = |w: &mut World, root: u64, prefix: &str, n: u64| {
        for i in 0..n {
            let op = World::charge_op(root, "usd", 1);
            let id = format!("{prefix}{i}");
            if let Err(e) = w.s.apply(w.now, Command::new(id, w.now, op)) {
                return Some((i, e));
            }
        }
        None
    };
    let (at, e) = burst(&mut w, acme, "burst", 4_000).expect("the burst is refused");
    assert_eq!(at, 3_000, "a lone root uses three quarters of the table");
    assert_eq!(e.kind, ErrorKind::ResourceExhausted);
    assert!(e.message.contains("past its share"), "{e}");
    let (at, e) = burst(&mut w, beta, "beta", 2_000).expect("the table fills");
    assert_eq!(at, 1_000, "another root has the last quarter");
    assert!(e.message.contains("the most the cluster keeps"), "{e}");
}

/// One root's open holds take free room past its share until a quarter of the cluster's is
/// left; another root has that quarter, and holds given back make room again.
#[test]
fn open_holds_past_the_share_of_their_root_leave_a_quarter_to_others() {
    let mut w = World::new(T);
    let acme = w.root("acme", &[currency("usd", 0, false)]);
    let beta = w.root("beta", &[currency("usd", 0, false)]);
    w.s.cap_holds_for_tests(8, 2);
    let reserve = |node| World::reserve_op(node, "usd", Amount::Exact(1), Attributes::default());
    let held: Vec<u64> = (0..6)
        .map(|_| expect_reserved(w.ok(reserve(acme)).outcome).reservation_id)
        .collect();
    let e = w.err(reserve(acme));
    assert_eq!(e.kind, ErrorKind::ResourceExhausted);
    assert!(e.message.contains("past its share"), "{e}");
    expect_reserved(w.ok(reserve(beta)).outcome);
    expect_reserved(w.ok(reserve(beta)).outcome);
    let e = w.err(reserve(beta));
    assert_eq!(e.kind, ErrorKind::ResourceExhausted);
    assert!(e.message.contains("the most the cluster keeps"), "{e}");
    for &reservation_id in &held[..3] {
        w.ok(Op::Release { reservation_id });
    }
    expect_reserved(w.ok(reserve(acme)).outcome);
    assert!(w.s.check_invariants().is_ok());
}
