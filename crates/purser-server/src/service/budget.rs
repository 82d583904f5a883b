//! The Budget service: reserve, settle (`commit`), release, charge and batches of them, and
//! the reads a caller makes around them (show, usage, holds, grants).

use std::sync::Arc;

use pb::budget_server::{Budget, BudgetServer};
use purser_core::{Access, Error as CoreError, Need, NodeRef, Outcome, State};
use purser_proto::convert::{status_from_error, FromOutcome, MutatingRequest};
use purser_proto::pb;
use tonic::{Request, Response, Status};

use super::{node_ref, read, respond, CLIENT_MESSAGE_BYTES_MAX};
use crate::batcher::BATCH_COMMANDS_MAX;
use crate::clock::now_ms;
use crate::write::WritePath;

/// Items in one `Batch` call at most (one log entry's worth of commands).
pub const BATCH_ITEMS_MAX: usize = BATCH_COMMANDS_MAX;

#[derive(Clone)]
pub struct BudgetService {
    path: Arc<WritePath>,
}

/// How `holds` and `grants` find the item with an id, and what reading it takes.
struct ById<T> {
    find: fn(&State, u64) -> Option<T>,
    need: fn(u64) -> Need<'static>,
}

/// What `holds` and `grants` list: everything of one node, or the one item with an id.
enum Listed {
    Node(pb::NodeRef),
    Id(u64),
}

impl BudgetService {
    pub fn server(path: Arc<WritePath>) -> BudgetServer<Self> {
        BudgetServer::new(BudgetService { path })
            .max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX)
    }

    async fn mutate<Req: MutatingRequest, Resp: FromOutcome>(
        &self,
        caller: Option<u64>,
        request: Req,
    ) -> Result<Resp, Status> {
        respond(&self.path, caller, request.into_command()?).await
    }

    /// A reservation: denied on the leader without a log entry when committed state already
    /// denies it (`WritePath::fast_denial`), otherwise written.
    async fn reserve_one(
        &self,
        caller: Option<u64>,
        request: pb::ReserveRequest,
    ) -> Result<pb::ReserveResponse, Status> {
        let command = self
            .path
            .authorize_command(caller, request.into_command()?)?;
        let mut response = match self.path.fast_denial(&command).await {
            Some((denial, log_index)) => {
                pb::ReserveResponse::from_outcome(Outcome::Denied(denial), log_index)?
            }
            None => respond(&self.path, caller, command).await?,
        };
        self.name_denied_node(response.denial_mut());
        Ok(response)
    }

    async fn charge_one(
        &self,
        caller: Option<u64>,
        request: pb::ChargeRequest,
    ) -> Result<pb::ChargeResponse, Status> {
        let mut response: pb::ChargeResponse = self.mutate(caller, request).await?;
        self.name_denied_node(response.denial_mut());
        Ok(response)
    }

    /// Adds the path of the node that denied, for callers that show it.
    fn name_denied_node(&self, denied: Option<&mut pb::Denied>) {
        if let Some(denied) = denied {
            denied.node_path = self
                .path
                .read_local(|state, _| state.path_of(denied.node_id).unwrap_or_default());
        }
    }

    /// One batch item, its failure carried in the item rather than failing the batch. Each
    /// item is judged alone: a batch may mix roots, and a forbidden item fails by itself.
    async fn batch_item(&self, caller: Option<u64>, item: pb::BatchItem) -> pb::BatchItemResult {
        use pb::batch_item::Op;
        use pb::batch_item_result::Result as Item;
        let result = match item.op {
            Some(Op::Reserve(r)) => self.reserve_one(caller, r).await.map(Item::Reserve),
            Some(Op::Commit(r)) => self.mutate(caller, r).await.map(Item::Commit),
            Some(Op::Release(r)) => self.mutate(caller, r).await.map(Item::Release),
            Some(Op::Charge(r)) => self.charge_one(caller, r).await.map(Item::Charge),
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
    }

    /// The one shape of `holds` and `grants`: a node's items (`of_node`), or the item with an
    /// id (`by_id`), none if it does not exist.
    /// The caller needs viewer access to the node, or to the node the item with the id is on
    /// (`by_id.need`); an id that names nothing lists nothing.
    async fn list<T>(
        &self,
        caller: Option<u64>,
        allow_stale: bool,
        listed: Listed,
        of_node: fn(&State, u64) -> Result<Vec<T>, CoreError>,
        by_id: ById<T>,
    ) -> Result<Vec<T>, Status> {
        match listed {
            Listed::Node(node) => {
                let node = NodeRef::try_from(node)?;
                self.path
                    .authorize(caller, Need::Node(&node, Access::Viewer))?;
                read(&self.path, allow_stale, |state, _| {
                    state.resolve(&node).and_then(|id| of_node(state, id))
                })
                .await?
                .map_err(|e| status_from_error(&e))
            }
            Listed::Id(id) => {
                match self.path.authorize(caller, (by_id.need)(id)) {
                    Err(status) if status.code() == tonic::Code::NotFound => return Ok(Vec::new()),
                    denied => denied?,
                };
                Ok(
                    read(&self.path, allow_stale, |state, _| (by_id.find)(state, id))
                        .await?
                        .into_iter()
                        .collect(),
                )
            }
        }
    }
}

