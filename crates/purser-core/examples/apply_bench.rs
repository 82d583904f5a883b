//! Prints how fast one thread applies the standard workload, and what a million-node state
//! costs in memory and snapshot time. Figures, not assertions:
//!
//!     cargo run --release -p purser-core --example apply_bench [-- --pairs N]

use std::time::Instant;

use purser_core::fixtures::{reserve_usd, standard_tree, XorShift};
use purser_core::*;

const START_MS: u64 = 1_780_000_000_000; // 2026-05-28
/// Simulated cluster time advances 1 ms per this many reserve+settle pairs (25,000 pairs/s of
/// replicated time), which sets how many request ids the deduplication table keeps.
const PAIRS_PER_MS_DEFAULT: u64 = 25;
const OUTSTANDING_HOLDS: usize = 256;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--measure-restore") {
        measure_restore(&args[i + 1]);
        return;
    }
    let pairs_per_ms: u64 = args
        .iter()
        .position(|a| a == "--pairs-per-ms")
        .map(|i| args[i + 1].parse().expect("--pairs-per-ms N"))
        .unwrap_or(PAIRS_PER_MS_DEFAULT);
    let pairs: u64 = args
        .iter()
        .position(|a| a == "--pairs")
        .map(|i| args[i + 1].parse().expect("--pairs N"))
        .unwrap_or(3_000_000);
    let nodes: u64 = args
        .iter()
        .position(|a| a == "--nodes")
        .map(|i| args[i + 1].parse().expect("--nodes N"))
        .unwrap_or(1_000_000);
    workload(pairs, pairs_per_ms);
    million(nodes);
}

