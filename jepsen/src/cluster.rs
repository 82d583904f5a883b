//! The nodes: `purser serve` processes, one per namespace, started with `ip netns exec` (which
//! executes the program in place, so the child's pid is the server's pid), with leader leases on
//! (`--lease-reads`), each under libfaketime with its own wall-clock offset file and with its
//! own fault control file (read by a binary built with the `fault-hooks` feature).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use purser_client::{pb, Client, ClientConfig};

use crate::net;

pub const CLIENT_PORT: u16 = 7600;
pub const PEER_PORT: u16 = 7700;

/// The fault control file's variable (read by `purser_storage::faults`).
pub const FAULTS_FILE_ENV: &str = "PURSER_FAULTS_FILE";

/// libfaketime: `$PURSER_LIBFAKETIME`, else the multi-threaded variant the Debian package
/// `libfaketime` installs under `/usr/lib/<arch>/faketime/`.
pub fn libfaketime() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("PURSER_LIBFAKETIME") {
        return Some(PathBuf::from(path));
    }
    let mut candidates = vec![PathBuf::from("/usr/lib/faketime/libfaketimeMT.so.1")];
    if let Ok(dirs) = std::fs::read_dir("/usr/lib") {
        for dir in dirs.flatten() {
            candidates.push(dir.path().join("faketime/libfaketimeMT.so.1"));
        }
    }
    candidates.push(PathBuf::from("/usr/local/lib/faketime/libfaketimeMT.so.1"));
    candidates.into_iter().find(|c| c.is_file())
}

/// What a node's fault control file asks for (see `purser_storage::faults`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// openraft's clock rate (1 = real time).
    pub clock_rate: Option<f64>,
    /// Each outgoing Raft RPC held back a random time in this range (ms).
    pub delay_ms: Option<(u64, u64)>,
    /// This share of outgoing Raft RPCs sent twice.
    pub duplicate_percent: Option<u32>,
}

impl Faults {
    fn render(&self) -> String {
        let mut text = String::new();
        if let Some(rate) = self.clock_rate {
            text.push_str(&format!("clock_rate = {rate}\n"));
        }
        if let Some((lo, hi)) = self.delay_ms {
            text.push_str(&format!("delay_ms = {lo}-{hi}\n"));
        }
        if let Some(p) = self.duplicate_percent {
            text.push_str(&format!("duplicate_percent = {p}\n"));
        }
        text
    }
}

