//! Webhooks end to end: a 3-member cluster in one process, receivers started by the test (tiny
//! HTTP servers on 127.0.0.1), deliveries checked against what `Watch` streams.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use purser_client::{pb, Client, ClientConfig};
use purser_server::node::NodeConfig;
use purser_server::serve::{dev_config, ServeConfig, Server};
use purser_testkit::free_addr;
use serde_json::Value;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET_A: &str = "receiver-a-secret-0123";
const SECRET_B: &str = "receiver-b-secret-4567";

// ---- a small cluster -----------------------------------------------------------------------

struct Cluster {
    _dir: tempfile::TempDir,
    configs: BTreeMap<u64, ServeConfig>,
    servers: BTreeMap<u64, Server>,
    /// The `/` admin token `Init` answered.
    token: String,
}

impl Cluster {
    async fn start(size: u64) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut configs = BTreeMap::new();
        let mut servers = BTreeMap::new();
        for id in 1..=size {
            let client = free_addr();
            let mut config = dev_config(dir.path().join(format!("n{id}")), client);
            let mut node = NodeConfig::new(
                id,
                dir.path().join(format!("n{id}")),
                free_addr(),
                client.to_string(),
            );
            node.heartbeat_ms = 50;
            // The receivers of this test listen on loopback.
            node.webhook_allow_private = true;
            node.election_timeout_min_ms = 300;
            node.election_timeout_max_ms = 600;
            config.node = node;
            config.bootstrap_single = false;
            servers.insert(id, Server::start(config.clone()).await.expect("start"));
            configs.insert(id, config);
        }
        let init = pb::InitRequest {
            members: configs
                .iter()
                .map(|(id, c)| {
                    let addr = pb::MemberAddr {
                        peer_addr: c.node.peer_listen.to_string(),
                        client_addr: c.node.client_addr.clone(),
                    };
                    (*id, addr)
                })
                .collect(),
        };
        let mut cluster = Cluster {
            _dir: dir,
            configs,
            servers,
            token: String::new(),
        };
        cluster.token = cluster.client().init(init).await.expect("init").admin_token;
        cluster
    }

    /// A client of the members still running.
    fn client(&self) -> Client {
        let endpoints: Vec<String> = self
            .servers
            .keys()
            .map(|id| self.configs[id].node.client_addr.clone())
            .collect();
        let config = ClientConfig {
            token: Some(self.token.clone()),
            call_timeout: Duration::from_secs(20),
            ..Default::default()
        };
        Client::new(endpoints, config).expect("client")
    }

    async fn leader(&self, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            if let Some((id, _)) = self.servers.iter().find(|(_, s)| s.node.is_leader()) {
                return *id;
            }
            assert!(Instant::now() < deadline, "no leader within {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn kill(&mut self, id: u64) {
        self.servers.remove(&id).expect("running").stop().await;
    }
}

fn path(p: &str) -> Option<pb::NodeRef> {
    Some(pb::NodeRef {
        node: Some(pb::node_ref::Node::Path(p.into())),
    })
}

fn request_id(what: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    format!("{what}-{}", SEQ.fetch_add(1, Ordering::Relaxed))
}

async fn create(client: &Client, parent: Option<&str>, name: &str) {
    let root = parent.is_none().then(|| pb::RootSpec {
        currencies: vec![pb::CurrencySpec {
            code: "usd".into(),
            scale: 0,
            funded: false,
        }],
        no_default_cap: true,
    });
    let request = pb::CreateNodeRequest {
        request_id: request_id("create"),
        sent_at_ms: purser_client::now_ms(),
        parent: parent.and_then(path),
        name: name.into(),
        kind: "team".into(),
        tags: vec![],
        root,
    };
    client.create_node(request).await.expect("create");
}

