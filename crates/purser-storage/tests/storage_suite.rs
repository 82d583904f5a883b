//! openraft's storage conformance suite against the RocksDB log and state machine stores.

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;
use purser_storage::store::{open_db, LogStore, StateMachineStore};
use purser_storage::types::TypeConfig;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RocksBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = open_db(dir.path()).expect("open");
        let sm = StateMachineStore::open(db.clone(), Default::default()).expect("state machine");
        let log = LogStore::new(db, Default::default()).expect("log store");
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocksdb_store_passes_openraft_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(RocksBuilder).await
}