/// Replaces `path` in one step, so that a reader never sees half a file.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

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
    faketime: Option<PathBuf>,
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
            faketime: libfaketime(),
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
        let data = self.data_dir(id);
        let (clock_file, faults_file) = (self.clock_file(id), self.faults_file(id));
        // A restarted node keeps whatever fault is in force; a new one starts without any.
        if !clock_file.exists() {
            write_atomically(&clock_file, "+0\n")?;
        }
        if !faults_file.exists() {
            write_atomically(&faults_file, "")?;
        }
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &net::namespace(id)])
            .arg(&self.bin)
            .args(["serve", "--id", &id.to_string()])
            .args(["--listen", &client_addr(id)])
            .args(["--peer-listen", &peer_addr(id)])
            .arg("--data-dir")
            .arg(&data)
            .arg("--lease-reads")
            .env(FAULTS_FILE_ENV, &faults_file)
            .env(
                "RUST_LOG",
                std::env::var("PURSER_LOG").unwrap_or("info".into()),
            );
        // As in production: TLS on the client port, mutual TLS between members.
        let certs = self.certs_dir();
        let file = |name: String| certs.join(name);
        command
            .arg("--tls-cert")
            .arg(file(format!("member-{id}.pem")))
            .arg("--tls-key")
            .arg(file(format!("member-{id}.key")))
            .arg("--peer-cert")
            .arg(file(format!("member-{id}.pem")))
            .arg("--peer-key")
            .arg(file(format!("member-{id}.key")))
            .arg("--peer-ca")
            .arg(file("ca.pem".into()));
        if let Some(lib) = &self.faketime {
            // Only the wall clock: a faked monotonic clock hangs tokio. The offset file is read
            // at every clock call (no cache), so a jump takes effect at once.
            command
                .env("LD_PRELOAD", lib)
                .env("FAKETIME_TIMESTAMP_FILE", &clock_file)
                .env("FAKETIME_NO_CACHE", "1")
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("NO_FAKE_STAT", "1");
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let node = self.node(id);
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// Node `id`'s data directory.
    fn certs_dir(&self) -> PathBuf {
        self.dir.join("certs")
    }

    /// Makes the cluster's CA and member certificates (`purser certs init`), valid for every
    /// node's address and from a day in the past (the clock nemeses move clocks by an hour at
    /// most), and keeps the CA for the clients.
    pub fn certify(&self) -> std::io::Result<()> {
        let dir = self.certs_dir();
        let mut command = Command::new(&self.bin);
        command
            .args(["certs", "init"])
            .arg(&dir)
            .args(["--members", &self.nodes.len().to_string()]);
        for id in self.ids() {
            command.args(["--host", &net::address(id)]);
        }
        let out = command.stdin(Stdio::null()).output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "purser certs init: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let ca = std::fs::read_to_string(dir.join("ca.pem"))?;
        if CLUSTER_CA.set(ca).is_err() {
            eprintln!("purser-jepsen: the cluster was certified twice in one run");
        }
        Ok(())
    }

    pub fn data_dir(&self, id: u32) -> PathBuf {
        self.dir.join(format!("n{id}"))
    }

    /// Node `id`'s wall-clock offset, as libfaketime reads it (`+0`, `-300`: seconds).
    fn clock_file(&self, id: u32) -> PathBuf {
        self.dir.join(format!("n{id}.faketime"))
    }

    fn faults_file(&self, id: u32) -> PathBuf {
        self.dir.join(format!("n{id}.faults"))
    }

    /// Moves node `id`'s wall clock `offset_s` seconds away from real time (0: real time), at
    /// once and without a restart.
    pub fn set_clock_offset(&self, id: u32, offset_s: i64) -> Result<(), String> {
        if self.faketime.is_none() {
            return Err("libfaketime not found (apt-get install libfaketime)".into());
        }
        write_atomically(&self.clock_file(id), &format!("{offset_s:+}\n"))
            .map_err(|e| format!("n{id}.faketime: {e}"))
    }

    /// Sets what node `id`'s fault control file asks for (the node reads it within 50 ms).
    pub fn set_faults(&self, id: u32, faults: &Faults) -> Result<(), String> {
        write_atomically(&self.faults_file(id), &faults.render())
            .map_err(|e| format!("n{id}.faults: {e}"))
    }

    /// Every node back to real time and no faults. Says what failed.
    pub fn reset_faults(&self) -> Result<(), String> {
        let mut failed = Vec::new();
        for id in self.ids() {
            if self.faketime.is_some() {
                failed.extend(self.set_clock_offset(id, 0).err());
            }
            failed.extend(self.set_faults(id, &Faults::default()).err());
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }

    /// Removes the control files (once the nodes are gone).
    fn remove_control_files(&self) {
        for id in self.ids() {
            let _ = std::fs::remove_file(self.clock_file(id));
            let _ = std::fs::remove_file(self.faults_file(id));
        }
    }

    /// The last line of node `id`'s output that says something.
    pub fn log_tail(&self, id: u32) -> String {
        let text = std::fs::read(self.dir.join(format!("n{id}.log"))).unwrap_or_default();
        let from = text.len().saturating_sub(4096);
        String::from_utf8_lossy(&text[from..])
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .chars()
            .take(400)
            .collect()
    }

    /// Whether node `id`'s process has exited on its own (then it is no longer running).
    pub fn exited(&mut self, id: u32) -> Option<std::process::ExitStatus> {
        let node = self.node(id);
        let status = node
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if status.is_some() {
            node.child = None;
            node.paused = false;
        }
        status
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

    /// Kills every node and removes the fault control files: nothing is left faulty.
    pub fn kill_all(&mut self) {
        for id in self.ids() {
            self.kill9(id);
        }
        self.remove_control_files();
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

/// The run's `/` admin token, answered by `Init`: every client of the harness carries it,
/// since the harness acts for the operator and for the workload's tenants at once. The nodes
/// run with authentication on, as in production.
static ADMIN_TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The CA clients verify the members with, from [`Cluster::certify`].
static CLUSTER_CA: std::sync::OnceLock<String> = std::sync::OnceLock::new();

pub fn cluster_ca() -> Option<String> {
    CLUSTER_CA.get().cloned()
}

/// The token clients send (none before `Init`).
pub fn admin_token() -> Option<String> {
    ADMIN_TOKEN.get().cloned()
}

/// Initializes the cluster through node 1 and keeps the token it answers.
pub async fn init(request: pb::InitRequest) -> Result<(), purser_client::ClientError> {
    let client = one_client(1, Duration::from_secs(20))?;
    let answer = client.init(request).await?;
    if ADMIN_TOKEN.set(answer.admin_token).is_err() {
        eprintln!("purser-jepsen: the cluster was initialized twice in one run");
    }
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
        token: admin_token(),
        ca: cluster_ca(),
        identity: None,
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
    client.status(pb::StatusRequest {}).await.ok()
}

/// Node `id` answers gRPC health (which needs no token: the probe before `Init`).
pub async fn serving(id: u32) -> Option<()> {
    let client = one_client(id, Duration::from_secs(1)).ok()?;
    let check = purser_client::health::HealthCheckRequest {
        service: String::new(),
    };
    client.health_check(check).await.ok().map(|_| ())
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

/// A client for membership calls through every node, following redirects to the leader; one
/// attempt may wait for a learner to catch up (through a snapshot, perhaps).
pub fn admin_client(ids: &[u32]) -> Result<Client, purser_client::ClientError> {
    let config = ClientConfig {
        token: admin_token(),
        ca: cluster_ca(),
        identity: None,
        request_timeout: Duration::from_secs(15),
        call_timeout: Duration::from_secs(30),
        attempts_max: 20,
        connect_timeout: Duration::from_millis(500),
    };
    Client::new(ids.iter().map(|&id| client_addr(id)), config)
}

/// The voters as the leader sees them (None: no leader answered).
pub async fn voters(ids: &[u32]) -> Option<Vec<u32>> {
    let leader = leader(ids).await?;
    let s = status(leader).await?;
    Some(
        s.members
            .iter()
            .filter(|m| m.voter)
            .map(|m| m.id as u32)
            .collect(),
    )
}

/// A client of node `id` alone whose one attempt may take `timeout` (the server waits).
fn waiting_client(id: u32, timeout: Duration) -> Result<Client, String> {
    let config = ClientConfig {
        token: admin_token(),
        ca: cluster_ca(),
        identity: None,
        request_timeout: timeout,
        call_timeout: timeout,
        attempts_max: 1,
        connect_timeout: Duration::from_millis(500),
    };
    Client::new([client_addr(id)], config).map_err(|e| e.to_string())
}

/// Asks the leader `from` to hand leadership to `to`; the leader afterwards, as it says.
pub async fn transfer_leader(from: u32, to: u32) -> Result<Option<u64>, String> {
    let client = waiting_client(from, Duration::from_secs(8))?;
    let r = client
        .transfer_leader(pb::TransferLeaderRequest { id: u64::from(to) })
        .await
        .map_err(|e| e.to_string())?;
    Ok(r.leader_id)
}

/// Removes member `id` (voter or learner); the log index of the last membership entry.
pub async fn remove(admin: &Client, id: u32) -> Result<u64, String> {
    let r = admin
        .remove(pb::RemoveRequest { id: u64::from(id) })
        .await
        .map_err(|e| e.to_string())?;
    Ok(r.log_index)
}

/// Adds member `id` back: a learner that catches up (blocking), then a voter.
pub async fn add_voter(admin: &Client, id: u32) -> Result<u64, String> {
    let add = pb::AddLearnerRequest {
        id: u64::from(id),
        peer_addr: peer_addr(id),
        client_addr: client_addr(id),
        blocking: true,
    };
    admin
        .add_learner(add)
        .await
        .map_err(|e| format!("add-learner: {e}"))?;
    let r = admin
        .promote(pb::PromoteRequest { id: u64::from(id) })
        .await
        .map_err(|e| format!("promote: {e}"))?;
    Ok(r.log_index)
}

/// Makes node `id` snapshot its state (and purge its log up to the snapshot).
pub async fn snapshot(id: u32, purge: bool) -> Result<u64, String> {
    let client = waiting_client(id, Duration::from_secs(12))?;
    let r = client
        .snapshot(pb::SnapshotRequest { purge })
        .await
        .map_err(|e| e.to_string())?;
    Ok(r.snapshot_index)
}