/// A monthly hard cap of `amount` with the default thresholds 50, 75, 100.
async fn cap(client: &Client, node: &str, amount: i64) {
    let request = pb::SetLimitRequest {
        request_id: request_id("cap"),
        sent_at_ms: purser_client::now_ms(),
        node: path(node),
        limit: Some(pb::LimitSpec {
            currency: "usd".into(),
            amount,
            window: Some(pb::Window {
                kind: Some(pb::window::Kind::Calendar(pb::Period::Month as i32)),
            }),
            mode: pb::LimitMode::Hard as i32,
            thresholds: vec![],
            on_exhausted: pb::OnExhausted::Deny as i32,
        }),
    };
    client.set_limit(request).await.expect("cap");
}

async fn charge(client: &Client, node: &str, amount: i64) {
    let request = pb::ChargeRequest {
        request_id: request_id("charge"),
        sent_at_ms: purser_client::now_ms(),
        node: path(node),
        currency: "usd".into(),
        actual: Some(pb::charge_request::Actual::Amount(amount)),
        attributes: None,
    };
    let response = client.charge(request).await.expect("charge");
    assert!(
        matches!(
            response.result,
            Some(pb::charge_response::Result::Charged(_))
        ),
        "charged: {response:?}"
    );
}

async fn add_webhook(client: &Client, url: String, secret: &str, kinds: &[&str]) -> u64 {
    let request = pb::AddWebhookRequest {
        request_id: request_id("hook"),
        sent_at_ms: purser_client::now_ms(),
        root: path("acme"),
        url,
        secret: secret.into(),
        kinds: kinds.iter().map(|k| k.to_string()).collect(),
    };
    client
        .add_webhook(request)
        .await
        .expect("add webhook")
        .webhook_id
}

// ---- a receiver ----------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Delivery {
    event_id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
}

struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Delivery>>>,
    /// Answer 500 (and record nothing) while set.
    failing: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
    https: bool,
}

impl Receiver {
    async fn start(failing: bool) -> Receiver {
        Receiver::serving(failing, None).await
    }

    /// A receiver over https, with a certificate for `localhost`.
    async fn start_tls(acceptor: tokio_rustls::TlsAcceptor) -> Receiver {
        Receiver::serving(false, Some(acceptor)).await
    }

