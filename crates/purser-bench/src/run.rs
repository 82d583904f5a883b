//! The closed-loop runner: C clients, each reserving for a random user and settling, for a
//! warm-up and then for the measured duration; then the audit of the final balances.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::backend::{Backend, NodeAudit, Reserved, Session};
use crate::soak::Interval;
use crate::workload::{settlement, Rng, Tree, HOLD};

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub clients: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub seed: u64,
    /// Lower the organization's cap after the warm-up so that it runs out about halfway
    /// through the measured run.
    pub exhaust: bool,
    /// A soak: print a row this often during the measured run.
    pub interval: Option<Duration>,
    /// The cluster directory of `scripts/cluster.sh`, whose members' memory and data the
    /// soak's rows show.
    pub cluster_dir: Option<std::path::PathBuf>,
}

/// What one run measured. Latencies are of a reservation (the call a gateway waits for
/// before it forwards a request), in microseconds.
#[derive(Debug)]
pub struct RunResult {
    pub ops: u64,
    pub elapsed: Duration,
    pub reserve_us: Histogram<u64>,
    pub settle_us: Histogram<u64>,
    pub denials: u64,
    pub errors: u64,
    pub conflicts: u64,
    /// Seconds into the measured run of the first denial.
    pub first_denial_s: Option<f64>,
    pub org_limit: i64,
    pub audit: Audit,
    pub first_error: Option<String>,
    pub server: Option<serde_json::Value>,
    /// A soak's rows, one per interval.
    pub rows: Vec<crate::soak::Row>,
}

/// The end-of-run checks: no node's spend plus holds exceeds its limit, and every node's
/// spend is the sum of the settles acknowledged for users below it.
#[derive(Debug, Default)]
pub struct Audit {
    pub nodes: usize,
    pub over_limit: Vec<String>,
    pub spend_mismatch: Vec<String>,
    pub holds_left: i64,
    pub org_spent: i64,
}

impl Audit {
    pub fn ok(&self) -> bool {
        self.over_limit.is_empty() && self.spend_mismatch.is_empty()
    }
}

struct Shared {
    tree: Tree,
    measuring: AtomicBool,
    stop: AtomicBool,
    /// Acknowledged actuals per user, measured or not.
    settled: Vec<AtomicI64>,
    /// Actuals of settles whose outcome is unknown (an error): they may or may not count.
    unknown: Vec<AtomicI64>,
    first_denial_us: AtomicU64,
    /// What the clients measured since the soak's last row.
    interval: std::sync::Mutex<Interval>,
}

struct ClientStats {
    ops: u64,
    reserve_us: Histogram<u64>,
    settle_us: Histogram<u64>,
    denials: u64,
    errors: u64,
    conflicts: u64,
    first_error: Option<String>,
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds are valid")
}

pub async fn run<B: Backend>(
    backend: Arc<B>,
    tree: Tree,
    options: &RunOptions,
) -> crate::backend::Result<RunResult> {
    backend.setup(&tree).await?;
    let users = tree.users();
    let shared = Arc::new(Shared {
        tree,
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        settled: (0..users).map(|_| AtomicI64::new(0)).collect(),
        unknown: (0..users).map(|_| AtomicI64::new(0)).collect(),
        first_denial_us: AtomicU64::new(u64::MAX),
        interval: std::sync::Mutex::new(Interval::new()),
    });
    let mut sessions = Vec::with_capacity(options.clients);
    for i in 0..options.clients {
        sessions.push(backend.session(i).await?);
    }
    let start = Arc::new(tokio::sync::OnceCell::<Instant>::new());
    let mut tasks = Vec::with_capacity(options.clients);
    for (i, session) in sessions.into_iter().enumerate() {
        let shared = shared.clone();
        let start = start.clone();
        let seed = options.seed.wrapping_add(i as u64 * 7919);
        tasks.push(tokio::spawn(client(session, shared, start, seed)));
    }
    tokio::time::sleep(options.warmup).await;
    let mut org_limit = shared.tree.nodes[0].limit;
    if options.exhaust {
        org_limit = exhaustion_cap(&*backend, &shared, options).await?;
    }
    backend.measuring_started().await;
    let began = Instant::now();
    start.set(began).expect("the run starts once");
    shared.measuring.store(true, Ordering::SeqCst);
    let rows = match options.interval {
        None => {
            tokio::time::sleep(options.duration).await;
            Vec::new()
        }
        Some(every) => {
            let dir = options.cluster_dir.as_deref();
            crate::soak::report(
                &*backend,
                &shared.interval,
                began,
                options.duration,
                every,
                dir,
            )
            .await
        }
    };
    shared.measuring.store(false, Ordering::SeqCst);
    let elapsed = began.elapsed();
    let server = backend.server_stats().await;
    shared.stop.store(true, Ordering::SeqCst);
    let mut result = RunResult {
        ops: 0,
        elapsed,
        reserve_us: histogram(),
        settle_us: histogram(),
        denials: 0,
        errors: 0,
        conflicts: 0,
        first_denial_s: None,
        org_limit,
        audit: Audit::default(),
        first_error: None,
        server,
        rows,
    };
    for task in tasks {
        let stats = task.await.map_err(|e| format!("a client panicked: {e}"))?;
        result.ops += stats.ops;
        result
            .reserve_us
            .add(&stats.reserve_us)
            .expect("same bounds");
        result.settle_us.add(&stats.settle_us).expect("same bounds");
        result.denials += stats.denials;
        result.errors += stats.errors;
        result.conflicts += stats.conflicts;
        if result.first_error.is_none() {
            result.first_error = stats.first_error;
        }
    }
    let first = shared.first_denial_us.load(Ordering::SeqCst);
    result.first_denial_s = (first != u64::MAX).then(|| first as f64 / 1e6);
    let audit = backend.audit(&shared.tree).await?;
    result.audit = check(&shared, &audit);
    Ok(result)
}

