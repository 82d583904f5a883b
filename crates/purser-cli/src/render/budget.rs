//! The request path's answers (granted, denied, settled, released) and `show`'s node view.

use purser_client::pb;
use serde_json::{json, Value};

use super::{money_text, names, section, Ack, Obj, Render};
use crate::parse::{self, format_amount, format_duration, format_time, format_window};

/// The scale of `currency` among a node's accounts (its root's currencies).
pub fn scale_of(view: &pb::NodeView, currency: &str) -> Option<u32> {
    view.accounts
        .iter()
        .find(|a| a.currency == currency)
        .map(|a| a.scale)
}

fn part_json(p: &pb::FundingPart, scale: Option<u32>) -> Value {
    Obj::new()
        .set("grant_id", p.grant_id)
        .set("node_id", p.node_id)
        .money("amount", p.amount, scale)
        .value()
}

/// What a reserve or a charge asked for, and how the cluster acknowledged it: the context a
/// grant or a denial is printed in.
pub struct Asked<'a> {
    pub ack: Ack,
    pub path: &'a str,
    pub currency: &'a str,
    pub scale: u32,
}

impl Asked<'_> {
    /// The fields a grant's or a denial's JSON starts with.
    fn obj(&self, result: &str) -> Obj {
        self.ack
            .obj()
            .set("path", self.path)
            .set("currency", self.currency)
            .set("result", result)
    }
}

/// A reservation that was granted.
pub struct Granted<'a> {
    pub asked: Asked<'a>,
    pub granted: &'a pb::Granted,
}

impl Render for Granted<'_> {
    fn json(&self) -> Value {
        let (g, s) = (self.granted, Some(self.asked.scale));
        let plan: Vec<Value> = g.plan.iter().map(|p| part_json(p, s)).collect();
        let headroom: Vec<Value> = g
            .headroom
            .iter()
            .map(|h| {
                Obj::new()
                    .set("node_id", h.node_id)
                    .money_opt("remaining", h.remaining, s)
                    .value()
            })
            .collect();
        self.asked
            .obj("granted")
            .set("reservation_id", g.reservation_id)
            .set("node_id", g.node_id)
            .money("amount", g.amount, s)
            .time("expires_at", Some(g.expires_at_ms))
            .set("plan", plan)
            .set("headroom", headroom)
            .value()
    }

    fn text(&self) -> String {
        let Asked {
            ack,
            path,
            currency,
            scale,
        } = &self.asked;
        let (g, s) = (self.granted, Some(*scale));
        let dup = if ack.duplicate {
            " (duplicate request: first outcome)"
        } else {
            ""
        };
        let mut lines = vec![format!(
            "granted: reservation {} holds {} at {}, expires {}{dup}",
            g.reservation_id,
            money_text(g.amount, s, currency),
            path,
            format_time(g.expires_at_ms)
        )];
        for p in &g.plan {
            lines.push(format!(
                "  funded by grant {} (node {}): {}",
                p.grant_id,
                p.node_id,
                money_text(p.amount, s, currency)
            ));
        }
        for h in &g.headroom {
            if let Some(left) = h.remaining {
                let left = money_text(left, s, currency);
                lines.push(format!("  headroom at node {}: {left}", h.node_id));
            }
        }
        lines.join("\n")
    }
}

/// A reservation or charge that was refused, and why.
pub struct Denial<'a> {
    pub asked: Asked<'a>,
    pub denied: &'a pb::Denied,
}

