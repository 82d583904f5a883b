//! The workload: two small trees with hard caps (lifetime, monthly, sliding and first-use
//! windows) that the clients exhaust again and again, one of them funded by a credit pool that
//! runs dry (an admin client raises the caps and tops the pool up now and then), clients
//! issuing reserve (exact and range, some with a TTL short enough to expire during the run),
//! commit (mostly within the hold, some overruns, some after the TTL), release, charge and
//! linearizable reads; some short holds are abandoned, for the leader's Tick to expire.

use std::sync::Arc;
use std::time::Duration;

use purser_client::{Client, ClientConfig};
use purser_core::time::DAY_MS;
use tokio::time::Instant;

use crate::history::{Answer, Args, Event, Kind, Recorder, Window};
use crate::ops::{execute, Failure, HOLD_TTL_MS};
use crate::rng::Rng;

/// A node of the workload and its hard cap (minor units, window), if it has one.
pub struct NodeSpec {
    pub path: &'static str,
    pub cap: Option<(u64, Window)>,
}

const fn node(path: &'static str, cap: Option<(u64, Window)>) -> NodeSpec {
    NodeSpec { path, cap }
}

/// The trees and their initial caps: small enough to be exhausted many times. Windows are
/// long enough not to reset during a run (sliding and first-use: a day; monthly: the run
/// refuses to start across a month boundary), so the checker treats every cap alike. `jt` is
/// capped; `je` is capped and its holds mostly have short TTLs (kept apart so that the exact
/// search of `wgl.rs`, which cannot place an expiry no operation observes, covers all of
/// `jt`); `jf` is funded (every reservation below it is paid from the grants of `jf`); `jm`
/// only marks the end of the events (see [`MARKER`]).
pub const TREE: &[NodeSpec] = &[
    node("jt", Some((1_000, Window::Month))),
    node("jt/a", Some((500, Window::Lifetime))),
    node("jt/a/x", Some((200, Window::FirstUse { ms: DAY_MS }))),
    node("jt/b", Some((400, Window::Sliding { ms: DAY_MS }))),
    node("jt/c", Some((300, Window::Lifetime))),
    node("je", Some((600, Window::Month))),
    node("je/a", Some((300, Window::Lifetime))),
    node("je/b", Some((250, Window::Sliding { ms: DAY_MS }))),
    node("jf", Some((5_000, Window::Month))),
    node("jf/p", Some((250, Window::Sliding { ms: DAY_MS }))),
    node("jf/q", None),
    node(MARKER, None),
];
/// Roots whose currency is funded; the workload's grants are all owned by them.
pub const FUNDED_ROOTS: &[&str] = &["jf"];
/// A root nothing spends at, paused in the final phase: its `Paused` event marks how far the
/// events must be read.
pub const MARKER: &str = "jm";
/// Where reservations and charges are placed.
pub const LEAVES: &[&str] = &[
    "jt/a", "jt/a/x", "jt/b", "jt/c", "je/a", "je/b", "jf/p", "jf/q",
];
/// The root whose reservations get short TTLs, and their share there (percent).
pub const SHORT_TTL_ROOT: &str = "je";
/// The grant each funded root starts with, and the range of a top-up.
pub const GRANT_INITIAL: u64 = 300;
pub const GRANT_TOPUP: (u64, u64) = (100, 400);
/// Top-ups per run at most: a node owns at most 64 grants, and a used-up one stays.
pub const GRANT_TOPUPS_MAX: u32 = 48;
/// Top-ups are spread over the run, this far apart at least.
pub const GRANT_TOPUP_EVERY_MIN: Duration = Duration::from_secs(2);
/// Share of reservations (percent) with a short TTL in [`SHORT_TTL_ROOT`] (and in the funded
/// tree, whose pool checks place expiries by their events), and the range: the server's
/// minimum is 1 s, and the leader ticks every second.
pub const SHORT_TTL_PERCENT: u64 = 70;
pub const SHORT_TTL_MS: (u64, u64) = (1_000, 2_500);
/// Share of short holds (percent) abandoned: never settled nor released, left to expire.
pub const ABANDON_PERCENT: u64 = 40;
/// Share of the kept short holds (percent) settled only around their expiry, so that some
/// settles are late and some releases find the hold expired.
pub const SETTLE_LATE_PERCENT: u64 = 50;

