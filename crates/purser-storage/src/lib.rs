//! purser-storage: what a Purser member keeps on disk. The Raft type configuration (what a log
//! entry carries) and openraft's log and state-machine stores on RocksDB.

#[cfg(feature = "fault-hooks")]
pub mod faults;
pub mod metrics;
pub mod store;
pub mod types;
