//! `serve(config, shutdown)`: one member with its client port, the library entry point the
//! binary and the tests share.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::server::Router;
use tower_layer::{Identity, Stack};

use crate::auth::ActingTokenLayer;
use crate::config::{NodeConfig, StartError};
use crate::node::PurserNode;
use crate::service::admin::AdminService;
use crate::service::budget::BudgetService;
use crate::service::cluster::ClusterService;
use crate::service::meter::MeterService;
use crate::service::report::ReportService;
use crate::service::token::TokenService;
use crate::service::webhook::WebhookService;
use crate::types::PeerNode;

pub use crate::service::CLIENT_MESSAGE_BYTES_MAX;
/// Concurrent requests per client connection.
pub const CLIENT_CONCURRENCY_PER_CONNECTION: usize = 1024;
/// A client request is answered within this long, or fails.
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub node: NodeConfig,
    /// Where the client services listen.
    pub client_listen: SocketAddr,
    /// Initialize a single-member cluster of this node if the data directory is new
    /// (`purser dev`).
    pub bootstrap_single: bool,
    /// Where the HTTP report endpoint (`GET /v1/report`) listens, if anywhere.
    pub http_listen: Option<SocketAddr>,
    /// TLS on the client and HTTP ports (`tls.rs`); with a CA, clients must present a
    /// certificate it signed.
    pub tls: Option<crate::tls::TlsFiles>,
}

/// A running member; dropping it does not stop it, [`Server::stop`] does.
pub struct Server {
    pub node: Arc<PurserNode>,
    pub client_addr: SocketAddr,
    /// The HTTP report endpoint, when one was asked for.
    pub http_addr: Option<SocketAddr>,
    /// Where a single-member cluster (`purser dev`) keeps its `/` admin token.
    pub admin_token_file: Option<PathBuf>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start(config: ServeConfig) -> Result<Server, StartError> {
        crate::memory::start_purging();
        let node = PurserNode::start(config.node.clone()).await?;
        let (listener, client_addr) = crate::listen::bind(config.client_listen).await?;
        let admin_token_file = if config.bootstrap_single {
            bootstrap_single(&node, &config.node).await?
        } else {
            None
        };
        let (grpc_tls, http_tls) = match &config.tls {
            Some(files) => (
                Some(crate::tls::acceptor(files, &[b"h2"])?),
                Some(crate::tls::acceptor(files, &[b"http/1.1"])?),
            ),
            None => (None, None),
        };
        let (health, health_service) = tonic_health::server::health_reporter();
        let health_task = tokio::spawn(report_health(node.clone(), health));
        let (http_addr, http_task) = match config.http_listen {
            None => (None, None),
            Some(addr) => {
                let (listener, bound) = crate::listen::bind(addr).await?;
                let router = crate::http::router(node.path());
                let task = tokio::spawn(crate::http::serve(listener, router, http_tls));
                (Some(bound), Some(task))
            }
        };
        let router = client_router(&node).add_service(health_service);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            let served = match grpc_tls {
                Some(acceptor) => {
                    let incoming = crate::tls::incoming(listener, acceptor);
                    router
                        .serve_with_incoming_shutdown(incoming, shutdown)
                        .await
                }
                None => {
                    let incoming = crate::listen::incoming(listener);
                    router
                        .serve_with_incoming_shutdown(incoming, shutdown)
                        .await
                }
            };
            if let Err(e) = served {
                tracing::error!("client server stopped: {e}");
            }
            health_task.abort();
            if let Some(http) = http_task {
                http.abort();
            }
        });
        tracing::info!(id = node.id, client = %client_addr, peer = %node.peer_addr(), "purser member serving");
        Ok(Server {
            node,
            client_addr,
            http_addr,
            admin_token_file,
            stop,
            task,
        })
    }

    /// Graceful: stops taking requests, lets in-flight ones finish, then stops Raft.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        self.node.shutdown().await;
    }
}

