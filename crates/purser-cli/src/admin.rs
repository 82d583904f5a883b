//! Shaping the budget tree: nodes, limits and grants. Each command checks its arguments,
//! calls, and hands what changed to `render::change`.

use clap::{Args, Subcommand};
use purser_client::pb;

use crate::budget::{node_amount, RequestArgs};
use crate::parse::{self, format_window, to_wire, Flagged};
use crate::render::change::{
    Changed, GrantAdded, LimitRemoved, LimitSet, NodeCreated, NodeMoved, NodeStatusChanged,
};
use crate::render::{names, Ack};
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

pub async fn node(ctx: &Ctx, command: NodeCommand) -> Result<Done, CliError> {
    match command {
        NodeCommand::Create(a) => create(ctx, a).await,
        NodeCommand::Move {
            path,
            new_parent,
            request,
        } => move_node(ctx, path, new_parent, request).await,
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

async fn create(ctx: &Ctx, a: CreateArgs) -> Result<Done, CliError> {
    let path = parse::node_path(&a.path)?;
    let tags = parse::tags(&a.tags)?;
    let (parent, name) = match path.rsplit_once('/') {
        Some((parent, name)) => (Some(parent.to_owned()), name.to_owned()),
        None => (None, path.clone()),
    };
    let root = root_spec(&a, parent.is_none())?;
    let kind = a
        .kind
        .clone()
        .unwrap_or_else(|| if parent.is_none() { "org" } else { "node" }.to_owned());
    let (request_id, sent_at_ms) = a.request.ids();
    let request = pb::CreateNodeRequest {
        request_id,
        sent_at_ms,
        parent: parent.as_deref().map(parse::node_ref),
        name,
        kind: kind.clone(),
        tags,
        root,
    };
    let answer = ctx.client.create_node(request).await?;
    let node_id = answer.node_id;
    ctx.print_change(
        &answer,
        NodeCreated {
            node_id,
            path,
            kind,
        },
    );
    Ok(Done::Ok)
}

/// What a new root declares (its currencies); a child declares nothing.
fn root_spec(a: &CreateArgs, is_root: bool) -> Result<Option<pb::RootSpec>, CliError> {
    if !is_root {
        if !a.currencies.is_empty() || !a.funded.is_empty() || a.no_default_cap {
            return Err(
                "--currency, --funded and --no-default-cap are for a root (a PATH without /)"
                    .into(),
            );
        }
        return Ok(None);
    }
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
    Ok(Some(pb::RootSpec {
        currencies,
        no_default_cap: a.no_default_cap,
    }))
}

async fn move_node(
    ctx: &Ctx,
    path: String,
    new_parent: String,
    request: RequestArgs,
) -> Result<Done, CliError> {
    parse::node_path(&path)?;
    parse::node_path(&new_parent)?;
    let (request_id, sent_at_ms) = request.ids();
    let request = pb::MoveNodeRequest {
        request_id,
        sent_at_ms,
        node: Some(parse::node_ref(&path)),
        new_parent: Some(parse::node_ref(&new_parent)),
    };
    let answer = ctx.client.move_node(request).await?;
    ctx.print_change(&answer, NodeMoved { path, new_parent });
    Ok(Done::Ok)
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
    let (request_id, sent_at_ms) = request.ids();
    let node = Some(parse::node_ref(&path));
    let client = &ctx.client;
    let (ack, done) = match change {
        StatusChange::Close => {
            let request = pb::CloseNodeRequest {
                request_id,
                sent_at_ms,
                node,
            };
            (Ack::of(&client.close_node(request).await?), "closed")
        }
        StatusChange::Pause => {
            let request = pb::PauseNodeRequest {
                request_id,
                sent_at_ms,
                node,
            };
            (Ack::of(&client.pause_node(request).await?), "paused")
        }
        StatusChange::Resume => {
            let request = pb::ResumeNodeRequest {
                request_id,
                sent_at_ms,
                node,
            };
            (Ack::of(&client.resume_node(request).await?), "resumed")
        }
    };
    let change = NodeStatusChanged { path, done };
    ctx.print(&Changed { ack, change });
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
        LimitCommand::Set(a) => limit_set(ctx, a).await,
        LimitCommand::Remove {
            path,
            currency,
            window,
            request,
        } => limit_remove(ctx, path, currency, window, request).await,
    }
}

async fn limit_set(ctx: &Ctx, a: LimitSetArgs) -> Result<Done, CliError> {
    let window = parse::window(&a.window).flag("--window")?;
    let thresholds = a
        .thresholds
        .as_deref()
        .map(parse::thresholds)
        .transpose()
        .flag("--thresholds")?
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
    let (scale, amount) = node_amount(ctx, &a.path, &a.currency, &a.amount).await?;
    let (request_id, sent_at_ms) = a.request.ids();
    let request = pb::SetLimitRequest {
        request_id,
        sent_at_ms,
        node: Some(parse::node_ref(&a.path)),
        limit: Some(pb::LimitSpec {
            currency: a.currency.clone(),
            amount: to_wire(amount),
            window: Some(window),
            mode: mode as i32,
            thresholds: thresholds.clone(),
            on_exhausted: on_exhausted as i32,
        }),
    };
    let answer = ctx.client.set_limit(request).await?;
    let change = LimitSet {
        path: a.path,
        currency: a.currency,
        window: format_window(Some(&window)),
        mode: names::mode(mode as i32),
        amount,
        scale,
        thresholds,
        on_exhausted: names::on_exhausted(on_exhausted as i32),
    };
    ctx.print_change(&answer, change);
    Ok(Done::Ok)
}

async fn limit_remove(
    ctx: &Ctx,
    path: String,
    currency: String,
    window: String,
    request: RequestArgs,
) -> Result<Done, CliError> {
    parse::node_path(&path)?;
    let window_spec = parse::window(&window).flag("--window")?;
    let (request_id, sent_at_ms) = request.ids();
    let request = pb::RemoveLimitRequest {
        request_id,
        sent_at_ms,
        node: Some(parse::node_ref(&path)),
        currency: currency.clone(),
        window: Some(window_spec),
    };
    let answer = ctx.client.remove_limit(request).await?;
    let change = LimitRemoved {
        path,
        currency,
        window,
    };
    ctx.print_change(&answer, change);
    Ok(Done::Ok)
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

pub async fn grant(ctx: &Ctx, command: GrantCommand) -> Result<Done, CliError> {
    let GrantCommand::Add(a) = command;
    let terms = GrantTerms::parse(&a)?;
    let (scale, amount) = node_amount(ctx, &a.path, &a.currency, &a.amount).await?;
    let (request_id, sent_at_ms) = a.request.ids();
    let spec = pb::GrantSpec {
        currency: a.currency.clone(),
        amount: to_wire(amount),
        priority: a.priority,
        kind: terms.kind as i32,
        effective_at_ms: terms.effective_at_ms,
        expires_at_ms: terms.expires_at_ms,
        recur: terms.recur.map(|p| p as i32),
        rollover: terms.rollover,
    };
    let request = pb::AddGrantRequest {
        request_id,
        sent_at_ms,
        node: Some(parse::node_ref(&a.path)),
        grant: Some(spec),
    };
    let answer = ctx.client.add_grant(request).await?;
    let change = GrantAdded {
        grant_id: answer.grant_id,
        path: a.path,
        currency: a.currency,
        kind: names::grant_kind(terms.kind as i32),
        priority: a.priority,
        amount,
        scale,
        effective_at_ms: terms.effective_at_ms,
        expires_at_ms: terms.expires_at_ms,
        recur: terms.recur.map(|p| parse::period_name(p as i32)),
        rollover: parse::format_rollover(terms.rollover.as_ref()),
    };
    ctx.print_change(&answer, change);
    Ok(Done::Ok)
}

/// A grant's terms as the flags give them, checked before anything is sent.
struct GrantTerms {
    kind: pb::GrantKind,
    effective_at_ms: Option<u64>,
    expires_at_ms: Option<u64>,
    recur: Option<pb::Period>,
    rollover: Option<pb::Rollover>,
}

impl GrantTerms {
    fn parse(a: &GrantAddArgs) -> Result<GrantTerms, CliError> {
        let time =
            |text: Option<&str>, flag: &str| text.map(parse::parse_time).transpose().flag(flag);
        // Grants renew at the end of a day at the shortest.
        let recur = |r: &str| match r {
            "hour" => Err("period \"hour\" is not one of day, week, month, year".to_owned()),
            _ => parse::period(r),
        };
        Ok(GrantTerms {
            kind: parse::grant_kind(&a.kind).flag("--kind")?,
            effective_at_ms: time(a.effective.as_deref(), "--effective")?,
            expires_at_ms: time(a.expires.as_deref(), "--expires")?,
            recur: a.recur.as_deref().map(recur).transpose().flag("--recur")?,
            rollover: a
                .rollover
                .as_deref()
                .map(parse::rollover)
                .transpose()
                .flag("--rollover")?,
        })
    }
}
