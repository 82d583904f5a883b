//! One run: network, nodes, setup, workload under the nemesis, final heal, resolution of
//! indeterminate operations, final reads, checks.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::check::{self, ReplicaView, Verdict};
use crate::cluster::{self, Cluster};
use crate::history::{Answer, Args, Event, Kind, Recorder};
use crate::nemesis::{self, Family, Nemesis};
use crate::net;
use crate::rng::Rng;
use crate::workload::{self, Worker};

/// Workers per node.
pub const WORKERS_PER_NODE: u32 = 2;
/// After the workload stops, how long workers may keep resolving indeterminate requests.
pub const RESOLVE_GRACE: Duration = Duration::from_secs(60);
/// A final retry is only meaningful while the cluster still remembers the request id
/// (10 minutes by default): older requests are not retried.
pub const RETRY_AGE_MAX_MS: u64 = 9 * 60 * 1000;
/// Final retries in flight at once.
pub const FINAL_RETRIES_PARALLEL: usize = 16;
/// Before the final reads, every short hold must have had time to expire: the longest short
/// TTL, the leader's tick (1 s) and a margin.
pub const EXPIRY_WAIT: Duration = Duration::from_millis(workload::SHORT_TTL_MS.1 + 2_500);
/// The final phase takes at most about this long (for the month-boundary check).
pub const FINAL_PHASE_MAX: Duration = Duration::from_secs(10 * 60);

#[derive(Clone, Debug)]
pub struct Options {
    pub nodes: u32,
    pub time: Duration,
    pub seed: u64,
    pub nemesis: Family,
    pub dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("network: {0}")]
    Net(#[from] net::NetError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Harness(String),
}

/// One harness at a time on a machine: a second one would remove the first one's network as
/// stale. The lock file holds the owner's pid; a dead owner's file is taken over.
pub const LOCK_FILE: &str = "/run/purser-jepsen.lock";

struct RunLock;

impl RunLock {
    fn take() -> Result<RunLock, RunError> {
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(LOCK_FILE)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    writeln!(f, "{}", std::process::id())?;
                    return Ok(RunLock);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(LOCK_FILE).unwrap_or_default();
                    let owner = owner.trim();
                    if !owner.is_empty() && Path::new(&format!("/proc/{owner}")).exists() {
                        return Err(RunError::Harness(format!(
                            "another purser-jepsen (pid {owner}) is running ({LOCK_FILE})"
                        )));
                    }
                    let _ = std::fs::remove_file(LOCK_FILE);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(RunError::Harness(format!("cannot take {LOCK_FILE}")))
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(LOCK_FILE);
    }
}

/// Tears everything down when dropped: on success, on error, on a panic.
struct Teardown {
    cluster: Arc<Mutex<Cluster>>,
    nodes: u32,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if let Ok(mut c) = self.cluster.lock() {
            c.kill_all();
        }
        net::destroy(self.nodes);
    }
}

#[derive(Serialize)]
pub struct Summary {
    pub seed: u64,
    pub nodes: u32,
    pub time_s: u64,
    pub nemesis: Family,
    pub ops: u64,
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
    pub faults: u64,
    pub valid: bool,
    pub verdicts: Vec<Verdict>,
}

impl Summary {
    pub fn line(&self) -> String {
        let verdicts: Vec<String> = self
            .verdicts
            .iter()
            .map(|v| {
                format!(
                    "{} {}",
                    v.checker,
                    if v.valid && v.unchecked > 0 {
                        format!("ok ({} unchecked)", v.unchecked)
                    } else if v.valid {
                        "ok".to_string()
                    } else {
                        format!("FAIL({})", v.violation_count)
                    }
                )
            })
            .collect();
        format!(
            "purser-jepsen seed={} nodes={} time={}s nemesis={:?}: ops {} (ok {}, fail {}, info \
             {}), faults {}; {}; {}",
            self.seed,
            self.nodes,
            self.time_s,
            self.nemesis,
            self.ops,
            self.ok,
            self.fail,
            self.info,
            self.faults,
            verdicts.join(", "),
            if self.valid { "VALID" } else { "INVALID" }
        )
    }
}