impl Render for Denial<'_> {
    fn json(&self) -> Value {
        let (d, s) = (self.denied, Some(self.asked.scale));
        let nonempty = |text: &str| (!text.is_empty()).then(|| text.to_owned());
        let denial = Obj::new()
            .set("node_id", d.node_id)
            .set("node_path", d.node_path.clone())
            .set("rule", names::rule(d.rule))
            .set("role", nonempty(&d.role))
            .set("rate_key", nonempty(&d.rate_key))
            .set("window", d.window.as_ref().map(|w| format_window(Some(w))))
            .money("remaining", d.remaining, s)
            .money("requested", d.requested, s)
            .set("retry_after_ms", d.retry_after_ms)
            .set("retry_after", d.retry_after_ms.map(format_duration));
        self.asked
            .obj("denied")
            .set("denial", denial.value())
            .value()
    }

    fn text(&self) -> String {
        let (d, s, currency) = (self.denied, Some(self.asked.scale), self.asked.currency);
        let mut why = names::rule(d.rule).to_owned();
        if let Some(w) = &d.window {
            why.push_str(&format!(" ({})", format_window(Some(w))));
        }
        if !d.role.is_empty() {
            why.push_str(&format!(" of role {}", d.role));
        }
        if !d.rate_key.is_empty() {
            why.push_str(&format!(" on key {}", d.rate_key));
        }
        let mut line = format!("denied: {why} at {}", d.node_path);
        let status = [
            pb::DenyRule::NodeClosed as i32,
            pb::DenyRule::NodePaused as i32,
        ];
        if !status.contains(&d.rule) {
            line.push_str(&format!(
                ": {} left, {} requested",
                money_text(d.remaining, s, currency),
                money_text(d.requested, s, currency)
            ));
        }
        if let Some(ms) = d.retry_after_ms {
            // Whole seconds, rounded up, are what a person waits; JSON keeps the exact value.
            let seconds = ms.div_ceil(1000) * 1000;
            line.push_str(&format!(", retry after {}", format_duration(seconds)));
        }
        line
    }
}

/// A settled hold (`commit`) or a charge.
pub struct Settled<'a> {
    pub ack: Ack,
    /// The node of a charge; a settle names its reservation instead.
    pub path: Option<&'a str>,
    /// `settled` or `charged`.
    pub result: &'static str,
    /// The reservation settled, when the settlement does not say (0 for a charge).
    pub reservation_id: u64,
    pub currency: &'a str,
    /// None when the CLI could not learn it (a late settle): amounts print in minor units.
    pub scale: Option<u32>,
    pub settlement: &'a pb::Settlement,
}

impl Settled<'_> {
    fn reservation_id(&self) -> Option<u64> {
        let asked = (self.reservation_id != 0).then_some(self.reservation_id);
        self.settlement.reservation_id.or(asked)
    }
}

impl Render for Settled<'_> {
    fn json(&self) -> Value {
        let (s, scale) = (self.settlement, self.scale);
        let plan: Vec<Value> = s.plan.iter().map(|p| part_json(p, scale)).collect();
        let mut obj = self.ack.obj();
        if let Some(path) = self.path {
            obj = obj.set("path", path);
        }
        obj.set("result", self.result)
            .set("reservation_id", self.reservation_id())
            .set("node_id", s.node_id)
            .set("currency", self.currency)
            .money("charged", s.charged, scale)
            .money("released", s.released, scale)
            .money("overrun", s.overrun, scale)
            .money("debt", s.debt, scale)
            .set("late", s.late)
            .set("plan", plan)
            .value()
    }

    fn text(&self) -> String {
        let (s, scale, currency) = (self.settlement, self.scale, self.currency);
        let money = |minor| money_text(minor, scale, currency);
        let what = match self.reservation_id() {
            Some(id) => format!("reservation {id}"),
            None => "charge".to_owned(),
        };
        let mut line = format!("settled {what}: charged {}", money(s.charged));
        for (name, minor) in [
            ("released", s.released),
            ("overrun", s.overrun),
            ("debt", s.debt),
        ] {
            if minor > 0 {
                line.push_str(&format!(", {name} {}", money(minor)));
            }
        }
        if s.late {
            line.push_str(" (late: the hold had expired)");
        }
        let mut lines = vec![line];
        for p in &s.plan {
            lines.push(format!(
                "  paid by grant {} (node {}): {}",
                p.grant_id,
                p.node_id,
                money(p.amount)
            ));
        }
        lines.join("\n")
    }
}

/// A released hold.
pub struct Released<'a> {
    pub ack: Ack,
    pub reservation_id: u64,
    /// Empty, and the scale unknown, when the hold could not be looked up first.
    pub currency: &'a str,
    pub scale: Option<u32>,
    pub amount: u64,
}

impl Render for Released<'_> {
    fn json(&self) -> Value {
        self.ack
            .obj()
            .set("result", "released")
            .set("reservation_id", self.reservation_id)
            .set("currency", self.currency)
            .money("amount", self.amount, self.scale)
            .value()
    }

    fn text(&self) -> String {
        format!(
            "released reservation {}: {}",
            self.reservation_id,
            money_text(self.amount, self.scale, self.currency)
        )
    }
}

