//! The client port's gRPC services: budget, admin and cluster. A follower answers writes and
//! linearizable reads with `UNAVAILABLE` and the leader's client address in the
//! `purser-leader` metadata, so clients redirect; `purser-client` does it for them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use openraft::async_runtime::WatchReceiver;
use openraft::{ChangeMembers, ServerState};
use purser_core::{Command, NodeRef, Outcome, State};
use purser_proto::convert::{digest_hex, status_from_error, FromOutcome, MutatingRequest};
use purser_proto::pb;
use tonic::{Request, Response, Status};

use crate::node::{now_ms, PurserNode, WriteError};
use crate::types::{LogId, PeerNode};

/// Items in one `Batch` call at most (one log entry's worth of commands).
pub const BATCH_ITEMS_MAX: usize = crate::node::BATCH_COMMANDS_MAX;

/// Metadata key carrying the leader's client address on a redirect.
pub const LEADER_METADATA: &str = "purser-leader";

/// How long `Cluster.Snapshot` waits for the snapshot it asked for.
const SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Clone)]
pub struct Services {
    node: Arc<PurserNode>,
}

impl Services {
    pub fn new(node: Arc<PurserNode>) -> Self {
        Services { node }
    }

    async fn mutate<Req, Resp>(&self, request: Req) -> Result<Resp, Status>
    where
        Req: MutatingRequest,
        Resp: FromOutcome,
    {
        self.apply(request.into_command()?).await
    }

    async fn apply<Resp: FromOutcome>(&self, command: Command) -> Result<Resp, Status> {
        let written = crate::planted::write(&self.node, command)
            .await
            .map_err(write_status)?;
        let applied = written.result.map_err(|e| status_from_error(&e))?;
        Ok(Resp::from_outcome(applied.outcome, written.log_index)?)
    }

    async fn read<T>(
        &self,
        allow_stale: bool,
        f: impl FnOnce(&State, Option<LogId>) -> T,
    ) -> Result<T, Status> {
        if allow_stale {
            return Ok(self.node.read_local(f));
        }
        self.node.read(f).await.map_err(write_status)
    }

    /// A reservation: denied on the leader without a log entry when committed state already
    /// denies it (`PurserNode::fast_denial`), otherwise written.
    async fn reserve_one(
        &self,
        request: pb::ReserveRequest,
    ) -> Result<pb::ReserveResponse, Status> {
        let command = request.into_command()?;
        let mut response = match self.node.fast_denial(&command).await {
            Some((denial, log_index)) => {
                pb::ReserveResponse::from_outcome(Outcome::Denied(denial), log_index)?
            }
            None => self.apply(command).await?,
        };
        if let Some(denied) = response.denial_mut() {
            denied.node_path = self.path_of(denied.node_id);
        }
        Ok(response)
    }

    async fn charge_one(&self, request: pb::ChargeRequest) -> Result<pb::ChargeResponse, Status> {
        let mut response: pb::ChargeResponse = self.mutate(request).await?;
        if let Some(denied) = response.denial_mut() {
            denied.node_path = self.path_of(denied.node_id);
        }
        Ok(response)
    }

    fn path_of(&self, id: u64) -> String {
        self.node
            .read_local(|state, _| state.path_of(id).unwrap_or_default())
    }
}

