//! The Webhook service: add, remove and list a root's subscriptions (replicated, through the
//! leader like every admin command), and test one from the member that receives the call.

use std::sync::Arc;
use std::time::Instant;

use purser_core::{Command, NodeRef, State, WebhookView};
use purser_proto::convert::{status_from_error, FromOutcome, MutatingRequest};
use purser_proto::pb;
use purser_proto::webhook::{root_ref, webhook_view};
use tonic::{Request, Response, Status};

use crate::node::PurserNode;
use crate::services::write_status;

#[derive(Clone)]
pub struct WebhookService {
    node: Arc<PurserNode>,
}

impl WebhookService {
    pub fn new(node: Arc<PurserNode>) -> Self {
        WebhookService { node }
    }

    pub fn server(node: Arc<PurserNode>) -> pb::webhook_server::WebhookServer<Self> {
        pb::webhook_server::WebhookServer::new(Self::new(node))
            .max_decoding_message_size(crate::serve::CLIENT_MESSAGE_BYTES_MAX)
    }

    async fn apply<Resp: FromOutcome>(&self, command: Command) -> Result<Resp, Status> {
        let written = self.node.write(command).await.map_err(write_status)?;
        let applied = written.result.map_err(|e| status_from_error(&e))?;
        Ok(Resp::from_outcome(applied.outcome, written.log_index)?)
    }
}

/// The id of `root`, which must be a root node.
fn root_id(state: &State, root: &NodeRef) -> Result<u64, Status> {
    let id = state.resolve(root).map_err(|e| status_from_error(&e))?;
    if state.root_of_node(id) != Some(id) {
        return Err(Status::invalid_argument(
            "webhooks belong to a root node (a tenant): name the root",
        ));
    }
    Ok(id)
}

#[tonic::async_trait]
impl pb::webhook_server::Webhook for WebhookService {
    async fn add_webhook(
        &self,
        request: Request<pb::AddWebhookRequest>,
    ) -> Result<Response<pb::AddWebhookResponse>, Status> {
        let command = request.into_inner().into_command()?;
        Ok(Response::new(self.apply(command).await?))
    }

    async fn remove_webhook(
        &self,
        request: Request<pb::RemoveWebhookRequest>,
    ) -> Result<Response<pb::RemoveWebhookResponse>, Status> {
        let command = request.into_inner().into_command()?;
        Ok(Response::new(self.apply(command).await?))
    }

    async fn list_webhooks(
        &self,
        request: Request<pb::ListWebhooksRequest>,
    ) -> Result<Response<pb::ListWebhooksResponse>, Status> {
        let root = root_ref(request.into_inner().root)?;
        let listed = self
            .node
            .read(|state, _| {
                let id = root_id(state, &root)?;
                let path = state.path_of(id).map_err(|e| status_from_error(&e))?;
                Ok::<_, Status>(
                    state
                        .webhooks_of(id)
                        .into_iter()
                        .map(|w| webhook_view(w, path.clone()))
                        .collect::<Vec<_>>(),
                )
            })
            .await
            .map_err(write_status)??;
        let events_written = *self.node.sm.events_written().borrow();
        Ok(Response::new(pb::ListWebhooksResponse {
            webhooks: listed,
            events_written,
        }))
    }

    async fn test_webhook(
        &self,
        request: Request<pb::TestWebhookRequest>,
    ) -> Result<Response<pb::TestWebhookResponse>, Status> {
        let request = request.into_inner();
        let hooks: Vec<WebhookView> = match (request.webhook_id, request.root) {
            (0, None) => return Err(Status::invalid_argument("give a webhook_id or a root")),
            (id, None) => {
                let hook = self.node.read_local(|state, _| state.webhook(id));
                vec![hook.ok_or_else(|| Status::not_found(format!("webhook {id} does not exist")))?]
            }
            (0, Some(root)) => {
                let root = NodeRef::try_from(root)?;
                self.node
                    .read_local(|state, _| root_id(state, &root).map(|id| state.webhooks_of(id)))?
            }
            (_, Some(_)) => {
                return Err(Status::invalid_argument(
                    "give a webhook_id or a root, not both",
                ))
            }
        };
        // At most `WEBHOOKS_PER_ROOT_MAX` pings, concurrently, each bounded by `POST_TIMEOUT`.
        let pings = hooks.into_iter().map(|hook| async move {
            let started = Instant::now();
            let answer = crate::webhook::ping(&hook).await;
            let (http_status, error) = match answer {
                Ok(status) => (u32::from(status), String::new()),
                Err(e) => (0, e.to_string()),
            };
            pb::WebhookTestResult {
                webhook_id: hook.id,
                url: hook.url,
                http_status,
                error,
                elapsed_ms: started.elapsed().as_millis() as u64,
            }
        });
        let results = futures_util::future::join_all(pings).await;
        Ok(Response::new(pb::TestWebhookResponse { results }))
    }
}
