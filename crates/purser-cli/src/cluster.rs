//! Operating the Raft group: init, add, remove, transfer-leader, status, snapshot.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use clap::Subcommand;
use purser_client::{pb, Client, ClientConfig, ClientError};
use serde_json::Value;

use crate::output::{print_json, table, Obj};
use crate::parse;
use crate::{client_config, CliError, Ctx, Done};

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Initialize a new cluster with its first voters; sent once, to one of them (the first
    /// --endpoint).
    Init {
        /// ID=HOST:PEERPORT[@HOST:CLIENTPORT],...; without `@`, the client port is the peer
        /// port minus 100.
        #[arg(long, value_delimiter = ',', required = true, value_name = "MEMBERS")]
        members: Vec<String>,
    },
    /// Add a member: first as a learner that catches up with the log, then as a voter.
    Add {
        /// ID=HOST:PEERPORT (or ID=HOST:PEERPORT@HOST:CLIENTPORT).
        member: String,
        /// Where clients reach the new member (default: its peer port minus 100).
        #[arg(long, value_name = "HOST:PORT")]
        client_addr: Option<String>,
        /// Leave it a learner (no vote) instead of promoting it.
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member (voter or learner) from the membership.
    Remove {
        /// The member's id.
        id: u64,
    },
    /// Hand leadership to another voter (before restarting or upgrading the leader).
    TransferLeader {
        /// The voter that should lead.
        id: u64,
    },
    /// Ask every endpoint (and every member they know of) for its view of the cluster.
    Status,
    /// Make the first --endpoint build a snapshot of its state now (and wait for it).
    Snapshot {
        /// Then delete its log up to the snapshot: a member behind it must catch up through
        /// the snapshot.
        #[arg(long)]
        purge: bool,
    },
}

fn members_json(members: &[pb::Member]) -> Value {
    Value::Array(
        members
            .iter()
            .map(|m| {
                Obj::new()
                    .set("id", m.id)
                    .set("peer_addr", m.peer_addr.clone())
                    .set("client_addr", m.client_addr.clone())
                    .set("voter", m.voter)
                    .value()
            })
            .collect(),
    )
}

fn members_text(members: &[pb::Member]) -> String {
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                if m.voter { "voter" } else { "learner" }.into(),
                m.peer_addr.clone(),
                m.client_addr.clone(),
            ]
        })
        .collect();
    table(&["ID", "MEMBER", "PEER", "CLIENT"], &rows)
}

fn print_members(ctx: &Ctx, what: String, log_index: Option<u64>, members: &[pb::Member]) {
    if ctx.json() {
        let mut obj = Obj::new();
        if let Some(index) = log_index {
            obj = obj.set("log_index", index);
        }
        print_json(&obj.set("members", members_json(members)).value());
    } else {
        println!("{what}\n{}", members_text(members));
    }
}

