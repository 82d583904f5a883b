//! `report` (rollup rows as a table, CSV or JSON) and `usage` (spend against each limit, with
//! a bar).

use purser_client::pb;
use serde_json::Value;

use super::budget::scale_of;
use super::{print, table, Format, Obj, Render};
use crate::parse::{format_amount, format_time, format_window};

/// How `report` prints its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Table,
    Csv,
    Json,
}

/// The rows of a report, with the dimensions they were grouped by.
pub struct Report<'a> {
    pub rows: &'a [pb::ReportRow],
    pub group_by: &'a [String],
}

impl Report<'_> {
    pub fn print(&self, format: ReportFormat) {
        match format {
            // RFC 4180 ends every line, the last one too, with CRLF: printed as it is.
            ReportFormat::Csv => print!("{}", purser_proto::report::csv(self.rows, self.group_by)),
            ReportFormat::Json => print(Format::Json, self),
            ReportFormat::Table => print(Format::Text, self),
        }
    }
}

impl Render for Report<'_> {
    fn json(&self) -> Value {
        purser_proto::report::json(self.rows, self.group_by)
    }

    fn text(&self) -> String {
        if self.rows.is_empty() {
            return "(no usage in this range)".into();
        }
        let header: Vec<String> = purser_proto::report::columns(self.group_by)
            .iter()
            .map(|c| c.to_uppercase())
            .collect();
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        let rows = self
            .rows
            .iter()
            .map(|row| purser_proto::report::cells(row, self.group_by));
        format!(
            "{}\n(cost and market_cost in minor units of each row's currency)",
            table(&header, rows)
        )
    }
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

/// `usage`: the node's limits as the Usage call answers them, with the node's view for the
/// scales of their currencies.
pub struct Usage<'a> {
    pub usage: &'a pb::UsageResponse,
    pub view: &'a pb::NodeView,
}

impl Usage<'_> {
    fn money(&self, minor: u64, currency: &str) -> String {
        match scale_of(self.view, currency) {
            Some(s) => format_amount(minor, s),
            None => minor.to_string(),
        }
    }

    fn row(&self, l: &pb::LimitView) -> Vec<String> {
        let money = |minor| self.money(minor, &l.currency);
        vec![
            l.currency.clone(),
            format_window(l.window.as_ref()),
            l.role.clone().unwrap_or_else(|| "own".into()),
            money(l.spent),
            money(l.held),
            money(l.amount),
            money(l.remaining),
            bar(l.spent, l.held, l.amount),
            l.window_end_ms.map_or("-".into(), format_time),
        ]
    }
}

impl Render for Usage<'_> {
    fn json(&self) -> Value {
        let limits: Vec<Value> = self
            .usage
            .limits
            .iter()
            .map(|l| {
                let s = scale_of(self.view, &l.currency);
                Obj::new()
                    .set("currency", l.currency.clone())
                    .set("window", format_window(l.window.as_ref()))
                    .set("role", l.role.clone())
                    .money("amount", l.amount, s)
                    .money("spent", l.spent, s)
                    .money("held", l.held, s)
                    .money("remaining", l.remaining, s)
                    .time("window_end", l.window_end_ms)
                    .value()
            })
            .collect();
        serde_json::json!({
            "node_id": self.usage.node_id,
            "path": self.usage.path,
            "limits": limits,
        })
    }

    fn text(&self) -> String {
        let heading = format!("{}  (node {})", self.usage.path, self.usage.node_id);
        if self.usage.limits.is_empty() {
            return format!("{heading}\nno limits apply");
        }
        let header = [
            "CURRENCY",
            "WINDOW",
            "FROM",
            "SPENT",
            "HELD",
            "LIMIT",
            "REMAINING",
            "USED (# spent, = held)",
            "RESETS",
        ];
        let rows = self.usage.limits.iter().map(|l| self.row(l));
        format!("{heading}\n{}", table(&header, rows))
    }
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
