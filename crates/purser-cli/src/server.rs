//! `purser dev` and `purser serve`: one member in this process until Ctrl-C or SIGTERM.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use purser_server::node::NodeConfig;
use purser_server::serve::{dev_config, ServeConfig, Server};

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
    /// The newest events this member keeps for `watch` and webhooks (at least 1000); older
    /// ones leave once folded into the report rollups.
    #[arg(long, value_name = "N", default_value_t = purser_server::store::EVENTS_KEPT)]
    pub events_kept: u64,
}

#[derive(Args)]
pub struct ServeArgs {
    /// This member's id, unique in the cluster (positive).
    #[arg(long)]
    pub id: Option<u64>,
    /// Where clients connect (Budget, Admin and Cluster services).
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Where the other members connect (Raft).
    #[arg(long, value_name = "HOST:PORT")]
    pub peer_listen: Option<String>,
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A TOML file with the same keys (id, listen, peer_listen, data_dir, advertise), one
    /// `key = value` per line; flags given on the command line win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The client address other members hand to clients when they redirect them here
    /// (default: --listen). Needed when --listen is 0.0.0.0 or behind NAT.
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Serve `GET /v1/report` (CSV or JSON) over plain HTTP here (default: not at all).
    #[arg(long, value_name = "HOST:PORT")]
    pub http_listen: Option<String>,
    /// Serve linearizable reads and denials under the leader's lease, without a quorum round
    /// trip. Assumes the members' clocks run at the same rate (docs/architecture.md); an
    /// expired lease falls back to a read index.
    #[arg(long)]
    pub lease_reads: bool,
    /// The newest events this member keeps for `watch` and webhooks (at least 1000); older
    /// ones leave once folded into the report rollups.
    #[arg(long, value_name = "N", default_value_t = purser_server::store::EVENTS_KEPT)]
    pub events_kept: u64,
}

fn socket_addr(text: &str, flag: &str) -> Result<SocketAddr, CliError> {
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| CliError(format!("{flag} {text:?}: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| CliError(format!("{flag} {text:?}: no address")))
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
    eprintln!(
        "purser dev: listening on {} (peers {}{http}, data {}); Ctrl-C stops",
        server.client_addr,
        server.node.peer_addr(),
        a.data_dir.display()
    );
    run_until_signal(server).await;
    Ok(())
}

pub async fn serve(a: ServeArgs) -> Result<(), CliError> {
    let file = match &a.config {
        Some(path) => read_config(path)?,
        None => FileConfig::default(),
    };
    let id =
        a.id.or(file.id)
            .ok_or("--id is required (or `id` in --config)")?;
    if id == 0 {
        return Err("--id must be positive".into());
    }
    let listen_text = a.listen.or(file.listen).ok_or("--listen is required")?;
    let listen = socket_addr(&listen_text, "--listen")?;
    let peer_text = a
        .peer_listen
        .or(file.peer_listen)
        .ok_or("--peer-listen is required")?;
    let peer = socket_addr(&peer_text, "--peer-listen")?;
    let data_dir = a
        .data_dir
        .or(file.data_dir)
        .ok_or("--data-dir is required")?;
    let advertise = match a.advertise.or(file.advertise) {
        Some(addr) => {
            crate::parse::host_port(&addr).map_err(|e| format!("--advertise: {e}"))?;
            addr
        }
        None => {
            if listen.ip().is_unspecified() {
                tracing::warn!(
                    "--listen {listen} is a wildcard: give --advertise so that redirects to \
                     this member reach it"
                );
            }
            listen.to_string()
        }
    };
    let mut node = NodeConfig::new(id, data_dir.clone(), peer, advertise);
    node.lease_reads = a.lease_reads;
    node.events_kept = a.events_kept;
    let http_listen = match a.http_listen {
        Some(text) => Some(socket_addr(&text, "--http-listen")?),
        None => None,
    };
    let config = ServeConfig {
        node,
        client_listen: listen,
        bootstrap_single: false,
        http_listen,
    };
    let server = Server::start(config)
        .await
        .map_err(|e| CliError(format!("cannot start: {e}")))?;
    eprintln!(
        "purser serve: member {id} listening on {} (peers {}, data {})",
        server.client_addr,
        server.node.peer_addr(),
        data_dir.display()
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

// ---- --config ----------------------------------------------------------------------------

#[derive(Default, Debug, PartialEq)]
struct FileConfig {
    id: Option<u64>,
    listen: Option<String>,
    peer_listen: Option<String>,
    data_dir: Option<PathBuf>,
    advertise: Option<String>,
}

fn read_config(path: &Path) -> Result<FileConfig, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError(format!("--config {}: {e}", path.display())))?;
    parse_config(&text).map_err(|e| CliError(format!("--config {}: {e}", path.display())))
}

/// The flat subset of TOML that a member's settings need: `key = "string"` or `key = 123`
/// per line, `#` comments, basic and literal strings. Tables and arrays are refused rather
/// than guessed at; a full TOML parser is not worth its dependencies for five keys.
fn parse_config(text: &str) -> Result<FileConfig, String> {
    let mut config = FileConfig::default();
    let mut seen = std::collections::BTreeSet::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let at = |e: String| format!("line {}: {e}", n + 1);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            return Err(at(
                "tables are not supported: use top-level `key = value` lines".into(),
            ));
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| at("expected `key = value`".into()))?;
        let key = key.trim().trim_matches('"').replace('-', "_");
        if !seen.insert(key.clone()) {
            return Err(at(format!("`{key}` is set twice")));
        }
        let value = toml_value(value.trim()).map_err(at)?;
        let string = |v: TomlValue| match v {
            TomlValue::Str(s) => Ok(s),
            TomlValue::Int(_) => Err(at(format!("`{key}` must be a string"))),
        };
        match key.as_str() {
            "id" => match value {
                TomlValue::Int(i) => config.id = Some(i),
                TomlValue::Str(_) => return Err(at("`id` must be an integer".into())),
            },
            "listen" => config.listen = Some(string(value)?),
            "peer_listen" => config.peer_listen = Some(string(value)?),
            "data_dir" => config.data_dir = Some(PathBuf::from(string(value)?)),
            "advertise" => config.advertise = Some(string(value)?),
            _ => {
                return Err(at(format!(
                    "unknown key `{key}` (known: id, listen, peer_listen, data_dir, advertise)"
                )))
            }
        }
    }
    Ok(config)
}

