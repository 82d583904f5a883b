//! A damaged stored snapshot stops the member with a clear error instead of being served.

use openraft::storage::RaftStateMachine;
use openraft::RaftSnapshotBuilder;
use purser_storage::store::{open_db, StateMachineStore};

#[tokio::test]
async fn a_flipped_bit_in_the_stored_snapshot_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let db = open_db(dir.path()).expect("open");
        let mut sm =
            StateMachineStore::open(db.clone(), Default::default()).expect("state machine");
        let mut builder = sm.get_snapshot_builder().await;
        builder.build_snapshot().await.expect("snapshot");
        drop(builder);
        drop(sm);
        let cf = db.cf_handle("sm").expect("cf");
        let mut stored = db.get_cf(cf, b"snapshot").expect("read").expect("present");
        // The record ends with the state's own checksum.
        let last = stored.len() - 3;
        stored[last] ^= 0x10;
        db.put_cf(cf, b"snapshot", stored).expect("write");
    }
    let db = open_db(dir.path()).expect("the database itself opens");
    let error = StateMachineStore::open(db, Default::default())
        .err()
        .expect("a damaged snapshot is refused");
    let message = error.to_string();
    assert!(message.contains("checksum"), "unclear error: {message}");
}
