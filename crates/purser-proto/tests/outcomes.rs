//! Outbound conversions, end to end: proto requests are applied to a real `State` and its
//! outcomes and views come back as the proto responses a server would send.

use purser_core::*;
use purser_proto::pb;
use purser_proto::{digest_hex, status_from_error, FromOutcome, MutatingRequest};

const T0: u64 = 1_780_000_000_000;

/// A state with a stand-in for the Raft log index, so that responses carry a realistic one.
struct World {
    state: State,
    now: u64,
    log_index: u64,
}

impl World {
    fn new() -> Self {
        World {
            state: State::new(),
            now: T0,
            log_index: 0,
        }
    }

    fn apply<R: MutatingRequest, P: FromOutcome>(&mut self, request: R) -> P {
        let command = request.into_command().expect("request converts");
        self.log_index += 1;
        let applied = self
            .state
            .apply(self.now, command)
            .expect("command applies");
        P::from_outcome(applied.outcome, self.log_index).expect("outcome fits the response")
    }
}

fn path(p: &str) -> Option<pb::NodeRef> {
    Some(NodeRef::from(p).into())
}

fn create(request_id: &str, parent: Option<&str>, name: &str) -> pb::CreateNodeRequest {
    pb::CreateNodeRequest {
        request_id: request_id.into(),
        sent_at_ms: T0,
        parent: parent.and_then(path),
        name: name.into(),
        kind: "team".into(),
        tags: vec![],
        root: parent.is_none().then(|| pb::RootSpec {
            currencies: vec![
                pb::CurrencySpec {
                    code: "usd".into(),
                    scale: 6,
                    funded: true,
                },
                pb::CurrencySpec {
                    code: "actions".into(),
                    scale: 0,
                    funded: false,
                },
            ],
            no_default_cap: true,
        }),
    }
}

fn reserve(request_id: &str, amount: i64) -> pb::ReserveRequest {
    pb::ReserveRequest {
        request_id: request_id.into(),
        sent_at_ms: T0,
        node: path("acme/ml/alice"),
        currency: "usd".into(),
        amount: Some(pb::reserve_request::Amount::Exact(amount)),
        ttl_ms: 60_000,
        attributes: Some(pb::Attributes {
            user: Some("alice".into()),
            model: Some("gpt-5".into()),
            ..Default::default()
        }),
    }
}

fn set_ml_limit() -> pb::SetLimitRequest {
    pb::SetLimitRequest {
        request_id: "limit-ml".into(),
        sent_at_ms: T0,
        node: path("acme/ml"),
        limit: Some(pb::LimitSpec {
            currency: "usd".into(),
            amount: 500_000,
            window: Some(Window::Calendar(Period::Month).into()),
            mode: pb::LimitMode::Hard.into(),
            thresholds: vec![],
            on_exhausted: pb::OnExhausted::Deny.into(),
        }),
    }
}

/// acme (1, owns a 1 USD prepaid grant) → ml (2, 0.5 USD monthly hard cap) → alice (3).
fn world() -> World {
    let mut w = World::new();
    let root: pb::CreateNodeResponse = w.apply(create("n1", None, "acme"));
    assert_eq!(
        (root.node_id, root.log_index, root.duplicate),
        (1, 1, false)
    );
    let ml: pb::CreateNodeResponse = w.apply(create("n2", Some("acme"), "ml"));
    assert_eq!(ml.node_id, 2);
    let alice: pb::CreateNodeResponse = w.apply(create("n3", Some("acme/ml"), "alice"));
    assert_eq!(alice.node_id, 3);
    let grant: pb::AddGrantResponse = w.apply(pb::AddGrantRequest {
        request_id: "g1".into(),
        sent_at_ms: T0,
        node: path("acme"),
        grant: Some(pb::GrantSpec {
            currency: "usd".into(),
            amount: 1_000_000,
            kind: pb::GrantKind::Prepaid.into(),
            ..Default::default()
        }),
    });
    assert_eq!((grant.grant_id, grant.duplicate), (1, false));
    let limit: pb::SetLimitResponse = w.apply(set_ml_limit());
    assert!(!limit.duplicate);
    assert!(limit.first_outcome.is_none());
    w
}

fn granted(response: pb::ReserveResponse) -> pb::Granted {
    match response.result {
        Some(pb::reserve_response::Result::Granted(g)) => g,
        other => panic!("expected a grant, got {other:?}"),
    }
}

