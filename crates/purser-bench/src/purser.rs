//! Purser as the system under test, through `purser-client` (leader discovery, redirects,
//! retries of the identical request). Each run builds its tree under a fresh root, so a
//! cluster can serve many runs.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use purser_client::{
    now_ms, pb, prepaid_grant, Client, ClientConfig, CoalesceConfig, Coalescer, ItemResult, Op,
};
use tokio::task::JoinSet;

use crate::backend::{Backend, NodeAudit, Reserved, Result, Session};
use crate::workload::Tree;

/// Closed-loop clients share this many connections (HTTP/2 multiplexes the rest).
const CONNECTIONS: usize = 8;
/// Setup and audit calls in flight at once.
const SETUP_CONCURRENCY: usize = 128;
const HOLD_TTL_MS: u64 = 60_000;
/// One call, retries included.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Purser {
    clients: Vec<Arc<Client>>,
    /// One per connection when calls are coalesced into `Batch` RPCs.
    coalescers: Option<Vec<Coalescer>>,
    /// One client per member (no redirects), for its own `Stats`.
    members: Vec<Client>,
    /// Purser's node id of each node of the tree, known after setup.
    ids: OnceLock<Arc<Vec<u64>>>,
}

impl Purser {
    /// `coalesce`: send the clients' reserves and settles through `purser-client`'s
    /// coalescer (many concurrent calls per `Batch` RPC), as a busy gateway process would.
    pub fn connect(
        endpoints: &[String],
        coalesce: bool,
        token: Option<String>,
        ca: Option<String>,
    ) -> Result<Purser> {
        let config = ClientConfig {
            token,
            ca,
            request_timeout: Duration::from_secs(10),
            ..ClientConfig::default()
        };
        let clients = (0..CONNECTIONS)
            .map(|_| Client::new(endpoints.iter().cloned(), config.clone()).map(Arc::new))
            .collect::<std::result::Result<_, _>>()?;
        let members = endpoints
            .iter()
            .map(|e| Client::member(e.clone(), config.clone()))
            .collect::<std::result::Result<_, _>>()?;
        let clients: Vec<Arc<Client>> = clients;
        let coalescers = coalesce.then(|| {
            clients
                .iter()
                .map(|c| Coalescer::new(c.clone(), CoalesceConfig::default()))
                .collect()
        });
        Ok(Purser {
            clients,
            coalescers,
            members,
            ids: OnceLock::new(),
        })
    }

    fn ids(&self) -> Result<Arc<Vec<u64>>> {
        Ok(self.ids.get().ok_or("the tree is not set up")?.clone())
    }

    fn client(&self, i: usize) -> Arc<Client> {
        self.clients[i % self.clients.len()].clone()
    }
}

fn id_ref(id: u64) -> Option<pb::NodeRef> {
    Some(pb::NodeRef {
        node: Some(pb::node_ref::Node::Id(id)),
    })
}

fn monthly_limit(amount: i64) -> pb::LimitSpec {
    pb::LimitSpec {
        currency: "usd".into(),
        amount,
        window: Some(pb::Window {
            kind: Some(pb::window::Kind::Calendar(pb::Period::Month as i32)),
        }),
        mode: pb::LimitMode::Hard as i32,
        thresholds: Vec::new(),
        on_exhausted: pb::OnExhausted::Deny as i32,
    }
}

async fn set_limit(client: &Client, id: u64, amount: i64) -> Result<()> {
    let request = pb::SetLimitRequest {
        node: id_ref(id),
        limit: Some(monthly_limit(amount)),
        ..Default::default()
    };
    client.set_limit(request).await?;
    Ok(())
}

async fn create(client: &Client, parent: Option<u64>, name: String, kind: &str) -> Result<u64> {
    let root = parent.is_none().then(|| pb::RootSpec {
        currencies: vec![pb::CurrencySpec {
            code: "usd".into(),
            scale: 6,
            funded: true,
        }],
        no_default_cap: true,
    });
    let request = pb::CreateNodeRequest {
        parent: parent.and_then(id_ref),
        name,
        kind: kind.into(),
        root,
        ..Default::default()
    };
    Ok(client.create_node(request).await?.node_id)
}

