//! The Webhook service: add, remove and list a root's subscriptions (replicated, through the
//! leader like every admin command), and test one from the member that receives the call.

use std::sync::Arc;
use std::time::Instant;

use pb::webhook_server::{Webhook, WebhookServer};
use purser_core::{Access, Need, NodeRef, State, WebhookView};
use purser_proto::convert::{status_from_error, MutatingRequest};
use purser_proto::pb;
use purser_proto::webhook::{root_ref, webhook_view};
use tonic::{Request, Response, Status};

use super::{respond, CLIENT_MESSAGE_BYTES_MAX};
use crate::webhook::WebhookClient;
use crate::write::WritePath;

#[derive(Clone)]
pub struct WebhookService {
    path: Arc<WritePath>,
    client: WebhookClient,
}

impl WebhookService {
    pub fn server(path: Arc<WritePath>, client: WebhookClient) -> WebhookServer<Self> {
        WebhookServer::new(WebhookService { path, client })
            .max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX)
    }

    /// The subscriptions `TestWebhook` pings: one by id, or every one of a root.
    /// The caller needs admin access over the root the subscriptions belong to.
    fn to_test(
        &self,
        caller: Option<u64>,
        request: pb::TestWebhookRequest,
    ) -> Result<Vec<WebhookView>, Status> {
        match (request.webhook_id, request.root) {
            (0, None) => Err(Status::invalid_argument("give a webhook_id or a root")),
            (id, None) => {
                self.path.authorize(caller, Need::Webhook(id))?;
                let hook = self.path.read_local(|state, _| state.webhook(id));
                Ok(vec![hook.ok_or_else(|| {
                    Status::not_found(format!("webhook {id} does not exist"))
                })?])
            }
            (0, Some(root)) => {
                let root = NodeRef::try_from(root)?;
                self.path
                    .authorize(caller, Need::Root(&root, Access::Admin))?;
                self.path
                    .read_local(|state, _| root_id(state, &root).map(|id| state.webhooks_of(id)))
            }
            (_, Some(_)) => Err(Status::invalid_argument(
                "give a webhook_id or a root, not both",
            )),
        }
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
impl Webhook for WebhookService {
    async fn add_webhook(
        &self,
        request: Request<pb::AddWebhookRequest>,
    ) -> Result<Response<pb::AddWebhookResponse>, Status> {
        let caller = self.path.caller(&request)?;
        let request = request.into_inner();
        self.client
            .check_destination(&request.url)
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let command = request.into_command()?;
        Ok(Response::new(respond(&self.path, caller, command).await?))
    }

    async fn remove_webhook(
        &self,
        request: Request<pb::RemoveWebhookRequest>,
    ) -> Result<Response<pb::RemoveWebhookResponse>, Status> {
        let caller = self.path.caller(&request)?;
        let command = request.into_inner().into_command()?;
        Ok(Response::new(respond(&self.path, caller, command).await?))
    }

    async fn list_webhooks(
        &self,
        request: Request<pb::ListWebhooksRequest>,
    ) -> Result<Response<pb::ListWebhooksResponse>, Status> {
        let caller = self.path.caller(&request)?;
        let root = root_ref(request.into_inner().root)?;
        self.path
            .authorize(caller, Need::Root(&root, Access::Admin))?;
        let listed = self
            .path
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
            .await??;
        let events_written = *self.path.sm.events_written().borrow();
        Ok(Response::new(pb::ListWebhooksResponse {
            webhooks: listed,
            events_written,
        }))
    }

    async fn test_webhook(
        &self,
        request: Request<pb::TestWebhookRequest>,
    ) -> Result<Response<pb::TestWebhookResponse>, Status> {
        let caller = self.path.caller(&request)?;
        let hooks = self.to_test(caller, request.into_inner())?;
        // At most `WEBHOOKS_PER_ROOT_MAX` pings, concurrently, each bounded by `POST_TIMEOUT`.
        let pings = hooks.into_iter().map(|hook| async move {
            let started = Instant::now();
            let answer = self.client.ping(&hook).await;
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