pub async fn run(ctx: &Ctx, command: ClusterCommand) -> Result<Done, CliError> {
    match command {
        ClusterCommand::Init { members } => {
            let mut map = HashMap::new();
            for m in &members {
                let (id, addr) = parse::member(m)?;
                if map.insert(id, addr).is_some() {
                    return Err(CliError(format!("member id {id} is given twice")));
                }
            }
            let request = pb::InitRequest {
                members: map.clone(),
            };
            let r = match rpc!(ctx, cluster_client::ClusterClient, init, request) {
                Ok(r) => r,
                Err(ClientError::Status(s)) if s.code() == tonic::Code::FailedPrecondition => {
                    return Err(CliError(format!(
                        "the member refuses to initialize: is the cluster initialized already? \
                         ({})",
                        s.message()
                    )))
                }
                Err(e) => return Err(e.into()),
            };
            // The answer may come before the membership entry is applied, with no members:
            // then what was asked for is what was initialized.
            let mut members = r.members;
            if members.is_empty() {
                members = map
                    .into_iter()
                    .map(|(id, m)| pb::Member {
                        id,
                        peer_addr: m.peer_addr,
                        client_addr: m.client_addr,
                        voter: true,
                    })
                    .collect();
                members.sort_by_key(|m| m.id);
            }
            print_members(ctx, "initialized the cluster:".into(), None, &members);
        }
        ClusterCommand::Add {
            member,
            client_addr,
            learner,
        } => {
            let (id, mut addr) = parse::member(&member)?;
            if let Some(client) = client_addr {
                parse::host_port(&client)?;
                addr.client_addr = client;
            }
            // Catching up may stream a snapshot: give the blocking call more than a usual
            // request's few seconds.
            let slow = slow_ctx(ctx, Duration::from_secs(60))?;
            let request = pb::AddLearnerRequest {
                id,
                peer_addr: addr.peer_addr.clone(),
                client_addr: addr.client_addr.clone(),
                blocking: true,
            };
            let r = rpc!(slow, cluster_client::ClusterClient, add_learner, request)?;
            let (mut index, mut members) = (r.log_index, r.members);
            if !learner {
                let r = rpc!(
                    ctx,
                    cluster_client::ClusterClient,
                    promote,
                    pb::PromoteRequest { id }
                )?;
                (index, members) = (r.log_index, r.members);
            }
            let role = if learner { "learner" } else { "voter" };
            print_members(
                ctx,
                format!("added member {id} as a {role}:"),
                Some(index),
                &members,
            );
        }
        ClusterCommand::Remove { id } => {
            let r = rpc!(
                ctx,
                cluster_client::ClusterClient,
                remove,
                pb::RemoveRequest { id }
            )?;
            print_members(
                ctx,
                format!("removed member {id}:"),
                Some(r.log_index),
                &r.members,
            );
        }
        ClusterCommand::TransferLeader { id } => {
            // A transfer to the member that already leads is answered here: asking the leader
            // to hand over to itself leaves it refusing writes (see the server's
            // TransferLeader), and there is nothing to do anyway.
            let status = rpc!(
                ctx,
                cluster_client::ClusterClient,
                status,
                pb::StatusRequest {}
            )?;
            if !status.members.iter().any(|m| m.id == id && m.voter) {
                return Err(CliError(format!(
                    "member {id} is not a voter of the cluster"
                )));
            }
            if status.leader_id == Some(id) {
                if ctx.json() {
                    print_json(&Obj::new().set("leader_id", id).value());
                } else {
                    println!("member {id} is already the leader");
                }
                return Ok(Done::Ok);
            }
            // The server waits (up to 5 s) for the new leader to take over before answering.
            let slow = slow_ctx(ctx, Duration::from_secs(15))?;
            let r = rpc!(
                slow,
                cluster_client::ClusterClient,
                transfer_leader,
                pb::TransferLeaderRequest { id }
            )?;
            if ctx.json() {
                print_json(&Obj::new().set("leader_id", r.leader_id).value());
            } else {
                match r.leader_id {
                    Some(leader) if leader == id => println!("member {id} is the leader"),
                    Some(leader) => println!("the leader is member {leader} (asked for {id})"),
                    None => println!("no leader known yet (asked for {id})"),
                }
            }
            if r.leader_id != Some(id) {
                return Err(CliError(format!("member {id} did not become the leader")));
            }
        }
        ClusterCommand::Status => return status(ctx).await,
        ClusterCommand::Snapshot { purge } => {
            // Served by the member asked, on itself: one endpoint, no redirect.
            let endpoint = ctx
                .endpoints
                .first()
                .cloned()
                .ok_or_else(|| CliError("no --endpoint".into()))?;
            let timeout = ctx.timeout.max(Duration::from_secs(15));
            let config = ClientConfig {
                request_timeout: timeout,
                call_timeout: timeout,
                ..client_config(timeout)
            };
            let one = Ctx::with_client(ctx, Client::new([endpoint], config)?);
            let r = rpc!(
                one,
                cluster_client::ClusterClient,
                snapshot,
                pb::SnapshotRequest { purge }
            )?;
            if ctx.json() {
                print_json(
                    &Obj::new()
                        .set("snapshot_index", r.snapshot_index)
                        .set("purged", purge)
                        .value(),
                );
            } else {
                let purged = if purge { ", log purged up to it" } else { "" };
                println!("snapshot at index {}{purged}", r.snapshot_index);
            }
        }
    }
    Ok(Done::Ok)
}

/// A context whose single attempts may take `at_least`: for calls that wait on the cluster.
fn slow_ctx(ctx: &Ctx, at_least: Duration) -> Result<Ctx, CliError> {
    let timeout = ctx.timeout.max(at_least);
    let config = ClientConfig {
        request_timeout: timeout,
        call_timeout: timeout,
        ..client_config(timeout)
    };
    Ok(Ctx::with_client(
        ctx,
        Client::new(ctx.endpoints.clone(), config)?,
    ))
}

fn normalize(endpoint: &str) -> String {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    }
}

type Answer = (String, Result<pb::StatusResponse, String>);

/// One member's own view, asked directly: Status is served by any member, so there is no
/// redirect to follow and no reason to retry elsewhere.
async fn status_of(endpoint: String, timeout: Duration) -> Answer {
    let config = ClientConfig {
        request_timeout: timeout.min(Duration::from_secs(2)),
        call_timeout: timeout.min(Duration::from_secs(3)),
        attempts_max: 1,
        connect_timeout: Duration::from_secs(1),
    };
    let client = match Client::new([endpoint.clone()], config) {
        Ok(client) => client,
        Err(e) => return (endpoint, Err(e.to_string())),
    };
    let result = client
        .call(|channel| async move {
            pb::cluster_client::ClusterClient::new(channel)
                .status(pb::StatusRequest {})
                .await
        })
        .await
        .map_err(|e| match e {
            // One attempt at one address: its own message says it all.
            ClientError::Unreachable { last, .. } => last
                .split_once(": ")
                .map_or(last.clone(), |(_, why)| why.to_owned()),
            other => CliError::from(other).0,
        });
    (endpoint, result)
}

