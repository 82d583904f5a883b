//! `purser-bench`: the standard budget workload against Purser or a peer system, printing
//! throughput and reservation latency (HdrHistogram) and auditing the final balances.
//! `scripts/bench-peers.sh` runs it against every system, side by side.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};

mod backend;
mod peers;
mod purser;
mod report;
mod run;
mod soak;
mod workload;

use backend::Backend;
use report::Row;
use run::{RunOptions, RunResult};
use workload::Tree;

#[derive(Parser)]
#[command(name = "purser-bench", about = "Purser's load generator and its peers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the standard workload against one system and prints one summary line.
    Run(RunArgs),
    /// Measures this disk's 4 KiB write + fdatasync latency.
    FsyncProbe {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[arg(long, default_value_t = 200)]
        count: u32,
        /// Appends the figures as a JSON line to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Reads the JSON lines of many runs, prints the markdown table with ratios and writes
    /// the JSON array.
    Table {
        #[arg(long)]
        input: PathBuf,
        #[arg(long, default_value = "bench-results.json")]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum System {
    Purser,
    Redis,
    Etcd,
    Postgres,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// Limits never run out: throughput and latency.
    Standard,
    /// The organization's cap is lowered after the warm-up so that it runs out mid-run.
    Exhaust,
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long, value_enum, default_value = "purser")]
    system: System,
    /// Name of the row in the results (default: the system).
    #[arg(long)]
    label: Option<String>,
    /// Purser client addresses or etcd URLs (comma-separated), one Redis host:port, or one
    /// PostgreSQL conninfo string.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:7600")]
    endpoints: Vec<String>,
    #[arg(long, default_value_t = 64)]
    clients: usize,
    #[arg(long, default_value = "10s", value_parser = duration)]
    duration: Duration,
    #[arg(long, default_value = "3s", value_parser = duration)]
    warmup: Duration,
    #[arg(long, value_enum, default_value = "standard")]
    mode: Mode,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Purser only: one RPC per call instead of coalescing concurrent calls into `Batch`
    /// RPCs (what a client library without coalescing would do).
    #[arg(long)]
    no_coalesce: bool,
    /// Appends the result as a JSON line to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Purser only: the bearer token calls carry (editor access over the benchmark's tree,
    /// admin to set it up).
    #[arg(long, env = "PURSER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Purser only: the CA (PEM) the members' TLS certificates are checked against; the
    /// endpoints are then https.
    #[arg(long, env = "PURSER_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
    /// A soak: print a row this often during the run (`scripts/soak.sh`); any error fails it.
    #[arg(long, value_parser = duration)]
    interval: Option<Duration>,
    /// With --interval: the directory of `scripts/cluster.sh`, whose members' memory, data
    /// and snapshot sizes each row shows.
    #[arg(long, requires = "interval")]
    cluster_dir: Option<PathBuf>,
    /// With --interval: write an SVG plot of throughput and p99 over time here.
    #[arg(long, requires = "interval")]
    plot: Option<PathBuf>,
}

