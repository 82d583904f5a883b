//! The commit index is written by the log flusher, not by openraft's core: `save_committed`
//! only hands it over. It is answered at once, written before any append that came after it
//! completes, and read back by a reopened store.

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::testing::log_id;
use openraft::type_config::TypeConfigExt;
use purser_storage::store::{open_db, LogStore};
use purser_storage::types::{Entry, TypeConfig};

async fn append(log: &mut LogStore, indexes: std::ops::RangeInclusive<u64>) {
    let entries: Vec<Entry> = indexes
        .map(|i| Entry::new_blank(log_id::<TypeConfig>(2, 1, i)))
        .collect();
    let (flushed, durable) = TypeConfig::oneshot();
    log.append(entries, IOFlushed::signal(flushed))
        .await
        .expect("append");
    durable.await.expect("answered").expect("durable");
}

#[tokio::test]
async fn the_newest_commit_index_is_answered_at_once_and_read_back_after_a_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let newest = Some(log_id::<TypeConfig>(2, 1, 7));
    {
        let db = open_db(dir.path()).expect("open");
        let mut log = LogStore::new(db, Default::default()).expect("log store");
        append(&mut log, 1..=7).await;
        // Commits faster than the flusher writes: each is answered, the newest is written.
        for index in 1..=7 {
            let committed = Some(log_id::<TypeConfig>(2, 1, index));
            log.save_committed(committed).await.expect("save");
            assert_eq!(log.read_committed().await.expect("read"), committed);
        }
        // The flusher takes its work in order: by the time this append is durable, the commit
        // index handed over before it is written.
        append(&mut log, 8..=8).await;
        assert_eq!(log.read_committed().await.expect("read"), newest);
    }
    let db = open_db(dir.path()).expect("reopen");
    let mut log = LogStore::new(db, Default::default()).expect("log store");
    assert_eq!(
        log.read_committed().await.expect("read"),
        newest,
        "the reopened store reads the newest commit index back"
    );
}
