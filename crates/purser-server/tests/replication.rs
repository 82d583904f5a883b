//! Clusters of real `Server`s (client port + peer port, RocksDB each) in one process, driven
//! through the gRPC API with `purser-client`, as a user would.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use purser_client::{health, pb, Client, ClientConfig, ClientError, Mutated};
use purser_server::node::NodeConfig;
use purser_server::serve::{ServeConfig, Server};
use purser_testkit::free_addr;
use tonic::Code;

struct Member {
    config: ServeConfig,
    server: Option<Server>,
}

struct Cluster {
    dir: tempfile::TempDir,
    members: BTreeMap<u64, Member>,
    /// The `/` admin token `Init` answered.
    token: String,
}

fn member_config(dir: &std::path::Path, id: u64, tune: &dyn Fn(&mut NodeConfig)) -> ServeConfig {
    let client = free_addr();
    let mut node = NodeConfig::new(
        id,
        dir.join(format!("n{id}")),
        free_addr(),
        client.to_string(),
    );
    node.heartbeat_ms = 50;
    node.election_timeout_min_ms = 300;
    node.election_timeout_max_ms = 600;
    tune(&mut node);
    ServeConfig {
        node,
        client_listen: client,
        bootstrap_single: false,
        http_listen: Some("127.0.0.1:0".parse().expect("addr")),
        tls: None,
    }
}

