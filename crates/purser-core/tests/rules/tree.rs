//! R-TREE: creating, moving, closing, pausing nodes; roots are isolated.

use purser_core::*;

use crate::common::*;

const T0: u64 = 1_772_000_000_000; // 2026-02-25, an arbitrary instant

fn usd() -> Vec<CurrencySpec> {
    vec![currency("usd", 2, false)]
}

#[test]
fn create_assigns_ids_in_order_and_builds_paths_and_depths() {
    let mut w = World::new(T0);
    let acme = w.root("acme", &usd());
    let research = w.child(acme, "research");
    let alice = w.child(research, "alice");
    let bob = w.child(acme, "bob");
    let beta = w.root("beta", &usd());
    let beta_research = w.child(beta, "research");
    assert_eq!(
        (acme, research, alice, bob, beta, beta_research),
        (1, 2, 3, 4, 5, 6)
    );

    assert_eq!(w.s.path_of(alice).unwrap(), "acme/research/alice");
    assert_eq!(w.s.resolve_path("acme/research/alice").unwrap(), alice);
    assert_eq!(w.s.resolve_path("beta/research").unwrap(), beta_research);
    assert_eq!(
        w.s.resolve_path("acme/research/nobody").unwrap_err().kind,
        ErrorKind::NotFound
    );

    let view = w.s.node_view(alice, w.now).unwrap();
    assert_eq!(
        (view.id, view.parent, view.root, view.depth),
        (alice, Some(research), acme, 3)
    );
    assert_eq!(view.path, "acme/research/alice");
    assert_eq!(view.status, NodeStatus::Active);
    let root = w.s.node_view(acme, w.now).unwrap();
    assert_eq!((root.parent, root.depth, root.children), (None, 1, 2));

    // Nodes can be addressed by path as well as by id.
    let carol = match w
        .ok(Op::CreateNode(CreateNode {
            parent: Some("acme/research".into()),
            name: "carol".into(),
            kind: "user".into(),
            tags: vec![("team".into(), "ml".into())],
            root: None,
        }))
        .outcome
    {
        Outcome::NodeCreated { node_id } => node_id,
        other => panic!("{other:?}"),
    };
    assert_eq!(carol, 7);
    let view = w.s.node_view(carol, w.now).unwrap();
    assert_eq!(view.kind, "user");
    assert_eq!(view.tags, vec![("team".to_string(), "ml".to_string())]);

    // Sibling names are unique, root names unique among roots, but the same name may appear
    // under different parents.
    assert_eq!(
        w.err(create_child(research, "alice")).kind,
        ErrorKind::AlreadyExists
    );
    let dup_root = Op::CreateNode(CreateNode {
        parent: None,
        name: "acme".into(),
        kind: "tenant".into(),
        tags: vec![],
        root: Some(RootSpec {
            currencies: usd(),
            no_default_cap: true,
        }),
    });
    assert_eq!(w.err(dup_root).kind, ErrorKind::AlreadyExists);
    let alice2 = w.child(bob, "alice");
    assert_eq!(w.s.path_of(alice2).unwrap(), "acme/bob/alice");
    w.invariants();
}

#[test]
fn depth_limit_applies_to_create() {
    let mut w = World::new(T0);
    w.done(Op::SetConfig(ConfigPatch {
        depth_max: Some(3),
        ..ConfigPatch::default()
    }));
    let r = w.root("r", &usd());
    let a = w.child(r, "a");
    let b = w.child(a, "b");
    assert_eq!(w.s.node_view(b, w.now).unwrap().depth, 3);
    let e = w.err(create_child(b, "c"));
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("3 levels"), "{e}");
    // Raising the ceiling lets the tree grow; lowering it below the deepest node is refused.
    w.done(Op::SetConfig(ConfigPatch {
        depth_max: Some(4),
        ..ConfigPatch::default()
    }));
    w.child(b, "c");
    let e = w.err(Op::SetConfig(ConfigPatch {
        depth_max: Some(3),
        ..ConfigPatch::default()
    }));
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
}

/// r ─┬─ a ── x          x carries an open hold of 30 and settled spend of 10
///    └─ b               b has a hard lifetime limit of 100 with 50 spent
struct MoveFixture {
    w: World,
    r: u64,
    a: u64,
    b: u64,
    x: u64,
    hold: u64,
}

