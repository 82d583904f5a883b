//! Real `purser serve` processes on loopback, with TLS, mutual TLS and tokens as in production:
//! kill -9 under load, then restart.
//!
//! The binary is the workspace's `purser` (built by `cargo build -p purser-cli`, which the
//! test command runs first); `PURSER_BIN` overrides its path.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use purser_client::{pb, Client, ClientConfig};
use purser_testkit::free_addr;

fn purser_bin() -> PathBuf {
    if let Ok(path) = std::env::var("PURSER_BIN") {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/processes-<hash> → target/<profile>/purser
    let exe = std::env::current_exe().expect("own path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join("purser");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p purser-cli` first",
        bin.display()
    );
    bin
}

struct Member {
    id: u64,
    client: SocketAddr,
    peer: SocketAddr,
    dir: PathBuf,
    /// What `purser certs init` wrote: the member serves with TLS and mutual TLS, as in
    /// production.
    certs: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.with_extension("log")).expect("log file");
        let child = Command::new(purser_bin())
            .args(["serve", "--id", &self.id.to_string()])
            .args([
                "--listen",
                &self.client.to_string(),
                "--peer-listen",
                &self.peer.to_string(),
            ])
            .arg("--data-dir")
            .arg(&self.dir)
            .args(self.tls_args())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn purser serve");
        self.child = Some(child);
    }

    fn tls_args(&self) -> Vec<String> {
        let file = |name: String| self.certs.join(name).display().to_string();
        let (cert, key) = (
            file(format!("member-{}.pem", self.id)),
            file(format!("member-{}.key", self.id)),
        );
        [
            ("--tls-cert", cert.clone()),
            ("--tls-key", key.clone()),
            ("--peer-cert", cert),
            ("--peer-key", key),
            ("--peer-ca", file("ca.pem".into())),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_owned(), value])
        .collect()
    }

    /// SIGKILL: no shutdown path runs.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The CA of the run's certificates (`purser certs init`), which clients verify members with.
static CA: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// A client carrying `token` (empty: none, as before `Init`), over TLS.
fn client(addrs: &[SocketAddr], timeout: Duration, token: &str) -> Client {
    let config = ClientConfig {
        token: (!token.is_empty()).then(|| token.to_owned()),
        ca: CA.get().cloned(),
        call_timeout: timeout,
        ..Default::default()
    };
    Client::new(addrs.iter().map(|a| a.to_string()), config).expect("client")
}

async fn status(addr: SocketAddr, token: &str) -> Option<pb::StatusResponse> {
    let c = client(&[addr], Duration::from_secs(1), token);
    c.status(pb::StatusRequest {}).await.ok()
}

/// The member answers gRPC health (which needs no token).
async fn serving(addr: SocketAddr) -> Option<()> {
    let c = client(&[addr], Duration::from_secs(1), "");
    let check = purser_client::health::HealthCheckRequest {
        service: String::new(),
    };
    c.health_check(check).await.ok().map(|_| ())
}

