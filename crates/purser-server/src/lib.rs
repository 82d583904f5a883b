//! purser-server: the replicated Purser service.

mod answered;
mod clock;
#[cfg(feature = "fault-hooks")]
mod faults;
pub mod http;
pub mod meter;
pub mod network;
pub mod node;
mod planted;
pub mod raft_service;
pub mod report;
pub mod serve;
pub mod services;
pub mod webhook;
pub mod webhook_service;
/// Storage and the Raft type configuration live in `purser-storage`.
pub use purser_storage::{metrics, store, types};

/// The internal Raft transport, generated from `proto/purser/internal/raft.proto`.
pub mod pb {
    tonic::include_proto!("purser.internal.v1");
}
