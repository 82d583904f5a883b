//! Copy-on-write containers for the parts of the state that grow with traffic: nodes, open and
//! expired holds. (Remembered request ids, the largest part, have their own arena in
//! `dedup.rs`: their writes are all at the newest end, so a freeze can share nearly all of it.)
//!
//! Each is split into chunks behind `Arc`s. Cloning one copies the pointers only; a write
//! copies the one chunk it touches when a clone still shares it. A snapshot freezes the state
//! under the lock in time proportional to the number of chunks ([`crate::State::freeze`]) and
//! encodes the frozen copy while apply goes on; the first write to a chunk after that pays for
//! copying that chunk, at most [`CHUNK`] entries of a vector or one [`SHARDS`]th of a map.

use std::hash::{BuildHasher, Hash};
use std::ops::{Index, IndexMut};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::hash::{FxBuild, FxHashMap};

/// Entries per chunk of a [`CowVec`].
pub const CHUNK: usize = 1024;
/// Shards of a large [`CowMap`]. More shards make each copy smaller but cost apply throughput
/// (measured on the request-id table when it was a `CowMap`: 4,096 shards 17 % slower than a
/// plain map in `apply_bench`, 1,024 between 3 and 8 %).
pub const SHARDS: usize = 1024;
/// A map starts with one shard and doubles its shards while it holds more than this many
/// entries per shard, until [`SHARDS`]: small maps stay cheap to create and walk, and the
/// last doubling moves about 16,000 entries, once in the map's life.
const ENTRIES_PER_SHARD_TO_SPLIT: usize = 16;

/// A vector in chunks of [`CHUNK`]; encodes exactly as a `Vec<T>` does.
#[derive(Clone, Debug)]
pub struct CowVec<T> {
    chunks: Vec<Arc<Vec<T>>>,
    len: usize,
}

impl<T> Default for CowVec<T> {
    fn default() -> Self {
        CowVec {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Clone> CowVec<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, value: T) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => Arc::make_mut(last).push(value),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(value);
                self.chunks.push(Arc::new(chunk));
            }
        }
        self.len += 1;
    }

    pub fn get(&self, index: usize) -> Option<&T> {
        self.chunks.get(index / CHUNK)?.get(index % CHUNK)
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.chunks.iter().flat_map(|chunk| chunk.iter())
    }

    /// Every entry, mutably: copies every chunk a clone still shares.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> + '_ {
        self.chunks
            .iter_mut()
            .flat_map(|chunk| Arc::make_mut(chunk).iter_mut())
    }
}

impl<T> Index<usize> for CowVec<T> {
    type Output = T;
    fn index(&self, index: usize) -> &T {
        assert!(index < self.len, "index {index} past {}", self.len);
        &self.chunks[index / CHUNK][index % CHUNK]
    }
}

impl<T: Clone> IndexMut<usize> for CowVec<T> {
    fn index_mut(&mut self, index: usize) -> &mut T {
        assert!(index < self.len, "index {index} past {}", self.len);
        &mut Arc::make_mut(&mut self.chunks[index / CHUNK])[index % CHUNK]
    }
}

impl<T: Clone> From<Vec<T>> for CowVec<T> {
    fn from(values: Vec<T>) -> Self {
        let mut out = CowVec::default();
        for value in values {
            out.push(value);
        }
        out
    }
}

impl<'a, T: Clone> IntoIterator for &'a CowVec<T> {
    type Item = &'a T;
    type IntoIter = Box<dyn Iterator<Item = &'a T> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl<T: Serialize + Clone> Serialize for CowVec<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        // The length up front, as a slice gives it: bincode writes it before the elements.
        let mut seq = serializer.serialize_seq(Some(self.len))?;
        for value in self.iter() {
            seq.serialize_element(value)?;
        }
        seq.end()
    }
}

impl<'de, T: Deserialize<'de> + Clone> Deserialize<'de> for CowVec<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<T>::deserialize(deserializer).map(CowVec::from)
    }
}

/// A hash map in up to [`SHARDS`] shards. Iteration order is the shards' and is never observable:
/// whoever needs an order (snapshots) sorts.
#[derive(Clone, Debug)]
pub struct CowMap<K, V> {
    shards: Vec<Arc<FxHashMap<K, V>>>,
    len: usize,
}

