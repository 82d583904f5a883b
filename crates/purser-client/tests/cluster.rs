//! The typed client against real members (`purser_server::serve` in this process): request ids
//! filled in and deduplicated, redirects to the leader, per-member calls and the `Budget`
//! handle.

use std::time::{Duration, Instant};

use purser_client::{
    health, pb, Acknowledged, Budget, Client, ClientConfig, Reserved, LEADER_METADATA,
};
use purser_server::serve::{dev_config, Server};
use purser_testkit::free_addr;
use tonic::Code;

fn path(p: &str) -> Option<pb::NodeRef> {
    Some(pb::NodeRef {
        node: Some(pb::node_ref::Node::Path(p.into())),
    })
}

struct Cluster {
    _dir: tempfile::TempDir,
    servers: Vec<Server>,
    addrs: Vec<String>,
    /// The `/` admin token: written by a lone member that bootstraps itself, answered by
    /// `Init` to a larger cluster.
    token: String,
}

impl Cluster {
    /// `size` members with ids 1..=size; one member bootstraps itself, several are
    /// initialized through the client.
    async fn start(size: u64) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut servers = Vec::new();
        for id in 1..=size {
            let mut config = dev_config(dir.path().join(format!("n{id}")), free_addr());
            config.node.id = id;
            config.node.peer_listen = free_addr();
            config.node.heartbeat_ms = 50;
            config.node.election_timeout_min_ms = 300;
            config.node.election_timeout_max_ms = 600;
            config.bootstrap_single = size == 1;
            config.http_listen = None;
            servers.push(Server::start(config).await.expect("start"));
        }
        let addrs = servers.iter().map(|s| s.client_addr.to_string()).collect();
        let token = match &servers[0].admin_token_file {
            Some(file) => std::fs::read_to_string(file)
                .expect("admin.token")
                .trim()
                .to_owned(),
            None => String::new(),
        };
        let mut cluster = Cluster {
            _dir: dir,
            servers,
            addrs,
            token,
        };
        if size > 1 {
            cluster.token = cluster.init().await;
        }
        cluster
    }

    fn config(&self) -> ClientConfig {
        ClientConfig {
            token: Some(self.token.clone()),
            call_timeout: Duration::from_secs(20),
            ..ClientConfig::default()
        }
    }

    async fn init(&self) -> String {
        let members = self
            .servers
            .iter()
            .zip(1..)
            .map(|(server, id)| {
                let addr = pb::MemberAddr {
                    peer_addr: server.node.peer_addr().to_string(),
                    client_addr: server.client_addr.to_string(),
                };
                (id, addr)
            })
            .collect();
        self.client()
            .init(pb::InitRequest { members })
            .await
            .expect("init")
            .admin_token
    }

    fn client(&self) -> Client {
        Client::new(self.addrs.clone(), self.config()).expect("client")
    }

    /// The address of a member that is not the leader, once a leader is known.
    async fn follower(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for addr in &self.addrs {
                let member = Client::member(addr.clone(), self.config()).expect("client");
                let status = member.status(pb::StatusRequest {}).await.expect("status");
                let knows_leader = status.leader_id.is_some();
                if knows_leader && status.role == pb::RaftRole::Follower as i32 {
                    return addr.clone();
                }
            }
            assert!(Instant::now() < deadline, "no follower that knows a leader");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        for server in self.servers {
            server.stop().await;
        }
    }
}

