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
///
/// A member's own snapshot is its file, read a chunk at a time as it is sent, never held whole
/// in memory; a newer snapshot renames its file over the path, and this one stays readable
/// through its open handle. A snapshot received from the leader (or an earlier version's
/// RocksDB value) is bytes, held until installed: decoding needs it whole.
#[derive(Debug)]
pub enum SnapshotData {
    File(std::fs::File),
    Bytes(std::io::Cursor<Vec<u8>>),
}

impl SnapshotData {
    pub fn bytes(bytes: Vec<u8>) -> SnapshotData {
        SnapshotData::Bytes(std::io::Cursor::new(bytes))
    }

    /// Up to `max` more bytes, in order from where the last read ended; empty at the end.
    pub fn read_chunk(&mut self, max: usize) -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let mut chunk = Vec::with_capacity(max.min(1 << 20));
        self.take(max as u64).read_to_end(&mut chunk)?;
        Ok(chunk)
    }

    /// The whole encoding, from its start.
    pub fn into_bytes(self) -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Seek};
        match self {
            SnapshotData::Bytes(bytes) => Ok(bytes.into_inner()),
            mut file => {
                file.rewind()?;
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes)?;
                Ok(bytes)
            }
        }
    }
}

impl std::io::Read for SnapshotData {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            SnapshotData::File(file) => file.read(buf),
            SnapshotData::Bytes(bytes) => bytes.read(buf),
        }
    }
}

impl std::io::Seek for SnapshotData {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        match self {
            SnapshotData::File(file) => file.seek(to),
            SnapshotData::Bytes(bytes) => bytes.seek(to),
        }
    }
}