/// Sets the organization's cap to what it has spent and holds plus about half of what the
/// measured run would spend at the warm-up's pace, so that it runs out mid-run.
async fn exhaustion_cap<B: Backend>(
    backend: &B,
    shared: &Shared,
    options: &RunOptions,
) -> crate::backend::Result<i64> {
    let before = backend.audit(&shared.tree).await?[0];
    let spent_in_warmup: i64 = shared
        .settled
        .iter()
        .map(|s| s.load(Ordering::Relaxed))
        .sum();
    let per_s = spent_in_warmup as f64 / options.warmup.as_secs_f64().max(0.001);
    let cap = before.spent + before.held + (per_s * options.duration.as_secs_f64() / 2.0) as i64;
    let cap = cap.max(before.spent + before.held + HOLD);
    backend.set_org_limit(&shared.tree, cap).await?;
    Ok(cap)
}

async fn client<S: Session>(
    mut session: S,
    shared: Arc<Shared>,
    start: Arc<tokio::sync::OnceCell<Instant>>,
    seed: u64,
) -> ClientStats {
    let mut rng = Rng::new(seed);
    let mut stats = ClientStats {
        ops: 0,
        reserve_us: histogram(),
        settle_us: histogram(),
        denials: 0,
        errors: 0,
        conflicts: 0,
        first_error: None,
    };
    let users = shared.tree.users() as u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let user = rng.below(users) as usize;
        let measuring = shared.measuring.load(Ordering::Relaxed);
        let t0 = Instant::now();
        let reserved = session.reserve(&shared.tree, user, HOLD).await;
        let reserve_us = t0.elapsed().as_micros() as u64;
        let hold = match reserved {
            Ok(Reserved::Held(hold)) => hold,
            Ok(Reserved::Denied) => {
                if measuring {
                    stats.denials += 1;
                    record(&mut stats.reserve_us, reserve_us);
                    if let Some(start) = start.get() {
                        let at = start.elapsed().as_micros() as u64;
                        shared.first_denial_us.fetch_min(at, Ordering::SeqCst);
                    }
                }
                continue;
            }
            Err(e) => {
                stats.errors += u64::from(measuring);
                if measuring {
                    crate::soak::lock(&shared.interval).error(&e);
                }
                stats.first_error.get_or_insert_with(|| e.to_string());
                continue;
            }
        };
        let actual = settlement(&mut rng, HOLD);
        let t1 = Instant::now();
        match session.settle(&shared.tree, hold, actual).await {
            Ok(()) => {
                if let Some(actual) = actual {
                    shared.settled[user].fetch_add(actual, Ordering::Relaxed);
                }
                if measuring {
                    stats.ops += 1;
                    record(&mut stats.reserve_us, reserve_us);
                    record(&mut stats.settle_us, t1.elapsed().as_micros() as u64);
                    let mut interval = crate::soak::lock(&shared.interval);
                    interval.ops += 1;
                    record(&mut interval.reserve_us, reserve_us);
                }
            }
            Err(e) => {
                shared.unknown[user].fetch_add(actual.unwrap_or(0), Ordering::Relaxed);
                stats.errors += u64::from(measuring);
                if measuring {
                    crate::soak::lock(&shared.interval).error(&e);
                }
                stats.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    stats.conflicts = session.conflicts();
    stats
}

fn record(histogram: &mut Histogram<u64>, us: u64) {
    histogram.saturating_record(us.max(1));
}

fn check(shared: &Shared, audit: &[NodeAudit]) -> Audit {
    let tree = &shared.tree;
    let mut result = Audit {
        nodes: audit.len(),
        org_spent: audit.first().map_or(0, |a| a.spent),
        ..Audit::default()
    };
    if audit.len() != tree.nodes.len() {
        result.spend_mismatch.push(format!(
            "the audit returned {} nodes, the tree has {}",
            audit.len(),
            tree.nodes.len()
        ));
        return result;
    }
    // Expected spend per node: acknowledged actuals summed up each user's chain, plus at most
    // the actuals of settles whose outcome is unknown.
    let mut expected = vec![0i64; tree.nodes.len()];
    let mut unknown = vec![0i64; tree.nodes.len()];
    for (user, chain) in tree.chains.iter().enumerate() {
        let settled = shared.settled[user].load(Ordering::SeqCst);
        let unsure = shared.unknown[user].load(Ordering::SeqCst);
        for &node in chain {
            expected[node] += settled;
            unknown[node] += unsure;
        }
    }
    for (i, (node, a)) in tree.nodes.iter().zip(audit).enumerate() {
        if a.spent + a.held > a.limit {
            result.over_limit.push(format!(
                "{}: spent {} + held {} > limit {}",
                node.path, a.spent, a.held, a.limit
            ));
        }
        result.holds_left += a.held;
        if a.spent < expected[i] || a.spent > expected[i] + unknown[i] {
            result.spend_mismatch.push(format!(
                "{}: spent {} but acknowledged settles add up to {}",
                node.path, a.spent, expected[i]
            ));
        }
    }
    result
}
