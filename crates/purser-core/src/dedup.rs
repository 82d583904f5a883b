//! The request-id table: what each recent request did, so that a retry is answered with its
//! first outcome instead of being applied again (I4), in bounded memory and bounded work.
//!
//! - **Ids are kept in the order they were recorded**, in an arena of fixed-size chunks behind
//!   `Arc`s, with an index from key to place beside it. A snapshot freezes the arena by
//!   copying its chunk pointers; apply then writes only to the newest chunk and drops the
//!   oldest, so the first apply after a freeze copies at most one chunk. The index is never
//!   part of a snapshot, so it is written in place and never copied.
//! - **Expiry is incremental.** Every id is recorded with the same retention, so the arena is
//!   in order of forget time: every apply drops at most [`EXPIRE_PER_APPLY`] dead ids from its
//!   front, a `Tick` at most [`EXPIRE_PER_TICK`]. No apply ever walks the table. A dead id that
//!   waits is invisible to lookups.
//! - **A retention change** (a rare operator command) moves the forget time of every id by the
//!   change in one pass, which keeps the arena in order of forget time: a raise extends the
//!   live ids, a cut shortens them all (a retry is accepted only within the retention of its
//!   first sending, so an id need not outlive the new retention).
//! - **Each root has a share.** A root may always hold [`limits::REMEMBERED_PER_ROOT_MAX`]
//!   ids while the cluster holds fewer than [`limits::REMEMBERED_REQUESTS_MAX`], and more only
//!   while a quarter of the table is free ([`limits::within_share`]), so one tenant's burst
//!   cannot refuse everyone else's requests, and a lone tenant is not refused at a quarter.
//! - **A snapshot holds the arena as it is**, dead ids still waiting included, so a restored
//!   replica holds exactly what the others hold and counts the same.
//!
//! Memory per id: the arena's 72 bytes and the index's 8-byte place with its control byte, in
//! tables between 7/16 and 7/8 full: 102 bytes measured by `examples/apply_bench.rs` (the
//! sharded map before it: 223); see `docs/architecture.md`.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize, Serializer};

use crate::hash::{FxBuild, FxHashMap};
use crate::outcome::Recorded;
use crate::state::limits;

/// Dead ids an ordinary apply removes at most: more than the one id it may add, so the arena
/// drains faster than it fills.
pub const EXPIRE_PER_APPLY: usize = 16;
/// Dead ids a `Tick` removes at most: an idle cluster gives back the memory of a burst.
pub const EXPIRE_PER_TICK: usize = 100_000;
/// Dead ids a request may remove to make room when the table or its root's share is full.
const EXPIRE_TO_ADMIT: usize = 1_024;
/// Ids per arena chunk: what the first write after a freeze copies (72 KiB).
const CHUNK: usize = 1_024;
/// Shards of the index, each its own hash table, so that a table that grows rehashes one
/// shard (32,000 places when the table is full), never all of them in one apply.
const INDEX_SHARDS: usize = 1_024;

/// A request key as two words: a `u128` is 16-byte aligned, which would pad every arena entry
/// from 72 to 80 bytes; two `u64`s are not.
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

impl Key {
    fn hash(&self) -> u64 {
        FxBuild::default().hash_one(self)
    }

