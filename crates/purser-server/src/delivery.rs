//! Webhook delivery by the leader: for each subscription, the events after its replicated
//! cursor that match its kinds and its root are POSTed one at a time, signed, retried with
//! exponential backoff until the endpoint answers 2xx; after a run of deliveries the leader
//! proposes `WebhookDelivered` so that a new leader resumes there. At least once: a new leader
//! may repeat what the old one delivered after its last cursor write, always with the same
//! event id (the event's stream index).

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Weak;
use std::time::{Duration, Instant};

use purser_core::{webhook::kind_matches, Command, Op, State, WebhookView};
use purser_storage::store::{EventRecord, EventsError};
use tokio::task::JoinHandle;

use crate::events::describe;
use crate::webhook::{event_body, WebhookClient};
use crate::write::{WriteError, WritePath};

/// Retry delays: the first, doubled after each failure up to the cap, each with jitter
/// (uniform in its upper half).
pub const RETRY_DELAY_MS_MIN: u64 = 100;
pub const RETRY_DELAY_MS_MAX: u64 = 30_000;
/// Events read from storage per step of a subscription.
const EVENTS_READ_MAX: usize = 256;
/// The cursor is proposed after this many deliveries, and when delivery has caught up, at
/// most once per `CURSOR_INTERVAL`.
const CURSOR_DELIVERIES_MAX: u64 = 64;
const CURSOR_INTERVAL: Duration = Duration::from_millis(500);
/// How often the supervisor compares the subscriptions with the running deliveries.
const SUPERVISE_INTERVAL: Duration = Duration::from_millis(250);

/// The body to send for `record` if it matches the subscription (kind and root).
fn matching_body(state: &State, hook: &WebhookView, record: &EventRecord) -> Option<Vec<u8>> {
    let (kind, node_id, json) = describe(&record.event, state);
    let kind_ok = hook.kinds.iter().any(|k| kind_matches(k, &kind));
    let root_ok = state.root_of_node(node_id) == Some(hook.root);
    (kind_ok && root_ok).then(|| event_body(record, &kind, node_id, json))
}

/// A delivery task that stops when dropped.
struct Worker(JoinHandle<()>);

