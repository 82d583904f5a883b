//! openraft's state machine: purser-core's `State` in memory, made durable by the Raft log
//! plus snapshots kept in RocksDB. On start the newest snapshot is restored and openraft
//! re-applies the committed log after it.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use purser_core::State;
use rocksdb::{WriteOptions, DB};
use serde::{Deserialize, Serialize};

use super::{decode, encode, rocks, CF_SM};
use crate::metrics::Metrics;
use crate::types::{
    Batch, BatchResponse, LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig,
};

const SNAPSHOT: &[u8] = b"snapshot";

/// A snapshot at rest and on the wire: Raft's metadata and the state machine's own encoding
/// (which carries its own format version and checksum).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredSnapshot {
    pub meta: SnapshotMeta,
    pub state: Vec<u8>,
}

pub(crate) struct Applied {
    pub state: State,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

/// Cloned into snapshot builders and read paths; every clone sees the same state.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Mutex<Applied>>,
    db: Arc<DB>,
    metrics: Arc<Metrics>,
}

impl StateMachineStore {
    /// Loads the newest snapshot, if any. A snapshot that fails its checksum or its invariants
    /// stops the node with an error rather than serving wrong data.
    pub fn open(db: Arc<DB>, metrics: Arc<Metrics>) -> io::Result<Self> {
        let cf = db.cf_handle(CF_SM).expect("column family exists");
        let applied = match db.get_cf(cf, SNAPSHOT).map_err(rocks)? {
            None => Applied {
                state: State::new(),
                last_applied: None,
                membership: StoredMembership::default(),
            },
            Some(bytes) => {
                let stored: StoredSnapshot = decode(&bytes)?;
                let state = State::restore(&stored.state)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                Applied {
                    state,
                    last_applied: stored.meta.last_log_id,
                    membership: stored.meta.last_membership,
                }
            }
        };
        Ok(StateMachineStore {
            inner: Arc::new(Mutex::new(applied)),
            db,
            metrics,
        })
    }

    /// Runs a read-only function on the applied state.
    pub fn read<T>(&self, f: impl FnOnce(&State, Option<LogId>) -> T) -> T {
        let applied = self.inner.lock().expect("state machine lock");
        f(&applied.state, applied.last_applied)
    }

    fn persist(&self, stored: &StoredSnapshot) -> io::Result<()> {
        let cf = self.db.cf_handle(CF_SM).expect("column family exists");
        let mut write = WriteOptions::default();
        write.set_sync(true);
        self.db
            .put_cf_opt(cf, SNAPSHOT, encode(stored)?, &write)
            .map_err(rocks)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        // Encoding holds the lock (about 0.16 s per million nodes): apply waits that long.
        let stored = {
            let applied = self.inner.lock().expect("state machine lock");
            StoredSnapshot {
                meta: SnapshotMeta {
                    last_log_id: applied.last_applied,
                    last_membership: applied.membership.clone(),
                },
                state: applied.state.snapshot(),
            }
        };
        self.persist(&stored)?;
        let data = encode(&stored)?;
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: SnapshotData::new(data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let applied = self.inner.lock().expect("state machine lock");
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let started = Instant::now();
            let response = {
                let mut applied = self.inner.lock().expect("state machine lock");
                applied.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => BatchResponse {
                        results: Vec::new(),
                    },
                    EntryPayload::Normal(Batch { at_ms, commands }) => BatchResponse {
                        results: commands
                            .into_iter()
                            .map(|c| applied.state.apply(at_ms, c))
                            .collect(),
                    },
                    EntryPayload::Membership(membership) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                        BatchResponse {
                            results: Vec::new(),
                        }
                    }
                }
            };
            self.metrics
                .apply_entry_us
                .record_duration(started.elapsed());
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let stored: StoredSnapshot = decode(snapshot.get_ref())?;
        let state = State::restore(&stored.state)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            state: stored.state,
        };
        self.persist(&stored)?;
        let mut applied = self.inner.lock().expect("state machine lock");
        *applied = Applied {
            state,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let cf = self.db.cf_handle(CF_SM).expect("column family exists");
        match self.db.get_cf(cf, SNAPSHOT).map_err(rocks)? {
            None => Ok(None),
            Some(bytes) => {
                let stored: StoredSnapshot = decode(&bytes)?;
                Ok(Some(Snapshot {
                    meta: stored.meta,
                    snapshot: SnapshotData::new(bytes),
                }))
            }
        }
    }
}
