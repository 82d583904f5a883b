//! The Tokens service: create (the secret is drawn here and answered once; the cluster keeps
//! its hash), list (never a secret) and revoke. What a token may create is judged in
//! `purser_core::access`, like every other command.

use std::sync::Arc;

use pb::tokens_server::{Tokens, TokensServer};
use purser_core::{Access, Command, Need, NodeRef, Op, Outcome, RequestMeta};
use purser_proto::convert::{status_from_error, MutatingRequest};
use purser_proto::pb;
use purser_proto::token::access;
use tonic::{Request, Response, Status};

use super::{respond, CLIENT_MESSAGE_BYTES_MAX};
use crate::auth::new_token;
use crate::write::WritePath;

#[derive(Clone)]
pub struct TokenService {
    path: Arc<WritePath>,
}

impl TokenService {
    pub fn server(path: Arc<WritePath>) -> TokensServer<Self> {
        TokensServer::new(TokenService { path }).max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX)
    }
}

/// `/` is the whole cluster; anything else names a node by path.
fn scope_ref(scope: &str) -> Option<NodeRef> {
    (scope != "/").then(|| NodeRef::Path(scope.trim_matches('/').to_owned()))
}

#[tonic::async_trait]
impl Tokens for TokenService {
    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let caller = self.path.caller(&request)?;
        let r = request.into_inner();
        if r.request_id.is_empty() || r.sent_at_ms == 0 {
            return Err(Status::invalid_argument(
                "request_id and sent_at_ms are required, as for every write",
            ));
        }
        if r.scope.is_empty() {
            return Err(Status::invalid_argument(
                "scope is required: `/` or a node's path",
            ));
        }
        let access = access(r.access)?;
        let (token, secret_hash) = new_token()?;
        let command = Command {
            request: Some(RequestMeta {
                id: r.request_id,
                sent_at_ms: r.sent_at_ms,
            }),
            actor: None,
            op: Op::CreateToken {
                scope: scope_ref(&r.scope),
                access,
                name: r.name,
                expires_in_ms: (r.ttl_ms > 0).then_some(r.ttl_ms),
                secret_hash,
            },
        };
        let command = self.path.authorize_command(caller, command)?;
        let written = self.path.write(command).await?;
        let outcome = written.result.map_err(|e| status_from_error(&e))?.outcome;
        let Outcome::TokenCreated {
            token_id,
            expires_at_ms,
        } = outcome
        else {
            // A retry whose first attempt created the token: its secret was answered (or
            // lost) then, and is not kept anywhere to answer again.
            return Err(Status::already_exists(format!(
                "this request already created a token ({outcome:?}); its secret is shown only once: revoke it and create another"
            )));
        };
        let scope = match scope_ref(&r.scope) {
            None => "/".to_owned(),
            Some(node) => self
                .path
                .read_local(|state, _| state.resolve(&node).and_then(|id| state.path_of(id)))
                .map_err(|e| status_from_error(&e))?,
        };
        Ok(Response::new(pb::CreateTokenResponse {
            log_index: written.log_index,
            token,
            token_id,
            scope,
            access: pb::Access::from(access) as i32,
            expires_at_ms: expires_at_ms.unwrap_or(0),
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let caller = self.path.caller(&request)?;
        let scope = request.into_inner().scope;
        let under = match scope.as_str() {
            "" => match caller {
                Some(actor) => self
                    .path
                    .read_local(|state, _| state.token_scope(actor))
                    .map_err(|e| status_from_error(&e))?,
                None => None,
            },
            "/" => None,
            path => {
                let node = NodeRef::Path(path.trim_matches('/').to_owned());
                // Judged before it is resolved: a path outside the scope stays unknown.
                self.path
                    .authorize(caller, Need::Node(&node, Access::Admin))?;
                Some(
                    self.path
                        .read_local(|state, _| state.resolve(&node))
                        .map_err(|e| status_from_error(&e))?,
                )
            }
        };
        // Listing tokens takes admin access over everything listed.
        let top = under.map(NodeRef::Id);
        let need = match &top {
            Some(node) => Need::Node(node, Access::Admin),
            None => Need::Cluster(Access::Admin),
        };
        self.path.authorize(caller, need)?;
        let tokens = self.path.read_local(|state, _| state.tokens(under));
        Ok(Response::new(pb::ListTokensResponse {
            tokens: tokens.into_iter().map(Into::into).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let caller = self.path.caller(&request)?;
        let command = request.into_inner().into_command()?;
        Ok(Response::new(respond(&self.path, caller, command).await?))
    }
}
