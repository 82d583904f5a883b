//! What one member is configured with, how that becomes openraft's configuration, and why a
//! member may fail to start.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::types::NodeId;

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    pub data_dir: PathBuf,
    /// Where peers reach this member's Raft service.
    pub peer_listen: SocketAddr,
    /// Where clients reach this member (advertised to peers for redirects).
    pub client_addr: String,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// A snapshot is built after this many log entries since the last one (member 1; the
    /// others a little later, see `snapshot_period`).
    pub snapshot_every_entries: u64,
    /// Log entries kept behind a snapshot so that slightly lagging followers need no snapshot.
    pub log_kept_after_snapshot: u64,
    /// How often the leader proposes a `Tick` (hold and grant expiry).
    pub tick_ms: u64,
    /// The newest events this member keeps for `Watch` and webhooks (older ones, once folded
    /// into the rollups, are deleted when a snapshot is built).
    pub events_kept: u64,
    /// Serve linearizable reads and denials under the leader's lease (no round trip) instead
    /// of a read index (one heartbeat round to a quorum). The lease assumes the members'
    /// clocks advance at the same rate; see docs/architecture.md.
    pub lease_reads: bool,
    /// Appends in flight to each follower (`network::STREAM_APPEND_DEPTH` by default; 1:
    /// stop-and-wait).
    pub replication_depth: usize,
    /// Log entries the leader's batcher proposes before the first is answered.
    pub entries_in_flight: usize,
    /// Client calls must carry a live token (`auth.rs`). Off only for `purser dev --no-auth`.
    pub auth: bool,
    /// Deliver webhooks to loopback, private and link-local addresses too (`webhook.rs`).
    pub webhook_allow_private: bool,
    /// Mutual TLS on the peer port and to the other members (`tls.rs`); the CA is required.
    pub peer_tls: Option<crate::tls::TlsFiles>,
    /// A CA (PEM) https webhook receivers may present certificates of, besides the public
    /// web PKI's.
    pub webhook_ca: Option<PathBuf>,
}

impl NodeConfig {
    pub fn new(
        id: NodeId,
        data_dir: PathBuf,
        peer_listen: SocketAddr,
        client_addr: String,
    ) -> Self {
        NodeConfig {
            id,
            data_dir,
            peer_listen,
            client_addr,
            heartbeat_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            snapshot_every_entries: 10_000,
            log_kept_after_snapshot: 1_000,
            tick_ms: 1_000,
            lease_reads: false,
            replication_depth: crate::network::STREAM_APPEND_DEPTH,
            entries_in_flight: crate::batcher::ENTRIES_IN_FLIGHT,
            auth: true,
            webhook_allow_private: false,
            peer_tls: None,
            webhook_ca: None,
            events_kept: purser_storage::store::EVENTS_KEPT,
        }
    }

    /// Entries between this member's snapshots: `snapshot_every_entries`, plus an eighth of
    /// it per member id (mod 5), so that the members of a cluster drift apart and rarely
    /// spend the CPU and disk of a snapshot at the same time.
    pub(crate) fn snapshot_period(&self) -> u64 {
        let every = self.snapshot_every_entries.max(1);
        every + every / 8 * (self.id.saturating_sub(1) % 5)
    }

    pub(crate) fn raft_config(&self) -> Result<openraft::Config, StartError> {
        let within = |what: &str, max: usize, value: usize| {
            if (1..=max).contains(&value) {
                Ok(())
            } else {
                Err(StartError::Config(format!(
                    "the {what} must be 1..={max}, not {value}"
                )))
            }
        };
        within(
            "replication depth",
            crate::network::STREAM_APPEND_DEPTH_MAX,
            self.replication_depth,
        )?;
        within(
            "entries in flight",
            crate::batcher::ENTRIES_IN_FLIGHT_MAX,
            self.entries_in_flight,
        )?;
        let config = openraft::Config {
            cluster_name: "purser".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            // The member decides (`snapshots.rs`): a large state is not encoded again every
            // `snapshot_period` entries.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: self.log_kept_after_snapshot,
            install_snapshot_timeout: 10_000,
            // 32 entries of at most BATCH_BYTES_MAX (or one client message of 4 MiB) each.
            max_payload_entries: 32,
            enable_pre_vote: Some(true),
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| StartError::Config(e.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Open(#[from] purser_storage::store::OpenError),
    #[error("storage: {0}")]
    Storage(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("raft: {0}")]
    Raft(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NodeConfig {
        let listen = SocketAddr::from(([127, 0, 0, 1], 7700));
        NodeConfig::new(1, PathBuf::from("data"), listen, "127.0.0.1:7600".into())
    }

    #[test]
    fn depths_and_entries_in_flight_outside_their_range_are_refused() {
        assert!(config().raft_config().is_ok(), "the defaults start");
        for (depth, in_flight, refused) in [
            (0, 1, Some("the replication depth must be 1..=64, not 0")),
            (65, 1, Some("the replication depth must be 1..=64, not 65")),
            (1, 0, Some("the entries in flight must be 1..=16, not 0")),
            (64, 17, Some("the entries in flight must be 1..=16, not 17")),
            (64, 16, None),
        ] {
            let mut c = config();
            c.replication_depth = depth;
            c.entries_in_flight = in_flight;
            match (c.raft_config(), refused) {
                (Ok(_), None) => {}
                (Err(e), Some(why)) => assert!(e.to_string().contains(why), "{e}"),
                (answer, expected) => {
                    panic!("{depth}/{in_flight}: {answer:?}, expected {expected:?}")
                }
            }
        }
    }
}
