//! The Cluster service: membership (init, add a learner, promote, remove, hand leadership
//! over), snapshots on demand, and what an operator asks a member (status, stats).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::{ChangeMembers, RaftMetrics, ServerState};
use pb::cluster_server::{Cluster, ClusterServer};
use purser_core::{Access, Need};
use purser_proto::convert::digest_hex;
use purser_proto::pb;
use tonic::{Request, Response, Status};

use super::CLIENT_MESSAGE_BYTES_MAX;
use crate::node::PurserNode;
use crate::types::{PeerNode, TypeConfig};
use crate::write::WriteError;

/// How long `Init` and `TransferLeader` wait to see the change they asked for.
const MEMBERSHIP_WAIT: Duration = Duration::from_secs(5);
/// How long `Init` tries to create the cluster's first token.
const BOOTSTRAP_WAIT: Duration = Duration::from_secs(20);
/// How long `Cluster.Snapshot` waits for the snapshot it asked for.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct ClusterService {
    node: Arc<PurserNode>,
}

impl ClusterService {
    pub fn server(node: Arc<PurserNode>) -> ClusterServer<Self> {
        ClusterServer::new(ClusterService { node })
            .max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX)
    }

    fn metrics(&self) -> RaftMetrics<TypeConfig> {
        self.node.raft.metrics().borrow_watched().clone()
    }

    fn members(&self) -> Vec<pb::Member> {
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| pb::Member {
                id: *id,
                peer_addr: node.peer_addr.clone(),
                client_addr: node.client_addr.clone(),
                voter: voters.contains(id),
            })
            .collect()
    }

    /// The caller of `metadata` must hold a `/` token with at least `access`.
    fn cluster_caller<T>(&self, request: &Request<T>, access: Access) -> Result<(), Status> {
        let caller = self.node.caller(request)?;
        self.node.authorize(caller, Need::Cluster(access))?;
        Ok(())
    }

    /// Creates the cluster's first token (scope `/`, admin) through the leader, which may be
    /// another member: the one that took `Init` does not always win the first election.
    async fn bootstrap(&self) -> Result<(String, u64), Status> {
        let (token, hash) = crate::auth::new_token()?;
        let request = pb::BootstrapRequest {
            request_id: format!("bootstrap-{}", &token[token.len() - 16..]),
            sent_at_ms: crate::clock::now_ms(),
            token_hash: hash.to_vec(),
        };
        let deadline = tokio::time::Instant::now() + BOOTSTRAP_WAIT;
        let mut last = Status::unavailable("no leader yet");
        while tokio::time::Instant::now() < deadline {
            let answered = match self.node.leader() {
                Some((id, _)) if id == self.node.id => {
                    self.node.create_first_token(request.clone()).await
                }
                Some((_, leader)) => bootstrap_on(&leader.client_addr, request.clone()).await,
                None => Err(Status::unavailable("no leader yet")),
            };
            match answered {
                Ok(token_id) => return Ok((token, token_id)),
                Err(status) if status.code() == tonic::Code::Unavailable => last = status,
                Err(status) => return Err(status),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(Status::unavailable(format!(
            "the cluster is initialized but its first token was not created ({}): call Init again",
            last.message()
        )))
    }

    /// A failed membership change: a redirect when another member leads, otherwise why.
    fn membership_status(&self, e: impl std::fmt::Display) -> Status {
        match self.node.leader() {
            Some(leader) if leader.0 != self.node.id => WriteError::NotLeader {
                leader: Some(leader),
            }
            .into(),
            _ => Status::failed_precondition(e.to_string()),
        }
    }

    /// Waits until this member's Raft metrics satisfy `done`, at most `within`: `Ok` with the
    /// metrics that did, `Err` with the last seen when time ran out or Raft stopped.
    async fn wait_for(
        &self,
        within: Duration,
        done: impl Fn(&RaftMetrics<TypeConfig>) -> bool,
    ) -> Result<RaftMetrics<TypeConfig>, RaftMetrics<TypeConfig>> {
        let mut watched = self.node.raft.metrics();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let metrics = watched.borrow_watched().clone();
            if done(&metrics) {
                return Ok(metrics);
            }
            let changed = tokio::time::timeout_at(deadline, watched.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                return Err(metrics);
            }
        }
    }
}

fn voters(metrics: &RaftMetrics<TypeConfig>) -> BTreeSet<u64> {
    metrics.membership_config.membership().voter_ids().collect()
}

