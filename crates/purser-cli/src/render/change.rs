//! The answers of the administrative mutations (the tree, limits, grants, webhooks): each
//! prints the acknowledgement's fields and then its own, or one line for people.

use serde_json::Value;

use super::{money_text, Ack, Obj, Render};
use crate::parse::format_time;

/// What one administrative mutation changed.
pub trait Change {
    /// The JSON fields after the acknowledgement's.
    fn fields(&self) -> Obj;
    /// The line for people.
    fn line(&self) -> String;
}

/// A change as the cluster acknowledged it.
pub struct Changed<C> {
    pub ack: Ack,
    pub change: C,
}

impl<C: Change> Render for Changed<C> {
    fn json(&self) -> Value {
        self.ack.obj().extend(self.change.fields()).value()
    }

    fn text(&self) -> String {
        let line = self.change.line();
        if self.ack.duplicate {
            format!("{line} (duplicate request: already applied)")
        } else {
            line
        }
    }
}

pub struct NodeCreated {
    pub node_id: u64,
    pub path: String,
    pub kind: String,
}

impl Change for NodeCreated {
    fn fields(&self) -> Obj {
        Obj::new()
            .set("node_id", self.node_id)
            .set("path", self.path.clone())
            .set("kind", self.kind.clone())
    }

    fn line(&self) -> String {
        format!(
            "created {} (node {}, {})",
            self.path, self.node_id, self.kind
        )
    }
}

pub struct NodeMoved {
    pub path: String,
    pub new_parent: String,
}

impl Change for NodeMoved {
    fn fields(&self) -> Obj {
        Obj::new()
            .set("path", self.path.clone())
            .set("new_parent", self.new_parent.clone())
    }

    fn line(&self) -> String {
        format!("moved {} under {}", self.path, self.new_parent)
    }
}

pub struct NodeStatusChanged {
    pub path: String,
    /// `closed`, `paused` or `resumed`.
    pub done: &'static str,
}

impl Change for NodeStatusChanged {
    fn fields(&self) -> Obj {
        Obj::new()
            .set("path", self.path.clone())
            .set("status_change", self.done)
    }

    fn line(&self) -> String {
        format!("{} {}", self.done, self.path)
    }
}

pub struct LimitSet {
    pub path: String,
    pub currency: String,
    pub window: String,
    pub mode: &'static str,
    pub amount: u64,
    pub scale: u32,
    pub thresholds: Vec<u32>,
    pub on_exhausted: &'static str,
}

impl Change for LimitSet {
    fn fields(&self) -> Obj {
        Obj::new()
            .set("path", self.path.clone())
            .set("currency", self.currency.clone())
            .set("window", self.window.clone())
            .set("mode", self.mode)
            .money("amount", self.amount, Some(self.scale))
            .set("thresholds", self.thresholds.clone())
            .set("on_exhausted", self.on_exhausted)
    }

    fn line(&self) -> String {
        format!(
            "limit on {}: {} per {} ({})",
            self.path,
            money_text(self.amount, Some(self.scale), &self.currency),
            self.window,
            self.mode
        )
    }
}

pub struct LimitRemoved {
    pub path: String,
    pub currency: String,
    pub window: String,
}

impl Change for LimitRemoved {
    fn fields(&self) -> Obj {
        Obj::new()
            .set("path", self.path.clone())
            .set("currency", self.currency.clone())
            .set("window", self.window.clone())
    }

    fn line(&self) -> String {
        format!(
            "removed the {} {} limit of {}",
            self.currency, self.window, self.path
        )
    }
}

pub struct GrantAdded {
    pub grant_id: u64,
    pub path: String,
    pub currency: String,
    pub kind: &'static str,
    pub priority: u32,
    pub amount: u64,
    pub scale: u32,
    pub effective_at_ms: Option<u64>,
    pub expires_at_ms: Option<u64>,
    pub recur: Option<&'static str>,
    pub rollover: String,
}

impl Change for GrantAdded {
    fn fields(&self) -> Obj {
        Obj::new()
            .set("grant_id", self.grant_id)
            .set("path", self.path.clone())
            .set("currency", self.currency.clone())
            .set("kind", self.kind)
            .set("priority", self.priority)
            .money("amount", self.amount, Some(self.scale))
            .time("effective_at", self.effective_at_ms)
            .time("expires_at", self.expires_at_ms)
            .set("recur", self.recur)
            .set("rollover", self.rollover.clone())
    }

    fn line(&self) -> String {
        let mut line = format!(
            "added grant {} to {}: {} ({}, priority {})",
            self.grant_id,
            self.path,
            money_text(self.amount, Some(self.scale), &self.currency),
            self.kind,
            self.priority
        );
        if let Some(ms) = self.expires_at_ms {
            line.push_str(&format!(", expires {}", format_time(ms)));
        }
        line
    }
}

pub struct WebhookAdded {
    pub webhook_id: u64,
    pub root: String,
    pub url: String,
    pub kinds: Vec<String>,
}

impl Change for WebhookAdded {
    fn fields(&self) -> Obj {
        Obj::new()
            .set("webhook_id", self.webhook_id)
            .set("root", self.root.clone())
            .set("url", self.url.clone())
            .set("kinds", self.kinds.clone())
    }

    fn line(&self) -> String {
        format!(
            "webhook {} delivers {} of {} to {}",
            self.webhook_id,
            self.kinds.join(", "),
            self.root,
            self.url
        )
    }
}

pub struct WebhookRemoved {
    pub webhook_id: u64,
}

impl Change for WebhookRemoved {
    fn fields(&self) -> Obj {
        Obj::new().set("webhook_id", self.webhook_id)
    }

    fn line(&self) -> String {
        format!("removed webhook {}", self.webhook_id)
    }
}
