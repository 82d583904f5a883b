//! TLS on every port of a 3-member cluster: clients reach it over https with the cluster's
//! CA, members talk over mutual TLS, a plaintext client gets nothing, and the peer port
//! refuses a certificate of another CA (or none).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use openraft::raft::{AppendEntriesRequest, VoteRequest};
use purser_client::{pb, Client, ClientConfig};
use purser_server::certs::{self, Authority};
use purser_server::node::NodeConfig;
use purser_server::pb::raft_client::RaftClient;
use purser_server::pb::{RaftMessage, SnapshotChunk};
use purser_server::serve::{ServeConfig, Server};
use purser_server::store::encode;
use purser_server::tls::{self, TlsFiles};
use purser_server::types::{SnapshotMeta, StoredMembership, TypeConfig, Vote};
use purser_testkit::free_addr;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

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

/// What a raw Raft message sent to a member's peer port says of itself.
enum Claim {
    /// A pre-vote from candidate `id` (it changes nothing on the member).
    PreVote(u64),
    /// An empty append from a leader `id`, at a term far ahead of the cluster's.
    Append(u64),
}

/// A Raft client of `peer_addr` over TLS trusting the cluster's CA and presenting `identity`
/// (or nothing).
async fn peer_client(
    peer_addr: &str,
    ca: &str,
    identity: Option<(String, String)>,
) -> Result<RaftClient<Channel>, tonic::transport::Error> {
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
    Ok(RaftClient::new(endpoint.connect().await?))
}

/// Sends `claim` to `peer_addr` presenting `identity` (or nothing): `Ok` when the member's
/// Raft service took the message, else the code it refused it with, or `Unavailable` when
/// the connection itself was refused.
async fn raft_call(
    peer_addr: &str,
    ca: &str,
    identity: Option<(String, String)>,
    claim: Claim,
) -> Result<(), tonic::Code> {
    let mut raft = peer_client(peer_addr, ca, identity)
        .await
        .map_err(|_| tonic::Code::Unavailable)?;
    let sent = match claim {
        Claim::PreVote(id) => {
            let vote = VoteRequest::<TypeConfig>::new(Vote::new(1, id), None);
            let data = encode(&vote).expect("encode");
            raft.pre_vote(RaftMessage { data }).await
        }
        Claim::Append(id) => {
            let append = AppendEntriesRequest::<TypeConfig> {
                vote: Vote::new_committed(1_000_000, id),
                prev_log_id: None,
                entries: Vec::new(),
                leader_commit: None,
            };
            let data = encode(&append).expect("encode");
            raft.append_entries(RaftMessage { data }).await
        }
    };
    sent.map(|_| ()).map_err(|status| match status.code() {
        code @ (tonic::Code::PermissionDenied | tonic::Code::InvalidArgument) => code,
        // TLS 1.3 completes the client's side of the handshake before the server has judged
        // its certificate: a refusal then shows as a connection dropped mid-call, in one of
        // several codes.
        _ => tonic::Code::Unavailable,
    })
}

/// The first chunk of a snapshot stream from member `id`.
fn snapshot_start(id: u64) -> SnapshotChunk {
    let meta = SnapshotMeta {
        last_log_id: None,
        last_membership: StoredMembership::default(),
    };
    SnapshotChunk {
        vote: encode(&Vote::new(1, id)).expect("encode"),
        meta: encode(&meta).expect("encode"),
        data: vec![0; 1024],
    }
}

