//! `watch`: the event stream as JSON lines (NDJSON), whatever `--output` says.

use std::io::Write as _;

use purser_client::pb;
use serde_json::Value;

/// One event as one JSON object.
fn event_json(event: &pb::WatchEvent) -> Value {
    let fields: Value = serde_json::from_str(&event.json).unwrap_or(Value::Null);
    serde_json::json!({
        "index": event.index,
        "log_index": event.log_index,
        "at_ms": event.at_ms,
        "kind": event.kind,
        "node_id": event.node_id,
        "event": fields,
    })
}

/// One event on its own line, flushed at once: a consumer reading a pipe sees each event as
/// it comes.
pub fn print_event(event: &pb::WatchEvent) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", event_json(event))?;
    out.flush()
}
