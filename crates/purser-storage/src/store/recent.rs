//! The newest log entries, kept in memory as they are appended, so that replication to the
//! followers and apply (which both read what was just appended) never read them back from
//! RocksDB and decode them again. Bounded by entries and by bytes (the size of their encoding,
//! known at append without encoding twice); an older entry is read from RocksDB as before.

use std::collections::VecDeque;
use std::ops::RangeBounds;

use openraft::entry::RaftEntry;

use crate::types::Entry;

/// Entries kept at most.
pub const ENTRIES_MAX: usize = 8_192;
/// Encoded bytes kept at most.
pub const BYTES_MAX: usize = 64 << 20;

/// Consecutive entries, the newest appended last.
#[derive(Default)]
pub struct Recent {
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl Recent {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.index())
    }

    fn next_index(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.index() + 1)
    }

    /// Keeps `entry` (whose encoding is `encoded_len` bytes), appended after what is kept; an
    /// entry that does not follow the newest one starts the run afresh.
    pub fn push(&mut self, entry: Entry, encoded_len: usize) {
        if self.next_index().is_some_and(|next| next != entry.index()) {
            self.clear();
        }
        self.bytes += encoded_len;
        self.entries.push_back((entry, encoded_len));
        while self.entries.len() > ENTRIES_MAX || (self.bytes > BYTES_MAX && self.entries.len() > 1)
        {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, len)) = self.entries.pop_front() {
            self.bytes -= len;
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Forgets the entries after `index` (a truncation of the log).
    pub fn truncate_after(&mut self, index: Option<u64>) {
        while self
            .entries
            .back()
            .is_some_and(|(e, _)| index.is_none_or(|i| e.index() > i))
        {
            if let Some((_, len)) = self.entries.pop_back() {
                self.bytes -= len;
            }
        }
    }

    /// Forgets the entries up to `index` (a purge of the log).
    pub fn purge_through(&mut self, index: u64) {
        while self.first_index().is_some_and(|first| first <= index) {
            self.pop_front();
        }
    }

    /// The entries of `start..end` if every one of them is kept (`end` past the newest kept
    /// entry means up to it, as a read of the log would answer).
    pub fn get(&self, start: u64, range: &impl RangeBounds<u64>) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        if start < first {
            return None;
        }
        let skip = usize::try_from(start - first).ok()?;
        Some(
            self.entries
                .iter()
                .skip(skip)
                .map(|(e, _)| e)
                .take_while(|e| range.contains(&e.index()))
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::blank_ent;

    use super::*;
    use crate::types::TypeConfig;

    fn ent(index: u64) -> Entry {
        blank_ent::<TypeConfig>(1, 1, index)
    }

    fn indices(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|v| v.iter().map(|e| e.index()).collect())
    }

    #[test]
    fn answers_only_ranges_it_holds_whole_and_follows_truncation_and_purge() {
        let mut recent = Recent::default();
        assert_eq!(indices(recent.get(1, &(1..3))), None, "nothing kept");
        for i in 5..=9 {
            recent.push(ent(i), 10);
        }
        assert_eq!(indices(recent.get(6, &(6..8))), Some(vec![6, 7]));
        assert_eq!(
            indices(recent.get(8, &(8..))),
            Some(vec![8, 9]),
            "to the newest"
        );
        assert_eq!(indices(recent.get(4, &(4..6))), None, "4 is not kept");
        assert_eq!(
            indices(recent.get(12, &(12..14))),
            Some(vec![]),
            "past the newest"
        );

        recent.truncate_after(Some(7));
        assert_eq!(indices(recent.get(5, &(5..))), Some(vec![5, 6, 7]));
        recent.push(ent(8), 10);
        assert_eq!(indices(recent.get(7, &(7..))), Some(vec![7, 8]));
        recent.purge_through(6);
        assert_eq!(indices(recent.get(6, &(6..))), None);
        assert_eq!(indices(recent.get(7, &(7..))), Some(vec![7, 8]));
        assert_eq!(recent.bytes, 20);

        // An entry that does not follow (after a snapshot install, say) starts afresh.
        recent.push(ent(20), 10);
        assert_eq!(indices(recent.get(7, &(7..))), None);
        assert_eq!(indices(recent.get(20, &(20..))), Some(vec![20]));
        recent.truncate_after(None);
        assert_eq!(recent.bytes, 0);
        assert_eq!(indices(recent.get(20, &(20..))), None);
    }

    #[test]
    fn stays_within_its_bounds() {
        let mut recent = Recent::default();
        for i in 1..=(ENTRIES_MAX as u64 + 10) {
            recent.push(ent(i), 1);
        }
        assert_eq!(recent.entries.len(), ENTRIES_MAX);
        assert_eq!(recent.first_index(), Some(11));
        for i in (ENTRIES_MAX as u64 + 11)..(ENTRIES_MAX as u64 + 15) {
            recent.push(ent(i), BYTES_MAX / 2);
        }
        assert!(recent.bytes <= BYTES_MAX, "{} bytes kept", recent.bytes);
        assert_eq!(recent.entries.len(), 2);
        // One entry larger than the whole budget is still kept: the newest is what is read.
        recent.push(ent(ENTRIES_MAX as u64 + 15), BYTES_MAX * 2);
        assert_eq!(recent.entries.len(), 1);
    }
}