impl Cluster {
    async fn start(size: u64, tune: &dyn Fn(&mut NodeConfig)) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut members = BTreeMap::new();
        for id in 1..=size {
            let config = member_config(dir.path(), id, tune);
            let server = Server::start(config.clone()).await.expect("start");
            members.insert(
                id,
                Member {
                    config,
                    server: Some(server),
                },
            );
        }
        let init = pb::InitRequest {
            members: members
                .iter()
                .map(|(id, m)| {
                    let addr = pb::MemberAddr {
                        peer_addr: m.config.node.peer_listen.to_string(),
                        client_addr: m.config.node.client_addr.clone(),
                    };
                    (*id, addr)
                })
                .collect(),
        };
        let mut cluster = Cluster {
            dir,
            members,
            token: String::new(),
        };
        let answer = cluster.client().init(init).await.expect("init");
        assert!(answer.admin_token.starts_with("purser_"), "{answer:?}");
        cluster.token = answer.admin_token;
        cluster
    }

    fn client(&self) -> Client {
        let endpoints: Vec<String> = self
            .members
            .values()
            .map(|m| m.config.node.client_addr.clone())
            .collect();
        Client::new(
            endpoints,
            ClientConfig {
                token: Some(self.token.clone()),
                call_timeout: Duration::from_secs(20),
                ..Default::default()
            },
        )
        .expect("client")
    }

    fn client_of(&self, id: u64, call_timeout: Duration) -> Client {
        let config = ClientConfig {
            token: Some(self.token.clone()),
            call_timeout,
            request_timeout: call_timeout,
            ..Default::default()
        };
        Client::new([self.members[&id].config.node.client_addr.clone()], config).expect("client")
    }

    async fn status(&self, id: u64) -> Option<pb::StatusResponse> {
        self.members[&id].server.as_ref()?;
        self.client_of(id, Duration::from_secs(2))
            .status(pb::StatusRequest {})
            .await
            .ok()
    }

    async fn leader(&self, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            for id in self.members.keys() {
                if let Some(s) = self.status(*id).await {
                    if s.role == pb::RaftRole::Leader as i32 {
                        return *id;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader within {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn kill(&mut self, id: u64) {
        let server = self
            .members
            .get_mut(&id)
            .expect("member")
            .server
            .take()
            .expect("running");
        server.stop().await;
    }

    /// Starts a killed member again on its data directory and addresses.
    async fn restart(&mut self, id: u64) {
        let member = self.members.get_mut(&id).expect("member");
        assert!(member.server.is_none(), "member {id} is running");
        let server = Server::start(member.config.clone()).await.expect("restart");
        member.server = Some(server);
    }

    /// Every running member applied the same index with the same state digest.
    async fn converged(&self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let mut views = Vec::new();
            for (id, m) in &self.members {
                if m.server.is_some() {
                    views.push(
                        self.status(*id)
                            .await
                            .map(|s| (s.applied_index, s.state_digest)),
                    );
                }
            }
            if views.iter().all(|v| v.is_some()) && views.windows(2).all(|w| w[0] == w[1]) {
                return views[0].clone().expect("present").1;
            }
            assert!(
                Instant::now() < deadline,
                "replicas did not converge: {views:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn path(p: &str) -> Option<pb::NodeRef> {
    Some(pb::NodeRef {
        node: Some(pb::node_ref::Node::Path(p.into())),
    })
}

async fn setup_root(client: &Client, cap: i64) {
    let create = pb::CreateNodeRequest {
        request_id: "create-acme".into(),
        sent_at_ms: purser_client::now_ms(),
        parent: None,
        name: "acme".into(),
        kind: "org".into(),
        tags: vec![],
        root: Some(pb::RootSpec {
            currencies: vec![pb::CurrencySpec {
                code: "usd".into(),
                scale: 6,
                funded: false,
            }],
            no_default_cap: true,
        }),
    };
    client.create_node(create).await.expect("create");
    let limit = pb::SetLimitRequest {
        request_id: "cap-acme".into(),
        sent_at_ms: purser_client::now_ms(),
        node: path("acme"),
        limit: Some(pb::LimitSpec {
            currency: "usd".into(),
            amount: cap,
            window: Some(pb::Window {
                kind: Some(pb::window::Kind::Lifetime(pb::window::Lifetime {})),
            }),
            mode: pb::LimitMode::Hard as i32,
            thresholds: vec![],
            on_exhausted: pb::OnExhausted::Deny as i32,
        }),
    };
    client.set_limit(limit).await.expect("limit");
}

fn reserve_request(id: &str, amount: i64) -> pb::ReserveRequest {
    pb::ReserveRequest {
        request_id: id.into(),
        sent_at_ms: purser_client::now_ms(),
        node: path("acme"),
        currency: "usd".into(),
        amount: Some(pb::reserve_request::Amount::Exact(amount)),
        ttl_ms: 600_000,
        attributes: None,
    }
}

async fn reserve(
    client: &Client,
    request: &pb::ReserveRequest,
) -> Result<pb::ReserveResponse, ClientError> {
    client
        .reserve(request.clone())
        .await
        .map(Mutated::into_inner)
}

fn granted_id(response: &pb::ReserveResponse) -> Option<u64> {
    match &response.result {
        Some(pb::reserve_response::Result::Granted(g)) => Some(g.reservation_id),
        _ => None,
    }
}

async fn held_at_root(client: &Client) -> u64 {
    let show = pb::ShowRequest {
        node: path("acme"),
        allow_stale: false,
    };
    let response = client.show(show).await.expect("show");
    response.node.expect("node").accounts[0].held
}

/// Concurrent clients reserve while the leader is stopped; every acknowledged reservation is
/// there exactly once afterwards, although clients retried with the same request ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_reservations_survive_the_leaders_loss_under_load() {
    let mut cluster = Cluster::start(3, &|_| {}).await;
    setup_root(&cluster.client(), 1_000_000).await;
    let client = Arc::new(cluster.client());
    let mut workers = Vec::new();
    for w in 0..8 {
        let client = client.clone();
        workers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..40 {
                let request = reserve_request(&format!("w{w}-{i}"), 7);
                if let Ok(response) = reserve(&client, &request).await {
                    acked.push((
                        request.request_id.clone(),
                        granted_id(&response).expect("cap is far"),
                    ));
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let old = cluster.leader(Duration::from_secs(5)).await;
    cluster.kill(old).await;
    let mut acked = Vec::new();
    for worker in workers {
        acked.extend(worker.await.expect("worker"));
    }
    let new = cluster.leader(Duration::from_secs(10)).await;
    assert_ne!(new, old);
    assert!(
        acked.len() >= 200,
        "most reservations are acknowledged ({})",
        acked.len()
    );
    // Every acknowledged id is applied once: retrying returns the first reservation id.
    for (id, reservation) in acked.iter().take(40) {
        let again = reserve(&client, &reserve_request(id, 7))
            .await
            .expect("retry");
        assert!(again.duplicate, "{id} is remembered");
        assert_eq!(granted_id(&again), Some(*reservation));
    }
    let mut ids: Vec<u64> = acked.iter().map(|a| a.1).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), acked.len(), "no two requests share a hold");
    // Unacknowledged attempts may have applied too (their outcome was unknown), never twice.
    let held = held_at_root(&client).await;
    assert!(
        held >= 7 * acked.len() as u64 && held <= 7 * 320,
        "held {held}"
    );
    assert_eq!(held % 7, 0);
    cluster.converged(Duration::from_secs(10)).await;
}

/// `Cluster.Snapshot` builds a snapshot covering what the member applied, on the member
/// asked (leader or follower), purges its log when asked, and the cluster keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_on_demand_covers_what_was_applied() {
    let cluster = Cluster::start(3, &|_| {}).await;
    let client = cluster.client();
    setup_root(&client, 1_000_000).await;
    for i in 0..20 {
        reserve(&client, &reserve_request(&format!("s{i}"), 3))
            .await
            .expect("reserve");
    }
    let leader = cluster.leader(Duration::from_secs(5)).await;
    let follower = cluster
        .members
        .keys()
        .copied()
        .find(|&id| id != leader)
        .expect("a follower");
    for (id, purge) in [(follower, false), (leader, true)] {
        let applied = cluster.status(id).await.expect("status").applied_index;
        let r = cluster
            .client_of(id, Duration::from_secs(15))
            .snapshot(pb::SnapshotRequest { purge })
            .await
            .expect("snapshot");
        assert!(r.snapshot_index >= applied, "{r:?} below {applied}");
        let s = cluster.status(id).await.expect("status");
        assert!(s.snapshot_index >= Some(r.snapshot_index), "{s:?}");
    }
    reserve(&client, &reserve_request("after", 3))
        .await
        .expect("a write after the purge");
    cluster.converged(Duration::from_secs(10)).await;
}

/// A new member joins after the leader snapshotted and purged its log: it catches up through a
/// streamed snapshot, becomes a voter, and serves the same state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_member_catches_up_through_a_snapshot() {
    let tune = |c: &mut NodeConfig| {
        c.snapshot_every_entries = 20;
        c.log_kept_after_snapshot = 0;
    };
    let mut cluster = Cluster::start(3, &tune).await;
    let client = cluster.client();
    setup_root(&client, 1_000_000).await;
    for i in 0..60 {
        reserve(&client, &reserve_request(&format!("r{i}"), 3))
            .await
            .expect("reserve");
    }
    let leader = cluster.leader(Duration::from_secs(5)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = cluster.status(leader).await.expect("status");
        if s.snapshot_index.unwrap_or(0) >= 40 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the leader never snapshotted: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let config = member_config(cluster.dir.path(), 4, &tune);
    let server = Server::start(config.clone()).await.expect("start member 4");
    let add = pb::AddLearnerRequest {
        id: 4,
        peer_addr: config.node.peer_listen.to_string(),
        client_addr: config.node.client_addr.clone(),
        blocking: true,
    };
    cluster.members.insert(
        4,
        Member {
            config,
            server: Some(server),
        },
    );
    client.add_learner(add).await.expect("add learner");
    let promoted = client
        .promote(pb::PromoteRequest { id: 4 })
        .await
        .expect("promote");
    assert!(promoted.members.iter().any(|m| m.id == 4 && m.voter));
    let digest = cluster.converged(Duration::from_secs(20)).await;
    let joined = cluster.status(4).await.expect("status of 4");
    assert_eq!(joined.state_digest, digest);
    assert!(
        joined.snapshot_index.is_some(),
        "member 4 was seeded by a snapshot"
    );
    // It serves the same state: a stale read on it sees the 60 holds.
    let show = pb::ShowRequest {
        node: path("acme"),
        allow_stale: true,
    };
    let shown = cluster
        .client_of(4, Duration::from_secs(5))
        .show(show)
        .await
        .expect("show on 4");
    assert_eq!(shown.node.expect("node").accounts[0].held, 180);
}

/// Leadership moves on request and a member leaves, both while clients keep writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_transfer_and_removal_under_load() {
    let mut cluster = Cluster::start(3, &|_| {}).await;
    let client = Arc::new(cluster.client());
    setup_root(&client, 1_000_000).await;
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut acked = 0u64;
            for i in 0..150 {
                if reserve(&client, &reserve_request(&format!("load-{i}"), 1))
                    .await
                    .is_ok()
                {
                    acked += 1;
                }
            }
            acked
        })
    };
    let leader = cluster.leader(Duration::from_secs(5)).await;
    let target = cluster
        .members
        .keys()
        .copied()
        .find(|id| *id != leader)
        .expect("another member");
    let moved = client
        .transfer_leader(pb::TransferLeaderRequest { id: target })
        .await
        .expect("transfer");
    assert_eq!(moved.leader_id, Some(target));
    let removed = client
        .remove(pb::RemoveRequest { id: leader })
        .await
        .expect("remove");
    assert!(!removed.members.iter().any(|m| m.id == leader));
    let acked = writer.await.expect("writer");
    assert_eq!(
        acked, 150,
        "every write succeeded through the transfer and the removal"
    );
    cluster.kill(leader).await;
    cluster.members.remove(&leader);
    assert!(held_at_root(&client).await >= 150);
    cluster.converged(Duration::from_secs(10)).await;
}

/// A member that lost its peers grants nothing: without a quorum no write commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lone_member_grants_nothing() {
    let mut cluster = Cluster::start(3, &|_| {}).await;
    let client = cluster.client();
    setup_root(&client, 1_000_000).await;
    reserve(&client, &reserve_request("before", 5))
        .await
        .expect("reserve");
    let leader = cluster.leader(Duration::from_secs(5)).await;
    let others: Vec<u64> = cluster
        .members
        .keys()
        .copied()
        .filter(|id| *id != leader)
        .collect();
    for id in others {
        cluster.kill(id).await;
    }
    let lone = cluster.client_of(leader, Duration::from_secs(3));
    let attempt = reserve(&lone, &reserve_request("during", 5)).await;
    assert!(
        attempt.is_err(),
        "a minority granted a reservation: {attempt:?}"
    );
    let stale = pb::ShowRequest {
        node: path("acme"),
        allow_stale: true,
    };
    let shown = lone.show(stale).await.expect("stale show");
    assert_eq!(
        shown.node.expect("node").accounts[0].held,
        5,
        "nothing was applied without a quorum"
    );
    // A linearizable read needs a quorum too.
    let strict = pb::ShowRequest {
        node: path("acme"),
        allow_stale: false,
    };
    let read = lone.show(strict).await;
    assert!(read.is_err(), "a lone member confirmed a linearizable read");
}