    /// The index shard, from bits the shard's own table does not use: hashbrown takes its
    /// bucket from the low bits and its control byte from the top seven.
    fn shard(hash: u64) -> usize {
        (hash >> 32) as usize % INDEX_SHARDS
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

/// Ids in the order they were recorded, each at a sequence number that never changes.
#[derive(Clone, Debug, Default)]
struct Arena {
    chunks: VecDeque<Arc<Vec<(Key, DedupEntry)>>>,
    /// The sequence number of the first entry of the first chunk.
    base: u64,
    /// The sequence number of the oldest entry held (those before it in its chunk are gone).
    front: u64,
    /// The sequence number the next entry gets.
    next: u64,
}

impl Arena {
    fn len(&self) -> usize {
        (self.next - self.front) as usize
    }

    fn get(&self, seq: u64) -> Option<&(Key, DedupEntry)> {
        if seq < self.front || seq >= self.next {
            return None;
        }
        let at = (seq - self.base) as usize;
        self.chunks.get(at / CHUNK)?.get(at % CHUNK)
    }

    fn front(&self) -> Option<&(Key, DedupEntry)> {
        self.get(self.front)
    }

    fn push(&mut self, key: Key, entry: DedupEntry) -> u64 {
        match self.chunks.back_mut() {
            Some(last) if last.len() < CHUNK => match Arc::get_mut(last) {
                Some(chunk) => chunk.push((key, entry)),
                None => {
                    // Shared with a frozen copy: the one copy this chunk ever costs.
                    let mut chunk = Vec::with_capacity(CHUNK);
                    chunk.extend_from_slice(last);
                    chunk.push((key, entry));
                    *last = Arc::new(chunk);
                }
            },
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push((key, entry));
                self.chunks.push_back(Arc::new(chunk));
            }
        }
        self.next += 1;
        self.next - 1
    }

    /// Forgets the oldest entry; the chunk goes once all of its entries have.
    fn pop_front(&mut self) {
        if self.front == self.next {
            return;
        }
        self.front += 1;
        if self.front - self.base == CHUNK as u64 || self.front == self.next {
            // A chunk is dropped whole; an emptied arena starts its next chunk afresh.
            if self.front == self.next {
                self.chunks.clear();
            } else {
                self.chunks.pop_front();
            }
            self.base = self.front;
        }
    }

    /// The held entries, oldest first.
    fn iter(&self) -> impl Iterator<Item = &(Key, DedupEntry)> + '_ {
        let skip = (self.front - self.base) as usize;
        self.chunks.iter().flat_map(|c| c.iter()).skip(skip)
    }

    /// The held entries, mutably: copies every chunk a frozen copy still shares.
    fn iter_mut(&mut self) -> impl Iterator<Item = &mut (Key, DedupEntry)> + '_ {
        let skip = (self.front - self.base) as usize;
        self.chunks
            .iter_mut()
            .flat_map(|c| Arc::make_mut(c).iter_mut())
            .skip(skip)
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Dedup {
    arena: Arena,
    /// Each key's place in the arena: the newest record of the key, the one lookups see.
    index: Vec<HashTable<u64>>,
    per_root: FxHashMap<u64, u64>,
    /// Tests only: smaller caps than [`limits`], `(cluster, per root)`.
    caps: Option<(usize, usize)>,
}

impl Default for Dedup {
    fn default() -> Self {
        Dedup {
            arena: Arena::default(),
            // Empty tables allocate nothing.
            index: (0..INDEX_SHARDS).map(|_| HashTable::new()).collect(),
            per_root: FxHashMap::default(),
            caps: None,
        }
    }
}

impl Dedup {
    fn is_live(entry: &DedupEntry, now_ms: u64) -> bool {
        entry.forget_at_ms >= now_ms
    }

    /// The place of the newest record of `key`.
    fn find(&self, key: Key, hash: u64) -> Option<u64> {
        let arena = &self.arena;
        self.index[Key::shard(hash)]
            .find(hash, |&seq| arena.get(seq).is_some_and(|(k, _)| *k == key))
            .copied()
    }

    /// The live entry of `key`.
    pub fn get(&self, key: u128, now_ms: u64) -> Option<&DedupEntry> {
        let key = Key::from(key);
        let seq = self.find(key, key.hash())?;
        self.arena
            .get(seq)
            .map(|(_, e)| e)
            .filter(|e| Dedup::is_live(e, now_ms))
    }

    /// Ids held, live or dead and waiting to be dropped (what the memory is spent on).
    pub fn held(&self) -> usize {
        self.arena.len()
    }

