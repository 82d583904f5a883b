//! purser-storage: what a Purser member keeps on disk. The Raft type configuration (what a log
//! entry carries) and openraft's log and state-machine stores on RocksDB.

#![deny(clippy::expect_used)]
#![warn(clippy::too_many_lines)]

#[cfg(feature = "fault-hooks")]
pub mod faults;
pub mod metrics;
pub mod store;
pub mod types;
