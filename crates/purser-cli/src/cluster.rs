//! Operating the Raft group: init, add, remove, transfer-leader, status, snapshot.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use purser_client::{pb, Client, ClientConfig, ClientError};

use crate::parse;
use crate::render::cluster::{
    AdminToken, Answer, Initialized, Leader, Members, Snapshot, Statuses,
};
use crate::{CliError, Ctx, Done};

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

/// `init_token_file`: where `init` writes the cluster's first token (`--token-file`) instead
/// of printing it.
pub async fn run(
    ctx: &Ctx,
    command: ClusterCommand,
    init_token_file: Option<PathBuf>,
) -> Result<Done, CliError> {
    match command {
        ClusterCommand::Init { members } => init(ctx, &members, init_token_file).await,
        ClusterCommand::Add {
            member,
            client_addr,
            learner,
        } => add(ctx, &member, client_addr, learner).await,
        ClusterCommand::Remove { id } => {
            let answer = ctx.client.remove(pb::RemoveRequest { id }).await?;
            ctx.print(&Members {
                done: format!("removed member {id}:"),
                log_index: Some(answer.log_index),
                members: &answer.members,
            });
            Ok(Done::Ok)
        }
        ClusterCommand::TransferLeader { id } => transfer_leader(ctx, id).await,
        ClusterCommand::Status => status(ctx).await,
        ClusterCommand::Snapshot { purge } => {
            // Served by the member asked, on itself: one endpoint, no redirect.
            let member = ctx.first_member(Duration::from_secs(15))?;
            let answer = member.snapshot(pb::SnapshotRequest { purge }).await?;
            ctx.print(&Snapshot {
                snapshot_index: answer.snapshot_index,
                purged: purge,
            });
            Ok(Done::Ok)
        }
    }
}

