//! Raft traffic between members over gRPC on the peer port: one lazily connected channel per
//! peer, reused for every RPC, each bounded by openraft's own deadline.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::OptionalSend;
use tokio::sync::Semaphore;
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
/// Append requests on the way to one follower without an answer yet: the pipeline's depth
/// by default (`--replication-depth`).
pub const STREAM_APPEND_DEPTH: usize = 16;
pub const STREAM_APPEND_DEPTH_MAX: usize = 64;

#[derive(Clone)]
pub struct PeerNetwork {
    metrics: Arc<Metrics>,
    /// Mutual TLS to the other members' peer ports (`tls.rs`), when configured.
    tls: Option<ClientTlsConfig>,
    depth: usize,
}

impl PeerNetwork {
    pub fn new(metrics: Arc<Metrics>, tls: Option<ClientTlsConfig>, depth: usize) -> Self {
        PeerNetwork {
            metrics,
            tls,
            depth,
        }
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
            self.depth,
        )
    }
}

pub struct PeerClient {
    target: NodeId,
    client: Result<RaftClient<Channel>, String>,
    metrics: Arc<Metrics>,
    depth: usize,
}

impl PeerClient {
    fn new(
        target: NodeId,
        peer_addr: &str,
        metrics: Arc<Metrics>,
        tls: Option<ClientTlsConfig>,
        depth: usize,
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
                    // A replication stream waits on its answers: a dead peer is found by
                    // keepalive, not by a deadline per call.
                    .keep_alive_timeout(Duration::from_secs(5))
                    .keep_alive_while_idle(true)
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
            depth,
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
        disturb(self.client()?, &data, option.hard_ttl(), send.clone()).await;
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
}

/// Test-only: holds an RPC back and perhaps sends a copy of it later through `client`, whose
/// answer is dropped, as the fault control file says (see `crate::faults`).
#[cfg(feature = "fault-hooks")]
async fn disturb<S, Fut>(client: RaftClient<Channel>, data: &[u8], ttl: Duration, send: S)
where
    S: FnOnce(RaftClient<Channel>, tonic::Request<RaftMessage>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>> + Send + 'static,
{
    let plan = crate::faults::plan(true);
    if let Some(after) = plan.duplicate_after {
        let copy = RaftMessage {
            data: data.to_vec(),
        };
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

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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

    /// Pipelined replication over one bidirectional stream: up to `depth` requests travel
    /// before the first is answered; answers come back in order. Depth 1 is stop-and-wait:
    /// one unary append at a time (openraft's default).
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        if self.depth <= 1 {
            return openraft::network::stream_append_sequential(self, input, option);
        }
        Box::pin(async move {
            let mut client = self.client()?;
            let depth = Arc::new(Semaphore::new(self.depth));
            let permits = depth.clone();
            // When each request in flight was sent, for the replication round trip.
            let sent = Arc::new(std::sync::Mutex::new(VecDeque::with_capacity(self.depth)));
            let sent_at = sent.clone();
            #[cfg(feature = "fault-hooks")]
            let copies = client.clone();
            let requests = input.then(move |rpc| {
                let (permits, sent_at) = (permits.clone(), sent_at.clone());
                #[cfg(feature = "fault-hooks")]
                let copies = copies.clone();
                async move {
                    // Given back as its answer arrives (answers come in order).
                    permits.acquire().await.ok()?.forget();
                    let data = encode(&rpc).ok()?;
                    #[cfg(feature = "fault-hooks")]
                    disturb(
                        copies,
                        &data,
                        Duration::from_secs(2),
                        |mut c, m| async move { c.append_entries(m).await },
                    )
                    .await;
                    lock(&sent_at).push_back((Instant::now(), !rpc.entries.is_empty()));
                    Some(RaftMessage { data })
                }
            });
            // A request that could not be sent ends the stream: every answer must match one.
            let requests = requests
                .take_while(|m| std::future::ready(m.is_some()))
                .filter_map(std::future::ready);
            let answers = client
                .stream_append(requests)
                .await
                .map_err(|status| status_error(self.target, status))?
                .into_inner();
            let target = self.target;
            let metrics = self.metrics.clone();
            let answers = answers.map(move |answer| {
                depth.add_permits(1);
                // Heartbeats carry nothing to append or fsync: they would hide the cost.
                if let Some((at, true)) = lock(&sent).pop_front() {
                    metrics.replication_rtt_us.record_duration(at.elapsed());
                }
                let answer = answer.map_err(|status| status_error(target, status))?;
                // A refusal or a stopped follower arrives as the stream's status instead.
                decode::<StreamAppendResult<TypeConfig>>(&answer.data)
                    .map_err(|e| RPCError::Network(NetworkError::new(&e)))
            });
            let answers: BoxStream<'s, _> = Box::pin(answers);
            Ok(answers)
        })
    }

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
        let mut client = self
            .client
            .clone()
            .map_err(|e| network(&std::io::Error::other(e)))?;
        // Read a chunk at a time as the stream is sent (the file is not held in memory); a
        // read error ends the stream early, the follower refuses what it got (its checksum
        // fails), and the error is reported here.
        let failed = Arc::new(std::sync::Mutex::new(None::<std::io::Error>));
        let chunks = futures_util::stream::unfold(
            (snapshot.snapshot, Some((vote, meta)), failed.clone()),
            |(mut data, first, failed)| async move {
                let read = tokio::task::spawn_blocking(move || {
                    let chunk = data.read_chunk(SNAPSHOT_CHUNK_BYTES);
                    (data, chunk)
                })
                .await;
                let (data, chunk) = match read {
                    Ok((data, Ok(chunk))) => (data, chunk),
                    Ok((_, Err(e))) => {
                        *lock(&failed) = Some(e);
                        return None;
                    }
                    Err(e) => {
                        *lock(&failed) = Some(std::io::Error::other(e));
                        return None;
                    }
                };
                // The first chunk goes even when empty: it carries the vote and the metadata.
                if chunk.is_empty() && first.is_none() {
                    return None;
                }
                let (vote, meta) = first.unwrap_or_default();
                let chunk = SnapshotChunk {
                    vote,
                    meta,
                    data: chunk,
                };
                Some((chunk, (data, None, failed)))
            },
        );
        let send = client.install_snapshot(chunks);
        let reply = tokio::select! {
            reply = send => reply,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        if let Some(e) = lock(&failed).take() {
            return Err(network(&e));
        }
        let reply = reply.map_err(|status| network(&status))?;
        let result: Result<SnapshotResponse<TypeConfig>, String> =
            decode(&reply.into_inner().data).map_err(|e| network(&e))?;
        result.map_err(|e| network(&std::io::Error::other(e)))
    }
}
