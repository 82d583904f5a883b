//! Results: one JSON object per run (appended as a line to a file, so that a script can run
//! many systems and client counts), the final `bench-results.json` array, and the markdown
//! table with Purser's ratios against each peer at the same client count.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::run::RunResult;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub system: String,
    pub clients: usize,
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub denials: u64,
    pub errors: u64,
    pub overspend_ok: bool,
    /// The acknowledged settles add up to every node's spend.
    pub spend_ok: bool,
    pub settle_p50_ms: f64,
    pub settle_p99_ms: f64,
    pub conflicts: u64,
    pub duration_s: f64,
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_denial_s: Option<f64>,
    /// Where time went on the Purser leader during the run, when the system is Purser.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<serde_json::Value>,
    /// What one operation cost the Purser leader (from `server`): CPU time and log fsyncs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<Cost>,
    /// CPU time of every member together per operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_cpu_us_per_op: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cost {
    pub cpu_us_per_op: f64,
    pub fsyncs_per_op: f64,
}

fn ms(histogram: &hdrhistogram::Histogram<u64>, quantile: f64) -> f64 {
    if histogram.is_empty() {
        return 0.0;
    }
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

impl Row {
    pub fn new(system: &str, clients: usize, mode: &str, result: &RunResult) -> Row {
        let secs = result.elapsed.as_secs_f64().max(1e-9);
        let server = result.server.as_ref().filter(|_| result.rows.is_empty());
        Row {
            system: system.into(),
            clients,
            ops_per_s: (result.ops as f64 / secs).round(),
            p50_ms: ms(&result.reserve_us, 0.5),
            p99_ms: ms(&result.reserve_us, 0.99),
            p999_ms: ms(&result.reserve_us, 0.999),
            denials: result.denials,
            errors: result.errors,
            overspend_ok: result.audit.over_limit.is_empty(),
            spend_ok: result.audit.spend_mismatch.is_empty(),
            settle_p50_ms: ms(&result.settle_us, 0.5),
            settle_p99_ms: ms(&result.settle_us, 0.99),
            conflicts: result.conflicts,
            duration_s: secs,
            mode: mode.into(),
            first_denial_s: result.first_denial_s,
            // A soak resets the members' figures at every row: its totals would not match.
            leader: server.and_then(|s| leader_cost(s, result.ops)),
            cluster_cpu_us_per_op: server.and_then(|s| {
                let members = s.as_object()?.values();
                let cpu: u64 = members.filter_map(|m| m.get("cpu_us")?.as_u64()).sum();
                (result.ops > 0).then(|| cpu as f64 / result.ops as f64)
            }),
            server: result.server.clone(),
        }
    }

    pub fn summary(&self) -> String {
        let mut line = format!(
            "{} clients={} ops/s={:.0} p50={:.2}ms p99={:.2}ms p999={:.2}ms denials={} errors={} conflicts={} overspend_ok={} spend_ok={}",
            self.system,
            self.clients,
            self.ops_per_s,
            self.p50_ms,
            self.p99_ms,
            self.p999_ms,
            self.denials,
            self.errors,
            self.conflicts,
            self.overspend_ok,
            self.spend_ok
        );
        if let Some(s) = self.first_denial_s {
            let _ = write!(line, " first_denial={s:.3}s");
        }
        // The longest any member's apply waited or worked on one entry: what a snapshot, a
        // compaction or an O(N) pass inside apply would show as.
        if let Some(us) = self.server_max("apply_entry_us") {
            let _ = write!(line, " longest_apply={:.2}ms", us as f64 / 1e3);
        }
        if let Some(us) = self.server_max("snapshot_lock_us") {
            let _ = write!(line, " longest_snapshot_freeze={:.2}ms", us as f64 / 1e3);
        }
        if let Some(cost) = &self.leader {
            let _ = write!(
                line,
                " leader_cpu_us_per_op={:.1} fsyncs_per_op={:.3}",
                cost.cpu_us_per_op, cost.fsyncs_per_op
            );
        }
        if let Some(us) = self.cluster_cpu_us_per_op {
            let _ = write!(line, " cluster_cpu_us_per_op={us:.1}");
        }
        line
    }

    fn server_max(&self, name: &str) -> Option<u64> {
        server_max(self.server.as_ref()?, name)
    }
}

/// The greatest `max` of histogram `name` over the members' `Stats` (as `server_stats`
/// gathers them).
pub fn server_max(server: &serde_json::Value, name: &str) -> Option<u64> {
    server
        .as_object()?
        .values()
        .filter_map(|member| member.get(name)?.get("max")?.as_u64())
        .max()
}

/// The leader's CPU time and log fsyncs over `ops` operations, from the members' `Stats`
/// (keys `member-<id>-<role>`; counters reset when the measured run began).
fn leader_cost(server: &serde_json::Value, ops: u64) -> Option<Cost> {
    let (_, leader) = server
        .as_object()?
        .iter()
        .find(|(name, _)| name.ends_with("-leader"))?;
    let ops = (ops > 0).then_some(ops as f64)?;
    Some(Cost {
        cpu_us_per_op: leader.get("cpu_us")?.as_u64()? as f64 / ops,
        fsyncs_per_op: leader.get("log_fsync_us")?.get("count")?.as_u64()? as f64 / ops,
    })
}

/// The labels of the pair of runs that measure what TLS and tokens cost: one member each,
/// the same workload, plaintext without authentication and TLS with tokens.
pub const SECURITY_OFF: &str = "purser-1-open";
pub const SECURITY_ON: &str = "purser-1-tls-auth";

/// The markdown table: per client count, every system's figures and Purser's ratios against
/// it (throughput Purser / peer, p99 peer / Purser: above 1 means Purser is better on both).
pub fn table(rows: &[Row]) -> String {
    let mut by_clients: BTreeMap<usize, Vec<&Row>> = BTreeMap::new();
    let security = |r: &&Row| r.system == SECURITY_OFF || r.system == SECURITY_ON;
    for row in rows.iter().filter(|r| r.mode == "standard" && !security(r)) {
        by_clients.entry(row.clients).or_default().push(row);
    }
    let mut out = String::from(
        "| clients | system | ops/s | p50 ms | p99 ms | p999 ms | denials | errors | no overspend | Purser/peer ops | peer/Purser p99 | leader CPU µs/op | fsyncs/op |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|:-:|---:|---:|---:|---:|\n",
    );
    for (clients, rows) in by_clients {
        let purser = rows.iter().find(|r| r.system == "purser").copied();
        for row in &rows {
            let (ops_ratio, p99_ratio) = match purser {
                Some(p) if row.system != "purser" => (
                    ratio(p.ops_per_s, row.ops_per_s),
                    ratio(row.p99_ms, p.p99_ms),
                ),
                _ => ("".into(), "".into()),
            };
            let (cpu, fsyncs) = row.leader.as_ref().map_or(("".into(), "".into()), |c| {
                (
                    format!("{:.0}", c.cpu_us_per_op),
                    format!("{:.3}", c.fsyncs_per_op),
                )
            });
            let _ = writeln!(
                out,
                "| {clients} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {ops_ratio} | {p99_ratio} | {cpu} | {fsyncs} |",
                row.system,
                row.ops_per_s,
                row.p50_ms,
                row.p99_ms,
                row.p999_ms,
                row.denials,
                row.errors,
                if row.overspend_ok && row.spend_ok { "yes" } else { "NO" },
            );
        }
    }
    for off in rows.iter().filter(|r| r.system == SECURITY_OFF) {
        let Some(on) = rows
            .iter()
            .find(|r| r.system == SECURITY_ON && r.clients == off.clients)
        else {
            continue;
        };
        let _ = writeln!(
            out,
            "\nTLS + tokens, one member at {} clients: without {:.0} ops/s, p99 {:.2} ms; with {:.0} ops/s, p99 {:.2} ms; with/without: ops {}, p99 {}",
            off.clients,
            off.ops_per_s,
            off.p99_ms,
            on.ops_per_s,
            on.p99_ms,
            ratio(on.ops_per_s, off.ops_per_s),
            ratio(on.p99_ms, off.p99_ms),
        );
    }
    for row in rows.iter().filter(|r| r.mode == "exhaust") {
        let first = row.first_denial_s.map_or("no denial".to_owned(), |s| {
            format!("first denial {s:.2} s in")
        });
        let _ =
            writeln!(
            out,
            "\nCap exhaustion, {} at {} clients: {first}, {} denials, {:.0} ops/s, overspend: {}",
            row.system,
            row.clients,
            row.denials,
            row.ops_per_s,
            if row.overspend_ok && row.spend_ok { "none" } else { "FOUND" },
        );
    }
    out
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "∞".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(system: &str, clients: usize, ops: f64, p99: f64) -> Row {
        Row {
            system: system.into(),
            clients,
            ops_per_s: ops,
            p50_ms: 1.0,
            p99_ms: p99,
            p999_ms: p99,
            denials: 0,
            errors: 0,
            overspend_ok: true,
            spend_ok: true,
            settle_p50_ms: 1.0,
            settle_p99_ms: 1.0,
            conflicts: 0,
            duration_s: 10.0,
            mode: "standard".into(),
            first_denial_s: None,
            server: None,
            leader: None,
            cluster_cpu_us_per_op: None,
        }
    }

    #[test]
    fn the_table_gives_ratios_against_purser_at_the_same_client_count() {
        let mut purser = row("purser", 64, 20_000.0, 5.0);
        purser.leader = Some(Cost {
            cpu_us_per_op: 250.4,
            fsyncs_per_op: 0.125,
        });
        let rows = vec![
            purser,
            row("redis-always", 64, 10_000.0, 15.0),
            row("purser", 1, 1_000.0, 1.0),
            row("etcd", 1, 500.0, 2.0),
        ];
        let table = table(&rows);
        assert!(
            table.contains(
                "| 64 | redis-always | 10000 | 1.00 | 15.00 | 15.00 | 0 | 0 | yes | 2.00 | 3.00 |  |  |"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "| 64 | purser | 20000 | 1.00 | 5.00 | 5.00 | 0 | 0 | yes |  |  | 250 | 0.125 |"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "| 1 | etcd | 500 | 1.00 | 2.00 | 2.00 | 0 | 0 | yes | 2.00 | 2.00 |  |  |"
            ),
            "{table}"
        );
        let one = table.find("| 1 | purser").expect("row");
        assert!(!table.contains(SECURITY_OFF), "no security rows, no line");
        let many = table.find("| 64 | purser").expect("row");
        assert!(one < many, "client counts ascend");
    }

    #[test]
    fn the_leader_cost_is_the_leaders_cpu_and_fsyncs_over_the_operations() {
        let server = serde_json::json!({
            "member-1-follower": {"cpu_us": 9_000_000, "log_fsync_us": {"count": 900}},
            "member-2-leader": {"cpu_us": 4_000_000, "log_fsync_us": {"count": 2_000}},
        });
        let cost = leader_cost(&server, 10_000).expect("a leader");
        assert_eq!((cost.cpu_us_per_op, cost.fsyncs_per_op), (400.0, 0.2));
        assert!(leader_cost(&server, 0).is_none(), "no operation, no cost");
        let leaderless = serde_json::json!({"member-1-candidate": {"cpu_us": 1}});
        assert!(leader_cost(&leaderless, 10).is_none());
    }

    #[test]
    fn the_security_pair_is_a_line_of_its_own() {
        let rows = vec![
            row("purser", 64, 20_000.0, 5.0),
            row(SECURITY_OFF, 64, 10_000.0, 4.0),
            row(SECURITY_ON, 64, 8_000.0, 5.0),
        ];
        let table = table(&rows);
        assert!(!table.contains("| 64 | purser-1"), "{table}");
        assert!(
            table.contains(
                "TLS + tokens, one member at 64 clients: without 10000 ops/s, p99 4.00 ms; with 8000 ops/s, p99 5.00 ms; with/without: ops 0.80, p99 1.25"
            ),
            "{table}"
        );
    }
}