/// Entries of directory `dir`.
fn entries_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_with_tls_on_every_port_serves_and_refuses_strangers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs_dir = dir.path().join("certs");
    let now = purser_client::now_ms();
    certs::init(&certs_dir, 4, &[], now).expect("certs");
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

    // The peer port: a member's certificate gets in, for the member it names; a certificate
    // of another CA, none, a client's, another member's, or one of a member outside the
    // membership (member 4 was certified but never added) does not.
    let peer = format!("localhost:{}", addrs[&1].0.port());
    let cert = |name: &str| {
        (
            read(&certs_dir, &format!("{name}.pem")),
            read(&certs_dir, &format!("{name}.key")),
        )
    };
    assert_eq!(
        raft_call(&peer, &ca, Some(cert("member-2")), Claim::PreVote(2)).await,
        Ok(()),
        "a member's certificate is let in"
    );
    let stranger = Authority::new("another CA", now).expect("CA");
    let forged = stranger
        .issue(
            "purser member 2",
            &["localhost".into(), tls::member_name(2)],
            now,
        )
        .expect("cert");
    let forged = Some((forged.cert_pem, forged.key_pem));
    assert_eq!(
        raft_call(&peer, &ca, forged, Claim::PreVote(2)).await,
        Err(tonic::Code::Unavailable),
        "a certificate of another CA is refused"
    );
    assert_eq!(
        raft_call(&peer, &ca, None, Claim::PreVote(2)).await,
        Err(tonic::Code::Unavailable),
        "no certificate is refused"
    );
    let denied = Err(tonic::Code::PermissionDenied);
    for (who, claim, why) in [
        (
            "client",
            Claim::PreVote(2),
            "a client certificate speaks for no member",
        ),
        (
            "member-2",
            Claim::PreVote(3),
            "member 2 cannot speak for member 3",
        ),
        ("member-3", Claim::Append(2), "nor 3 append as leader 2"),
        (
            "member-4",
            Claim::PreVote(4),
            "a member outside the membership cannot vote",
        ),
        ("member-4", Claim::Append(4), "nor append entries"),
    ] {
        assert_eq!(
            raft_call(&peer, &ca, Some(cert(who)), claim).await,
            denied,
            "{why}"
        );
    }

    // Pipelined replication checks each message as the unary call does.
    let mut raft = peer_client(&peer, &ca, Some(cert("member-4")))
        .await
        .expect("connect");
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(1_000_000, 4),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    let data = encode(&append).expect("encode");
    let mut answers = raft
        .stream_append(futures_util::stream::iter([RaftMessage { data }]))
        .await
        .expect("the stream opens")
        .into_inner();
    let refused = answers
        .message()
        .await
        .expect_err("a member outside the membership cannot stream appends");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused}");

    // The refused appends changed nothing: the cluster still serves and agrees.
    client
        .show(pb::ShowRequest {
            node: Some(pb::NodeRef {
                node: Some(pb::node_ref::Node::Path("acme".into())),
            }),
            ..Default::default()
        })
        .await
        .expect("the cluster still serves");

    // Snapshot streams: each is spooled to a file as it arrives, two at once at most; a
    // third is refused, and a dropped stream leaves no file behind.
    let spool = dir.path().join("n1").join("snapshot-incoming");
    let mut held = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotChunk>(1);
        tx.send(snapshot_start(2)).await.expect("send");
        let mut raft = peer_client(&peer, &ca, Some(cert("member-2")))
            .await
            .expect("connect");
        let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        });
        held.push((
            tx,
            tokio::spawn(async move { raft.install_snapshot(chunks).await }),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while entries_in(&spool) < 2 {
        assert!(
            Instant::now() < deadline,
            "two snapshot streams are spooled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut raft = peer_client(&peer, &ca, Some(cert("member-2")))
        .await
        .expect("connect");
    let third = raft
        .install_snapshot(futures_util::stream::iter([snapshot_start(2)]))
        .await
        .expect_err("a third stream is refused");
    assert_eq!(third.code(), tonic::Code::ResourceExhausted, "{third}");
    for (_, call) in &held {
        call.abort();
    }
    drop(held);
    while entries_in(&spool) > 0 {
        assert!(
            Instant::now() < deadline,
            "dropped streams leave no spool file"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    for (_, server) in servers {
        server.stop().await;
    }
}
