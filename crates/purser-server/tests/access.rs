//! Tokens over the wire (R-SAFE): every RPC and the HTTP route, called with each kind of bad
//! or insufficient token, answers UNAUTHENTICATED or PERMISSION_DENIED and changes nothing;
//! the tokens that may make a call can. One real member (RocksDB, gRPC) started as
//! `purser dev` starts it, so its first token comes from its data directory.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use purser_client::{pb, Client, ClientConfig, ClientError};
use purser_server::serve::{dev_config, Server};
use purser_testkit::free_addr;
use tonic::Code;

fn path(p: &str) -> Option<pb::NodeRef> {
    Some(pb::NodeRef {
        node: Some(pb::node_ref::Node::Path(p.into())),
    })
}

fn id(n: u64) -> Option<pb::NodeRef> {
    Some(pb::NodeRef {
        node: Some(pb::node_ref::Node::Id(n)),
    })
}

/// Who calls: no token, a malformed one, one the cluster never made, and tokens the test made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    Nobody,
    Malformed,
    Unknown,
    Expired,
    Revoked,
    ClusterAdmin,
    AcmeAdmin,
    TeamAdmin,
    TeamEditor,
    TeamViewer,
    BetaAdmin,
}

use Who::*;

const EVERYONE: [Who; 11] = [
    Nobody,
    Malformed,
    Unknown,
    Expired,
    Revoked,
    ClusterAdmin,
    AcmeAdmin,
    TeamAdmin,
    TeamEditor,
    TeamViewer,
    BetaAdmin,
];

fn unauthenticated(who: Who) -> bool {
    matches!(who, Nobody | Malformed | Unknown | Expired | Revoked)
}

struct World {
    _dir: tempfile::TempDir,
    server: Option<Server>,
    endpoint: String,
    tokens: std::collections::BTreeMap<Who, String>,
    token_ids: std::collections::BTreeMap<Who, u64>,
    acme_hold: u64,
    beta_hold: u64,
    beta_grant: u64,
    beta_webhook: u64,
}

impl World {
    fn client(&self, who: Who) -> Client {
        let token = match who {
            Nobody => None,
            Malformed => Some("not-a-purser-token".to_owned()),
            Unknown => Some(format!("purser_{}", "0".repeat(64))),
            other => Some(self.tokens[&other].clone()),
        };
        let config = ClientConfig {
            token,
            call_timeout: Duration::from_secs(10),
            ..ClientConfig::default()
        };
        Client::new([self.endpoint.clone()], config).expect("client")
    }

    async fn digest(&self) -> String {
        self.client(ClusterAdmin)
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .state_digest
    }
}

async fn create_token(
    admin: &Client,
    scope: &str,
    access: pb::Access,
    ttl_ms: u64,
) -> (String, u64) {
    let made = admin
        .create_token(pb::CreateTokenRequest {
            scope: scope.into(),
            access: access as i32,
            name: format!("{scope} {access:?}"),
            ttl_ms,
            ..Default::default()
        })
        .await
        .expect("create token");
    (made.token.clone(), made.token_id)
}

fn root(name: &str) -> pb::CreateNodeRequest {
    pb::CreateNodeRequest {
        parent: None,
        name: name.into(),
        kind: "org".into(),
        root: Some(pb::RootSpec {
            currencies: vec![pb::CurrencySpec {
                code: "usd".into(),
                scale: 0,
                funded: true,
            }],
            no_default_cap: true,
        }),
        ..Default::default()
    }
}

fn child(parent: &str, name: &str) -> pb::CreateNodeRequest {
    pb::CreateNodeRequest {
        parent: path(parent),
        name: name.into(),
        kind: "team".into(),
        ..Default::default()
    }
}

