//! Long runs (`scripts/soak.sh`): a row every interval while the measured run goes on
//! (throughput, latency, errors, the longest apply of any member, and each member's memory,
//! data directory and snapshot), then a plot of throughput and p99 over time.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::backend::Backend;

/// What the clients measured since the last row.
pub struct Interval {
    pub ops: u64,
    pub errors: u64,
    /// The interval's first error: a run's first error alone hides when its cause changed.
    pub first_error: Option<String>,
    pub reserve_us: Histogram<u64>,
}

impl Interval {
    pub fn new() -> Self {
        Interval {
            ops: 0,
            errors: 0,
            first_error: None,
            reserve_us: crate::run::histogram(),
        }
    }

    pub fn error(&mut self, e: &dyn std::fmt::Display) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| e.to_string());
    }
}

/// One member's footprint, read from the cluster directory `scripts/cluster.sh` keeps
/// (`nK.pid`, the data directory `nK/`).
#[derive(Clone, Debug)]
struct Member {
    id: u32,
    rss_bytes: Option<u64>,
    /// Held by live allocations, from the member's `Stats`: what of `rss_bytes` is in use.
    heap_bytes: Option<u64>,
    data_bytes: u64,
    snapshot_bytes: Option<u64>,
}

/// One row of the soak.
#[derive(Clone, Debug)]
pub struct Row {
    at_s: f64,
    ops_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: u64,
    first_error: Option<String>,
    longest_apply_ms: Option<f64>,
    /// Attempts sent again in this interval, and why the newest was: a slow request is most
    /// often a retried one.
    retries: Option<(u64, Option<String>)>,
    /// The highest Raft term of any member: a change from the row before is an election.
    term: Option<u64>,
    members: Vec<Member>,
}

impl Row {
    fn line(&self) -> String {
        let mut line = format!(
            "t={:>5.0}s ops/s={:>6.0} p50={:.2}ms p99={:.2}ms max={:.2}ms errors={}",
            self.at_s, self.ops_per_s, self.p50_ms, self.p99_ms, self.max_ms, self.errors
        );
        if let Some(ms) = self.longest_apply_ms {
            let _ = write!(line, " longest_apply={ms:.2}ms");
        }
        if let Some((count, _)) = &self.retries {
            let _ = write!(line, " retries={count}");
        }
        if let Some(term) = self.term {
            let _ = write!(line, " term={term}");
        }
        let mib = |b: u64| b as f64 / 1048576.0;
        for m in &self.members {
            let _ = write!(
                line,
                " | n{} rss={} heap={} data={:.0}MiB snapshot={}",
                m.id,
                m.rss_bytes
                    .map_or("-".into(), |b| format!("{:.0}MiB", mib(b))),
                m.heap_bytes
                    .map_or("-".into(), |b| format!("{:.0}MiB", mib(b))),
                mib(m.data_bytes),
                m.snapshot_bytes
                    .map_or("-".into(), |b| format!("{:.1}MiB", mib(b)))
            );
        }
        if let Some(e) = &self.first_error {
            let _ = write!(line, " | first error: {e}");
        }
        if let Some((count @ 1.., Some(why))) = &self.retries {
            let _ = write!(line, " | {count} retried, the last: {why}");
        }
        line
    }
}

/// The extremes over all rows: each row's figures cover its interval only (the members'
/// `Stats` are reset at every row), so the run's summary line cannot tell them.
pub fn extremes(rows: &[Row]) -> Option<String> {
    let last = rows.last()?;
    let mib = |b: u64| b as f64 / 1048576.0;
    let mut line = format!(
        "over {} rows: lowest ops/s={:.0} highest p99={:.2}ms max={:.2}ms",
        rows.len(),
        rows.iter()
            .map(|r| r.ops_per_s)
            .fold(f64::INFINITY, f64::min),
        rows.iter().map(|r| r.p99_ms).fold(0.0, f64::max),
        rows.iter().map(|r| r.max_ms).fold(0.0, f64::max),
    );
    if let Some(ms) = rows
        .iter()
        .filter_map(|r| r.longest_apply_ms)
        .reduce(f64::max)
    {
        let _ = write!(line, " longest_apply={ms:.2}ms");
    }
    let retried: u64 = rows
        .iter()
        .filter_map(|r| r.retries.as_ref())
        .map(|r| r.0)
        .sum();
    let _ = write!(line, " retries={retried}");
    let terms: Vec<u64> = rows.iter().filter_map(|r| r.term).collect();
    if let (Some(first), Some(last)) = (terms.first(), terms.last()) {
        let _ = write!(line, " terms={first}..{last}");
    }
    for m in &last.members {
        let of = |r: &Row| r.members.iter().find(|x| x.id == m.id).cloned();
        let peak = |f: &dyn Fn(&Member) -> Option<u64>| {
            rows.iter().filter_map(|r| of(r).and_then(|m| f(&m))).max()
        };
        let _ = write!(
            line,
            " | n{} peak rss={} heap={} data={:.0}MiB snapshot={}",
            m.id,
            peak(&|m| m.rss_bytes).map_or("-".into(), |b| format!("{:.0}MiB", mib(b))),
            peak(&|m| m.heap_bytes).map_or("-".into(), |b| format!("{:.0}MiB", mib(b))),
            mib(peak(&|m| Some(m.data_bytes)).unwrap_or(0)),
            peak(&|m| m.snapshot_bytes).map_or("-".into(), |b| format!("{:.1}MiB", mib(b)))
        );
    }
    Some(line)
}

