//! Settlement compaction: usage events folded into hourly rollups
//! (hour × node × currency × user × model × provider × credential type × tag set), off the
//! request path. Reports read rollups; once folded, events may be pruned without changing a
//! report total. The fold is a pure function of the event stream, which is the same on every
//! member, so every member's rollups are the same at the same cursor; a snapshot carries them
//! for members that join through it.

use std::collections::BTreeMap;
use std::io;

use purser_core::Event;
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};
use serde::{Deserialize, Serialize};

use super::{cf, decode, encode, rocks, EventRecord, CF_EVENTS, CF_META, CF_ROLLUPS};

/// The next event index the fold has not taken yet.
const CURSOR: &[u8] = b"rollup_cursor";
/// Events folded per step (one RocksDB write batch).
pub const FOLD_CHUNK: usize = 10_000;
pub const HOUR_MS: u64 = 3_600_000;

/// One rollup row's dimensions. Tags are kept as the request's whole (sorted) set, so that a
/// request counts once when reports do not group by tag.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RollupKey {
    pub hour_ms: u64,
    pub node: u64,
    pub currency: String,
    pub user: String,
    pub model: String,
    pub provider: String,
    pub credential_type: String,
    pub tags: Vec<(String, String)>,
}

/// What a row adds up. `market_cost` is the cost at list prices; the price book has one price
/// per model, so today it equals `cost` (see docs/architecture.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost: u64,
    pub market_cost: u64,
}

impl Totals {
    pub fn add(&mut self, other: &Totals) {
        self.requests += other.requests;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cached_input_tokens += other.cached_input_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
        self.cost += other.cost;
        self.market_cost += other.market_cost;
    }
}

/// The row a usage event adds to; `None` for every other event.
pub fn usage_row(record: &EventRecord) -> Option<(RollupKey, Totals)> {
    let Event::Usage(usage) = &record.event else {
        return None;
    };
    let attrs = &usage.attrs;
    let (model, provider) = match &usage.tokens {
        Some(t) => (t.model.clone(), t.provider.clone()),
        None => (
            attrs.model.clone().unwrap_or_default(),
            attrs.provider.clone().unwrap_or_default(),
        ),
    };
    let mut tags = attrs.tags.clone();
    tags.sort();
    let key = RollupKey {
        hour_ms: usage.at_ms - usage.at_ms % HOUR_MS,
        node: usage.node,
        currency: usage.currency.clone(),
        user: attrs.user.clone().unwrap_or_default(),
        model,
        provider,
        credential_type: attrs.credential_type.clone().unwrap_or_default(),
        tags,
    };
    let tokens = usage.tokens.as_ref();
    let totals = Totals {
        requests: 1,
        input_tokens: tokens.map_or(0, |t| t.input),
        output_tokens: tokens.map_or(0, |t| t.output),
        cached_input_tokens: tokens.map_or(0, |t| t.cached_input),
        reasoning_tokens: tokens.map_or(0, |t| t.reasoning),
        cost: usage.amount,
        market_cost: usage.amount,
    };
    Some((key, totals))
}

fn key_bytes(key: &RollupKey) -> io::Result<Vec<u8>> {
    // The hour first, big endian, so that a time range is one contiguous scan.
    let mut bytes = key.hour_ms.to_be_bytes().to_vec();
    bytes.extend(encode(key)?);
    Ok(bytes)
}

pub fn cursor(db: &DB) -> io::Result<u64> {
    let meta = cf(db, CF_META);
    Ok(match db.get_cf(meta, CURSOR).map_err(rocks)? {
        Some(bytes) => decode(&bytes)?,
        None => 1,
    })
}

