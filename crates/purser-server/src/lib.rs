//! purser-server: the replicated Purser service.

pub mod network;
pub mod node;
pub mod raft_service;
pub mod store;
pub mod types;

/// The internal Raft transport, generated from `proto/purser/internal/raft.proto`.
pub mod pb {
    tonic::include_proto!("purser.internal.v1");
}
