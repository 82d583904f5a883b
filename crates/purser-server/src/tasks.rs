//! Every task a member runs in the background, started in one place when it starts: the
//! group-commit batcher, the compactor, the leader's ticker, the webhook deliverer and the
//! snapshot trigger. All but
//! the batcher hold a weak handle of the write path, so that they never keep a stopped member
//! alive; the batcher ends when the write path, its queue's only sender, is dropped. The node
//! aborts them all when it stops.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::time::Duration;

use purser_core::Command;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::webhook::WebhookClient;
use crate::write::{Queued, WritePath};

/// How often usage is folded into rollups in the background.
const COMPACT_EVERY: Duration = Duration::from_secs(1);

/// Starts the member's background tasks.
pub(crate) fn start(
    path: &Arc<WritePath>,
    queue: mpsc::Receiver<Queued>,
    tick_every: Duration,
    webhooks: WebhookClient,
    snapshots: (Arc<AtomicU64>, u64),
    entries_in_flight: usize,
) -> Vec<JoinHandle<()>> {
    let batcher = crate::batcher::run(
        path.raft.clone(),
        path.sm.clone(),
        queue,
        path.metrics.clone(),
        entries_in_flight,
    );
    let weak = Arc::downgrade(path);
    vec![
        tokio::spawn(batcher),
        tokio::spawn(compactor(weak.clone())),
        tokio::spawn(ticker(weak.clone(), tick_every)),
        tokio::spawn(crate::delivery::deliverer(weak.clone(), webhooks)),
        tokio::spawn(crate::snapshots::trigger(weak, snapshots.0, snapshots.1)),
    ]
}

/// Folds applied usage into the rollups every second, off the request path, on every member
/// (each has the same stream, so the same rollups).
async fn compactor(path: Weak<WritePath>) {
    let mut interval = tokio::time::interval(COMPACT_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(sm) = path.upgrade().map(|p| p.sm.clone()) else {
            return;
        };
        match tokio::task::spawn_blocking(move || sm.compact()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("folding usage into rollups: {e}"),
            Err(e) => tracing::warn!("the compactor task failed: {e}"),
        }
    }
}

/// The leader proposes a `Tick` every interval so that holds and grants expire on time.
async fn ticker(path: Weak<WritePath>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(path) = path.upgrade() else { return };
        // Every member keeps its stamp clock at or above the replicated time (`clock.rs`).
        crate::clock::follow_replicated(path.sm.read(|state, _| state.now_ms()));
        if path.is_leader() {
            if let Err(e) = path.write(Command::tick()).await {
                tracing::debug!("tick not applied: {e}");
            }
        }
    }
}