/// The one place where a failed write becomes a status: everything here is safe to retry
/// with the same request id, elsewhere or later.
pub fn write_status(error: WriteError) -> Status {
    match error {
        WriteError::NotLeader { leader } => {
            let mut status = Status::unavailable("not the leader: retry on the leader");
            if let Some((_, node)) = leader {
                if let Ok(value) = node.client_addr.parse() {
                    status.metadata_mut().insert(LEADER_METADATA, value);
                }
            }
            status
        }
        WriteError::Overloaded => Status::unavailable("too many writes queued: retry later"),
        WriteError::Unknown(why) => Status::unavailable(format!(
            "outcome unknown ({why}): retry with the same request id"
        )),
        WriteError::ShuttingDown => Status::unavailable("the member is shutting down"),
    }
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

fn node_ref(node: Option<pb::NodeRef>) -> Result<NodeRef, Status> {
    let node = node.ok_or_else(|| Status::invalid_argument("node is required"))?;
    Ok(NodeRef::try_from(node)?)
}

#[tonic::async_trait]
impl pb::budget_server::Budget for Services {
    async fn reserve(
        &self,
        request: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        Ok(Response::new(self.reserve_one(request.into_inner()).await?))
    }

    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        Ok(Response::new(self.mutate(request.into_inner()).await?))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        Ok(Response::new(self.mutate(request.into_inner()).await?))
    }

    async fn charge(
        &self,
        request: Request<pb::ChargeRequest>,
    ) -> Result<Response<pb::ChargeResponse>, Status> {
        Ok(Response::new(self.charge_one(request.into_inner()).await?))
    }

    async fn batch(
        &self,
        request: Request<pb::BatchRequest>,
    ) -> Result<Response<pb::BatchResponse>, Status> {
        use pb::batch_item::Op;
        use pb::batch_item_result::Result as Item;
        let items = request.into_inner().items;
        if items.len() > BATCH_ITEMS_MAX {
            return Err(Status::invalid_argument(format!(
                "a batch carries at most {BATCH_ITEMS_MAX} items, not {}",
                items.len()
            )));
        }
        if !self.node.is_leader() {
            return Err(write_status(WriteError::NotLeader {
                leader: self.node.leader(),
            }));
        }
        // Every item is queued before any is awaited (join_all polls them in order), so
        // they usually share one log entry.
        let results = futures_util::future::join_all(items.into_iter().map(|item| async move {
            let result = match item.op {
                Some(Op::Reserve(r)) => self.reserve_one(r).await.map(Item::Reserve),
                Some(Op::Commit(r)) => self.mutate(r).await.map(Item::Commit),
                Some(Op::Release(r)) => self.mutate(r).await.map(Item::Release),
                Some(Op::Charge(r)) => self.charge_one(r).await.map(Item::Charge),
                None => Err(Status::invalid_argument("a batch item needs an operation")),
            };
            pb::BatchItemResult {
                result: Some(result.unwrap_or_else(|status| {
                    Item::Error(pb::ItemError {
                        code: status.code() as i32,
                        message: status.message().to_owned(),
                    })
                })),
            }
        }))
        .await;
        Ok(Response::new(pb::BatchResponse { results }))
    }

    async fn show(
        &self,
        request: Request<pb::ShowRequest>,
    ) -> Result<Response<pb::ShowResponse>, Status> {
        let request = request.into_inner();
        let node = node_ref(request.node)?;
        let at = now_ms();
        let view = self
            .read(request.allow_stale, |state, _| {
                state.resolve(&node).and_then(|id| state.node_view(id, at))
            })
            .await?
            .map_err(|e| status_from_error(&e))?;
        Ok(Response::new(pb::ShowResponse {
            node: Some(view.into()),
        }))
    }

    async fn usage(
        &self,
        request: Request<pb::UsageRequest>,
    ) -> Result<Response<pb::UsageResponse>, Status> {
        let request = request.into_inner();
        let node = node_ref(request.node)?;
        let at = now_ms();
        let (id, path, limits) = self
            .read(request.allow_stale, |state, _| {
                let id = state.resolve(&node)?;
                Ok::<_, purser_core::Error>((id, state.path_of(id)?, state.usage(id, at)?))
            })
            .await?
            .map_err(|e| status_from_error(&e))?;
        Ok(Response::new(pb::UsageResponse {
            node_id: id,
            path,
            limits: limits.into_iter().map(Into::into).collect(),
        }))
    }

    async fn holds(
        &self,
        request: Request<pb::HoldsRequest>,
    ) -> Result<Response<pb::HoldsResponse>, Status> {
        let request = request.into_inner();
        let target = request
            .target
            .ok_or_else(|| Status::invalid_argument("a node or a reservation id is required"))?;
        let holds = match target {
            pb::holds_request::Target::Node(node) => {
                let node = NodeRef::try_from(node)?;
                self.read(request.allow_stale, |state, _| {
                    state.resolve(&node).and_then(|id| state.holds_of(id))
                })
                .await?
                .map_err(|e| status_from_error(&e))?
            }
            pb::holds_request::Target::ReservationId(id) => self
                .read(request.allow_stale, |state, _| state.hold(id))
                .await?
                .into_iter()
                .collect(),
        };
        Ok(Response::new(pb::HoldsResponse {
            holds: holds.into_iter().map(Into::into).collect(),
        }))
    }

    async fn grants(
        &self,
        request: Request<pb::GrantsRequest>,
    ) -> Result<Response<pb::GrantsResponse>, Status> {
        let request = request.into_inner();
        let target = request
            .target
            .ok_or_else(|| Status::invalid_argument("a node or a grant id is required"))?;
        let grants = match target {
            pb::grants_request::Target::Node(node) => {
                let node = NodeRef::try_from(node)?;
                self.read(request.allow_stale, |state, _| {
                    state.resolve(&node).and_then(|id| state.grants_of(id))
                })
                .await?
                .map_err(|e| status_from_error(&e))?
            }
            pb::grants_request::Target::GrantId(id) => self
                .read(request.allow_stale, |state, _| state.grant(id))
                .await?
                .into_iter()
                .collect(),
        };
        Ok(Response::new(pb::GrantsResponse {
            grants: grants.into_iter().map(Into::into).collect(),
        }))
    }
}

