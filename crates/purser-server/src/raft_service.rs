//! The peer port's gRPC service: hands Raft messages from other members to the local node,
//! after checking who sent them.
//!
//! Every Raft message names its sender (the leader of an append or a snapshot, the candidate
//! of a vote). A message is let in only when
//! - with mutual TLS, the certificate the connection presented names that member
//!   ([`crate::tls::member_name`]): a client certificate of the cluster's CA, or one member's
//!   certificate, cannot speak for a member; and
//! - the sender is in this member's membership (voters and learners of the configuration in
//!   its log). Two cases let in a sender this member does not know yet: this member is not in
//!   its own membership (it is new, or was removed, and has nothing to protect), or the
//!   message itself carries a membership that names the sender (a snapshot, or appended
//!   entries with a configuration change).
//!
//! A member that missed the change that added the member now leading therefore refuses that
//! leader until leadership moves to a member it knows, or until it is removed and added back.
//!
//! A snapshot arrives as a stream of chunks; it is written to a file in the data directory as
//! it comes (never held in memory while it trickles in), at most [`SNAPSHOT_STREAMS_MAX`] at
//! once, and read back once whole.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use openraft::async_runtime::WatchReceiver;
use openraft::vote::RaftLeaderId;
use openraft::EntryPayload;
use rustls::pki_types::CertificateDer;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status, Streaming};

use crate::network::PEER_MESSAGE_BYTES_MAX;
use crate::pb::raft_server::{Raft as RaftRpc, RaftServer};
use crate::pb::{RaftMessage, SnapshotChunk};
use crate::store::{decode, encode};
use crate::types::{NodeId, Raft, Snapshot, SnapshotData, SnapshotMeta, TypeConfig, Vote};

type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
type VoteRequest = openraft::raft::VoteRequest<TypeConfig>;
type TransferLeaderRequest = openraft::raft::TransferLeaderRequest<TypeConfig>;

/// Largest snapshot a member accepts from a leader.
pub const SNAPSHOT_BYTES_MAX: u64 = 4 << 30;
/// Snapshot streams received at once; more are refused (the leader retries). One leader sends
/// one at a time; the second slot lets a retry start while a dropped stream winds down.
pub const SNAPSHOT_STREAMS_MAX: usize = 2;
/// The directory, inside the data directory, where snapshots are received.
const SPOOL_DIR: &str = "snapshot-incoming";

pub struct RaftService {
    raft: Raft,
    /// Whether the peer port is mutual TLS, so that certificates name their members.
    tls: bool,
    spool: PathBuf,
    snapshot_streams: Semaphore,
    spooled: AtomicU64,
}

impl RaftService {
    /// The service; clears what an earlier run left half-received in `data_dir`.
    pub fn server(raft: Raft, tls: bool, data_dir: &Path) -> std::io::Result<RaftServer<Self>> {
        let spool = data_dir.join(SPOOL_DIR);
        if spool.exists() {
            std::fs::remove_dir_all(&spool)?;
        }
        std::fs::create_dir_all(&spool)?;
        let service = RaftService {
            raft,
            tls,
            spool,
            snapshot_streams: Semaphore::new(SNAPSHOT_STREAMS_MAX),
            spooled: AtomicU64::new(0),
        };
        Ok(RaftServer::new(service)
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX))
    }

    /// Whether `sender` may send this member a Raft message over the connection `request`
    /// came on (see the module comment). `brings`: whether the message itself carries a
    /// membership that names the sender.
    fn admit<T>(&self, request: &Request<T>, sender: NodeId, brings: bool) -> Result<(), Status> {
        self.peer(request).admit(&self.raft, sender, brings)
    }

    fn peer<T>(&self, request: &Request<T>) -> Peer {
        Peer {
            tls: self.tls,
            certs: request.peer_certs(),
        }
    }

    /// Receives the chunks after the first into a spool file, bounded in size; the whole
    /// snapshot's bytes.
    async fn spool(
        &self,
        first: Vec<u8>,
        chunks: &mut Streaming<SnapshotChunk>,
    ) -> Result<Vec<u8>, Status> {
        let n = self.spooled.fetch_add(1, Ordering::Relaxed);
        let file = Spooled(self.spool.join(format!("{n}.part")));
        let io = |e: std::io::Error| Status::internal(format!("spooling a snapshot: {e}"));
        let mut out =
            tokio::io::BufWriter::new(tokio::fs::File::create(&file.0).await.map_err(io)?);
        let mut len = first.len() as u64;
        out.write_all(&first).await.map_err(io)?;
        drop(first);
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            len += chunk.data.len() as u64;
            if len > SNAPSHOT_BYTES_MAX {
                return Err(Status::resource_exhausted(format!(
                    "snapshot larger than this member accepts ({SNAPSHOT_BYTES_MAX} bytes)"
                )));
            }
            out.write_all(&chunk.data).await.map_err(io)?;
        }
        out.flush().await.map_err(io)?;
        drop(out);
        tokio::fs::read(&file.0).await.map_err(io)
    }
}

