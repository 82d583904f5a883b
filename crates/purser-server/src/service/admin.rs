//! The Admin service: the tree, limits, grants, roles, prices and the rules' configuration.
//! Every call is one replicated command, answered with what its outcome says.

use std::sync::Arc;

use pb::admin_server::{Admin, AdminServer};
use purser_proto::convert::MutatingRequest;
use purser_proto::pb;
use tonic::{Request, Response, Status};

use super::{respond, CLIENT_MESSAGE_BYTES_MAX};
use crate::write::WritePath;

#[derive(Clone)]
pub struct AdminService {
    path: Arc<WritePath>,
}

impl AdminService {
    pub fn server(path: Arc<WritePath>) -> AdminServer<Self> {
        AdminServer::new(AdminService { path }).max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX)
    }
}

macro_rules! admin_calls {
    ($($method:ident: $request:ident => $response:ident;)*) => {
        #[tonic::async_trait]
        impl Admin for AdminService {
            $(async fn $method(
                &self,
                request: Request<pb::$request>,
            ) -> Result<Response<pb::$response>, Status> {
                let caller = self.path.caller(&request)?;
                let command = request.into_inner().into_command()?;
                Ok(Response::new(respond(&self.path, caller, command).await?))
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