/// gRPC health: the whole server (`""`) is SERVING while the member runs; the budget and admin
/// services are SERVING only while the member knows a leader (ready to take requests).
async fn report_health(node: Arc<PurserNode>, health: tonic_health::server::HealthReporter) {
    use openraft::async_runtime::WatchReceiver;
    use tonic_health::ServingStatus;
    health.set_service_status("", ServingStatus::Serving).await;
    let mut metrics = node.raft.metrics();
    loop {
        let ready = metrics.borrow_watched().current_leader.is_some();
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        health.set_service_status("purser.v1.Budget", status).await;
        health.set_service_status("purser.v1.Admin", status).await;
        if metrics.changed().await.is_err() {
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            return;
        }
    }
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let server = Server::start(config).await?;
    shutdown.await;
    server.stop().await;
    Ok(())
}

/// The client port's gRPC services, with their limits.
fn client_router(node: &Arc<PurserNode>) -> Router<Stack<ActingTokenLayer, Identity>> {
    let path = node.path();
    tonic::transport::Server::builder()
        .concurrency_limit_per_connection(CLIENT_CONCURRENCY_PER_CONNECTION)
        .timeout(CLIENT_REQUEST_TIMEOUT)
        .layer(ActingTokenLayer(path.clone()))
        .add_service(BudgetService::server(path.clone()))
        .add_service(AdminService::server(path.clone()))
        .add_service(ClusterService::server(node.clone()))
        .add_service(MeterService::server(path.clone()))
        .add_service(WebhookService::server(path.clone(), node.webhooks.clone()))
        .add_service(TokenService::server(path.clone()))
        .add_service(ReportService::server(path))
}

/// Initializes a single-member cluster of `node` if its data directory is new and, with
/// authentication on, makes sure `<data-dir>/admin.token` holds a `/` admin token: the
/// cluster's first, created here when the cluster has none. Returns that file.
async fn bootstrap_single(
    node: &PurserNode,
    config: &NodeConfig,
) -> Result<Option<PathBuf>, StartError> {
    let initialized = node
        .raft
        .is_initialized()
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    if !initialized {
        let me = PeerNode {
            peer_addr: node.peer_addr().to_string(),
            client_addr: config.client_addr.clone(),
        };
        node.initialize(BTreeMap::from([(node.id, me)]))
            .await
            .map_err(StartError::Raft)?;
    }
    if !config.auth {
        return Ok(None);
    }
    let file = config.data_dir.join(ADMIN_TOKEN_FILE);
    if file.exists() {
        return Ok(Some(file));
    }
    node.raft
        .wait(Some(BOOTSTRAP_WAIT))
        .state(openraft::ServerState::Leader, "single member leads")
        .await
        .map_err(|e| StartError::Raft(format!("no leadership to create the first token: {e}")))?;
    if node.read_local(|state, _| !state.tokens(None).is_empty()) {
        tracing::warn!(file = %file.display(), "the cluster has tokens but this file is gone: use a token you kept, or start over with a new data directory");
        return Ok(None);
    }
    let (token, hash) =
        crate::auth::new_token().map_err(|e| StartError::Raft(e.message().into()))?;
    let request = purser_proto::pb::BootstrapRequest {
        request_id: "bootstrap-dev".into(),
        sent_at_ms: crate::clock::now_ms(),
        token_hash: hash.to_vec(),
    };
    node.create_first_token(request)
        .await
        .map_err(|e| StartError::Raft(format!("creating the first token: {}", e.message())))?;
    write_secret(&file, &token)
        .map_err(|e| StartError::Storage(format!("{}: {e}", file.display())))?;
    Ok(Some(file))
}

/// Where `purser dev` keeps its `/` admin token, in its data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// How long `purser dev` waits to lead its single-member cluster.
const BOOTSTRAP_WAIT: Duration = Duration::from_secs(10);

/// Writes a secret readable by its owner only (mode 0600), whole or not at all.
pub fn write_secret(file: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let partial = file.with_extension("partial");
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)?;
    out.write_all(secret.as_bytes())?;
    out.write_all(b"\n")?;
    out.sync_all()?;
    std::fs::rename(&partial, file)
}

/// A default single-node configuration: `purser dev`.
pub fn dev_config(data_dir: PathBuf, client_listen: SocketAddr) -> ServeConfig {
    let peer_listen = SocketAddr::new(client_listen.ip(), client_listen.port().wrapping_add(100));
    ServeConfig {
        node: NodeConfig::new(1, data_dir, peer_listen, client_listen.to_string()),
        client_listen,
        bootstrap_single: true,
        http_listen: Some(crate::http::default_addr(client_listen)),
        tls: None,
    }
}
