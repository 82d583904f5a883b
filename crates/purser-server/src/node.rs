//! One cluster member: storage, the Raft node, its peer server, the group-commit batcher and
//! the leader's ticker. Client-facing services call [`PurserNode::write`] and
//! [`PurserNode::read`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ReadPolicy, ServerState};
use purser_core::{Applied, Command, Denial, Error as CoreError, Outcome};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;

use crate::answered::{Answer, Answered, Begin, Ticket};
use crate::metrics::Metrics;
use crate::network::PeerNetwork;
use crate::raft_service::RaftService;
use crate::store::{open_db, LogStore, StateMachineStore};
use crate::types::{Batch, BatchResponse, LogId, NodeId, PeerNode, Raft};

/// Commands packed into one log entry at most.
pub const BATCH_COMMANDS_MAX: usize = 1024;
/// Encoded bytes packed into one log entry at most (a single larger command goes alone).
/// With `max_payload_entries` below, an append stays far under the peer port's message limit.
pub const BATCH_BYTES_MAX: usize = 1 << 20;
/// Log entries proposed and not yet answered at most; while they are in flight, new commands
/// queue up and form the next batch (the linger adapts to load without a timer).
pub const BATCHES_IN_FLIGHT_MAX: usize = 2;
/// How often usage is folded into rollups in the background.
const COMPACT_EVERY: Duration = Duration::from_secs(1);
/// Commands waiting for a batch at most; beyond it writes are refused as overloaded.
pub const WRITE_QUEUE_MAX: usize = 65_536;

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    pub data_dir: PathBuf,
    /// Where peers reach this member's Raft service.
    pub peer_listen: SocketAddr,
    /// Where clients reach this member (advertised to peers for redirects).
    pub client_addr: String,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// A snapshot is built after this many log entries since the last one.
    pub snapshot_every_entries: u64,
    /// Log entries kept behind a snapshot so that slightly lagging followers need no snapshot.
    pub log_kept_after_snapshot: u64,
    /// How often the leader proposes a `Tick` (hold and grant expiry).
    pub tick_ms: u64,
    /// The newest events this member keeps for `Watch` and webhooks (older ones, once folded
    /// into the rollups, are deleted when a snapshot is built).
    pub events_kept: u64,
    /// Serve linearizable reads and denials under the leader's lease (no round trip) instead
    /// of a read index (one heartbeat round to a quorum). The lease assumes the members'
    /// clocks advance at the same rate; see docs/architecture.md.
    pub lease_reads: bool,
}

impl NodeConfig {
    pub fn new(
        id: NodeId,
        data_dir: PathBuf,
        peer_listen: SocketAddr,
        client_addr: String,
    ) -> Self {
        NodeConfig {
            id,
            data_dir,
            peer_listen,
            client_addr,
            heartbeat_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            snapshot_every_entries: 10_000,
            log_kept_after_snapshot: 1_000,
            tick_ms: 1_000,
            lease_reads: false,
            events_kept: crate::store::EVENTS_KEPT,
        }
    }