    /// Whether a new id of `root` fits, after removing up to a bounded number of dead ones;
    /// the refusal names the limit that is full.
    pub fn make_room(&mut self, now_ms: u64, root: u64) -> Result<(), String> {
        let (total_max, root_max) = self.caps();
        let fits = |d: &Dedup| {
            let own = d.per_root.get(&root).copied().unwrap_or(0);
            limits::within_share(own, root_max as u64, d.held() as u64, total_max as u64)
        };
        if !fits(self) {
            self.expire(now_ms, EXPIRE_TO_ADMIT);
        }
        if self.held() >= total_max {
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

    /// Remembers `entry` under `key`. A dead record of the same key stays in the arena until
    /// its turn to be dropped, and counts until then.
    pub fn insert(&mut self, key: u128, entry: DedupEntry) {
        let key = Key::from(key);
        let hash = key.hash();
        *self.per_root.entry(entry.root).or_default() += 1;
        let seq = self.arena.push(key, entry);
        let arena = &self.arena;
        let shard = &mut self.index[Key::shard(hash)];
        match shard.find_mut(hash, |&s| arena.get(s).is_some_and(|(k, _)| *k == key)) {
            Some(place) => *place = seq,
            None => {
                shard.insert_unique(hash, seq, |&s| arena.get(s).map_or(0, |(k, _)| k.hash()));
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

    /// Removes up to `budget` dead ids from the front of the arena.
    pub fn expire(&mut self, now_ms: u64, budget: usize) {
        for _ in 0..budget {
            let Some((key, entry)) = self.arena.front() else {
                return;
            };
            if Dedup::is_live(entry, now_ms) {
                return;
            }
            let (key, root, seq) = (*key, entry.root, self.arena.front);
            let hash = key.hash();
            // The key's place goes with it, unless a newer record of the key holds it.
            if let Ok(place) = self.index[Key::shard(hash)].find_entry(hash, |&s| s == seq) {
                place.remove();
            }
            self.uncount(root);
            self.arena.pop_front();
        }
    }

    /// The retention grew by `raise_ms` at `now_ms`: live ids live that much longer, dead ones
    /// stay dead. One pass over the table, for a rare operator command.
    pub fn extend(&mut self, now_ms: u64, raise_ms: u64) {
        for (_, entry) in self.arena.iter_mut() {
            if Dedup::is_live(entry, now_ms) {
                entry.forget_at_ms += raise_ms;
            }
        }
    }

    /// The retention shrank by `cut_ms`: every id lives that much less, as if it had been
    /// recorded under the new one. One pass over the table, for a rare operator command;
    /// every id moves by the same time, so the arena stays in order of forget time.
    pub fn shorten(&mut self, cut_ms: u64) {
        for (_, entry) in self.arena.iter_mut() {
            entry.forget_at_ms = entry.forget_at_ms.saturating_sub(cut_ms);
        }
    }

    /// The invariants expiry and lookups rely on: the arena in order of forget time, each
    /// root's count its held ids, and each key's place its newest record.
    pub fn check(&self) -> Result<(), String> {
        let mut counted: FxHashMap<u64, u64> = FxHashMap::default();
        let mut newest: FxHashMap<Key, u64> = FxHashMap::default();
        let mut last = 0;
        for (seq, (key, entry)) in (self.arena.front..).zip(self.arena.iter()) {
            if entry.forget_at_ms < last {
                return Err(format!(
                    "invariant `request ids are held in order of forget time` broken at id {seq}"
                ));
            }
            last = entry.forget_at_ms;
            *counted.entry(entry.root).or_default() += 1;
            newest.insert(*key, seq);
        }
        if counted != self.per_root {
            return Err("invariant `each root's request-id count is its held ids` broken".into());
        }
        let places: usize = self.index.iter().map(HashTable::len).sum();
        if places != newest.len()
            || newest
                .iter()
                .any(|(key, seq)| self.find(*key, key.hash()) != Some(*seq))
        {
            return Err("invariant `each request id's place is its newest record` broken".into());
        }
        Ok(())
    }

    /// The table as it is now, for a snapshot: shares the arena's chunks, and the next write
    /// copies only the newest one.
    pub fn freeze(&self) -> FrozenDedup {
        FrozenDedup(self.arena.clone())
    }

    /// A table holding `held`, oldest first, as [`FrozenDedup`] encodes it.
    pub fn restore(held: Vec<(u128, DedupEntry)>) -> Dedup {
        let mut dedup = Dedup::default();
        for (key, entry) in held {
            dedup.insert(key, entry);
        }
        dedup
    }
}

/// The request-id table frozen for a snapshot ([`Dedup::freeze`]). Encodes as the list of
/// `(key, entry)` it holds, oldest first: canonical, because every replica records the same
/// ids in the same order and drops them at the same applies.
#[derive(Clone, Debug)]
pub(crate) struct FrozenDedup(Arena);

impl Serialize for FrozenDedup {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for (key, entry) in self.0.iter() {
            seq.serialize_element(&(u128::from(*key), entry))?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(forget_at_ms: u64, root: u64) -> DedupEntry {
        DedupEntry {
            payload: forget_at_ms,
            forget_at_ms,
            root,
            recorded: Recorded::Done,
        }
    }

    fn held(arena: &Arena) -> Vec<u128> {
        arena.iter().map(|(k, _)| u128::from(*k)).collect()
    }

    /// The first writes after a freeze copy the newest chunk only, expiry copies nothing, and
    /// the frozen copy keeps exactly what it saw.
    #[test]
    fn a_freeze_shares_every_chunk_but_the_newest() {
        let mut dedup = Dedup::default();
        let ids = 10 * CHUNK as u64 + 100;
        for id in 0..ids {
            dedup.insert(id.into(), entry(1_000 + id, id % 3));
        }
        let frozen = dedup.freeze();
        for id in ids..ids + 200 {
            dedup.insert(id.into(), entry(1_000 + id, 0));
        }
        // Ids die in order: the first 2,000 are dead at 3,000.
        dedup.expire(3_000, 5_000);
        assert_eq!(dedup.held() as u64, ids + 200 - 2_000);
        let shared = dedup
            .arena
            .chunks
            .iter()
            .filter(|c| frozen.0.chunks.iter().any(|f| Arc::ptr_eq(c, f)))
            .count();
        // 11 chunks frozen; 1 dropped whole by expiry, the newest copied.
        assert_eq!(shared, 9);
        assert_eq!(held(&frozen.0), (0..ids as u128).collect::<Vec<_>>());
        assert_eq!(
            held(&dedup.arena),
            (2_000..ids as u128 + 200).collect::<Vec<_>>()
        );
        assert!(dedup.get(1_999, 0).is_none() && dedup.get(2_000, 0).is_some());
        assert_eq!(dedup.per_root.values().sum::<u64>(), dedup.held() as u64);
    }

    /// A key recorded again after it died: lookups see the newer record, and dropping the
    /// older one from the front leaves the newer one findable.
    #[test]
    fn a_key_recorded_again_keeps_its_newest_record() {
        let mut dedup = Dedup::default();
        dedup.insert(7, entry(100, 1));
        dedup.insert(8, entry(100, 1));
        assert!(dedup.get(7, 101).is_none());
        dedup.insert(7, entry(500, 2));
        assert_eq!(dedup.held(), 3);
        assert_eq!(dedup.get(7, 101).map(|e| e.root), Some(2));
        dedup.expire(101, 10);
        assert_eq!(dedup.held(), 1);
        assert_eq!(dedup.get(7, 101).map(|e| e.forget_at_ms), Some(500));
        assert!(dedup.get(8, 0).is_none());
        assert_eq!(dedup.per_root.get(&1), None);
        // Emptied and filled again: the arena starts afresh at the next sequence number.
        dedup.expire(501, 10);
        assert_eq!(dedup.held(), 0);
        dedup.insert(9, entry(900, 1));
        assert_eq!(dedup.get(9, 0).map(|e| e.forget_at_ms), Some(900));
        assert_eq!(held(&dedup.arena), vec![9]);
    }

    /// The check finds a table out of order, a wrong count and a stale place.
    #[test]
    fn the_check_finds_what_expiry_and_lookups_rely_on_broken() {
        let mut dedup = Dedup::default();
        for id in 0..3_000u128 {
            dedup.insert(id % 1_000, entry(id as u64, 1));
        }
        dedup.expire(1_500, 100);
        assert_eq!(dedup.check(), Ok(()));
        let mut unordered = dedup.clone();
        unordered.arena.iter_mut().nth(10).unwrap().1.forget_at_ms = 0;
        assert!(unordered
            .check()
            .unwrap_err()
            .contains("order of forget time"));
        let mut miscounted = dedup.clone();
        *miscounted.per_root.get_mut(&1).unwrap() += 1;
        assert!(miscounted.check().unwrap_err().contains("count"));
        let mut stale = dedup.clone();
        let hash = Key::from(5).hash();
        *stale.index[Key::shard(hash)]
            .find_mut(hash, |_| true)
            .unwrap() -= 1_000;
        assert!(stale.check().unwrap_err().contains("newest record"));
    }

    /// A restored table holds and encodes what the original held, dead ids included, and
    /// counts the same per root.
    #[test]
    fn a_restored_table_is_the_table_it_was_taken_from() {
        let mut dedup = Dedup::default();
        for id in 0..3 * CHUNK as u128 {
            dedup.insert(id % 2_000, entry(id as u64 * 10, (id % 5) as u64));
        }
        dedup.expire(5_000, 300);
        let frozen = dedup.freeze();
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&frozen, config).unwrap();
        let (list, _): (Vec<(u128, DedupEntry)>, usize) =
            bincode::serde::decode_from_slice(&bytes, config).unwrap();
        let restored = Dedup::restore(list);
        assert_eq!(restored.held(), dedup.held());
        assert_eq!(restored.per_root, dedup.per_root);
        let again = bincode::serde::encode_to_vec(restored.freeze(), config).unwrap();
        assert_eq!(again, bytes);
        for id in 0..2_000u128 {
            assert_eq!(restored.get(id, 0), dedup.get(id, 0), "key {id}");
        }
    }
}