/// Bad requests get a precise status and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_get_clear_statuses_and_change_nothing() {
    // No ticks: only the test's commands may change the state.
    let cluster = Cluster::start(1, &|c| c.tick_ms = 3_600_000).await;
    let client = cluster.client();
    setup_root(&client, 100).await;
    let before = cluster.converged(Duration::from_secs(5)).await;
    let mut unknown = reserve_request("bad-1", 5);
    unknown.node = path("acme/nobody");
    let mut negative = reserve_request("bad-2", -5);
    negative.currency = "usd".into();
    let mut currency = reserve_request("bad-3", 5);
    currency.currency = "eur".into();
    let mut missing = reserve_request("bad-4", 5);
    missing.amount = None;
    let cases = [
        (unknown, Code::NotFound, "does not exist"),
        (negative, Code::InvalidArgument, "negative"),
        (currency, Code::NotFound, "currency"),
        (missing, Code::InvalidArgument, "amount"),
    ];
    for (request, code, needle) in cases {
        let error = reserve(&client, &request).await.expect_err("refused");
        assert_eq!(error.code(), code, "{}: {error}", request.request_id);
        assert!(
            error.to_string().contains(needle),
            "{}: {error}",
            request.request_id
        );
    }
    let release = client
        .release(pb::ReleaseRequest {
            request_id: "bad-5".into(),
            sent_at_ms: purser_client::now_ms(),
            reservation_id: 999,
        })
        .await
        .expect_err("unknown reservation");
    assert_eq!(release.code(), Code::NotFound);
    let reused = reserve(&client, &reserve_request("cap-acme", 5))
        .await
        .expect_err("id reused");
    assert_eq!(reused.code(), Code::AlreadyExists);
    let after = cluster.converged(Duration::from_secs(5)).await;
    assert_eq!(before, after, "refused requests changed the state");
    assert_eq!(held_at_root(&client).await, 0);
}

