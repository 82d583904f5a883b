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

/// What the flusher thread is asked to do.
enum Flush {
    /// Make an append durable, then call back.
    Append(IOFlushed<TypeConfig>),
    /// Write the pending commit index.
    Commit,
}

#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    flusher: mpsc::Sender<Flush>,
    /// The newest commit index not yet written. The flusher writes it, once for however many
    /// commits came meanwhile, so that openraft's core never waits on a RocksDB write for it.
    committed: Arc<Mutex<Option<Option<LogId>>>>,
    /// The newest entries, shared by every clone (the readers of replication and apply).
    recent: Arc<Mutex<Recent>>,
    /// Encoded bytes appended since the store opened.
    appended_bytes: Arc<AtomicU64>,
}

impl LogStore {
    /// Starts the flusher thread; it records each fsync in `metrics`.
    pub fn new(db: Arc<DB>, metrics: Arc<StoreMetrics>) -> io::Result<Self> {
        let (flusher, pending) = mpsc::channel::<Flush>();
        let committed: Arc<Mutex<Option<Option<LogId>>>> = Arc::default();
        // A weak handle: the database closes where its owners drop it, never late in this
        // thread (RocksDB must not be torn down while the process exits).
        let flush_db = Arc::downgrade(&db);
        let flush_committed = Arc::clone(&committed);
        std::thread::Builder::new()
            .name("purser-log-flush".into())
            .spawn(move || flush_loop(&flush_db, &pending, &flush_committed, &metrics))?;
        Ok(LogStore {
            db,
            flusher,
            committed,
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
        lock(&self.recent)
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        cf(&self.db, name)
    }

    fn flush(&self, what: Flush) -> io::Result<()> {
        self.flusher
            .send(what)
            .map_err(|_| io::Error::other("the log flusher has stopped"))
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self.db.get_cf(self.cf(CF_META), key).map_err(rocks)? {
            None => Ok(None),
            Some(bytes) => decode(&bytes).map(Some),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T, sync: bool) -> io::Result<()> {
        put_meta(&self.db, key, value, sync)
    }
}

/// A poisoned lock is used as it is: the recent entries (see `recent`) and the pending commit
/// index (one assignment) stay whole whatever a panicking holder was doing.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn put_meta<T: serde::Serialize>(db: &DB, key: &[u8], value: &T, sync: bool) -> io::Result<()> {
    let mut write = WriteOptions::default();
    write.set_sync(sync);
    db.put_cf_opt(cf(db, CF_META), key, encode(value)?, &write)
        .map_err(rocks)
}

/// One fsync for every append queued meanwhile, and one write of the newest commit index for
/// every commit; callbacks complete in the order they came.
fn flush_loop(
    db: &std::sync::Weak<DB>,
    pending: &mpsc::Receiver<Flush>,
    committed: &Mutex<Option<Option<LogId>>>,
    metrics: &StoreMetrics,
) {
    // A failed write of the commit index fails every append after it: the disk is broken.
    let mut failed: Option<String> = None;
    while let Ok(first) = pending.recv() {
        let mut callbacks = Vec::new();
        for what in std::iter::once(first).chain(std::iter::from_fn(|| pending.try_recv().ok())) {
            if let Flush::Append(callback) = what {
                callbacks.push(callback);
            }
        }
        let Some(db) = db.upgrade() else {
            for callback in callbacks {
                callback.io_completed(Err(io::Error::other("the log store is closed")));
            }
            continue;
        };
        // Not synced: losing it only means re-learning the commit index from the leader.
        // Written before the fsync below, which then covers it too. Cleared only once written,
        // so that `read_committed` never answers an older index than one already saved.
        let slot = || lock(committed);
        loop {
            let Some(newest) = *slot() else { break };
            if let Err(e) = put_meta(&db, COMMITTED, &newest, false) {
                failed.get_or_insert_with(|| format!("writing the commit index: {e}"));
            }
            let mut pending = slot();
            if *pending == Some(newest) {
                *pending = None;
                break;
            }
        }
        if callbacks.is_empty() {
            continue;
        }
        let started = Instant::now();
        let result = match &failed {
            Some(e) => Err(e.clone()),
            None => db.flush_wal(true).map_err(|e| e.to_string()),
        };
        drop(db);
        metrics.log_fsync_us.record_duration(started.elapsed());
        metrics.appends_per_fsync.record(callbacks.len() as u64);
        for callback in callbacks {
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
        // Handed to the flusher: a commit costs openraft's core no RocksDB write, and commits
        // that come faster than the flusher writes are written once, the newest.
        let previous = lock(&self.committed).replace(committed);
        if previous.is_none() {
            self.flush(Flush::Commit)?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        let pending = *lock(&self.committed);
        if let Some(pending) = pending {
            return Ok(pending);
        }
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
        self.flush(Flush::Append(callback))
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