/// `show`: a node's status, balances, limits, rate limits and grants.
pub struct Shown<'a>(pub &'a pb::NodeView);

impl Shown<'_> {
    fn scale(&self, currency: &str) -> Option<u32> {
        scale_of(self.0, currency)
    }

    /// An amount of a text table: minor units, marked, when the currency is unknown.
    fn amount(&self, minor: u64, currency: &str) -> String {
        match self.scale(currency) {
            Some(s) => format_amount(minor, s),
            None => format!("{minor} (minor)"),
        }
    }
}

impl Render for Shown<'_> {
    fn json(&self) -> Value {
        let v = self.0;
        let tags: Vec<Value> = v
            .tags
            .iter()
            .map(|t| json!({"key": t.key, "value": t.value}))
            .collect();
        let accounts: Vec<Value> = v.accounts.iter().map(account_json).collect();
        let limits: Vec<Value> = v
            .limits
            .iter()
            .map(|l| limit_json(l, self.scale(&l.currency)))
            .collect();
        let rate_limits: Vec<Value> = v
            .rate_limits
            .iter()
            .map(|r| rate_limit_json(r, |c| self.scale(c)))
            .collect();
        let grants: Vec<Value> = v
            .grants
            .iter()
            .map(|g| grant_json(g, self.scale(&g.currency)))
            .collect();
        Obj::new()
            .set("id", v.id)
            .set("path", v.path.clone())
            .set("parent_id", v.parent_id)
            .set("root_id", v.root_id)
            .set("depth", v.depth)
            .set("kind", v.kind.clone())
            .set("status", names::status(v.status))
            .set("tags", tags)
            .set("roles", v.roles.clone())
            .set("children", v.children)
            .set("holds_open", v.holds_open)
            .set("accounts", accounts)
            .set("limits", limits)
            .set("rate_limits", rate_limits)
            .set("grants", grants)
            .value()
    }

    fn text(&self) -> String {
        let mut parts = vec![self.heading()];
        parts.extend(self.accounts_table());
        parts.extend(self.limits_table());
        parts.extend(self.rate_limits_table());
        parts.extend(self.grants_table());
        parts.join("\n")
    }
}

fn account_json(a: &pb::AccountView) -> Value {
    let s = Some(a.scale);
    Obj::new()
        .set("currency", a.currency.clone())
        .set("scale", a.scale)
        .set("funded", a.funded)
        .money("held", a.held, s)
        .money("spent_total", a.spent_total, s)
        .money("debt", a.debt, s)
        .value()
}

fn limit_json(l: &pb::LimitView, s: Option<u32>) -> Value {
    Obj::new()
        .set("role", l.role.clone())
        .set("currency", l.currency.clone())
        .set("window", format_window(l.window.as_ref()))
        .set("mode", names::mode(l.mode))
        .money("amount", l.amount, s)
        .money("spent", l.spent, s)
        .money("held", l.held, s)
        .money("remaining", l.remaining, s)
        .set("thresholds", l.thresholds.clone())
        .set("on_exhausted", names::on_exhausted(l.on_exhausted))
        .time("window_start", l.window_start_ms)
        .time("window_end", l.window_end_ms)
        .value()
}

fn rate_limit_json(r: &pb::RateLimitView, scale: impl Fn(&str) -> Option<u32>) -> Value {
    let (kind, currency) = names::rate_kind(r.kind.as_ref());
    // A request-rate limit counts requests: its amounts are plain integers.
    let s = currency.map_or(Some(0), scale);
    Obj::new()
        .set("key", r.key.clone())
        .set("kind", kind)
        .money("amount", r.amount, s)
        .set("period_ms", r.period_ms)
        .set("period", format_duration(r.period_ms))
        .money("available", r.available, s)
        .value()
}

