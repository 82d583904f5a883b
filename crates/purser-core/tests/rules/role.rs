//! R-ROLE: role limits, shared member counters, most_restrictive vs most_permissive.

use purser_core::*;

use crate::common::*;

const T: u64 = 1_773_144_000_000; // 2026-03-10 12:00 UTC
const MONTH_END: u64 = 1_775_001_600_000; // 2026-04-01 00:00 UTC

/// Root `org` with roles dev (100/month), ops (300/month), free (no usd limit) and twins a, b
/// (100/month each); member `m`.
fn org() -> (World, u64, u64) {
    assert_eq!(MONTH_END, t(2026, 4, 1, 0));
    let mut w = World::new(T);
    let org = w.root(
        "org",
        &[currency("usd", 0, false), currency("eur", 0, false)],
    );
    let m = w.child(org, "m");
    let role = |w: &mut World, name: &str, limits: Vec<LimitSpec>| {
        w.done(Op::DefineRole {
            root: org.into(),
            name: name.into(),
            limits,
        });
    };
    role(&mut w, "dev", vec![hard("usd", 100, MONTHLY)]);
    role(&mut w, "ops", vec![hard("usd", 300, MONTHLY)]);
    role(&mut w, "free", vec![hard("eur", 5, MONTHLY)]);
    role(&mut w, "a", vec![hard("usd", 100, MONTHLY)]);
    role(&mut w, "b", vec![hard("usd", 100, MONTHLY)]);
    (w, org, m)
}

fn assign(w: &mut World, node: u64, roles: &[&str]) {
    w.done(Op::AssignRoles {
        node: node.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
    });
}

fn role_denial(
    node: u64,
    role: &str,
    remaining: u64,
    requested: u64,
    retry: Option<u64>,
) -> Denial {
    Denial {
        node,
        rule: DenyRule::RoleCap { role: role.into() },
        window: Some(MONTHLY),
        remaining,
        requested,
        retry_after_ms: retry,
    }
}

#[test]
fn most_restrictive_applies_every_role_and_names_the_first_failing_limit() {
    let (mut w, _, m) = org();
    assign(&mut w, m, &["dev", "ops"]);
    assert_eq!(w.deny(m, "usd", 150), role_denial(m, "dev", 100, 150, None));
    assign(&mut w, m, &["ops", "dev"]);
    assert_eq!(
        w.deny(m, "usd", 350),
        role_denial(m, "ops", 300, 350, None),
        "roles in the member's order"
    );
    assert_eq!(w.deny(m, "usd", 150), role_denial(m, "dev", 100, 150, None));

    let r = w.reserve_range(m, "usd", 10, 1000);
    assert_eq!(r.amount, 100);
    assert_eq!(
        r.headroom[0],
        Headroom {
            node: m,
            remaining: Some(0)
        }
    );
    w.settle(r.reservation_id, 100);
    // ops still has room 200, dev has none: dev is named, with a retry at the month's end.
    assert_eq!(
        w.deny(m, "usd", 1),
        role_denial(m, "dev", 0, 1, Some(MONTH_END - T))
    );
    // Both roles' monthly limits share the member's one monthly counter.
    assert_eq!(w.role_limit(m, "dev", "usd", MONTHLY).spent, 100);
    assert_eq!(w.role_limit(m, "ops", "usd", MONTHLY).spent, 100);
    assert_eq!(w.role_limit(m, "ops", "usd", MONTHLY).remaining, 200);
}

