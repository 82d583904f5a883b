//! Shaping the budget tree: nodes, limits and grants.

use clap::{Args, Subcommand};
use purser_client::pb;

use crate::budget::{grant_kind_name, mode_name, node_scale, on_exhausted_name, Meta, RequestArgs};
use crate::output::{money_text, print_json, Obj};
use crate::parse::{self, format_time, format_window, to_wire};
use crate::{CliError, Ctx, Done};

// ---- nodes -------------------------------------------------------------------------------

#[derive(Subcommand)]
pub enum NodeCommand {
    /// Create a node. A PATH without `/` is a root (a tenant) and declares its currencies.
    Create(CreateArgs),
    /// Re-parent a node inside its root; its open holds move with it.
    Move {
        /// The node to move, e.g. acme/research/alice.
        path: String,
        /// Its new parent, in the same root, e.g. acme/platform.
        new_parent: String,
        #[command(flatten)]
        request: RequestArgs,
    },
    /// Close a node for good: no new reservations below it; history stays readable.
    Close {
        /// The node, e.g. acme/research.
        path: String,
        #[command(flatten)]
        request: RequestArgs,
    },
    /// Refuse new reservations below a node until it is resumed.
    Pause {
        /// The node, e.g. acme/research.
        path: String,
        #[command(flatten)]
        request: RequestArgs,
    },
    /// Resume a paused node (also the only way out of a pause by an exhausted limit).
    Resume {
        /// The node, e.g. acme/research.
        path: String,
        #[command(flatten)]
        request: RequestArgs,
    },
}

#[derive(Args)]
pub struct CreateArgs {
    /// `acme` for a root, `acme/research/alice` for a child of `acme/research`.
    pub path: String,
    /// Free-text label: org, division, team, user, project, key, ... (default: `org` for a
    /// root, `node` otherwise).
    #[arg(long)]
    pub kind: Option<String>,
    /// A free-form label of the node. Repeat for several.
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// A root's currency with its scale (decimal places of the minor unit), e.g. usd:6.
    /// Repeat for several.
    #[arg(long = "currency", value_name = "CODE:SCALE")]
    pub currencies: Vec<String>,
    /// A currency of the root whose reservations must be covered by grants (the others are
    /// capped only). Repeat for several.
    #[arg(long = "funded", value_name = "CODE")]
    pub funded: Vec<String>,
    /// Do not give the new root its default monthly cap (100 major units per currency).
    #[arg(long)]
    pub no_default_cap: bool,
    #[command(flatten)]
    pub request: RequestArgs,
}

fn mutation_text(ctx: &Ctx, meta: &Meta, duplicate: bool, log_index: u64, obj: Obj, text: String) {
    if ctx.json() {
        let mut all = meta.obj(duplicate, log_index);
        all.0.extend(obj.0);
        print_json(&all.value());
    } else if duplicate {
        println!("{text} (duplicate request: already applied)");
    } else {
        println!("{text}");
    }
}

pub async fn node(ctx: &Ctx, command: NodeCommand) -> Result<Done, CliError> {
    match command {
        NodeCommand::Create(a) => create(ctx, a).await,
        NodeCommand::Move {
            path,
            new_parent,
            request,
        } => {
            parse::node_path(&path)?;
            parse::node_path(&new_parent)?;
            let meta = request.meta();
            let r = rpc!(
                ctx,
                admin_client::AdminClient,
                move_node,
                pb::MoveNodeRequest {
                    request_id: meta.request_id.clone(),
                    sent_at_ms: meta.sent_at_ms,
                    node: Some(parse::node_ref(&path)),
                    new_parent: Some(parse::node_ref(&new_parent)),
                }
            )?;
            let obj = Obj::new()
                .set("path", path.clone())
                .set("new_parent", new_parent.clone());
            let text = format!("moved {path} under {new_parent}");
            mutation_text(ctx, &meta, r.duplicate, r.log_index, obj, text);
            Ok(Done::Ok)
        }
        NodeCommand::Close { path, request } => {
            status_change(ctx, path, request, StatusChange::Close).await
        }
        NodeCommand::Pause { path, request } => {
            status_change(ctx, path, request, StatusChange::Pause).await
        }
        NodeCommand::Resume { path, request } => {
            status_change(ctx, path, request, StatusChange::Resume).await
        }
    }
}

#[derive(Clone, Copy)]
enum StatusChange {
    Close,
    Pause,
    Resume,
}

