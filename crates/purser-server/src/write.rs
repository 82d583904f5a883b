//! The write path. A command passes the one-outcome check (`answered.rs`), queues for the
//! group-commit batcher (`batcher.rs`) and comes back with the log index it was applied at and
//! its result. Linearizable reads and the leader's fast denials take the same read barrier.
//! Here too: the one place a failed write becomes a gRPC status.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ForwardToLeader, LinearizableReadError, RaftError};
use openraft::{ReadPolicy, ServerState};
use purser_core::{Applied, Command, Denial, Error as CoreError, Outcome, State};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use crate::answered::{Answer, Answered, Begin, Ticket};
use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::store::StateMachineStore;
use crate::types::{LogId, NodeId, PeerNode, Raft, TypeConfig};

/// Commands waiting for a batch at most; beyond it writes are refused as overloaded.
pub const WRITE_QUEUE_MAX: usize = 65_536;

pub use purser_proto::LEADER_METADATA;

/// Why a write was not applied. `NotLeader` and `Overloaded` are safe to retry anywhere;
/// `Unknown` may or may not have been applied: retry with the same request id.
#[derive(Clone, Debug, thiserror::Error)]
pub enum WriteError {
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<(NodeId, PeerNode)> },
    #[error("too many writes queued")]
    Overloaded,
    #[error("outcome unknown: {0}")]
    Unknown(String),
    #[error("shutting down")]
    ShuttingDown,
}

impl WriteError {
    /// Raft's redirect, with the leader it names (if it knows one).
    pub fn forward(to: ForwardToLeader<TypeConfig>) -> Self {
        WriteError::NotLeader {
            leader: to.leader_id.zip(to.leader_node),
        }
    }
}

/// The one place where a failed write becomes a status: everything here is safe to retry
/// with the same request id, elsewhere or later. A redirect carries the leader's client
/// address in the `purser-leader` metadata, so clients follow it.
impl From<WriteError> for Status {
    fn from(error: WriteError) -> Status {
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
}

/// What one command's write returned: the log index it was applied at, and its result.
#[derive(Clone, Debug)]
pub struct Written {
    pub log_index: u64,
    pub result: Result<Applied, CoreError>,
}

impl From<Answer> for Written {
    /// An earlier denial of the request id, answered again without writing the attempt.
    fn from(answer: Answer) -> Written {
        Written {
            log_index: answer.log_index,
            result: Ok(Applied {
                outcome: Outcome::Denied(answer.denial),
                events: Vec::new(),
            }),
        }
    }
}

/// One command waiting in the batcher's queue, with where its answer goes.
pub(crate) struct Queued {
    pub command: Command,
    pub queued: Instant,
    pub reply: oneshot::Sender<Result<Written, WriteError>>,
    /// Marks the attempt in flight until Raft has answered the entry it went into.
    pub ticket: Option<Ticket>,
}

/// What the one-outcome check let through.
enum Admitted {
    /// Write it; the ticket marks the attempt in flight.
    Write(Option<Ticket>),
    /// An earlier attempt of its request id was denied, and none took effect: the same.
    Denied(Answer),
}

/// A member's Raft node and applied state, and the way writes and linearizable reads reach
/// them. Shared by the client services and the background tasks.
pub struct WritePath {
    pub raft: Raft,
    pub sm: StateMachineStore,
    pub metrics: Arc<Metrics>,
    lease_reads: bool,
    /// Calls must carry a live token (`auth.rs`).
    pub(crate) auth: bool,
    queue: mpsc::Sender<Queued>,
    answered: Arc<Answered>,
}

impl WritePath {
    /// The write path and the queue its batcher takes commands from.
    pub(crate) fn new(
        raft: Raft,
        sm: StateMachineStore,
        metrics: Arc<Metrics>,
        lease_reads: bool,
        auth: bool,
    ) -> (Self, mpsc::Receiver<Queued>) {
        let (queue, queued) = mpsc::channel(WRITE_QUEUE_MAX);
        let path = WritePath {
            raft,
            sm,
            metrics,
            lease_reads,
            auth,
            queue,
            answered: Arc::new(Answered::default()),
        };
        (path, queued)
    }

    /// Proposes one command through the group-commit batcher and waits for its result. An
    /// attempt of a request id this member already denied gets the same denial, unwritten
    /// (see `answered.rs`). A planted bug, when armed, writes a copy behind it
    /// (`planted.rs`).
    pub async fn write(&self, command: Command) -> Result<Written, WriteError> {
        let copy = crate::planted::double_apply(&command);
        let written = self.write_once(command).await;
        if let Some(copy) = copy {
            let _ = self.write_once(copy).await;
        }
        written
    }

