//! TLS on every port of a 3-member cluster: clients reach it over https with the cluster's
//! CA, members talk over mutual TLS, a plaintext client gets nothing, and the peer port
//! refuses a certificate of another CA (or none).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use purser_client::{pb, Client, ClientConfig};
use purser_server::certs::{self, Authority};
use purser_server::node::NodeConfig;
use purser_server::pb::raft_client::RaftClient;
use purser_server::pb::RaftMessage;
use purser_server::serve::{ServeConfig, Server};
use purser_server::tls::TlsFiles;
use purser_testkit::free_addr;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

fn files(dir: &Path, name: &str, ca: Option<&str>) -> TlsFiles {
    TlsFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
        ca: ca.map(|ca| dir.join(ca)),
    }
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).expect("read")
}

/// A raw Raft call to `peer_addr` over TLS that trusts the cluster's CA and presents
/// `identity` (or nothing): whether the member let the call reach its Raft service.
async fn raft_call(peer_addr: &str, ca: &str, identity: Option<(String, String)>) -> bool {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let endpoint = Endpoint::from_shared(format!("https://{peer_addr}"))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    // Not a Raft message: a member that let the call in answers INVALID_ARGUMENT.
    let garbage = RaftMessage {
        data: vec![0xff; 8],
    };
    match RaftClient::new(channel).vote(garbage).await {
        Err(status) => status.code() == tonic::Code::InvalidArgument,
        Ok(_) => true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_with_tls_on_every_port_serves_and_refuses_strangers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs_dir = dir.path().join("certs");
    let now = purser_client::now_ms();
    certs::init(&certs_dir, 3, &[], now).expect("certs");
    let ca = read(&certs_dir, "ca.pem");

    let mut servers = BTreeMap::new();
    let mut addrs = BTreeMap::new();
    for id in 1..=3u64 {
        let client = free_addr();
        let mut node = NodeConfig::new(
            id,
            dir.path().join(format!("n{id}")),
            free_addr(),
            client.to_string(),
        );
        node.heartbeat_ms = 50;
        node.election_timeout_min_ms = 300;
        node.election_timeout_max_ms = 600;
        node.peer_tls = Some(files(&certs_dir, &format!("member-{id}"), Some("ca.pem")));
        let config = ServeConfig {
            node,
            client_listen: client,
            bootstrap_single: false,
            http_listen: None,
            tls: Some(files(&certs_dir, &format!("member-{id}"), None)),
        };
        let server = Server::start(config.clone()).await.expect("start");
        addrs.insert(id, (config.node.peer_listen, client));
        servers.insert(id, server);
    }
    let config = |token: Option<String>| ClientConfig {
        token,
        ca: Some(ca.clone()),
        call_timeout: Duration::from_secs(20),
        ..ClientConfig::default()
    };
    let endpoints: Vec<String> = addrs
        .values()
        .map(|(_, c)| format!("localhost:{}", c.port()))
        .collect();
    let init = pb::InitRequest {
        members: addrs
            .iter()
            .map(|(id, (peer, client))| {
                let addr = pb::MemberAddr {
                    peer_addr: format!("localhost:{}", peer.port()),
                    client_addr: format!("localhost:{}", client.port()),
                };
                (*id, addr)
            })
            .collect(),
    };
    let anonymous = Client::new(endpoints.clone(), config(None)).expect("client");
    let token = anonymous
        .init(init)
        .await
        .expect("init over https")
        .admin_token;
    let client = Client::new(endpoints.clone(), config(Some(token.clone()))).expect("client");
    let root = pb::CreateNodeRequest {
        name: "acme".into(),
        kind: "org".into(),
        root: Some(pb::RootSpec {
            currencies: vec![pb::CurrencySpec {
                code: "usd".into(),
                scale: 0,
                funded: false,
            }],
            no_default_cap: true,
        }),
        ..Default::default()
    };
    client
        .create_node(root)
        .await
        .expect("a write over TLS, replicated over mutual TLS");

    // Every member applies it: replication runs over the peer port's mutual TLS.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut digests = Vec::new();
        for endpoint in &endpoints {
            let member =
                Client::member(endpoint.clone(), config(Some(token.clone()))).expect("member");
            if let Ok(status) = member.status(pb::StatusRequest {}).await {
                digests.push((status.applied_index, status.state_digest));
            }
        }
        if digests.len() == 3 && digests.windows(2).all(|w| w[0] == w[1]) && digests[0].0 > 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no convergence over TLS: {digests:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A plaintext client gets no answer from a TLS port.
    let plain = Client::new(
        [format!("http://{}", addrs[&1].1)],
        ClientConfig {
            token: Some(token.clone()),
            call_timeout: Duration::from_secs(2),
            attempts_max: 2,
            ..ClientConfig::default()
        },
    )
    .expect("client");
    assert!(plain.status(pb::StatusRequest {}).await.is_err());

    // The peer port: a member's certificate gets in; another CA's, or none, does not.
    let peer = format!("localhost:{}", addrs[&1].0.port());
    let member = (
        read(&certs_dir, "member-2.pem"),
        read(&certs_dir, "member-2.key"),
    );
    assert!(
        raft_call(&peer, &ca, Some(member)).await,
        "a member's certificate is let in"
    );
    let stranger = Authority::new("another CA", now).expect("CA");
    let forged = stranger
        .issue("purser member 2", &["localhost".into()], now)
        .expect("cert");
    assert!(
        !raft_call(&peer, &ca, Some((forged.cert_pem, forged.key_pem))).await,
        "a certificate of another CA is refused"
    );
    assert!(
        !raft_call(&peer, &ca, None).await,
        "no certificate is refused"
    );

    for (_, server) in servers {
        server.stop().await;
    }
}
