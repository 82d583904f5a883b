//! `purser report` (where the money went, from the rollups) and `purser usage` (live spend
//! per window against each limit, with a bar).

use clap::Args;
use purser_client::pb;

use crate::budget::show_node;
use crate::parse::Flagged;
use crate::render::report::{Report, ReportFormat, Usage};
use crate::{parse, CliError, Ctx, Done};

#[derive(Args)]
pub struct ReportArgs {
    /// Start (ms since the epoch, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, UTC; rounded down to
    /// its hour).
    #[arg(long)]
    pub from: String,
    /// End, exclusive (default: now).
    #[arg(long)]
    pub to: Option<String>,
    /// Comma-separated: hour, day, node, user, model, tag, provider, credential_type.
    #[arg(long, value_delimiter = ',')]
    pub group_by: Vec<String>,
    /// Only usage at this node or below it.
    #[arg(long)]
    pub node: Option<String>,
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long)]
    pub provider: Option<String>,
    #[arg(long)]
    pub credential_type: Option<String>,
    /// key=value
    #[arg(long)]
    pub tag: Option<String>,
    #[arg(long)]
    pub currency: Option<String>,
    /// table (default), csv or json; `--output json` also gives json.
    #[arg(long, value_enum, default_value = "table")]
    pub format: ReportFormat,
    /// Answer from any member's applied state (may miss the latest usage).
    #[arg(long)]
    pub stale: bool,
}

pub async fn report(ctx: &Ctx, a: ReportArgs) -> Result<Done, CliError> {
    let time = |text: &str, flag: &str| parse::parse_time(text).flag(flag);
    let request = pb::ReportRequest {
        from_ms: time(&a.from, "--from")?,
        to_ms: a
            .to
            .as_deref()
            .map(|t| time(t, "--to"))
            .transpose()?
            .unwrap_or(0),
        group_by: a.group_by.clone(),
        filters: Some(pb::ReportFilters {
            node: a.node.as_deref().map(parse::node_ref),
            user: a.user,
            model: a.model,
            provider: a.provider,
            credential_type: a.credential_type,
            tag: a.tag,
            currency: a.currency,
        }),
        allow_stale: a.stale,
    };
    let response = ctx.client.report(request).await?;
    let format = if ctx.json() {
        ReportFormat::Json
    } else {
        a.format
    };
    Report {
        rows: &response.rows,
        group_by: &a.group_by,
    }
    .print(format);
    Ok(Done::Ok)
}

#[derive(Args)]
pub struct UsageArgs {
    /// The node, e.g. acme/research/alice.
    pub path: String,
    /// Answer from any member's applied state (may be stale).
    #[arg(long)]
    pub stale: bool,
}

pub async fn usage(ctx: &Ctx, a: UsageArgs) -> Result<Done, CliError> {
    let request = pb::UsageRequest {
        node: Some(parse::node_ref(&a.path)),
        allow_stale: a.stale,
    };
    let usage = ctx.client.usage(request).await?;
    let view = show_node(ctx, parse::node_ref(&a.path)).await?;
    ctx.print(&Usage {
        usage: &usage,
        view: &view,
    });
    Ok(Done::Ok)
}
