//! Group commit: the write path's queued commands packed into log entries. Everything waiting
//! (up to the batch size) goes into the next entry, with at most `--entries-in-flight` (1)
//! entries in flight; while they are, new commands queue up and form the next batch, so the
//! linger adapts to load without a timer.

use std::sync::Arc;
use std::time::Instant;

use openraft::error::{ClientWriteError, RaftError};
use purser_core::{Applied, Command, Outcome};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::answered::{Answer, Ticket};
use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::store::StateMachineStore;
use crate::types::{Batch, BatchResponse, Raft, TypeConfig};
use crate::write::{Queued, WriteError, Written};

/// Commands packed into one log entry at most.
pub const BATCH_COMMANDS_MAX: usize = 1024;
/// Encoded bytes packed into one log entry at most (a single larger command goes alone).
/// With `max_payload_entries` (see `config.rs`), an append stays far under the peer port's
/// message limit.
pub const BATCH_BYTES_MAX: usize = 1 << 20;
/// Log entries proposed and not yet answered at most, by default (`--entries-in-flight`): one,
/// measured best with pipelined replication on a shared 2-core box (docs/architecture.md).
pub const ENTRIES_IN_FLIGHT: usize = 1;
/// The most `--entries-in-flight` may be.
pub const ENTRIES_IN_FLIGHT_MAX: usize = 16;

type Reply = (
    tokio::sync::oneshot::Sender<Result<Written, WriteError>>,
    Option<Ticket>,
);

type WriteResult = Result<
    openraft::raft::ClientWriteResponse<TypeConfig>,
    RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
>;

/// Runs until the write path (the queue's sender) is dropped.
pub(crate) async fn run(
    raft: Raft,
    sm: StateMachineStore,
    mut queue: mpsc::Receiver<Queued>,
    metrics: Arc<Metrics>,
    in_flight: usize,
) {
    let slots = Arc::new(Semaphore::new(in_flight.clamp(1, ENTRIES_IN_FLIGHT_MAX)));
    while let Some(first) = queue.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let batch = take_batch(first, &mut queue);
        let proposed = Instant::now();
        let mut commands = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for queued in batch {
            metrics
                .write_queued_us
                .record_duration(proposed.duration_since(queued.queued));
            commands.push(queued.command);
            replies.push((queued.reply, queued.ticket));
        }
        metrics.batch_commands.record(commands.len() as u64);
        let (raft, sm, metrics) = (raft.clone(), sm.clone(), metrics.clone());
        tokio::spawn(async move {
            let result = propose(&raft, commands, permit).await;
            metrics.raft_write_us.record_duration(proposed.elapsed());
            // Read only when a denial is to be kept: most batches have none.
            let retention_ms = || sm.read(|state, _| state.config().request_retention_ms);
            answer(result, replies, retention_ms);
        });
    }
}

/// `first` and whatever else is waiting, up to the batch limits.
fn take_batch(first: Queued, queue: &mut mpsc::Receiver<Queued>) -> Vec<Queued> {
    let mut bytes = first.command.encoded_len();
    let mut batch = vec![first];
    while batch.len() < BATCH_COMMANDS_MAX && bytes < BATCH_BYTES_MAX {
        match queue.try_recv() {
            Ok(next) => {
                bytes += next.command.encoded_len();
                batch.push(next);
            }
            Err(_) => break,
        }
    }
    batch
}

/// Proposes one entry; its slot is free again once Raft has answered.
async fn propose(raft: &Raft, commands: Vec<Command>, slot: OwnedSemaphorePermit) -> WriteResult {
    // The leader's clock stamps the entry; apply makes it monotonic.
    let batch = Batch {
        at_ms: now_ms(),
        commands,
    };
    let result = raft.client_write(batch).await;
    drop(slot);
    result
}

/// Answers each command of a batch. A ticket is dropped (its attempt no longer in flight)
/// only after a denial it got is recorded, and before the caller hears of it.
fn answer(result: WriteResult, replies: Vec<Reply>, retention_ms: impl Fn() -> u64) {
    let response = match result {
        Ok(response) => response,
        Err(e) => {
            let error = match e {
                RaftError::APIError(ClientWriteError::ForwardToLeader(to)) => {
                    WriteError::forward(to)
                }
                other => WriteError::Unknown(other.to_string()),
            };
            for (reply, ticket) in replies {
                drop(ticket);
                let _ = reply.send(Err(error.clone()));
            }
            return;
        }
    };
    let BatchResponse { results } = response.data;
    assert_eq!(
        results.len(),
        replies.len(),
        "apply answers every command of a batch"
    );
    let log_index = response.log_id.index;
    let now = now_ms();
    for ((reply, ticket), result) in replies.into_iter().zip(results) {
        if let Some(ticket) = &ticket {
            match &result {
                Ok(Applied {
                    outcome: Outcome::Denied(denial),
                    ..
                }) => {
                    let answer = Answer {
                        denial: denial.clone(),
                        log_index,
                    };
                    ticket.denied(answer, retention_ms(), now);
                }
                Ok(_) => ticket.applied(),
                Err(_) => {}
            }
        }
        drop(ticket);
        let _ = reply.send(Ok(Written { log_index, result }));
    }
}