    fn raft_config(&self) -> Result<openraft::Config, StartError> {
        let config = openraft::Config {
            cluster_name: "purser".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every_entries),
            max_in_snapshot_log_to_keep: self.log_kept_after_snapshot,
            install_snapshot_timeout: 10_000,
            // 32 entries of at most BATCH_BYTES_MAX (or one client message of 4 MiB) each.
            max_payload_entries: 32,
            enable_pre_vote: Some(true),
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| StartError::Config(e.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Open(#[from] crate::store::OpenError),
    #[error("storage: {0}")]
    Storage(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("raft: {0}")]
    Raft(String),
}

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

/// What one command's write returned: the log index it was applied at, and its result.
#[derive(Clone, Debug)]
pub struct Written {
    pub log_index: u64,
    pub result: Result<Applied, CoreError>,
}

type Reply = oneshot::Sender<Result<Written, WriteError>>;

struct Pending {
    command: Command,
    queued: Instant,
    reply: Reply,
    ticket: Option<Ticket>,
}

pub struct PurserNode {
    pub id: NodeId,
    pub raft: Raft,
    pub sm: StateMachineStore,
    pub metrics: Arc<Metrics>,
    lease_reads: bool,
    peer_addr: SocketAddr,
    writes: mpsc::Sender<Pending>,
    answered: Arc<Answered>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    peer_shutdown: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

impl PurserNode {
    pub async fn start(config: NodeConfig) -> Result<Arc<Self>, StartError> {
        crate::planted::arm();
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| StartError::Storage(format!("{}: {e}", config.data_dir.display())))?;
        let db = open_when_released(&config.data_dir).await?;
        let metrics = Arc::new(Metrics::default());
        let sm = StateMachineStore::open(db.clone(), metrics.clone()).map_err(|e| {
            StartError::Storage(format!(
                "the stored snapshot is unusable, refusing to start: {e}"
            ))
        })?;
        sm.set_events_kept(config.events_kept);
        let log = LogStore::new(db, metrics.clone());
        let raft_config = Arc::new(config.raft_config()?);
        let network = PeerNetwork::new(metrics.clone());
        let raft = Raft::new(config.id, raft_config, network, log, sm.clone())
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;

        let listener = tokio::net::TcpListener::bind(config.peer_listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.peer_listen,
                source,
            })?;
        let peer_addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.peer_listen,
            source,
        })?;
        let (peer_shutdown, stop) = oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .concurrency_limit_per_connection(256)
            .add_service(RaftService::server(raft.clone()))
            .serve_with_incoming_shutdown(crate::serve::incoming(listener), async {
                let _ = stop.await;
            });
        let mut tasks = vec![tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!("peer server stopped: {e}");
            }
        })];
        let (writes, queue) = mpsc::channel::<Pending>(WRITE_QUEUE_MAX);
        let answered = Arc::new(Answered::default());
        tasks.push(tokio::spawn(batcher(
            raft.clone(),
            sm.clone(),
            queue,
            metrics.clone(),
        )));
        let node = Arc::new(PurserNode {
            id: config.id,
            raft,
            sm,
            metrics,
            lease_reads: config.lease_reads,
            peer_addr,
            writes,
            answered,
            tasks: std::sync::Mutex::new(tasks),
            peer_shutdown: std::sync::Mutex::new(Some(peer_shutdown)),
        });
        node.tasks
            .lock()
            .expect("task list")
            .push(tokio::spawn(compactor(Arc::downgrade(&node))));
        // The ticker holds a weak handle, so that it never keeps a dropped node alive.
        let ticker = tokio::spawn(ticker(
            Arc::downgrade(&node),
            Duration::from_millis(config.tick_ms),
        ));
        node.tasks.lock().expect("task list").push(ticker);
        let webhooks = tokio::spawn(crate::webhook::deliverer(Arc::downgrade(&node)));
        node.tasks.lock().expect("task list").push(webhooks);
        Ok(node)
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// Proposes one command through the group-commit batcher and waits for its result. An
    /// attempt of a request id this member already denied gets the same denial, unwritten
    /// (see `answered.rs`).
    pub async fn write(&self, command: Command) -> Result<Written, WriteError> {
        let queued = Instant::now();
        let mut confirmed = false;
        let ticket = loop {
            let remembers = |id: &str| self.sm.read(|state, _| state.remembers_request(id));
            match self.answered.begin(&command, confirmed, remembers) {
                Begin::Write(ticket) => break ticket,
                Begin::Denied(answer) => return Ok(answer.written()),
                Begin::Confirm => {
                    self.barrier().await?;
                    confirmed = true;
                }
            }
        };
        let (reply, rx) = oneshot::channel();
        let pending = Pending {
            command,
            queued,
            reply,
            ticket,
        };
        self.writes.try_send(pending).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => WriteError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => WriteError::ShuttingDown,
        })?;
        let written = rx.await.map_err(|_| WriteError::ShuttingDown)?;
        self.metrics
            .write_total_us
            .record_duration(queued.elapsed());
        written
    }

    /// A linearizable read: confirms leadership (under the lease when enabled and valid,
    /// otherwise with a quorum round: read index), waits until the state machine has applied
    /// everything committed before the read began, then reads.
    pub async fn read<T>(
        &self,
        f: impl FnOnce(&purser_core::State, Option<LogId>) -> T,
    ) -> Result<T, WriteError> {
        self.barrier().await?;
        Ok(self.sm.read(f))
    }

    /// The read barrier of [`PurserNode::read`]: once it returns, the applied state holds
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
                Err(RaftError::APIError(
                    openraft::error::LinearizableReadError::ForwardToLeader(fwd),
                )) => Err(WriteError::NotLeader {
                    leader: fwd.leader_id.zip(fwd.leader_node),
                }),
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
            let remembered = self.sm.read(|state, _| state.remembers_request(id));
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
        decision.deny(
            Answer {
                denial: denial.clone(),
                log_index,
            },
            retention_ms,
            now,
        );
        self.metrics.fast_denials.fetch_add(1, Ordering::Relaxed);
        Some((denial, log_index))
    }

    /// Reads this member's applied state without asking the leader (stale by design).
    pub fn read_local<T>(&self, f: impl FnOnce(&purser_core::State, Option<LogId>) -> T) -> T {
        self.sm.read(f)
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().state == ServerState::Leader
    }

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

    /// Initializes a new cluster with these members (id → addresses); a no-op error if the
    /// cluster is already initialized.
    pub async fn initialize(&self, members: BTreeMap<NodeId, PeerNode>) -> Result<(), String> {
        self.raft
            .initialize(members)
            .await
            .map_err(|e| e.to_string())
    }

    /// Stops Raft, the peer server and the background tasks. Storage closes when the last
    /// handle is dropped.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
        self.stop_tasks();
    }

    fn stop_tasks(&self) {
        if let Some(stop) = self.peer_shutdown.lock().expect("shutdown lock").take() {
            let _ = stop.send(());
        }
        for task in self.tasks.lock().expect("task list").drain(..) {
            task.abort();
        }
    }
}

