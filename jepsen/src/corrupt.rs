//! The corruption nemesis: a stopped node's files damaged (bits flipped in the first half of
//! the newest WAL; bits flipped in, or truncation of, the newest SST, the MANIFEST or the
//! state snapshot),
//! then the node restarted. It
//! must refuse to start — then it is wiped and added back as a fresh member (remove,
//! add-learner, promote) — or recover from what is left and its peers; never serve wrong data,
//! which the convergence checker sees once it has rejoined.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use crate::cluster;
use crate::nemesis::Nemesis;
use crate::rng::Rng;

/// Bytes flipped at most in one damaged file.
pub const FLIPS_MAX: u64 = 8;

/// The damage done to one file, for the timeline.
fn damage_file(dir: &Path, rng: &mut Rng) -> Result<String, String> {
    let mut files: Vec<(String, PathBuf, u64)> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let len = entry.metadata().ok()?.len();
            Some((name, entry.path(), len))
        })
        .filter(|(name, _, len)| {
            *len > 0
                && (name.ends_with(".log")
                    || name.ends_with(".sst")
                    || name.starts_with("MANIFEST-")
                    || name.ends_with(".snapshot"))
        })
        .collect();
    // RocksDB numbers its files in creation order: the greatest name of a kind is the newest.
    files.sort();
    let kinds: Vec<&str> = [".log", ".sst", "MANIFEST-", ".snapshot"]
        .into_iter()
        .filter(|k| files.iter().any(|(n, _, _)| n.contains(k)))
        .collect();
    if kinds.is_empty() {
        return Err("no file to damage".into());
    }
    let kind = *rng.pick(&kinds);
    let (name, path, len) = files
        .iter()
        .rev()
        .find(|(n, _, _)| n.contains(kind))
        .cloned()
        .ok_or("no file of the chosen kind")?;
    let mut bytes = std::fs::read(&path).map_err(|e| format!("read {name}: {e}"))?;
    // Damage at the end of the write-ahead log cannot be told from a write torn by a crash,
    // which the storage engine must accept by dropping that tail; but this tail was synced
    // and acknowledged, and Raft assumes stable storage keeps it. So the WAL is damaged only
    // in its first half (detected: the member refuses to start); checksummed SSTs and the
    // MANIFEST and the (checksummed) snapshot anywhere.
    let wal = kind == ".log";
    let span = if wal { (len / 2).max(1) } else { len };
    let what = if !wal && rng.chance(50) {
        let keep = rng.range(0, len - 1);
        bytes.truncate(keep as usize);
        format!("truncated {name} from {len} to {keep} bytes")
    } else {
        let flips = rng.range(1, FLIPS_MAX);
        let mut at = Vec::new();
        for _ in 0..flips {
            let offset = rng.range(0, span - 1);
            bytes[offset as usize] ^= 1 << rng.range(0, 7);
            at.push(offset);
        }
        format!("flipped a bit in {flips} bytes of {name} ({len} bytes) at {at:?}")
    };
    std::fs::write(&path, &bytes).map_err(|e| format!("write {name}: {e}"))?;
    Ok(what)
}

impl Nemesis {
    /// kill -9 `id`, damage one of its files, start it again.
    pub(crate) async fn corrupt(&self, rng: &mut Rng, id: u32) -> (Vec<u32>, String) {
        let before = cluster::status(id).await.map(|s| s.last_log_index);
        self.cluster().kill9(id);
        let dir = self.cluster().data_dir(id);
        let damage = damage_file(&dir, rng).unwrap_or_else(|e| format!("no damage: {e}"));
        let started = match self.cluster().start(id) {
            Ok(()) => "restarted".to_string(),
            Err(e) => format!("restart failed: {e}"),
        };
        self.corrupted
            .lock()
            .expect("corrupted")
            .insert(id, before.unwrap_or(0));
        // Its first answer, before its peers can have filled the log in again.
        let (first, last_log) = self.first_status(id, Duration::from_secs(3)).await;
        // A member must never forget log entries it stored (and acknowledged): Raft counts
        // on them. Starting with fewer is amnesia, not recovery.
        let amnesia = match (before, last_log) {
            (Some(b), Some(l)) if l < b => {
                format!(
                    "; AMNESIA: it restarted without {} of its log entries",
                    b - l
                )
            }
            _ => String::new(),
        };
        (
            vec![id],
            format!(
                "kill -9 {id} (last log index {before:?}); {damage}; {started}; first answer: \
                 {first}{amnesia}"
            ),
        )
    }

