//! Criterion: one reserve + settle pair on the standard tree (`cargo bench -p purser-core`).

use criterion::{criterion_group, criterion_main, Criterion};
use purser_core::fixtures::{reserve_usd, standard_tree, XorShift};
use purser_core::*;

fn reserve_settle(c: &mut Criterion) {
    let start = 1_780_000_000_000u64;
    let (mut state, users) = standard_tree(
        start,
        Config {
            request_retention_ms: 60_000,
            ..Config::default()
        },
    );
    let mut rng = XorShift(42);
    let mut seq = 0u64;
    let mut now = start;
    c.bench_function("reserve+settle pair, standard tree", |b| {
        b.iter(|| {
            seq += 1;
            if seq % 25 == 0 {
                now += 1;
            }
            let user = users[rng.below(users.len() as u64) as usize];
            let reserve = reserve_usd(user, 1_000);
            let outcome = state
                .apply(now, Command::new(format!("r{seq}"), now, reserve))
                .expect("reserve")
                .outcome;
            if let Outcome::Reserved(r) = outcome {
                let settle = Op::Settle {
                    reservation_id: r.reservation_id,
                    actual: Actual::Amount(700),
                };
                state
                    .apply(now, Command::new(format!("s{seq}"), now, settle))
                    .expect("settle");
            }
        })
    });
}

criterion_group!(benches, reserve_settle);
criterion_main!(benches);
