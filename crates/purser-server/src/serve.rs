//! `serve(config, shutdown)`: one member with its client port, the library entry point the
//! binary and the tests share.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use purser_proto::pb;

use crate::node::{NodeConfig, PurserNode, StartError};
use crate::services::Services;
use crate::types::PeerNode;

/// Largest client message accepted (a request with many tags or role limits stays far below).
pub const CLIENT_MESSAGE_BYTES_MAX: usize = 4 << 20;
/// Concurrent requests per client connection.
pub const CLIENT_CONCURRENCY_PER_CONNECTION: usize = 1024;

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub node: NodeConfig,
    /// Where the client services listen.
    pub client_listen: SocketAddr,
    /// Initialize a single-member cluster of this node if the data directory is new
    /// (`purser dev`).
    pub bootstrap_single: bool,
    /// Where the plain HTTP report endpoint (`GET /v1/report`) listens, if anywhere.
    pub http_listen: Option<SocketAddr>,
}

/// A running member; dropping it does not stop it, [`Server::stop`] does.
pub struct Server {
    pub node: Arc<PurserNode>,
    pub client_addr: SocketAddr,
    /// The HTTP report endpoint, when one was asked for.
    pub http_addr: Option<SocketAddr>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start(config: ServeConfig) -> Result<Server, StartError> {
        let node = PurserNode::start(config.node.clone()).await?;
        let listener = tokio::net::TcpListener::bind(config.client_listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.client_listen,
                source,
            })?;
        let client_addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.client_listen,
            source,
        })?;
        if config.bootstrap_single
            && !node
                .raft
                .is_initialized()
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?
        {
            let me = PeerNode {
                peer_addr: node.peer_addr().to_string(),
                client_addr: config.node.client_addr.clone(),
            };
            node.initialize(BTreeMap::from([(node.id, me)]))
                .await
                .map_err(StartError::Raft)?;
        }
        let services = Services::new(node.clone());
        let (health, health_service) = tonic_health::server::health_reporter();
        let health_task = tokio::spawn(report_health(node.clone(), health));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = tonic::transport::Server::builder()
            .concurrency_limit_per_connection(CLIENT_CONCURRENCY_PER_CONNECTION)
            .timeout(Duration::from_secs(30))
            .add_service(health_service)
            .add_service(
                pb::budget_server::BudgetServer::new(services.clone())
                    .max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX),
            )
            .add_service(
                pb::admin_server::AdminServer::new(services.clone())
                    .max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX),
            )
            .add_service(
                pb::cluster_server::ClusterServer::new(services)
                    .max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX),
            )
            .add_service(pb::meter_server::MeterServer::new(
                crate::meter::MeterService::new(node.clone()),
            ))
            .add_service(crate::webhook_service::WebhookService::server(node.clone()))
            .add_service(pb::reports_server::ReportsServer::new(
                crate::report::ReportService::new(node.clone()),
            ));
        let (http_addr, http_task) = match config.http_listen {
            None => (None, None),
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Listen { addr, source })?;
                let bound = listener
                    .local_addr()
                    .map_err(|source| StartError::Listen { addr, source })?;
                let task = tokio::spawn(crate::http::serve(listener, node.clone()));
                (Some(bound), Some(task))
            }
        };
        let incoming = incoming(listener);
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
            {
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

/// Accepted connections with Nagle's algorithm off. tonic ignores `Server::tcp_nodelay` for
/// a listener we bound ourselves; left on, a response split over two segments waited for the
/// peer's delayed ACK, 40 ms, which set every p99 of the write path.
pub(crate) fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// A default single-node configuration: `purser dev`.
pub fn dev_config(data_dir: PathBuf, client_listen: SocketAddr) -> ServeConfig {
    let peer_listen = SocketAddr::new(client_listen.ip(), client_listen.port().wrapping_add(100));
    ServeConfig {
        node: NodeConfig::new(1, data_dir, peer_listen, client_listen.to_string()),
        client_listen,
        bootstrap_single: true,
        http_listen: Some(crate::http::default_addr(client_listen)),
    }
}
