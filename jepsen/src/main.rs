//! `purser-jepsen run [--time 60s] [--nemesis all] [--seed N] [--nodes 3]` runs the harness
//! (as root: it creates network namespaces); `purser-jepsen check DIR` checks a recorded run
//! again. Exit code 0: every checker passed; 1: a checker failed; 2: the harness failed.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use purser_jepsen::nemesis::Family;
use purser_jepsen::run::{self, Options};

#[derive(Parser)]
#[command(name = "purser-jepsen", about = "Chaos harness for Purser")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs the cluster under faults and checks the history.
    Run {
        /// Workload duration: 90s, 10m, 1h.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        time: Duration,
        #[arg(long, value_enum, default_value = "all")]
        nemesis: Family,
        /// Seeds the fault schedule and the workload (default: from the clock).
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(3..=5))]
        nodes: u32,
        /// Run directory (default: jepsen/runs/seed-<seed>-<time>).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Checks a recorded run directory again.
    Check { dir: PathBuf },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("bad duration unit in {s:?} (s, m, h)")),
    };
    Ok(Duration::from_secs(secs))
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Cmd::Check { dir } => match run::recheck(&dir) {
            Ok(verdicts) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&verdicts).expect("verdicts serialize")
                );
                i32::from(!verdicts.iter().all(|v| v.valid))
            }
            Err(e) => {
                eprintln!("purser-jepsen: {e}");
                2
            }
        },
        Cmd::Run {
            time,
            nemesis,
            seed,
            nodes,
            dir,
        } => {
            let seed = seed.unwrap_or_else(|| purser_client::now_ms() % 1_000_000);
            let dir = dir.unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("runs")
                    .join(format!("seed-{seed}-{}", purser_client::now_ms() / 1000))
            });
            eprintln!("purser-jepsen: run directory {}", dir.display());
            let opts = Options {
                nodes,
                time,
                seed,
                nemesis,
                dir,
            };
            run_with_signals(opts)
        }
    };
    std::process::exit(code);
}

fn run_with_signals(opts: Options) -> i32 {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let code = runtime.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            result = run::run(opts) => match result {
                Ok(summary) => {
                    println!("{}", summary.line());
                    i32::from(!summary.valid)
                }
                Err(e) => {
                    eprintln!("purser-jepsen: {e}");
                    2
                }
            },
            // Dropping the run tears the cluster and the network down.
            _ = tokio::signal::ctrl_c() => {
                eprintln!("purser-jepsen: interrupted, tearing down");
                130
            }
            _ = term.recv() => {
                eprintln!("purser-jepsen: terminated, tearing down");
                143
            }
        }
    });
    // Tasks still holding the cluster are dropped here, which kills the nodes.
    runtime.shutdown_timeout(Duration::from_secs(5));
    code
}
