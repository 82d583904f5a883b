//! One cluster member: its storage, its Raft node with the peer server, its write path and
//! background tasks, started and stopped together. Callers write and read through the write
//! path ([`WritePath`]), which a node dereferences to.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use crate::clock::now_ms;
pub use crate::config::{NodeConfig, StartError};
pub use crate::write::{WriteError, Written};

use crate::metrics::Metrics;
use crate::network::PeerNetwork;
use crate::raft_service::RaftService;
use crate::store::{open_db, LogStore, OpenError, StateMachineStore};
use crate::types::{NodeId, PeerNode, Raft};
use crate::webhook::WebhookClient;
use crate::write::WritePath;

/// Concurrent Raft RPCs per peer connection.
const PEER_CONCURRENCY_PER_CONNECTION: usize = 256;

pub struct PurserNode {
    pub id: NodeId,
    path: Arc<WritePath>,
    /// The client webhooks are delivered and tested with.
    pub webhooks: WebhookClient,
    peer_addr: SocketAddr,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    peer_shutdown: Mutex<Option<oneshot::Sender<()>>>,
}

impl Deref for PurserNode {
    type Target = WritePath;

    fn deref(&self) -> &WritePath {
        &self.path
    }
}

impl PurserNode {
    pub async fn start(config: NodeConfig) -> Result<Arc<Self>, StartError> {
        crate::planted::arm();
        let metrics = Arc::new(Metrics::default());
        let (raft, sm, appended) = open_raft(&config, &metrics).await?;
        let (peer_addr, peer_shutdown, peer_server) = serve_peers(&config, raft.clone()).await?;
        let (path, queue) = WritePath::new(raft, sm, metrics, config.lease_reads, config.auth);
        let path = Arc::new(path);
        let webhook_roots = match &config.webhook_ca {
            Some(file) => crate::tls::read_certs(file)?,
            None => Vec::new(),
        };
        let webhooks = WebhookClient::trusting(webhook_roots, config.webhook_allow_private)
            .map_err(|e| StartError::Config(format!("webhook TLS: {e}")))?;
        let tick_every = Duration::from_millis(config.tick_ms);
        let mut tasks = vec![peer_server];
        tasks.extend(crate::tasks::start(
            &path,
            queue,
            tick_every,
            webhooks.clone(),
            (appended, config.snapshot_period()),
            config.entries_in_flight,
        ));
        Ok(Arc::new(PurserNode {
            id: config.id,
            path,
            webhooks,
            peer_addr,
            tasks: Mutex::new(tasks),
            peer_shutdown: Mutex::new(Some(peer_shutdown)),
        }))
    }

    /// The write path, for the services and tasks that hold it on their own.
    pub fn path(&self) -> Arc<WritePath> {
        self.path.clone()
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
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
        if let Some(stop) = unpoisoned(&self.peer_shutdown).take() {
            let _ = stop.send(());
        }
        for task in unpoisoned(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

impl Drop for PurserNode {
    fn drop(&mut self) {
        self.stop_tasks();
    }
}

/// The task handles are only ever taken out, whole: a panic elsewhere cannot leave them
/// half-changed, so a poisoned lock still holds what is to be stopped.
fn unpoisoned<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Opens storage and starts the Raft node on it.
async fn open_raft(
    config: &NodeConfig,
    metrics: &Arc<Metrics>,
) -> Result<(Raft, StateMachineStore, Arc<std::sync::atomic::AtomicU64>), StartError> {
    let storage = |e: &dyn std::fmt::Display| StartError::Storage(e.to_string());
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| storage(&format!("{}: {e}", config.data_dir.display())))?;
    let db = open_when_released(&config.data_dir).await?;
    let sm = StateMachineStore::open(db.clone(), metrics.store.clone()).map_err(|e| {
        storage(&format!(
            "the stored snapshot is unusable, refusing to start: {e}"
        ))
    })?;
    sm.set_events_kept(config.events_kept);
    let log = LogStore::new(db, metrics.store.clone()).map_err(|e| storage(&e))?;
    let appended = log.appended_bytes();
    let raft_config = Arc::new(config.raft_config()?);
    let tls = config
        .peer_tls
        .as_ref()
        .map(crate::tls::peer_client_config)
        .transpose()?;
    let network = PeerNetwork::new(metrics.clone(), tls, config.replication_depth);
    let raft = Raft::new(config.id, raft_config, network, log, sm.clone())
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    Ok((raft, sm, appended))
}

/// Serves the Raft service to peers: the bound address, the switch that stops it, its task.
async fn serve_peers(
    config: &NodeConfig,
    raft: Raft,
) -> Result<(SocketAddr, oneshot::Sender<()>, JoinHandle<()>), StartError> {
    let (listener, peer_addr) = crate::listen::bind(config.peer_listen).await?;
    let (stop, stopped) = oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(PEER_CONCURRENCY_PER_CONNECTION)
        .add_service(
            RaftService::server(raft, config.peer_tls.is_some(), &config.data_dir)
                .map_err(|e| StartError::Storage(format!("snapshot spool: {e}")))?,
        );
    let shutdown = async {
        let _ = stopped.await;
    };
    // Mutual TLS: only a certificate of the cluster's CA gets a connection.
    let acceptor = match &config.peer_tls {
        Some(files) if files.ca.is_none() => {
            return Err(StartError::Config(
                "--peer-ca is required with --peer-cert: members must prove they belong".into(),
            ))
        }
        Some(files) => Some(crate::tls::acceptor(files, &[b"h2"])?),
        None => None,
    };
    let task = tokio::spawn(async move {
        let served = match acceptor {
            Some(acceptor) => {
                router
                    .serve_with_incoming_shutdown(
                        crate::tls::incoming(listener, acceptor),
                        shutdown,
                    )
                    .await
            }
            None => {
                router
                    .serve_with_incoming_shutdown(crate::listen::incoming(listener), shutdown)
                    .await
            }
        };
        if let Err(e) = served {
            tracing::error!("peer server stopped: {e}");
        }
    });
    Ok((peer_addr, stop, task))
}

/// Opens the database, waiting a bounded time while an earlier instance of this member in the
/// same process (a restart) still closes it: its last handles drop as its tasks wind down.
async fn open_when_released(path: &Path) -> Result<Arc<rocksdb::DB>, StartError> {
    let mut attempts = 0;
    loop {
        match open_db(path) {
            Err(OpenError::Rocks { source, .. })
                if attempts < 50 && source.to_string().contains("lock hold by current process") =>
            {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return Ok(other?),
        }
    }
}