/// True when `path` is in a funded tree.
pub fn is_funded(path: &str) -> bool {
    FUNDED_ROOTS.iter().any(|r| is_under(path, r))
}

/// True when `path` is `root` or below it.
pub fn is_under(path: &str, root: &str) -> bool {
    path.strip_prefix(root)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Attempts of one request id (each a client call with its own retries) before the worker
/// gives up on it; the request stays indeterminate (`info`).
pub const REQUEST_ATTEMPTS_MAX: u32 = 20;
/// Pause between a worker's operations, at most.
pub const THINK_MS_MAX: u64 = 20;
/// Open holds a worker keeps at most.
pub const WORKER_HOLDS_MAX: usize = 4;

/// Per-call client settings: a call that gets no answer in `call_timeout` is `info` and is
/// retried with the same request id.
pub fn client_config() -> ClientConfig {
    ClientConfig {
        token: crate::cluster::admin_token(),
        ca: crate::cluster::cluster_ca(),
        identity: None,
        request_timeout: Duration::from_millis(1000),
        call_timeout: Duration::from_secs(3),
        attempts_max: 40,
        connect_timeout: Duration::from_millis(500),
    }
}

/// A client whose first endpoint is node `first` (it follows redirects to the leader).
pub fn client_for(endpoints: &[String], first: usize) -> Client {
    let mut rotated = endpoints.to_vec();
    rotated.rotate_left(first % endpoints.len().max(1));
    Client::new(rotated, client_config()).expect("endpoints are valid addresses")
}

/// Runs one request id to a definite answer: the first attempt and, while the outcome is
/// unknown, retries with the same id and sent time, each recorded as its own operation.
/// `sent_at_ms` is the first send time of an earlier request retried here; `None` sends a new
/// one now. Returns the last completion.
#[allow(clippy::too_many_arguments)]
pub async fn run_request(
    rec: &Recorder,
    client: &Client,
    worker: u32,
    request_id: Option<String>,
    args: Args,
    final_phase: bool,
    give_up_at: Instant,
    sent_at_ms: Option<u64>,
) -> Event {
    let sent_at_ms = sent_at_ms.unwrap_or_else(purser_client::now_ms);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut invoke = Event::invoke(rec.next_op(), worker, request_id.clone(), args.clone());
        invoke.final_phase = final_phase;
        invoke.sent_at_ms = request_id.is_some().then_some(sent_at_ms);
        let invoke = rec.record(invoke);
        let rid = request_id.as_deref().unwrap_or("");
        let result = execute(client, &args, rid, sent_at_ms).await;
        let done = match result {
            Ok(reply) => {
                let mut e = Event::completion(&invoke, Kind::Ok);
                e.answer = Some(reply.answer);
                e.log_index = reply.log_index;
                e.duplicate = reply.duplicate;
                rec.record(e)
            }
            Err(Failure::Definite(why)) => {
                let mut e = Event::completion(&invoke, Kind::Fail);
                e.error = Some(why);
                rec.record(e)
            }
            Err(Failure::Unknown(why)) => {
                let mut e = Event::completion(&invoke, Kind::Info);
                e.error = Some(why);
                rec.record(e)
            }
        };
        // Reads are not retried: an unanswered read is simply unknown.
        if done.kind != Kind::Info
            || request_id.is_none()
            || attempt >= REQUEST_ATTEMPTS_MAX
            || Instant::now() >= give_up_at
        {
            return done;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A hold a worker was granted and means to settle or release.
pub struct Hold {
    pub reservation_id: u64,
    pub amount: u64,
    pub funded: bool,
    pub short: bool,
    /// Not settled before (around the TTL for some short holds).
    pub ready_at: Instant,
}

pub struct Worker {
    pub id: u32,
    pub rng: Rng,
    pub client: Arc<Client>,
    pub holds: Vec<Hold>,
    pub requests: u64,
}

impl Worker {
    fn request_id(&mut self) -> String {
        self.requests += 1;
        format!("w{}-{}", self.id, self.requests)
    }

    /// The next operation, chosen by the worker's seeded stream.
    fn next_args(&mut self, now: Instant) -> Args {
        let roll = self.rng.range(0, 99);
        let leaf = self.rng.pick(LEAVES).to_string();
        let ready: Vec<usize> = (0..self.holds.len())
            .filter(|&k| self.holds[k].ready_at <= now)
            .collect();
        let full = self.holds.len() >= WORKER_HOLDS_MAX;
        if !ready.is_empty() && (roll < 55 || full) {
            let k = ready[self.rng.range(0, ready.len() as u64 - 1) as usize];
            let hold = self.holds.swap_remove(k);
            let reservation_id = hold.reservation_id;
            // A funded hold is never settled above what it holds, nor after it may have
            // expired: both can leave debt on the node, which the model does not replay.
            if self.rng.chance(35) || (hold.funded && hold.short) {
                return Args::Release { reservation_id };
            }
            // Mostly well under the hold (spend is what exhausts the caps for good), some
            // overruns.
            let actual = if !hold.funded && self.rng.chance(10) {
                hold.amount + self.rng.range(1, 10)
            } else {
                self.rng.range(0, hold.amount / 3)
            };
            return Args::Commit {
                reservation_id,
                actual,
            };
        }
        let may_expire = is_under(&leaf, SHORT_TTL_ROOT) || is_funded(&leaf);
        let ttl_ms = if may_expire && self.rng.chance(SHORT_TTL_PERCENT) {
            self.rng.range(SHORT_TTL_MS.0, SHORT_TTL_MS.1)
        } else {
            HOLD_TTL_MS
        };
        match roll {
            // Every kept hold waits for its TTL: no new one until one is settled.
            0..=69 if full => Args::Show {
                node: self.rng.pick(TREE).path.to_string(),
            },
            0..=34 => {
                let a = self.rng.range(5, 60);
                Args::Reserve {
                    node: leaf,
                    min: a,
                    max: a,
                    exact: true,
                    ttl_ms,
                }
            }
            35..=69 => {
                let min = self.rng.range(1, 20);
                Args::Reserve {
                    node: leaf,
                    min,
                    max: min + self.rng.range(0, 80),
                    exact: false,
                    ttl_ms,
                }
            }
            70..=79 => Args::Charge {
                node: leaf,
                amount: self.rng.range(1, 10),
            },
            _ => Args::Show {
                node: self.rng.pick(TREE).path.to_string(),
            },
        }
    }

    /// Keeps a granted hold to settle later, or abandons it (short holds only) to expire.
    fn keep(&mut self, args: &Args, reservation_id: u64, amount: u64) {
        let Args::Reserve { node, ttl_ms, .. } = args else {
            return;
        };
        let short = *ttl_ms < HOLD_TTL_MS;
        let now = Instant::now();
        let ready_at = if !short {
            now
        } else if self.rng.chance(ABANDON_PERCENT) {
            return;
        } else if self.rng.chance(SETTLE_LATE_PERCENT) {
            // Around the expiry: before it, or after it with or without a Tick in between
            // (the leader ticks every second).
            now + Duration::from_millis((*ttl_ms).saturating_sub(300) + self.rng.range(0, 1_800))
        } else {
            now
        };
        self.holds.push(Hold {
            reservation_id,
            amount,
            funded: is_funded(node),
            short,
            ready_at,
        });
    }

    pub async fn run(mut self, rec: Arc<Recorder>, stop_at: Instant, give_up_at: Instant) {
        while Instant::now() < stop_at {
            // A little think time: the caps are raised at a human pace.
            tokio::time::sleep(Duration::from_millis(self.rng.range(0, THINK_MS_MAX))).await;
            let args = self.next_args(Instant::now());
            let request_id = (!args.is_read()).then(|| self.request_id());
            let done = run_request(
                &rec,
                &self.client,
                self.id,
                request_id,
                args.clone(),
                false,
                give_up_at,
                None,
            )
            .await;
            if let (
                Kind::Ok,
                Some(Answer::Granted {
                    reservation_id,
                    amount,
                    ..
                }),
            ) = (done.kind, &done.answer)
            {
                self.keep(&args, *reservation_id, *amount);
            }
        }
    }
}

/// The admin client: raises a random node's cap every 0.2–0.8 s (caps only ever rise, which
/// the checker's model relies on), and now and then tops up the pool of a funded root with a
/// new grant (spread over the run: a node owns at most 64 grants).
pub async fn raise_caps(
    rec: Arc<Recorder>,
    client: Arc<Client>,
    worker: u32,
    mut rng: Rng,
    stop_at: Instant,
    give_up_at: Instant,
) {
    let mut caps: Vec<(String, u64, Window)> = TREE
        .iter()
        .filter_map(|n| n.cap.map(|(amount, w)| (n.path.to_string(), amount, w)))
        .collect();
    let topup_every = (stop_at.saturating_duration_since(Instant::now()) / GRANT_TOPUPS_MAX)
        .max(GRANT_TOPUP_EVERY_MIN);
    let mut next_topup = Instant::now() + topup_every;
    let mut topups = 0;
    let mut n = 0;
    while Instant::now() < stop_at {
        tokio::time::sleep(Duration::from_millis(rng.range(200, 800))).await;
        n += 1;
        let args = if Instant::now() >= next_topup && topups < GRANT_TOPUPS_MAX {
            topups += 1;
            let jitter = Duration::from_millis(rng.range(0, 1_000));
            next_topup = Instant::now() + topup_every + jitter;
            Args::AddGrant {
                node: rng.pick(FUNDED_ROOTS).to_string(),
                amount: rng.range(GRANT_TOPUP.0, GRANT_TOPUP.1),
            }
        } else {
            let k = rng.range(0, caps.len() as u64 - 1) as usize;
            // The capped root more often: it is the cap most reservations meet.
            let k = if rng.chance(30) { 0 } else { k };
            caps[k].1 += rng.range(20, 100);
            Args::SetLimit {
                node: caps[k].0.clone(),
                amount: caps[k].1,
                window: caps[k].2,
            }
        };
        run_request(
            &rec,
            &client,
            worker,
            Some(format!("admin-{n}")),
            args,
            false,
            give_up_at,
            None,
        )
        .await;
    }
}

/// Creates the trees, their caps and the funded roots' first grants, each step until it is
/// answered.
pub async fn setup(rec: &Recorder, client: &Client) -> Result<(), String> {
    let give_up = Instant::now() + Duration::from_secs(60);
    for (i, spec) in TREE.iter().enumerate() {
        let path = spec.path;
        let funded_root = FUNDED_ROOTS.contains(&path);
        let mut steps = vec![(
            format!("setup-node-{i}"),
            Args::CreateNode {
                path: path.into(),
                funded: funded_root,
            },
        )];
        if let Some((amount, window)) = spec.cap {
            steps.push((
                format!("setup-cap-{i}"),
                Args::SetLimit {
                    node: path.into(),
                    amount,
                    window,
                },
            ));
        }
        if funded_root {
            steps.push((
                format!("setup-grant-{i}"),
                Args::AddGrant {
                    node: path.into(),
                    amount: GRANT_INITIAL,
                },
            ));
        }
        for (rid, args) in steps {
            let done = run_request(
                rec,
                client,
                0,
                Some(rid.clone()),
                args,
                false,
                give_up,
                None,
            )
            .await;
            if done.kind != Kind::Ok {
                return Err(format!("setup step {rid} failed: {:?}", done.error));
            }
        }
    }
    Ok(())
}
