//! The newest snapshot is a file beside RocksDB's; a data directory of an earlier version keeps
//! it as a RocksDB value, which is still read until the next snapshot replaces it. A snapshot
//! being served is read from its file, which stays its own while newer snapshots replace it.

use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use openraft::RaftSnapshotBuilder;
use purser_storage::store::{open_db, StateMachineStore, StoredSnapshot, SNAPSHOT_FILE};
use purser_storage::types::{Entry, TypeConfig};

#[tokio::test]
async fn a_snapshot_an_earlier_version_kept_in_rocksdb_is_read_then_replaced_by_a_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join(SNAPSHOT_FILE);
    let built = {
        let db = open_db(dir.path()).expect("open");
        let sm = StateMachineStore::open(db.clone(), Default::default()).expect("state machine");
        let mut builder = sm.clone();
        let built = builder.build_snapshot().await.expect("snapshot");
        // What an earlier version left: the same record as a RocksDB value, and no file.
        let bytes = std::fs::read(&file).expect("the snapshot is a file");
        std::fs::remove_file(&file).expect("remove");
        let cf = db.cf_handle("sm").expect("cf");
        db.put_cf(cf, b"snapshot", &bytes).expect("write");
        built
    };
    let db = open_db(dir.path()).expect("reopen");
    let mut sm = StateMachineStore::open(db.clone(), Default::default()).expect("reads it");
    let current = sm
        .get_current_snapshot()
        .await
        .expect("read")
        .expect("the earlier version's snapshot is found");
    assert_eq!(current.meta, built.meta);
    assert_eq!(
        current.snapshot.into_bytes().expect("read"),
        built.snapshot.into_bytes().expect("read")
    );

    let mut builder = sm.get_snapshot_builder().await;
    builder.build_snapshot().await.expect("snapshot");
    assert!(file.exists(), "the next snapshot is a file");
    let cf = db.cf_handle("sm").expect("cf");
    assert_eq!(
        db.get_cf(cf, b"snapshot").expect("read"),
        None,
        "the value is gone"
    );
    assert!(
        !dir.path().join("state.partial").exists(),
        "no partial file is left"
    );
}

#[tokio::test]
async fn a_snapshot_being_served_stays_itself_while_newer_ones_replace_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = open_db(dir.path()).expect("open");
    let mut sm = StateMachineStore::open(db, Default::default()).expect("state machine");
    let mut builder = sm.get_snapshot_builder().await;
    let first = builder.build_snapshot().await.expect("snapshot");
    let mut serving = sm
        .get_current_snapshot()
        .await
        .expect("read")
        .expect("a snapshot");
    assert_eq!(serving.meta, first.meta);
    // Part of it is sent before the newer snapshots come.
    let head = serving.snapshot.read_chunk(16).expect("read");
    for index in 1..=3 {
        let blank = Entry::new_blank(log_id::<TypeConfig>(1, 1, index));
        sm.apply(futures_util::stream::iter([Ok((blank, None))]))
            .await
            .expect("applied");
        builder.build_snapshot().await.expect("snapshot");
    }
    let newest = sm
        .get_current_snapshot()
        .await
        .expect("read")
        .expect("a snapshot");
    assert_ne!(newest.meta, first.meta, "the newer snapshots took the path");
    let mut rest = Vec::new();
    loop {
        let chunk = serving.snapshot.read_chunk(16).expect("read");
        if chunk.is_empty() {
            break;
        }
        rest.extend(chunk);
    }
    let sent = [head, rest].concat();
    assert_eq!(sent, first.snapshot.into_bytes().expect("read"));
    let stored = StoredSnapshot::decode_checked(&sent).expect("a whole, checked snapshot");
    assert_eq!(stored.meta, first.meta);
}