impl Drop for PurserNode {
    fn drop(&mut self) {
        self.stop_tasks();
    }
}

/// Opens the database, waiting a bounded time while an earlier instance of this member in the
/// same process (a restart) still closes it: its last handles drop as its tasks wind down.
async fn open_when_released(path: &std::path::Path) -> Result<Arc<rocksdb::DB>, StartError> {
    let mut attempts = 0;
    loop {
        match open_db(path) {
            Err(crate::store::OpenError::Rocks { source, .. })
                if attempts < 50 && source.to_string().contains("lock hold by current process") =>
            {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return Ok(other?),
        }
    }
}

/// The leader's time (ms since the epoch): the wall clock, as far as the monotonic clock lets
/// it move (a step of the wall clock is absorbed slowly; see `crate::clock`).
pub fn now_ms() -> u64 {
    crate::clock::now_ms(wall_ms(), 0)
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Packs queued commands into log entries: everything waiting (up to the batch size) goes into
/// the next entry, with at most `BATCHES_IN_FLIGHT_MAX` entries in flight.
async fn batcher(
    raft: Raft,
    sm: StateMachineStore,
    mut queue: mpsc::Receiver<Pending>,
    metrics: Arc<Metrics>,
) {
    let slots = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT_MAX));
    while let Some(first) = queue.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = encoded_len(&first.command);
        let mut batch = vec![first];
        while batch.len() < BATCH_COMMANDS_MAX && bytes < BATCH_BYTES_MAX {
            match queue.try_recv() {
                Ok(next) => {
                    bytes += encoded_len(&next.command);
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let proposed = Instant::now();
        let mut commands = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for pending in batch {
            metrics
                .write_queued_us
                .record_duration(proposed.duration_since(pending.queued));
            commands.push(pending.command);
            replies.push((pending.reply, pending.ticket));
        }
        metrics.batch_commands.record(commands.len() as u64);
        let raft = raft.clone();
        let metrics = metrics.clone();
        let sm = sm.clone();
        tokio::spawn(async move {
            let count = commands.len();
            // The leader's clock stamps the entry; apply makes it monotonic.
            let result = raft
                .client_write(Batch {
                    at_ms: now_ms(),
                    commands,
                })
                .await;
            drop(permit);
            metrics.raft_write_us.record_duration(proposed.elapsed());
            // Read only when a denial is to be kept: most batches have none.
            let retention_ms = || sm.read(|state, _| state.config().request_retention_ms);
            answer(result, count, replies, retention_ms);
        });
    }
}

fn encoded_len(command: &Command) -> usize {
    command.encode().len()
}

type WriteResult = Result<
    openraft::raft::ClientWriteResponse<crate::types::TypeConfig>,
    RaftError<crate::types::TypeConfig, ClientWriteError<crate::types::TypeConfig>>,
>;

/// Answers each command of a batch. A ticket is dropped (its attempt no longer in flight)
/// only after a denial it got is recorded, and before the caller hears of it.
fn answer(
    result: WriteResult,
    count: usize,
    replies: Vec<(Reply, Option<Ticket>)>,
    retention_ms: impl Fn() -> u64,
) {
    match result {
        Ok(response) => {
            let BatchResponse { results } = response.data;
            assert_eq!(
                results.len(),
                count,
                "apply answers every command of a batch"
            );
            let log_index = response.log_id.index;
            let now = now_ms();
            for ((reply, ticket), result) in replies.into_iter().zip(results) {
                match (&ticket, &result) {
                    (
                        Some(ticket),
                        Ok(Applied {
                            outcome: Outcome::Denied(denial),
                            ..
                        }),
                    ) => {
                        let answer = Answer {
                            denial: denial.clone(),
                            log_index,
                        };
                        ticket.denied(answer, retention_ms(), now);
                    }
                    (Some(ticket), Ok(_)) => ticket.applied(),
                    _ => {}
                }
                drop(ticket);
                let _ = reply.send(Ok(Written { log_index, result }));
            }
        }
        Err(e) => {
            let error = match e {
                RaftError::APIError(ClientWriteError::ForwardToLeader(fwd)) => {
                    WriteError::NotLeader {
                        leader: fwd.leader_id.zip(fwd.leader_node),
                    }
                }
                other => WriteError::Unknown(other.to_string()),
            };
            for (reply, ticket) in replies {
                drop(ticket);
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

/// Folds applied usage into the rollups every second, off the request path, on every member
/// (each has the same stream, so the same rollups).
async fn compactor(node: std::sync::Weak<PurserNode>) {
    let mut interval = tokio::time::interval(COMPACT_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(sm) = node.upgrade().map(|n| n.sm.clone()) else {
            return;
        };
        match tokio::task::spawn_blocking(move || sm.compact()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("folding usage into rollups: {e}"),
            Err(e) => tracing::warn!("the compactor task failed: {e}"),
        }
    }
}

/// The leader proposes a `Tick` every interval so that holds and grants expire on time.
async fn ticker(node: std::sync::Weak<PurserNode>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(node) = node.upgrade() else { return };
        // Every member keeps its stamp clock at or above the replicated time, so that one whose
        // wall clock is behind continues the cluster's time when elected instead of freezing it.
        let replicated_ms = node.sm.read(|state, _| state.now_ms());
        crate::clock::now_ms(wall_ms(), replicated_ms);
        if node.is_leader() {
            if let Err(e) = node.write(Command::tick()).await {
                tracing::debug!("tick not applied: {e}");
            }
        }
    }
}