/// Root `acme` (usd, scale 0) with a lifetime hard cap of `cap`, and its child `acme/team`.
async fn setup_tree(client: &Client, cap: i64) {
    client
        .create_node(pb::CreateNodeRequest {
            name: "acme".into(),
            kind: "org".into(),
            root: Some(pb::RootSpec {
                currencies: vec![pb::CurrencySpec {
                    code: "usd".into(),
                    scale: 0,
                    funded: false,
                }],
                no_default_cap: true,
            }),
            ..Default::default()
        })
        .await
        .expect("create acme");
    client
        .create_node(pb::CreateNodeRequest {
            parent: path("acme"),
            name: "team".into(),
            kind: "team".into(),
            ..Default::default()
        })
        .await
        .expect("create team");
    let lifetime = pb::Window {
        kind: Some(pb::window::Kind::Lifetime(pb::window::Lifetime {})),
    };
    client
        .set_limit(pb::SetLimitRequest {
            node: path("acme"),
            limit: Some(pb::LimitSpec {
                currency: "usd".into(),
                amount: cap,
                window: Some(lifetime),
                mode: pb::LimitMode::Hard as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("cap");
}

fn reserve_request(amount: i64) -> pb::ReserveRequest {
    pb::ReserveRequest {
        node: path("acme/team"),
        currency: "usd".into(),
        amount: Some(pb::reserve_request::Amount::Exact(amount)),
        ttl_ms: 60_000,
        ..Default::default()
    }
}

fn granted(response: &pb::ReserveResponse) -> &pb::Granted {
    match &response.result {
        Some(pb::reserve_response::Result::Granted(g)) => g,
        other => panic!("not granted: {other:?}"),
    }
}

async fn account(client: &Client) -> pb::AccountView {
    let shown = client
        .show(pb::ShowRequest {
            node: path("acme/team"),
            allow_stale: false,
        })
        .await
        .expect("show");
    shown.node.expect("node").accounts[0].clone()
}

async fn open_holds(client: &Client) -> Vec<pb::HoldView> {
    client
        .holds(pb::HoldsRequest {
            target: path("acme/team").map(pb::holds_request::Target::Node),
            allow_stale: false,
        })
        .await
        .expect("holds")
        .holds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filled_in_ids_come_back_and_a_resend_is_a_duplicate() {
    let cluster = Cluster::start(1).await;
    let client = cluster.client();
    setup_tree(&client, 100).await;

    let first = client.reserve(reserve_request(10)).await.expect("reserve");
    assert!(!first.request_id.is_empty(), "a request id was filled in");
    assert!(first.sent_at_ms > 0, "a send time was filled in");
    assert!(!first.duplicate && first.log_index > 0, "{first:?}");
    let reservation_id = granted(&first).reservation_id;

    // The same request with the ids it was sent with: answered, not applied again.
    let mut again = reserve_request(10);
    again.request_id = first.request_id.clone();
    again.sent_at_ms = first.sent_at_ms;
    let second = client.reserve(again).await.expect("resend");
    assert_eq!(second.request_id, first.request_id);
    assert_eq!(second.sent_at_ms, first.sent_at_ms);
    assert!(second.duplicate(), "{second:?}");
    assert_eq!(granted(&second).reservation_id, reservation_id);
    match second.first_outcome().and_then(|f| f.kind.as_ref()) {
        Some(pb::recorded::Kind::Reserved(r)) => assert_eq!(r.reservation_id, reservation_id),
        other => panic!("first outcome: {other:?}"),
    }
    assert_eq!(account(&client).await.held, 10, "held once");

    // The same id with another payload is refused, as the API promises.
    let mut changed = reserve_request(11);
    changed.request_id = first.request_id.clone();
    changed.sent_at_ms = first.sent_at_ms;
    let refused = client
        .reserve(changed)
        .await
        .expect_err("same id, other payload");
    assert_eq!(refused.code(), Code::AlreadyExists);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_redirects_and_a_member_client_stays_put() {
    let cluster = Cluster::start(3).await;
    let follower = cluster.follower().await;

    // Started at a follower, a client follows its redirect to the leader.
    let via_follower = Client::new([follower.clone()], cluster.config()).expect("client");
    setup_tree(&via_follower, 100).await;
    let reserved = via_follower
        .reserve(reserve_request(5))
        .await
        .expect("reserve");
    assert!(granted(&reserved).reservation_id > 0);

    // A member client gets the follower's own answers, and its redirect as a status.
    let member = Client::member(follower.clone(), cluster.config()).expect("client");
    let refused = member
        .reserve(reserve_request(5))
        .await
        .expect_err("a follower does not write");
    let purser_client::ClientError::Status(status) = refused else {
        panic!("not a status: {refused:?}");
    };
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.metadata().get(LEADER_METADATA).is_some(),
        "{status:?}"
    );
    let own = member.status(pb::StatusRequest {}).await.expect("status");
    assert_eq!(
        own.role,
        pb::RaftRole::Follower as i32,
        "answered by the member asked"
    );
    let health = member
        .health_check(health::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health");
    assert_eq!(
        health.status,
        health::health_check_response::ServingStatus::Serving as i32
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_settles_releases_when_dropped_and_types_a_denial() {
    let cluster = Cluster::start(1).await;
    let client = cluster.client();
    setup_tree(&client, 100).await;
    let budget = Budget::new(client.clone(), "acme/team", "usd");

    let Reserved::Granted(hold) = budget.reserve(30).await.expect("reserve") else {
        panic!("denied below the cap");
    };
    assert_eq!(hold.amount(), 30);
    let settled = hold.settle(20).await.expect("settle");
    assert_eq!(settled.settlement.as_ref().map(|s| s.charged), Some(20));
    let after_settle = account(&client).await;
    assert_eq!((after_settle.held, after_settle.spent_total), (0, 20));

    // Dropped unsettled (as on an error in the caller's work): released.
    let dropped = async {
        let Reserved::Granted(hold) = budget.reserve(40).await? else {
            panic!("denied below the cap");
        };
        assert_eq!(account(&client).await.held, 40);
        Err::<(), _>(purser_client::ClientError::BadEndpoint(format!(
            "the work failed while holding {}",
            hold.reservation_id()
        )))
    };
    dropped.await.expect_err("the work failed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !open_holds(&client).await.is_empty() {
        assert!(Instant::now() < deadline, "the dropped hold stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        account(&client).await.spent_total,
        20,
        "a release charges nothing"
    );

    // Above the cap's room: a typed denial, nothing held.
    let Reserved::Denied(denied) = budget.reserve(1_000).await.expect("answered") else {
        panic!("granted above the cap");
    };
    assert_eq!(denied.rule, pb::DenyRule::Cap as i32);
    assert_eq!(denied.node_path, "acme");
    assert_eq!(denied.remaining, 80);

    // A range takes what is left.
    let Reserved::Granted(hold) = budget.reserve_up_to(1, 1_000).await.expect("range") else {
        panic!("denied with room left");
    };
    assert_eq!(hold.amount(), 80);
    let released = hold.release().await.expect("release");
    assert_eq!(released.amount, 80);
    assert!(open_holds(&client).await.is_empty());
    cluster.stop().await;
}