/// `10s`, `500ms`, `2m`.
fn duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = number.parse().map_err(|_| format!("bad duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("bad duration unit in {s:?} (ms, s or m)")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run_command(args).await,
            Command::FsyncProbe { dir, count, json } => fsync_probe(&dir, count, json),
            Command::Table { input, out } => table(&input, &out),
        }
    });
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_command(args: RunArgs) -> backend::Result<ExitCode> {
    let options = RunOptions {
        clients: args.clients.max(1),
        warmup: args.warmup,
        duration: args.duration,
        seed: args.seed,
        exhaust: matches!(args.mode, Mode::Exhaust),
        interval: args.interval,
        cluster_dir: args.cluster_dir.clone(),
    };
    let tree = Tree::standard();
    let (label, result) = match args.system {
        System::Purser => {
            let ca = args
                .ca
                .as_ref()
                .map(|file| {
                    std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))
                })
                .transpose()?;
            let backend = Arc::new(purser::Purser::connect(
                &args.endpoints,
                !args.no_coalesce,
                args.token.clone(),
                ca,
            )?);
            ("purser", measure(backend, tree, &options).await?)
        }
        System::Redis => {
            let endpoint = args.endpoints.first().ok_or("--endpoints is required")?;
            let backend = Arc::new(peers::redis::Redis::connect(endpoint).await?);
            ("redis", measure(backend, tree, &options).await?)
        }
        System::Etcd => {
            let backend = Arc::new(peers::etcd::Etcd::connect(&args.endpoints).await?);
            ("etcd", measure(backend, tree, &options).await?)
        }
        System::Postgres => {
            let conninfo = args.endpoints.join(",");
            let backend = Arc::new(peers::postgres::Postgres::connect(&conninfo).await?);
            ("postgres", measure(backend, tree, &options).await?)
        }
    };
    let mode = match args.mode {
        Mode::Standard => "standard",
        Mode::Exhaust => "exhaust",
    };
    let row = Row::new(
        args.label.as_deref().unwrap_or(label),
        options.clients,
        mode,
        &result,
    );
    println!("{}", row.summary());
    if options.exhaust {
        println!(
            "org cap lowered to {} micro-USD after the warm-up; org spent {} at the end",
            result.org_limit, result.audit.org_spent
        );
    }
    for problem in result
        .audit
        .over_limit
        .iter()
        .chain(&result.audit.spend_mismatch)
        .take(10)
    {
        println!("audit: {problem}");
    }
    if let Some(e) = &result.first_error {
        println!("first error: {e}");
    }
    if let Some(path) = &args.json {
        append_json(path, &serde_json::to_value(&row)?)?;
    }
    if let Some(line) = soak::extremes(&result.rows) {
        println!("{line}");
    }
    if let Some(path) = &args.plot {
        let title = format!(
            "{} clients={}: ops/s and p99 over time",
            row.system, options.clients
        );
        std::fs::write(path, soak::plot(&result.rows, &title))?;
        println!("wrote {}", path.display());
    }
    let soak_failed = options.interval.is_some() && result.errors > 0;
    Ok(if result.audit.ok() && !soak_failed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn measure<B: Backend>(
    backend: Arc<B>,
    tree: Tree,
    options: &RunOptions,
) -> backend::Result<RunResult> {
    let started = Instant::now();
    let result = run::run(backend, tree, options).await?;
    eprintln!(
        "run finished in {:.1}s ({} nodes audited)",
        started.elapsed().as_secs_f64(),
        result.audit.nodes
    );
    Ok(result)
}

fn append_json(path: &PathBuf, value: &serde_json::Value) -> backend::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    writeln!(file, "{value}")?;
    Ok(())
}

/// 4 KiB writes, each followed by fdatasync, in a scratch file of `dir`: what one durable
/// append costs on this disk right now.
fn fsync_probe(
    dir: &std::path::Path,
    count: u32,
    json: Option<PathBuf>,
) -> backend::Result<ExitCode> {
    let path = dir.join(format!("fsync-probe-{}", std::process::id()));
    let mut file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let block = [0x5au8; 4096];
    let mut us = Vec::with_capacity(count as usize);
    for _ in 0..count.max(1) {
        let t = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        us.push(t.elapsed().as_micros() as u64);
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    us.sort_unstable();
    let at = |q: f64| us[((us.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    let (p50, p99) = (at(0.5), at(0.99));
    println!("fsync probe: 4 KiB write + fdatasync p50={p50:.3}ms p99={p99:.3}ms ({count} writes)");
    if let Some(path) = json {
        append_json(
            &path,
            &serde_json::json!({ "fsync_probe": { "p50_ms": p50, "p99_ms": p99, "writes": count } }),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn table(input: &PathBuf, out: &PathBuf) -> backend::Result<ExitCode> {
    let text = std::fs::read_to_string(input).map_err(|e| format!("{}: {e}", input.display()))?;
    let mut rows = Vec::new();
    let mut fsync = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line)?;
        if let Some(probe) = value.get("fsync_probe") {
            fsync = Some(probe.clone());
        } else {
            rows.push(serde_json::from_value::<Row>(value)?);
        }
    }
    if let Some(probe) = &fsync {
        println!(
            "disk: 4 KiB write + fdatasync p50 {} ms, p99 {} ms\n",
            probe["p50_ms"], probe["p99_ms"]
        );
    }
    print!("{}", report::table(&rows));
    let document = serde_json::json!(rows);
    std::fs::write(out, serde_json::to_string_pretty(&document)? + "\n")
        .map_err(|e| format!("{}: {e}", out.display()))?;
    println!("\nwrote {}", out.display());
    Ok(ExitCode::SUCCESS)
}
