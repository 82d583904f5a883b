//! The WGL search on the recorded runs under `jepsen/runs`: how long it takes and what it says.
//! Ignored by default (the histories are large); `WGL_RUN=<part of a run's name>` picks runs:
//!
//! ```sh
//! cargo test -p purser-jepsen --release --test wgl_runs -- --ignored --nocapture
//! ```

use std::path::Path;
use std::time::Instant;

use purser_jepsen::history::read_history;
use purser_jepsen::wgl::{self, Bounds, Outcome};

#[test]
#[ignore]
fn recorded_runs() {
    let runs = Path::new(env!("CARGO_MANIFEST_DIR")).join("runs");
    let only = std::env::var("WGL_RUN").ok();
    let mut dirs: Vec<_> = std::fs::read_dir(&runs)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    dirs.sort();
    for dir in dirs {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let history = dir.join("history.jsonl");
        if !history.exists() {
            continue;
        }
        let t = Instant::now();
        let events = read_history(&history).expect("a readable history");
        let read = t.elapsed();
        let t = Instant::now();
        let report = wgl::analyze(&events, Bounds::default());
        let searched = t.elapsed();
        println!(
            "{name}: {} events, read {:.2}s, searched {:.2}s: valid {}, checked {}, unchecked {}",
            events.len(),
            read.as_secs_f64(),
            searched.as_secs_f64(),
            report.verdict.valid,
            report.verdict.checked,
            report.verdict.unchecked
        );
        for r in &report.roots {
            let outcome = match &r.outcome {
                Outcome::Linearizable => "linearizable".to_string(),
                Outcome::NotLinearizable { at_ns, evidence } => {
                    format!(
                        "NOT linearizable at {:.3}s: {evidence}",
                        *at_ns as f64 / 1e9
                    )
                }
                Outcome::Unknown { at_ns, reason } => {
                    format!("unknown from {:.3}s: {reason}", *at_ns as f64 / 1e9)
                }
            };
            println!(
                "  {}: {} ops, {} segments (largest {}), {} configurations (most {} in one \
                 segment), carried at most {}: {outcome}",
                r.root,
                r.operations,
                r.segments,
                r.largest_segment,
                r.configurations,
                r.most_configurations,
                r.most_carried
            );
        }
    }
}