#[test]
fn reservation_is_granted_with_plan_and_headroom() {
    let mut w = world();
    let response: pb::ReserveResponse = w.apply(reserve("r1", 100_000));
    assert_eq!(response.log_index, w.log_index);
    assert!(!response.duplicate);
    let g = granted(response);
    assert_eq!(
        g,
        pb::Granted {
            reservation_id: 1,
            node_id: 3,
            currency: "usd".into(),
            amount: 100_000,
            expires_at_ms: T0 + 60_000,
            plan: vec![pb::FundingPart {
                grant_id: 1,
                node_id: 1,
                amount: 100_000,
            }],
            headroom: vec![
                pb::Headroom {
                    node_id: 3,
                    remaining: None,
                },
                pb::Headroom {
                    node_id: 2,
                    remaining: Some(400_000),
                },
                pb::Headroom {
                    node_id: 1,
                    remaining: None,
                },
            ],
        }
    );
}

#[test]
fn a_retry_gets_the_first_outcome_and_its_ids() {
    let mut w = world();
    let first = granted(w.apply(reserve("r1", 100_000)));
    let retry: pb::ReserveResponse = w.apply(reserve("r1", 100_000));
    assert!(retry.duplicate);
    assert_eq!(
        retry.first_outcome,
        Some(pb::Recorded {
            kind: Some(pb::recorded::Kind::Reserved(pb::recorded::Reserved {
                reservation_id: first.reservation_id,
                amount: 100_000,
                expires_at_ms: first.expires_at_ms,
            })),
        })
    );
    let again = granted(retry);
    assert_eq!(
        (again.reservation_id, again.amount, again.expires_at_ms),
        (first.reservation_id, first.amount, first.expires_at_ms)
    );

    let node: pb::CreateNodeResponse = w.apply(create("n2", Some("acme"), "ml"));
    assert!(node.duplicate);
    assert_eq!(
        node.node_id, 2,
        "the retry reads the node id where it always does"
    );

    let limit: pb::SetLimitResponse = w.apply(set_ml_limit());
    assert!(limit.duplicate);
    assert_eq!(
        limit.first_outcome,
        Some(pb::Recorded {
            kind: Some(pb::recorded::Kind::Done(pb::recorded::Done {})),
        })
    );
}

#[test]
fn denial_names_node_rule_window_and_what_remained() {
    let mut w = world();
    let mut response: pb::ReserveResponse = w.apply(reserve("r1", 600_000));
    let denial = response.denial_mut().expect("denied");
    assert_eq!(
        denial.node_path, "",
        "the state machine names the node by id only"
    );
    denial.node_path = w.state.path_of(denial.node_id).expect("node exists");
    let Some(pb::reserve_response::Result::Denied(d)) = response.result else {
        panic!("denied")
    };
    assert_eq!(
        d,
        pb::Denied {
            node_id: 2,
            node_path: "acme/ml".into(),
            rule: pb::DenyRule::Cap.into(),
            role: String::new(),
            rate_key: String::new(),
            window: Some(Window::Calendar(Period::Month).into()),
            remaining: 500_000,
            requested: 600_000,
            retry_after_ms: None,
        }
    );
}