async fn status_change(
    ctx: &Ctx,
    path: String,
    request: RequestArgs,
    change: StatusChange,
) -> Result<Done, CliError> {
    parse::node_path(&path)?;
    let meta = request.meta();
    let (request_id, sent_at_ms) = (meta.request_id.clone(), meta.sent_at_ms);
    let node = Some(parse::node_ref(&path));
    let (done, duplicate, log_index) = match change {
        StatusChange::Close => {
            let request = pb::CloseNodeRequest {
                request_id,
                sent_at_ms,
                node,
            };
            let r = rpc!(ctx, admin_client::AdminClient, close_node, request)?;
            ("closed", r.duplicate, r.log_index)
        }
        StatusChange::Pause => {
            let request = pb::PauseNodeRequest {
                request_id,
                sent_at_ms,
                node,
            };
            let r = rpc!(ctx, admin_client::AdminClient, pause_node, request)?;
            ("paused", r.duplicate, r.log_index)
        }
        StatusChange::Resume => {
            let request = pb::ResumeNodeRequest {
                request_id,
                sent_at_ms,
                node,
            };
            let r = rpc!(ctx, admin_client::AdminClient, resume_node, request)?;
            ("resumed", r.duplicate, r.log_index)
        }
    };
    let obj = Obj::new()
        .set("path", path.clone())
        .set("status_change", done);
    mutation_text(
        ctx,
        &meta,
        duplicate,
        log_index,
        obj,
        format!("{done} {path}"),
    );
    Ok(Done::Ok)
}

async fn create(ctx: &Ctx, a: CreateArgs) -> Result<Done, CliError> {
    let path = parse::node_path(&a.path)?;
    let tags = parse::tags(&a.tags)?;
    let (parent, name) = match path.rsplit_once('/') {
        Some((parent, name)) => (Some(parent.to_owned()), name.to_owned()),
        None => (None, path.clone()),
    };
    let root = match &parent {
        Some(_) => {
            if !a.currencies.is_empty() || !a.funded.is_empty() || a.no_default_cap {
                return Err(
                    "--currency, --funded and --no-default-cap are for a root (a PATH without /)"
                        .into(),
                );
            }
            None
        }
        None => {
            if a.currencies.is_empty() {
                return Err("a root declares its currencies: give --currency CODE:SCALE".into());
            }
            let mut currencies = Vec::new();
            for c in &a.currencies {
                let (code, scale) = parse::currency(c)?;
                currencies.push(pb::CurrencySpec {
                    funded: a.funded.contains(&code),
                    code,
                    scale,
                });
            }
            if let Some(f) = a
                .funded
                .iter()
                .find(|f| !currencies.iter().any(|c| &c.code == *f))
            {
                return Err(CliError(format!(
                    "--funded {f}: not among the --currency codes"
                )));
            }
            Some(pb::RootSpec {
                currencies,
                no_default_cap: a.no_default_cap,
            })
        }
    };
    let kind = a
        .kind
        .clone()
        .unwrap_or_else(|| if parent.is_none() { "org" } else { "node" }.to_owned());
    let meta = a.request.meta();
    let request = pb::CreateNodeRequest {
        request_id: meta.request_id.clone(),
        sent_at_ms: meta.sent_at_ms,
        parent: parent.as_deref().map(parse::node_ref),
        name,
        kind: kind.clone(),
        tags,
        root,
    };
    let r = rpc!(ctx, admin_client::AdminClient, create_node, request)?;
    let obj = Obj::new()
        .set("node_id", r.node_id)
        .set("path", path.clone())
        .set("kind", kind.clone());
    let text = format!("created {path} (node {}, {kind})", r.node_id);
    mutation_text(ctx, &meta, r.duplicate, r.log_index, obj, text);
    Ok(Done::Ok)
}

// ---- limits ------------------------------------------------------------------------------

#[derive(Subcommand)]
pub enum LimitCommand {
    /// Add or replace the node's cap on (currency, window); a replaced cap keeps its spend.
    Set(LimitSetArgs),
    /// Drop the node's cap on (currency, window).
    Remove {
        /// The node, e.g. acme/research.
        path: String,
        /// The limit's currency.
        #[arg(long)]
        currency: String,
        /// lifetime, hour, day, week, month, sliding:DURATION or first-use:DURATION.
        #[arg(long)]
        window: String,
        #[command(flatten)]
        request: RequestArgs,
    },
}