fn move_fixture(b_spent: u64) -> MoveFixture {
    let mut w = World::new(T0);
    let r = w.root("r", &usd());
    let a = w.child(r, "a");
    let b = w.child(r, "b");
    let x = w.child(a, "x");
    w.set_limit(a, hard("usd", 1000, LIFETIME));
    w.set_limit(b, hard("usd", 100, LIFETIME));
    w.charge(x, "usd", 10);
    if b_spent > 0 {
        w.charge(b, "usd", b_spent);
    }
    let hold = w.reserve(x, "usd", 30).reservation_id;
    MoveFixture {
        w,
        r,
        a,
        b,
        x,
        hold,
    }
}

#[test]
fn move_carries_open_holds_to_new_ancestors_but_not_settled_spend() {
    let MoveFixture {
        mut w,
        r,
        a,
        b,
        x,
        hold,
    } = move_fixture(50);
    assert_eq!(w.account(a, "usd").held, 30);
    let events = w.done(Op::MoveNode {
        node: x.into(),
        new_parent: b.into(),
    });
    assert!(events.is_empty());
    assert_eq!(w.s.path_of(x).unwrap(), "r/b/x");
    assert_eq!(w.s.node_view(x, w.now).unwrap().parent, Some(b));

    // Holds moved: the old ancestor lost them, the new one has them, the common root is unchanged.
    assert_eq!(w.account(a, "usd").held, 0);
    assert_eq!(w.account(b, "usd").held, 30);
    assert_eq!(w.account(r, "usd").held, 30);
    assert_eq!(w.account(x, "usd").held, 30);
    assert_eq!(w.s.holds_of(x).unwrap().len(), 1);
    // Settled spend stays where it was settled.
    assert_eq!(w.spent(a, "usd", LIFETIME), 10);
    assert_eq!(w.account(a, "usd").spent_total, 10);
    assert_eq!(w.spent(b, "usd", LIFETIME), 50);
    assert_eq!(w.account(b, "usd").spent_total, 50);
    assert_eq!(w.own_limit(b, "usd", LIFETIME).remaining, 100 - 50 - 30);

    // The moved hold settles at its new ancestors.
    let (settled, _) = w.settle(hold, 30);
    assert_eq!(settled.charged, 30);
    assert_eq!(w.spent(b, "usd", LIFETIME), 80);
    assert_eq!(w.spent(a, "usd", LIFETIME), 10);
    assert_eq!(w.account(r, "usd").spent_total, 10 + 50 + 30);
    assert_eq!(w.account(r, "usd").held, 0);
    w.invariants();
}

#[test]
fn move_is_refused_when_a_new_ancestor_cannot_absorb_the_held_amount() {
    // b: 100 - 80 spent = room 20 < 30 held by x.
    let MoveFixture {
        mut w,
        a,
        b,
        x,
        hold,
        ..
    } = move_fixture(80);
    let e = w.err(Op::MoveNode {
        node: x.into(),
        new_parent: b.into(),
    });
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    assert!(e.message.contains("absorb"), "{e}");
    assert_eq!(w.s.node_view(x, w.now).unwrap().parent, Some(a));
    assert_eq!(w.account(a, "usd").held, 30);
    assert_eq!(w.account(b, "usd").held, 0);

    // Exactly the room is enough.
    w.release(hold);
    let hold = w.reserve(x, "usd", 20).reservation_id;
    w.done(Op::MoveNode {
        node: x.into(),
        new_parent: b.into(),
    });
    assert_eq!(w.own_limit(b, "usd", LIFETIME).remaining, 0);
    w.release(hold);
    w.invariants();
}

#[test]
fn move_checks_role_limits_of_new_ancestors_too() {
    let MoveFixture {
        mut w, r, a, b, x, ..
    } = move_fixture(0);
    w.done(Op::DefineRole {
        root: r.into(),
        name: "team".into(),
        limits: vec![hard("usd", 25, MONTHLY)],
    });
    w.done(Op::AssignRoles {
        node: b.into(),
        roles: vec!["team".into()],
    });
    let e = w.err(Op::MoveNode {
        node: x.into(),
        new_parent: b.into(),
    });
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    assert!(
        e.message.contains("team"),
        "the refusal names the role limit: {e}"
    );
    assert_eq!(w.s.node_view(x, w.now).unwrap().parent, Some(a));
    // Soft limits, status and funding are not re-checked: a paused new parent accepts the node.
    w.done(Op::SetLimit {
        node: b.into(),
        limit: soft("usd", 1, LIFETIME),
    });
    w.done(Op::AssignRoles {
        node: b.into(),
        roles: vec![],
    });
    w.done(Op::PauseNode { node: b.into() });
    w.done(Op::MoveNode {
        node: x.into(),
        new_parent: b.into(),
    });
    assert_eq!(w.account(b, "usd").held, 30);
    w.invariants();
}