#[test]
fn commit_release_and_charge() {
    let mut w = world();
    let hold = granted(w.apply(reserve("r1", 100_000)));
    let commit: pb::CommitResponse = w.apply(pb::CommitRequest {
        request_id: "c1".into(),
        sent_at_ms: T0,
        reservation_id: hold.reservation_id,
        actual: Some(pb::commit_request::Actual::Amount(120_000)),
    });
    let s = commit.settlement.expect("settled");
    assert_eq!(s.reservation_id, Some(hold.reservation_id));
    assert_eq!((s.node_id, s.currency.as_str()), (3, "usd"));
    assert_eq!(
        (s.charged, s.overrun, s.debt, s.late),
        (120_000, 20_000, 0, false)
    );
    assert_eq!(s.plan.iter().map(|p| p.amount).sum::<u64>(), 120_000);

    let retry: pb::CommitResponse = w.apply(pb::CommitRequest {
        request_id: "c1".into(),
        sent_at_ms: T0,
        reservation_id: hold.reservation_id,
        actual: Some(pb::commit_request::Actual::Amount(120_000)),
    });
    assert!(retry.duplicate);
    let s = retry.settlement.expect("filled from the record");
    assert_eq!(
        (s.reservation_id, s.charged),
        (Some(hold.reservation_id), 120_000)
    );

    let second = granted(w.apply(reserve("r2", 50_000)));
    let release: pb::ReleaseResponse = w.apply(pb::ReleaseRequest {
        request_id: "x1".into(),
        sent_at_ms: T0,
        reservation_id: second.reservation_id,
    });
    assert_eq!(
        (release.reservation_id, release.amount, release.duplicate),
        (second.reservation_id, 50_000, false)
    );

    let charge: pb::ChargeResponse = w.apply(pb::ChargeRequest {
        request_id: "ch1".into(),
        sent_at_ms: T0,
        node: path("acme/ml/alice"),
        currency: "actions".into(),
        actual: Some(pb::charge_request::Actual::Amount(3)),
        attributes: None,
    });
    let Some(pb::charge_response::Result::Charged(c)) = charge.result else {
        panic!("charged")
    };
    assert_eq!((c.reservation_id, c.charged, c.plan.len()), (None, 3, 0));
}

#[test]
fn views() {
    let mut w = world();
    let hold = granted(w.apply(reserve("r1", 100_000)));

    let alice = pb::NodeView::from(w.state.node_view(3, w.now).expect("view"));
    assert_eq!(alice.path, "acme/ml/alice");
    assert_eq!(
        (alice.parent_id, alice.root_id, alice.depth),
        (Some(2), 1, 3)
    );
    assert_eq!(alice.status, i32::from(pb::NodeStatus::Active));
    assert_eq!(alice.holds_open, 1);
    let usd = alice
        .accounts
        .iter()
        .find(|a| a.currency == "usd")
        .expect("usd account");
    assert_eq!((usd.scale, usd.funded, usd.held), (6, true, 100_000));

    let limits: Vec<pb::LimitView> = w
        .state
        .usage(2, w.now)
        .expect("usage")
        .into_iter()
        .map(Into::into)
        .collect();
    assert_eq!(limits.len(), 1);
    let l = &limits[0];
    assert_eq!(l.role, None);
    assert_eq!(l.window, Some(Window::Calendar(Period::Month).into()));
    assert_eq!(l.mode, i32::from(pb::LimitMode::Hard));
    assert_eq!(
        (l.amount, l.spent, l.held, l.remaining),
        (500_000, 0, 100_000, 400_000)
    );
    assert!(l.window_start_ms.is_some() && l.window_end_ms.is_some());

    let grants: Vec<pb::GrantView> = w
        .state
        .grants_of(1)
        .expect("grants")
        .into_iter()
        .map(Into::into)
        .collect();
    assert_eq!(grants.len(), 1);
    let g = &grants[0];
    assert_eq!(
        (g.id, g.node_id, g.kind),
        (1, 1, pb::GrantKind::Prepaid.into())
    );
    assert_eq!(
        (g.amount, g.remaining, g.held),
        (1_000_000, 1_000_000, 100_000)
    );
    assert_eq!(
        g.rollover,
        Some(pb::Rollover {
            kind: Some(pb::rollover::Kind::None(pb::rollover::NoCarry {}))
        })
    );

    let holds: Vec<pb::HoldView> = w
        .state
        .holds_of(3)
        .expect("holds")
        .into_iter()
        .map(Into::into)
        .collect();
    assert_eq!(holds.len(), 1);
    assert_eq!(holds[0].reservation_id, hold.reservation_id);
    let attrs = holds[0].attributes.as_ref().expect("attributes");
    assert_eq!(attrs.user.as_deref(), Some("alice"));
    assert_eq!(attrs.model.as_deref(), Some("gpt-5"));
}

