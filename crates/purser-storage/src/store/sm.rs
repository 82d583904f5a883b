//! openraft's state machine: purser-core's `State` in memory, made durable by the Raft log
//! plus the newest snapshot, kept in a file beside RocksDB's. On start the newest snapshot is
//! restored and openraft re-applies the committed log after it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use futures_util::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use purser_core::{Event, State};
use rocksdb::{Direction, IteratorMode, DB};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::events::{EventWriter, Job, Reply};
use super::rollup::{self, RollupKey, Totals};
use super::{cf, decode, decode_prefix_from, encode, encode_into, rocks, CF_EVENTS, CF_SM};
use crate::metrics::StoreMetrics;
use crate::types::{
    Batch, BatchResponse, LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig,
};

/// Where data directories of earlier versions kept the snapshot: one RocksDB value, synced
/// into the WAL that the log's fsyncs wait on. Read when no snapshot file exists yet.
const LEGACY_SNAPSHOT: &[u8] = b"snapshot";
/// The snapshot file in the data directory, replaced whole (written beside, then renamed).
pub const SNAPSHOT_FILE: &str = "state.snapshot";

/// Events kept per member by default; older ones are deleted (once folded into the rollups)
/// when a snapshot is built. A watcher that falls further behind is told so.
pub const EVENTS_KEPT: u64 = 10_000_000;
/// The fewest events a member may be configured to keep.
pub const EVENTS_KEPT_MIN: u64 = 1_000;

/// A snapshot at rest and on the wire: Raft's metadata, the state machine's own encoding
/// (which carries its own format version and checksum), and the index the next event gets.
/// The metadata comes first: serving a snapshot decodes it alone.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredSnapshot {
    pub meta: SnapshotMeta,
    pub state: Vec<u8>,
    pub next_event: u64,
    /// The rollups folded up to `rollup_cursor` (≥ `next_event`), so that a member joining
    /// through this snapshot reports exactly what the others do.
    pub rollups: Vec<(RollupKey, Totals)>,
    pub rollup_cursor: u64,
    /// FNV-1a over the encoding of `next_event`, `rollups` and `rollup_cursor` (the state
    /// carries its own checksum): a damaged snapshot is refused, never served.
    pub checksum: u64,
}

impl StoredSnapshot {
    fn extras_checksum(&self) -> io::Result<u64> {
        let bytes = encode(&(self.next_event, &self.rollups, self.rollup_cursor))?;
        Ok(bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        }))
    }

    fn seal(mut self) -> io::Result<Self> {
        self.checksum = self.extras_checksum()?;
        Ok(self)
    }

    /// Decodes a stored or received snapshot and verifies the checksum of its extras.
    pub fn decode_checked(bytes: &[u8]) -> io::Result<Self> {
        let stored: StoredSnapshot = decode(bytes)?;
        if stored.extras_checksum()? != stored.checksum {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "snapshot checksum mismatch (event counter or rollups damaged)",
            ));
        }
        Ok(stored)
    }
}

/// One event of the stream: its index (dense, from 1, the same on every member because every
/// member applies the same log), the log entry that emitted it and that entry's timestamp.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub index: u64,
    pub log_index: u64,
    pub at_ms: u64,
    /// The token whose command emitted it (the audit trail); `None` for system commands.
    pub actor: Option<u64>,
    pub event: Event,
}

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// This member does not keep the requested event: it was pruned, or the member joined
    /// through a snapshot taken after it.
    /// `next` is the first event this member keeps after `wanted`: the oldest it keeps when
    /// retention pruned what came before, the first after a snapshot it caught up through.
    #[error("event {wanted} is not kept on this member; the next kept here is {next}")]
    NotKept { wanted: u64, next: u64 },
    #[error(transparent)]
    Io(#[from] io::Error),
}

pub(crate) struct Applied {
    pub state: State,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// The index the next event gets.
    pub next_event: u64,
}

/// Cloned into snapshot builders and read paths; every clone sees the same state.
#[derive(Clone)]
pub struct StateMachineStore {
    /// Writes what apply emits, off the state lock, and then answers the entry's client.
    /// Declared before `db`, so dropped first: its last writes still find the database.
    events: Arc<EventWriter>,
    inner: Arc<Mutex<Applied>>,
    db: Arc<DB>,
    metrics: Arc<StoreMetrics>,
    /// The index of the last event written, for watchers waiting for more.
    events_written: Arc<watch::Sender<u64>>,
    /// One fold at a time: folding reads, adds to and rewrites rollup rows.
    folding: Arc<Mutex<()>>,
    /// How many of the newest events this member keeps.
    events_kept: Arc<AtomicU64>,
    /// The snapshot file ([`SNAPSHOT_FILE`] in the data directory).
    snapshot_path: Arc<PathBuf>,
    /// The size of the newest snapshot, for the policy of when to build the next.
    snapshot_bytes: Arc<AtomicU64>,
}

