//! Durable storage for one node: a RocksDB database with four column families — the Raft log,
//! Raft metadata (vote, committed id, last purged id), the state machine's snapshot, the
//! event stream that apply emits (dense indices, the same on every member) and the hourly
//! rollups that usage events are folded into.
//!
//! Durability: log appends are written to RocksDB's WAL and then fsynced by one flusher
//! thread, which acknowledges flushes to openraft strictly in order and shares one fsync among
//! every append that arrived meanwhile (storage-level group commit). Votes are fsynced before
//! `save_vote` returns. RocksDB checksums every WAL record and SST block; reads verify them,
//! `paranoid_checks` makes a damaged file refuse to open instead of being served, and WAL
//! recovery tolerates only a torn last record (never acknowledged), not damage before it.

mod events;
mod log;
mod recent;
pub mod rollup;
mod sm;

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};

pub use log::LogStore;
pub use sm::{
    EventRecord, EventsError, StateMachineStore, StoredSnapshot, EVENTS_KEPT, EVENTS_KEPT_MIN,
    SNAPSHOT_FILE,
};

pub(crate) const CF_LOG: &str = "log";
pub(crate) const CF_META: &str = "meta";
pub(crate) const CF_SM: &str = "sm";
pub(crate) const CF_EVENTS: &str = "events";
pub(crate) const CF_ROLLUPS: &str = "rollups";

/// Written at creation and checked on every open, before anything else is read.
const FORMAT_KEY: &[u8] = b"format";
/// v2: the `events` and `rollups` column families; event counter and rollups in snapshots.
const FORMAT: &[u8] = b"purser-store-v2";

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the data directory {path}: {source}")]
    Rocks {
        path: String,
        source: rocksdb::Error,
    },
    #[error("the data directory {path} holds format {found:?}, this build reads {expected:?}")]
    Format {
        path: String,
        found: String,
        expected: String,
    },
    #[error("the data directory {path} is damaged: {why}")]
    Corrupt { path: String, why: String },
}

pub use rollup::{RollupKey, Totals};

/// WAL bytes kept at most before the oldest file's column families are flushed.
const WAL_TOTAL_MAX: u64 = 256 << 20;

/// Opens (or creates) the node's database.
pub fn open_db(path: &Path) -> Result<Arc<DB>, OpenError> {
    let shown = path.display().to_string();
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    options.set_paranoid_checks(true);
    // The default (point in time) stops replaying the WAL at its first bad record and opens
    // anyway: a flipped bit in the middle of the log silently dropped every entry after it,
    // acknowledged ones included (found by the chaos harness's corruption nemesis). Raft
    // must never forget what it acknowledged, so only an incomplete last record (a write
    // torn by a crash, never acknowledged: appends are fsynced before they are) is
    // tolerated; any other damage refuses to open and the member rejoins from its peers.
    options.set_wal_recovery_mode(rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords);
    options.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // Raft needs the WAL: never let RocksDB recycle or skip it.
    options.set_manual_wal_flush(false);
    // A WAL file is deleted only once every column family's writes in it are flushed, and the
    // small ones (`meta`: the commit index on every commit) rarely fill a memtable: by
    // default WAL files add up to four times every memtable's budget (2.5 GB here) before
    // RocksDB flushes them. A 30-minute soak's data directories were mostly WAL. Past this
    // total the column families holding the oldest file are flushed and the file deleted.
    options.set_max_total_wal_size(WAL_TOTAL_MAX);
    let cfs = [CF_LOG, CF_META, CF_SM, CF_EVENTS, CF_ROLLUPS].map(|name| {
        let mut cf = Options::default();
        cf.set_compression_type(rocksdb::DBCompressionType::Lz4);
        ColumnFamilyDescriptor::new(name, cf)
    });
    let db = DB::open_cf_descriptors(&options, path, cfs).map_err(|source| OpenError::Rocks {
        path: shown.clone(),
        source,
    })?;
    let meta = cf(&db, CF_META);
    match db
        .get_cf(meta, FORMAT_KEY)
        .map_err(|source| OpenError::Rocks {
            path: shown.clone(),
            source,
        })? {
        None => {
            let mut write = rocksdb::WriteOptions::default();
            write.set_sync(true);
            db.put_cf_opt(meta, FORMAT_KEY, FORMAT, &write)
                .map_err(|source| OpenError::Rocks {
                    path: shown.clone(),
                    source,
                })?;
        }
        Some(found) if found == FORMAT => {}
        Some(found) => {
            return Err(OpenError::Format {
                path: shown,
                found: String::from_utf8_lossy(&found).into_owned(),
                expected: String::from_utf8_lossy(FORMAT).into_owned(),
            })
        }
    }
    Ok(Arc::new(db))
}

pub fn encode<T: serde::Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(std::io::Error::other)
}

/// Encodes `value` straight into `out` (a file, say): no copy of it in memory. The bytes
/// written, the same [`encode`] gives.
pub fn encode_into<T: serde::Serialize, W: std::io::Write>(
    value: &T,
    out: &mut W,
) -> std::io::Result<usize> {
    bincode::serde::encode_into_std_write(value, out, bincode::config::standard())
        .map_err(std::io::Error::other)
}

/// Decodes the `T` that `reader` starts with (a buffered reader may read past it).
pub fn decode_prefix_from<T: serde::de::DeserializeOwned>(
    mut reader: impl std::io::Read,
) -> std::io::Result<T> {
    bincode::serde::decode_from_std_read(&mut reader, bincode::config::standard())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> std::io::Result<T> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    if used != bytes.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "trailing bytes in a stored record",
        ));
    }
    Ok(value)
}

/// A column family of a database [`open_db`] opened: each of them is created there.
pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    let Some(handle) = db.cf_handle(name) else {
        unreachable!("column family {name} is created whenever the database is opened")
    };
    handle
}

pub(crate) fn rocks(e: rocksdb::Error) -> std::io::Error {
    std::io::Error::other(e)
}
