//! purser-server: the replicated Purser service.
//!
//! Modules, each using only those listed before it (no file imports one that imports it back):
//!
//! 1. `memory` (the allocator), `clock` (every time source), `metrics` (the write path's
//!    figures), `planted` (planted bugs), `faults` (network fault hooks), `events` (how an
//!    event shows outside),
//!    `answered` (one outcome per request id), `config` (a member's configuration and start
//!    errors), `listen` (its sockets);
//! 2. `write` (the write path: writes, reads, fast denials, their errors and their gRPC
//!    status), then `batcher` (group commit, fed by the write path's queue);
//! 3. `webhook` (one signed POST and its HTTP client), then `delivery` (the leader's
//!    deliveries), `snapshots` (when this member builds one), then `tasks` (every background
//!    task, started in one place);
//! 4. `network` and `raft_service` (the peer port: Raft between members);
//! 5. `node` (a member: storage, Raft, write path and tasks, started and stopped together);
//! 6. `report` (reports from the rollups), `service` (the client port's gRPC services, one
//!    file each) and `http` (the HTTP router);
//! 7. `serve` (the library entry point the binary and the tests share).

#![deny(clippy::expect_used)]
#![warn(clippy::too_many_lines)]

mod answered;
pub mod auth;
pub mod batcher;
pub mod certs;
mod clock;
pub mod config;
mod delivery;
mod events;
#[cfg(feature = "fault-hooks")]
mod faults;
pub mod http;
mod listen;
pub mod memory;
pub mod metrics;
pub mod network;
pub mod node;
mod planted;
pub mod raft_service;
pub mod report;
pub mod serve;
pub mod service;
mod snapshots;
mod tasks;
pub mod tls;
pub mod webhook;
pub mod write;
/// Storage and the Raft type configuration live in `purser-storage`.
pub use purser_storage::{store, types};

/// The internal Raft transport, generated from `proto/purser/internal/raft.proto`.
#[allow(clippy::too_many_lines)] // generated: tonic's service dispatch is one match
pub mod pb {
    tonic::include_proto!("purser.internal.v1");
}