impl StateMachineStore {
    /// Loads the newest snapshot, if any. A snapshot that fails its checksum or its invariants
    /// stops the node with an error rather than serving wrong data.
    pub fn open(db: Arc<DB>, metrics: Arc<StoreMetrics>) -> io::Result<Self> {
        let snapshot_path = db.path().join(SNAPSHOT_FILE);
        let applied = match read_snapshot(&db, &snapshot_path)? {
            None => Applied {
                state: State::new(),
                last_applied: None,
                membership: StoredMembership::default(),
                next_event: 1,
            },
            Some(stored) => {
                let state = State::restore(&stored.state)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                Applied {
                    state,
                    last_applied: stored.meta.last_log_id,
                    membership: stored.meta.last_membership,
                    next_event: stored.next_event,
                }
            }
        };
        let snapshot_bytes = std::fs::metadata(&snapshot_path).map_or(0, |m| m.len());
        let (events_written, _) = watch::channel(applied.next_event - 1);
        let events_written = Arc::new(events_written);
        let events = EventWriter::start(&db, Arc::clone(&events_written), Arc::clone(&metrics))?;
        Ok(StateMachineStore {
            events: Arc::new(events),
            inner: Arc::new(Mutex::new(applied)),
            db,
            metrics,
            events_written,
            folding: Arc::new(Mutex::new(())),
            events_kept: Arc::new(AtomicU64::new(EVENTS_KEPT)),
            snapshot_path: Arc::new(snapshot_path),
            snapshot_bytes: Arc::new(AtomicU64::new(snapshot_bytes)),
        })
    }

    /// The size of the newest snapshot this member built or installed, in bytes.
    pub fn snapshot_bytes(&self) -> u64 {
        self.snapshot_bytes.load(Ordering::Relaxed)
    }

    /// The applied state, locked. Poisoned only if a panic struck while it was held: apply
    /// panics on a broken invariant, mid-command, and what it leaves is not a state to serve.
    fn applied(&self) -> MutexGuard<'_, Applied> {
        match self.inner.lock() {
            Ok(applied) => applied,
            Err(_) => panic!("the state machine is unusable: apply panicked while holding it"),
        }
    }

    /// One fold at a time. The lock guards no data, so a panic that poisoned it left
    /// nothing half-done behind (each fold step is one atomic RocksDB write).
    fn fold_lock(&self) -> MutexGuard<'_, ()> {
        self.folding.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs a read-only function on the applied state.
    pub fn read<T>(&self, f: impl FnOnce(&State, Option<LogId>) -> T) -> T {
        let applied = self.applied();
        f(&applied.state, applied.last_applied)
    }

    /// Up to `max` events from index `from` on, in order and without a gap, as far as this
    /// member has applied. The answer stops short of a gap: a member that caught up through a
    /// snapshot never wrote the events of the entries the snapshot covered, and a watcher
    /// reading past its own events must be told so (the next call, from the gap, is
    /// [`EventsError::NotKept`]) rather than be handed the events after it as if complete.
    pub fn events_from(&self, from: u64, max: usize) -> Result<Vec<EventRecord>, EventsError> {
        let from = from.max(1);
        let iter = self.db.iterator_cf(
            cf(&self.db, CF_EVENTS),
            IteratorMode::From(&from.to_be_bytes(), Direction::Forward),
        );
        let mut records: Vec<EventRecord> = Vec::new();
        for item in iter.take(max) {
            let (_, value) = item.map_err(rocks)?;
            let record: EventRecord = decode(&value)?;
            let expected = records.last().map_or(from, |last| last.index + 1);
            if record.index != expected {
                if records.is_empty() {
                    return Err(EventsError::NotKept {
                        wanted: from,
                        next: record.index,
                    });
                }
                break;
            }
            records.push(record);
        }
        if records.is_empty() && from < *self.events_written.borrow() {
            return Err(EventsError::NotKept {
                wanted: from,
                next: *self.events_written.borrow() + 1,
            });
        }
        Ok(records)
    }

    /// Tests only: while the guard lives, the event writer writes nothing, so that a test can
    /// catch a reader that does not wait for it.
    #[doc(hidden)]
    pub fn hold_event_writes_for_tests(&self) -> MutexGuard<'_, ()> {
        self.events.hold()
    }

    /// Keeps the newest `count` events (at least `EVENTS_KEPT_MIN`) from the next pruning on.
    pub fn set_events_kept(&self, count: u64) {
        self.events_kept
            .store(count.max(EVENTS_KEPT_MIN), Ordering::Relaxed);
    }

    /// Folds every event written so far into the rollups (off the request path: the
    /// server calls it in the background and before a report); returns the new cursor.
    pub fn compact(&self) -> io::Result<u64> {
        let _one = self.fold_lock();
        let until = *self.events_written.borrow() + 1;
        rollup::fold(&self.db, until)
    }

    /// Rollup rows whose hour starts in `from_ms..to_ms`, after folding everything applied.
    pub fn rollups(&self, from_ms: u64, to_ms: u64) -> io::Result<Vec<(RollupKey, Totals)>> {
        self.compact()?;
        rollup::rows(&self.db, from_ms, to_ms)
    }

    /// The index of the last event this member has written; it changes as entries apply.
    pub fn events_written(&self) -> watch::Receiver<u64> {
        self.events_written.subscribe()
    }

    /// Replaces the snapshot file: written beside it and synced, then renamed over it and
    /// the directory synced, so that a crash leaves the old snapshot or the new one, whole.
    /// A file rather than a RocksDB value: a value of hundreds of megabytes went through the
    /// WAL that every log append's fsync waits on.
    /// `stored` is encoded straight into the file, so that the state (hundreds of megabytes
    /// for a large one) is never held twice in memory. Answers the file open for reading,
    /// which stays this snapshot's even once a newer one is renamed over its path.
    fn persist(&self, stored: &StoredSnapshot) -> io::Result<std::fs::File> {
        let path = self.snapshot_path.as_path();
        let partial = path.with_extension("partial");
        let size = {
            let file = SyncEvery::new(std::fs::File::create(&partial)?);
            let mut file = io::BufWriter::with_capacity(1 << 20, file);
            let size = encode_into(stored, &mut file)?;
            let file = file.into_inner().map_err(|e| e.into_error())?.file;
            file.sync_all()?;
            size as u64
        };
        // Opened before the rename: no other snapshot can have taken the path by then.
        let written = std::fs::File::open(&partial)?;
        std::fs::rename(&partial, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        // An older data directory's snapshot value is superseded (not synced: if the deletion
        // is lost, the file still wins).
        self.db
            .delete_cf(cf(&self.db, CF_SM), LEGACY_SNAPSHOT)
            .map_err(rocks)?;
        self.snapshot_bytes.store(size, Ordering::Relaxed);
        Ok(written)
    }
}

