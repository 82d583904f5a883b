//! The request-id table: what each recent request did, so that a retry is answered with its
//! first outcome instead of being applied again (I4), in bounded memory and bounded work.
//!
//! - **Expiry is incremental.** Keys are queued in the order they die, one bucket per second
//!   of their forget time; every apply drops at most [`EXPIRE_PER_APPLY`] dead keys from the
//!   front, a `Tick` at most [`EXPIRE_PER_TICK`]. No apply ever walks the table. A dead key
//!   that waits in the queue is invisible: lookups and snapshots judge liveness themselves.
//! - **A retention raise** (a rare operator command) extends every live id in one pass; the
//!   keys stay in their buckets, and expiry moves a key it finds extended to the bucket of its
//!   new forget time instead of dropping it.
//! - **Each root has a share.** A root may always hold [`limits::REMEMBERED_PER_ROOT_MAX`]
//!   ids while the cluster holds fewer than [`limits::REMEMBERED_REQUESTS_MAX`], and more only
//!   while a quarter of the table is free ([`limits::within_share`]), so one tenant's burst
//!   cannot refuse everyone else's requests, and a lone tenant is not refused at a quarter.
//!
//! Memory: about 100 bytes per id (the map entry, its share of the hash table's spare room,
//! and its place in the queue), measured by `examples/apply_bench.rs`; see
//! `docs/architecture.md`.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::cow::CowMap;
use crate::hash::FxHashMap;
use crate::outcome::Recorded;
use crate::state::limits;

/// Dead ids an ordinary apply removes at most: more than the one id it may add, so the queue
/// drains faster than it fills.
pub const EXPIRE_PER_APPLY: usize = 16;
/// Dead ids a `Tick` removes at most: an idle cluster gives back the memory of a burst.
pub const EXPIRE_PER_TICK: usize = 100_000;
/// Dead ids a request may remove to make room when the table or its root's share is full.
const EXPIRE_TO_ADMIT: usize = 1_024;
const BUCKET_MS: u64 = 1_000;

/// A request key as two words: a `u128` is 16-byte aligned, which pads every map entry from
/// 72 to 80 bytes; two `u64`s are not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key([u64; 2]);

impl From<u128> for Key {
    fn from(key: u128) -> Key {
        Key([key as u64, (key >> 64) as u64])
    }
}

