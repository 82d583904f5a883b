//! Events are written by the event writer after apply, off the state lock. A snapshot waits
//! until the events of the state it froze are written, and folds every one; a store dropped
//! with events in its queue writes them before it lets go of the database.

use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use openraft::RaftSnapshotBuilder;
use purser_core::{
    Actual, Attributes, Charge, Command, CreateNode, CurrencySpec, GrantKind, GrantSpec, NodeRef,
    Op, Rollover, RootSpec,
};
use purser_storage::store::{open_db, StateMachineStore, StoredSnapshot};
use purser_storage::types::{Batch, Entry, TypeConfig};

const AT: u64 = 1_780_000_000_000;
const ENTRIES: u64 = 400;
const CHARGES_PER_ENTRY: u64 = 50;

fn entry(index: u64, commands: Vec<Command>) -> Entry {
    Entry::new_normal(
        log_id::<TypeConfig>(1, 1, index),
        Batch {
            at_ms: AT,
            commands,
        },
    )
}

/// A funded root, then `ENTRIES` entries of `CHARGES_PER_ENTRY` charges of 1..=50 each.
fn entries() -> (Vec<Entry>, u64) {
    let root = Op::CreateNode(CreateNode {
        parent: None,
        name: "acme".into(),
        kind: "org".into(),
        tags: Vec::new(),
        root: Some(RootSpec {
            currencies: vec![CurrencySpec {
                code: "usd".into(),
                scale: 6,
                funded: true,
            }],
            no_default_cap: true,
        }),
    });
    let grant = Op::AddGrant {
        node: "acme".into(),
        grant: GrantSpec {
            currency: "usd".into(),
            amount: 1 << 40,
            priority: 0,
            kind: GrantKind::Prepaid,
            effective_at_ms: None,
            expires_at_ms: None,
            recur: None,
            rollover: Rollover::None,
        },
    };
    let mut out = vec![
        entry(1, vec![Command::new("root", AT, root)]),
        entry(2, vec![Command::new("grant", AT, grant)]),
    ];
    let mut charged = 0;
    for e in 0..ENTRIES {
        let commands = (0..CHARGES_PER_ENTRY)
            .map(|c| {
                let amount = 1 + c;
                charged += amount;
                let op = Op::Charge(Charge {
                    node: NodeRef::from("acme"),
                    currency: "usd".into(),
                    actual: Actual::Amount(amount as i64),
                    attrs: Attributes::default(),
                });
                Command::new(format!("c{e}-{c}"), AT, op)
            })
            .collect();
        out.push(entry(3 + e, commands));
    }
    (out, charged)
}

async fn apply_all(sm: &mut StateMachineStore, entries: Vec<Entry>) {
    let stream = futures_util::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
    sm.apply(stream).await.expect("applied");
}

fn charged_in(snapshot: &StoredSnapshot) -> (u64, u64) {
    snapshot
        .rollups
        .iter()
        .filter(|(key, _)| key.node == 1)
        .fold((0, 0), |(n, c), (_, t)| (n + t.requests, c + t.cost))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The guard holds the writer thread back on purpose; nothing in this task takes the lock.
#[allow(clippy::await_holding_lock)]
async fn a_snapshot_waits_for_the_events_of_what_it_froze_and_folds_every_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = open_db(dir.path()).expect("open");
    let mut sm = StateMachineStore::open(db, Default::default()).expect("state machine");
    let (entries, charged) = entries();
    let holder = sm.clone();
    let held = holder.hold_event_writes_for_tests();
    apply_all(&mut sm, entries).await;
    let mut builder = sm.get_snapshot_builder().await;
    let building = tokio::spawn(async move { builder.build_snapshot().await });
    // While the writer is held, the snapshot cannot finish: one that did would have folded
    // the rollups without the held events. Half a second is ample for this small state.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !building.is_finished(),
        "the snapshot finished while events of the entries it froze were not written"
    );
    drop(held);
    let built = building.await.expect("joined").expect("snapshot");
    let stored = StoredSnapshot::decode_checked(&built.snapshot.into_bytes().expect("read"))
        .expect("decode");
    assert_eq!(
        charged_in(&stored),
        (ENTRIES * CHARGES_PER_ENTRY, charged),
        "the snapshot's rollups count every charge applied before it"
    );
    assert!(stored.rollup_cursor >= stored.next_event);
    let last = sm.events_from(stored.next_event - 1, 1).expect("kept");
    assert_eq!(last.len(), 1, "the newest event is written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_dropped_with_events_queued_writes_them_and_closes_the_database() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (entries, _) = entries();
    let last_event = {
        let db = open_db(dir.path()).expect("open");
        let mut sm = StateMachineStore::open(db, Default::default()).expect("state machine");
        apply_all(&mut sm, entries).await;
        sm.read(|state, _| state.events_emitted())
    };
    // Reopening fails while any handle, the writer's included, keeps the database open.
    let db = open_db(dir.path()).expect("reopen right after the drop");
    let sm = StateMachineStore::open(db, Default::default()).expect("state machine");
    let events = sm.events_from(1, usize::MAX).expect("events");
    assert_eq!(
        events.last().map(|r| r.index),
        Some(last_event),
        "every event queued at the drop was written"
    );
    assert_eq!(events.len() as u64, last_event, "no gap");
}