/// Makes what it wrote durable every [`SyncEvery::BYTES`]. Left to the kernel, a snapshot's
/// hundreds of megabytes stay dirty in the page cache until the final sync, and a log fsync in
/// between waits for all of them (the file system commits them together): in a soak, every
/// request slower than half a second came while a member wrote a snapshot, up to 1 s for one
/// of 650 MiB.
struct SyncEvery {
    file: std::fs::File,
    unsynced: usize,
}

impl SyncEvery {
    const BYTES: usize = 8 << 20;

    fn new(file: std::fs::File) -> Self {
        SyncEvery { file, unsynced: 0 }
    }
}

impl io::Write for SyncEvery {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = io::Write::write(&mut self.file, buf)?;
        self.unsynced += written;
        if self.unsynced >= Self::BYTES {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::Write::flush(&mut self.file)
    }
}

/// The newest snapshot, unread: the file, or an older data directory's RocksDB value.
fn open_snapshot(db: &DB, path: &Path) -> io::Result<Option<SnapshotData>> {
    match std::fs::File::open(path) {
        Ok(file) => Ok(Some(SnapshotData::File(file))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(db
            .get_cf(cf(db, CF_SM), LEGACY_SNAPSHOT)
            .map_err(rocks)?
            .map(SnapshotData::bytes)),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot open {}: {e}", path.display()),
        )),
    }
}

/// The newest snapshot's bytes: the file, or an older data directory's RocksDB value.
fn read_snapshot_bytes(db: &DB, path: &Path) -> io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            db.get_cf(cf(db, CF_SM), LEGACY_SNAPSHOT).map_err(rocks)
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

fn read_snapshot(db: &DB, path: &Path) -> io::Result<Option<StoredSnapshot>> {
    read_snapshot_bytes(db, path)?
        .map(|bytes| StoredSnapshot::decode_checked(&bytes))
        .transpose()
}