impl Backend for Purser {
    type Session = PurserSession;

    async fn setup(&self, tree: &Tree) -> Result<()> {
        let mut ids = vec![0u64; tree.nodes.len()];
        // A fresh root per run: earlier runs' trees stay, untouched.
        let root_name = format!("bench-{}", now_ms());
        ids[0] = create(&self.clients[0], None, root_name, "org").await?;
        let grant = pb::AddGrantRequest {
            node: id_ref(ids[0]),
            grant: Some(prepaid_grant("usd", (1 << 53) - 1)),
            ..Default::default()
        };
        self.clients[0].add_grant(grant).await?;
        // Parents come before children in `tree.nodes`: create level by level, each level
        // concurrently.
        for kind in ["division", "team", "user"] {
            let mut tasks = JoinSet::new();
            for (i, node) in tree
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.kind == kind)
            {
                let parent = ids[node.parent.ok_or("only the root has no parent")?];
                let client = self.client(i);
                let name = node.name.clone();
                while tasks.len() >= SETUP_CONCURRENCY {
                    let (i, id) = tasks.join_next().await.ok_or("no task")??;
                    ids[i] = id?;
                }
                tasks.spawn(async move { (i, create(&client, Some(parent), name, kind).await) });
            }
            while let Some(done) = tasks.join_next().await {
                let (i, id) = done?;
                ids[i] = id?;
            }
        }
        let mut tasks = JoinSet::new();
        for (i, node) in tree.nodes.iter().enumerate() {
            let client = self.client(i);
            let (id, limit) = (ids[i], node.limit);
            while tasks.len() >= SETUP_CONCURRENCY {
                tasks.join_next().await.ok_or("no task")???;
            }
            tasks.spawn(async move { set_limit(&client, id, limit).await });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        self.ids
            .set(Arc::new(ids))
            .map_err(|_| "purser-bench sets up one tree per process")?;
        Ok(())
    }

    async fn session(&self, index: usize) -> Result<PurserSession> {
        Ok(PurserSession {
            client: self.client(index),
            coalescer: self.coalescers.as_ref().map(|c| c[index % c.len()].clone()),
            ids: self.ids()?,
        })
    }

    async fn set_org_limit(&self, _tree: &Tree, limit: i64) -> Result<()> {
        set_limit(&self.clients[0], self.ids()?[0], limit).await
    }

    async fn measuring_started(&self) {
        for member in &self.members {
            let _ = stats(member, true).await;
        }
    }

    /// Every member's histograms and counters, keyed by `member-<id>-<role>`.
    fn retries(&self) -> Option<(u64, Option<String>)> {
        let all: Vec<_> = self.clients.iter().map(|c| c.retries()).collect();
        let count = all.iter().map(|r| r.count).sum();
        Some((count, all.into_iter().find_map(|r| r.last)))
    }

    async fn server_stats(&self) -> Option<serde_json::Value> {
        let mut all = serde_json::Map::new();
        for member in &self.members {
            let Ok(s) = stats(member, false).await else {
                continue;
            };
            let role = pb::RaftRole::try_from(s.role)
                .map_or("unknown", |r| r.as_str_name())
                .trim_start_matches("RAFT_ROLE_")
                .to_lowercase();
            let mut figures = serde_json::Map::new();
            for h in s.histograms {
                figures.insert(
                    h.name,
                    serde_json::json!({
                        "count": h.count,
                        "mean": h.sum.checked_div(h.count).unwrap_or(0),
                        "p50": h.p50,
                        "p99": h.p99,
                        "p999": h.p999,
                        "max": h.max,
                    }),
                );
            }
            for (name, value) in s.counters {
                figures.insert(name, value.into());
            }
            figures.insert("term".into(), s.term.into());
            all.insert(format!("member-{}-{role}", s.id), figures.into());
        }
        Some(all.into())
    }