#[test]
fn most_permissive_takes_the_largest_room_over_roles() {
    let (mut w, org, m) = org();
    w.done(Op::SetRoleResolution {
        root: org.into(),
        resolution: RoleResolution::MostPermissive,
    });
    assign(&mut w, m, &["dev", "ops"]);
    let r = w.reserve_range(m, "usd", 1, 1000);
    assert_eq!(r.amount, 300);
    w.release(r.reservation_id);
    assert_eq!(w.deny(m, "usd", 301), role_denial(m, "ops", 300, 301, None));

    w.charge(m, "usd", 250);
    // dev: 100 - 250 -> 0, ops: 50.
    assert_eq!(
        w.deny(m, "usd", 60),
        role_denial(m, "ops", 50, 60, Some(MONTH_END - T))
    );
    assert_eq!(w.reserve_range(m, "usd", 1, 1000).amount, 50);

    // A role without a hard limit in the currency gives unlimited room.
    assign(&mut w, m, &["dev", "free"]);
    assert_eq!(w.reserve(m, "usd", 100_000).amount, 100_000);
    // In eur dev has no limit (unlimited room), so free's 5 does not bind either.
    assert_eq!(w.reserve(m, "eur", 1000).amount, 1000);

    // Ties name the first role in the member's order.
    assign(&mut w, m, &["b", "a"]);
    assert_eq!(
        w.deny(m, "usd", 101).rule,
        DenyRule::RoleCap { role: "b".into() }
    );
    assign(&mut w, m, &["a", "b"]);
    assert_eq!(
        w.deny(m, "usd", 101).rule,
        DenyRule::RoleCap { role: "a".into() }
    );
}

#[test]
fn a_member_without_any_limit_in_a_currency_is_unlimited_in_both_modes() {
    let (mut w, org, m) = org();
    assign(&mut w, m, &["free"]);
    assert_eq!(w.reserve(m, "usd", 1_000_000).amount, 1_000_000);
    assert_eq!(
        w.deny(m, "eur", 6).rule,
        DenyRule::RoleCap {
            role: "free".into()
        }
    );
    w.done(Op::SetRoleResolution {
        root: org.into(),
        resolution: RoleResolution::MostPermissive,
    });
    assert_eq!(w.reserve(m, "usd", 1_000_000).amount, 1_000_000);
    assert_eq!(
        w.deny(m, "eur", 6).rule,
        DenyRule::RoleCap {
            role: "free".into()
        }
    );
}