async fn wait_for<T>(within: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every replica's (applied index, digest), once they agree or after `within`.
async fn converge(ids: &[u32], within: Duration) -> Vec<ReplicaView> {
    let deadline = Instant::now() + within;
    loop {
        let mut views = Vec::new();
        for &id in ids {
            let s = cluster::status(id).await;
            views.push(ReplicaView {
                id: u64::from(id),
                applied_index: s.as_ref().map(|s| s.applied_index),
                state_digest: s.map(|s| s.state_digest),
            });
        }
        if check::check_convergence(&views).valid || Instant::now() >= deadline {
            return views;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

pub async fn run(opts: Options) -> Result<Summary, RunError> {
    std::fs::create_dir_all(&opts.dir)?;
    let bin = cluster::purser_bin().ok_or_else(|| {
        RunError::Harness(
            "no purser binary: build it (cargo build --release -p purser-cli) or set PURSER_BIN"
                .into(),
        )
    })?;
    // Monthly caps are checked as if they never reset: a run must stay inside one month.
    let now_ms = purser_client::now_ms();
    let horizon_ms = now_ms + (opts.time + RESOLVE_GRACE + FINAL_PHASE_MAX).as_millis() as u64;
    let month_end = purser_core::time::Period::Month.end(now_ms);
    if horizon_ms >= month_end {
        return Err(RunError::Harness(format!(
            "the run could cross the UTC month boundary in {} s, where the workload's monthly \
             caps reset (the checker treats them as never resetting): start it after the \
             boundary or make it shorter",
            (month_end - now_ms) / 1000
        )));
    }
    let _lock = RunLock::take()?;
    for stale in net::clean_stale() {
        eprintln!("purser-jepsen: removed stale {stale}");
    }
    let cluster = Arc::new(Mutex::new(Cluster::new(bin, &opts.dir, opts.nodes)));
    let _teardown = Teardown {
        cluster: cluster.clone(),
        nodes: opts.nodes,
    };
    net::create(opts.nodes)?;
    cluster.lock().expect("cluster").certify()?;
    let ids: Vec<u32> = (1..=opts.nodes).collect();
    for &id in &ids {
        cluster.lock().expect("cluster").start(id)?;
    }
    for &id in &ids {
        wait_for(Duration::from_secs(30), async || cluster::serving(id).await)
            .await
            .ok_or_else(|| RunError::Harness(format!("node {id} did not start (see n{id}.log)")))?;
    }
    let init = cluster.lock().expect("cluster").init_request();
    cluster::init(init)
        .await
        .map_err(|e| RunError::Harness(format!("cluster init: {e}")))?;
    wait_for(Duration::from_secs(30), async || {
        cluster::leader(&ids).await
    })
    .await
    .ok_or_else(|| RunError::Harness("no leader elected".into()))?;

    let start = std::time::Instant::now();
    let rec = Arc::new(Recorder::create(&opts.dir.join("history.jsonl"), start)?);
    let endpoints = cluster.lock().expect("cluster").endpoints();
    let admin = Arc::new(workload::client_for(&endpoints, 0));
    workload::setup(&rec, &admin)
        .await
        .map_err(RunError::Harness)?;

    let steps = nemesis::schedule(opts.seed, opts.nemesis, opts.time);
    std::fs::write(
        opts.dir.join("schedule.json"),
        serde_json::to_string_pretty(&steps).expect("the schedule serializes"),
    )?;
    let stop_at = Instant::now() + opts.time;
    let give_up_at = stop_at + RESOLVE_GRACE;
    let nemesis = Arc::new(Nemesis {
        cluster: cluster.clone(),
        rec: rec.clone(),
        log: Mutex::new(std::fs::File::create(opts.dir.join("nemesis.jsonl"))?),
        nodes: opts.nodes,
        injected: Mutex::new(0),
        admin: cluster::admin_client(&ids)
            .map_err(|e| RunError::Harness(format!("admin client: {e}")))?,
        corrupted: Mutex::new(Default::default()),
    });
    let nemesis_task = {
        let n = nemesis.clone();
        tokio::spawn(async move { n.run(steps, stop_at).await })
    };
    let mut tasks = Vec::new();
    for w in 1..=opts.nodes * WORKERS_PER_NODE {
        let worker = Worker {
            id: w,
            rng: Rng::fork(opts.seed, u64::from(w)),
            client: Arc::new(workload::client_for(&endpoints, w as usize)),
            holds: Vec::new(),
            requests: 0,
        };
        tasks.push(tokio::spawn(worker.run(rec.clone(), stop_at, give_up_at)));
    }
    let admin_id = opts.nodes * WORKERS_PER_NODE + 1;
    tasks.push(tokio::spawn(workload::raise_caps(
        rec.clone(),
        admin.clone(),
        admin_id,
        Rng::fork(opts.seed, u64::from(admin_id)),
        stop_at,
        give_up_at,
    )));
    nemesis_task
        .await
        .map_err(|e| RunError::Harness(format!("nemesis: {e}")))?;
    for t in tasks {
        t.await
            .map_err(|e| RunError::Harness(format!("worker: {e}")))?;
    }
    // Final heal (again, in case the nemesis stopped early), then the final phase.
    nemesis.heal_all().await;
    let _ = wait_for(Duration::from_secs(30), async || {
        cluster::leader(&ids).await
    })
    .await;
    converge(&ids, Duration::from_secs(30)).await;
    // Short holds left open (abandoned, or granted late in the run) expire before the final
    // reads, which then see only holds that outlive the run.
    tokio::time::sleep(EXPIRY_WAIT).await;
    final_reads(&rec, &admin).await;
    final_expiries(&rec, &admin, &endpoints).await;
    final_retries(&rec, &endpoints).await;
    let views = converge(&ids, Duration::from_secs(60)).await;
    rec.flush();
    std::fs::write(
        opts.dir.join("replicas.json"),
        serde_json::to_string_pretty(&views).expect("views serialize"),
    )?;

    let events = rec.events();
    let verdicts = check::check(&events, Some(&views));
    let faults = *nemesis.injected.lock().expect("counter");
    let summary = summarize(&opts, &events, faults, verdicts);
    std::fs::write(
        opts.dir.join("verdicts.json"),
        serde_json::to_string_pretty(&summary).expect("verdicts serialize"),
    )?;
    std::fs::write(opts.dir.join("summary.txt"), summary.line() + "\n")?;
    crate::plot::write(&opts.dir, &events, &summary.line())?;
    Ok(summary)
}

pub fn summarize(opts: &Options, events: &[Event], faults: u64, verdicts: Vec<Verdict>) -> Summary {
    let count = |k: Kind| events.iter().filter(|e| e.kind == k).count() as u64;
    Summary {
        seed: opts.seed,
        nodes: opts.nodes,
        time_s: opts.time.as_secs(),
        nemesis: opts.nemesis,
        ops: count(Kind::Invoke),
        ok: count(Kind::Ok),
        fail: count(Kind::Fail),
        info: count(Kind::Info),
        faults,
        valid: verdicts.iter().all(|v| v.valid),
        verdicts,
    }
}

/// A linearizable read of every node's balances and holds, and of the funded roots' grants.
async fn final_reads(rec: &Recorder, client: &purser_client::Client) {
    let give_up = Instant::now() + Duration::from_secs(60);
    for spec in workload::TREE {
        let path = spec.path;
        let mut reads = vec![
            Args::Show { node: path.into() },
            Args::Holds { node: path.into() },
        ];
        if workload::FUNDED_ROOTS.contains(&path) {
            reads.push(Args::Grants { node: path.into() });
        }
        for args in reads {
            workload::run_request(rec, client, 0, None, args, true, give_up, None).await;
        }
    }
}

/// The expiries the cluster reports: the marker node is paused (after the final reads), then
/// the `hold_expired` events are read up to its `Paused` event, from the first member that
/// still keeps every event.
async fn final_expiries(rec: &Recorder, admin: &purser_client::Client, endpoints: &[String]) {
    let give_up = Instant::now() + Duration::from_secs(60);
    let pause = Args::Pause {
        node: workload::MARKER.into(),
    };
    let done = workload::run_request(
        rec,
        admin,
        0,
        Some("final-marker".into()),
        pause,
        true,
        give_up,
        None,
    )
    .await;
    if done.kind != Kind::Ok {
        return;
    }
    for k in 0..endpoints.len() {
        let client = workload::client_for(endpoints, k);
        let args = Args::Expiries {
            marker: workload::MARKER.into(),
        };
        let done = workload::run_request(rec, &client, 0, None, args, true, give_up, None).await;
        if done.kind == Kind::Ok {
            return;
        }
    }
}

/// Retries every acknowledged mutation with its request id: each must be answered as a
/// duplicate (it is remembered, so it was applied and is not applied again).
async fn final_retries(rec: &Arc<Recorder>, endpoints: &[String]) {
    let now = purser_client::now_ms();
    let events = rec.events();
    let mut invokes = std::collections::HashMap::new();
    for e in &events {
        if e.kind == Kind::Invoke {
            invokes.insert(e.op, e);
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut todo = Vec::new();
    for e in &events {
        let applied = e.kind == Kind::Ok && e.answer.as_ref().is_some_and(Answer::applied);
        let Some(inv) = invokes.get(&e.op) else {
            continue;
        };
        let (Some(rid), Some(sent), Some(args)) = (&inv.request_id, inv.sent_at_ms, &inv.args)
        else {
            continue;
        };
        if applied
            && !e.final_phase
            && now.saturating_sub(sent) < RETRY_AGE_MAX_MS
            && seen.insert(rid.clone())
        {
            todo.push((rid.clone(), sent, args.clone()));
        }
    }
    let todo = Arc::new(Mutex::new(todo));
    let mut tasks = Vec::new();
    for k in 0..FINAL_RETRIES_PARALLEL {
        let todo = todo.clone();
        let rec = rec.clone();
        let client = workload::client_for(endpoints, k);
        tasks.push(tokio::spawn(async move {
            let give_up = Instant::now() + Duration::from_secs(60);
            loop {
                let Some((rid, sent, args)) = todo.lock().expect("todo").pop() else {
                    return;
                };
                workload::run_request(&rec, &client, 0, Some(rid), args, true, give_up, Some(sent))
                    .await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Checks a recorded run again (its history and replicas.json) and draws its plot again.
pub fn recheck(dir: &Path) -> Result<Vec<Verdict>, RunError> {
    let events = crate::history::read_history(&dir.join("history.jsonl"))?;
    let views: Option<Vec<ReplicaView>> = std::fs::read(dir.join("replicas.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let title = std::fs::read_to_string(dir.join("summary.txt")).unwrap_or_default();
    crate::plot::write(dir, &events, title.trim())?;
    Ok(check::check(&events, views.as_deref()))
}