#[test]
fn move_refuses_cycles_other_roots_roots_and_taken_names() {
    let mut w = World::new(T0);
    let r = w.root("r", &usd());
    let a = w.child(r, "a");
    let x = w.child(a, "x");
    let y = w.child(x, "y");
    let b = w.child(r, "b");
    let bx = w.child(b, "x");
    let s = w.root("s", &usd());

    for target in [a, x, y] {
        let e = w.err(Op::MoveNode {
            node: a.into(),
            new_parent: target.into(),
        });
        assert_eq!(
            e.kind,
            ErrorKind::InvalidArgument,
            "moving a under {target}"
        );
        assert!(e.message.contains("cycle"), "{e}");
    }
    let e = w.err(Op::MoveNode {
        node: x.into(),
        new_parent: s.into(),
    });
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("root"), "{e}");
    let e = w.err(Op::MoveNode {
        node: r.into(),
        new_parent: s.into(),
    });
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    let e = w.err(Op::MoveNode {
        node: x.into(),
        new_parent: b.into(),
    });
    assert_eq!(
        e.kind,
        ErrorKind::AlreadyExists,
        "b already has a child named x: {e}"
    );
    assert_eq!(w.s.node_view(bx, w.now).unwrap().parent, Some(b));

    // A closed new parent is refused.
    let c = w.child(r, "c");
    w.done(Op::CloseNode { node: c.into() });
    let e = w.err(Op::MoveNode {
        node: y.into(),
        new_parent: c.into(),
    });
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);

    // Moving to the current parent is a no-op success that emits nothing.
    let events = w.done(Op::MoveNode {
        node: x.into(),
        new_parent: a.into(),
    });
    assert!(events.is_empty());
    assert_eq!(w.s.path_of(y).unwrap(), "r/a/x/y");
    w.invariants();
}

#[test]
fn move_respects_the_depth_limit_with_the_whole_subtree() {
    let mut w = World::new(T0);
    w.done(Op::SetConfig(ConfigPatch {
        depth_max: Some(4),
        ..ConfigPatch::default()
    }));
    let r = w.root("r", &usd());
    let a = w.child(r, "a");
    let x = w.child(a, "x");
    let b = w.child(r, "b");
    let c = w.child(b, "c");
    let d = w.child(c, "d");
    assert_eq!(w.s.node_view(d, w.now).unwrap().depth, 4);

    // b (height 2) under a: b=3, c=4, d=5 > 4.
    let e = w.err(Op::MoveNode {
        node: b.into(),
        new_parent: a.into(),
    });
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("deeper"), "{e}");
    // c (height 1) under x: c=4, d=5 > 4.
    assert_eq!(
        w.err(Op::MoveNode {
            node: c.into(),
            new_parent: x.into()
        })
        .kind,
        ErrorKind::InvalidArgument
    );
    // c under a: c=3, d=4: fits exactly, and depths follow.
    w.done(Op::MoveNode {
        node: c.into(),
        new_parent: a.into(),
    });
    assert_eq!(w.s.node_view(c, w.now).unwrap().depth, 3);
    assert_eq!(w.s.node_view(d, w.now).unwrap().depth, 4);
    assert_eq!(w.s.path_of(d).unwrap(), "r/a/c/d");
    // And a leaf may go one level deeper: x under c is depth 4.
    w.done(Op::MoveNode {
        node: x.into(),
        new_parent: c.into(),
    });
    assert_eq!(w.s.node_view(x, w.now).unwrap().depth, 4);
    assert_eq!(w.s.node_view(b, w.now).unwrap().children, 0);
    w.invariants();
}

#[test]
fn debts_move_with_the_node() {
    let mut w = World::new(T0);
    let r = w.root("r", &[currency("credits", 0, true)]);
    let team = w.child(r, "team");
    let ops = w.child(r, "ops");
    let dev = w.child(team, "dev");
    w.add_grant(dev, grant("credits", 10, 0));
    let hold = w.reserve(dev, "credits", 10).reservation_id;
    let (settled, _) = w.settle(hold, 40);
    assert_eq!(settled.debt, 30);
    assert_eq!(w.account(dev, "credits").debt, 30);

    w.done(Op::MoveNode {
        node: dev.into(),
        new_parent: ops.into(),
    });
    // A grant in the old subtree no longer pays dev's debt ...
    let (_, events) = w.add_grant(team, grant("credits", 100, 0));
    assert!(governance(&events).is_empty(), "{events:?}");
    // ... a grant in the new one does.
    let (g, events) = w.add_grant(ops, grant("credits", 100, 0));
    assert_eq!(
        governance(&events),
        vec![GovernanceEvent::DebtPaid {
            node: dev,
            grant_id: g,
            currency: "credits".into(),
            amount: 30
        }]
    );
    assert_eq!(w.account(dev, "credits").debt, 0);
    assert_eq!(w.grant_view(g).remaining, 70);
    w.invariants();
}

