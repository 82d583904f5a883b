//! The newest snapshot is a file beside RocksDB's; a data directory of an earlier version keeps
//! it as a RocksDB value, which is still read until the next snapshot replaces it.

use openraft::storage::RaftStateMachine;
use openraft::RaftSnapshotBuilder;
use purser_storage::store::{open_db, StateMachineStore, SNAPSHOT_FILE};

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
    assert_eq!(current.snapshot.get_ref(), built.snapshot.get_ref());

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