#[tonic::async_trait]
impl Budget for BudgetService {
    async fn reserve(
        &self,
        request: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        let caller = self.path.caller(&request)?;
        Ok(Response::new(
            self.reserve_one(caller, request.into_inner()).await?,
        ))
    }

    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let caller = self.path.caller(&request)?;
        Ok(Response::new(
            self.mutate(caller, request.into_inner()).await?,
        ))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let caller = self.path.caller(&request)?;
        Ok(Response::new(
            self.mutate(caller, request.into_inner()).await?,
        ))
    }

    async fn charge(
        &self,
        request: Request<pb::ChargeRequest>,
    ) -> Result<Response<pb::ChargeResponse>, Status> {
        let caller = self.path.caller(&request)?;
        Ok(Response::new(
            self.charge_one(caller, request.into_inner()).await?,
        ))
    }

    async fn batch(
        &self,
        request: Request<pb::BatchRequest>,
    ) -> Result<Response<pb::BatchResponse>, Status> {
        let caller = self.path.caller(&request)?;
        let items = request.into_inner().items;
        if items.len() > BATCH_ITEMS_MAX {
            return Err(Status::invalid_argument(format!(
                "a batch carries at most {BATCH_ITEMS_MAX} items, not {}",
                items.len()
            )));
        }
        if !self.path.is_leader() {
            return Err(self.path.not_leader().into());
        }
        // Every item is queued before any is awaited (join_all polls them in order), so
        // they usually share one log entry.
        let items = items.into_iter().map(|item| self.batch_item(caller, item));
        let results = futures_util::future::join_all(items).await;
        Ok(Response::new(pb::BatchResponse { results }))
    }

    async fn show(
        &self,
        request: Request<pb::ShowRequest>,
    ) -> Result<Response<pb::ShowResponse>, Status> {
        let caller = self.path.caller(&request)?;
        let request = request.into_inner();
        let node = node_ref(request.node)?;
        self.path
            .authorize(caller, Need::Node(&node, Access::Viewer))?;
        let at = now_ms();
        let view = read(&self.path, request.allow_stale, |state, _| {
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
        let caller = self.path.caller(&request)?;
        let request = request.into_inner();
        let node = node_ref(request.node)?;
        self.path
            .authorize(caller, Need::Node(&node, Access::Viewer))?;
        let at = now_ms();
        let (id, path, limits) = read(&self.path, request.allow_stale, |state, _| {
            let id = state.resolve(&node)?;
            Ok::<_, CoreError>((id, state.path_of(id)?, state.usage(id, at)?))
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
        use pb::holds_request::Target;
        let caller = self.path.caller(&request)?;
        let request = request.into_inner();
        let listed = match request.target {
            Some(Target::Node(node)) => Listed::Node(node),
            Some(Target::ReservationId(id)) => Listed::Id(id),
            None => {
                return Err(Status::invalid_argument(
                    "a node or a reservation id is required",
                ))
            }
        };
        let holds = self
            .list(
                caller,
                request.allow_stale,
                listed,
                State::holds_of,
                ById {
                    find: State::hold,
                    need: |id| Need::Reservation(id, Access::Viewer),
                },
            )
            .await?;
        Ok(Response::new(pb::HoldsResponse {
            holds: holds.into_iter().map(Into::into).collect(),
        }))
    }

    async fn grants(
        &self,
        request: Request<pb::GrantsRequest>,
    ) -> Result<Response<pb::GrantsResponse>, Status> {
        use pb::grants_request::Target;
        let caller = self.path.caller(&request)?;
        let request = request.into_inner();
        let listed = match request.target {
            Some(Target::Node(node)) => Listed::Node(node),
            Some(Target::GrantId(id)) => Listed::Id(id),
            None => return Err(Status::invalid_argument("a node or a grant id is required")),
        };
        let grants = self
            .list(
                caller,
                request.allow_stale,
                listed,
                State::grants_of,
                ById {
                    find: State::grant,
                    need: |id| Need::Grant(id, Access::Viewer),
                },
            )
            .await?;
        Ok(Response::new(pb::GrantsResponse {
            grants: grants.into_iter().map(Into::into).collect(),
        }))
    }
}