fn workload(pairs: u64, pairs_per_ms: u64) {
    // The shortest retention allowed, so that a run of a few seconds reaches the steady size
    // of the request-id table (2 minutes of replicated time at 50,000 commands/s).
    let config = Config {
        request_retention_ms: 60_000,
        ..Config::default()
    };
    let (mut state, users) = standard_tree(START_MS, config);
    let rss_before = rss_bytes();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut outstanding = std::collections::VecDeque::with_capacity(OUTSTANDING_HOLDS + 1);
    let (mut seq, mut done, mut denied, mut settled, mut released) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut now = START_MS;
    let mut started = Instant::now();
    // The first half warms up: the request-id table reaches its steady size (it holds
    // `retention + skew` of replicated time) before the measured half starts.
    let warmup = (pairs_per_ms * 2 * 120_000).min(3_000_000);
    let pairs = pairs + warmup;
    let (mut measured_from, mut denied_before) = (0, 0);
    while done < pairs {
        if done == warmup && measured_from == 0 {
            started = Instant::now();
            measured_from = done;
            denied_before = denied;
        }
        if done % pairs_per_ms == 0 {
            now += 1;
            if now % 1000 == 0 {
                state.apply(now, Command::tick()).expect("tick");
            }
        }
        let user = users[rng.below(users.len() as u64) as usize];
        seq += 1;
        let reserve = reserve_usd(user, 1_000);
        let applied = state.apply(now, Command::new(format!("r{seq}"), now, reserve));
        match applied.as_ref().map(|a| &a.outcome) {
            Ok(Outcome::Reserved(r)) => outstanding.push_back(r.reservation_id),
            Ok(_) => denied += 1,
            Err(e) => panic!("reserve: {e}"),
        }
        if outstanding.len() > OUTSTANDING_HOLDS {
            let reservation_id = outstanding.pop_front().expect("non-empty");
            seq += 1;
            let op = if rng.below(100) < 80 {
                settled += 1;
                Op::Settle {
                    reservation_id,
                    actual: Actual::Amount(rng.below(1_001) as i64),
                }
            } else {
                released += 1;
                Op::Release { reservation_id }
            };
            let settled = state.apply(now, Command::new(format!("s{seq}"), now, op));
            assert!(settled.is_ok(), "settle: {settled:?}");
            done += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let (done, denied) = (done - measured_from, denied - denied_before);
    state
        .check_invariants()
        .expect("invariants hold after the run");
    println!("## apply: standard tree (1 org, 10 divisions, 100 teams, 10,000 users; month+day hard limits; funded usd)");
    println!("warm-up pairs: {measured_from}; measured pairs (reserve + settle/release): {done}; over the whole run settled {settled}, released {released}; denied while measured: {denied}");
    println!(
        "elapsed: {secs:.2} s  ->  {:.0} pairs/s on one thread ({:.0} commands/s)",
        done as f64 / secs,
        (2 * done) as f64 / secs
    );
    let ids = state.remembered_requests();
    println!(
        "replicated time: {pairs_per_ms} pairs per ms; request ids remembered at the end: {ids}; resident memory grown by {:.0} MiB over the run, {} bytes per remembered id",
        rss_bytes().saturating_sub(rss_before) as f64 / 1048576.0,
        rss_bytes().saturating_sub(rss_before) / ids.max(1)
    );
    snapshot_beside_apply(&mut state, &users, now, &mut rng);
}

/// What a snapshot costs apply: the freeze (under the lock in a server), then, while another
/// thread encodes the frozen copy, the first write to each chunk copies that chunk.
fn snapshot_beside_apply(state: &mut State, users: &[u64], now: u64, rng: &mut XorShift) {
    const PAIRS: u64 = 100_000;
    let (now, longest, entry, applying) = reserve_release(state, users, now, rng, "a", PAIRS);
    println!(
        "without a snapshot: {PAIRS} reserve+release pairs applied in {:.2} s; longest single apply {} µs; first {ENTRY_COMMANDS} commands {} µs",
        applying.as_secs_f64(),
        longest.as_micros(),
        entry.as_micros()
    );
    let froze = Instant::now();
    let frozen = state.freeze();
    let freeze = froze.elapsed();
    let encoder = std::thread::spawn(move || {
        let started = Instant::now();
        let bytes = frozen.encode();
        (bytes.len(), started.elapsed())
    });
    let (_, longest, entry, applying) = reserve_release(state, users, now, rng, "b", PAIRS);
    let (bytes, encoding) = encoder.join().expect("the encoder ran");
    println!(
        "snapshot beside apply: freeze {} µs (the only time apply waits for it); encoding {:.2} s ({:.0} MiB) on another thread while {PAIRS} reserve+release pairs applied in {:.2} s; longest single apply meanwhile {} µs; the first {ENTRY_COMMANDS} commands after the freeze (one full log entry) {} µs (copying the chunks they wrote to)",
        freeze.as_micros(),
        encoding.as_secs_f64(),
        bytes as f64 / 1048576.0,
        applying.as_secs_f64(),
        longest.as_micros(),
        entry.as_micros()
    );
}

/// Commands in a full log entry of the server's batcher: after a freeze, the first entry's
/// commands are where copy-on-write pays (a request-id table in hash shards had each of them
/// copy a shard; its arena copies the newest chunk once).
const ENTRY_COMMANDS: u64 = 1_024;

/// The clock, the longest single apply, the time the first `ENTRY_COMMANDS` commands took (as
/// one log entry would), and the time all took.
fn reserve_release(
    state: &mut State,
    users: &[u64],
    mut now: u64,
    rng: &mut XorShift,
    prefix: &str,
    pairs: u64,
) -> (
    u64,
    std::time::Duration,
    std::time::Duration,
    std::time::Duration,
) {
    let mut longest = std::time::Duration::ZERO;
    let mut timed = |state: &mut State, now: u64, command: Command| {
        let started = Instant::now();
        let applied = state.apply(now, command);
        longest = longest.max(started.elapsed());
        applied
    };
    let applying = Instant::now();
    let mut first_entry = None;
    for i in 0..pairs {
        if i == ENTRY_COMMANDS / 2 {
            first_entry = Some(applying.elapsed());
        }
        now += 1;
        if now % 1000 == 0 {
            // A leader's tick a second, as a server proposes: it drops the ids that died.
            timed(state, now, Command::tick()).expect("tick");
        }
        let user = users[rng.below(users.len() as u64) as usize];
        let reserve = reserve_usd(user, 1_000);
        let applied = timed(
            state,
            now,
            Command::new(format!("{prefix}r{i}"), now, reserve),
        );
        if let Ok(Outcome::Reserved(r)) = applied.map(|a| a.outcome) {
            let release = Op::Release {
                reservation_id: r.reservation_id,
            };
            let command = Command::new(format!("{prefix}s{i}"), now, release);
            timed(state, now, command).expect("release");
        }
    }
    let all = applying.elapsed();
    (now, longest, first_entry.unwrap_or(all), all)
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn million(target: u64) {
    let mut state = State::new();
    let mut now = START_MS;
    let mut seq = 0u64;
    let mut apply = |state: &mut State, now: u64, op: Op| {
        seq += 1;
        state
            .apply(now, Command::new(format!("m{seq}"), now, op))
            .expect("applies")
            .outcome
    };
    let started = Instant::now();
    let root = CreateNode {
        parent: None,
        name: "big".into(),
        kind: "org".into(),
        tags: Vec::new(),
        root: Some(RootSpec {
            currencies: vec![CurrencySpec {
                code: "usd".into(),
                scale: 6,
                funded: false,
            }],
            no_default_cap: false,
        }),
    };
    apply(&mut state, now, Op::CreateNode(root));
    let limit = |amount| LimitSpec {
        currency: "usd".into(),
        amount,
        window: Window::Calendar(Period::Month),
        mode: LimitMode::Hard,
        thresholds: Vec::new(),
        on_exhausted: OnExhausted::Deny,
    };
    let teams = (target as f64).sqrt() as u64;
    let mut count = 1;
    'outer: for t in 0..teams {
        let team = match apply(
            &mut state,
            now,
            Op::CreateNode(child(NodeRef::Id(1), format!("t{t}"), "team")),
        ) {
            Outcome::NodeCreated { node_id } => node_id,
            other => panic!("{other:?}"),
        };
        apply(
            &mut state,
            now,
            Op::SetLimit {
                node: NodeRef::Id(team),
                limit: limit(1_000_000_000),
            },
        );
        count += 1;
        for u in 0..teams {
            if count >= target {
                break 'outer;
            }
            if let Outcome::NodeCreated { node_id } = apply(
                &mut state,
                now,
                Op::CreateNode(child(NodeRef::Id(team), format!("u{u}"), "user")),
            ) {
                apply(
                    &mut state,
                    now,
                    Op::SetLimit {
                        node: NodeRef::Id(node_id),
                        limit: limit(10_000_000),
                    },
                );
            }
            count += 1;
        }
        now += 1;
    }
    let build = started.elapsed().as_secs_f64();
    // Let the setup's request ids age out so that the snapshot holds the tree alone.
    now += state.config().request_retention_ms + limits::CLOCK_SKEW_MS_MAX + 1;
    state.apply(now, Command::tick()).expect("tick");
    let started = Instant::now();
    let snapshot = state.snapshot();
    let serialize = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let digest = state.digest();
    let digest_secs = started.elapsed().as_secs_f64();
    println!();
    println!(
        "## a tree of {} nodes, one monthly hard limit each",
        state.node_count()
    );
    println!("build through apply: {build:.2} s");
    println!(
        "snapshot: {:.1} MiB, serialize {:.3} s, digest {digest_secs:.3} s ({digest:032x})",
        snapshot.len() as f64 / 1048576.0,
        serialize
    );
    let path = std::env::temp_dir().join(format!("purser-apply-bench-{}.snap", std::process::id()));
    std::fs::write(&path, &snapshot).expect("write snapshot");
    drop(state);
    // Measure restore in a fresh process, so freed-but-kept allocator memory does not hide
    // the restored state's footprint.
    let exe = std::env::current_exe().expect("own path");
    let output = std::process::Command::new(exe)
        .arg("--measure-restore")
        .arg(&path)
        .output()
        .expect("child runs");
    print!("{}", String::from_utf8_lossy(&output.stdout));
    let _ = std::fs::remove_file(&path);
}

fn child(parent: NodeRef, name: String, kind: &str) -> CreateNode {
    CreateNode {
        parent: Some(parent),
        name,
        kind: kind.into(),
        tags: Vec::new(),
        root: None,
    }
}

fn measure_restore(path: &str) {
    let bytes = std::fs::read(path).expect("read snapshot");
    let before = rss_bytes();
    let started = Instant::now();
    let state = State::restore(&bytes).expect("restore");
    let restore = started.elapsed().as_secs_f64();
    let after = rss_bytes();
    let again = state.snapshot();
    println!("restore: {restore:.3} s; state resident memory: {:.1} MiB ({} bytes/node); re-snapshot identical: {}",
        (after - before) as f64 / 1048576.0, (after - before) / state.node_count().max(1), again == bytes);
}
