//! The Raft type configuration: what one log entry carries and what applying it answers.

use std::fmt;

use purser_core::{Applied, Command, Error};
use serde::{Deserialize, Serialize};

/// One log entry's payload: client commands packed by the leader (group commit), all applied
/// at the leader's timestamp `at_ms`, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub at_ms: u64,
    pub commands: Vec<Command>,
}

impl fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Batch(at_ms={}, commands={})",
            self.at_ms,
            self.commands.len()
        )
    }
}

/// The answer to each command of a [`Batch`], in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse {
    pub results: Vec<Result<Applied, Error>>,
}

/// A cluster member: where its peers reach its Raft service, and where clients reach it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    pub peer_addr: String,
    pub client_addr: String,
}

impl fmt::Display for PeerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer={} client={}", self.peer_addr, self.client_addr)
    }
}

/// The runtime openraft runs on: Tokio's, or in the chaos harness's build one whose clock can
/// be made to run fast or slow (see `crate::faults`), to test leader leases against the clock
/// assumption they rest on.
#[cfg(not(feature = "fault-hooks"))]
type Runtime = openraft::impls::TokioRuntime;
#[cfg(feature = "fault-hooks")]
type Runtime = crate::faults::SkewedRuntime;

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Batch,
        R = BatchResponse,
        NodeId = u64,
        Node = PeerNode,
        AsyncRuntime = Runtime,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig, crate::store::StateMachineStore>;
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;
/// A snapshot in transit or at rest: the encoded [`crate::store::StoredSnapshot`].
pub type SnapshotData = std::io::Cursor<Vec<u8>>;
