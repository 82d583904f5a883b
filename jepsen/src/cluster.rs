//! The nodes: `purser serve` processes, one per namespace, started with `ip netns exec` (which
//! executes the program in place, so the child's pid is the server's pid).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use purser_client::{pb, Client, ClientConfig};

use crate::net;

pub const CLIENT_PORT: u16 = 7600;
pub const PEER_PORT: u16 = 7700;

/// The `purser` binary: `$PURSER_BIN`, else next to this executable, else in
/// `$CARGO_TARGET_DIR/release`, else in `~/.cache/purser/target/release`.
pub fn purser_bin() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("PURSER_BIN") {
        return Some(PathBuf::from(path));
    }
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_owned))
    {
        candidates.push(dir.join("purser"));
        if let Some(up) = dir.parent() {
            candidates.push(up.join("purser"));
        }
    }
    if let Ok(target) = std::env::var("CARGO_TARGET_DIR") {
        candidates.push(Path::new(&target).join("release/purser"));
    }
    if let Ok(home) = std::env::var("HOME") {
        candidates.push(Path::new(&home).join(".cache/purser/target/release/purser"));
    }
    candidates.into_iter().find(|c| c.is_file())
}

pub fn client_addr(id: u32) -> String {
    format!("{}:{CLIENT_PORT}", net::address(id))
}

pub fn peer_addr(id: u32) -> String {
    format!("{}:{PEER_PORT}", net::address(id))
}

struct Node {
    id: u32,
    child: Option<Child>,
    paused: bool,
}

pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    nodes: Vec<Node>,
}

impl Cluster {
    pub fn new(bin: PathBuf, dir: &Path, count: u32) -> Cluster {
        Cluster {
            bin,
            dir: dir.to_owned(),
            nodes: (1..=count)
                .map(|id| Node {
                    id,
                    child: None,
                    paused: false,
                })
                .collect(),
        }
    }

    pub fn ids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| client_addr(n.id)).collect()
    }

    fn node(&mut self, id: u32) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    pub fn is_running(&self, id: u32) -> bool {
        self.nodes[(id - 1) as usize].child.is_some()
    }

    /// Starts node `id` (again), its output appended to `n<id>.log`.
    pub fn start(&mut self, id: u32) -> std::io::Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("n{id}.log")))?;
        let data = self.dir.join(format!("n{id}"));
        let child = Command::new("ip")
            .args(["netns", "exec", &net::namespace(id)])
            .arg(&self.bin)
            .args(["serve", "--id", &id.to_string()])
            .args(["--listen", &client_addr(id)])
            .args(["--peer-listen", &peer_addr(id)])
            .arg("--data-dir")
            .arg(&data)
            .env(
                "RUST_LOG",
                std::env::var("PURSER_LOG").unwrap_or("info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let node = self.node(id);
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill9(&mut self, id: u32) {
        let node = self.node(id);
        if let Some(mut child) = node.child.take() {
            if node.paused {
                let _ = signal(&child, "CONT");
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    /// SIGSTOP: the process freezes, its sockets stay open.
    pub fn pause(&mut self, id: u32) {
        let node = self.node(id);
        if let Some(child) = &node.child {
            if signal(child, "STOP").is_ok() {
                node.paused = true;
            }
        }
    }

    pub fn resume(&mut self, id: u32) {
        let node = self.node(id);
        if let Some(child) = &node.child {
            if node.paused && signal(child, "CONT").is_ok() {
                node.paused = false;
            }
        }
    }

    /// Resumes every paused node and starts every stopped one.
    pub fn restore_all(&mut self) -> std::io::Result<()> {
        for id in self.ids() {
            self.resume(id);
            if !self.is_running(id) {
                self.start(id)?;
            }
        }
        Ok(())
    }

    pub fn kill_all(&mut self) {
        for id in self.ids() {
            self.kill9(id);
        }
    }

    /// The request that initializes the cluster with every node a voter.
    pub fn init_request(&self) -> pb::InitRequest {
        let members = self
            .nodes
            .iter()
            .map(|n| {
                (
                    u64::from(n.id),
                    pb::MemberAddr {
                        peer_addr: peer_addr(n.id),
                        client_addr: client_addr(n.id),
                    },
                )
            })
            .collect();
        pb::InitRequest { members }
    }
}

/// Initializes the cluster through node 1.
pub async fn init(request: pb::InitRequest) -> Result<(), purser_client::ClientError> {
    let client = one_client(1, Duration::from_secs(20))?;
    client
        .call(|ch| {
            let r = request.clone();
            async move { pb::cluster_client::ClusterClient::new(ch).init(r).await }
        })
        .await?;
    Ok(())
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn signal(child: &Child, name: &str) -> Result<(), net::NetError> {
    net::run("kill", &[&format!("-{name}"), &child.id().to_string()]).map(|_| ())
}

fn one_client(id: u32, timeout: Duration) -> Result<Client, purser_client::ClientError> {
    let config = ClientConfig {
        request_timeout: timeout.min(Duration::from_secs(2)),
        call_timeout: timeout,
        attempts_max: 10,
        connect_timeout: Duration::from_millis(500),
    };
    Client::new([client_addr(id)], config)
}

/// Node `id`'s own view, or None if it does not answer within about a second.
pub async fn status(id: u32) -> Option<pb::StatusResponse> {
    let client = one_client(id, Duration::from_secs(1)).ok()?;
    client
        .call(|ch| async move {
            pb::cluster_client::ClusterClient::new(ch)
                .status(pb::StatusRequest {})
                .await
        })
        .await
        .ok()
}

/// The first node that says it leads.
pub async fn leader(ids: &[u32]) -> Option<u32> {
    for &id in ids {
        if let Some(s) = status(id).await {
            if s.role == pb::RaftRole::Leader as i32 {
                return Some(id);
            }
        }
    }
    None
}