fn grant(node: &str, amount: i64) -> pb::AddGrantRequest {
    pb::AddGrantRequest {
        node: path(node),
        grant: Some(pb::GrantSpec {
            currency: "usd".into(),
            amount,
            priority: 1,
            kind: pb::GrantKind::Prepaid as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn reserve(node: &str) -> pb::ReserveRequest {
    pb::ReserveRequest {
        node: path(node),
        currency: "usd".into(),
        amount: Some(pb::reserve_request::Amount::Exact(1)),
        ttl_ms: 600_000,
        ..Default::default()
    }
}

fn granted(answer: &pb::ReserveResponse) -> u64 {
    match &answer.result {
        Some(pb::reserve_response::Result::Granted(g)) => g.reservation_id,
        other => panic!("not granted: {other:?}"),
    }
}

async fn world() -> World {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = dev_config(dir.path().join("data"), free_addr());
    config.node.peer_listen = free_addr();
    config.http_listen = None;
    // No ticks: the state digest then changes only with what the calls do.
    config.node.tick_ms = 3_600_000;
    // The webhook below points at a closed loopback port.
    config.node.webhook_allow_private = true;
    let server = Server::start(config).await.expect("start");
    let file = server.admin_token_file.clone().expect("a token file");
    let admin_token = std::fs::read_to_string(file)
        .expect("read")
        .trim()
        .to_owned();
    let mut world = World {
        _dir: dir,
        endpoint: server.client_addr.to_string(),
        server: Some(server),
        tokens: [(ClusterAdmin, admin_token)].into(),
        token_ids: Default::default(),
        acme_hold: 0,
        beta_hold: 0,
        beta_grant: 0,
        beta_webhook: 0,
    };
    let admin = world.client(ClusterAdmin);
    for request in [
        root("acme"),
        child("acme", "team"),
        child("acme/team", "alice"),
        root("beta"),
    ] {
        admin.create_node(request).await.expect("create");
    }
    admin.add_grant(grant("acme", 1_000)).await.expect("grant");
    world.beta_grant = admin
        .add_grant(grant("beta", 1_000))
        .await
        .expect("grant")
        .grant_id;
    world.acme_hold = granted(
        &admin
            .reserve(reserve("acme/team/alice"))
            .await
            .expect("reserve"),
    );
    world.beta_hold = granted(&admin.reserve(reserve("beta")).await.expect("reserve"));
    world.beta_webhook = admin
        .add_webhook(pb::AddWebhookRequest {
            root: path("beta"),
            url: "http://127.0.0.1:9/hook".into(),
            secret: "0123456789abcdef".into(),
            kinds: vec!["usage".into()],
            ..Default::default()
        })
        .await
        .expect("webhook")
        .webhook_id;
    use pb::Access::*;
    // Lives 1 ms from its creation: the commands applied after it move the replicated clock
    // past that.
    let (expired, _) = create_token(&admin, "acme/team", Editor, 1).await;
    world.tokens.insert(Expired, expired);
    for (who, scope, access) in [
        (AcmeAdmin, "acme", Admin),
        (TeamAdmin, "acme/team", Admin),
        (TeamEditor, "acme/team", Editor),
        (TeamViewer, "acme/team", Viewer),
        (BetaAdmin, "beta", Admin),
    ] {
        let (token, id) = create_token(&admin, scope, access, 0).await;
        world.tokens.insert(who, token);
        world.token_ids.insert(who, id);
    }
    let (revoked, revoked_id) = create_token(&admin, "acme/team", Editor, 0).await;
    world.tokens.insert(Revoked, revoked);
    admin
        .revoke_token(pb::RevokeTokenRequest {
            token_id: revoked_id,
            ..Default::default()
        })
        .await
        .expect("revoke");
    world
}

type Call = Box<dyn Fn(Client) -> Pin<Box<dyn Future<Output = Result<(), ClientError>> + Send>>>;

/// `f(client)` as a boxed call that keeps only whether it succeeded.
fn call<F, Fut, T>(f: F) -> Call
where
    F: Fn(Client) -> Fut + 'static,
    Fut: Future<Output = Result<T, ClientError>> + Send + 'static,
{
    Box::new(move |client| {
        let answer = f(client);
        Box::pin(async move { answer.await.map(|_| ()) })
    })
}

/// Every RPC of the client port (but Init and Bootstrap, which need no token, and the
/// mutations that would change what later rows need), with who may make it.
fn calls(w: &World) -> Vec<(&'static str, Vec<Who>, Call)> {
    let (acme_hold, beta_hold, beta_grant, beta_webhook) =
        (w.acme_hold, w.beta_hold, w.beta_grant, w.beta_webhook);
    let team_viewers = vec![ClusterAdmin, AcmeAdmin, TeamAdmin, TeamEditor, TeamViewer];
    let team_editors = vec![ClusterAdmin, AcmeAdmin, TeamAdmin, TeamEditor];
    let beta_viewers = vec![ClusterAdmin, BetaAdmin];
    vec![
        (
            "show",
            team_viewers.clone(),
            call(|c| async move {
                c.show(pb::ShowRequest {
                    node: path("acme/team/alice"),
                    allow_stale: false,
                })
                .await
            }),
        ),
        (
            "show by id",
            beta_viewers.clone(),
            call(|c| async move {
                c.show(pb::ShowRequest {
                    node: id(4),
                    allow_stale: false,
                })
                .await
            }),
        ),
        (
            "usage",
            team_viewers.clone(),
            call(|c| async move {
                c.usage(pb::UsageRequest {
                    node: path("acme/team"),
                    allow_stale: false,
                })
                .await
            }),
        ),
        (
            "holds of a node",
            beta_viewers.clone(),
            call(|c| async move {
                use pb::holds_request::Target;
                c.holds(pb::HoldsRequest {
                    target: Some(Target::Node(pb::NodeRef {
                        node: Some(pb::node_ref::Node::Path("beta".into())),
                    })),
                    allow_stale: false,
                })
                .await
            }),
        ),
        (
            "a hold by id",
            beta_viewers.clone(),
            call(move |c| async move {
                use pb::holds_request::Target;
                c.holds(pb::HoldsRequest {
                    target: Some(Target::ReservationId(beta_hold)),
                    allow_stale: false,
                })
                .await
            }),
        ),
        (
            "a grant by id",
            beta_viewers.clone(),
            call(move |c| async move {
                use pb::grants_request::Target;
                c.grants(pb::GrantsRequest {
                    target: Some(Target::GrantId(beta_grant)),
                    allow_stale: false,
                })
                .await
            }),
        ),
        (
            "report of beta",
            beta_viewers.clone(),
            call(|c| async move {
                let filters = pb::ReportFilters {
                    node: path("beta"),
                    ..Default::default()
                };
                c.report(pb::ReportRequest {
                    from_ms: purser_client::now_ms() - 3_600_000,
                    filters: Some(filters),
                    ..Default::default()
                })
                .await
            }),
        ),
        (
            "watch of beta",
            beta_viewers.clone(),
            call(|c| async move {
                c.watch(pb::WatchRequest {
                    from_index: 1,
                    kinds: vec![],
                    node: path("beta"),
                })
                .await
            }),
        ),
        (
            "reserve",
            team_editors.clone(),
            call(|c| async move { c.reserve(reserve("acme/team/alice")).await }),
        ),
        (
            "charge in beta",
            vec![ClusterAdmin, BetaAdmin],
            call(|c| async move {
                let request = pb::ChargeRequest {
                    node: path("beta"),
                    currency: "usd".into(),
                    actual: Some(pb::charge_request::Actual::Amount(1)),
                    ..Default::default()
                };
                c.charge(request).await
            }),
        ),
        (
            "settle a hold of acme",
            team_editors.clone(),
            call(move |c| async move {
                let request = pb::CommitRequest {
                    reservation_id: acme_hold,
                    actual: Some(pb::commit_request::Actual::Amount(1)),
                    ..Default::default()
                };
                c.settle(request).await
            }),
        ),
        (
            "release a hold of beta",
            vec![ClusterAdmin, BetaAdmin],
            call(move |c| async move {
                c.release(pb::ReleaseRequest {
                    reservation_id: beta_hold,
                    ..Default::default()
                })
                .await
            }),
        ),
        (
            "create a node below the team",
            vec![ClusterAdmin, AcmeAdmin, TeamAdmin],
            call(|c| async move { c.create_node(child("acme/team", "bob")).await }),
        ),
        (
            "raise the team's own cap",
            vec![ClusterAdmin, AcmeAdmin],
            call(|c| async move {
                let limit = pb::LimitSpec {
                    currency: "usd".into(),
                    amount: 1_000_000,
                    window: Some(pb::Window {
                        kind: Some(pb::window::Kind::Lifetime(pb::window::Lifetime {})),
                    }),
                    ..Default::default()
                };
                c.set_limit(pb::SetLimitRequest {
                    node: path("acme/team"),
                    limit: Some(limit),
                    ..Default::default()
                })
                .await
            }),
        ),
        (
            "credit the team itself",
            vec![ClusterAdmin, AcmeAdmin],
            call(|c| async move { c.add_grant(grant("acme/team", 5)).await }),
        ),
        (
            "pause acme (a parent)",
            vec![ClusterAdmin],
            call(|c| async move {
                c.pause_node(pb::PauseNodeRequest {
                    node: path("acme"),
                    ..Default::default()
                })
                .await
            }),
        ),
        (
            "create a root",
            vec![ClusterAdmin],
            call(|c| async move { c.create_node(root("gamma")).await }),
        ),
        (
            "set a price",
            vec![ClusterAdmin],
            call(|c| async move {
                let price = pb::PriceSpec {
                    provider: "p".into(),
                    model: "m".into(),
                    currency: "usd".into(),
                    ..Default::default()
                };
                c.set_price(pb::SetPriceRequest {
                    root: path("acme"),
                    price: Some(price),
                    ..Default::default()
                })
                .await
            }),
        ),
        (
            "set the configuration",
            vec![ClusterAdmin],
            call(|c| async move { c.set_config(pb::SetConfigRequest::default()).await }),
        ),
        (
            "list beta's webhooks",
            vec![ClusterAdmin, BetaAdmin],
            call(|c| async move {
                c.list_webhooks(pb::ListWebhooksRequest { root: path("beta") })
                    .await
            }),
        ),
        (
            "remove beta's webhook",
            vec![ClusterAdmin, BetaAdmin],
            call(move |c| async move {
                c.remove_webhook(pb::RemoveWebhookRequest {
                    webhook_id: beta_webhook,
                    ..Default::default()
                })
                .await
            }),
        ),
        (
            "a viewer token for beta",
            vec![ClusterAdmin, BetaAdmin],
            call(|c| async move {
                c.create_token(pb::CreateTokenRequest {
                    scope: "beta".into(),
                    access: pb::Access::Viewer as i32,
                    ..Default::default()
                })
                .await
            }),
        ),
        (
            "list tokens of acme",
            vec![ClusterAdmin, AcmeAdmin],
            call(|c| async move {
                c.list_tokens(pb::ListTokensRequest {
                    scope: "acme".into(),
                })
                .await
            }),
        ),
        (
            "cluster status",
            vec![ClusterAdmin],
            call(|c| async move { c.status(pb::StatusRequest {}).await }),
        ),
        (
            "cluster stats",
            vec![ClusterAdmin],
            call(|c| async move { c.stats(pb::StatsRequest { reset: false }).await }),
        ),
        (
            "a snapshot",
            vec![ClusterAdmin],
            call(|c| async move { c.snapshot(pb::SnapshotRequest { purge: false }).await }),
        ),
        (
            "remove a member",
            vec![ClusterAdmin],
            call(|c| async move { c.remove(pb::RemoveRequest { id: 99 }).await }),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_call_refuses_who_may_not_make_it_and_changes_nothing() {
    let mut w = world().await;
    let mut refused = 0;
    for (name, allowed, call) in calls(&w) {
        for who in EVERYONE.into_iter().filter(|who| !allowed.contains(who)) {
            let before = w.digest().await;
            let error = call(w.client(who))
                .await
                .expect_err(&format!("{name}: {who:?} must be refused"));
            let want = if unauthenticated(who) {
                Code::Unauthenticated
            } else {
                Code::PermissionDenied
            };
            assert_eq!(error.code(), want, "{name} by {who:?}: {error}");
            assert!(!error.to_string().is_empty());
            assert_eq!(
                w.digest().await,
                before,
                "{name} by {who:?} changed the state"
            );
            refused += 1;
        }
        // One of those who may, can (the state may change: later rows do not depend on it).
        if let Some(who) = allowed.last() {
            call(w.client(*who))
                .await
                .unwrap_or_else(|e| panic!("{name} by {who:?} must be allowed: {e}"));
        }
    }
    assert!(refused > 150, "only {refused} refusals checked");
    if let Some(server) = w.server.take() {
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_judges_each_item_alone() {
    let mut w = world().await;
    // Init needs no token, and so makes nothing on a cluster that has its first token.
    let again = w
        .client(Nobody)
        .init(pb::InitRequest {
            members: [(1, pb::MemberAddr::default())].into(),
        })
        .await
        .expect_err("initialized already");
    assert_eq!(again.code(), Code::FailedPrecondition, "{again}");
    // A retry of a release that took effect is its duplicate, though the hold is gone.
    let release = pb::ReleaseRequest {
        request_id: "release-once".into(),
        sent_at_ms: purser_client::now_ms(),
        reservation_id: w.acme_hold,
    };
    let editor = w.client(TeamEditor);
    let first = editor.release(release.clone()).await.expect("release");
    assert!(!first.duplicate);
    let retry = editor
        .release(release)
        .await
        .expect("the retry is answered");
    assert!(retry.duplicate, "{retry:?}");
    // Each answer names the token it acted for.
    let editor_id = Some(w.token_ids[&TeamEditor]);
    assert_eq!((first.actor, retry.actor), (editor_id, editor_id));
    let by_admin = w
        .client(TeamAdmin)
        .create_node(child("acme/team", "bob"))
        .await
        .expect("create");
    assert_eq!(by_admin.actor, Some(w.token_ids[&TeamAdmin]));
    assert_ne!(editor_id, by_admin.actor);
    let items = vec![
        pb::BatchItem {
            op: Some(pb::batch_item::Op::Reserve(pb::ReserveRequest {
                request_id: "mine".into(),
                sent_at_ms: purser_client::now_ms(),
                ..reserve("acme/team/alice")
            })),
        },
        pb::BatchItem {
            op: Some(pb::batch_item::Op::Reserve(pb::ReserveRequest {
                request_id: "theirs".into(),
                sent_at_ms: purser_client::now_ms(),
                ..reserve("beta")
            })),
        },
    ];
    let answer = w
        .client(TeamEditor)
        .batch(pb::BatchRequest { items })
        .await
        .expect("batch");
    use pb::batch_item_result::Result as Item;
    assert!(
        matches!(answer.results[0].result, Some(Item::Reserve(_))),
        "{answer:?}"
    );
    match &answer.results[1].result {
        Some(Item::Error(e)) => assert_eq!(e.code, Code::PermissionDenied as i32, "{e:?}"),
        other => panic!("the item in beta must be refused: {other:?}"),
    }
    let spend = pb::ChargeRequest {
        node: path("acme/team/alice"),
        currency: "usd".into(),
        actual: Some(pb::charge_request::Actual::Amount(1)),
        ..Default::default()
    };
    w.client(TeamEditor)
        .charge(spend.clone())
        .await
        .expect("charge");
    let beta_spend = pb::ChargeRequest {
        node: path("beta"),
        ..spend
    };
    w.client(BetaAdmin)
        .charge(beta_spend)
        .await
        .expect("charge");
    // A watch without a node is the scope's: only events of acme/team reach the team.
    let mut stream = w
        .client(TeamViewer)
        .watch(pb::WatchRequest {
            from_index: 1,
            kinds: vec![],
            node: None,
        })
        .await
        .expect("watch");
    let mut seen = Vec::new();
    while let Ok(Some(Ok(event))) =
        tokio::time::timeout(Duration::from_millis(500), stream.message())
            .await
            .map(|m| m.transpose())
    {
        seen.push(event);
    }
    assert!(!seen.is_empty(), "the team's own events are visible");
    let beta = w
        .client(ClusterAdmin)
        .show(pb::ShowRequest {
            node: path("beta"),
            allow_stale: false,
        })
        .await
        .expect("show")
        .node
        .expect("node")
        .id;
    assert!(seen.iter().all(|e| e.node_id != beta), "{seen:?}");
    assert!(
        seen.iter().any(|e| e.token_id != 0),
        "events name their token"
    );
    if let Some(server) = w.server.take() {
        server.stop().await;
    }
}