macro_rules! admin_calls {
    ($($method:ident: $request:ident => $response:ident;)*) => {
        #[tonic::async_trait]
        impl pb::admin_server::Admin for Services {
            $(async fn $method(&self, request: Request<pb::$request>) -> Result<Response<pb::$response>, Status> {
                Ok(Response::new(self.mutate(request.into_inner()).await?))
            })*
        }
    };
}

admin_calls! {
    create_node: CreateNodeRequest => CreateNodeResponse;
    move_node: MoveNodeRequest => MoveNodeResponse;
    close_node: CloseNodeRequest => CloseNodeResponse;
    pause_node: PauseNodeRequest => PauseNodeResponse;
    resume_node: ResumeNodeRequest => ResumeNodeResponse;
    set_limit: SetLimitRequest => SetLimitResponse;
    remove_limit: RemoveLimitRequest => RemoveLimitResponse;
    set_rate_limit: SetRateLimitRequest => SetRateLimitResponse;
    remove_rate_limit: RemoveRateLimitRequest => RemoveRateLimitResponse;
    add_grant: AddGrantRequest => AddGrantResponse;
    define_role: DefineRoleRequest => DefineRoleResponse;
    remove_role: RemoveRoleRequest => RemoveRoleResponse;
    assign_roles: AssignRolesRequest => AssignRolesResponse;
    set_role_resolution: SetRoleResolutionRequest => SetRoleResolutionResponse;
    set_price: SetPriceRequest => SetPriceResponse;
    remove_price: RemovePriceRequest => RemovePriceResponse;
    set_config: SetConfigRequest => SetConfigResponse;
}