#[test]
fn every_deny_rule_maps() {
    let denial = |rule| Denial {
        node: 4,
        rule,
        window: None,
        remaining: 0,
        requested: 1,
        retry_after_ms: Some(250),
    };
    let cases = [
        (DenyRule::NodeClosed, pb::DenyRule::NodeClosed, "", ""),
        (DenyRule::NodePaused, pb::DenyRule::NodePaused, "", ""),
        (
            DenyRule::RateLimit {
                key: "gpt-5".into(),
            },
            pb::DenyRule::RateLimit,
            "",
            "gpt-5",
        ),
        (DenyRule::Cap, pb::DenyRule::Cap, "", ""),
        (
            DenyRule::RoleCap {
                role: "intern".into(),
            },
            pb::DenyRule::RoleCap,
            "intern",
            "",
        ),
        (DenyRule::Funding, pb::DenyRule::Funding, "", ""),
    ];
    for (rule, wire, role, rate_key) in cases {
        let d = pb::Denied::from(denial(rule));
        assert_eq!(d.rule, i32::from(wire));
        assert_eq!((d.role.as_str(), d.rate_key.as_str()), (role, rate_key));
        assert_eq!(
            (d.node_id, d.retry_after_ms, d.window),
            (4, Some(250), None)
        );
    }
}

#[test]
fn every_recorded_outcome_maps() {
    use pb::recorded::{self as rec, Kind};
    let cases = [
        (
            Recorded::NodeCreated { node_id: 1 },
            Kind::NodeCreated(rec::NodeCreated { node_id: 1 }),
        ),
        (
            Recorded::GrantAdded { grant_id: 2 },
            Kind::GrantAdded(rec::GrantAdded { grant_id: 2 }),
        ),
        (Recorded::Done, Kind::Done(rec::Done {})),
        (
            Recorded::Reserved {
                reservation_id: 3,
                amount: 4,
                expires_at_ms: 5,
            },
            Kind::Reserved(rec::Reserved {
                reservation_id: 3,
                amount: 4,
                expires_at_ms: 5,
            }),
        ),
        (
            Recorded::Settled {
                reservation_id: 6,
                charged: 7,
            },
            Kind::Settled(rec::Settled {
                reservation_id: 6,
                charged: 7,
            }),
        ),
        (
            Recorded::Released {
                reservation_id: 8,
                amount: 9,
            },
            Kind::Released(rec::Released {
                reservation_id: 8,
                amount: 9,
            }),
        ),
        (
            Recorded::Charged { charged: 10 },
            Kind::Charged(rec::Charged { charged: 10 }),
        ),
    ];
    for (core, wire) in cases {
        assert_eq!(pb::Recorded::from(core).kind, Some(wire));
    }
}

#[test]
fn an_outcome_its_response_cannot_carry_is_internal() {
    let e = pb::CommitResponse::from_outcome(Outcome::Done, 3).expect_err("mismatch");
    assert_eq!(tonic::Status::from(e).code(), tonic::Code::Internal);
    let e = pb::SetLimitResponse::from_outcome(Outcome::NodeCreated { node_id: 1 }, 3)
        .expect_err("mismatch");
    assert_eq!(tonic::Status::from(e).code(), tonic::Code::Internal);
    let e = pb::ReserveResponse::from_outcome(Outcome::Duplicate(Recorded::Done), 3)
        .expect_err("a duplicate of another kind of command");
    assert!(e.to_string().contains("ReserveResponse"), "{e}");
}

#[test]
fn domain_errors_map_to_their_status_codes() {
    let cases = [
        (ErrorKind::InvalidArgument, tonic::Code::InvalidArgument),
        (ErrorKind::NotFound, tonic::Code::NotFound),
        (ErrorKind::AlreadyExists, tonic::Code::AlreadyExists),
        (
            ErrorKind::FailedPrecondition,
            tonic::Code::FailedPrecondition,
        ),
        (ErrorKind::ResourceExhausted, tonic::Code::ResourceExhausted),
    ];
    for (kind, code) in cases {
        let status = status_from_error(&Error::new(kind, "why"));
        assert_eq!((status.code(), status.message()), (code, "why"));
    }

    // And a real one: the same request id with a different payload.
    let mut w = world();
    let other = create("n2", Some("acme"), "other")
        .into_command()
        .expect("converts");
    let err = w.state.apply(w.now, other).expect_err("id reused");
    assert_eq!(status_from_error(&err).code(), tonic::Code::AlreadyExists);
}

#[test]
fn digest_is_32_hex_digits() {
    assert_eq!(digest_hex(0), "0".repeat(32));
    assert_eq!(digest_hex(0xab), format!("{}ab", "0".repeat(30)));
    let w = world();
    let hex = digest_hex(w.state.digest());
    assert_eq!(hex.len(), 32);
    assert!(hex
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
}
