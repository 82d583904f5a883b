//! Everything the CLI prints on stdout: JSON documents whose shapes `docs/cli.md` documents, or
//! text for people. Command modules parse and call; what they got back is handed here as a
//! value that implements [`Render`], and nothing else of the CLI writes to stdout (bar the
//! `watch` stream and CSV, which have their own line formats).
//!
//! Amounts appear in JSON twice, as a decimal string in major units and as the minor-unit
//! integer, so that scripts never parse a float and people can still read them.

use purser_client::{Acknowledged, Mutated};
use serde_json::{json, Map, Value};

use crate::parse::{format_amount, format_time};

pub mod budget;
pub mod change;
pub mod cluster;
pub mod meter;
pub mod names;
pub mod report;
pub mod token;
pub mod webhook;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// An answer as the CLI shows it.
pub trait Render {
    /// The one document `--output json` prints.
    fn json(&self) -> Value;
    /// Lines for people, without the final line break.
    fn text(&self) -> String;
}

pub fn print(format: Format, what: &impl Render) {
    match format {
        Format::Json => print_json(&what.json()),
        Format::Text => println!("{}", what.text()),
    }
}

pub fn print_json(value: &Value) {
    // Serializing a `Value` cannot fail: its keys are strings.
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// A JSON object under construction; keys keep their insertion order.
#[derive(Default)]
pub struct Obj(pub Map<String, Value>);

impl Obj {
    pub fn new() -> Self {
        Obj::default()
    }

    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.to_owned(), value.into());
        self
    }

    /// Every key of `other` after the keys already set.
    pub fn extend(mut self, other: Obj) -> Self {
        self.0.extend(other.0);
        self
    }

    /// `key` as a decimal string (null when the currency's scale is unknown) and `key_minor` as
    /// the integer.
    pub fn money(mut self, key: &str, minor: u64, scale: Option<u32>) -> Self {
        let decimal = scale.map_or(Value::Null, |s| Value::String(format_amount(minor, s)));
        self.0.insert(key.to_owned(), decimal);
        self.0.insert(format!("{key}_minor"), json!(minor));
        self
    }

    pub fn money_opt(self, key: &str, minor: Option<u64>, scale: Option<u32>) -> Self {
        match minor {
            Some(minor) => self.money(key, minor, scale),
            None => self
                .set(key, Value::Null)
                .set(&format!("{key}_minor"), Value::Null),
        }
    }

    /// `key_ms` as the integer and `key` as RFC 3339 (both null when absent).
    pub fn time(mut self, key: &str, ms: Option<u64>) -> Self {
        self.0.insert(format!("{key}_ms"), json!(ms));
        self.0.insert(key.to_owned(), json!(ms.map(format_time)));
        self
    }

    pub fn value(self) -> Value {
        Value::Object(self.0)
    }
}

impl From<Obj> for Value {
    fn from(o: Obj) -> Value {
        o.value()
    }
}

/// How the cluster acknowledged a mutation: the fields every mutation's JSON starts with.
pub struct Ack {
    pub request_id: String,
    pub sent_at_ms: u64,
    pub duplicate: bool,
    pub log_index: u64,
}

impl Ack {
    pub fn of<T: Acknowledged>(answer: &Mutated<T>) -> Ack {
        Ack {
            request_id: answer.request_id.clone(),
            sent_at_ms: answer.sent_at_ms,
            duplicate: answer.duplicate(),
            log_index: answer.log_index(),
        }
    }

    pub fn obj(&self) -> Obj {
        Obj::new()
            .set("request_id", self.request_id.clone())
            .set("sent_at_ms", self.sent_at_ms)
            .set("duplicate", self.duplicate)
            .set("log_index", self.log_index)
    }
}

/// A money amount for text output: `1.25 usd`, or minor units when the scale is unknown.
pub fn money_text(minor: u64, scale: Option<u32>, currency: &str) -> String {
    match scale {
        Some(scale) => format!("{} {currency}", format_amount(minor, scale)),
        None => format!("{minor} minor units of {currency}"),
    }
}

/// Left-aligned columns two spaces apart under a header, without borders, and no trailing
/// spaces: the look of `ls -l`, which reads well and survives copy and paste.
pub fn table<S: Into<String>>(header: &[&str], rows: impl IntoIterator<Item = Vec<S>>) -> String {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_header(header.to_vec())
        .add_rows(
            rows.into_iter()
                .map(|row| row.into_iter().map(Into::into).collect::<Vec<String>>()),
        );
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table.trim_fmt()
}

/// A titled table indented by two spaces, as `show` prints each part of a node; nothing when
/// there are no rows.
pub fn section(title: &str, header: &[&str], rows: Vec<Vec<String>>) -> Option<String> {
    if rows.is_empty() {
        return None;
    }
    Some(format!("{title}:\n{}", indented(&table(header, rows))))
}

/// Every line two spaces in: a table under the line that introduces it.
pub fn indented(text: &str) -> String {
    let lines: Vec<String> = text.lines().map(|line| format!("  {line}")).collect();
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_left_two_spaces_apart_without_trailing_spaces() {
        let rows = vec![
            vec!["1", "leader", "127.0.0.1:7700"],
            vec!["12", "unreachable", ""],
        ];
        assert_eq!(
            table(&["ID", "ROLE", "PEER"], rows),
            "ID  ROLE         PEER\n\
             1   leader       127.0.0.1:7700\n\
             12  unreachable"
        );
        let short: Vec<Vec<String>> = vec![vec!["a".into()]];
        assert_eq!(table(&["X", "LONGER"], short), "X  LONGER\na");
    }
}
