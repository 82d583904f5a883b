//! A damaged stored snapshot stops the member with a clear error instead of being served:
//! the state carries its own checksum, the event counter and rollups beside it carry another.

use openraft::storage::RaftStateMachine;
use openraft::RaftSnapshotBuilder;
use purser_storage::store::{encode, open_db, StateMachineStore, StoredSnapshot, SNAPSHOT_FILE};

/// Builds a snapshot, lets `damage` change the stored record, and returns the error that
/// reopening gives.
async fn reopen_after(damage: impl FnOnce(&mut StoredSnapshot)) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let db = open_db(dir.path()).expect("open");
        let mut sm =
            StateMachineStore::open(db.clone(), Default::default()).expect("state machine");
        let mut builder = sm.get_snapshot_builder().await;
        builder.build_snapshot().await.expect("snapshot");
        drop(builder);
        drop(sm);
        let file = dir.path().join(SNAPSHOT_FILE);
        let bytes = std::fs::read(&file).expect("the snapshot is a file");
        let mut stored = StoredSnapshot::decode_checked(&bytes).expect("intact at first");
        damage(&mut stored);
        std::fs::write(&file, encode(&stored).expect("encode")).expect("write");
    }
    let db = open_db(dir.path()).expect("the database itself opens");
    StateMachineStore::open(db, Default::default())
        .err()
        .expect("a damaged snapshot is refused")
        .to_string()
}

#[tokio::test]
async fn a_flipped_bit_in_the_stored_state_is_refused() {
    let message = reopen_after(|stored| {
        // The state's encoding ends with its own checksum.
        let last = stored.state.len() - 3;
        stored.state[last] ^= 0x10;
    })
    .await;
    assert!(message.contains("checksum"), "unclear error: {message}");
}

#[tokio::test]
async fn a_damaged_event_counter_or_rollup_cursor_is_refused() {
    let message = reopen_after(|stored| stored.next_event += 1).await;
    assert!(message.contains("checksum"), "unclear error: {message}");
    let message = reopen_after(|stored| stored.rollup_cursor ^= 0x10).await;
    assert!(message.contains("checksum"), "unclear error: {message}");
}

/// A bit flipped in the middle of the write-ahead log must not make the store forget what
/// came after it (RocksDB's default recovery would open with the log cut short there, and a
/// Raft member would silently lose acknowledged entries): the store refuses to open.
#[test]
fn a_flipped_bit_in_the_middle_of_the_wal_refuses_to_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let db = open_db(dir.path()).expect("open");
        let cf = db.cf_handle("log").expect("cf");
        let mut write = rocksdb::WriteOptions::default();
        write.set_sync(true);
        for i in 0u64..200 {
            db.put_cf_opt(cf, i.to_be_bytes(), vec![0x42u8; 256], &write)
                .expect("append");
        }
    }
    let wal = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a WAL file");
    let mut bytes = std::fs::read(&wal).expect("read WAL");
    assert!(
        bytes.len() > 40_000,
        "the appends are in the WAL ({} bytes)",
        bytes.len()
    );
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x04;
    std::fs::write(&wal, bytes).expect("write WAL");
    let Err(error) = open_db(dir.path()) else {
        panic!("a damaged WAL is refused, not cut short");
    };
    assert!(error.to_string().contains("Corruption"), "{error}");
}