/// gRPC health checking answers SERVING for the budget service once a leader is known.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_serving_once_a_leader_is_known() {
    let cluster = Cluster::start(1, &|_| {}).await;
    cluster.leader(Duration::from_secs(5)).await;
    let client = cluster.client_of(1, Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let check = health::HealthCheckRequest {
            service: "purser.v1.Budget".into(),
        };
        let answer = client.health_check(check).await.expect("health check");
        if answer.status == health::health_check_response::ServingStatus::Serving as i32 {
            break;
        }
        assert!(Instant::now() < deadline, "never SERVING: {answer:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn release(client: &Client, id: &str, reservation_id: u64) {
    let request = pb::ReleaseRequest {
        request_id: id.into(),
        sent_at_ms: purser_client::now_ms(),
        reservation_id,
    };
    client.release(request).await.expect("release");
}

async fn fast_denials(cluster: &Cluster, id: u64) -> u64 {
    let stats = cluster
        .client_of(id, Duration::from_secs(5))
        .stats(pb::StatsRequest { reset: false })
        .await
        .expect("stats");
    stats.counters.get("fast_denials").copied().unwrap_or(0)
}

/// Reads and denials that the leader answers without a log entry still see every write
/// acknowledged before them, also on a new leader right after the old one is lost: a full
/// cap denies, an acknowledged release makes room at once, a read sees every hold.
async fn reads_and_denials_stay_linearizable(lease_reads: bool) {
    let mut cluster = Cluster::start(3, &|c| {
        c.tick_ms = 3_600_000;
        c.lease_reads = lease_reads;
    })
    .await;
    let client = cluster.client();
    setup_root(&client, 100).await;
    let mut holds = Vec::new();
    for i in 0..10 {
        let granted = reserve(&client, &reserve_request(&format!("fill-{i}"), 10))
            .await
            .expect("reserve");
        holds.push(granted_id(&granted).expect("room for ten"));
        assert_eq!(
            held_at_root(&client).await,
            10 * (i + 1),
            "a read sees the write"
        );
    }
    let leader = cluster.leader(Duration::from_secs(5)).await;
    let log_before = cluster.status(leader).await.expect("status").last_log_index;
    let denials_before = fast_denials(&cluster, leader).await;
    for i in 0..5 {
        let denied = reserve(&client, &reserve_request(&format!("full-{i}"), 10))
            .await
            .expect("answer");
        assert_eq!(granted_id(&denied), None, "the cap is full");
        assert!(denied.log_index <= log_before, "decided on committed state");
    }
    assert_eq!(
        cluster.status(leader).await.expect("status").last_log_index,
        log_before,
        "denials wrote nothing to the log"
    );
    assert_eq!(fast_denials(&cluster, leader).await, denials_before + 5);
    // An acknowledged release is seen by the very next reservation.
    release(&client, "free-0", holds[0]).await;
    let granted = reserve(&client, &reserve_request("refill-0", 10))
        .await
        .expect("reserve");
    holds[0] = granted_id(&granted).expect("the release made room");

    cluster.kill(leader).await;
    let new = cluster.leader(Duration::from_secs(10)).await;
    assert_ne!(new, leader);
    // The new leader has not denied anything yet; whatever it answers now must include
    // every write the old leader acknowledged.
    assert_eq!(
        held_at_root(&client).await,
        100,
        "a new leader's read sees every hold"
    );
    let denied = reserve(&client, &reserve_request("full-after", 10))
        .await
        .expect("answer");
    assert_eq!(
        granted_id(&denied),
        None,
        "the new leader knows the cap is full"
    );
    release(&client, "free-1", holds[1]).await;
    let granted = reserve(&client, &reserve_request("refill-1", 10))
        .await
        .expect("reserve");
    assert!(granted_id(&granted).is_some(), "the release made room");
    assert_eq!(held_at_root(&client).await, 100);
    cluster.converged(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_and_denials_stay_linearizable_with_read_index() {
    reads_and_denials_stay_linearizable(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_and_denials_stay_linearizable_with_leader_leases() {
    reads_and_denials_stay_linearizable(true).await;
}

/// One request id, one outcome. A client that timed out retries with the same id, and the
/// first attempt can reach the leader after the retry was answered. If the retry was denied
/// and room was made since, that late attempt must be denied again, not granted: the client
/// holds "denied" and would never settle the hold. (The chaos harness found this: a retry
/// denied on the fast path, its first attempt granted a second later, once a cap was raised.)
/// Denials through the log are covered too: a charge is always written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_attempt_of_a_denied_request_is_denied_again() {
    let cluster = Cluster::start(3, &|c| c.tick_ms = 3_600_000).await;
    let client = cluster.client();
    setup_root(&client, 100).await;
    let fill = reserve(&client, &reserve_request("fill-1", 100))
        .await
        .expect("reserve");
    let fill = granted_id(&fill).expect("room for the fill");

    let late = reserve_request("late-reserve", 10);
    let first = reserve(&client, &late).await.expect("answer");
    assert_eq!(granted_id(&first), None, "the cap is full");
    let leader = cluster.leader(Duration::from_secs(5)).await;
    assert_eq!(
        fast_denials(&cluster, leader).await,
        1,
        "denied on the fast path"
    );
    let charge_request = pb::ChargeRequest {
        request_id: "late-charge".into(),
        sent_at_ms: purser_client::now_ms(),
        node: path("acme"),
        currency: "usd".into(),
        actual: Some(pb::charge_request::Actual::Amount(10)),
        attributes: None,
    };
    let send = |request: pb::ChargeRequest| {
        let client = &client;
        async move { client.charge(request).await.expect("charge") }
    };
    let charged = send(charge_request.clone()).await;
    assert!(
        matches!(charged.result, Some(pb::charge_response::Result::Denied(_))),
        "the cap is full: {charged:?}"
    );

    release(&client, "free-fill-1", fill).await;
    assert_eq!(held_at_root(&client).await, 0);
    let again = reserve(&client, &late).await.expect("answer");
    assert_eq!(granted_id(&again), None, "the same id is denied again");
    assert_eq!(again.log_index, first.log_index, "with the same answer");
    let again = send(charge_request).await;
    assert_eq!(
        again.result, charged.result,
        "a late attempt of a charge denied through the log is denied again"
    );
    assert_eq!(held_at_root(&client).await, 0, "nothing was granted");
    // A new request id is a new request: the room is there.
    let fresh = reserve(&client, &reserve_request("fresh", 10))
        .await
        .expect("reserve");
    assert!(granted_id(&fresh).is_some());
    cluster.converged(Duration::from_secs(10)).await;
}

fn batch_reserve(id: &str, amount: i64) -> purser_client::Op {
    purser_client::Op::Reserve(reserve_request(id, amount))
}

/// A `Batch` answers each item exactly as it would have been answered alone: grants,
/// denials (without a log write), duplicates and per-item errors, in item order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_answers_each_item_as_if_it_were_alone() {
    use purser_client::ItemResult;
    let cluster = Cluster::start(3, &|c| c.tick_ms = 3_600_000).await;
    let client = cluster.client();
    setup_root(&client, 100).await;
    let first = reserve(&client, &reserve_request("alone", 30))
        .await
        .expect("reserve");
    let first_id = granted_id(&first).expect("room");
    let items = vec![
        batch_reserve("b-1", 50),
        batch_reserve("alone", 30), // a retry of the request above
        batch_reserve("b-2", 50),   // 30 + 50 held: denied
        purser_client::Op::Release(pb::ReleaseRequest {
            request_id: "b-3".into(),
            sent_at_ms: purser_client::now_ms(),
            reservation_id: 999,
        }),
        batch_reserve("b-4", -5),
    ];
    let request = pb::BatchRequest {
        items: items
            .into_iter()
            .map(|op| pb::BatchItem { op: Some(op) })
            .collect(),
    };
    let response = client.batch(request.clone()).await.expect("batch");
    let results: Vec<_> = response
        .results
        .into_iter()
        .map(|r| r.result.expect("a result"))
        .collect();
    assert_eq!(results.len(), 5);
    let ItemResult::Reserve(granted) = &results[0] else {
        panic!("{:?}", results[0])
    };
    assert!(granted_id(granted).is_some());
    let ItemResult::Reserve(retry) = &results[1] else {
        panic!("{:?}", results[1])
    };
    assert!(retry.duplicate);
    assert_eq!(granted_id(retry), Some(first_id));
    let ItemResult::Reserve(denied) = &results[2] else {
        panic!("{:?}", results[2])
    };
    assert_eq!(granted_id(denied), None, "the cap is full");
    assert!(matches!(&results[3], ItemResult::Error(e) if e.code == Code::NotFound as i32));
    assert!(matches!(&results[4], ItemResult::Error(e) if e.code == Code::InvalidArgument as i32));
    assert_eq!(held_at_root(&client).await, 80);

    let too_many = pb::BatchRequest {
        items: (0..1025)
            .map(|i| pb::BatchItem {
                op: Some(batch_reserve(&format!("many-{i}"), 1)),
            })
            .collect(),
    };
    let error = client.batch(too_many).await.expect_err("too many items");
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(
        held_at_root(&client).await,
        80,
        "a refused batch applies nothing"
    );
}

/// Concurrent calls coalesced into `Batch` RPCs survive the loss of the leader like single
/// calls: every acknowledged reservation is applied once, none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coalesced_calls_survive_the_leaders_loss() {
    use purser_client::{CoalesceConfig, Coalescer, ItemResult};
    let mut cluster = Cluster::start(3, &|_| {}).await;
    let client = Arc::new(cluster.client());
    setup_root(&client, 1_000_000).await;
    let coalescer = Coalescer::new(client.clone(), CoalesceConfig::default());
    let mut workers = Vec::new();
    for w in 0..32 {
        let coalescer = coalescer.clone();
        workers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..20 {
                let op = batch_reserve(&format!("c{w}-{i}"), 7);
                if let Ok(ItemResult::Reserve(r)) =
                    coalescer.call(op, Duration::from_secs(20)).await
                {
                    acked.push((format!("c{w}-{i}"), granted_id(&r).expect("cap is far")));
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let old = cluster.leader(Duration::from_secs(5)).await;
    cluster.kill(old).await;
    let mut acked = Vec::new();
    for worker in workers {
        acked.extend(worker.await.expect("worker"));
    }
    assert!(
        acked.len() >= 600,
        "most calls are acknowledged ({})",
        acked.len()
    );
    let mut ids: Vec<u64> = acked.iter().map(|a| a.1).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), acked.len(), "no two requests share a hold");
    for (id, reservation) in acked.iter().step_by(16) {
        let again = reserve(&client, &reserve_request(id, 7))
            .await
            .expect("retry");
        assert!(again.duplicate, "{id} is remembered");
        assert_eq!(granted_id(&again), Some(*reservation));
    }
    let held = held_at_root(&client).await;
    assert!(
        held >= 7 * acked.len() as u64 && held <= 7 * 640,
        "held {held}"
    );
    cluster.converged(Duration::from_secs(10)).await;
}

async fn open_watch(cluster: &Cluster, id: u64, from: u64) -> tonic::Streaming<pb::WatchEvent> {
    cluster
        .client_of(id, Duration::from_secs(5))
        .watch(pb::WatchRequest {
            from_index: from,
            kinds: vec![],
            node: None,
        })
        .await
        .expect("watch")
}

/// Reads `count` events from member `id` starting at `from`.
async fn watch_events(cluster: &Cluster, id: u64, from: u64, count: usize) -> Vec<pb::WatchEvent> {
    let mut stream = open_watch(cluster, id, from).await;
    let mut events = Vec::new();
    while events.len() < count {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("an event within 10 s")
            .expect("stream")
            .expect("open");
        events.push(event);
    }
    events
}

async fn charge(client: &Client, id: &str, amount: i64) {
    let request = pb::ChargeRequest {
        request_id: id.into(),
        sent_at_ms: purser_client::now_ms(),
        node: path("acme"),
        currency: "usd".into(),
        actual: Some(pb::charge_request::Actual::Amount(amount)),
        attributes: None,
    };
    send_charge(client, &request).await;
}

async fn send_charge(client: &Client, request: &pb::ChargeRequest) {
    client.charge(request.clone()).await.expect("charge");
}

/// Every event from `from` on that member `id` has, until none comes for a second.
async fn drain(cluster: &Cluster, id: u64, from: u64) -> Vec<pb::WatchEvent> {
    let mut stream = open_watch(cluster, id, from).await;
    let mut events = Vec::new();
    while let Ok(next) = tokio::time::timeout(Duration::from_secs(1), stream.message()).await {
        events.push(next.expect("stream").expect("open"));
    }
    events
}

/// The event stream has the same dense indices on every member: a watcher that disconnects
/// and resumes with its last index + 1 — on another member, after the leader is killed —
/// gets no gap and no duplicate, and what it saw is what a fresh watch from 1 sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_resumes_without_gaps_across_members_and_a_leader_kill() {
    let mut cluster = Cluster::start(3, &|c| c.tick_ms = 3_600_000).await;
    let client = cluster.client();
    setup_root(&client, 1_000_000).await;
    for i in 0..10 {
        charge(&client, &format!("before-{i}"), 100).await;
    }
    let leader = cluster.leader(Duration::from_secs(5)).await;
    let other = *cluster
        .members
        .keys()
        .find(|id| **id != leader)
        .expect("a follower");
    let mut seen = watch_events(&cluster, leader, 1, 8).await;
    // Disconnect, resume on a follower.
    let next = seen.last().expect("events").index + 1;
    seen.extend(watch_events(&cluster, other, next, 8).await);
    cluster.kill(leader).await;
    cluster.leader(Duration::from_secs(10)).await;
    for i in 0..10 {
        charge(&client, &format!("after-{i}"), 100).await;
    }
    let next = seen.last().expect("events").index + 1;
    let survivor = *cluster
        .members
        .iter()
        .find(|(id, m)| **id != other && m.server.is_some())
        .expect("a survivor")
        .0;
    seen.extend(drain(&cluster, survivor, next).await);
    let indices: Vec<u64> = seen.iter().map(|e| e.index).collect();
    let expected: Vec<u64> = (1..=indices.len() as u64).collect();
    assert_eq!(indices, expected, "dense, in order, no duplicate");
    let usages = seen.iter().filter(|e| e.kind == "usage").count();
    assert_eq!(usages, 20, "every charge's usage event, once");
    let fresh = drain(&cluster, other, 1).await;
    assert_eq!(fresh, seen, "every member streams the same events");
    let kinds: std::collections::BTreeSet<&str> = seen.iter().map(|e| e.kind.as_str()).collect();
    assert!(
        kinds.contains("usage") && kinds.contains("monetization"),
        "{kinds:?}"
    );
    let usage = seen.iter().find(|e| e.kind == "usage").expect("usage");
    let fields: serde_json::Value = serde_json::from_str(&usage.json).expect("json");
    assert_eq!(fields["amount"], 100);
    // Asking for more than was emitted waits; asking past what is kept is refused.
    let not_yet = tokio::time::timeout(
        Duration::from_millis(300),
        watch_events(&cluster, survivor, 1_000_000, 1),
    )
    .await;
    assert!(not_yet.is_err(), "a future index waits for its event");
}

/// A member removed while the others applied, snapshotted and purged their logs, then added
/// back with its data, catches up through a snapshot and never writes the events of the
/// entries the snapshot covered.
/// Watching it from 1 streams its own events, dense, and then OUT_OF_RANGE at the gap, never
/// the events after the gap as if nothing were missing; past the gap it streams again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_caught_up_by_snapshot_refuses_the_events_it_never_applied() {
    let mut cluster = Cluster::start(3, &|c| {
        c.tick_ms = 3_600_000;
        c.log_kept_after_snapshot = 0;
    })
    .await;
    let client = cluster.client();
    setup_root(&client, 1_000_000).await;
    for i in 0..5 {
        charge(&client, &format!("before-{i}"), 100).await;
    }
    let leader = cluster.leader(Duration::from_secs(5)).await;
    let behind = *cluster
        .members
        .keys()
        .find(|id| **id != leader)
        .expect("a follower");
    cluster.converged(Duration::from_secs(10)).await;
    let had = drain(&cluster, behind, 1).await.len() as u64;
    // Out of the membership, so that the others may purge the log it would need.
    cluster.kill(behind).await;
    client
        .remove(pb::RemoveRequest { id: behind })
        .await
        .expect("remove");
    for i in 0..10 {
        charge(&client, &format!("while-down-{i}"), 100).await;
    }
    for id in cluster.members.keys().filter(|id| **id != behind) {
        cluster
            .client_of(*id, Duration::from_secs(15))
            .snapshot(pb::SnapshotRequest { purge: true })
            .await
            .expect("snapshot and purge");
    }
    cluster.restart(behind).await;
    let config = &cluster.members[&behind].config;
    let add = pb::AddLearnerRequest {
        id: behind,
        peer_addr: config.node.peer_listen.to_string(),
        client_addr: config.node.client_addr.clone(),
        blocking: true,
    };
    client.add_learner(add).await.expect("add it back");
    client
        .promote(pb::PromoteRequest { id: behind })
        .await
        .expect("promote");
    charge(&client, "after", 100).await;
    cluster.converged(Duration::from_secs(20)).await;
    let behind_status = cluster.status(behind).await.expect("status");
    assert!(
        behind_status.snapshot_index.is_some(),
        "member {behind} caught up through a snapshot: {behind_status:?}"
    );

    let mut stream = open_watch(&cluster, behind, 1).await;
    let mut indices = Vec::new();
    let refused = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("an event or the refusal within 10 s")
        {
            Ok(Some(event)) => indices.push(event.index),
            Ok(None) => panic!("the stream ended without a refusal after {indices:?}"),
            Err(status) => break status,
        }
    };
    assert_eq!(refused.code(), Code::OutOfRange, "{refused}");
    let expected: Vec<u64> = (1..=had).collect();
    assert_eq!(indices, expected, "its own events, dense, up to the gap");
    let gap = had + 1;
    let at_gap = cluster
        .client_of(behind, Duration::from_secs(5))
        .watch(pb::WatchRequest {
            from_index: gap,
            kinds: vec![],
            node: None,
        })
        .await
        .expect_err("the gap is not kept");
    assert_eq!(at_gap.code(), Code::OutOfRange, "{at_gap}");
    // Past the gap the member streams what it applied after the snapshot, like the others.
    let everyone = drain(&cluster, leader, 1).await;
    let last = everyone.last().expect("events").index;
    let tail = drain(&cluster, behind, last).await;
    assert_eq!(tail.first().map(|e| e.index), Some(last));
    assert_eq!(tail.as_slice(), &everyone[everyone.len() - 1..]);
}

