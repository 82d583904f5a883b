//! Machine output on stdout: JSON objects whose shapes `docs/cli.md` documents, or text for
//! people. Amounts appear in JSON twice, as a decimal string in major units and as the
//! minor-unit integer, so that scripts never parse a float and people can still read them.

use serde_json::{json, Map, Value};

use crate::parse::{format_amount, format_time};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
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

pub fn print_json(value: &Value) {
    // Serializing a `Value` cannot fail: its keys are strings.
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// A money amount for text output: `1.25 usd`, or minor units when the scale is unknown.
pub fn money_text(minor: u64, scale: Option<u32>, currency: &str) -> String {
    match scale {
        Some(scale) => format!("{} {currency}", format_amount(minor, scale)),
        None => format!("{minor} minor units of {currency}"),
    }
}

/// Left-aligned columns, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = vec![line(header.to_vec())];
    for row in rows {
        out.push(line(row.iter().map(String::as_str).collect()));
    }
    out.join("\n")
}