    async fn write_once(&self, command: Command) -> Result<Written, WriteError> {
        let queued = Instant::now();
        let ticket = match self.admit(&command).await? {
            Admitted::Write(ticket) => ticket,
            Admitted::Denied(answer) => return Ok(answer.into()),
        };
        let (reply, answer) = oneshot::channel();
        let entry = Queued {
            command,
            queued,
            reply,
            ticket,
        };
        self.queue.try_send(entry).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => WriteError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => WriteError::ShuttingDown,
        })?;
        let written = answer.await.map_err(|_| WriteError::ShuttingDown)?;
        self.metrics
            .write_total_us
            .record_duration(queued.elapsed());
        written
    }

    /// The one-outcome check of an attempt (`answered.rs`), with the read barrier it may ask
    /// for before it answers an earlier denial again.
    async fn admit(&self, command: &Command) -> Result<Admitted, WriteError> {
        let mut confirmed = false;
        loop {
            let remembers = |actor: Option<u64>, id: &str| {
                self.sm.read(|state, _| state.remembers_request(actor, id))
            };
            match self.answered.begin(command, confirmed, remembers) {
                Begin::Write(ticket) => return Ok(Admitted::Write(ticket)),
                Begin::Denied(answer) => return Ok(Admitted::Denied(answer)),
                Begin::Confirm => {
                    self.barrier().await?;
                    confirmed = true;
                }
            }
        }
    }

    /// A linearizable read: confirms leadership (under the lease when enabled and valid,
    /// otherwise with a quorum round: read index), waits until the state machine has applied
    /// everything committed before the read began, then reads.
    pub async fn read<T>(
        &self,
        f: impl FnOnce(&State, Option<LogId>) -> T,
    ) -> Result<T, WriteError> {
        self.barrier().await?;
        Ok(self.sm.read(f))
    }

    /// Reads this member's applied state without asking the leader (stale by design).
    pub fn read_local<T>(&self, f: impl FnOnce(&State, Option<LogId>) -> T) -> T {
        self.sm.read(f)
    }

    /// The read barrier of [`WritePath::read`]: once it returns, the applied state holds
    /// everything committed before it was called.
    async fn barrier(&self) -> Result<(), WriteError> {
        let started = Instant::now();
        let mut confirmed = Err(WriteError::Unknown("no read policy tried".into()));
        for policy in [ReadPolicy::LeaseRead, ReadPolicy::ReadIndex] {
            if policy == ReadPolicy::LeaseRead && !self.lease_reads {
                continue;
            }
            confirmed = match self.raft.ensure_linearizable(policy).await {
                Ok(_) => Ok(()),
                Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(to))) => {
                    Err(WriteError::forward(to))
                }
                // An expired lease: fall back to a read index.
                Err(e) => Err(WriteError::Unknown(e.to_string())),
            };
            if !matches!(confirmed, Err(WriteError::Unknown(_))) {
                break;
            }
        }
        self.metrics
            .read_barrier_us
            .record_duration(started.elapsed());
        confirmed
    }

    /// A reservation that committed state already denies, answered by the leader without a
    /// log entry: the denial and the applied log index it was decided at. `None`: write it.
    ///
    /// Linearizable because the decision reads, after a read barrier, a state that contains
    /// every write acknowledged before this request arrived; writes still in flight can only
    /// be ordered after it, and a denial changes nothing they could observe. The cheap local
    /// guess comes first so that reservations that will be granted pay no barrier.
    ///
    /// One request id gets one outcome: the path stands aside while another attempt of the
    /// id is in flight here, answers an earlier denial of the id again, and records its own
    /// before answering (`answered.rs`).
    pub async fn fast_denial(&self, command: &Command) -> Option<(Denial, u64)> {
        let id = &command.request.as_ref()?.id;
        if !self.is_leader()
            || self
                .sm
                .read(|state, _| state.fast_denial(now_ms(), command))
                .is_none()
        {
            return None;
        }
        self.barrier().await.ok()?;
        // Decided with no attempt of this id able to start meanwhile: the state read here is
        // newer than the barrier, which only makes it more recent, still linearizable.
        let decision = self.answered.decide(command)?;
        if decision.must_write() {
            return None;
        }
        if let Some(earlier) = decision.earlier() {
            // Void if another attempt took effect: then the write answers the duplicate.
            let remembered = self
                .sm
                .read(|state, _| state.remembers_request(command.actor, id));
            return (!remembered).then_some((earlier.denial, earlier.log_index));
        }
        let now = now_ms();
        let (denial, log_index, retention_ms) = self.sm.read(|state, applied| {
            let denial = state.fast_denial(now, command)?;
            Some((
                denial,
                applied.map_or(0, |id| id.index),
                state.config().request_retention_ms,
            ))
        })?;
        let answer = Answer {
            denial: denial.clone(),
            log_index,
        };
        decision.deny(answer, retention_ms, now);
        self.metrics.fast_denials.fetch_add(1, Ordering::Relaxed);
        Some((denial, log_index))
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().state == ServerState::Leader
    }

    /// The leader this member knows of, with its addresses.
    pub fn leader(&self) -> Option<(NodeId, PeerNode)> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let leader = metrics.current_leader?;
        let node = metrics
            .membership_config
            .membership()
            .get_node(&leader)?
            .clone();
        Some((leader, node))
    }

    /// The answer to a request only the leader takes: a redirect to it.
    pub fn not_leader(&self) -> WriteError {
        WriteError::NotLeader {
            leader: self.leader(),
        }
    }
}
