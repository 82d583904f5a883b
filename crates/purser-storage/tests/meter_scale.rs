//! Settlement compaction at scale: 1,000,000 charges across the 10,000 users of the standard
//! tree, over two hours of replicated time. Report totals (from the hourly rollups) equal the
//! sum of the charges before and after compaction (events folded, then pruned), and what a
//! snapshot must carry stays bounded by the tree and the request-id retention, not by the
//! number of requests ever made. Sizes are printed (`--nocapture`).

use purser_core::fixtures::standard_tree;
use purser_core::{Actual, Attributes, Charge, Command, NodeRef, Op, State};
use purser_storage::store::rollup::{self, Totals};
use purser_storage::store::{open_db, EventRecord};
use rocksdb::WriteBatch;

const T0: u64 = 1_780_000_000_000;
const CHARGES: u64 = 1_000_000;
/// Replicated time between charges: 1M charges span two hours.
const STEP_US: u64 = 7_200;
/// What the state snapshot may take: the tree (about 4 MB for 10,111 nodes with limits) and
/// the request ids of the last retention window (10 minutes at ~139 charges/s here).
const STATE_SNAPSHOT_MAX: usize = 24 << 20;
/// Rollup rows: at most users × models × hours touched (10,000 × 3 × 3) at ~100 bytes.
const ROLLUPS_MAX: usize = 12 << 20;

fn encoded_len(records: &[EventRecord]) -> usize {
    records
        .iter()
        .map(|r| {
            bincode::serde::encode_to_vec(r, bincode::config::standard())
                .expect("encode")
                .len()
        })
        .sum()
}

fn sum_cost(rows: &[(rollup::RollupKey, Totals)]) -> (u64, u64) {
    rows.iter()
        .fold((0, 0), |(n, c), (_, t)| (n + t.requests, c + t.cost))
}

#[test]
fn a_million_charges_fold_into_bounded_rollups_with_exact_totals() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = open_db(dir.path()).expect("open");
    let (mut state, users): (State, Vec<u64>) = standard_tree(T0, Default::default());
    let models = ["gpt-5", "claude", "llama"];
    let mut next_event = 1u64;
    let mut batch = WriteBatch::default();
    let mut pending = Vec::new();
    let mut charged = 0u64;
    let mut peak_state = 0usize;
    let mut event_bytes = 0usize;
    for i in 0..CHARGES {
        let at = T0 + i * STEP_US / 1000;
        let amount = 1 + i % 1000;
        let op = Op::Charge(Charge {
            node: NodeRef::Id(users[(i % users.len() as u64) as usize]),
            currency: "usd".into(),
            actual: Actual::Amount(amount as i64),
            attrs: Attributes {
                model: Some(models[(i % 3) as usize].into()),
                ..Attributes::default()
            },
        });
        let applied = state
            .apply(at, Command::new(format!("c{i}"), at, op))
            .expect("a charge applies");
        charged += amount;
        for event in applied.events {
            pending.push(EventRecord {
                index: next_event,
                log_index: i + 1,
                at_ms: at,
                actor: None,
                event,
            });
            next_event += 1;
        }
        if pending.len() >= 30_000 {
            event_bytes += encoded_len(&pending);
            rollup::put_events(&db, &mut batch, &pending).expect("encode");
            db.write(std::mem::take(&mut batch)).expect("write");
            pending.clear();
        }
        if i % 250_000 == 0 {
            peak_state = peak_state.max(state.snapshot().len());
        }
    }
    event_bytes += encoded_len(&pending);
    rollup::put_events(&db, &mut batch, &pending).expect("encode");
    db.write(batch).expect("write");

    // Before compaction: the events are all there; the report folds them on demand.
    assert_eq!(rollup::fold(&db, next_event).expect("fold"), next_event);
    let before = rollup::rows(&db, 0, u64::MAX).expect("rows");
    assert_eq!(sum_cost(&before), (CHARGES, charged));

    // Compaction: every folded event leaves; request ids older than the retention are
    // already gone from the state (swept as replicated time passed).
    let kept_from = rollup::prune_events(&db, next_event).expect("prune");
    assert_eq!(kept_from, next_event);
    let after = rollup::rows(&db, 0, u64::MAX).expect("rows");
    assert_eq!(
        sum_cost(&after),
        (CHARGES, charged),
        "compaction changed a total"
    );
    // Two-hour ranges add up too: the first hour plus the rest is the whole.
    let first_hour = T0 - T0 % rollup::HOUR_MS + rollup::HOUR_MS;
    let (a, b) = (
        rollup::rows(&db, 0, first_hour).expect("rows"),
        rollup::rows(&db, first_hour, u64::MAX).expect("rows"),
    );
    assert_eq!(sum_cost(&a).1 + sum_cost(&b).1, charged);

    let state_bytes = state.snapshot().len();
    let (rows, _) = rollup::export(&db).expect("export");
    let rollup_bytes = bincode::serde::encode_to_vec(&rows, bincode::config::standard())
        .expect("encode")
        .len();
    println!(
        "{CHARGES} charges, {} events ({:.0} MiB encoded before compaction, none kept after): state snapshot {:.1} MiB (peak while charging {:.1} MiB, {} request ids remembered), {} rollup rows {:.1} MiB",
        next_event - 1,
        event_bytes as f64 / 1048576.0,
        state_bytes as f64 / 1048576.0,
        peak_state as f64 / 1048576.0,
        state.remembered_requests(),
        rows.len(),
        rollup_bytes as f64 / 1048576.0,
    );
    let events = db.cf_handle("events").expect("column family");
    assert_eq!(
        db.iterator_cf(events, rocksdb::IteratorMode::Start).count(),
        0,
        "every folded event left"
    );
    assert!(
        state_bytes <= STATE_SNAPSHOT_MAX,
        "state snapshot {state_bytes} B"
    );
    assert!(
        peak_state <= STATE_SNAPSHOT_MAX,
        "peak state snapshot {peak_state} B"
    );
    assert!(rollup_bytes <= ROLLUPS_MAX, "rollups {rollup_bytes} B");
    assert!(rows.len() <= users.len() * 3 * 3);
}
