//! `purser`: one binary that serves a cluster member (`dev`, `serve`) and administers and uses
//! a cluster (every other subcommand). `docs/cli.md` documents each command and its JSON.
//!
//! Exit codes: 0 when the operation succeeded (or a reservation was granted), 3 when a
//! reservation or charge was denied, 1 on any error (with one `error: ...` line on stderr).
//!
//! Every client command is parse, call, render: its module (`budget`, `admin`, `cluster`, ...)
//! checks the arguments offline, calls through `purser-client`'s typed methods (leader
//! discovery, redirects and retries live there), and hands the answer to `render`, the one
//! place that prints.

#![deny(clippy::expect_used)]
#![warn(clippy::too_many_lines)]

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use parse::Flagged;

mod admin;
mod budget;
mod cluster;
mod config;
mod ctx;
mod meter;
mod parse;
mod render;
mod report;
mod server;
mod token;
mod webhook;

pub use ctx::{CliError, Ctx, Done};
use render::Format;

#[derive(Parser)]
#[command(
    name = "purser",
    version,
    about = "Purser: a replicated budget store for AI spend governance",
    long_about = "Purser: a replicated budget store for AI spend governance.\n\n\
        Amounts are decimals in major units of a currency (1.25 usd). Exit codes: 0 success \
        or reservation granted, 3 reservation or charge denied, 1 error."
)]
struct Cli {
    /// Client addresses of cluster members, comma-separated; the client finds the leader.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "PURSER_ENDPOINT",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7600"
    )]
    endpoint: Vec<String>,
    /// Output on stdout: text for people, json for scripts (shapes in docs/cli.md).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_enum,
        default_value = "text"
    )]
    output: Format,
    /// How long a client command keeps retrying (elections, restarts) before it gives up.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        default_value = "15s",
        value_name = "DURATION"
    )]
    timeout: String,
    /// The bearer token calls carry; else PURSER_TOKEN, else --token-file, else
    /// ./purser-data/admin.token (what `purser dev` writes) if it exists.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "PURSER_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// A file holding the bearer token (mode 0600 is wise).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "PURSER_TOKEN_FILE",
        value_name = "FILE"
    )]
    token_file: Option<std::path::PathBuf>,
    /// The CA (PEM file) that signed the members' certificates: endpoints without a scheme
    /// are then https (`purser certs init` writes one).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "PURSER_CA",
        value_name = "FILE"
    )]
    ca: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a single-node cluster with a local data directory (initialized if new).
    Dev(server::DevArgs),
    /// Run one member of a multi-node cluster (initialize it with `cluster init`).
    Serve(server::ServeArgs),
    /// Operate the Raft cluster: init, add, remove, transfer-leader, status.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Shape the budget tree: create, move, close, pause, resume.
    #[command(subcommand)]
    Node(admin::NodeCommand),
    /// Spend caps of a node.
    #[command(subcommand)]
    Limit(admin::LimitCommand),
    /// Credit pools of a node (funded currencies).
    #[command(subcommand)]
    Grant(admin::GrantCommand),
    /// Hold an amount at a node and every ancestor, or learn why not (exit 3).
    Reserve(budget::ReserveArgs),
    /// Settle a hold with the actual cost; the rest of the hold is released.
    Commit(budget::CommitArgs),
    /// Cancel a hold without charging.
    Release(budget::ReleaseArgs),
    /// Reserve and settle in one step, for a cost known after the fact (exit 3 if denied).
    Charge(budget::ChargeArgs),
    /// A node's status, balances, limits, grants and open holds.
    Show(budget::ShowArgs),
    /// Stream usage, monetization, balance and governance events as JSON lines, resuming
    /// across disconnects and leader changes without gaps or duplicates.
    Watch(meter::WatchArgs),
    /// A root's webhooks: add, list, remove, test (signed POSTs of its events).
    #[command(subcommand)]
    Webhook(webhook::WebhookCommand),
    /// Where the money went: usage grouped by hour, day, node, user, model, tag, provider or
    /// credential type, as a table, CSV or JSON.
    Report(report::ReportArgs),
    /// Live spend per window against each limit of a node, with a bar.
    Usage(report::UsageArgs),
    /// Bearer tokens scoped to a subtree: create, list, revoke.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Certificates for a test or small cluster: `certs init DIR --members N`.
    #[command(subcommand)]
    Certs(server::CertsCommand),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    if let Command::Certs(command) = cli.command {
        return match server::certs(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(CliError(message)) => {
                eprintln!("error: {}", message.replace('\n', " "));
                ExitCode::from(1)
            }
        };
    }
    let serving = matches!(cli.command, Command::Dev(_) | Command::Serve(_));
    // openraft's info lines dump whole Raft states: useful when debugging Raft, noise for an
    // operator; RUST_LOG=info brings them back.
    init_logging(if serving {
        "info,openraft=warn"
    } else {
        "warn"
    });
    let result = if serving {
        run_server(cli.command)
    } else {
        run_client(cli)
    };
    match result {
        Ok(Done::Ok) => ExitCode::SUCCESS,
        Ok(Done::Denied) => ExitCode::from(3),
        Err(CliError(message)) => {
            eprintln!("error: {}", message.replace('\n', " "));
            ExitCode::from(1)
        }
    }
}