async fn init(
    ctx: &Ctx,
    members: &[String],
    token_file: Option<PathBuf>,
) -> Result<Done, CliError> {
    let mut asked = HashMap::new();
    for m in members {
        let (id, addr) = parse::member(m)?;
        if asked.insert(id, addr).is_some() {
            return Err(CliError(format!("member id {id} is given twice")));
        }
    }
    let request = pb::InitRequest {
        members: asked.clone(),
    };
    let answer = match ctx.client.init(request).await {
        Ok(answer) => answer,
        Err(ClientError::Status(s)) if s.code() == tonic::Code::FailedPrecondition => {
            return Err(CliError(format!(
                "the member refuses to initialize: is the cluster initialized already? ({})",
                s.message()
            )))
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(file) = &token_file {
        purser_server::serve::write_secret(file, &answer.admin_token)
            .map_err(|e| CliError(format!("--token-file {}: {e}", file.display())))?;
    }
    // The answer may come before the membership entry is applied, with no members: then
    // what was asked for is what was initialized.
    let mut members = answer.members;
    if members.is_empty() {
        members = asked
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
    ctx.print(&Initialized {
        members: Members {
            done: "initialized the cluster:".into(),
            log_index: None,
            members: &members,
        },
        token: token_file.map_or_else(
            || AdminToken::Shown(answer.admin_token.clone()),
            AdminToken::Written,
        ),
        token_id: answer.admin_token_id,
    });
    Ok(Done::Ok)
}

async fn add(
    ctx: &Ctx,
    member: &str,
    client_addr: Option<String>,
    learner: bool,
) -> Result<Done, CliError> {
    let (id, mut addr) = parse::member(member)?;
    if let Some(client) = client_addr {
        parse::host_port(&client)?;
        addr.client_addr = client;
    }
    // Catching up may stream a snapshot: give the blocking call more than a usual request's
    // few seconds.
    let slow = ctx.slow_client(Duration::from_secs(60))?;
    let request = pb::AddLearnerRequest {
        id,
        peer_addr: addr.peer_addr,
        client_addr: addr.client_addr,
        blocking: true,
    };
    let added = slow.add_learner(request).await?;
    let (mut log_index, mut members) = (added.log_index, added.members);
    if !learner {
        let promoted = ctx.client.promote(pb::PromoteRequest { id }).await?;
        (log_index, members) = (promoted.log_index, promoted.members);
    }
    let role = if learner { "learner" } else { "voter" };
    ctx.print(&Members {
        done: format!("added member {id} as a {role}:"),
        log_index: Some(log_index),
        members: &members,
    });
    Ok(Done::Ok)
}

async fn transfer_leader(ctx: &Ctx, id: u64) -> Result<Done, CliError> {
    // A transfer to the member that already leads is answered here: asking the leader to hand
    // over to itself leaves it refusing writes (see the server's TransferLeader), and there is
    // nothing to do anyway.
    let status = ctx.client.status(pb::StatusRequest {}).await?;
    if !status.members.iter().any(|m| m.id == id && m.voter) {
        return Err(CliError(format!(
            "member {id} is not a voter of the cluster"
        )));
    }
    if status.leader_id == Some(id) {
        ctx.print(&Leader {
            asked: id,
            leader_id: Some(id),
            already: true,
        });
        return Ok(Done::Ok);
    }
    // The server waits (up to 5 s) for the new leader to take over before answering.
    let slow = ctx.slow_client(Duration::from_secs(15))?;
    let answer = slow
        .transfer_leader(pb::TransferLeaderRequest { id })
        .await?;
    ctx.print(&Leader {
        asked: id,
        leader_id: answer.leader_id,
        already: false,
    });
    if answer.leader_id != Some(id) {
        return Err(CliError(format!("member {id} did not become the leader")));
    }
    Ok(Done::Ok)
}

/// One member's own view, asked directly: Status is served by any member, so there is no
/// redirect to follow and no reason to retry elsewhere.
async fn status_of(endpoint: String, timeout: Duration, base: ClientConfig) -> Answer {
    let config = ClientConfig {
        token: base.token,
        ca: base.ca,
        identity: base.identity,
        request_timeout: timeout.min(Duration::from_secs(2)),
        call_timeout: timeout.min(Duration::from_secs(3)),
        attempts_max: 1,
        connect_timeout: Duration::from_secs(1),
    };
    let client = match Client::member(endpoint.clone(), config) {
        Ok(client) => client,
        Err(e) => return (endpoint, Err(e.to_string())),
    };
    let result = client
        .status(pb::StatusRequest {})
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

async fn ask_all(endpoints: Vec<String>, timeout: Duration, base: ClientConfig) -> Vec<Answer> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, endpoint) in endpoints.into_iter().enumerate() {
        let base = base.clone();
        tasks.spawn(async move { (i, status_of(endpoint, timeout, base).await) });
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

async fn status(ctx: &Ctx) -> Result<Done, CliError> {
    let mut asked: BTreeSet<String> = BTreeSet::new();
    let mut first: Vec<String> = Vec::new();
    for e in &ctx.endpoints {
        if asked.insert(ctx.endpoint_url(e)) {
            first.push(ctx.endpoint_url(e));
        }
    }
    let mut answers = ask_all(first, ctx.timeout, ctx.base_config()).await;
    // Members the endpoints know of but that were not named: a status of the whole cluster
    // from one address.
    let mut more: Vec<String> = Vec::new();
    for (_, answer) in &answers {
        for m in answer.iter().flat_map(|s| &s.members) {
            let endpoint = ctx.endpoint_url(&m.client_addr);
            if !m.client_addr.is_empty() && asked.insert(endpoint.clone()) {
                more.push(endpoint);
            }
        }
    }
    answers.extend(ask_all(more, ctx.timeout, ctx.base_config()).await);
    ctx.print(&Statuses(&answers));
    if answers.iter().all(|(_, a)| a.is_err()) {
        return Err("no member answered".into());
    }
    Ok(Done::Ok)
}
