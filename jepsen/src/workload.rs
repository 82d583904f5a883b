//! The workload: a small tree with lifetime hard caps that the clients exhaust again and again
//! (an admin client raises the caps now and then), clients issuing reserve (exact and range),
//! commit (mostly within the hold, some overruns), release, charge and linearizable reads.

use std::sync::Arc;
use std::time::Duration;

use purser_client::{Client, ClientConfig};
use tokio::time::Instant;

use crate::history::{Args, Event, Kind, Recorder};
use crate::ops::{execute, Failure};
use crate::rng::Rng;

/// The tree and its initial caps (minor units): small enough to be exhausted many times.
pub const TREE: &[(&str, u64)] = &[
    ("jt", 1_000),
    ("jt/a", 500),
    ("jt/a/x", 200),
    ("jt/b", 400),
    ("jt/c", 300),
];
/// Where reservations and charges are placed.
pub const LEAVES: &[&str] = &["jt/a", "jt/a/x", "jt/b", "jt/c"];
/// Attempts of one request id (each a client call with its own retries) before the worker
/// gives up on it; the request stays indeterminate (`info`).
pub const REQUEST_ATTEMPTS_MAX: u32 = 20;
/// Pause between a worker's operations, at most.
pub const THINK_MS_MAX: u64 = 20;
/// Open holds a worker keeps at most.
pub const WORKER_HOLDS_MAX: usize = 3;

/// Per-call client settings: a call that gets no answer in `call_timeout` is `info` and is
/// retried with the same request id.
pub fn client_config() -> ClientConfig {
    ClientConfig {
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
/// Returns the last completion.
pub async fn run_request(
    rec: &Recorder,
    client: &Client,
    worker: u32,
    request_id: Option<String>,
    args: Args,
    final_phase: bool,
    give_up_at: Instant,
) -> Event {
    let sent_at_ms = purser_client::now_ms();
    run_request_sent_at(
        rec,
        client,
        worker,
        request_id,
        args,
        final_phase,
        give_up_at,
        sent_at_ms,
    )
    .await
}

/// [`run_request`] with the request's first send time given (a retry of an earlier request).
#[allow(clippy::too_many_arguments)]
pub async fn run_request_sent_at(
    rec: &Recorder,
    client: &Client,
    worker: u32,
    request_id: Option<String>,
    args: Args,
    final_phase: bool,
    give_up_at: Instant,
    sent_at_ms: u64,
) -> Event {
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

pub struct Worker {
    pub id: u32,
    pub rng: Rng,
    pub client: Arc<Client>,
    /// (reservation id, amount) of holds this worker was granted and has not settled.
    pub holds: Vec<(u64, u64)>,
    pub requests: u64,
}

impl Worker {
    fn request_id(&mut self) -> String {
        self.requests += 1;
        format!("w{}-{}", self.id, self.requests)
    }

    /// The next operation, chosen by the worker's seeded stream.
    fn next_args(&mut self) -> Args {
        let roll = self.rng.range(0, 99);
        let leaf = self.rng.pick(LEAVES).to_string();
        if !self.holds.is_empty() && (roll < 55 || self.holds.len() >= WORKER_HOLDS_MAX) {
            let k = self.rng.range(0, self.holds.len() as u64 - 1) as usize;
            let (reservation_id, amount) = self.holds.swap_remove(k);
            if self.rng.chance(35) {
                return Args::Release { reservation_id };
            }
            // Mostly well under the hold (spend is what exhausts the caps for good), some
            // overruns.
            let actual = if self.rng.chance(10) {
                amount + self.rng.range(1, 10)
            } else {
                self.rng.range(0, amount / 3)
            };
            return Args::Commit {
                reservation_id,
                actual,
            };
        }
        match roll {
            0..=34 => {
                let a = self.rng.range(5, 60);
                Args::Reserve {
                    node: leaf,
                    min: a,
                    max: a,
                    exact: true,
                }
            }
            35..=69 => {
                let min = self.rng.range(1, 20);
                Args::Reserve {
                    node: leaf,
                    min,
                    max: min + self.rng.range(0, 80),
                    exact: false,
                }
            }
            70..=79 => Args::Charge {
                node: leaf,
                amount: self.rng.range(1, 10),
            },
            _ => Args::Show {
                node: self.rng.pick(TREE).0.to_string(),
            },
        }
    }

    pub async fn run(mut self, rec: Arc<Recorder>, stop_at: Instant, give_up_at: Instant) {
        while Instant::now() < stop_at {
            // A little think time: the caps are raised at a human pace.
            tokio::time::sleep(Duration::from_millis(self.rng.range(0, THINK_MS_MAX))).await;
            let args = self.next_args();
            let request_id = (!args.is_read()).then(|| self.request_id());
            let done = run_request(
                &rec,
                &self.client,
                self.id,
                request_id,
                args,
                false,
                give_up_at,
            )
            .await;
            if let (
                Kind::Ok,
                Some(crate::history::Answer::Granted {
                    reservation_id,
                    amount,
                }),
            ) = (done.kind, &done.answer)
            {
                self.holds.push((*reservation_id, *amount));
            }
        }
    }
}

/// The admin client: raises a random node's cap every few seconds (caps only ever rise,
/// which the checker's model relies on).
pub async fn raise_caps(
    rec: Arc<Recorder>,
    client: Arc<Client>,
    worker: u32,
    mut rng: Rng,
    stop_at: Instant,
    give_up_at: Instant,
) {
    let mut caps: Vec<(String, u64)> = TREE.iter().map(|&(p, c)| (p.to_string(), c)).collect();
    let mut n = 0;
    while Instant::now() < stop_at {
        tokio::time::sleep(Duration::from_millis(rng.range(200, 800))).await;
        let k = rng.range(0, caps.len() as u64 - 1) as usize;
        // The root more often: it is the cap every reservation meets.
        let k = if rng.chance(40) { 0 } else { k };
        caps[k].1 += rng.range(20, 100);
        n += 1;
        let args = Args::SetLimit {
            node: caps[k].0.clone(),
            amount: caps[k].1,
        };
        run_request(
            &rec,
            &client,
            worker,
            Some(format!("admin-{n}")),
            args,
            false,
            give_up_at,
        )
        .await;
    }
}

/// Creates the tree and its caps, each step until it is answered.
pub async fn setup(rec: &Recorder, client: &Client) -> Result<(), String> {
    let give_up = Instant::now() + Duration::from_secs(60);
    for (i, &(path, cap)) in TREE.iter().enumerate() {
        let steps = [
            (
                format!("setup-node-{i}"),
                Args::CreateNode { path: path.into() },
            ),
            (
                format!("setup-cap-{i}"),
                Args::SetLimit {
                    node: path.into(),
                    amount: cap,
                },
            ),
        ];
        for (rid, args) in steps {
            let done = run_request(rec, client, 0, Some(rid.clone()), args, false, give_up).await;
            if done.kind != Kind::Ok {
                return Err(format!("setup step {rid} failed: {:?}", done.error));
            }
        }
    }
    Ok(())
}
