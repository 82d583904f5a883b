//! Raft traffic between members over gRPC on the peer port: one lazily connected channel per
//! peer, reused for every RPC, each bounded by openraft's own deadline.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::OptionalSend;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::metrics::Metrics;
use crate::pb::raft_client::RaftClient;
use crate::pb::{RaftMessage, SnapshotChunk};
use crate::store::{decode, encode};
use crate::types::{NodeId, PeerNode, Snapshot, SnapshotData, TypeConfig, Vote};

/// Snapshot bytes per streamed chunk (well under the peer server's message limit).
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// Largest message the peer port accepts (one append-entries batch).
pub const PEER_MESSAGE_BYTES_MAX: usize = 64 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Default)]
pub struct PeerNetwork {
    metrics: Arc<Metrics>,
    /// Mutual TLS to the other members' peer ports (`tls.rs`), when configured.
    tls: Option<ClientTlsConfig>,
}

impl PeerNetwork {
    pub fn new(metrics: Arc<Metrics>, tls: Option<ClientTlsConfig>) -> Self {
        PeerNetwork { metrics, tls }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> Self::Network {
        PeerClient::new(
            target,
            &node.peer_addr,
            self.metrics.clone(),
            self.tls.clone(),
        )
    }
}

pub struct PeerClient {
    target: NodeId,
    client: Result<RaftClient<Channel>, String>,
    metrics: Arc<Metrics>,
}

impl PeerClient {
    fn new(
        target: NodeId,
        peer_addr: &str,
        metrics: Arc<Metrics>,
        tls: Option<ClientTlsConfig>,
    ) -> Self {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client = Endpoint::from_shared(format!("{scheme}://{peer_addr}"))
            .and_then(|endpoint| match tls {
                Some(tls) => endpoint.tls_config(tls),
                None => Ok(endpoint),
            })
            .map(|endpoint| {
                let channel = endpoint
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .connect_lazy();
                RaftClient::new(channel)
                    .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
                    .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX)
            })
            .map_err(|e| format!("bad peer address {peer_addr:?}: {e}"));
        PeerClient {
            target,
            client,
            metrics,
        }
    }

    fn client(&self) -> Result<RaftClient<Channel>, RPCError<TypeConfig>> {
        self.client
            .clone()
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e))))
    }

    /// One unary call: encode, send under the deadline, decode the remote `Result`.
    async fn call<Req, Resp, S, Fut>(
        &self,
        request: &Req,
        option: &RPCOption,
        send: S,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        S: FnOnce(RaftClient<Channel>, tonic::Request<RaftMessage>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>> + Send + 'static,
    {
        let data = encode(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        #[cfg(feature = "fault-hooks")]
        self.disturb(&data, option, send.clone()).await;
        let mut message = tonic::Request::new(RaftMessage { data });
        message.set_timeout(option.hard_ttl());
        let reply = tokio::time::timeout(option.hard_ttl(), send(self.client()?, message))
            .await
            .map_err(|_| {
                RPCError::Unreachable(Unreachable::new(&std::io::Error::other(
                    "peer RPC timed out",
                )))
            })?
            .map_err(|status| status_error(self.target, status))?;
        let result: Result<Resp, String> = decode(&reply.into_inner().data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e))))
    }

    /// Test-only: holds this RPC back and perhaps sends a copy of it later, whose answer is
    /// dropped, as the fault control file says (see `crate::faults`).
    #[cfg(feature = "fault-hooks")]
    async fn disturb<S, Fut>(&self, data: &[u8], option: &RPCOption, send: S)
    where
        S: FnOnce(RaftClient<Channel>, tonic::Request<RaftMessage>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>> + Send + 'static,
    {
        let plan = crate::faults::plan(true);
        if let (Some(after), Ok(client)) = (plan.duplicate_after, self.client()) {
            let copy = RaftMessage {
                data: data.to_vec(),
            };
            let ttl = option.hard_ttl();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let mut message = tonic::Request::new(copy);
                message.set_timeout(ttl);
                let _ = tokio::time::timeout(ttl, send(client, message)).await;
            });
        }
        if !plan.delay.is_zero() {
            tokio::time::sleep(plan.delay).await;
        }
    }
}

fn status_error(target: NodeId, status: tonic::Status) -> RPCError<TypeConfig> {
    let error = std::io::Error::other(format!("peer {target}: {status}"));
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            RPCError::Unreachable(Unreachable::new(&error))
        }
        _ => RPCError::Network(NetworkError::new(&error)),
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let started = Instant::now();
        let carries_entries = !rpc.entries.is_empty();
        let response = self
            .call(&rpc, &option, |mut c, m| async move {
                c.append_entries(m).await
            })
            .await;
        // Heartbeats carry nothing to append or fsync: they would hide the replication cost.
        if carries_entries {
            self.metrics
                .replication_rtt_us
                .record_duration(started.elapsed());
        }
        response
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, &option, |mut c, m| async move { c.vote(m).await })
            .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, &option, |mut c, m| async move { c.pre_vote(m).await })
            .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&req, &option, |mut c, m| async move {
            c.transfer_leader(m).await
        })
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        #[cfg(feature = "fault-hooks")]
        tokio::time::sleep(crate::faults::plan(false).delay).await;
        let network = |e: &dyn std::error::Error| {
            StreamingError::Network(NetworkError::new(&std::io::Error::other(e.to_string())))
        };
        let vote = encode(&vote).map_err(|e| network(&e))?;
        let meta = encode(&snapshot.meta).map_err(|e| network(&e))?;
        let data = snapshot.snapshot.into_inner();
        let mut chunks: Vec<SnapshotChunk> = data
            .chunks(SNAPSHOT_CHUNK_BYTES)
            .map(|chunk| SnapshotChunk {
                vote: Vec::new(),
                meta: Vec::new(),
                data: chunk.to_vec(),
            })
            .collect();
        if chunks.is_empty() {
            chunks.push(SnapshotChunk::default());
        }
        chunks[0].vote = vote;
        chunks[0].meta = meta;
        let mut client = self
            .client
            .clone()
            .map_err(|e| network(&std::io::Error::other(e)))?;
        let send = client.install_snapshot(futures_util::stream::iter(chunks));
        let reply = tokio::select! {
            reply = send => reply.map_err(|status| network(&status))?,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        let result: Result<SnapshotResponse<TypeConfig>, String> =
            decode(&reply.into_inner().data).map_err(|e| network(&e))?;
        result.map_err(|e| network(&std::io::Error::other(e)))
    }
}