fn role_of(state: ServerState) -> pb::RaftRole {
    match state {
        ServerState::Leader => pb::RaftRole::Leader,
        ServerState::Candidate => pb::RaftRole::Candidate,
        ServerState::Follower => pb::RaftRole::Follower,
        ServerState::Learner => pb::RaftRole::Learner,
        ServerState::Shutdown => pb::RaftRole::Shutdown,
    }
}

fn histogram_summary(
    name: &str,
    histogram: &purser_storage::metrics::Histogram,
) -> pb::HistogramSummary {
    let s = histogram.summary();
    pb::HistogramSummary {
        name: name.into(),
        count: s.count,
        sum: s.sum,
        p50: s.p50,
        p99: s.p99,
        p999: s.p999,
        max: s.max,
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn init(
        &self,
        request: Request<pb::InitRequest>,
    ) -> Result<Response<pb::InitResponse>, Status> {
        let members: BTreeMap<u64, PeerNode> = request
            .into_inner()
            .members
            .into_iter()
            .map(|(id, m)| {
                let node = PeerNode {
                    peer_addr: m.peer_addr,
                    client_addr: m.client_addr,
                };
                (id, node)
            })
            .collect();
        if members.is_empty() {
            return Err(Status::invalid_argument(
                "a cluster needs at least one member",
            ));
        }
        let wanted: BTreeSet<u64> = members.keys().copied().collect();
        let initialized = self
            .node
            .raft
            .is_initialized()
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let tokenless = self.node.auth_enabled()
            && self
                .node
                .read_local(|state, _| state.tokens(None).is_empty());
        if !initialized {
            self.node
                .initialize(members)
                .await
                .map_err(Status::failed_precondition)?;
            // Answer with the membership once this member has taken it in.
            let _ = self
                .wait_for(MEMBERSHIP_WAIT, |m| voters(m) == wanted)
                .await;
        } else if !tokenless {
            return Err(Status::failed_precondition(
                "the cluster is initialized already",
            ));
        }
        // An Init whose first token was not made (no leader in time) is finished by calling
        // Init again: the membership stays, the token is made.
        let (admin_token, admin_token_id) = if self.node.auth_enabled() {
            self.bootstrap().await?
        } else {
            (String::new(), 0)
        };
        Ok(Response::new(pb::InitResponse {
            members: self.members(),
            admin_token,
            admin_token_id,
        }))
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::AddLearnerResponse>, Status> {
        self.cluster_caller(&request, Access::Admin)?;
        let r = request.into_inner();
        let node = PeerNode {
            peer_addr: r.peer_addr,
            client_addr: r.client_addr,
        };
        let written = self
            .node
            .raft
            .add_learner(r.id, node, r.blocking)
            .await
            .map_err(|e| self.membership_status(e))?;
        Ok(Response::new(pb::AddLearnerResponse {
            log_index: written.log_id.index,
            members: self.members(),
        }))
    }

    async fn promote(
        &self,
        request: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::PromoteResponse>, Status> {
        self.cluster_caller(&request, Access::Admin)?;
        let id = request.into_inner().id;
        let written = self
            .node
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| self.membership_status(e))?;
        Ok(Response::new(pb::PromoteResponse {
            log_index: written.log_id.index,
            members: self.members(),
        }))
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::RemoveResponse>, Status> {
        self.cluster_caller(&request, Access::Admin)?;
        let id = request.into_inner().id;
        let raft = &self.node.raft;
        let mut last = None;
        if voters(&self.metrics()).contains(&id) {
            let written = raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
                .map_err(|e| self.membership_status(e))?;
            last = Some(written.log_id.index);
        }
        let written = raft
            .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
            .await
            .map_err(|e| self.membership_status(e))?;
        let log_index = last.map_or(written.log_id.index, |l| l.max(written.log_id.index));
        Ok(Response::new(pb::RemoveResponse {
            log_index,
            members: self.members(),
        }))
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        self.cluster_caller(&request, Access::Admin)?;
        let id = request.into_inner().id;
        let me = self.node.id;
        if !self.node.is_leader() {
            return Err(self.node.not_leader().into());
        }
        if id == me {
            // Already there; asking openraft to hand leadership to itself would stall writes.
            return Ok(Response::new(pb::TransferLeaderResponse {
                leader_id: Some(id),
            }));
        }
        if !voters(&self.metrics()).contains(&id) {
            return Err(Status::failed_precondition(format!(
                "member {id} is not a voter"
            )));
        }
        self.node
            .raft
            .trigger()
            .transfer_leader(id)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let moved = |m: &RaftMetrics<TypeConfig>| m.current_leader.is_some_and(|l| l != me);
        let (Ok(metrics) | Err(metrics)) = self.wait_for(MEMBERSHIP_WAIT, moved).await;
        Ok(Response::new(pb::TransferLeaderResponse {
            leader_id: metrics.current_leader,
        }))
    }

    async fn stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        self.cluster_caller(&request, Access::Admin)?;
        let metrics = &self.node.metrics;
        let histograms = metrics
            .histograms()
            .into_iter()
            .map(|(name, h)| histogram_summary(name, h))
            .collect();
        let counters = metrics
            .counters()
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        if request.into_inner().reset {
            metrics.reset();
        }
        let raft = self.metrics();
        Ok(Response::new(pb::StatsResponse {
            id: self.node.id,
            role: role_of(raft.state) as i32,
            histograms,
            counters,
            term: raft.current_term,
        }))
    }

    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        self.cluster_caller(&request, Access::Admin)?;
        let purge = request.into_inner().purge;
        let raft = &self.node.raft;
        let applied = self
            .metrics()
            .last_applied
            .map(|l| l.index)
            .ok_or_else(|| Status::failed_precondition("nothing applied yet: no snapshot"))?;
        let stopping = |_| Status::from(WriteError::ShuttingDown);
        raft.trigger().snapshot().await.map_err(stopping)?;
        // Wait for a snapshot covering at least what was applied when it was asked for.
        let covers = |m: &RaftMetrics<TypeConfig>| m.snapshot.is_some_and(|s| s.index >= applied);
        let built = self.wait_for(SNAPSHOT_WAIT, covers).await.map_err(|_| {
            Status::unavailable(format!(
                "no snapshot covering index {applied} within {SNAPSHOT_WAIT:?}"
            ))
        })?;
        let Some(snapshot_index) = built.snapshot.map(|s| s.index) else {
            unreachable!("the wait returns once a snapshot covers index {applied}")
        };
        if purge {
            raft.trigger()
                .purge_log(snapshot_index)
                .await
                .map_err(stopping)?;
        }
        Ok(Response::new(pb::SnapshotResponse { snapshot_index }))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.cluster_caller(&request, Access::Viewer)?;
        let metrics = self.metrics();
        let leader_client_addr = self
            .node
            .leader()
            .map(|(_, n)| n.client_addr)
            .unwrap_or_default();
        // Frozen under the lock (time in chunks, not entries), hashed off it: a status call
        // must not hold up apply for the time it takes to encode the whole state.
        let (frozen, state_now_ms, applied) = self.node.read_local(|state, applied| {
            (
                state.freeze(),
                state.now_ms(),
                applied.map_or(0, |l| l.index),
            )
        });
        let digest = tokio::task::spawn_blocking(move || frozen.digest())
            .await
            .map_err(|e| Status::internal(format!("digest: {e}")))?;
        Ok(Response::new(pb::StatusResponse {
            id: self.node.id,
            role: role_of(metrics.state) as i32,
            term: metrics.current_term,
            leader_id: metrics.current_leader,
            leader_client_addr,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_index: applied,
            members: self.members(),
            snapshot_index: metrics.snapshot.map(|s| s.index),
            state_digest: digest_hex(digest),
            state_now_ms,
        }))
    }

    async fn bootstrap(
        &self,
        request: Request<pb::BootstrapRequest>,
    ) -> Result<Response<pb::BootstrapResponse>, Status> {
        let token_id = self.node.create_first_token(request.into_inner()).await?;
        Ok(Response::new(pb::BootstrapResponse { token_id }))
    }
}

/// `Bootstrap` on the member at `client_addr` (the leader).
async fn bootstrap_on(client_addr: &str, request: pb::BootstrapRequest) -> Result<u64, Status> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{client_addr}"))
        .map_err(|e| Status::internal(format!("leader address {client_addr:?}: {e}")))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("leader at {client_addr}: {e}")))?;
    let response = pb::cluster_client::ClusterClient::new(channel)
        .bootstrap(request)
        .await?;
    Ok(response.into_inner().token_id)
}
