//! The peer port's gRPC service: hands Raft messages from other members to the local node.

use futures_util::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::network::PEER_MESSAGE_BYTES_MAX;
use crate::pb::raft_server::{Raft as RaftRpc, RaftServer};
use crate::pb::{RaftMessage, SnapshotChunk};
use crate::store::{decode, encode};
use crate::types::{Raft, Snapshot, SnapshotData, SnapshotMeta, Vote};

/// Largest snapshot a member accepts from a leader.
pub const SNAPSHOT_BYTES_MAX: usize = 4 << 30;

pub struct RaftService {
    raft: Raft,
}

impl RaftService {
    pub fn server(raft: Raft) -> RaftServer<Self> {
        RaftServer::new(RaftService { raft })
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX)
    }
}

fn bad_request(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("undecodable raft message: {e}"))
}

/// Errors travel as text inside the reply: the sender only needs to know the call failed.
fn reply<T: serde::Serialize, E: std::fmt::Display>(
    result: Result<T, E>,
) -> Result<Response<RaftMessage>, Status> {
    let result = result.map_err(|e| e.to_string());
    let data = encode(&result).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftMessage { data }))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc = decode(&request.into_inner().data).map_err(bad_request)?;
        reply(self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc = decode(&request.into_inner().data).map_err(bad_request)?;
        reply(self.raft.vote(rpc).await)
    }

    async fn pre_vote(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc = decode(&request.into_inner().data).map_err(bad_request)?;
        reply(self.raft.pre_vote(rpc).await)
    }

    async fn transfer_leader(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc = decode(&request.into_inner().data).map_err(bad_request)?;
        reply(self.raft.handle_transfer_leader(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftMessage>, Status> {
        let mut chunks = request.into_inner();
        let first = chunks
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let vote: Vote = decode(&first.vote).map_err(bad_request)?;
        let meta: SnapshotMeta = decode(&first.meta).map_err(bad_request)?;
        let mut data = first.data;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            if data.len() + chunk.data.len() > SNAPSHOT_BYTES_MAX {
                return Err(Status::resource_exhausted(
                    "snapshot larger than this member accepts",
                ));
            }
            data.extend_from_slice(&chunk.data);
        }
        let snapshot = Snapshot {
            meta,
            snapshot: SnapshotData::new(data),
        };
        reply(self.raft.install_full_snapshot(vote, snapshot).await)
    }
}
