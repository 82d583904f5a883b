//! A Purser client: give it every member's client address; it finds the leader, follows
//! redirects, retries unavailable members and unknown outcomes with the same request (so the
//! same request id, which the cluster deduplicates), and gives up after a bounded time.
//!
//! - [`Client`]: one typed async method per RPC of `purser.v1` (`reserve`, `settle`,
//!   `release`, `charge`, `show`, `holds`, `watch`, `report`, the admin and cluster calls).
//!   Mutating calls fill in a missing request id and send time and answer [`Mutated`], which
//!   tells the ids used beside the response.
//! - [`Budget`]: reserve, then settle or release, with a hold released when dropped.
//! - [`Coalescer`]: many concurrent reserves and settles of one process in one `Batch` RPC.

#![deny(clippy::expect_used)]
#![warn(clippy::too_many_lines)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use purser_proto::pb;
/// The messages of standard gRPC health checking ([`Client::health_check`]).
pub use tonic_health::pb as health;

mod budget;
mod client;
mod coalesce;
mod rpc;

pub use budget::{Budget, Hold, Reserved, HOLD_TTL_MS_DEFAULT};
pub use client::{normalize_endpoint, Client, ClientConfig, ClientError, Retries, LEADER_METADATA};
pub use coalesce::{CoalesceConfig, Coalescer, ItemResult, Op};
pub use rpc::{Acknowledged, Mutated, Mutation};

/// A request id unique to this process and moment, for callers that have none of their own.
pub fn new_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{nanos:x}-{:x}-{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A prepaid grant of `amount` minor units of `currency`, drawn first (priority 0): effective
/// at once, never expiring, never renewed. The plain credit pool a load or a test starts with.
pub fn prepaid_grant(currency: impl Into<String>, amount: i64) -> pb::GrantSpec {
    pb::GrantSpec {
        currency: currency.into(),
        amount,
        priority: 0,
        kind: pb::GrantKind::Prepaid as i32,
        effective_at_ms: None,
        expires_at_ms: None,
        recur: None,
        rollover: None,
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