/// Reports group and filter exactly like a brute-force sum over the charges made, over gRPC
/// and over HTTP, and the CSV parses with a standard CSV reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reports_group_and_filter_like_a_brute_force_sum() {
    use std::collections::BTreeMap;
    let cluster = Cluster::start(1, &|c| c.tick_ms = 3_600_000).await;
    let client = cluster.client();
    setup_root(&client, 1_000_000_000).await;
    let users = ["ann", "bob", "cy"];
    let models = ["gpt-5", "claude", "llama"];
    let tags = [
        vec![],
        vec![("team", "ml")],
        vec![("team", "ml"), ("env", "prod")],
    ];
    // (user, model, provider, tags, amount)
    let mut made = Vec::new();
    let mut seed = 7u64;
    for i in 0..120 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let user = users[(seed >> 33) as usize % 3];
        let model = models[(seed >> 40) as usize % 3];
        let provider = if model == "llama" { "meta" } else { "vendor" };
        let tag = tags[(seed >> 50) as usize % 3].clone();
        let amount = 1 + (seed >> 20) as i64 % 1000;
        let request = pb::ChargeRequest {
            request_id: format!("r-{i}"),
            sent_at_ms: purser_client::now_ms(),
            node: path("acme"),
            currency: "usd".into(),
            actual: Some(pb::charge_request::Actual::Amount(amount)),
            attributes: Some(pb::Attributes {
                user: Some(user.into()),
                model: Some(model.into()),
                provider: Some(provider.into()),
                credential_type: Some("byok".into()),
                tags: tag
                    .iter()
                    .map(|(k, v)| pb::Tag {
                        key: (*k).into(),
                        value: (*v).into(),
                    })
                    .collect(),
            }),
        };
        send_charge(&client, &request).await;
        made.push((user, model, provider, tag, amount as u64));
    }
    let report = |group_by: Vec<&str>, filters: pb::ReportFilters| {
        let request = pb::ReportRequest {
            from_ms: purser_client::now_ms() - 3_600_000,
            to_ms: 0,
            group_by: group_by.into_iter().map(str::to_owned).collect(),
            filters: Some(filters),
            allow_stale: false,
        };
        let client = &client;
        async move { client.report(request).await.expect("report").rows }
    };
    // By user and model: each group's requests and cost.
    let rows = report(vec!["user", "model"], pb::ReportFilters::default()).await;
    let mut expected: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for (user, model, _, _, amount) in &made {
        let e = expected
            .entry(((*user).into(), (*model).into()))
            .or_default();
        e.0 += 1;
        e.1 += amount;
    }
    let got: BTreeMap<(String, String), (u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                (
                    r.user.clone().expect("user"),
                    r.model.clone().expect("model"),
                ),
                (r.requests, r.cost),
            )
        })
        .collect();
    assert_eq!(got, expected);
    // By tag: a request with two tags counts in both; without tags under "".
    let rows = report(vec!["tag"], pb::ReportFilters::default()).await;
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for (_, _, _, tags, amount) in &made {
        if tags.is_empty() {
            *expected.entry(String::new()).or_default() += amount;
        }
        for (k, v) in tags {
            *expected.entry(format!("{k}={v}")).or_default() += amount;
        }
    }
    let got: BTreeMap<String, u64> = rows
        .iter()
        .map(|r| (r.tag.clone().expect("tag"), r.cost))
        .collect();
    assert_eq!(got, expected);
    // Filtered: one provider and one tag, no grouping: a single total.
    let rows = report(
        vec![],
        pb::ReportFilters {
            provider: Some("vendor".into()),
            tag: Some("env=prod".into()),
            ..Default::default()
        },
    )
    .await;
    let expected: u64 = made
        .iter()
        .filter(|(_, _, p, t, _)| *p == "vendor" && t.contains(&("env", "prod")))
        .map(|m| m.4)
        .sum();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].cost, expected);
    assert_eq!(rows[0].market_cost, expected);
    let total: u64 = made.iter().map(|m| m.4).sum();
    let rows = report(vec!["day"], pb::ReportFilters::default()).await;
    assert_eq!(rows.iter().map(|r| r.cost).sum::<u64>(), total);

    // The same over HTTP, as CSV, read back with a standard CSV reader.
    let http = cluster.members[&1]
        .server
        .as_ref()
        .expect("running")
        .http_addr
        .expect("http endpoint");
    let from = purser_client::now_ms() - 3_600_000;
    let target = format!("/v1/report?from={from}&group_by=user,model&format=csv");
    let (code, body) = http_get(http, &target, Some(&cluster.token)).await;
    assert_eq!(code, 200, "{body}");
    // The HTTP side asks for a token like the gRPC side.
    let (code, refused) = http_get(http, &target, None).await;
    assert_eq!(code, 401, "{refused}");
    let (code, refused) = http_get(http, &target, Some("purser_nope")).await;
    assert_eq!(code, 401, "{refused}");
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let headers = reader.headers().expect("header").clone();
    let column = |name: &str| headers.iter().position(|h| h == name).expect(name);
    let (u, m, c) = (column("user"), column("model"), column("cost"));
    let mut from_csv: BTreeMap<(String, String), u64> = BTreeMap::new();
    for record in reader.records() {
        let record = record.expect("a CSV record");
        from_csv.insert(
            (record[u].to_owned(), record[m].to_owned()),
            record[c].parse().expect("a number"),
        );
    }
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (user, model, _, _, amount) in &made {
        *expected
            .entry(((*user).into(), (*model).into()))
            .or_default() += amount;
    }
    assert_eq!(from_csv, expected);
    let bad = format!("/v1/report?from={from}&group_by=color");
    let (code, bad) = http_get(http, &bad, Some(&cluster.token)).await;
    assert_eq!(code, 400);
    assert!(bad.contains("cannot group by"), "{bad}");
}