/// Folds the events from the cursor up to (not including) `until`, at most `FOLD_CHUNK` per
/// write; returns the new cursor. Rows and cursor move in one atomic write, so a crash never
/// folds an event twice or skips one.
pub fn fold(db: &DB, until: u64) -> io::Result<u64> {
    let events = cf(db, CF_EVENTS);
    let rollups = cf(db, CF_ROLLUPS);
    let meta = cf(db, CF_META);
    let mut at = cursor(db)?;
    while at < until {
        let mut rows: BTreeMap<RollupKey, Totals> = BTreeMap::new();
        let mut next = at;
        let iter = db.iterator_cf(
            events,
            IteratorMode::From(&at.to_be_bytes(), Direction::Forward),
        );
        for item in iter.take(FOLD_CHUNK) {
            let (_, value) = item.map_err(rocks)?;
            let record: EventRecord = decode(&value)?;
            if record.index >= until {
                break;
            }
            if record.index != next {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "event {next} is missing while folding rollups (found {})",
                        record.index
                    ),
                ));
            }
            if let Some((key, totals)) = usage_row(&record) {
                rows.entry(key).or_default().add(&totals);
            }
            next += 1;
        }
        if next == at {
            break;
        }
        let mut batch = WriteBatch::default();
        for (key, totals) in rows {
            let bytes = key_bytes(&key)?;
            let mut sum = match db.get_cf(rollups, &bytes).map_err(rocks)? {
                Some(old) => decode::<Totals>(&old)?,
                None => Totals::default(),
            };
            sum.add(&totals);
            batch.put_cf(rollups, bytes, encode(&sum)?);
        }
        batch.put_cf(meta, CURSOR, encode(&next)?);
        db.write(batch).map_err(rocks)?;
        at = next;
    }
    Ok(at)
}

/// Every row whose hour starts in `from_ms..to_ms`.
pub fn rows(db: &DB, from_ms: u64, to_ms: u64) -> io::Result<Vec<(RollupKey, Totals)>> {
    let rollups = cf(db, CF_ROLLUPS);
    let start = from_ms - from_ms % HOUR_MS;
    let mut out = Vec::new();
    for item in db.iterator_cf(
        rollups,
        IteratorMode::From(&start.to_be_bytes(), Direction::Forward),
    ) {
        let (key, value) = item.map_err(rocks)?;
        let hour = u64::from_be_bytes(key[..8].try_into().map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, "a rollup key without its hour")
        })?);
        if hour >= to_ms {
            break;
        }
        let row: RollupKey = decode(&key[8..])?;
        out.push((row, decode(&value)?));
    }
    Ok(out)
}

/// Adds events to a write batch (the one encoding of the `events` column family).
pub fn put_events(db: &DB, batch: &mut WriteBatch, records: &[EventRecord]) -> io::Result<()> {
    let events = cf(db, CF_EVENTS);
    for record in records {
        batch.put_cf(events, record.index.to_be_bytes(), encode(record)?);
    }
    Ok(())
}

/// Deletes the events before `keep_from`, but never one the rollups have not folded yet;
/// returns the first index kept.
pub fn prune_events(db: &DB, keep_from: u64) -> io::Result<u64> {
    let keep_from = keep_from.clamp(1, cursor(db)?.max(1));
    let events = cf(db, CF_EVENTS);
    db.delete_range_cf(events, 0u64.to_be_bytes(), keep_from.to_be_bytes())
        .map_err(rocks)?;
    Ok(keep_from)
}

/// All rows and the cursor, for a snapshot.
pub fn export(db: &DB) -> io::Result<(Vec<(RollupKey, Totals)>, u64)> {
    Ok((rows(db, 0, u64::MAX)?, cursor(db)?))
}

/// Replaces every row and the cursor (a snapshot being installed).
pub fn import(db: &DB, rows: &[(RollupKey, Totals)], cursor: u64) -> io::Result<()> {
    let rollups = cf(db, CF_ROLLUPS);
    let meta = cf(db, CF_META);
    let mut batch = WriteBatch::default();
    batch.delete_range_cf(rollups, [0u8; 8].as_slice(), [0xffu8; 9].as_slice());
    for (key, totals) in rows {
        batch.put_cf(rollups, key_bytes(key)?, encode(totals)?);
    }
    batch.put_cf(meta, CURSOR, encode(&cursor)?);
    db.write(batch).map_err(rocks)
}