/// Help and version go to stdout with exit 0; a usage error is one line and exit 1, like
/// every other error of this binary (clap's own default would be 2 and a usage block).
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(1)
        }
        _ => {
            eprintln!("{} (see --help)", one_line(&e.to_string()));
            ExitCode::from(1)
        }
    }
}

/// Clap's message on one line, without its usage block and pointer to `--help` (the caller
/// adds its own). The lines before `Usage:` carry what is wrong: the missing arguments are
/// listed on lines of their own, below the first.
fn one_line(rendered: &str) -> String {
    let parts: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.starts_with("Usage:"))
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("For more information"))
        .collect();
    if parts.is_empty() {
        return "error: bad usage".into();
    }
    parts.join(" ")
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

fn run_server(command: Command) -> Result<Done, CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async {
        match command {
            Command::Dev(args) => server::dev(args).await,
            Command::Serve(args) => server::serve(args).await,
            _ => unreachable!("only dev and serve are server commands"),
        }
    })?;
    Ok(Done::Ok)
}

fn run_client(cli: Cli) -> Result<Done, CliError> {
    let timeout = Duration::from_millis(parse::duration_ms(&cli.timeout).flag("--timeout")?);
    let endpoints: Vec<String> = cli
        .endpoint
        .iter()
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect();
    if endpoints.is_empty() {
        return Err("--endpoint: no address given".into());
    }
    // `cluster init` needs no token: it creates the first, and writes it to --token-file.
    let initializing = matches!(
        cli.command,
        Command::Cluster(cluster::ClusterCommand::Init { .. })
    );
    let (token, init_token_file) = if initializing {
        (None, cli.token_file)
    } else {
        (token::resolve(cli.token, cli.token_file)?, None)
    };
    let ca = cli
        .ca
        .map(|file| {
            std::fs::read_to_string(&file)
                .map_err(|e| CliError(format!("--ca {}: {e}", file.display())))
        })
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async {
        let ctx = Ctx::new(endpoints, cli.output, timeout, (token, ca))?;
        match cli.command {
            Command::Cluster(c) => cluster::run(&ctx, c, init_token_file).await,
            Command::Node(c) => admin::node(&ctx, c).await,
            Command::Limit(c) => admin::limit(&ctx, c).await,
            Command::Grant(c) => admin::grant(&ctx, c).await,
            Command::Reserve(a) => budget::reserve(&ctx, a).await,
            Command::Commit(a) => budget::commit(&ctx, a).await,
            Command::Release(a) => budget::release(&ctx, a).await,
            Command::Charge(a) => budget::charge(&ctx, a).await,
            Command::Show(a) => budget::show(&ctx, a).await,
            Command::Watch(a) => meter::watch(&ctx, a).await,
            Command::Webhook(c) => webhook::run(&ctx, c).await,
            Command::Report(a) => report::report(&ctx, a).await,
            Command::Usage(a) => report::usage(&ctx, a).await,
            Command::Token(c) => token::run(&ctx, c).await,
            Command::Dev(_) | Command::Serve(_) | Command::Certs(_) => {
                unreachable!("server and certificate commands run apart")
            }
        }
    })
}
