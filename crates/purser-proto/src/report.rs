//! Report rows as CSV and JSON: the one place both the HTTP endpoint and the CLI format them,
//! so the two never disagree.

use crate::pb::ReportRow;

/// The dimensions a report may group by, in the order their columns appear.
pub const DIMENSIONS: [&str; 8] = [
    "hour",
    "day",
    "node",
    "user",
    "model",
    "tag",
    "provider",
    "credential_type",
];

const MEASURES: [&str; 8] = [
    "currency",
    "requests",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "cost",
    "market_cost",
];

/// The columns of a report grouped by `group_by`: its dimensions (node as id and path), then
/// the currency and the measures.
pub fn columns(group_by: &[String]) -> Vec<&'static str> {
    let mut out = Vec::new();
    for d in DIMENSIONS {
        if group_by.iter().any(|g| g == d) {
            if d == "node" {
                out.extend(["node_id", "node_path"]);
            } else {
                out.push(if d == "hour" {
                    "hour_ms"
                } else if d == "day" {
                    "day_ms"
                } else {
                    d
                });
            }
        }
    }
    out.extend(MEASURES);
    out
}

fn cell(row: &ReportRow, column: &str) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let num = |v: Option<u64>| v.map_or(String::new(), |n| n.to_string());
    match column {
        "hour_ms" => num(row.hour_ms),
        "day_ms" => num(row.day_ms),
        "node_id" => num(row.node_id),
        "node_path" => opt(&row.node_path),
        "user" => opt(&row.user),
        "model" => opt(&row.model),
        "tag" => opt(&row.tag),
        "provider" => opt(&row.provider),
        "credential_type" => opt(&row.credential_type),
        "currency" => row.currency.clone(),
        "requests" => row.requests.to_string(),
        "input_tokens" => row.input_tokens.to_string(),
        "output_tokens" => row.output_tokens.to_string(),
        "cached_input_tokens" => row.cached_input_tokens.to_string(),
        "reasoning_tokens" => row.reasoning_tokens.to_string(),
        "cost" => row.cost.to_string(),
        "market_cost" => row.market_cost.to_string(),
        _ => String::new(),
    }
}

/// One row's cells, in `columns(group_by)` order, unquoted (for tables).
pub fn cells(row: &ReportRow, group_by: &[String]) -> Vec<String> {
    columns(group_by).iter().map(|c| cell(row, c)).collect()
}

/// RFC 4180: a header line, CRLF line ends, fields quoted when they hold a comma, a quote or a
/// line break (quotes doubled).
pub fn csv(rows: &[ReportRow], group_by: &[String]) -> String {
    let columns = columns(group_by);
    let mut out = columns.join(",");
    out.push_str("\r\n");
    for row in rows {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| {
                let v = cell(row, c);
                if v.contains([',', '"', '\n', '\r']) {
                    format!("\"{}\"", v.replace('"', "\"\""))
                } else {
                    v
                }
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

/// `{"rows": [{column: value, ...}, ...]}` with numbers as numbers.
pub fn json(rows: &[ReportRow], group_by: &[String]) -> serde_json::Value {
    let columns = columns(group_by);
    let numeric = |c: &str| {
        !matches!(
            c,
            "node_path" | "user" | "model" | "tag" | "provider" | "credential_type" | "currency"
        )
    };
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            let mut object = serde_json::Map::new();
            for c in &columns {
                let v = cell(row, c);
                let value = if numeric(c) {
                    v.parse::<u64>().map_or(serde_json::Value::Null, Into::into)
                } else {
                    v.into()
                };
                object.insert((*c).to_owned(), value);
            }
            object.into()
        })
        .collect();
    serde_json::json!({ "rows": rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting_and_keeps_column_order() {
        let row = ReportRow {
            model: Some("gpt,5 \"mini\"".into()),
            day_ms: Some(86_400_000),
            currency: "usd".into(),
            requests: 2,
            cost: 7,
            market_cost: 7,
            ..Default::default()
        };
        let text = csv(&[row], &["model".into(), "day".into()]);
        let mut lines = text.split("\r\n");
        assert_eq!(
            lines.next(),
            Some("day_ms,model,currency,requests,input_tokens,output_tokens,cached_input_tokens,reasoning_tokens,cost,market_cost")
        );
        assert_eq!(
            lines.next(),
            Some("86400000,\"gpt,5 \"\"mini\"\"\",usd,2,0,0,0,0,7,7")
        );
    }
}