impl<K, V> Default for CowMap<K, V> {
    fn default() -> Self {
        CowMap {
            shards: vec![Arc::new(FxHashMap::default())],
            len: 0,
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> CowMap<K, V> {
    /// The shard of `key` among `shards` (a power of two), from bits the shard's own table
    /// does not index by: hashbrown takes its bucket from the low bits and its control byte
    /// from the top seven.
    fn shard_of(key: &K, shards: usize) -> usize {
        (FxBuild::default().hash_one(key) >> 32) as usize & (shards - 1)
    }

    fn shard(&self, key: &K) -> usize {
        Self::shard_of(key, self.shards.len())
    }

    /// Doubles the shards once the map has outgrown them (see [`ENTRIES_PER_SHARD_TO_SPLIT`]).
    fn split_if_full(&mut self) {
        let count = self.shards.len();
        if count >= SHARDS || self.len <= count * ENTRIES_PER_SHARD_TO_SPLIT {
            return;
        }
        let mut split: Vec<FxHashMap<K, V>> =
            (0..count * 2).map(|_| FxHashMap::default()).collect();
        for shard in self.shards.drain(..) {
            // A shard no frozen copy shares is moved, not copied.
            let entries = Arc::try_unwrap(shard).unwrap_or_else(|shared| (*shared).clone());
            for (key, value) in entries {
                split[Self::shard_of(&key, count * 2)].insert(key, value);
            }
        }
        self.shards = split.into_iter().map(Arc::new).collect();
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.shards[self.shard(key)].get(key)
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let index = self.shard(key);
        let shard = &mut self.shards[index];
        // A shared shard is looked into first, not to copy it for a missing key; one no
        // frozen copy shares is written in place with one lookup.
        if Arc::get_mut(shard).is_none() && !shard.contains_key(key) {
            return None;
        }
        Arc::make_mut(shard).get_mut(key)
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let shard = self.shard(&key);
        let old = Arc::make_mut(&mut self.shards[shard]).insert(key, value);
        if old.is_none() {
            self.len += 1;
            self.split_if_full();
        }
        old
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let index = self.shard(key);
        let shard = &mut self.shards[index];
        if Arc::get_mut(shard).is_none() && !shard.contains_key(key) {
            return None;
        }
        let old = Arc::make_mut(shard).remove(key);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.shards.iter().flat_map(|shard| shard.iter())
    }

    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.shards.iter().flat_map(|shard| shard.values())
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> + '_ {
        self.shards.iter().flat_map(|shard| shard.keys())
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Index<&K> for CowMap<K, V> {
    type Output = V;
    /// Panics when `key` is missing, as `HashMap`'s index does.
    fn index(&self, key: &K) -> &V {
        match self.get(key) {
            Some(value) => value,
            None => panic!("key not in the map"),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> FromIterator<(K, V)> for CowMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = CowMap::default();
        for (key, value) in iter {
            map.insert(key, value);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_keeps_what_it_saw_while_the_original_changes() {
        let mut vec: CowVec<u64> = (0..3 * CHUNK as u64).collect::<Vec<_>>().into();
        let mut map: CowMap<u64, u64> = (0..10_000).map(|k| (k, k)).collect();
        let (frozen_vec, frozen_map) = (vec.clone(), map.clone());
        vec[5] = 99;
        vec.push(7);
        map.insert(3, 33);
        map.remove(&4);
        map.insert(20_000, 1);
        assert_eq!((frozen_vec[5], frozen_vec.len()), (5, 3 * CHUNK));
        assert_eq!((vec[5], vec.len()), (99, 3 * CHUNK + 1));
        assert_eq!(frozen_map.get(&3), Some(&3));
        assert_eq!(frozen_map.get(&4), Some(&4));
        assert_eq!(frozen_map.len(), 10_000);
        assert_eq!(
            (map.get(&3), map.get(&4), map.len()),
            (Some(&33), None, 10_000)
        );
        assert_eq!(frozen_map.iter().count(), 10_000);
        // Only the chunks written to were copied.
        let shared = vec
            .chunks
            .iter()
            .zip(&frozen_vec.chunks)
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert_eq!(shared, 2);
    }

    #[test]
    fn a_chunked_vector_encodes_as_a_plain_one() {
        let plain: Vec<u32> = (0..2_500).collect();
        let chunked = CowVec::from(plain.clone());
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&plain, config).unwrap();
        assert_eq!(
            bincode::serde::encode_to_vec(&chunked, config).unwrap(),
            bytes
        );
        let (back, _): (CowVec<u32>, usize) =
            bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(back.iter().copied().collect::<Vec<_>>(), plain);
    }

    #[test]
    fn a_map_splits_its_shards_as_it_grows_and_keeps_every_entry() {
        let mut map: CowMap<u64, u64> = CowMap::default();
        let mut frozen = Vec::new();
        for k in 0..200_000u64 {
            map.insert(k, k * 2);
            if k % 50_000 == 0 {
                frozen.push((k, map.clone()));
            }
        }
        assert_eq!(map.shards.len(), SHARDS);
        assert!((0..200_000u64).all(|k| map.get(&k) == Some(&(k * 2))));
        for (last, copy) in frozen {
            assert_eq!(copy.len() as u64, last + 1);
            assert_eq!(copy.iter().count() as u64, last + 1);
            assert!(copy.get(&(last + 1)).is_none() && copy.get(&last) == Some(&(last * 2)));
        }
    }

    #[test]
    fn map_shards_are_even_for_sequential_ids() {
        let mut counts = vec![0usize; SHARDS];
        for id in 1..=(SHARDS as u64 * 64) {
            counts[CowMap::<u64, ()>::shard_of(&id, SHARDS)] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*min >= 32 && *max <= 128, "shard sizes {min}..{max}");
    }
}
