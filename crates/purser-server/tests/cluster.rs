//! Real multi-node clusters in one process: each member has its own RocksDB and talks Raft to
//! the others over loopback TCP.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use purser_core::*;
use purser_server::node::{NodeConfig, PurserNode, WriteError, Written};
use purser_server::types::PeerNode;
use purser_testkit::free_addr;

struct Member {
    config: NodeConfig,
    node: Option<Arc<PurserNode>>,
}

struct Cluster {
    _dir: tempfile::TempDir,
    members: Vec<Member>,
}

impl Cluster {
    async fn start(size: u64) -> Cluster {
        Self::start_with(size, |_| {}).await
    }

    async fn start_with(size: u64, tune: impl Fn(&mut NodeConfig)) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut members = Vec::new();
        for id in 1..=size {
            let mut config = NodeConfig::new(
                id,
                dir.path().join(format!("n{id}")),
                free_addr(),
                format!("127.0.0.1:{}", 7600 + id),
            );
            config.heartbeat_ms = 50;
            config.election_timeout_min_ms = 300;
            config.election_timeout_max_ms = 600;
            tune(&mut config);
            let node = PurserNode::start(config.clone()).await.expect("start");
            members.push(Member {
                config,
                node: Some(node),
            });
        }
        let peers: BTreeMap<u64, PeerNode> = members
            .iter()
            .map(|m| {
                (
                    m.config.id,
                    PeerNode {
                        peer_addr: m.config.peer_listen.to_string(),
                        client_addr: m.config.client_addr.clone(),
                    },
                )
            })
            .collect();
        members[0]
            .node
            .as_ref()
            .expect("running")
            .initialize(peers)
            .await
            .expect("initialize");
        Cluster { _dir: dir, members }
    }

    fn running(&self) -> impl Iterator<Item = &Arc<PurserNode>> {
        self.members.iter().filter_map(|m| m.node.as_ref())
    }

    async fn leader(&self, within: Duration) -> Arc<PurserNode> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(leader) = self.running().find(|n| n.is_leader()) {
                return leader.clone();
            }
            assert!(Instant::now() < deadline, "no leader within {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn kill(&mut self, id: u64) {
        let member = &mut self.members[(id - 1) as usize];
        let node = member.node.take().expect("running");
        node.shutdown().await;
        drop(node);
    }

    async fn restart(&mut self, id: u64) {
        let member = &mut self.members[(id - 1) as usize];
        member.node = Some(
            PurserNode::start(member.config.clone())
                .await
                .expect("restart"),
        );
    }

    /// Waits until every running member applied the same log index and has the same digest.
    async fn converged(&self, within: Duration) -> u128 {
        let deadline = Instant::now() + within;
        loop {
            let views: Vec<(Option<u64>, u128)> = self
                .running()
                .map(|n| n.read_local(|state, applied| (applied.map(|l| l.index), state.digest())))
                .collect();
            if views.windows(2).all(|w| w[0] == w[1]) {
                return views[0].1;
            }
            assert!(
                Instant::now() < deadline,
                "replicas did not converge: {views:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn root_op() -> Op {
    Op::CreateNode(CreateNode {
        parent: None,
        name: "acme".into(),
        kind: "org".into(),
        tags: vec![],
        root: Some(RootSpec {
            currencies: vec![CurrencySpec {
                code: "usd".into(),
                scale: 6,
                funded: false,
            }],
            no_default_cap: true,
        }),
    })
}

fn cap_op(amount: i64) -> Op {
    Op::SetLimit {
        node: "acme".into(),
        limit: LimitSpec {
            currency: "usd".into(),
            amount,
            window: Window::Lifetime,
            mode: LimitMode::Hard,
            thresholds: vec![],
            on_exhausted: OnExhausted::Deny,
        },
    }
}

fn reserve_op(amount: i64) -> Op {
    Op::Reserve(Reserve {
        node: "acme".into(),
        currency: "usd".into(),
        amount: Amount::Exact(amount),
        ttl_ms: 600_000,
        attrs: Attributes::default(),
    })
}

/// Sends a command to whichever member leads now, retrying the same request id across
/// leader changes and unknown outcomes (as the client library does).
async fn write(cluster: &Cluster, id: &str, sent_at_ms: u64, op: Op) -> Written {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let leader = cluster.leader(Duration::from_secs(10)).await;
        match leader.write(Command::new(id, sent_at_ms, op.clone())).await {
            Ok(written) => return written,
            Err(
                WriteError::NotLeader { .. } | WriteError::Unknown(_) | WriteError::ShuttingDown,
            ) => {
                assert!(Instant::now() < deadline, "write {id} never succeeded");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("write {id}: {e}"),
        }
    }
}

fn reserved(written: &Written) -> Option<u64> {
    match &written.result.as_ref().expect("applies").outcome {
        Outcome::Reserved(r) => Some(r.reservation_id),
        Outcome::Duplicate(Recorded::Reserved { reservation_id, .. }) => Some(*reservation_id),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_replicate_and_survive_the_loss_of_the_leader() {
    let mut cluster = Cluster::start(3).await;
    let t = purser_server::node::now_ms();
    write(&cluster, "root", t, root_op()).await;
    write(&cluster, "cap", t, cap_op(1_000)).await;
    let mut holds = Vec::new();
    for i in 0..20 {
        let w = write(&cluster, &format!("r{i}"), t, reserve_op(10)).await;
        holds.push(reserved(&w).expect("granted"));
    }
    cluster.converged(Duration::from_secs(10)).await;

    let old = cluster.leader(Duration::from_secs(5)).await.id;
    cluster.kill(old).await;
    let new = cluster.leader(Duration::from_secs(10)).await;
    assert_ne!(new.id, old, "a new leader is elected");
    // Retrying an acknowledged reservation on the new leader returns the first outcome.
    let again = write(&cluster, "r3", t, reserve_op(10)).await;
    assert_eq!(reserved(&again), Some(holds[3]));
    assert!(matches!(
        again.result.as_ref().expect("applies").outcome,
        Outcome::Duplicate(_)
    ));
    for i in 20..40 {
        write(&cluster, &format!("r{i}"), t, reserve_op(10)).await;
    }
    let held = new
        .read(|s, _| s.node_view(1, 0).expect("root").accounts[0].held)
        .await
        .expect("read");
    assert_eq!(held, 400, "every acknowledged hold is present exactly once");

    cluster.restart(old).await;
    cluster.converged(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_cluster_restart_keeps_identical_state() {
    // No ticks, so that nothing but the test's own commands changes the state.
    let mut cluster = Cluster::start_with(3, |c| c.tick_ms = 3_600_000).await;
    let t = purser_server::node::now_ms();
    write(&cluster, "root", t, root_op()).await;
    write(&cluster, "cap", t, cap_op(100)).await;
    for i in 0..15 {
        write(&cluster, &format!("r{i}"), t, reserve_op(10)).await;
    }
    let before = cluster.converged(Duration::from_secs(10)).await;
    for id in 1..=3 {
        cluster.kill(id).await;
    }
    for id in 1..=3 {
        cluster.restart(id).await;
    }
    cluster.leader(Duration::from_secs(10)).await;
    let after = cluster.converged(Duration::from_secs(20)).await;
    assert_eq!(
        before, after,
        "every replica restarts into the state it had"
    );
    let leader = cluster.leader(Duration::from_secs(5)).await;
    let held = leader
        .read(|s, _| s.node_view(1, 0).expect("root").accounts[0].held)
        .await
        .expect("read");
    assert_eq!(
        held, 100,
        "ten holds granted before the restart, the cap denied the rest"
    );
}