#[derive(Args)]
pub struct LimitSetArgs {
    /// The node, e.g. acme/research.
    pub path: String,
    /// A currency of the node's root, e.g. usd.
    #[arg(long)]
    pub currency: String,
    /// The cap in major units (0 blocks every reservation under a hard cap).
    #[arg(long, allow_negative_numbers = true)]
    pub amount: String,
    /// lifetime, hour, day, week, month (UTC calendar), sliding:DURATION (rolling), or
    /// first-use:DURATION (starts at the first spend); DURATION like 90s, 15m, 1h, 7d.
    #[arg(long)]
    pub window: String,
    /// hard: deny beyond the cap; soft: allow and emit an alert event.
    #[arg(long, default_value = "hard", value_parser = ["hard", "soft"])]
    pub mode: String,
    /// Percentages at which a threshold event is emitted (default 50,75,100).
    #[arg(long, value_name = "P,P,...")]
    pub thresholds: Option<String>,
    /// deny: refuse beyond the cap; pause: also pause the node when spend reaches the cap.
    #[arg(long, default_value = "deny", value_parser = ["deny", "pause"])]
    pub on_exhausted: String,
    #[command(flatten)]
    pub request: RequestArgs,
}

pub async fn limit(ctx: &Ctx, command: LimitCommand) -> Result<Done, CliError> {
    match command {
        LimitCommand::Set(a) => {
            let window = parse::window(&a.window).map_err(|e| format!("--window: {e}"))?;
            let thresholds = a
                .thresholds
                .as_deref()
                .map(parse::thresholds)
                .transpose()
                .map_err(|e| format!("--thresholds: {e}"))?
                .unwrap_or_default();
            let mode = if a.mode == "soft" {
                pb::LimitMode::Soft
            } else {
                pb::LimitMode::Hard
            };
            let on_exhausted = if a.on_exhausted == "pause" {
                pb::OnExhausted::Pause
            } else {
                pb::OnExhausted::Deny
            };
            parse::amount_syntax(&a.amount).map_err(|e| format!("--amount: {e}"))?;
            let (_, scale) = node_scale(ctx, &a.path, &a.currency).await?;
            let amount = parse::amount(&a.amount, scale, &a.currency)
                .map_err(|e| format!("--amount: {e}"))?;
            let meta = a.request.meta();
            let limit = pb::LimitSpec {
                currency: a.currency.clone(),
                amount: to_wire(amount),
                window: Some(window),
                mode: mode as i32,
                thresholds: thresholds.clone(),
                on_exhausted: on_exhausted as i32,
            };
            let r = rpc!(
                ctx,
                admin_client::AdminClient,
                set_limit,
                pb::SetLimitRequest {
                    request_id: meta.request_id.clone(),
                    sent_at_ms: meta.sent_at_ms,
                    node: Some(parse::node_ref(&a.path)),
                    limit: Some(limit),
                }
            )?;
            let window = format_window(Some(&window));
            let mode = mode_name(mode as i32);
            let obj = Obj::new()
                .set("path", a.path.clone())
                .set("currency", a.currency.clone())
                .set("window", window.clone())
                .set("mode", mode)
                .money("amount", amount, Some(scale))
                .set("thresholds", thresholds)
                .set("on_exhausted", on_exhausted_name(on_exhausted as i32));
            let text = format!(
                "limit on {}: {} per {window} ({mode})",
                a.path,
                money_text(amount, Some(scale), &a.currency)
            );
            mutation_text(ctx, &meta, r.duplicate, r.log_index, obj, text);
            Ok(Done::Ok)
        }
        LimitCommand::Remove {
            path,
            currency,
            window,
            request,
        } => {
            parse::node_path(&path)?;
            let window_spec = parse::window(&window).map_err(|e| format!("--window: {e}"))?;
            let meta = request.meta();
            let r = rpc!(
                ctx,
                admin_client::AdminClient,
                remove_limit,
                pb::RemoveLimitRequest {
                    request_id: meta.request_id.clone(),
                    sent_at_ms: meta.sent_at_ms,
                    node: Some(parse::node_ref(&path)),
                    currency: currency.clone(),
                    window: Some(window_spec),
                }
            )?;
            let obj = Obj::new()
                .set("path", path.clone())
                .set("currency", currency.clone())
                .set("window", window.clone());
            let text = format!("removed the {currency} {window} limit of {path}");
            mutation_text(ctx, &meta, r.duplicate, r.log_index, obj, text);
            Ok(Done::Ok)
        }
    }
}

// ---- grants ------------------------------------------------------------------------------

#[derive(Subcommand)]
pub enum GrantCommand {
    /// Add a credit pool to a node (in a funded currency); it first pays debts below it.
    Add(GrantAddArgs),
}