#[test]
fn close_refuses_new_reservations_below_but_existing_holds_still_resolve() {
    let mut w = World::new(T0);
    let r = w.root("r", &usd());
    let team = w.child(r, "team");
    let dev = w.child(team, "dev");
    let h1 = w.reserve(dev, "usd", 40).reservation_id;
    let h2 = w.reserve(dev, "usd", 30).reservation_id;

    let events = w.done(Op::CloseNode { node: team.into() });
    assert!(events.is_empty());
    assert_eq!(w.status(team), NodeStatus::Closed);

    let closed = Denial {
        node: team,
        rule: DenyRule::NodeClosed,
        window: None,
        remaining: 0,
        requested: 10,
        retry_after_ms: None,
    };
    assert_eq!(w.deny(dev, "usd", 10), closed);
    assert_eq!(w.deny(team, "usd", 10), closed);
    assert_eq!(w.deny_range(dev, "usd", 10, 50), closed);
    assert_eq!(w.charge_denied(dev, "usd", 10), closed);
    // The root is not below the closed node.
    w.reserve(r, "usd", 5);

    // Existing holds below still settle and release.
    let (settled, _) = w.settle(h1, 25);
    assert_eq!((settled.charged, settled.released), (25, 15));
    assert_eq!(w.release(h2), 30);
    assert_eq!(w.account(dev, "usd").held, 0);
    assert_eq!(w.account(team, "usd").spent_total, 25);

    // Closed is terminal.
    for op in [
        Op::PauseNode { node: team.into() },
        Op::ResumeNode { node: team.into() },
        Op::CloseNode { node: team.into() },
        create_child(team, "new"),
    ] {
        assert_eq!(w.err(op).kind, ErrorKind::FailedPrecondition);
    }
    // The first closed-or-paused node from the leaf is named.
    w.done(Op::PauseNode { node: dev.into() });
    let d = w.deny(dev, "usd", 1);
    assert_eq!((d.node, d.rule), (dev, DenyRule::NodePaused));
    w.invariants();
}

#[test]
fn pause_and_resume_switch_status_and_emit_once() {
    let mut w = World::new(T0);
    let r = w.root("r", &usd());
    let team = w.child(r, "team");
    let dev = w.child(team, "dev");
    let hold = w.reserve(dev, "usd", 10).reservation_id;

    let events = w.done(Op::PauseNode { node: team.into() });
    assert_eq!(
        governance(&events),
        vec![GovernanceEvent::Paused {
            node: team,
            by_limit: false
        }]
    );
    assert_eq!(w.status(team), NodeStatus::Paused);
    // Setting the current status is a no-op success that emits nothing.
    assert!(w.done(Op::PauseNode { node: team.into() }).is_empty());

    let d = w.deny(dev, "usd", 7);
    assert_eq!(
        d,
        Denial {
            node: team,
            rule: DenyRule::NodePaused,
            window: None,
            remaining: 0,
            requested: 7,
            retry_after_ms: None
        }
    );
    assert_eq!(w.charge_denied(dev, "usd", 7).rule, DenyRule::NodePaused);
    // Settles still work below a paused node.
    assert_eq!(w.settle(hold, 10).0.charged, 10);

    let events = w.done(Op::ResumeNode { node: team.into() });
    assert_eq!(
        governance(&events),
        vec![GovernanceEvent::Resumed { node: team }]
    );
    assert!(w.done(Op::ResumeNode { node: team.into() }).is_empty());
    assert_eq!(w.reserve(dev, "usd", 7).amount, 7);
    w.invariants();
}

