//! Inbound conversions: every mutating request of the Budget and Admin services becomes the
//! expected `purser_core::Op`, and a malformed request is refused with an error that names the
//! field.

use purser_core::*;
use purser_proto::pb;
use purser_proto::{ConvertError, GrantsQuery, HoldsQuery, MutatingRequest};

fn id(id: u64) -> Option<pb::NodeRef> {
    Some(NodeRef::Id(id).into())
}

fn path(path: &str) -> Option<pb::NodeRef> {
    Some(NodeRef::from(path).into())
}

fn op<R: MutatingRequest>(request: R) -> Op {
    request.try_into().expect("request converts to an op")
}

fn err<R: MutatingRequest + std::fmt::Debug>(request: R) -> ConvertError {
    let result: Result<Op, ConvertError> = request.try_into();
    match result {
        Err(e) => e,
        Ok(op) => panic!("expected a conversion error, got {op:?}"),
    }
}

fn monthly_hard(currency: &str, amount: i64) -> LimitSpec {
    LimitSpec {
        currency: currency.into(),
        amount,
        window: Window::Calendar(Period::Month),
        mode: LimitMode::Hard,
        thresholds: vec![50, 90],
        on_exhausted: OnExhausted::Pause,
    }
}

fn attrs() -> Attributes {
    Attributes {
        user: Some("alice".into()),
        model: Some("gpt-5".into()),
        provider: Some("openai".into()),
        credential_type: None,
        tags: vec![
            ("team".into(), "ml".into()),
            ("feature".into(), "agent".into()),
        ],
    }
}

fn tokens() -> TokenUsage {
    TokenUsage {
        provider: "anthropic".into(),
        model: "claude".into(),
        input: 1_000,
        output: 200,
        cached_input: 50,
        reasoning: 7,
    }
}

// ---- Budget ------------------------------------------------------------------------------

#[test]
fn reserve_exact_and_range() {
    let exact = pb::ReserveRequest {
        request_id: "r1".into(),
        sent_at_ms: 5,
        node: path("acme/ml/alice"),
        currency: "usd".into(),
        amount: Some(pb::reserve_request::Amount::Exact(1_500)),
        ttl_ms: 30_000,
        attributes: Some(attrs().into()),
    };
    assert_eq!(
        op(exact.clone()),
        Op::Reserve(Reserve {
            node: "acme/ml/alice".into(),
            currency: "usd".into(),
            amount: Amount::Exact(1_500),
            ttl_ms: 30_000,
            attrs: attrs(),
        })
    );

    let range = pb::ReserveRequest {
        node: id(4),
        amount: Some(pb::reserve_request::Amount::Range(pb::AmountRange {
            min: 10,
            max: 90,
        })),
        attributes: None,
        ..exact
    };
    assert_eq!(
        op(range),
        Op::Reserve(Reserve {
            node: NodeRef::Id(4),
            currency: "usd".into(),
            amount: Amount::Range { min: 10, max: 90 },
            ttl_ms: 30_000,
            attrs: Attributes::default(),
        })
    );
}

#[test]
fn negative_amounts_reach_the_state_machine_unchanged() {
    // The state machine owns the amount rules; the wire must not clamp or wrap them away.
    let reserve = pb::ReserveRequest {
        request_id: "r".into(),
        node: id(1),
        amount: Some(pb::reserve_request::Amount::Exact(-5)),
        ..Default::default()
    };
    let Op::Reserve(r) = op(reserve) else {
        panic!("not a reserve")
    };
    assert_eq!(r.amount, Amount::Exact(-5));
}

#[test]
fn commit_by_amount_and_by_tokens() {
    let by_amount = pb::CommitRequest {
        request_id: "c1".into(),
        sent_at_ms: 9,
        reservation_id: 17,
        actual: Some(pb::commit_request::Actual::Amount(0)),
    };
    assert_eq!(
        op(by_amount),
        Op::Settle {
            reservation_id: 17,
            actual: Actual::Amount(0),
        }
    );
    let by_tokens = pb::CommitRequest {
        request_id: "c2".into(),
        sent_at_ms: 9,
        reservation_id: 18,
        actual: Some(pb::commit_request::Actual::Tokens(tokens().into())),
    };
    assert_eq!(
        op(by_tokens),
        Op::Settle {
            reservation_id: 18,
            actual: Actual::Tokens(tokens()),
        }
    );
}