/// The status code and body of `GET target`, with `Authorization: Bearer token` if given.
async fn http_get(addr: SocketAddr, target: &str, token: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let authorization = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    stream
        .write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n{authorization}\r\n").as_bytes())
        .await
        .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_default();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_owned())
}

/// Past the configured retention, events leave a member once folded into the rollups:
/// `Watch` from an index no longer kept is OUT_OF_RANGE and names the next one kept, while
/// report totals are unchanged by the compaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn old_events_leave_after_folding_and_reports_keep_their_totals() {
    let cluster = Cluster::start(1, &|c| {
        c.tick_ms = 3_600_000;
        c.events_kept = 1_000;
        c.snapshot_every_entries = 50;
    })
    .await;
    let client = cluster.client();
    setup_root(&client, 1_000_000_000).await;
    for i in 0..500 {
        charge(&client, &format!("c-{i}"), 3).await;
    }
    let total = |rows: Vec<pb::ReportRow>| {
        rows.iter()
            .map(|r| (r.requests, r.cost))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    let report = pb::ReportRequest {
        from_ms: purser_client::now_ms() - 3_600_000,
        ..Default::default()
    };
    let rows = client.report(report.clone()).await.expect("report").rows;
    assert_eq!(total(rows), (500, 1_500));
    // A snapshot (every 50 entries) has pruned what is beyond the newest 1,000 events.
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let attempt = cluster
            .client_of(1, Duration::from_secs(5))
            .watch(pb::WatchRequest {
                from_index: 1,
                kinds: vec![],
                node: None,
            })
            .await;
        match attempt {
            Err(e) => break e,
            Ok(_) => {
                assert!(Instant::now() < deadline, "old events were never pruned");
                charge(&client, &format!("more-{}", purser_client::now_ms()), 1).await;
            }
        }
    };
    assert_eq!(refused.code(), Code::OutOfRange, "{refused}");
    assert!(refused.to_string().contains("next kept here"), "{refused}");
    let rows = client.report(report.clone()).await.expect("report").rows;
    let (requests, cost) = total(rows);
    assert_eq!(cost - (requests - 500), 1_500, "compaction changed a total");
}
