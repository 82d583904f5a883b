//! The client port's gRPC services, one file each. Writes and linearizable reads go through
//! the write path; on a follower they fail with `UNAVAILABLE` and the leader's client address
//! in the `purser-leader` metadata (`write.rs`), so clients redirect; `purser-client` does it
//! for them.

pub mod admin;
pub mod budget;
pub mod cluster;
pub mod meter;
pub mod report;
pub mod token;
pub mod webhook;

use purser_core::{Command, NodeRef, State};
use purser_proto::convert::{status_from_error, FromOutcome};
use purser_proto::pb;
use tonic::Status;

use crate::types::LogId;
use crate::write::WritePath;

/// Largest client message accepted (a request with many tags or role limits stays far below).
pub const CLIENT_MESSAGE_BYTES_MAX: usize = 4 << 20;

/// Writes `command` for `caller` (refused here if the caller may not: `auth.rs`) and answers
/// with what its outcome says.
async fn respond<Resp: FromOutcome>(
    path: &WritePath,
    caller: Option<u64>,
    command: Command,
) -> Result<Resp, Status> {
    let command = path.authorize_command(caller, command)?;
    let written = path.write(command).await?;
    let applied = written.result.map_err(|e| status_from_error(&e))?;
    Ok(Resp::from_outcome(applied.outcome, written.log_index)?)
}

/// A linearizable read, or this member's applied state when the caller allows stale reads.
async fn read<T>(
    path: &WritePath,
    allow_stale: bool,
    f: impl FnOnce(&State, Option<LogId>) -> T,
) -> Result<T, Status> {
    if allow_stale {
        return Ok(path.read_local(f));
    }
    Ok(path.read(f).await?)
}

/// The node a request names; every request that names one must.
fn node_ref(node: Option<pb::NodeRef>) -> Result<NodeRef, Status> {
    let node = node.ok_or_else(|| Status::invalid_argument("node is required"))?;
    Ok(NodeRef::try_from(node)?)
}