#[test]
fn release() {
    let release = pb::ReleaseRequest {
        request_id: "x".into(),
        sent_at_ms: 1,
        reservation_id: 3,
    };
    assert_eq!(op(release), Op::Release { reservation_id: 3 });
}

#[test]
fn charge_by_amount_and_by_tokens() {
    let charge = pb::ChargeRequest {
        request_id: "ch".into(),
        sent_at_ms: 2,
        node: path("acme"),
        currency: "actions".into(),
        actual: Some(pb::charge_request::Actual::Amount(3)),
        attributes: Some(attrs().into()),
    };
    assert_eq!(
        op(charge.clone()),
        Op::Charge(Charge {
            node: "acme".into(),
            currency: "actions".into(),
            actual: Actual::Amount(3),
            attrs: attrs(),
        })
    );
    let by_tokens = pb::ChargeRequest {
        actual: Some(pb::charge_request::Actual::Tokens(tokens().into())),
        attributes: None,
        ..charge
    };
    assert_eq!(
        op(by_tokens),
        Op::Charge(Charge {
            node: "acme".into(),
            currency: "actions".into(),
            actual: Actual::Tokens(tokens()),
            attrs: Attributes::default(),
        })
    );
}

// ---- Admin -------------------------------------------------------------------------------

#[test]
fn create_root_and_child() {
    let root_spec = RootSpec {
        currencies: vec![
            CurrencySpec {
                code: "usd".into(),
                scale: 6,
                funded: true,
            },
            CurrencySpec {
                code: "actions".into(),
                scale: 0,
                funded: false,
            },
        ],
        no_default_cap: true,
    };
    let root = pb::CreateNodeRequest {
        request_id: "n1".into(),
        sent_at_ms: 1,
        parent: None,
        name: "acme".into(),
        kind: "org".into(),
        tags: vec![pb::Tag {
            key: "plan".into(),
            value: "enterprise".into(),
        }],
        root: Some(root_spec.clone().into()),
    };
    assert_eq!(
        op(root),
        Op::CreateNode(CreateNode {
            parent: None,
            name: "acme".into(),
            kind: "org".into(),
            tags: vec![("plan".into(), "enterprise".into())],
            root: Some(root_spec),
        })
    );

    let child = pb::CreateNodeRequest {
        request_id: "n2".into(),
        sent_at_ms: 1,
        parent: path("acme"),
        name: "ml".into(),
        kind: "team".into(),
        tags: vec![],
        root: None,
    };
    assert_eq!(
        op(child),
        Op::CreateNode(CreateNode {
            parent: Some("acme".into()),
            name: "ml".into(),
            kind: "team".into(),
            tags: vec![],
            root: None,
        })
    );
}

#[test]
fn tree_operations() {
    let moved = pb::MoveNodeRequest {
        request_id: "m".into(),
        sent_at_ms: 1,
        node: id(7),
        new_parent: path("acme/infra"),
    };
    assert_eq!(
        op(moved),
        Op::MoveNode {
            node: NodeRef::Id(7),
            new_parent: "acme/infra".into(),
        }
    );
    let close = pb::CloseNodeRequest {
        request_id: "c".into(),
        sent_at_ms: 1,
        node: id(7),
    };
    assert_eq!(
        op(close),
        Op::CloseNode {
            node: NodeRef::Id(7)
        }
    );
    let pause = pb::PauseNodeRequest {
        request_id: "p".into(),
        sent_at_ms: 1,
        node: path("acme"),
    };
    assert_eq!(
        op(pause),
        Op::PauseNode {
            node: "acme".into()
        }
    );
    let resume = pb::ResumeNodeRequest {
        request_id: "r".into(),
        sent_at_ms: 1,
        node: path("acme"),
    };
    assert_eq!(
        op(resume),
        Op::ResumeNode {
            node: "acme".into()
        }
    );
}

#[test]
fn limits() {
    let set = pb::SetLimitRequest {
        request_id: "l".into(),
        sent_at_ms: 1,
        node: id(2),
        limit: Some(monthly_hard("usd", 100).into()),
    };
    assert_eq!(
        op(set),
        Op::SetLimit {
            node: NodeRef::Id(2),
            limit: monthly_hard("usd", 100),
        }
    );
    let remove = pb::RemoveLimitRequest {
        request_id: "l2".into(),
        sent_at_ms: 1,
        node: id(2),
        currency: "usd".into(),
        window: Some(
            Window::Sliding {
                duration_ms: 60_000,
            }
            .into(),
        ),
    };
    assert_eq!(
        op(remove),
        Op::RemoveLimit {
            node: NodeRef::Id(2),
            currency: "usd".into(),
            window: Window::Sliding {
                duration_ms: 60_000
            },
        }
    );
}