impl Drop for Worker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs on every member; delivers only while this member is the leader (one task per
/// subscription, each with one POST in flight at most). Holds a weak handle, like the ticker.
pub(crate) async fn deliverer(node: Weak<WritePath>, client: WebhookClient) {
    let mut workers: BTreeMap<u64, Worker> = BTreeMap::new();
    let mut interval = tokio::time::interval(SUPERVISE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(strong) = node.upgrade() else { return };
        if !strong.is_leader() {
            workers.clear();
            continue;
        }
        let hooks = strong.read_local(|state, _| state.webhooks());
        drop(strong);
        workers.retain(|id, w| !w.0.is_finished() && hooks.iter().any(|h| h.id == *id));
        for hook in hooks {
            if !workers.contains_key(&hook.id) {
                let id = hook.id;
                let delivery = deliver(node.clone(), client.clone(), hook);
                workers.insert(id, Worker(tokio::spawn(delivery)));
            }
        }
    }
}

/// Delivery of a subscription stops: not the leader any more, the member is going away, or
/// the subscription is gone.
struct Stop;

/// Delivers one subscription from its replicated cursor on, until leadership is lost.
async fn deliver(node: Weak<WritePath>, client: WebhookClient, hook: WebhookView) {
    let Some(strong) = node.upgrade() else { return };
    let mut written = strong.sm.events_written();
    drop(strong);
    let mut cursor = Cursor::new(hook.delivered_through);
    loop {
        let Some(strong) = node.upgrade().filter(|n| n.is_leader()) else {
            return;
        };
        let records = match strong.sm.events_from(cursor.at + 1, EVENTS_READ_MAX) {
            Ok(records) => records,
            Err(EventsError::NotKept { wanted, next }) => {
                tracing::warn!(webhook = hook.id, wanted, next, "events {wanted} to {next} (excluded) are not kept on this member: they will not be delivered");
                cursor.at = next.saturating_sub(1).max(cursor.at);
                continue;
            }
            Err(EventsError::Io(e)) => {
                tracing::warn!(webhook = hook.id, "reading events: {e}");
                drop(strong);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if records.is_empty() {
            if cursor.due(true) && cursor.propose(&strong, hook.id).await.is_err() {
                return;
            }
            drop(strong);
            let _ = tokio::time::timeout(CURSOR_INTERVAL, written.changed()).await;
            continue;
        }
        let bodies: Vec<(u64, Option<Vec<u8>>)> = strong.read_local(|state, _| {
            records
                .iter()
                .map(|r| (r.index, matching_body(state, &hook, r)))
                .collect()
        });
        drop(strong);
        for (index, body) in bodies {
            if let Some(body) = body {
                if deliver_one(&node, &client, &hook, index, &body)
                    .await
                    .is_err()
                {
                    return;
                }
                cursor.delivered += 1;
            }
            cursor.at = index;
            if cursor.due(false) {
                let Some(strong) = node.upgrade() else { return };
                if cursor.propose(&strong, hook.id).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Where delivery of one subscription stands, and what was last proposed.
struct Cursor {
    /// Every event up to here was delivered or did not match.
    at: u64,
    proposed: u64,
    proposed_at: Instant,
    /// Deliveries since the last proposal.
    delivered: u64,
}

impl Cursor {
    fn new(at: u64) -> Self {
        Cursor {
            at,
            proposed: at,
            proposed_at: Instant::now(),
            delivered: 0,
        }
    }

    /// Time to propose: many deliveries, or caught up and not proposed for a while.
    fn due(&self, caught_up: bool) -> bool {
        self.at > self.proposed
            && (self.delivered >= CURSOR_DELIVERIES_MAX
                || (caught_up && self.proposed_at.elapsed() >= CURSOR_INTERVAL))
    }

    /// Replicates the cursor. `Err` when delivery must stop (not the leader, subscription
    /// removed, shutting down); other failures are retried with the next proposal.
    async fn propose(&mut self, node: &WritePath, id: u64) -> Result<(), Stop> {
        let command = Command {
            request: None,
            actor: None,
            op: Op::WebhookDelivered {
                id,
                through_index: self.at,
            },
        };
        self.proposed_at = Instant::now();
        match node.write(command).await {
            Ok(written) => match written.result {
                Ok(_) => {
                    self.proposed = self.at;
                    self.delivered = 0;
                    Ok(())
                }
                Err(e) => {
                    tracing::debug!(webhook = id, "cursor not recorded: {e}");
                    Err(Stop)
                }
            },
            Err(WriteError::NotLeader { .. } | WriteError::ShuttingDown) => Err(Stop),
            Err(e) => {
                tracing::debug!(webhook = id, "cursor not recorded yet: {e}");
                Ok(())
            }
        }
    }
}

/// POSTs one event until the endpoint answers 2xx; stops early when this member is no longer
/// the leader (the next leader delivers it again).
async fn deliver_one(
    node: &Weak<WritePath>,
    client: &WebhookClient,
    hook: &WebhookView,
    index: u64,
    body: &[u8],
) -> Result<(), Stop> {
    let mut delay_ms = RETRY_DELAY_MS_MIN;
    loop {
        if !node.upgrade().is_some_and(|n| n.is_leader()) {
            return Err(Stop);
        }
        match client
            .post(&hook.url, hook.secret.expose(), index, body)
            .await
        {
            Ok(status) if (200..300).contains(&status) => return Ok(()),
            Ok(status) => {
                tracing::debug!(
                    webhook = hook.id,
                    index,
                    status,
                    "endpoint refused the event"
                )
            }
            Err(e) => tracing::debug!(webhook = hook.id, index, "delivery failed: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(jittered(delay_ms))).await;
        delay_ms = (delay_ms * 2).min(RETRY_DELAY_MS_MAX);
    }
}

/// Uniform in `[delay / 2, delay]`, so that retries of many subscriptions spread out.
fn jittered(delay_ms: u64) -> u64 {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let half = delay_ms / 2;
    // Never below one millisecond for a positive delay: a zero sleep would spin.
    (half + random % (delay_ms - half + 1)).max(delay_ms.min(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..100 {
            let d = jittered(1000);
            assert!((500..=1000).contains(&d));
        }
        assert_eq!(jittered(1), 1);
    }
}