#[derive(Args)]
pub struct GrantAddArgs {
    /// The node that owns the grant, e.g. acme (pooled) or acme/ml/alice (per seat).
    pub path: String,
    /// A funded currency of the node's root.
    #[arg(long)]
    pub currency: String,
    /// Major units; for a recurring grant, the allotment of each period.
    #[arg(long, allow_negative_numbers = true)]
    pub amount: String,
    /// included, free, promotional, prepaid, commitment or on_demand.
    #[arg(long, default_value = "prepaid")]
    pub kind: String,
    /// Lower is drawn first.
    #[arg(long, default_value_t = 100)]
    pub priority: u32,
    /// When the grant starts funding (RFC 3339); default now.
    #[arg(long, value_name = "RFC3339")]
    pub effective: Option<String>,
    /// When the grant expires (RFC 3339, like 2026-12-31T23:59:59Z); default never.
    #[arg(long, value_name = "RFC3339")]
    pub expires: Option<String>,
    /// A fresh allotment at each UTC period end: day, week, month or year.
    #[arg(long)]
    pub recur: Option<String>,
    /// What a recurring grant carries over: none, cap:N (balance at most N x the allotment),
    /// percent:P.
    #[arg(long)]
    pub rollover: Option<String>,
    #[command(flatten)]
    pub request: RequestArgs,
}

fn grant_kind(text: &str) -> Result<pb::GrantKind, CliError> {
    Ok(match text {
        "included" => pb::GrantKind::Included,
        "free" => pb::GrantKind::Free,
        "promotional" => pb::GrantKind::Promotional,
        "prepaid" => pb::GrantKind::Prepaid,
        "commitment" => pb::GrantKind::Commitment,
        "on_demand" | "on-demand" => pb::GrantKind::OnDemand,
        _ => {
            return Err(CliError(format!(
                "--kind {text:?} is not one of included, free, promotional, prepaid, \
                 commitment, on_demand"
            )))
        }
    })
}

pub async fn grant(ctx: &Ctx, command: GrantCommand) -> Result<Done, CliError> {
    let GrantCommand::Add(a) = command;
    let kind = grant_kind(&a.kind)?;
    let effective_at_ms = a
        .effective
        .as_deref()
        .map(parse::parse_time)
        .transpose()
        .map_err(|e| format!("--effective: {e}"))?;
    let expires_at_ms = a
        .expires
        .as_deref()
        .map(parse::parse_time)
        .transpose()
        .map_err(|e| format!("--expires: {e}"))?;
    let recur = a
        .recur
        .as_deref()
        .map(|r| match r {
            "hour" => Err("period \"hour\" is not one of day, week, month, year".to_owned()),
            _ => parse::period(r),
        })
        .transpose()
        .map_err(|e| format!("--recur: {e}"))?;
    let rollover = a
        .rollover
        .as_deref()
        .map(parse::rollover)
        .transpose()
        .map_err(|e| format!("--rollover: {e}"))?;
    parse::amount_syntax(&a.amount).map_err(|e| format!("--amount: {e}"))?;
    let (_, scale) = node_scale(ctx, &a.path, &a.currency).await?;
    let amount =
        parse::amount(&a.amount, scale, &a.currency).map_err(|e| format!("--amount: {e}"))?;
    let meta = a.request.meta();
    let spec = pb::GrantSpec {
        currency: a.currency.clone(),
        amount: to_wire(amount),
        priority: a.priority,
        kind: kind as i32,
        effective_at_ms,
        expires_at_ms,
        recur: recur.map(|p| p as i32),
        rollover,
    };
    let r = rpc!(
        ctx,
        admin_client::AdminClient,
        add_grant,
        pb::AddGrantRequest {
            request_id: meta.request_id.clone(),
            sent_at_ms: meta.sent_at_ms,
            node: Some(parse::node_ref(&a.path)),
            grant: Some(spec),
        }
    )?;
    let kind_name = grant_kind_name(kind as i32);
    let obj = Obj::new()
        .set("grant_id", r.grant_id)
        .set("path", a.path.clone())
        .set("currency", a.currency.clone())
        .set("kind", kind_name)
        .set("priority", a.priority)
        .money("amount", amount, Some(scale))
        .time("effective_at", effective_at_ms)
        .time("expires_at", expires_at_ms)
        .set("recur", recur.map(|p| parse::period_name(p as i32)))
        .set("rollover", parse::format_rollover(rollover.as_ref()));
    let mut text = format!(
        "added grant {} to {}: {} ({kind_name}, priority {})",
        r.grant_id,
        a.path,
        money_text(amount, Some(scale), &a.currency),
        a.priority
    );
    if let Some(ms) = expires_at_ms {
        text.push_str(&format!(", expires {}", format_time(ms)));
    }
    mutation_text(ctx, &meta, r.duplicate, r.log_index, obj, text);
    Ok(Done::Ok)
}