    async fn first_status(&self, id: u32, within: Duration) -> (String, Option<u64>) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if !self.cluster().is_running(id) {
                return ("not running".into(), None);
            }
            if let Some(status) = self.cluster().exited(id) {
                return (format!("exited ({status})"), None);
            }
            if let Some(s) = cluster::status(id).await {
                let said = format!(
                    "last log index {}, applied {}",
                    s.last_log_index, s.applied_index
                );
                return (said, Some(s.last_log_index));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ("none yet".into(), None)
    }

    /// Waits for `id` to apply as far as the leader had when asked; false if it does not.
    async fn caught_up(&self, id: u32, within: Duration) -> bool {
        let ids: Vec<u32> = (1..=self.nodes).collect();
        let deadline = Instant::now() + within;
        let target = match cluster::leader(&ids).await {
            Some(leader) => cluster::status(leader).await.map(|s| s.applied_index),
            None => None,
        };
        let Some(target) = target else {
            return false;
        };
        while Instant::now() < deadline {
            if cluster::status(id)
                .await
                .is_some_and(|s| s.applied_index >= target)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// After the fault's time: did the damaged node refuse to start, or recover?
    pub(crate) async fn corrupt_outcome(&self, targets: &[u32]) -> String {
        let Some(&id) = targets.first() else {
            return "nothing damaged".into();
        };
        if self.started_then_exited(id).await {
            let why = self.cluster().log_tail(id);
            let rejoined = self.rejoin_fresh(id).await;
            return format!("{id} refused to start ({why}); {rejoined}");
        }
        if self.caught_up(id, Duration::from_secs(10)).await {
            self.corrupted.lock().expect("corrupted").remove(&id);
            let s = cluster::status(id).await;
            return format!(
                "{id} recovered and caught up: applied {:?}",
                s.map(|s| s.applied_index)
            );
        }
        // Neither refused nor recovered within 10 s: treat it as lost, start it afresh.
        let rejoined = self.rejoin_fresh(id).await;
        format!("{id} started but did not catch up within 10 s; {rejoined}")
    }

    /// Whether a node that was damaged has exited since it was started (waits a little for
    /// it to get that far).
    pub(crate) async fn started_then_exited(&self, id: u32) -> bool {
        if !self.corrupted.lock().expect("corrupted").contains_key(&id) {
            return false;
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            // Started after the damage, so not running means it exited.
            if self.cluster().exited(id).is_some() || !self.cluster().is_running(id) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            if cluster::status(id).await.is_some() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Removes `id` from the membership, wipes its data directory and adds it back as a fresh
    /// member that catches up from its peers.
    pub(crate) async fn rejoin_fresh(&self, id: u32) -> String {
        let removed = match cluster::remove(&self.admin, id).await {
            Ok(index) => format!("removed at {index}"),
            Err(e) => format!("remove: {e}"),
        };
        self.cluster().kill9(id);
        let dir = self.cluster().data_dir(id);
        let wiped = match std::fs::remove_dir_all(&dir) {
            Ok(()) => "data dir wiped".to_string(),
            Err(e) => format!("wipe failed: {e}"),
        };
        if let Err(e) = self.cluster().start(id) {
            return format!("{removed}; {wiped}; start failed: {e}");
        }
        self.corrupted.lock().expect("corrupted").remove(&id);
        let deadline = Instant::now() + Duration::from_secs(20);
        while cluster::status(id).await.is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let added = match cluster::add_voter(&self.admin, id).await {
            Ok(index) => format!("added back as a fresh voter at {index}"),
            Err(e) => format!("adding back: {e}"),
        };
        format!("{removed}; {wiped}; {added}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damage_changes_a_rocksdb_file_and_says_how() {
        let dir = std::env::temp_dir().join(format!("pj-corrupt-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let original = vec![0x55u8; 4096];
        std::fs::write(dir.join("000004.log"), &original).expect("wal");
        std::fs::write(dir.join("LOG"), b"the info log is not a target").expect("info log");
        for seed in 0..8 {
            std::fs::write(dir.join("000004.log"), &original).expect("wal");
            let said = damage_file(&dir, &mut Rng::new(seed)).expect("damaged");
            assert!(said.contains("000004.log"), "{said}");
            let now = std::fs::read(dir.join("000004.log")).expect("read");
            assert_ne!(now, original, "{said}");
        }
        assert_eq!(
            std::fs::read(dir.join("LOG")).expect("read"),
            b"the info log is not a target"
        );
        let _ = std::fs::remove_dir_all(&dir);
        assert!(damage_file(&dir, &mut Rng::new(1)).is_err());
    }
}