/// Prints a row every `every` until `duration` has passed since `began`; returns the rows.
/// Each row resets the members' `Stats`, so its longest apply is that interval's.
pub async fn report<B: Backend>(
    backend: &B,
    interval: &Mutex<Interval>,
    began: Instant,
    duration: Duration,
    every: Duration,
    cluster_dir: Option<&Path>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut last = began;
    let mut retried_before = backend.retries().map_or(0, |(count, _)| count);
    while began.elapsed() < duration {
        let left = duration.saturating_sub(began.elapsed());
        tokio::time::sleep(every.min(left)).await;
        let taken = std::mem::replace(&mut *lock(interval), Interval::new());
        let now = Instant::now();
        let secs = now.duration_since(last).as_secs_f64().max(1e-9);
        last = now;
        let server = backend.server_stats().await;
        backend.measuring_started().await;
        let ms = |q: f64| taken.reserve_us.value_at_quantile(q) as f64 / 1e3;
        let retries = backend.retries().map(|(count, why)| {
            let row = count - retried_before;
            retried_before = count;
            (row, why)
        });
        let term = server.as_ref().and_then(|s| {
            s.as_object()?
                .values()
                .filter_map(|m| m.get("term")?.as_u64())
                .max()
        });
        let row = Row {
            at_s: now.duration_since(began).as_secs_f64(),
            ops_per_s: taken.ops as f64 / secs,
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            max_ms: taken.reserve_us.max() as f64 / 1e3,
            errors: taken.errors,
            first_error: taken.first_error,
            longest_apply_ms: server
                .as_ref()
                .and_then(|s| crate::report::server_max(s, "apply_entry_us"))
                .map(|us| us as f64 / 1e3),
            retries,
            term,
            members: cluster_dir
                .map(|dir| members(dir, server.as_ref()))
                .unwrap_or_default(),
        };
        println!("{}", row.line());
        rows.push(row);
    }
    rows
}

pub fn lock(interval: &Mutex<Interval>) -> std::sync::MutexGuard<'_, Interval> {
    interval
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn members(dir: &Path, server: Option<&serde_json::Value>) -> Vec<Member> {
    (1..=9)
        .filter_map(|id| {
            let data = dir.join(format!("n{id}"));
            if !data.is_dir() {
                return None;
            }
            let rss_bytes = std::fs::read_to_string(dir.join(format!("n{id}.pid")))
                .ok()
                .and_then(|pid| rss(pid.trim()));
            let snapshot_bytes = std::fs::metadata(data.join("state.snapshot"))
                .ok()
                .map(|m| m.len());
            // `Stats` keys are `member-<id>-<role>`.
            let heap_bytes = server
                .and_then(serde_json::Value::as_object)
                .and_then(|all| {
                    let prefix = format!("member-{id}-");
                    all.iter().find(|(name, _)| name.starts_with(&prefix))
                })
                .and_then(|(_, stats)| stats.get("heap_allocated_bytes")?.as_u64());
            Some(Member {
                id,
                rss_bytes,
                heap_bytes,
                data_bytes: size_of_dir(&data),
                snapshot_bytes,
            })
        })
        .collect()
}

fn rss(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn size_of_dir(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            match entry.metadata() {
                Ok(m) if m.is_dir() => pending.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// An SVG of throughput (left axis) and p99 (right axis) over time.
pub fn plot(rows: &[Row], title: &str) -> String {
    const W: f64 = 900.0;
    const H: f64 = 360.0;
    const PAD: f64 = 60.0;
    let t_max = rows.iter().map(|r| r.at_s).fold(1.0, f64::max);
    let ops_max = rows.iter().map(|r| r.ops_per_s).fold(1.0, f64::max) * 1.1;
    let p99_max = rows.iter().map(|r| r.p99_ms).fold(1.0, f64::max) * 1.1;
    let x = |t: f64| PAD + t / t_max * (W - 2.0 * PAD);
    let y = |v: f64, max: f64| H - PAD + -(v / max) * (H - 2.0 * PAD);
    let path = |value: &dyn Fn(&Row) -> f64, max: f64| {
        rows.iter()
            .enumerate()
            .map(|(i, r)| {
                let cmd = if i == 0 { 'M' } else { 'L' };
                format!("{cmd}{:.1},{:.1}", x(r.at_s), y(value(r), max))
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="white"/>
<text x="{PAD}" y="24" font-size="14">{title}</text>
<line x1="{PAD}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/>
<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{b}" stroke="black"/>
<line x1="{r}" y1="{PAD}" x2="{r}" y2="{b}" stroke="black"/>
<text x="{PAD}" y="{lt}" fill="steelblue">ops/s (axis top {ops_max:.0})</text>
<text x="{rt}" y="{lt}" fill="firebrick" text-anchor="end">p99 ms (axis top {p99_max:.1})</text>
<text x="{r}" y="{bt}" text-anchor="end">{t_max:.0} s</text>
<text x="{PAD}" y="{bt}">0 s</text>
"#,
        b = H - PAD,
        r = W - PAD,
        lt = PAD - 8.0,
        rt = W - PAD,
        bt = H - PAD + 18.0,
    );
    let _ = writeln!(
        svg,
        r#"<path d="{}" fill="none" stroke="steelblue" stroke-width="2"/>"#,
        path(&|r| r.ops_per_s, ops_max)
    );
    let _ = writeln!(
        svg,
        r#"<path d="{}" fill="none" stroke="firebrick" stroke-width="2"/>"#,
        path(&|r| r.p99_ms, p99_max)
    );
    svg.push_str("</svg>\n");
    svg
}