#[test]
fn role_limits_emit_thresholds_soft_alerts_and_can_pause() {
    let (mut w, org, m) = org();
    w.done(Op::DefineRole {
        root: org.into(),
        name: "capped".into(),
        limits: vec![pausing(hard("usd", 100, MONTHLY))],
    });
    w.done(Op::DefineRole {
        root: org.into(),
        name: "watched".into(),
        limits: vec![soft("eur", 10, MONTHLY)],
    });
    assign(&mut w, m, &["capped", "watched"]);

    let (_, events) = w.charge(m, "usd", 100);
    let threshold = |percent| GovernanceEvent::ThresholdCrossed {
        node: m,
        role: Some("capped".into()),
        currency: "usd".into(),
        window: MONTHLY,
        percent,
        spent: 100,
        amount: 100,
    };
    assert_eq!(
        governance(&events),
        vec![
            threshold(50),
            threshold(75),
            threshold(100),
            GovernanceEvent::Paused {
                node: m,
                by_limit: true
            }
        ]
    );
    match &events[2] {
        Event::Balance(b) => assert_eq!(
            b.windows,
            vec![WindowBalance {
                node: m,
                from_roles: true,
                window: MONTHLY,
                spent: 100
            }]
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(w.status(m), NodeStatus::Paused);
    w.done(Op::ResumeNode { node: m.into() });

    let applied = w.try_reserve(m, "eur", Amount::Exact(11), Attributes::default());
    expect_reserved(applied.outcome);
    assert_eq!(
        governance(&applied.events),
        vec![GovernanceEvent::SoftLimitExceeded {
            node: m,
            role: Some("watched".into()),
            currency: "eur".into(),
            window: MONTHLY,
            amount: 10,
            would_be: 11,
        }]
    );
}

#[test]
fn member_counters_follow_the_set_of_windows_its_roles_use() {
    let (mut w, org, m) = org();
    assign(&mut w, m, &["dev"]);
    w.charge(m, "usd", 40);
    assert_eq!(w.role_limit(m, "dev", "usd", MONTHLY).spent, 40);

    // Redefining the role with an extra window: the monthly counter keeps counting, the daily
    // one starts empty.
    let define = |w: &mut World, limits: Vec<LimitSpec>| {
        w.done(Op::DefineRole {
            root: org.into(),
            name: "dev".into(),
            limits,
        });
    };
    define(
        &mut w,
        vec![hard("usd", 100, MONTHLY), hard("usd", 50, DAILY)],
    );
    assert_eq!(w.role_limit(m, "dev", "usd", MONTHLY).spent, 40);
    assert_eq!(w.role_limit(m, "dev", "usd", DAILY).spent, 0);
    w.charge(m, "usd", 10);
    assert_eq!(w.role_limit(m, "dev", "usd", MONTHLY).spent, 50);
    assert_eq!(w.role_limit(m, "dev", "usd", DAILY).spent, 10);
    assert_eq!(
        w.deny(m, "usd", 41).rule,
        DenyRule::RoleCap { role: "dev".into() }
    );

    // Another role using the same window shares the counter.
    assign(&mut w, m, &["dev", "ops"]);
    assert_eq!(w.role_limit(m, "ops", "usd", MONTHLY).spent, 50);

    // Dropping the monthly window drops its counter; bringing it back starts it empty.
    assign(&mut w, m, &["dev"]);
    define(&mut w, vec![hard("usd", 50, DAILY)]);
    assert_eq!(w.s.usage(m, w.now).unwrap().len(), 1);
    define(
        &mut w,
        vec![hard("usd", 100, MONTHLY), hard("usd", 50, DAILY)],
    );
    assert_eq!(w.role_limit(m, "dev", "usd", MONTHLY).spent, 0);
    assert_eq!(w.role_limit(m, "dev", "usd", DAILY).spent, 10);
    // Unassigning every role drops every counter.
    assign(&mut w, m, &[]);
    assert!(w.s.usage(m, w.now).unwrap().is_empty());
    assign(&mut w, m, &["dev"]);
    assert_eq!(w.role_limit(m, "dev", "usd", DAILY).spent, 0);
}

#[test]
fn an_assigned_role_cannot_be_removed() {
    let (mut w, org, m) = org();
    assign(&mut w, m, &["dev"]);
    let e = w.err(Op::RemoveRole {
        root: org.into(),
        name: "dev".into(),
    });
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    assign(&mut w, m, &[]);
    w.done(Op::RemoveRole {
        root: org.into(),
        name: "dev".into(),
    });
    assert_eq!(
        w.err(Op::AssignRoles {
            node: m.into(),
            roles: vec!["dev".into()]
        })
        .kind,
        ErrorKind::NotFound
    );
}

#[test]
fn roles_sharing_a_window_share_one_counter_and_each_limit_crosses_its_own_thresholds() {
    let (mut w, _, m) = org();
    assign(&mut w, m, &["dev", "ops"]);
    // 80 of dev's 100 and of ops's 300: dev crosses 50 and 75, ops nothing.
    let (_, events) = w.charge(m, "usd", 80);
    let got: Vec<(Option<String>, u8)> = governance(&events)
        .into_iter()
        .filter_map(|g| match g {
            GovernanceEvent::ThresholdCrossed { role, percent, .. } => Some((role, percent)),
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        vec![(Some("dev".into()), 50), (Some("dev".into()), 75)]
    );
    match &events[2] {
        Event::Balance(b) => {
            assert_eq!(
                b.windows,
                vec![WindowBalance {
                    node: m,
                    from_roles: true,
                    window: MONTHLY,
                    spent: 80
                }]
            );
        }
        other => panic!("{other:?}"),
    }
    // Next month the member's counter closes its window like an own limit's.
    w.at(MONTH_END);
    let (_, events) = w.charge(m, "usd", 1);
    assert_eq!(
        governance(&events),
        vec![GovernanceEvent::WindowReset {
            node: m,
            from_roles: true,
            currency: "usd".into(),
            window: MONTHLY,
            closed_start_ms: t(2026, 3, 1, 0),
            spent: 80,
        }]
    );
}
