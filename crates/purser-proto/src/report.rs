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

/// RFC 4180 (written by the `csv` crate): a header line, CRLF line ends, fields quoted when they
/// hold a comma, a quote or a line break (quotes doubled).
pub fn csv(rows: &[ReportRow], group_by: &[String]) -> String {
    let bytes = match write_csv(rows, &columns(group_by)) {
        Ok(bytes) => bytes,
        Err(e) => unreachable!("writing CSV into memory cannot fail: {e}"),
    };
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => unreachable!("CSV of UTF-8 cells, quoted in ASCII, is UTF-8: {e}"),
    }
}

fn write_csv(rows: &[ReportRow], columns: &[&str]) -> csv::Result<Vec<u8>> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    writer.write_record(columns)?;
    for row in rows {
        writer.write_record(columns.iter().map(|c| cell(row, c)))?;
    }
    writer.into_inner().map_err(|e| e.into_error().into())
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

    #[test]
    fn csv_round_trips_cells_that_need_quoting() {
        let tags = [
            "team=a,b",
            "say \"hi\"",
            "two\nlines",
            "cr\rlf",
            "",
            "plain",
        ];
        let rows: Vec<ReportRow> = tags
            .iter()
            .map(|tag| ReportRow {
                tag: Some((*tag).into()),
                currency: "usd".into(),
                requests: 1,
                cost: 3,
                ..Default::default()
            })
            .collect();
        let group_by = ["tag".to_owned()];
        let text = csv(&rows, &group_by);
        assert!(text.starts_with("tag,currency,requests,"), "{text:?}");
        assert!(text.contains("\r\n\"team=a,b\",usd,1,"), "{text:?}");
        assert!(text.contains("\r\n\"say \"\"hi\"\"\",usd,"), "{text:?}");
        assert!(text.contains("\r\n\"two\nlines\",usd,"), "{text:?}");
        assert!(
            text.contains("\r\n,usd,1,"),
            "an empty cell stays unquoted: {text:?}"
        );
        assert!(text.contains("\r\nplain,usd,1,0,0,0,0,3,0\r\n"), "{text:?}");
        assert!(text.ends_with("\r\n"), "{text:?}");
        let mut reader = ::csv::Reader::from_reader(text.as_bytes());
        let header = reader.headers().expect("header").clone();
        assert_eq!(header.iter().collect::<Vec<_>>(), columns(&group_by));
        let read: Vec<String> = reader
            .records()
            .map(|r| r.expect("record")[0].to_owned())
            .collect();
        assert_eq!(read, tags);
        let expected = cells(&rows[0], &group_by);
        let first = ::csv::Reader::from_reader(text.as_bytes())
            .records()
            .next()
            .expect("a row")
            .expect("parses");
        assert_eq!(first.iter().collect::<Vec<_>>(), expected);
    }
}