#[test]
fn unspecified_mode_and_on_exhausted_mean_hard_and_deny() {
    let set = pb::SetLimitRequest {
        request_id: "l".into(),
        node: id(2),
        limit: Some(pb::LimitSpec {
            currency: "usd".into(),
            amount: 5,
            window: Some(Window::Lifetime.into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let Op::SetLimit { limit, .. } = op(set) else {
        panic!("not a set-limit")
    };
    assert_eq!(limit.mode, LimitMode::Hard);
    assert_eq!(limit.on_exhausted, OnExhausted::Deny);
    assert!(limit.thresholds.is_empty(), "empty means the defaults");
}

#[test]
fn rate_limits() {
    for kind in [
        RateKind::Requests,
        RateKind::Cost {
            currency: "usd".into(),
        },
    ] {
        let spec = RateLimitSpec {
            key: "gpt-5".into(),
            kind: kind.clone(),
            amount: 60,
            period_ms: 60_000,
        };
        let set = pb::SetRateLimitRequest {
            request_id: "rl".into(),
            sent_at_ms: 1,
            node: id(3),
            rate: Some(spec.clone().into()),
        };
        assert_eq!(
            op(set),
            Op::SetRateLimit {
                node: NodeRef::Id(3),
                rate: spec,
            }
        );
        let remove = pb::RemoveRateLimitRequest {
            request_id: "rl2".into(),
            sent_at_ms: 1,
            node: id(3),
            key: "*".into(),
            kind: Some(kind.clone().into()),
        };
        assert_eq!(
            op(remove),
            Op::RemoveRateLimit {
                node: NodeRef::Id(3),
                key: "*".into(),
                kind,
            }
        );
    }
}

#[test]
fn grants() {
    let recurring = GrantSpec {
        currency: "usd".into(),
        amount: 20_000_000,
        priority: 1,
        kind: GrantKind::Included,
        effective_at_ms: Some(1_000),
        expires_at_ms: Some(9_000_000),
        recur: Some(Period::Month),
        rollover: Rollover::CapMultiple(2),
    };
    let add = pb::AddGrantRequest {
        request_id: "g".into(),
        sent_at_ms: 1,
        node: path("acme/alice"),
        grant: Some(recurring.clone().into()),
    };
    assert_eq!(
        op(add),
        Op::AddGrant {
            node: "acme/alice".into(),
            grant: recurring,
        }
    );

    // A one-off top-up: no recur, no rollover message at all.
    let top_up = pb::AddGrantRequest {
        request_id: "g2".into(),
        node: id(1),
        grant: Some(pb::GrantSpec {
            currency: "usd".into(),
            amount: 5,
            kind: pb::GrantKind::Prepaid.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        op(top_up),
        Op::AddGrant {
            node: NodeRef::Id(1),
            grant: GrantSpec {
                currency: "usd".into(),
                amount: 5,
                priority: 0,
                kind: GrantKind::Prepaid,
                effective_at_ms: None,
                expires_at_ms: None,
                recur: None,
                rollover: Rollover::None,
            },
        }
    );
}

#[test]
fn roles() {
    let define = pb::DefineRoleRequest {
        request_id: "d".into(),
        sent_at_ms: 1,
        root: path("acme"),
        name: "engineer".into(),
        limits: vec![
            monthly_hard("usd", 50).into(),
            LimitSpec {
                window: Window::FirstUse {
                    duration_ms: 7 * 86_400_000,
                },
                mode: LimitMode::Soft,
                ..monthly_hard("usd", 10)
            }
            .into(),
        ],
    };
    assert_eq!(
        op(define),
        Op::DefineRole {
            root: "acme".into(),
            name: "engineer".into(),
            limits: vec![
                monthly_hard("usd", 50),
                LimitSpec {
                    window: Window::FirstUse {
                        duration_ms: 7 * 86_400_000,
                    },
                    mode: LimitMode::Soft,
                    ..monthly_hard("usd", 10)
                },
            ],
        }
    );
    let remove = pb::RemoveRoleRequest {
        request_id: "rr".into(),
        sent_at_ms: 1,
        root: id(1),
        name: "engineer".into(),
    };
    assert_eq!(
        op(remove),
        Op::RemoveRole {
            root: NodeRef::Id(1),
            name: "engineer".into(),
        }
    );
    let assign = pb::AssignRolesRequest {
        request_id: "a".into(),
        sent_at_ms: 1,
        node: path("acme/alice"),
        roles: vec!["engineer".into(), "lead".into()],
    };
    assert_eq!(
        op(assign),
        Op::AssignRoles {
            node: "acme/alice".into(),
            roles: vec!["engineer".into(), "lead".into()],
        }
    );
    for (wire, core) in [
        (
            pb::RoleResolution::MostRestrictive,
            RoleResolution::MostRestrictive,
        ),
        (
            pb::RoleResolution::MostPermissive,
            RoleResolution::MostPermissive,
        ),
    ] {
        let set = pb::SetRoleResolutionRequest {
            request_id: "s".into(),
            sent_at_ms: 1,
            root: id(1),
            resolution: wire.into(),
        };
        assert_eq!(
            op(set),
            Op::SetRoleResolution {
                root: NodeRef::Id(1),
                resolution: core,
            }
        );
    }
}

#[test]
fn prices() {
    let price = PriceSpec {
        provider: "openai".into(),
        model: "gpt-5".into(),
        currency: "usd".into(),
        input_per_mtok: 1_250_000,
        output_per_mtok: 10_000_000,
        cached_input_per_mtok: 125_000,
        reasoning_per_mtok: 10_000_000,
    };
    let set = pb::SetPriceRequest {
        request_id: "p".into(),
        sent_at_ms: 1,
        root: path("acme"),
        price: Some(price.clone().into()),
    };
    assert_eq!(
        op(set),
        Op::SetPrice {
            root: "acme".into(),
            price,
        }
    );
    let remove = pb::RemovePriceRequest {
        request_id: "p2".into(),
        sent_at_ms: 1,
        root: path("acme"),
        provider: "openai".into(),
        model: "gpt-5".into(),
        currency: "usd".into(),
    };
    assert_eq!(
        op(remove),
        Op::RemovePrice {
            root: "acme".into(),
            provider: "openai".into(),
            model: "gpt-5".into(),
            currency: "usd".into(),
        }
    );
}

#[test]
fn config_patch_keeps_absent_fields_absent() {
    let set = pb::SetConfigRequest {
        request_id: "cfg".into(),
        sent_at_ms: 1,
        depth_max: Some(20),
        request_retention_ms: None,
        hold_ttl_ms_min: Some(500),
        hold_ttl_ms_max: None,
        default_root_cap_major: Some(0),
    };
    assert_eq!(
        op(set),
        Op::SetConfig(ConfigPatch {
            depth_max: Some(20),
            request_retention_ms: None,
            hold_ttl_ms_min: Some(500),
            hold_ttl_ms_max: None,
            default_root_cap_major: Some(0),
        })
    );
}

// ---- the command envelope ----------------------------------------------------------------

#[test]
fn sent_at_ms_is_required_and_kept() {
    let release = |sent_at_ms| pb::ReleaseRequest {
        request_id: "req-7".into(),
        sent_at_ms,
        reservation_id: 1,
    };
    let missing = release(0)
        .into_command()
        .expect_err("a request without its first time");
    assert!(missing.to_string().contains("sent_at_ms"), "{missing}");
    let kept = release(41_000).into_command().expect("converts");
    assert_eq!(
        kept.request.expect("has request meta").sent_at_ms,
        41_000,
        "a retry keeps the time of its first attempt"
    );
}

#[test]
fn empty_request_id_is_refused() {
    let e = pb::PauseNodeRequest {
        request_id: String::new(),
        sent_at_ms: 1,
        node: id(1),
    }
    .into_command()
    .expect_err("no request id");
    assert_eq!(e.field, "request_id");
}

// ---- building blocks: core → proto → core is the identity -------------------------------

#[test]
fn building_blocks_round_trip() {
    for window in [
        Window::Lifetime,
        Window::Calendar(Period::Hour),
        Window::Calendar(Period::Day),
        Window::Calendar(Period::Week),
        Window::Calendar(Period::Month),
        Window::Calendar(Period::Year),
        Window::Sliding {
            duration_ms: 3_600_000,
        },
        Window::FirstUse {
            duration_ms: 604_800_000,
        },
    ] {
        let wire = pb::Window::from(window);
        assert_eq!(Window::try_from(wire), Ok(window));
    }
    for kind in [
        GrantKind::Included,
        GrantKind::Free,
        GrantKind::Promotional,
        GrantKind::Prepaid,
        GrantKind::Commitment,
        GrantKind::OnDemand,
    ] {
        for rollover in [
            Rollover::None,
            Rollover::CapMultiple(3),
            Rollover::Percent(25),
        ] {
            let spec = GrantSpec {
                currency: "usd".into(),
                amount: 1,
                priority: 9,
                kind,
                effective_at_ms: None,
                expires_at_ms: Some(77),
                recur: Some(Period::Week),
                rollover,
            };
            assert_eq!(
                GrantSpec::try_from(pb::GrantSpec::from(spec.clone())),
                Ok(spec)
            );
        }
    }
    let limit = LimitSpec {
        mode: LimitMode::Soft,
        on_exhausted: OnExhausted::Deny,
        ..monthly_hard("usd", 0)
    };
    assert_eq!(
        LimitSpec::try_from(pb::LimitSpec::from(limit.clone())),
        Ok(limit)
    );
    assert_eq!(Attributes::from(pb::Attributes::from(attrs())), attrs());
    assert_eq!(TokenUsage::from(pb::TokenUsage::from(tokens())), tokens());
}

// ---- malformed requests ------------------------------------------------------------------

#[test]
fn missing_node_ref_is_refused() {
    let e = err(pb::CloseNodeRequest {
        request_id: "c".into(),
        sent_at_ms: 1,
        node: None,
    });
    assert_eq!(e.field, "node");
    assert!(e.to_string().contains("`node` is required"), "{e}");

    // A NodeRef message with neither id nor path is as bad as none.
    let e = err(pb::MoveNodeRequest {
        request_id: "m".into(),
        sent_at_ms: 1,
        node: id(3),
        new_parent: Some(pb::NodeRef { node: None }),
    });
    assert_eq!(e.field, "new_parent");
    assert!(e.message.contains("`id` or `path`"), "{e}");
}

#[test]
fn missing_amount_or_actual_oneof_is_refused() {
    let e = err(pb::ReserveRequest {
        request_id: "r".into(),
        node: id(1),
        currency: "usd".into(),
        amount: None,
        ttl_ms: 1_000,
        ..Default::default()
    });
    assert_eq!(e.field, "amount");
    assert!(e.message.contains("`exact` or `range`"), "{e}");

    let e = err(pb::CommitRequest {
        request_id: "c".into(),
        reservation_id: 1,
        actual: None,
        ..Default::default()
    });
    assert_eq!(e.field, "actual");

    let e = err(pb::ChargeRequest {
        request_id: "c".into(),
        node: id(1),
        actual: None,
        ..Default::default()
    });
    assert_eq!(e.field, "actual");
}

#[test]
fn unknown_enum_values_are_refused() {
    let limit = |mode: i32, calendar: i32| pb::SetLimitRequest {
        request_id: "l".into(),
        node: id(1),
        limit: Some(pb::LimitSpec {
            currency: "usd".into(),
            amount: 1,
            window: Some(pb::Window {
                kind: Some(pb::window::Kind::Calendar(calendar)),
            }),
            mode,
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = err(limit(99, pb::Period::Day.into()));
    assert_eq!(e.field, "limit.mode");
    assert!(e.message.contains("unknown value 99"), "{e}");

    let e = err(limit(pb::LimitMode::Hard.into(), 42));
    assert_eq!(e.field, "limit.window.calendar");

    // PERIOD_UNSPECIFIED names no period: refused, not guessed.
    let e = err(limit(pb::LimitMode::Hard.into(), 0));
    assert_eq!(e.field, "limit.window.calendar");
    assert!(e.message.contains("required"), "{e}");

    let grant = |kind: i32| pb::AddGrantRequest {
        request_id: "g".into(),
        node: id(1),
        grant: Some(pb::GrantSpec {
            currency: "usd".into(),
            amount: 1,
            kind,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(err(grant(77)).field, "grant.kind");
    assert_eq!(
        err(grant(0)).field,
        "grant.kind",
        "a grant kind is required"
    );

    let e = err(pb::SetRoleResolutionRequest {
        request_id: "s".into(),
        root: id(1),
        resolution: 5,
        ..Default::default()
    });
    assert_eq!(e.field, "resolution");
}

#[test]
fn missing_nested_messages_and_oneofs_name_their_path() {
    let e = err(pb::SetLimitRequest {
        request_id: "l".into(),
        node: id(1),
        limit: None,
        ..Default::default()
    });
    assert_eq!(e.field, "limit");

    let e = err(pb::RemoveLimitRequest {
        request_id: "l".into(),
        node: id(1),
        currency: "usd".into(),
        window: Some(pb::Window { kind: None }),
        ..Default::default()
    });
    assert_eq!(e.field, "window");
    assert!(e.message.contains("lifetime"), "{e}");

    let e = err(pb::DefineRoleRequest {
        request_id: "d".into(),
        root: id(1),
        name: "r".into(),
        limits: vec![
            monthly_hard("usd", 1).into(),
            pb::LimitSpec {
                window: None,
                ..monthly_hard("usd", 1).into()
            },
        ],
        ..Default::default()
    });
    assert_eq!(e.field, "limits[1].window");

    let e = err(pb::SetRateLimitRequest {
        request_id: "r".into(),
        node: id(1),
        rate: Some(pb::RateLimitSpec {
            key: "*".into(),
            kind: Some(pb::RateKind { kind: None }),
            amount: 1,
            period_ms: 1,
        }),
        ..Default::default()
    });
    assert_eq!(e.field, "rate.kind");

    let e = err(pb::AddGrantRequest {
        request_id: "g".into(),
        node: id(1),
        grant: Some(pb::GrantSpec {
            kind: pb::GrantKind::Free.into(),
            rollover: Some(pb::Rollover { kind: None }),
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(e.field, "grant.rollover");

    let e = err(pb::SetPriceRequest {
        request_id: "p".into(),
        root: id(1),
        price: None,
        ..Default::default()
    });
    assert_eq!(e.field, "price");
}

#[test]
fn numbers_too_wide_for_the_core_type_are_refused_not_truncated() {
    let e = err(pb::SetLimitRequest {
        request_id: "l".into(),
        node: id(1),
        limit: Some(pb::LimitSpec {
            thresholds: vec![50, 256 + 50],
            ..monthly_hard("usd", 1).into()
        }),
        ..Default::default()
    });
    assert_eq!(e.field, "limit.thresholds");

    let e = err(pb::CreateNodeRequest {
        request_id: "n".into(),
        name: "acme".into(),
        kind: "org".into(),
        root: Some(pb::RootSpec {
            currencies: vec![pb::CurrencySpec {
                code: "usd".into(),
                scale: 262,
                funded: false,
            }],
            no_default_cap: false,
        }),
        ..Default::default()
    });
    assert_eq!(e.field, "root.currencies[0].scale");

    let e = err(pb::SetConfigRequest {
        request_id: "c".into(),
        depth_max: Some(300),
        ..Default::default()
    });
    assert_eq!(e.field, "depth_max");
}

#[test]
fn convert_errors_are_invalid_argument() {
    let e = err(pb::ResumeNodeRequest {
        request_id: "r".into(),
        sent_at_ms: 1,
        node: None,
    });
    let status = tonic::Status::from(e);
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("`node`"), "{}", status.message());
}

// ---- reads -------------------------------------------------------------------------------

#[test]
fn read_targets() {
    let show = pb::ShowRequest {
        node: path("acme/ml"),
        allow_stale: false,
    };
    assert_eq!(show.node_ref(), Ok("acme/ml".into()));
    let usage = pb::UsageRequest {
        node: None,
        allow_stale: true,
    };
    assert_eq!(usage.node_ref().map_err(|e| e.field), Err("node".into()));

    let holds = pb::HoldsRequest {
        target: Some(pb::holds_request::Target::ReservationId(5)),
        allow_stale: false,
    };
    assert_eq!(HoldsQuery::try_from(&holds), Ok(HoldsQuery::Reservation(5)));
    let holds = pb::HoldsRequest {
        target: Some(pb::holds_request::Target::Node(NodeRef::Id(2).into())),
        allow_stale: false,
    };
    assert_eq!(
        HoldsQuery::try_from(&holds),
        Ok(HoldsQuery::Node(NodeRef::Id(2)))
    );
    let grants = pb::GrantsRequest {
        target: None,
        allow_stale: false,
    };
    assert_eq!(
        GrantsQuery::try_from(&grants).map_err(|e| e.field),
        Err("target".into())
    );
    let grants = pb::GrantsRequest {
        target: Some(pb::grants_request::Target::GrantId(8)),
        allow_stale: false,
    };
    assert_eq!(GrantsQuery::try_from(&grants), Ok(GrantsQuery::Grant(8)));
}