    async fn audit(&self, tree: &Tree) -> Result<Vec<NodeAudit>> {
        let ids = self.ids()?;
        let mut audit = vec![NodeAudit::default(); tree.nodes.len()];
        let mut tasks = JoinSet::new();
        let mut collect = |done: (usize, Result<NodeAudit>)| -> Result<()> {
            audit[done.0] = done.1?;
            Ok(())
        };
        for (i, &id) in ids.iter().enumerate() {
            let client = self.client(i);
            while tasks.len() >= SETUP_CONCURRENCY {
                collect(tasks.join_next().await.ok_or("no task")??)?;
            }
            tasks.spawn(async move { (i, usage(&client, id).await) });
        }
        while let Some(done) = tasks.join_next().await {
            collect(done?)?;
        }
        Ok(audit)
    }
}

async fn stats(member: &Client, reset: bool) -> Result<pb::StatsResponse> {
    Ok(member.stats(pb::StatsRequest { reset }).await?)
}

/// The node's monthly usd limit, read linearizably.
async fn usage(client: &Client, id: u64) -> Result<NodeAudit> {
    let request = pb::UsageRequest {
        node: id_ref(id),
        allow_stale: false,
    };
    let response = client.usage(request).await?;
    let month = Some(pb::Window {
        kind: Some(pb::window::Kind::Calendar(pb::Period::Month as i32)),
    });
    let limit = response
        .limits
        .iter()
        .find(|l| l.currency == "usd" && l.window == month && l.role.is_none())
        .ok_or_else(|| format!("node {id} has no monthly usd limit"))?;
    Ok(NodeAudit {
        limit: i64::try_from(limit.amount)?,
        spent: i64::try_from(limit.spent)?,
        held: i64::try_from(limit.held)?,
    })
}

pub struct PurserSession {
    client: Arc<Client>,
    coalescer: Option<Coalescer>,
    ids: Arc<Vec<u64>>,
}

impl Session for PurserSession {
    type Hold = u64;

    async fn reserve(&mut self, tree: &Tree, user: usize, amount: i64) -> Result<Reserved<u64>> {
        let node = self.ids[tree.chains[user][0]];
        // The client (or the coalescer) gives the request its id and send time.
        let request = pb::ReserveRequest {
            node: id_ref(node),
            currency: "usd".into(),
            amount: Some(pb::reserve_request::Amount::Exact(amount)),
            ttl_ms: HOLD_TTL_MS,
            ..Default::default()
        };
        let response = match &self.coalescer {
            Some(coalescer) => match coalescer.call(Op::Reserve(request), CALL_TIMEOUT).await? {
                ItemResult::Reserve(response) => response,
                other => return Err(format!("a reserve answered with {other:?}").into()),
            },
            None => self.client.reserve(request).await?.into_inner(),
        };
        match response.result {
            Some(pb::reserve_response::Result::Granted(g)) => Ok(Reserved::Held(g.reservation_id)),
            Some(pb::reserve_response::Result::Denied(_)) => Ok(Reserved::Denied),
            None => Err("a reserve answer with neither grant nor denial".into()),
        }
    }

    async fn settle(&mut self, _tree: &Tree, hold: u64, actual: Option<i64>) -> Result<()> {
        let op = match actual {
            Some(actual) => Op::Commit(pb::CommitRequest {
                reservation_id: hold,
                actual: Some(pb::commit_request::Actual::Amount(actual)),
                ..Default::default()
            }),
            None => Op::Release(pb::ReleaseRequest {
                reservation_id: hold,
                ..Default::default()
            }),
        };
        if let Some(coalescer) = &self.coalescer {
            coalescer.call(op, CALL_TIMEOUT).await?;
            return Ok(());
        }
        match op {
            Op::Commit(request) => {
                self.client.settle(request).await?;
            }
            Op::Release(request) => {
                self.client.release(request).await?;
            }
            _ => unreachable!("a settle is a commit or a release"),
        }
        Ok(())
    }
}