/// Who is at the other end of a peer connection, as far as its certificate says.
struct Peer {
    tls: bool,
    certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

impl Peer {
    /// See [`RaftService::admit`].
    fn admit(&self, raft: &Raft, sender: NodeId, brings: bool) -> Result<(), Status> {
        if self.tls {
            let named = self.certs.as_ref().is_some_and(|certs| {
                certs
                    .first()
                    .is_some_and(|cert| crate::tls::names_member(cert, sender))
            });
            if !named {
                return Err(Status::permission_denied(format!(
                    "the peer certificate does not name member {sender} ({})",
                    crate::tls::member_name(sender)
                )));
            }
        }
        let metrics = raft.metrics();
        let metrics = metrics.borrow_watched();
        let membership = metrics.membership_config.membership();
        let known = membership.get_node(&sender).is_some();
        let outside = membership.get_node(&metrics.id).is_none();
        if known || outside || brings {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "member {sender} is not in this member's membership"
        )))
    }
}

/// A spool file, removed when the stream it holds is done with (received or abandoned).
struct Spooled(PathBuf);

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
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

fn sender(vote: &Vote) -> NodeId {
    *vote.leader_id().node_id()
}

/// Whether appended entries carry a configuration that names `sender`.
fn entries_name(rpc: &AppendEntriesRequest, sender: NodeId) -> bool {
    rpc.entries.iter().any(|entry| match &entry.payload {
        EntryPayload::Membership(m) => m.get_node(&sender).is_some(),
        _ => false,
    })
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    type StreamAppendStream = BoxStream<'static, Result<RaftMessage, Status>>;

    /// Pipelined appends: each message is checked as a unary one is; the first that does not
    /// decode or is not let in ends the requests, and its refusal ends the answers, after
    /// those of the requests before it.
    async fn stream_append(
        &self,
        request: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        let peer = self.peer(&request);
        let refusal: Arc<Mutex<Option<Status>>> = Arc::default();
        let (raft, refused) = (self.raft.clone(), refusal.clone());
        let requests = request.into_inner().map(move |message| {
            let admitted = message.and_then(|m| {
                let rpc: AppendEntriesRequest = decode(&m.data).map_err(bad_request)?;
                let from = sender(&rpc.vote);
                peer.admit(&raft, from, entries_name(&rpc, from))?;
                Ok(rpc)
            });
            match admitted {
                Ok(rpc) => Some(rpc),
                Err(status) => {
                    *refused.lock().unwrap_or_else(PoisonError::into_inner) = Some(status);
                    None
                }
            }
        });
        let requests = requests
            .take_while(|rpc| std::future::ready(rpc.is_some()))
            .filter_map(std::future::ready);
        let answers = self.raft.stream_append(requests).map(|result| {
            let result = result.map_err(|fatal| Status::unavailable(fatal.to_string()))?;
            let data = encode(&result).map_err(|e| Status::internal(e.to_string()))?;
            Ok(RaftMessage { data })
        });
        let refusal = futures_util::stream::once(async move {
            refusal
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
        })
        .filter_map(|refused| async move { refused.map(Err) });
        Ok(Response::new(Box::pin(answers.chain(refusal))))
    }

    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc: AppendEntriesRequest = decode(&request.get_ref().data).map_err(bad_request)?;
        let from = sender(&rpc.vote);
        self.admit(&request, from, entries_name(&rpc, from))?;
        reply(self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: VoteRequest = decode(&request.get_ref().data).map_err(bad_request)?;
        self.admit(&request, sender(&rpc.vote), false)?;
        reply(self.raft.vote(rpc).await)
    }

    async fn pre_vote(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc: VoteRequest = decode(&request.get_ref().data).map_err(bad_request)?;
        self.admit(&request, sender(&rpc.vote), false)?;
        reply(self.raft.pre_vote(rpc).await)
    }

    async fn transfer_leader(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc: TransferLeaderRequest = decode(&request.get_ref().data).map_err(bad_request)?;
        self.admit(&request, sender(rpc.from_leader()), false)?;
        reply(self.raft.handle_transfer_leader(rpc).await)
    }

    async fn install_snapshot(
        &self,
        mut request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftMessage>, Status> {
        let first = request
            .get_mut()
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let vote: Vote = decode(&first.vote).map_err(bad_request)?;
        let meta: SnapshotMeta = decode(&first.meta).map_err(bad_request)?;
        let from = sender(&vote);
        let brings = meta.last_membership.membership().get_node(&from).is_some();
        self.admit(&request, from, brings)?;
        let _slot = self.snapshot_streams.try_acquire().map_err(|_| {
            Status::resource_exhausted(format!(
                "{SNAPSHOT_STREAMS_MAX} snapshots are being received already"
            ))
        })?;
        let data = self.spool(first.data, request.get_mut()).await?;
        let snapshot = Snapshot {
            meta,
            snapshot: SnapshotData::bytes(data),
        };
        reply(self.raft.install_full_snapshot(vote, snapshot).await)
    }
}