impl Services {
    fn members(&self) -> Vec<pb::Member> {
        let metrics = self.node.raft.metrics().borrow_watched().clone();
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

    fn membership_status(
        &self,
        e: impl std::fmt::Display,
        leader: Option<(u64, PeerNode)>,
    ) -> Status {
        match leader {
            Some(leader) if leader.0 != self.node.id => write_status(WriteError::NotLeader {
                leader: Some(leader),
            }),
            _ => Status::failed_precondition(e.to_string()),
        }
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for Services {
    async fn init(
        &self,
        request: Request<pb::InitRequest>,
    ) -> Result<Response<pb::InitResponse>, Status> {
        let members: BTreeMap<u64, PeerNode> = request
            .into_inner()
            .members
            .into_iter()
            .map(|(id, m)| {
                (
                    id,
                    PeerNode {
                        peer_addr: m.peer_addr,
                        client_addr: m.client_addr,
                    },
                )
            })
            .collect();
        if members.is_empty() {
            return Err(Status::invalid_argument(
                "a cluster needs at least one member",
            ));
        }
        let wanted: BTreeSet<u64> = members.keys().copied().collect();
        self.node
            .initialize(members)
            .await
            .map_err(Status::failed_precondition)?;
        // Answer with the membership once this member has taken it in.
        let mut metrics = self.node.raft.metrics();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let known: BTreeSet<u64> = metrics
                .borrow_watched()
                .membership_config
                .membership()
                .voter_ids()
                .collect();
            if known == wanted
                || tokio::time::timeout_at(deadline, metrics.changed())
                    .await
                    .is_err()
            {
                break;
            }
        }
        Ok(Response::new(pb::InitResponse {
            members: self.members(),
        }))
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::AddLearnerResponse>, Status> {
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
            .map_err(|e| self.membership_status(e, self.node.leader()))?;
        Ok(Response::new(pb::AddLearnerResponse {
            log_index: written.log_id.index,
            members: self.members(),
        }))
    }

    async fn promote(
        &self,
        request: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::PromoteResponse>, Status> {
        let id = request.into_inner().id;
        let written = self
            .node
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| self.membership_status(e, self.node.leader()))?;
        Ok(Response::new(pb::PromoteResponse {
            log_index: written.log_id.index,
            members: self.members(),
        }))
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::RemoveResponse>, Status> {
        let id = request.into_inner().id;
        let raft = &self.node.raft;
        let voters: BTreeSet<u64> = raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        let mut last = None;
        if voters.contains(&id) {
            let written = raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
                .map_err(|e| self.membership_status(e, self.node.leader()))?;
            last = Some(written.log_id.index);
        }
        let written = raft
            .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
            .await
            .map_err(|e| self.membership_status(e, self.node.leader()))?;
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
        let id = request.into_inner().id;
        if !self.node.is_leader() {
            return Err(write_status(WriteError::NotLeader {
                leader: self.node.leader(),
            }));
        }
        if id == self.node.id {
            // Already there; asking openraft to hand leadership to itself would stall writes.
            return Ok(Response::new(pb::TransferLeaderResponse {
                leader_id: Some(id),
            }));
        }
        let voters: BTreeSet<u64> = self
            .node
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        if !voters.contains(&id) {
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
        let mut metrics = self.node.raft.metrics();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let leader = metrics.borrow_watched().current_leader;
            if leader.is_some_and(|l| l != self.node.id) {
                return Ok(Response::new(pb::TransferLeaderResponse {
                    leader_id: leader,
                }));
            }
            if tokio::time::timeout_at(deadline, metrics.changed())
                .await
                .is_err()
            {
                return Ok(Response::new(pb::TransferLeaderResponse {
                    leader_id: leader,
                }));
            }
        }
    }

    async fn stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let metrics = &self.node.metrics;
        let histograms = metrics
            .histograms()
            .into_iter()
            .map(|(name, h)| {
                let s = h.summary();
                pb::HistogramSummary {
                    name: name.into(),
                    count: s.count,
                    sum: s.sum,
                    p50: s.p50,
                    p99: s.p99,
                    p999: s.p999,
                    max: s.max,
                }
            })
            .collect();
        let counters = metrics
            .counters()
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        if request.into_inner().reset {
            metrics.reset();
        }
        let state = self.node.raft.metrics().borrow_watched().state;
        Ok(Response::new(pb::StatsResponse {
            id: self.node.id,
            role: role_of(state) as i32,
            histograms,
            counters,
        }))
    }

    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        let purge = request.into_inner().purge;
        let raft = &self.node.raft;
        let mut metrics = raft.metrics();
        let applied = metrics
            .borrow_watched()
            .last_applied
            .map(|l| l.index)
            .ok_or_else(|| Status::failed_precondition("nothing applied yet: no snapshot"))?;
        raft.trigger()
            .snapshot()
            .await
            .map_err(|_| write_status(WriteError::ShuttingDown))?;
        // Wait for a snapshot covering at least what was applied when it was asked for.
        let deadline = tokio::time::Instant::now() + SNAPSHOT_WAIT;
        let snapshot_index = loop {
            let built = metrics.borrow_watched().snapshot.map(|l| l.index);
            if let Some(index) = built.filter(|&index| index >= applied) {
                break index;
            }
            let changed = tokio::time::timeout_at(deadline, metrics.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                return Err(Status::unavailable(format!(
                    "no snapshot covering index {applied} within {SNAPSHOT_WAIT:?}"
                )));
            }
        };
        if purge {
            raft.trigger()
                .purge_log(snapshot_index)
                .await
                .map_err(|_| write_status(WriteError::ShuttingDown))?;
        }
        Ok(Response::new(pb::SnapshotResponse { snapshot_index }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let metrics = self.node.raft.metrics().borrow_watched().clone();
        let role = role_of(metrics.state);
        let leader_client_addr = self
            .node
            .leader()
            .map(|(_, n)| n.client_addr)
            .unwrap_or_default();
        let (digest, state_now_ms, applied) = self.node.read_local(|state, applied| {
            (
                state.digest(),
                state.now_ms(),
                applied.map_or(0, |l| l.index),
            )
        });
        Ok(Response::new(pb::StatusResponse {
            id: self.node.id,
            role: role as i32,
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
}
