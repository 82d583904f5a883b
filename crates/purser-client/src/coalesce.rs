//! Coalescing: many concurrent reserve / commit / release / charge calls of one process travel
//! in one `Batch` RPC, the way the leader packs them into one log entry. A gateway serving
//! hundreds of requests at once then pays one round trip, one HTTP/2 frame exchange and one
//! server task per batch instead of per request. Each item keeps its own request id and is
//! deduplicated by the cluster exactly as if sent alone, so retries stay safe.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::Code;

use crate::{pb, Client, ClientError, Mutation};

pub use pb::batch_item::Op;
pub use pb::batch_item_result::Result as ItemResult;

#[derive(Clone, Debug)]
pub struct CoalesceConfig {
    /// Items per `Batch` call at most (the server accepts up to 1,024).
    pub items_max: usize,
    /// `Batch` calls in flight at once; while they are, new calls queue and form the next
    /// batch (the batch grows with load, without a timer).
    pub in_flight_max: usize,
    /// Calls waiting for a batch at most; beyond it `call` fails at once.
    pub queue_max: usize,
    /// How long an item may be retried after an UNAVAILABLE item answer (a leader change in
    /// the middle of a batch) before it fails.
    pub item_timeout: Duration,
}

impl Default for CoalesceConfig {
    fn default() -> Self {
        CoalesceConfig {
            items_max: 256,
            in_flight_max: 4,
            queue_max: 65_536,
            item_timeout: Duration::from_secs(30),
        }
    }
}

/// What the server accepts in one `Batch`.
const ITEMS_MAX: usize = 1024;

/// Before an item answered UNAVAILABLE goes again (an election takes a moment).
const RETRY_PAUSE: Duration = Duration::from_millis(20);

struct Job {
    op: Op,
    deadline: tokio::time::Instant,
    reply: oneshot::Sender<Result<ItemResult, ClientError>>,
}

/// A handle to the coalescing task; cheap to clone. The task stops when every handle is gone.
#[derive(Clone)]
pub struct Coalescer {
    jobs: mpsc::Sender<Job>,
}

impl Coalescer {
    /// Starts the coalescing task on the current tokio runtime.
    pub fn new(client: Arc<Client>, mut config: CoalesceConfig) -> Coalescer {
        config.items_max = config.items_max.clamp(1, ITEMS_MAX);
        let (jobs, queue) = mpsc::channel(config.queue_max.max(1));
        tokio::spawn(run(client, config, queue, jobs.downgrade()));
        Coalescer { jobs }
    }

    /// Sends one operation in the next batch and returns its own answer: a response, or the
    /// error it would have had alone (`ClientError::Status` with the item's code). A missing
    /// request id or send time is filled in as for [`Client`]'s own calls.
    pub async fn call(&self, mut op: Op, timeout: Duration) -> Result<ItemResult, ClientError> {
        match &mut op {
            Op::Reserve(r) => r.stamp(),
            Op::Commit(r) => r.stamp(),
            Op::Release(r) => r.stamp(),
            Op::Charge(r) => r.stamp(),
        };
        let (reply, answer) = oneshot::channel();
        let job = Job {
            op,
            deadline: tokio::time::Instant::now() + timeout,
            reply,
        };
        self.jobs
            .try_send(job)
            .map_err(|_| ClientError::Unreachable {
                attempts: 0,
                last: "too many calls queued in the coalescer".into(),
            })?;
        answer.await.map_err(|_| ClientError::Unreachable {
            attempts: 0,
            last: "the coalescer stopped".into(),
        })?
    }
}

async fn run(
    client: Arc<Client>,
    config: CoalesceConfig,
    mut queue: mpsc::Receiver<Job>,
    requeue: mpsc::WeakSender<Job>,
) {
    let slots = Arc::new(Semaphore::new(config.in_flight_max.max(1)));
    while let Some(first) = queue.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut jobs = vec![first];
        while jobs.len() < config.items_max {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let client = client.clone();
        let requeue = requeue.clone();
        tokio::spawn(async move {
            send(&client, jobs, requeue).await;
            drop(permit);
        });
    }
}

async fn send(client: &Client, jobs: Vec<Job>, requeue: mpsc::WeakSender<Job>) {
    let request = pb::BatchRequest {
        items: jobs
            .iter()
            .map(|job| pb::BatchItem {
                op: Some(job.op.clone()),
            })
            .collect(),
    };
    let results = match client.batch(request).await {
        Ok(response) if response.results.len() == jobs.len() => response.results,
        Ok(response) => {
            let error = format!(
                "the server answered {} items for {}",
                response.results.len(),
                jobs.len()
            );
            let error = ClientError::Status(tonic::Status::internal(error));
            return fail_all(jobs, &error);
        }
        Err(error) => return fail_all(jobs, &error),
    };
    let mut again = Vec::new();
    for (job, result) in jobs.into_iter().zip(results) {
        match item_answer(result.result, job.deadline) {
            Some(answer) => {
                let _ = job.reply.send(answer);
            }
            None => again.push(job),
        }
    }
    if again.is_empty() {
        return;
    }
    client.retrying(again.len() as u64, "a batch item was unavailable");
    tokio::time::sleep(RETRY_PAUSE).await;
    for job in again {
        send_again(job, &requeue);
    }
}

fn fail_all(jobs: Vec<Job>, error: &ClientError) {
    for job in jobs {
        let _ = job.reply.send(Err(error.duplicate()));
    }
}

/// An item's own answer, or None when it goes again.
fn item_answer(
    result: Option<ItemResult>,
    deadline: tokio::time::Instant,
) -> Option<Result<ItemResult, ClientError>> {
    Some(match result {
        // The leader changed or shed load under this item: it may or may not have been
        // applied, so it goes again, unchanged (same request id), while time remains.
        Some(ItemResult::Error(e))
            if e.code == Code::Unavailable as i32 && tokio::time::Instant::now() < deadline =>
        {
            return None;
        }
        Some(ItemResult::Error(e)) => Err(ClientError::Status(tonic::Status::new(
            Code::from(e.code),
            e.message,
        ))),
        Some(result) => Ok(result),
        None => Err(ClientError::Status(tonic::Status::internal(
            "an empty batch item result",
        ))),
    })
}

fn send_again(job: Job, requeue: &mpsc::WeakSender<Job>) {
    let refused = match requeue.upgrade() {
        Some(queue) => queue.try_send(job).err().map(|e| match e {
            mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job) => job,
        }),
        None => Some(job),
    };
    if let Some(job) = refused {
        let _ = job.reply.send(Err(ClientError::Unreachable {
            attempts: 1,
            last: "unavailable, and the coalescer cannot take the retry".into(),
        }));
    }
}