    async fn serving(failing: bool, tls: Option<tokio_rustls::TlsAcceptor>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let got = Arc::new(Mutex::new(Vec::new()));
        let failing = Arc::new(AtomicBool::new(failing));
        let refused = Arc::new(AtomicU64::new(0));
        let (g, f, r) = (got.clone(), failing.clone(), refused.clone());
        let https = tls.is_some();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (g, f, r, tls) = (g.clone(), f.clone(), r.clone(), tls.clone());
                tokio::spawn(async move {
                    let _ = match tls {
                        None => serve_one(stream, g, f, r).await,
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(stream) => serve_one(stream, g, f, r).await,
                            Err(e) => Err(e),
                        },
                    };
                });
            }
        });
        Receiver {
            addr,
            got,
            failing,
            refused,
            task,
            https,
        }
    }

    fn url(&self) -> String {
        if self.https {
            format!("https://localhost:{}/hooks/purser", self.addr.port())
        } else {
            format!("http://{}/hooks/purser", self.addr)
        }
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    /// Distinct event ids received (test pings, id 0, left out).
    fn ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .deliveries()
            .iter()
            .map(|d| d.event_id.parse::<u64>().expect("numeric event id"))
            .filter(|id| *id != 0)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    async fn wait_for(&self, ids: &[u64], within: Duration) {
        let deadline = Instant::now() + within;
        while !ids.iter().all(|id| self.ids().contains(id)) {
            assert!(
                Instant::now() < deadline,
                "receiver got {:?}, expected {ids:?}",
                self.ids()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one<S>(
    mut stream: S,
    got: Arc<Mutex<Vec<Delivery>>>,
    failing: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() > 65_536 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("POST /hooks/purser HTTP/1.1")),
        "{head}"
    );
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers["content-length"].parse().expect("length");
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let answer: &[u8] = if failing.load(Ordering::SeqCst) {
        refused.fetch_add(1, Ordering::SeqCst);
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope"
    } else {
        got.lock().unwrap().push(Delivery {
            event_id: headers["purser-event-id"].clone(),
            timestamp: headers["purser-timestamp"].clone(),
            signature: headers["purser-signature"].clone(),
            body: buf[head_end..head_end + length].to_vec(),
        });
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    };
    stream.write_all(answer).await?;
    stream.shutdown().await
}

/// What a receiver must do: recompute the HMAC over `"<t>.<body>"`, compare, and reject old
/// timestamps. Independent of the server's own implementation.
fn check_signature(secret: &str, d: &Delivery) {
    let (t, v1) = d
        .signature
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .expect("t=..,v1=..");
    assert_eq!(t, d.timestamp, "Purser-Timestamp is the signed t");
    let t: u64 = t.parse().expect("unix seconds");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(now.abs_diff(t) <= 300, "timestamp {t} is not recent");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(&d.body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(v1, expected, "signature of {}", d.event_id);
}

// ---- watch, the reference ------------------------------------------------------------------

/// Everything `Watch` has for `kinds` under acme, from the beginning, once `count` arrived.
async fn watched(client: &Client, kinds: &[&str], count: usize) -> Vec<pb::WatchEvent> {
    let request = pb::WatchRequest {
        from_index: 1,
        kinds: kinds.iter().map(|k| k.to_string()).collect(),
        node: path("acme"),
    };
    let mut stream = client.watch(request).await.expect("watch");
    let mut events = Vec::new();
    while events.len() < count {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("an event within 10 s")
            .expect("stream")
            .expect("open");
        events.push(event);
    }
    // Nothing more than expected.
    if let Ok(Ok(Some(extra))) =
        tokio::time::timeout(Duration::from_millis(300), stream.message()).await
    {
        panic!("more events than expected: {extra:?}");
    }
    events
}

/// Every delivery is signed, and its body is exactly the watched event with the same id;
/// duplicates carry the same id and the same body. Returns the distinct ids delivered.
fn check_against_watch(secret: &str, deliveries: &[Delivery], watched: &[pb::WatchEvent]) {
    let by_index: BTreeMap<u64, &pb::WatchEvent> = watched.iter().map(|e| (e.index, e)).collect();
    for d in deliveries.iter().filter(|d| d.event_id != "0") {
        check_signature(secret, d);
        let body: Value = serde_json::from_slice(&d.body).expect("JSON body");
        let id: u64 = d.event_id.parse().expect("numeric id");
        assert_eq!(body["id"], id, "Purser-Event-Id is the body's id");
        let w = by_index
            .get(&id)
            .unwrap_or_else(|| panic!("delivered {id}, which Watch does not have: {body}"));
        assert_eq!(body["kind"], w.kind.as_str());
        assert_eq!(body["node_id"], w.node_id);
        assert_eq!(body["at_ms"], w.at_ms);
        assert_eq!(body["log_index"], w.log_index);
        let event: Value = serde_json::from_str(&w.json).expect("watch JSON");
        assert_eq!(body["event"], event, "event {id}");
    }
    let mut ids: Vec<u64> = deliveries
        .iter()
        .filter_map(|d| d.event_id.parse::<u64>().ok())
        .filter(|id| *id != 0)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let expected: Vec<u64> = watched.iter().map(|e| e.index).collect();
    assert_eq!(ids, expected, "every watched event was delivered");
}

// ---- the test ------------------------------------------------------------------------------

/// A receiver gets every threshold event exactly as `Watch` streams it, signed, before and
/// after the leader is killed; a receiver that answers 500 for a while gets every governance
/// event once it recovers (retries and a new leader may repeat one, with the same id and body).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receivers_get_every_threshold_event_across_failures_and_a_leader_kill() {
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client();
    create(&client, None, "acme").await;
    create(&client, Some("acme"), "dev").await;
    create(&client, Some("acme"), "ops").await;
    cap(&client, "acme/dev", 100).await;
    cap(&client, "acme/ops", 100).await;

    let a = Receiver::start(false).await;
    let b = Receiver::start(true).await;
    let hook_a = add_webhook(
        &client,
        a.url(),
        SECRET_A,
        &["governance.threshold_crossed"],
    )
    .await;
    let hook_b = add_webhook(&client, b.url(), SECRET_B, &["governance"]).await;

    // The test ping goes from whichever member answers, signed, with event id 0.
    let test = pb::TestWebhookRequest {
        webhook_id: hook_a,
        root: None,
    };
    let tested = client.test_webhook(test).await.expect("test");
    assert_eq!(tested.results.len(), 1);
    assert_eq!(tested.results[0].http_status, 200, "{:?}", tested.results);
    let ping = a.deliveries().pop().expect("the ping arrived");
    assert_eq!(ping.event_id, "0");
    check_signature(SECRET_A, &ping);
    let ping: Value = serde_json::from_slice(&ping.body).expect("JSON");
    assert_eq!(ping["kind"], "test");

    // 50 %, 75 % and 100 % of acme/dev's cap.
    for amount in [30, 30, 30, 10] {
        charge(&client, "acme/dev", amount).await;
    }
    let first = watched(&client, &["governance.threshold_crossed"], 3).await;
    let first_ids: Vec<u64> = first.iter().map(|e| e.index).collect();
    a.wait_for(&first_ids, Duration::from_secs(15)).await;
    check_against_watch(SECRET_A, &a.deliveries(), &first);
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.refused.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "the failing receiver is retried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(b.ids().is_empty());

    // The leader goes; the next one resumes from the replicated cursors.
    let old = cluster.leader(Duration::from_secs(5)).await;
    cluster.kill(old).await;
    let client = cluster.client();
    let new = cluster.leader(Duration::from_secs(10)).await;
    assert_ne!(new, old);
    for amount in [50, 25, 25] {
        charge(&client, "acme/ops", amount).await;
    }
    let all = watched(&client, &["governance.threshold_crossed"], 6).await;
    let all_ids: Vec<u64> = all.iter().map(|e| e.index).collect();
    a.wait_for(&all_ids, Duration::from_secs(20)).await;
    check_against_watch(SECRET_A, &a.deliveries(), &all);

    // The failing receiver recovers and gets every governance event of acme.
    b.failing.store(false, Ordering::SeqCst);
    let governance = watched(&client, &["governance"], 6).await;
    let governance_ids: Vec<u64> = governance.iter().map(|e| e.index).collect();
    b.wait_for(&governance_ids, Duration::from_secs(40)).await;
    check_against_watch(SECRET_B, &b.deliveries(), &governance);

    // The cursors are replicated: ListWebhooks (a linearizable read) shows them caught up.
    let last = *all_ids.iter().max().expect("events");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = pb::ListWebhooksRequest { root: path("acme") };
        let listed = client.list_webhooks(list).await.expect("list").webhooks;
        assert_eq!(
            listed.iter().map(|w| w.id).collect::<Vec<_>>(),
            vec![hook_a, hook_b]
        );
        if listed.iter().all(|w| w.delivered_through >= last) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cursors not caught up: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for server in std::mem::take(&mut cluster.servers).into_values() {
        server.stop().await;
    }
}

/// A member without `--webhook-allow-private` refuses a subscription to a loopback, private
/// or link-local address when it is added (and would at each delivery).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_destination_is_refused_without_the_flag() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = dev_config(dir.path().join("data"), free_addr());
    config.node.peer_listen = free_addr();
    config.http_listen = None;
    let server = Server::start(config).await.expect("start");
    let file = server.admin_token_file.clone().expect("token file");
    let token = std::fs::read_to_string(file)
        .expect("token")
        .trim()
        .to_owned();
    let client = Client::new(
        [server.client_addr.to_string()],
        ClientConfig {
            token: Some(token),
            ..Default::default()
        },
    )
    .expect("client");
    let root = pb::CreateNodeRequest {
        name: "acme".into(),
        kind: "org".into(),
        root: Some(pb::RootSpec {
            currencies: vec![pb::CurrencySpec {
                code: "usd".into(),
                scale: 2,
                funded: false,
            }],
            no_default_cap: true,
        }),
        ..Default::default()
    };
    client.create_node(root).await.expect("root");
    for url in [
        "http://127.0.0.1:9/hook",
        "http://10.0.0.7/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:9/hook",
        "http://localhost:9/hook",
    ] {
        let add = pb::AddWebhookRequest {
            root: Some(pb::NodeRef {
                node: Some(pb::node_ref::Node::Path("acme".into())),
            }),
            url: url.into(),
            secret: SECRET_A.into(),
            kinds: vec!["usage".into()],
            ..Default::default()
        };
        let refused = client.add_webhook(add).await.expect_err(url);
        assert_eq!(
            refused.code(),
            tonic::Code::InvalidArgument,
            "{url}: {refused}"
        );
        assert!(refused.to_string().contains("refused"), "{url}: {refused}");
    }
    let listed = client
        .list_webhooks(pb::ListWebhooksRequest {
            root: Some(pb::NodeRef {
                node: Some(pb::node_ref::Node::Path("acme".into())),
            }),
        })
        .await
        .expect("list");
    assert!(listed.webhooks.is_empty());
    server.stop().await;
}

/// A member started with a webhook CA (`--webhook-ca`) delivers over https to a receiver
/// whose certificate that CA signed: the ping and the events arrive, signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_reach_an_https_receiver_through_a_private_ca() {
    let dir = tempfile::tempdir().expect("temp dir");
    let now = purser_client::now_ms();
    let ca = purser_server::certs::Authority::new("receivers' CA", now).expect("CA");
    let issued = ca
        .issue("receiver", &["localhost".into()], now)
        .expect("cert");
    let ca_file = dir.path().join("webhook-ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).expect("write CA");
    let (cert_file, key_file) = (dir.path().join("r.pem"), dir.path().join("r.key"));
    std::fs::write(&cert_file, &issued.cert_pem).expect("write cert");
    std::fs::write(&key_file, &issued.key_pem).expect("write key");
    let files = purser_server::tls::TlsFiles {
        cert: cert_file,
        key: key_file,
        ca: None,
    };
    let receiver =
        Receiver::start_tls(purser_server::tls::acceptor(&files, &[b"http/1.1"]).expect("tls"))
            .await;

    let mut config = dev_config(dir.path().join("data"), free_addr());
    config.node.peer_listen = free_addr();
    config.node.webhook_allow_private = true;
    config.node.webhook_ca = Some(ca_file);
    config.http_listen = None;
    let server = Server::start(config).await.expect("start");
    let file = server.admin_token_file.clone().expect("token file");
    let token = std::fs::read_to_string(file)
        .expect("token")
        .trim()
        .to_owned();
    let client = Client::new(
        [server.client_addr.to_string()],
        ClientConfig {
            token: Some(token),
            ..Default::default()
        },
    )
    .expect("client");
    create(&client, None, "acme").await;
    let hook = add_webhook(&client, receiver.url(), SECRET_A, &["usage"]).await;
    let tested = client
        .test_webhook(pb::TestWebhookRequest {
            webhook_id: hook,
            root: None,
        })
        .await
        .expect("test");
    assert_eq!(tested.results[0].http_status, 200, "{:?}", tested.results);
    charge(&client, "acme", 5).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.ids().is_empty() {
        assert!(Instant::now() < deadline, "no delivery over https");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivery = receiver
        .deliveries()
        .into_iter()
        .find(|d| d.event_id != "0")
        .expect("an event");
    check_signature(SECRET_A, &delivery);
    server.stop().await;
}
