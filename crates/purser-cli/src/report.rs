//! `purser report` (where the money went, from the rollups) and `purser usage` (live spend
//! per window against each limit, with a bar).

use clap::Args;
use purser_client::pb;
use serde_json::Value;

use crate::budget::{scale_in, show_node};
use crate::output::{print_json, table, Obj};
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
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Answer from any member's applied state (may miss the latest usage).
    #[arg(long)]
    pub stale: bool,
}

pub async fn report(ctx: &Ctx, a: ReportArgs) -> Result<Done, CliError> {
    let time = |flag: &str, text: &str| {
        parse::parse_time(text).map_err(|e| CliError(format!("--{flag}: {e}")))
    };
    let request = pb::ReportRequest {
        from_ms: time("from", &a.from)?,
        to_ms: a
            .to
            .as_deref()
            .map(|t| time("to", t))
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
    let response = rpc!(ctx, reports_client::ReportsClient, report, request)?;
    let format = if ctx.json() {
        "json"
    } else {
        a.format.as_str()
    };
    match format {
        "csv" => print!("{}", purser_proto::report::csv(&response.rows, &a.group_by)),
        "json" => print_json(&purser_proto::report::json(&response.rows, &a.group_by)),
        "table" => {
            let columns = purser_proto::report::columns(&a.group_by);
            let rows: Vec<Vec<String>> = response
                .rows
                .iter()
                .map(|row| purser_proto::report::cells(row, &a.group_by))
                .collect();
            let header: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
            let header: Vec<&str> = header.iter().map(String::as_str).collect();
            if response.rows.is_empty() {
                println!("(no usage in this range)");
            } else {
                println!("{}", table(&header, &rows));
                println!("(cost and market_cost in minor units of each row's currency)");
            }
        }
        other => return Err(format!("--format {other}: table, csv or json").into()),
    }
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

/// Cells of a bar: how much of the limit is spent (#) and held (=).
const BAR_CELLS: u64 = 20;

fn bar(spent: u64, held: u64, amount: u64) -> String {
    if amount == 0 {
        return format!("[{}] -", "#".repeat(BAR_CELLS as usize));
    }
    let cells = |v: u64| {
        (u128::from(v) * u128::from(BAR_CELLS) / u128::from(amount)).min(u128::from(BAR_CELLS))
            as usize
    };
    let s = cells(spent);
    let h = cells(spent.saturating_add(held)).saturating_sub(s);
    let rest = BAR_CELLS as usize - s - h;
    let percent = u128::from(spent.saturating_add(held)) * 100 / u128::from(amount);
    format!(
        "[{}{}{}] {percent}%",
        "#".repeat(s),
        "=".repeat(h),
        ".".repeat(rest)
    )
}

pub async fn usage(ctx: &Ctx, a: UsageArgs) -> Result<Done, CliError> {
    let request = pb::UsageRequest {
        node: Some(parse::node_ref(&a.path)),
        allow_stale: a.stale,
    };
    let response = rpc!(ctx, budget_client::BudgetClient, usage, request)?;
    let view = show_node(ctx, parse::node_ref(&a.path)).await?;
    let scale = |currency: &str| scale_in(&view, currency).ok();
    if ctx.json() {
        let limits: Vec<Value> = response
            .limits
            .iter()
            .map(|l| {
                let s = scale(&l.currency);
                Obj::new()
                    .set("currency", l.currency.clone())
                    .set("window", parse::format_window(l.window.as_ref()))
                    .set("role", l.role.clone())
                    .money("amount", l.amount, s)
                    .money("spent", l.spent, s)
                    .money("held", l.held, s)
                    .money("remaining", l.remaining, s)
                    .time("window_end", l.window_end_ms)
                    .value()
            })
            .collect();
        print_json(
            &serde_json::json!({ "node_id": response.node_id, "path": response.path, "limits": limits }),
        );
        return Ok(Done::Ok);
    }
    println!("{}  (node {})", response.path, response.node_id);
    if response.limits.is_empty() {
        println!("no limits apply");
        return Ok(Done::Ok);
    }
    let money = |minor: u64, currency: &str| match scale(currency) {
        Some(s) => parse::format_amount(minor, s),
        None => minor.to_string(),
    };
    let rows: Vec<Vec<String>> = response
        .limits
        .iter()
        .map(|l| {
            vec![
                l.currency.clone(),
                parse::format_window(l.window.as_ref()),
                l.role.clone().unwrap_or_else(|| "own".into()),
                money(l.spent, &l.currency),
                money(l.held, &l.currency),
                money(l.amount, &l.currency),
                money(l.remaining, &l.currency),
                bar(l.spent, l.held, l.amount),
                l.window_end_ms.map_or("-".into(), parse::format_time),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "CURRENCY",
                "WINDOW",
                "FROM",
                "SPENT",
                "HELD",
                "LIMIT",
                "REMAINING",
                "USED (# spent, = held)",
                "RESETS"
            ],
            &rows
        )
    );
    Ok(Done::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_show_spent_then_held_and_the_percentage() {
        assert_eq!(bar(50, 25, 100), "[##########=====.....] 75%");
        assert_eq!(bar(0, 0, 100), "[....................] 0%");
        assert_eq!(bar(150, 0, 100), "[####################] 150%");
    }
}