impl From<Key> for u128 {
    fn from(Key([low, high]): Key) -> u128 {
        u128::from(low) | (u128::from(high) << 64)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DedupEntry {
    pub payload: u64,
    pub forget_at_ms: u64,
    /// The root whose share the id counts against (0: a request that names no root).
    pub root: u64,
    pub recorded: Recorded,
}

/// Keys whose forget time falls in one second (or later, after a retention raise); the queue
/// is in order of seconds.
#[derive(Clone, Debug, Default)]
struct Bucket {
    second: u64,
    keys: Vec<Key>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Dedup {
    map: CowMap<Key, DedupEntry>,
    queue: VecDeque<Bucket>,
    per_root: FxHashMap<u64, u64>,
    /// Tests only: smaller caps than [`limits`], `(cluster, per root)`.
    caps: Option<(usize, usize)>,
}

impl Dedup {
    fn is_live(entry: &DedupEntry, now_ms: u64) -> bool {
        entry.forget_at_ms >= now_ms
    }

    /// The live entry of `key`.
    pub fn get(&self, key: u128, now_ms: u64) -> Option<&DedupEntry> {
        self.map
            .get(&Key::from(key))
            .filter(|e| Dedup::is_live(e, now_ms))
    }

    /// Ids held, live or dead and waiting in the queue (what the memory is spent on).
    pub fn held(&self) -> usize {
        self.map.len()
    }

    /// Whether a new id of `root` fits, after removing up to a bounded number of dead ones;
    /// the refusal names the limit that is full.
    pub fn make_room(&mut self, now_ms: u64, root: u64) -> Result<(), String> {
        let (total_max, root_max) = self.caps();
        let fits = |d: &Dedup| {
            let own = d.per_root.get(&root).copied().unwrap_or(0);
            limits::within_share(own, root_max as u64, d.map.len() as u64, total_max as u64)
        };
        if !fits(self) {
            self.expire(now_ms, EXPIRE_TO_ADMIT);
        }
        if self.map.len() >= total_max {
            return Err(format!(
                "{total_max} request ids are remembered, the most the cluster keeps: lower the request rate or the retention"
            ));
        }
        if !fits(self) {
            let own = self.per_root.get(&root).copied().unwrap_or(0);
            return Err(format!(
                "root {root} has {own} request ids remembered, past its share of {root_max} while the cluster's room is low: lower its request rate or the retention"
            ));
        }
        Ok(())
    }

    /// `(cluster, per root)`: how many ids the table holds at most.
    pub fn caps(&self) -> (usize, usize) {
        self.caps.unwrap_or((
            limits::REMEMBERED_REQUESTS_MAX,
            limits::REMEMBERED_PER_ROOT_MAX,
        ))
    }

    /// Tests only: smaller caps, so that a test can fill the table.
    pub fn set_caps(&mut self, total: usize, per_root: usize) {
        self.caps = Some((total, per_root));
    }

    /// Remembers `entry` under `key` (replacing a dead entry of the same key).
    pub fn insert(&mut self, key: u128, entry: DedupEntry) {
        let key = Key::from(key);
        *self.per_root.entry(entry.root).or_default() += 1;
        self.enqueue(key, entry.forget_at_ms);
        if let Some(old) = self.map.insert(key, entry) {
            self.uncount(old.root);
        }
    }

    /// Queues `key` in the bucket of `forget_at_ms`, keeping the buckets in order.
    fn enqueue(&mut self, key: Key, forget_at_ms: u64) {
        let second = forget_at_ms / BUCKET_MS;
        match self.queue.back_mut() {
            Some(back) if back.second == second => back.keys.push(key),
            Some(back) if back.second > second => {
                // The retention was lowered: this id dies before the newest ones.
                let at = self.queue.partition_point(|b| b.second < second);
                match self.queue.get_mut(at) {
                    Some(bucket) if bucket.second == second => bucket.keys.push(key),
                    _ => self.queue.insert(
                        at,
                        Bucket {
                            second,
                            keys: vec![key],
                        },
                    ),
                }
            }
            _ => {
                // The last second's count is the best guess of this one's: a bucket grown by
                // doubling would waste a third of its room on average.
                let mut keys = Vec::with_capacity(self.queue.back().map_or(1, |b| b.keys.len()));
                keys.push(key);
                self.queue.push_back(Bucket { second, keys });
            }
        }
    }

    fn uncount(&mut self, root: u64) {
        if let Some(count) = self.per_root.get_mut(&root) {
            *count -= 1;
            if *count == 0 {
                self.per_root.remove(&root);
            }
        }
    }

    /// Removes up to `budget` dead ids from the front of the queue.
    pub fn expire(&mut self, now_ms: u64, mut budget: usize) {
        while budget > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            // A key is queued in the second of its forget time (or, extended since, an
            // earlier one): once the bucket's last millisecond is past, none is alive but
            // those a raise extended.
            let second = front.second;
            if (second + 1) * BUCKET_MS > now_ms {
                return;
            }
            let Some(key) = front.keys.pop() else {
                self.queue.pop_front();
                continue;
            };
            budget -= 1;
            match self.map.get(&key).map(|e| e.forget_at_ms) {
                Some(at) if at < now_ms => {
                    if let Some(old) = self.map.remove(&key) {
                        self.uncount(old.root);
                    }
                }
                // Extended by a retention raise: it waits in the bucket of its new time.
                Some(at) if at / BUCKET_MS > second => self.enqueue(key, at),
                // Recorded again after it died: its new record sits in a later bucket.
                _ => {}
            }
        }
    }

    /// The retention grew by `raise_ms` at `now_ms`: live ids live that much longer, dead ones
    /// stay dead. One pass over the table, for a rare operator command.
    pub fn extend(&mut self, now_ms: u64, raise_ms: u64) {
        for entry in self.map.values_mut().filter(|e| e.forget_at_ms >= now_ms) {
            entry.forget_at_ms += raise_ms;
        }
    }

    /// The table as it is now, for a snapshot: shares its shards until they are written to.
    pub fn freeze(&self) -> FrozenDedup {
        FrozenDedup(self.map.clone())
    }

    /// A table of `live` ids, as [`FrozenDedup::live`] lists them.
    pub fn restore(live: Vec<(u128, DedupEntry)>) -> Dedup {
        let mut dedup = Dedup::default();
        for (key, entry) in live {
            dedup.insert(key, entry);
        }
        dedup
    }
}

/// The request-id table frozen for a snapshot ([`Dedup::freeze`]).
#[derive(Clone, Debug)]
pub(crate) struct FrozenDedup(CowMap<Key, DedupEntry>);

impl FrozenDedup {
    /// The ids live at `now_ms`, in canonical order (a snapshot's).
    pub fn live(&self, now_ms: u64) -> Vec<(u128, &DedupEntry)> {
        let mut live: Vec<(u128, &DedupEntry)> = self
            .0
            .iter()
            .filter(|(_, e)| Dedup::is_live(e, now_ms))
            .map(|(k, e)| (u128::from(*k), e))
            .collect();
        live.sort_unstable_by_key(|(k, e)| (e.forget_at_ms, *k));
        live
    }
}
