//! `purser dev` and `purser serve`: one member in this process until Ctrl-C or SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use purser_server::node::NodeConfig;
use purser_server::serve::{dev_config, ServeConfig, Server};

use crate::config::{socket_addr, Effective, Settings};
use crate::CliError;

#[derive(Args)]
pub struct DevArgs {
    /// Where the state lives; created if missing, reused on the next start.
    #[arg(long, default_value = "./purser-data", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Where clients connect. The Raft peer port is this port + 100; port 0 picks free ports
    /// for both (the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:7600", value_name = "HOST:PORT")]
    pub listen: String,
    /// Serve linearizable reads and denials under the leader's lease, without a quorum round
    /// trip. Assumes the members' clocks run at the same rate (docs/architecture.md); an
    /// expired lease falls back to a read index.
    #[arg(long)]
    pub lease_reads: bool,
    /// Take calls without a token (dev only). With auth on, the `/` admin token is kept in
    /// DIR/admin.token, which the CLI reads when run from the directory of ./purser-data.
    #[arg(long)]
    pub no_auth: bool,
    /// Deliver webhooks to loopback, private and link-local addresses too (a receiver on
    /// this machine, while developing).
    #[arg(long)]
    pub webhook_allow_private: bool,
    /// A CA (PEM) whose certificates https webhook receivers may present, besides the public
    /// web PKI's.
    #[arg(long, value_name = "FILE")]
    pub webhook_ca: Option<PathBuf>,
    /// The newest events this member keeps for `watch` and webhooks (at least 1000); older
    /// ones leave once folded into the report rollups.
    #[arg(long, value_name = "N", default_value_t = purser_server::store::EVENTS_KEPT)]
    pub events_kept: u64,
    /// Serve the client and HTTP ports over TLS with this certificate chain (PEM); clients
    /// then connect with `--ca` (`purser certs init` writes both).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
pub enum CertsCommand {
    /// Write a CA (ca.pem, ca.key), member-1.pem/.key .. member-N, and client.pem/.key into
    /// DIR (keys mode 0600), valid from a day ago for a year, for localhost, 127.0.0.1, ::1
    /// and every --host. Refuses a DIR that already holds a CA.
    Init {
        dir: PathBuf,
        /// How many member certificates.
        #[arg(long, default_value_t = 3)]
        members: u32,
        /// Another name or IP address the members are reached at (repeatable).
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
    },
}

/// `purser certs init`.
pub fn certs(command: CertsCommand) -> Result<(), CliError> {
    let CertsCommand::Init {
        dir,
        members,
        hosts,
    } = command;
    if members == 0 || members > 99 {
        return Err("--members is 1..=99".into());
    }
    let written = purser_server::certs::init(&dir, members, &hosts, purser_client::now_ms())?;
    for file in written {
        println!("{}", file.display());
    }
    Ok(())
}

#[derive(Args)]
pub struct ServeArgs {
    /// A TOML file with a key for each flag below (`id = 2`, `listen = "0.0.0.0:7601"`, ...);
    /// PURSER_* environment variables override it, flags override both.
    #[arg(long, env = "PURSER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: Settings,
}

/// Free ports for `--listen HOST:0`: both listeners are held together so that the two ports
/// differ; another process could still take one before the server binds it, which is an
/// acceptable race for tests and throwaway instances.
fn free_addrs(ip: IpAddr) -> Result<(SocketAddr, SocketAddr), CliError> {
    let bind = || {
        std::net::TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr().map(|a| (l, a)))
            .map_err(|e| CliError(format!("cannot find a free port on {ip}: {e}")))
    };
    let (_client_listener, client) = bind()?;
    let (_peer_listener, peer) = bind()?;
    Ok((client, peer))
}

pub async fn dev(a: DevArgs) -> Result<(), CliError> {
    let listen = socket_addr(&a.listen, "--listen")?;
    let (client, peer) = if listen.port() == 0 {
        free_addrs(listen.ip())?
    } else {
        let port = listen.port().checked_add(100).ok_or_else(|| {
            CliError(format!(
                "--listen port {} leaves no room for the peer port (+100)",
                listen.port()
            ))
        })?;
        (listen, SocketAddr::new(listen.ip(), port))
    };
    let mut config = dev_config(a.data_dir.clone(), client);
    config.node.peer_listen = peer;
    if listen.port() == 0 {
        // Free ports everywhere: the HTTP endpoint takes one too (printed below).
        config.http_listen = Some(SocketAddr::new(listen.ip(), 0));
    }
    config.node.lease_reads = a.lease_reads;
    config.node.events_kept = a.events_kept;
    config.node.auth = !a.no_auth;
    config.node.webhook_allow_private = a.webhook_allow_private;
    config.node.webhook_ca = a.webhook_ca.clone();
    if let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) {
        config.tls = Some(purser_server::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: None,
        });
    }
    let server = Server::start(config)
        .await
        .map_err(|e| CliError(format!("cannot start: {e}")))?;
    // A new data directory is initialized at start; wait for the election so that the first
    // client command does not race it (a restarted one elects itself the same way).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !server.node.is_leader() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !server.node.is_leader() {
        tracing::warn!(
            "not the leader after 10 s: is {} a multi-member data dir?",
            a.data_dir.display()
        );
    }
    let http = server.http_addr.map_or(String::new(), |a| {
        format!(", reports on http://{a}/v1/report")
    });
    let token = server.admin_token_file.as_ref().map_or_else(
        || ", no authentication".to_owned(),
        |file| format!(", admin token in {}", file.display()),
    );
    eprintln!(
        "purser dev: listening on {} (peers {}{http}{token}, data {}); Ctrl-C stops",
        server.client_addr,
        server.node.peer_addr(),
        a.data_dir.display()
    );
    run_until_signal(server).await;
    Ok(())
}

pub async fn serve(a: ServeArgs) -> Result<(), CliError> {
    let file = match &a.config {
        Some(path) => Settings::read(path)?,
        None => Settings::default(),
    };
    let config = Effective::of(a.settings.or(file))?;
    tracing::info!("configuration: {config}");
    let mut node = NodeConfig::new(
        config.id,
        config.data_dir.clone(),
        config.peer_listen,
        config.advertise,
    );
    node.lease_reads = config.lease_reads;
    node.replication_depth = config.replication_depth;
    node.entries_in_flight = config.entries_in_flight;
    node.events_kept = config.events_kept;
    node.webhook_allow_private = config.webhook_allow_private;
    node.webhook_ca = config.webhook_ca;
    node.peer_tls = config.peer_tls;
    let server = Server::start(ServeConfig {
        node,
        client_listen: config.listen,
        bootstrap_single: false,
        http_listen: config.http_listen,
        tls: config.tls,
    })
    .await
    .map_err(|e| CliError(format!("cannot start: {e}")))?;
    eprintln!(
        "purser serve: member {} listening on {} (peers {}, data {})",
        config.id,
        server.client_addr,
        server.node.peer_addr(),
        config.data_dir.display()
    );
    run_until_signal(server).await;
    Ok(())
}

/// Serves until Ctrl-C or SIGTERM, then stops gracefully (in-flight requests finish, Raft
/// shuts down, storage closes). A second signal exits at once.
async fn run_until_signal(server: Server) {
    shutdown_signal().await;
    eprintln!("purser: shutting down (a second Ctrl-C exits at once)");
    tokio::spawn(async {
        shutdown_signal().await;
        std::process::exit(130);
    });
    server.stop().await;
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    ctrl_c.await;
}