impl StateMachineStore {
    /// Deletes events older than the newest `events_kept` that are folded into the rollups
    /// (not synced: losing the deletion only keeps them a little longer).
    fn prune_events(&self, next_event: u64) -> io::Result<()> {
        let kept = self.events_kept.load(Ordering::Relaxed);
        rollup::prune_events(&self.db, next_event.saturating_sub(kept))?;
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        // Only the freeze holds the lock (time in the number of chunks of the large parts,
        // not in their size); encoding and checking the frozen copy run beside apply.
        let (frozen, meta, next_event) = {
            let applied = self.applied();
            let locked = Instant::now();
            let frozen = applied.state.freeze();
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
            };
            let next_event = applied.next_event;
            drop(applied);
            self.metrics
                .snapshot_lock_us
                .record_duration(locked.elapsed());
            (frozen, meta, next_event)
        };
        let encoding = Instant::now();
        let state = tokio::task::spawn_blocking(move || frozen.snapshot())
            .await
            .map_err(io::Error::other)?
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        self.metrics
            .snapshot_encode_us
            .record_duration(encoding.elapsed());
        // The rollups folded below must hold every event before `next_event`, and the event
        // writer may still hold the newest (by now, almost surely written).
        self.events.written_through(next_event).await?;
        // Folding, checksumming and writing hundreds of megabytes block: off the runtime's
        // workers, which answer clients and heartbeats meanwhile.
        let sm = self.clone();
        let (meta, file) = tokio::task::spawn_blocking(move || {
            let mut stored = StoredSnapshot {
                meta,
                state,
                next_event,
                rollups: Vec::new(),
                rollup_cursor: 0,
                checksum: 0,
            };
            {
                let _one = sm.fold_lock();
                rollup::fold(&sm.db, stored.next_event)?;
                (stored.rollups, stored.rollup_cursor) = rollup::export(&sm.db)?;
            }
            let stored = stored.seal()?;
            let file = sm.persist(&stored)?;
            sm.prune_events(stored.next_event)?;
            Ok::<_, io::Error>((stored.meta, file))
        })
        .await
        .map_err(io::Error::other)??;
        Ok(Snapshot {
            meta,
            snapshot: SnapshotData::File(file),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let applied = self.applied();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            self.events.failed()?;
            let started = Instant::now();
            let mut records: Vec<EventRecord> = Vec::new();
            let response = {
                let mut applied = self.applied();
                applied.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => BatchResponse {
                        results: Vec::new(),
                    },
                    EntryPayload::Normal(Batch { at_ms, commands }) => {
                        let mut results = Vec::with_capacity(commands.len());
                        for command in commands {
                            let actor = command.actor;
                            let result = applied.state.apply(at_ms, command);
                            if let Ok(done) = &result {
                                let first = applied.next_event;
                                records.extend(done.events.iter().enumerate().map(|(i, event)| {
                                    EventRecord {
                                        index: first + i as u64,
                                        log_index: entry.log_id.index,
                                        at_ms,
                                        actor,
                                        event: event.clone(),
                                    }
                                }));
                                applied.next_event += done.events.len() as u64;
                            }
                            // The core counts the events it emitted (webhook cursors start
                            // there): it must number them exactly as this store does.
                            debug_assert_eq!(
                                applied.state.events_emitted(),
                                applied.next_event - 1,
                                "event numbering diverged"
                            );
                            results.push(result);
                        }
                        BatchResponse { results }
                    }
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
            // The events are written, and the client answered, by the event writer: off the
            // lock, in order (events.rs says why a snapshot still finds them all).
            let reply = responder.map(|r| Box::new(move || r.send(response)) as Reply);
            if !records.is_empty() || reply.is_some() {
                self.events.push(Job { records, reply })?;
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
        // Decoding, checking and writing a large snapshot block: off the runtime's workers, as
        // when one is built.
        let (stored, state) = tokio::task::spawn_blocking(move || {
            // Received from the leader, so already in memory: a file here would be read whole.
            let stored = StoredSnapshot::decode_checked(&snapshot.into_bytes()?)?;
            let state = State::restore(&stored.state)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            Ok::<_, io::Error>((stored, state))
        })
        .await
        .map_err(io::Error::other)??;
        // Events of entries applied before are written first, so that the writer never moves
        // the written index back past what the snapshot sets.
        let pending = self.applied().next_event;
        self.events.written_through(pending).await?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            ..stored
        };
        let sm = self.clone();
        let next_event = tokio::task::spawn_blocking(move || {
            {
                let _one = sm.fold_lock();
                rollup::import(&sm.db, &stored.rollups, stored.rollup_cursor)?;
            }
            drop(sm.persist(&stored)?);
            Ok::<_, io::Error>(stored.next_event)
        })
        .await
        .map_err(io::Error::other)??;
        let mut applied = self.applied();
        *applied = Applied {
            state,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            next_event,
        };
        drop(applied);
        // Events before the snapshot that this member never applied stay missing here, a
        // gap after the events it did apply: `events_from` stops at the gap and a watcher
        // asking for them is told they are not kept (`EventsError::NotKept`).
        self.events_written.send_replace(next_event - 1);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let Some(mut snapshot) = open_snapshot(&self.db, &self.snapshot_path)? else {
            return Ok(None);
        };
        // The metadata leads the encoding: only it is read, then the snapshot is rewound.
        let meta: SnapshotMeta = decode_prefix_from(io::BufReader::new(&mut snapshot))?;
        io::Seek::rewind(&mut snapshot)?;
        Ok(Some(Snapshot { meta, snapshot }))
    }
}