async fn ask_all(endpoints: Vec<String>, timeout: Duration) -> Vec<Answer> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, endpoint) in endpoints.into_iter().enumerate() {
        tasks.spawn(async move { (i, status_of(endpoint, timeout).await) });
    }
    let mut answers = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok(answer) = done {
            answers.push(answer);
        }
    }
    answers.sort_by_key(|(i, _)| *i);
    answers.into_iter().map(|(_, a)| a).collect()
}

pub fn role_name(role: i32) -> &'static str {
    match pb::RaftRole::try_from(role) {
        Ok(pb::RaftRole::Leader) => "leader",
        Ok(pb::RaftRole::Candidate) => "candidate",
        Ok(pb::RaftRole::Follower) => "follower",
        Ok(pb::RaftRole::Learner) => "learner",
        Ok(pb::RaftRole::Shutdown) => "shutdown",
        _ => "unknown",
    }
}

async fn status(ctx: &Ctx) -> Result<Done, CliError> {
    let mut asked: BTreeSet<String> = BTreeSet::new();
    let mut first: Vec<String> = Vec::new();
    for e in &ctx.endpoints {
        if asked.insert(normalize(e)) {
            first.push(normalize(e));
        }
    }
    let mut answers = ask_all(first, ctx.timeout).await;
    // Members the endpoints know of but that were not named: a status of the whole cluster
    // from one address.
    let mut more: Vec<String> = Vec::new();
    for (_, answer) in &answers {
        for m in answer.iter().flat_map(|s| &s.members) {
            let endpoint = normalize(&m.client_addr);
            if !m.client_addr.is_empty() && asked.insert(endpoint.clone()) {
                more.push(endpoint);
            }
        }
    }
    answers.extend(ask_all(more, ctx.timeout).await);

    if ctx.json() {
        let rows: Vec<Value> = answers
            .iter()
            .map(|(endpoint, answer)| match answer {
                Ok(s) => Obj::new()
                    .set("endpoint", endpoint.clone())
                    .set("id", s.id)
                    .set("role", role_name(s.role))
                    .set("term", s.term)
                    .set("leader_id", s.leader_id)
                    .set("leader_client_addr", s.leader_client_addr.clone())
                    .set("last_log_index", s.last_log_index)
                    .set("applied_index", s.applied_index)
                    .set("snapshot_index", s.snapshot_index)
                    .set("state_digest", s.state_digest.clone())
                    .set("state_now_ms", s.state_now_ms)
                    .set("members", members_json(&s.members))
                    .value(),
                Err(e) => Obj::new()
                    .set("endpoint", endpoint.clone())
                    .set("error", e.clone())
                    .value(),
            })
            .collect();
        print_json(&Value::Array(rows));
    } else {
        let dash = || "-".to_owned();
        let rows: Vec<Vec<String>> = answers
            .iter()
            .map(|(endpoint, answer)| match answer {
                Ok(s) => vec![
                    endpoint.clone(),
                    s.id.to_string(),
                    role_name(s.role).into(),
                    s.term.to_string(),
                    s.leader_id.map_or_else(dash, |l| l.to_string()),
                    s.last_log_index.to_string(),
                    s.applied_index.to_string(),
                    s.snapshot_index.map_or_else(dash, |i| i.to_string()),
                    s.state_digest.chars().take(12).collect(),
                ],
                Err(_) => vec![endpoint.clone(), dash(), "unreachable".into()],
            })
            .collect();
        let header = [
            "ENDPOINT", "ID", "ROLE", "TERM", "LEADER", "LAST_LOG", "APPLIED", "SNAPSHOT", "DIGEST",
        ];
        println!("{}", table(&header, &rows));
        for (endpoint, answer) in &answers {
            if let Err(e) = answer {
                println!("{endpoint}: {e}");
            }
        }
        // The membership as the leader sees it, or as anyone does when there is no leader.
        let view = answers
            .iter()
            .filter_map(|(_, a)| a.as_ref().ok())
            .max_by_key(|s| (s.role == pb::RaftRole::Leader as i32, s.term));
        if let Some(s) = view.filter(|s| !s.members.is_empty()) {
            println!(
                "\nmembership (as member {} sees it):\n{}",
                s.id,
                members_text(&s.members)
            );
        }
    }
    if answers.iter().all(|(_, a)| a.is_err()) {
        return Err("no member answered".into());
    }
    Ok(Done::Ok)
}
