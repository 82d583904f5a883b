//! openraft's log storage on RocksDB.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};

use super::recent::Recent;
use super::{cf, decode, encode, rocks, CF_LOG, CF_META};
use crate::metrics::StoreMetrics;
use crate::types::{Entry, LogId, TypeConfig, Vote};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    flusher: mpsc::Sender<IOFlushed<TypeConfig>>,
    /// The newest entries, shared by every clone (the readers of replication and apply).
    recent: Arc<Mutex<Recent>>,
    /// Encoded bytes appended since the store opened.
    appended_bytes: Arc<AtomicU64>,
}

impl LogStore {
    /// Starts the flusher thread; it records each fsync in `metrics`.
    pub fn new(db: Arc<DB>, metrics: Arc<StoreMetrics>) -> io::Result<Self> {
        let (flusher, pending) = mpsc::channel::<IOFlushed<TypeConfig>>();
        // A weak handle: the database closes where its owners drop it, never late in this
        // thread (RocksDB must not be torn down while the process exits).
        let flush_db = Arc::downgrade(&db);
        std::thread::Builder::new()
            .name("purser-log-flush".into())
            .spawn(move || flush_loop(&flush_db, &pending, &metrics))?;
        Ok(LogStore {
            db,
            flusher,
            recent: Arc::default(),
            appended_bytes: Arc::default(),
        })
    }

    /// The count of encoded bytes appended since the store opened (it only grows), shared:
    /// the member's snapshot policy weighs it against the snapshot's size.
    pub fn appended_bytes(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.appended_bytes)
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        // Only the cache: a panic that poisoned it left it a suffix of the log or empty.
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        cf(&self.db, name)
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self.db.get_cf(self.cf(CF_META), key).map_err(rocks)? {
            None => Ok(None),
            Some(bytes) => decode(&bytes).map(Some),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T, sync: bool) -> io::Result<()> {
        let mut write = WriteOptions::default();
        write.set_sync(sync);
        self.db
            .put_cf_opt(self.cf(CF_META), key, encode(value)?, &write)
            .map_err(rocks)
    }
}

/// One fsync for every append queued meanwhile; callbacks complete in the order they came.
fn flush_loop(
    db: &std::sync::Weak<DB>,
    pending: &mpsc::Receiver<IOFlushed<TypeConfig>>,
    metrics: &StoreMetrics,
) {
    while let Ok(first) = pending.recv() {
        let mut batch = vec![first];
        while let Ok(next) = pending.try_recv() {
            batch.push(next);
        }
        let started = Instant::now();
        let result = match db.upgrade() {
            Some(db) => db.flush_wal(true).map_err(|e| e.to_string()),
            None => Err("the log store is closed".to_owned()),
        };
        metrics.log_fsync_us.record_duration(started.elapsed());
        metrics.appends_per_fsync.record(batch.len() as u64);
        for callback in batch {
            callback.io_completed(result.clone().map_err(io::Error::other));
        }
    }
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn index_of(key: &[u8]) -> io::Result<u64> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "log key is not 8 bytes"))?;
    Ok(u64::from_be_bytes(bytes))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => *x + 1,
            Bound::Unbounded => 0,
        };
        if let Some(entries) = self.recent().get(start, &range) {
            return Ok(entries);
        }
        let mut entries = Vec::new();
        let from = key(start);
        for item in self.db.iterator_cf(
            self.cf(CF_LOG),
            IteratorMode::From(&from, Direction::Forward),
        ) {
            let (k, v) = item.map_err(rocks)?;
            let index = index_of(&k)?;
            if !range.contains(&index) {
                break;
            }
            let entry: Entry = decode(&v)?;
            if entry.index() != index {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("log entry stored at {index} claims index {}", entry.index()),
                ));
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.get_meta(LAST_PURGED)?;
        let last = self
            .db
            .iterator_cf(self.cf(CF_LOG), IteratorMode::End)
            .next();
        let last_log_id = match last {
            None => last_purged_log_id,
            Some(item) => {
                let (_, v) = item.map_err(rocks)?;
                let entry: Entry = decode(&v)?;
                Some(entry.log_id())
            }
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        // Synced: a vote must be durable before it is acted on, and before any entry of its term.
        self.put_meta(VOTE, vote, true)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not synced: losing it only means re-learning the commit index from the leader.
        self.put_meta(COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.get_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let mut appended = Vec::new();
        for entry in entries {
            let bytes = encode(&entry)?;
            batch.put_cf(self.cf(CF_LOG), key(entry.index()), &bytes);
            appended.push((entry, bytes.len()));
        }
        // Readable as soon as `write` returns; durable when the flusher's fsync completes.
        // Kept in memory once written, so that no reader sees an entry RocksDB does not hold.
        self.db.write(batch).map_err(rocks)?;
        let mut recent = self.recent();
        for (entry, len) in appended {
            self.appended_bytes.fetch_add(len as u64, Ordering::Relaxed);
            recent.push(entry, len);
        }
        drop(recent);
        self.flusher
            .send(callback)
            .map_err(|_| io::Error::other("the log flusher has stopped"))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index() + 1);
        let mut write = WriteOptions::default();
        write.set_sync(true);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_LOG), key(from), key(u64::MAX));
        // Forgotten first: a reader never gets an entry the log no longer holds.
        self.recent()
            .truncate_after(last_log_id.map(|id| id.index()));
        self.db.write_opt(batch, &write).map_err(rocks)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Record the purge point first: entries at or below it are ignored even if a crash
        // leaves some of them behind.
        self.put_meta(LAST_PURGED, &log_id, true)?;
        self.recent().purge_through(log_id.index());
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_LOG), key(0), key(log_id.index() + 1));
        self.db.write(batch).map_err(rocks)
    }
}