async fn wait_for<T>(what: &str, within: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn path(p: &str) -> Option<pb::NodeRef> {
    Some(pb::NodeRef {
        node: Some(pb::node_ref::Node::Path(p.into())),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_leader_under_load_loses_no_acknowledged_reservation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = dir.path().join("certs");
    let made = Command::new(purser_bin())
        .args(["certs", "init"])
        .arg(&certs)
        .args(["--members", "3"])
        .output()
        .expect("purser certs init");
    assert!(made.status.success(), "{made:?}");
    let ca = std::fs::read_to_string(certs.join("ca.pem")).expect("ca.pem");
    CA.set(ca).expect("one run per process");
    let mut members: Vec<Member> = (1..=3)
        .map(|id| Member {
            id,
            client: free_addr(),
            peer: free_addr(),
            dir: dir.path().join(format!("n{id}")),
            certs: certs.clone(),
            child: None,
        })
        .collect();
    for m in &mut members {
        m.spawn();
    }
    let addrs: Vec<SocketAddr> = members.iter().map(|m| m.client).collect();
    for addr in &addrs {
        wait_for("a member to listen", Duration::from_secs(20), async || {
            serving(*addr).await
        })
        .await;
    }
    let init = pb::InitRequest {
        members: members
            .iter()
            .map(|m| {
                (
                    m.id,
                    pb::MemberAddr {
                        peer_addr: m.peer.to_string(),
                        client_addr: m.client.to_string(),
                    },
                )
            })
            .collect(),
    };
    let token = client(&addrs, Duration::from_secs(20), "")
        .init(init)
        .await
        .expect("init")
        .admin_token;
    let token = token.as_str();
    let admin = client(&addrs, Duration::from_secs(20), token);
    let create = pb::CreateNodeRequest {
        request_id: "root".into(),
        sent_at_ms: purser_client::now_ms(),
        parent: None,
        name: "acme".into(),
        kind: "org".into(),
        tags: vec![],
        root: Some(pb::RootSpec {
            currencies: vec![pb::CurrencySpec {
                code: "usd".into(),
                scale: 6,
                funded: false,
            }],
            no_default_cap: true,
        }),
    };
    admin.create_node(create).await.expect("create root");

    let shared = Arc::new(client(&addrs, Duration::from_secs(30), token));
    let mut workers = Vec::new();
    for w in 0..6 {
        let c = shared.clone();
        workers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..60 {
                let request = pb::ReserveRequest {
                    request_id: format!("w{w}-{i}"),
                    sent_at_ms: purser_client::now_ms(),
                    node: path("acme"),
                    currency: "usd".into(),
                    amount: Some(pb::reserve_request::Amount::Exact(3)),
                    ttl_ms: 600_000,
                    attributes: None,
                };
                let answer = c.reserve(request.clone()).await;
                if let Ok(answer) = answer {
                    if let Some(pb::reserve_response::Result::Granted(g)) =
                        answer.into_inner().result
                    {
                        acked.push((request, g.reservation_id));
                    }
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let leader = wait_for("a leader", Duration::from_secs(10), async || {
        for m in &members {
            if let Some(s) = status(m.client, token).await {
                if s.role == pb::RaftRole::Leader as i32 {
                    return Some(m.id);
                }
            }
        }
        None
    })
    .await;
    members[(leader - 1) as usize].kill9();
    let mut acked = Vec::new();
    for worker in workers {
        acked.extend(worker.await.expect("worker"));
    }
    assert!(
        acked.len() >= 300,
        "most reservations were acknowledged: {}",
        acked.len()
    );
    // Retrying every acknowledged request returns its first reservation: applied once.
    for (request, reservation) in &acked {
        let again = shared.reserve(request.clone()).await.expect("retry");
        assert!(again.duplicate, "{} was forgotten", request.request_id);
        match &again.result {
            Some(pb::reserve_response::Result::Granted(g)) => {
                assert_eq!(g.reservation_id, *reservation)
            }
            other => panic!("{}: {other:?}", request.request_id),
        }
    }
    let show = pb::ShowRequest {
        node: path("acme"),
        allow_stale: false,
    };
    let shown = shared.show(show).await.expect("show");
    let held = shown.node.expect("node").accounts[0].held;
    assert!(
        held >= 3 * acked.len() as u64,
        "acknowledged holds are all present ({held})"
    );
    assert!(
        held <= 3 * 360 && held % 3 == 0,
        "no hold applied twice ({held})"
    );

    // The killed member restarts from its files and converges with the others.
    members[(leader - 1) as usize].spawn();
    wait_for(
        "convergence after restart",
        Duration::from_secs(30),
        async || {
            let mut views = Vec::new();
            for m in &members {
                views.push(
                    status(m.client, token)
                        .await
                        .map(|s| (s.applied_index, s.state_digest))?,
                );
            }
            views.windows(2).all(|w| w[0] == w[1]).then_some(())
        },
    )
    .await;
}