enum TomlValue {
    Str(String),
    Int(u64),
}

fn toml_value(text: &str) -> Result<TomlValue, String> {
    let rest_is_comment = |rest: &str| {
        let rest = rest.trim();
        if rest.is_empty() || rest.starts_with('#') {
            Ok(())
        } else {
            Err(format!("unexpected {rest:?} after the value"))
        }
    };
    if let Some(body) = text.strip_prefix('\'') {
        let end = body.find('\'').ok_or("unterminated string")?;
        rest_is_comment(&body[end + 1..])?;
        return Ok(TomlValue::Str(body[..end].to_owned()));
    }
    if let Some(body) = text.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    rest_is_comment(&body[i + 1..])?;
                    return Ok(TomlValue::Str(out));
                }
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    other => return Err(format!("unsupported escape \\{}", other.unwrap_or(' '))),
                },
                c => out.push(c),
            }
        }
        return Err("unterminated string".into());
    }
    let (number, rest) = text.split_at(
        text.find(|c: char| c.is_whitespace() || c == '#')
            .unwrap_or(text.len()),
    );
    rest_is_comment(rest)?;
    number
        .replace('_', "")
        .parse()
        .map(TomlValue::Int)
        .map_err(|_| format!("{number:?} is not a string or a non-negative integer"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn config_subset() {
        let text = r#"
            # member 2
            id = 2
            listen = "0.0.0.0:7601"   # clients
            peer-listen = '0.0.0.0:7701'
            data_dir = "/var/lib/purser/2"
            advertise = "10.0.0.2:7601"
        "#;
        let c = parse_config(text).unwrap();
        assert_eq!(c.id, Some(2));
        assert_eq!(c.listen.as_deref(), Some("0.0.0.0:7601"));
        assert_eq!(c.peer_listen.as_deref(), Some("0.0.0.0:7701"));
        assert_eq!(c.data_dir, Some(PathBuf::from("/var/lib/purser/2")));
        assert_eq!(c.advertise.as_deref(), Some("10.0.0.2:7601"));
        for bad in [
            "[server]\nid = 1",
            "id = \"1\"",
            "listen = 5",
            "id = 1\nid = 2",
            "port = 1",
            "listen = \"a",
            "listen = \"a\" junk",
            "id",
        ] {
            assert!(parse_config(bad).is_err(), "{bad:?}");
        }
    }
}