#[test]
fn pause_by_exhaustion_stays_until_an_explicit_resume() {
    let mut w = World::new(t(2026, 3, 10, 12));
    let r = w.root("r", &usd());
    let dev = w.child(r, "dev");
    w.set_limit(dev, pausing(hard("usd", 100, MONTHLY)));

    // A denial never pauses.
    assert_eq!(w.deny(dev, "usd", 101).rule, DenyRule::Cap);
    assert_eq!(w.status(dev), NodeStatus::Active);

    let (_, events) = w.charge(dev, "usd", 60);
    assert_eq!(crossings(&events), vec![(dev, 50)]);
    assert_eq!(w.status(dev), NodeStatus::Active);
    let (_, events) = w.charge(dev, "usd", 40);
    let gov = governance(&events);
    assert_eq!(crossings(&events), vec![(dev, 75), (dev, 100)]);
    assert_eq!(
        gov.last(),
        Some(&GovernanceEvent::Paused {
            node: dev,
            by_limit: true
        })
    );
    assert_eq!(w.status(dev), NodeStatus::Paused);

    // Raising the limit does not resume the node.
    w.set_limit(dev, pausing(hard("usd", 1000, MONTHLY)));
    assert_eq!(w.status(dev), NodeStatus::Paused);
    assert_eq!(w.deny(dev, "usd", 1).rule, DenyRule::NodePaused);
    w.later(DAY);
    assert_eq!(w.status(dev), NodeStatus::Paused);

    let events = w.done(Op::ResumeNode { node: dev.into() });
    assert_eq!(
        governance(&events),
        vec![GovernanceEvent::Resumed { node: dev }]
    );
    assert_eq!(w.reserve(dev, "usd", 900).amount, 900);
    w.invariants();
}

#[test]
fn roots_are_isolated_from_each_other() {
    let mut w = World::new(t(2026, 3, 10, 12));
    // Default caps: 100 major units at scale 2 = 10_000 per month.
    let a = w.root_with("a", &usd(), false);
    let b = w.root_with("b", &usd(), false);
    let c = w.root("c", &[currency("eur", 2, false)]);
    let ax = w.child(a, "x");
    let bx = w.child(b, "x");
    let cx = w.child(c, "x");
    assert_eq!(w.s.resolve_path("a/x").unwrap(), ax);
    assert_eq!(w.s.resolve_path("b/x").unwrap(), bx);

    w.charge(ax, "usd", 10_000);
    assert_eq!(w.deny(ax, "usd", 1).node, a);
    let hold = w.reserve(bx, "usd", 10_000);
    assert_eq!(hold.amount, 10_000);
    assert_eq!(w.spent(a, "usd", MONTHLY), 10_000);
    assert_eq!(w.spent(b, "usd", MONTHLY), 0);
    assert_eq!(w.account(a, "usd").held, 0);
    assert_eq!(w.account(b, "usd").held, 10_000);
    // A currency belongs to its root.
    let e = w.err(World::reserve_op(
        cx,
        "usd",
        Amount::Exact(1),
        Attributes::default(),
    ));
    assert_eq!(e.kind, ErrorKind::NotFound);
    // Roles and prices are per root too.
    w.done(Op::DefineRole {
        root: a.into(),
        name: "dev".into(),
        limits: vec![],
    });
    assert_eq!(
        w.err(Op::AssignRoles {
            node: bx.into(),
            roles: vec!["dev".into()]
        })
        .kind,
        ErrorKind::NotFound
    );
    // Moving across roots is refused.
    assert_eq!(
        w.err(Op::MoveNode {
            node: ax.into(),
            new_parent: b.into()
        })
        .kind,
        ErrorKind::InvalidArgument
    );
    w.invariants();
}

#[test]
fn holds_keep_their_funding_plan_across_a_move() {
    let mut w = World::new(T0);
    let r = w.root("r", &[currency("credits", 0, true)]);
    let team = w.child(r, "team");
    let ops = w.child(r, "ops");
    let dev = w.child(team, "dev");
    let g = w.add_grant(team, grant("credits", 100, 0)).0;
    let hold = w.reserve(dev, "credits", 30);
    assert_eq!(hold.plan, vec![part(g, team, 30)]);
    w.done(Op::MoveNode {
        node: dev.into(),
        new_parent: ops.into(),
    });
    assert_eq!(
        w.s.hold(hold.reservation_id).unwrap().plan,
        vec![part(g, team, 30)]
    );
    // team's grant is no longer on dev's path, but the hold still settles from it.
    assert_eq!(w.deny(dev, "credits", 1).rule, DenyRule::Funding);
    let (s, _) = w.settle(hold.reservation_id, 20);
    assert_eq!(
        (s.plan.clone(), s.released, s.debt),
        (vec![part(g, team, 20)], 10, 0)
    );
    assert_eq!((w.grant_view(g).remaining, w.grant_view(g).held), (80, 0));
    w.invariants();
}