fn grant_json(g: &pb::GrantView, s: Option<u32>) -> Value {
    Obj::new()
        .set("id", g.id)
        .set("node_id", g.node_id)
        .set("currency", g.currency.clone())
        .set("kind", names::grant_kind(g.kind))
        .set("priority", g.priority)
        .money("amount", g.amount, s)
        .money("remaining", g.remaining, s)
        .money("held", g.held, s)
        .time("effective_at", Some(g.effective_at_ms))
        .time("expires_at", g.expires_at_ms)
        .set("recur", g.recur.map(parse::period_name))
        .set("rollover", parse::format_rollover(g.rollover.as_ref()))
        .time("next_renewal", g.next_renewal_ms)
        .set("expired", g.expired)
        .value()
}

impl Shown<'_> {
    fn heading(&self) -> String {
        let v = self.0;
        let parent = v
            .parent_id
            .map_or("none (a root)".to_owned(), |p| p.to_string());
        let mut lines = vec![
            format!(
                "{}  (node {}, {}, {})",
                v.path,
                v.id,
                v.kind,
                names::status(v.status)
            ),
            format!(
                "parent: {parent}  root: {}  depth: {}  children: {}  open holds: {}",
                v.root_id, v.depth, v.children, v.holds_open
            ),
        ];
        if !v.tags.is_empty() {
            let tags: Vec<String> = v
                .tags
                .iter()
                .map(|t| format!("{}={}", t.key, t.value))
                .collect();
            lines.push(format!("tags: {}", tags.join(", ")));
        }
        if !v.roles.is_empty() {
            lines.push(format!("roles: {}", v.roles.join(", ")));
        }
        lines.join("\n")
    }

    fn accounts_table(&self) -> Option<String> {
        let rows = self.0.accounts.iter().map(|a| {
            vec![
                a.currency.clone(),
                a.scale.to_string(),
                if a.funded { "funded" } else { "capped" }.into(),
                format_amount(a.held, a.scale),
                format_amount(a.spent_total, a.scale),
                format_amount(a.debt, a.scale),
            ]
        });
        let header = ["CURRENCY", "SCALE", "TYPE", "HELD", "SPENT", "DEBT"];
        section("accounts", &header, rows.collect())
    }

    fn limits_table(&self) -> Option<String> {
        let rows = self.0.limits.iter().map(|l| {
            let amount = |minor| self.amount(minor, &l.currency);
            vec![
                l.currency.clone(),
                format_window(l.window.as_ref()),
                names::mode(l.mode).into(),
                amount(l.amount),
                amount(l.spent),
                amount(l.held),
                amount(l.remaining),
                l.window_end_ms.map_or("-".into(), format_time),
                l.role
                    .as_ref()
                    .map_or("own".into(), |r| format!("role {r}")),
            ]
        });
        let header = [
            "CURRENCY",
            "WINDOW",
            "MODE",
            "AMOUNT",
            "SPENT",
            "HELD",
            "REMAINING",
            "RESETS",
            "FROM",
        ];
        section("limits", &header, rows.collect())
    }

    fn rate_limits_table(&self) -> Option<String> {
        let rows = self.0.rate_limits.iter().map(|r| {
            let (kind, currency) = names::rate_kind(r.kind.as_ref());
            let n = |x: u64| currency.map_or(x.to_string(), |c| self.amount(x, c));
            vec![
                r.key.clone(),
                kind,
                n(r.amount),
                format_duration(r.period_ms),
                n(r.available),
            ]
        });
        let header = ["KEY", "KIND", "AMOUNT", "PERIOD", "AVAILABLE"];
        section("rate limits", &header, rows.collect())
    }

    fn grants_table(&self) -> Option<String> {
        let rows = self.0.grants.iter().map(|g| {
            let amount = |minor| self.amount(minor, &g.currency);
            let mut expires = g.expires_at_ms.map_or("never".into(), format_time);
            if g.expired {
                expires.push_str(" (expired)");
            }
            vec![
                g.id.to_string(),
                g.currency.clone(),
                names::grant_kind(g.kind).into(),
                g.priority.to_string(),
                amount(g.amount),
                amount(g.remaining),
                amount(g.held),
                expires,
                g.recur.map_or("-", parse::period_name).into(),
            ]
        });
        let header = [
            "ID",
            "CURRENCY",
            "KIND",
            "PRIORITY",
            "AMOUNT",
            "REMAINING",
            "HELD",
            "EXPIRES",
            "RECUR",
        ];
        section("grants", &header, rows.collect())
    }
}
