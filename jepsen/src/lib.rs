//! purser-jepsen: a chaos harness for Purser. Real `purser serve` processes in network
//! namespaces, nemeses on a seeded schedule, a recorded history and checkers for no
//! overspend, no lost acknowledgement, idempotency, conservation, linearizability and
//! convergence. See `jepsen/README.md`.

pub mod check;
pub mod cluster;
mod corrupt;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod ops;
pub mod plot;
pub mod rng;
pub mod run;
pub mod verdict;
pub mod wgl;
pub mod workload;
