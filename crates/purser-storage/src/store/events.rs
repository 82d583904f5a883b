//! The event writer: one thread that writes what apply emitted to RocksDB, off the state lock
//! and off apply's path, then answers the clients whose entries emitted them.
//!
//! - **A write never holds the state.** Apply hands each entry's events over and goes on; a
//!   RocksDB write that waits (for a group commit behind a log fsync, or a memtable flush)
//!   delays answers, not apply, reads or the leader's fast paths.
//! - **An answer follows its events.** A client that saw its charge acknowledged finds the
//!   charge in a report or a watch (read-your-writes), because its answer is sent only after
//!   the entry's events are written. Jobs are written in order; answers go in the same order.
//! - **A snapshot never misses an event.** It records the `next_event` of the state it froze,
//!   and waits until every event before it is written before it folds the rollups or prunes
//!   ([`EventWriter::written_through`]).
//! - **Bounded.** At most [`QUEUED_MAX`] entries wait; apply blocks on a full queue, as it
//!   waited for each write before. Writes are not synced: the log is the durable source, and
//!   a crash re-applies the entries and writes the same events at the same indices.

use std::io;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::Instant;

use rocksdb::{WriteBatch, DB};
use tokio::sync::watch;

use super::{rocks, rollup};
use crate::metrics::StoreMetrics;
use crate::store::sm::EventRecord;

/// Entries whose events wait for the writer at most.
pub const QUEUED_MAX: usize = 4_096;
/// Entries written by one RocksDB write at most.
const JOBS_PER_WRITE_MAX: usize = 256;

pub type Reply = Box<dyn FnOnce() + Send>;

/// One applied entry: its events (maybe none) and the answer to send once they are written.
pub struct Job {
    pub records: Vec<EventRecord>,
    pub reply: Option<Reply>,
}

struct Shared {
    /// The index of the last event written; watchers wait on it.
    written: Arc<watch::Sender<u64>>,
    /// Why writing stopped, once it has: apply then fails, as it did when it wrote itself.
    failure: Mutex<Option<String>>,
    /// Taken around each write; tests hold it to keep the writer behind.
    gate: Mutex<()>,
}

pub struct EventWriter {
    queue: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl EventWriter {
    pub fn start(
        db: &Arc<DB>,
        written: Arc<watch::Sender<u64>>,
        metrics: Arc<StoreMetrics>,
    ) -> io::Result<EventWriter> {
        let (queue, jobs) = mpsc::sync_channel(QUEUED_MAX);
        let shared = Arc::new(Shared {
            written,
            failure: Mutex::new(None),
            gate: Mutex::new(()),
        });
        // A weak handle, as the log flusher's: the database closes where its owners drop it.
        let weak = Arc::downgrade(db);
        let state = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("purser-events".into())
            .spawn(move || write_loop(&weak, &jobs, &state, &metrics))?;
        Ok(EventWriter {
            queue: Some(queue),
            thread: Some(thread),
            shared,
        })
    }

    /// Queues an entry's events and answer; waits while the queue is full.
    pub fn push(&self, job: Job) -> io::Result<()> {
        self.failed()?;
        let Some(queue) = &self.queue else {
            return Err(self.stopped());
        };
        match queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job)) => queue.send(job).map_err(|_| self.stopped()),
            Err(TrySendError::Disconnected(_)) => Err(self.stopped()),
        }
    }

    /// Tests only: nothing is written while the guard lives.
    pub fn hold(&self) -> std::sync::MutexGuard<'_, ()> {
        lock(&self.shared.gate)
    }

    /// The error that stopped the writer, if one did.
    pub fn failed(&self) -> io::Result<()> {
        match &*lock(&self.shared.failure) {
            Some(why) => Err(io::Error::other(format!("writing events failed: {why}"))),
            None => Ok(()),
        }
    }

    fn stopped(&self) -> io::Error {
        self.failed()
            .err()
            .unwrap_or_else(|| io::Error::other("the event writer stopped"))
    }

    /// Waits until every event before `next_event` is written (or the writer failed).
    pub async fn written_through(&self, next_event: u64) -> io::Result<()> {
        let mut written = self.shared.written.subscribe();
        let shared = &self.shared;
        written
            .wait_for(|&w| w + 1 >= next_event || lock(&shared.failure).is_some())
            .await
            .map_err(|_| self.stopped())?;
        self.failed()
    }
}

impl Drop for EventWriter {
    /// Closes the queue and waits for the thread to write what it holds and let go of the
    /// database, so that the data directory can be opened again as soon as the store is gone.
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn write_loop(db: &Weak<DB>, jobs: &Receiver<Job>, shared: &Shared, metrics: &StoreMetrics) {
    while let Ok(first) = jobs.recv() {
        let mut taken = vec![first];
        while taken.len() < JOBS_PER_WRITE_MAX {
            match jobs.try_recv() {
                Ok(job) => taken.push(job),
                Err(_) => break,
            }
        }
        let last = taken
            .iter()
            .rev()
            .find_map(|job| job.records.last().map(|r| r.index));
        if let Some(last) = last {
            let gate = lock(&shared.gate);
            let started = Instant::now();
            let result = match db.upgrade() {
                Some(db) => write(&db, &taken),
                None => Err(io::Error::other("the store is closed")),
            };
            metrics.events_write_us.record_duration(started.elapsed());
            drop(gate);
            if let Err(e) = result {
                *lock(&shared.failure) = Some(e.to_string());
                // Wakes the waiters so that they see the failure; the next apply returns it
                // (openraft then stops this member, and logs why). The answers are dropped:
                // their clients are told the outcome is unknown.
                shared.written.send_modify(|_| {});
                return;
            }
            shared.written.send_replace(last);
        }
        for reply in taken.into_iter().filter_map(|job| job.reply) {
            reply();
        }
    }
}

fn write(db: &DB, jobs: &[Job]) -> io::Result<()> {
    let mut batch = WriteBatch::default();
    for job in jobs {
        rollup::put_events(db, &mut batch, &job.records)?;
    }
    db.write(batch).map_err(rocks)
}
