//! A root's webhooks as `webhook list` shows them, and what each endpoint answered a
//! `webhook test`.

use purser_client::pb;
use serde_json::Value;

use super::{indented, table, Obj, Render};

pub struct Listed<'a> {
    pub root: &'a str,
    pub list: &'a pb::ListWebhooksResponse,
}

impl Render for Listed<'_> {
    fn json(&self) -> Value {
        let hooks: Vec<Value> = self
            .list
            .webhooks
            .iter()
            .map(|w| {
                Obj::new()
                    .set("id", w.id)
                    .set("root_id", w.root_id)
                    .set("root", w.root_path.clone())
                    .set("url", w.url.clone())
                    .set("kinds", w.kinds.clone())
                    .set("delivered_through", w.delivered_through)
                    .value()
            })
            .collect();
        Obj::new()
            .set("root", self.root)
            .set("events_written", self.list.events_written)
            .set("webhooks", hooks)
            .value()
    }

    fn text(&self) -> String {
        let (root, list) = (self.root, self.list);
        if list.webhooks.is_empty() {
            return format!("{root} has no webhooks");
        }
        let rows = list.webhooks.iter().map(|w| {
            vec![
                w.id.to_string(),
                w.delivered_through.to_string(),
                w.url.clone(),
                w.kinds.join(","),
            ]
        });
        let hooks = table(&["ID", "DELIVERED_THROUGH", "URL", "KINDS"], rows);
        format!(
            "{root}: events written up to {}\n{}",
            list.events_written,
            indented(&hooks)
        )
    }
}

/// Whether an endpoint accepted the test ping.
pub fn answered_2xx(t: &pb::WebhookTestResult) -> bool {
    (200..300).contains(&t.http_status)
}

pub struct Tested<'a> {
    /// The webhook id or root that was asked for.
    pub target: &'a str,
    pub results: &'a [pb::WebhookTestResult],
}

impl Render for Tested<'_> {
    fn json(&self) -> Value {
        let results: Vec<Value> = self
            .results
            .iter()
            .map(|t| {
                Obj::new()
                    .set("webhook_id", t.webhook_id)
                    .set("url", t.url.clone())
                    .set("ok", answered_2xx(t))
                    .set("http_status", (t.http_status != 0).then_some(t.http_status))
                    .set("error", (!t.error.is_empty()).then(|| t.error.clone()))
                    .set("elapsed_ms", t.elapsed_ms)
                    .value()
            })
            .collect();
        Obj::new().set("results", results).value()
    }

    fn text(&self) -> String {
        if self.results.is_empty() {
            return format!("{} has no webhooks", self.target);
        }
        let lines: Vec<String> = self
            .results
            .iter()
            .map(|t| {
                let answer = if t.http_status != 0 {
                    format!("HTTP {}", t.http_status)
                } else {
                    format!("no answer: {}", t.error)
                };
                format!(
                    "webhook {} {}: {answer} in {} ms",
                    t.webhook_id, t.url, t.elapsed_ms
                )
            })
            .collect();
        lines.join("\n")
    }
}
