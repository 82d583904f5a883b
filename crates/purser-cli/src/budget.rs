//! The request path: reserve, commit, release, charge, and `show`.

use std::collections::HashMap;

use clap::Args;
use purser_client::{new_request_id, now_ms, pb};
use serde_json::{json, Value};

use crate::output::{money_text, print_json, table, Obj};
use crate::parse::{self, format_amount, format_duration, format_time, format_window, to_wire};
use crate::{CliError, Ctx, Done};

/// The idempotency key of a mutating command.
#[derive(Args, Clone, Debug)]
pub struct RequestArgs {
    /// Request id, reused to retry safely: the cluster answers a retry with the first outcome.
    /// Generated when absent.
    #[arg(long, value_name = "ID")]
    pub request_id: Option<String>,
    /// When the request was first sent (ms since the epoch), for a retry of an earlier
    /// attempt: the cluster refuses a request older than its retention, so that a forgotten
    /// id can never apply twice. Defaults to now.
    #[arg(long, value_name = "MS")]
    pub sent_at_ms: Option<u64>,
}

/// Request id and first-sent time, fixed once per invocation.
pub struct Meta {
    pub request_id: String,
    pub sent_at_ms: u64,
}

impl RequestArgs {
    pub fn meta(&self) -> Meta {
        Meta {
            request_id: self.request_id.clone().unwrap_or_else(new_request_id),
            sent_at_ms: self.sent_at_ms.unwrap_or_else(now_ms),
        }
    }
}

impl Meta {
    /// The fields every mutation's JSON carries.
    pub fn obj(&self, duplicate: bool, log_index: u64) -> Obj {
        Obj::new()
            .set("request_id", self.request_id.clone())
            .set("sent_at_ms", self.sent_at_ms)
            .set("duplicate", duplicate)
            .set("log_index", log_index)
    }
}

pub async fn show_node(ctx: &Ctx, node: pb::NodeRef) -> Result<pb::NodeView, CliError> {
    let response = rpc!(
        ctx,
        budget_client::BudgetClient,
        show,
        pb::ShowRequest {
            node: Some(node),
            allow_stale: false
        }
    )?;
    response
        .node
        .ok_or_else(|| "the server answered Show without a node".into())
}

/// The scale of `currency` as the node's root declares it.
pub fn scale_in(view: &pb::NodeView, currency: &str) -> Result<u32, CliError> {
    view.accounts
        .iter()
        .find(|a| a.currency == currency)
        .map(|a| a.scale)
        .ok_or_else(|| {
            let declared: Vec<String> = view
                .accounts
                .iter()
                .map(|a| format!("{}:{}", a.currency, a.scale))
                .collect();
            CliError(format!(
                "{} has no currency {currency:?} (its root declares {})",
                view.path,
                declared.join(", ")
            ))
        })
}

/// A node's view and the scale of one of its currencies: the CLI's way to turn decimals into
/// minor units. It also refuses an unknown node before any write is attempted.
pub async fn node_scale(
    ctx: &Ctx,
    path: &str,
    currency: &str,
) -> Result<(pb::NodeView, u32), CliError> {
    let path = parse::node_path(path)?;
    let view = show_node(ctx, parse::node_ref(&path)).await?;
    let scale = scale_in(&view, currency)?;
    Ok((view, scale))
}

/// The open hold of a reservation with the scale of its currency; `None` when the cluster
/// has no open hold by that id (settled, released, expired or unknown).
async fn hold_scale(
    ctx: &Ctx,
    reservation_id: u64,
) -> Result<Option<(pb::HoldView, u32)>, CliError> {
    let request = pb::HoldsRequest {
        target: Some(pb::holds_request::Target::ReservationId(reservation_id)),
        allow_stale: false,
    };
    let holds = match rpc!(ctx, budget_client::BudgetClient, holds, request) {
        Ok(response) => response.holds,
        Err(purser_client::ClientError::Status(s)) if s.code() == tonic::Code::NotFound => vec![],
        Err(e) => return Err(e.into()),
    };
    let Some(hold) = holds
        .into_iter()
        .find(|h| h.reservation_id == reservation_id)
    else {
        return Ok(None);
    };
    let view = show_node(ctx, parse::node_id_ref(hold.node_id)).await?;
    let scale = scale_in(&view, &hold.currency)?;
    Ok(Some((hold, scale)))
}

// ---- reserve -----------------------------------------------------------------------------

#[derive(Args)]
pub struct ReserveArgs {
    /// The node that spends, e.g. acme/research/alice.
    pub path: String,
    /// A currency of the node's root, e.g. usd.
    #[arg(long)]
    pub currency: String,
    /// Exactly this much, or a denial.
    #[arg(long, allow_negative_numbers = true, conflicts_with_all = ["min", "max"])]
    pub amount: Option<String>,
    /// With --max: the largest amount in [min, max] that passes every check.
    #[arg(long, allow_negative_numbers = true, requires = "max")]
    pub min: Option<String>,
    /// With --min: the most to hold.
    #[arg(long, allow_negative_numbers = true, requires = "min")]
    pub max: Option<String>,
    /// How long the hold lives unless committed or released.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub ttl: String,
    /// Attribution: user, model, provider, credential_type, or any other key as a tag.
    #[arg(long = "attr", value_name = "KEY=VALUE")]
    pub attrs: Vec<String>,
    #[command(flatten)]
    pub request: RequestArgs,
}

pub async fn reserve(ctx: &Ctx, a: ReserveArgs) -> Result<Done, CliError> {
    let amount_of = |text: &str, scale: u32, flag: &str| {
        parse::amount(text, scale, &a.currency).map_err(|e| CliError(format!("{flag}: {e}")))
    };
    // Everything that needs no server is checked first: a typo never costs a round trip.
    let ttl_ms = parse::duration_ms(&a.ttl).map_err(|e| format!("--ttl: {e}"))?;
    let attributes = parse::attributes(&a.attrs)?;
    parse::node_path(&a.path)?;
    if a.amount.is_none() && a.min.is_none() {
        return Err("give --amount, or --min and --max".into());
    }
    for (flag, text) in [
        ("--amount", &a.amount),
        ("--min", &a.min),
        ("--max", &a.max),
    ] {
        if let Some(text) = text {
            parse::amount_syntax(text).map_err(|e| format!("{flag}: {e}"))?;
        }
    }
    let (_, scale) = node_scale(ctx, &a.path, &a.currency).await?;
    let amount = match (&a.amount, &a.min, &a.max) {
        (Some(x), _, _) => {
            pb::reserve_request::Amount::Exact(to_wire(amount_of(x, scale, "--amount")?))
        }
        (None, Some(min), Some(max)) => pb::reserve_request::Amount::Range(pb::AmountRange {
            min: to_wire(amount_of(min, scale, "--min")?),
            max: to_wire(amount_of(max, scale, "--max")?),
        }),
        _ => return Err("give --amount, or --min and --max".into()),
    };
    let meta = a.request.meta();
    let request = pb::ReserveRequest {
        request_id: meta.request_id.clone(),
        sent_at_ms: meta.sent_at_ms,
        node: Some(parse::node_ref(&a.path)),
        currency: a.currency.clone(),
        amount: Some(amount),
        ttl_ms,
        attributes: Some(attributes),
    };
    let response = rpc!(ctx, budget_client::BudgetClient, reserve, request)?;
    let base = meta
        .obj(response.duplicate, response.log_index)
        .set("path", a.path.clone())
        .set("currency", a.currency.clone());
    match response.result {
        Some(pb::reserve_response::Result::Granted(g)) => {
            let s = Some(scale);
            if ctx.json() {
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
                let obj = base
                    .set("result", "granted")
                    .set("reservation_id", g.reservation_id)
                    .set("node_id", g.node_id)
                    .money("amount", g.amount, s)
                    .time("expires_at", Some(g.expires_at_ms))
                    .set("plan", plan)
                    .set("headroom", headroom);
                print_json(&obj.value());
            } else {
                let dup = if response.duplicate {
                    " (duplicate request: first outcome)"
                } else {
                    ""
                };
                println!(
                    "granted: reservation {} holds {} at {}, expires {}{dup}",
                    g.reservation_id,
                    money_text(g.amount, s, &a.currency),
                    a.path,
                    format_time(g.expires_at_ms)
                );
                for p in &g.plan {
                    println!(
                        "  funded by grant {} (node {}): {}",
                        p.grant_id,
                        p.node_id,
                        money_text(p.amount, s, &a.currency)
                    );
                }
                for h in &g.headroom {
                    if let Some(left) = h.remaining {
                        println!(
                            "  headroom at node {}: {}",
                            h.node_id,
                            money_text(left, s, &a.currency)
                        );
                    }
                }
            }
            Ok(Done::Ok)
        }
        Some(pb::reserve_response::Result::Denied(d)) => {
            print_denial(ctx, base, &d, scale, &a.currency);
            Ok(Done::Denied)
        }
        None => Err("the server answered Reserve without a result".into()),
    }
}

fn part_json(p: &pb::FundingPart, scale: Option<u32>) -> Value {
    Obj::new()
        .set("grant_id", p.grant_id)
        .set("node_id", p.node_id)
        .money("amount", p.amount, scale)
        .value()
}

pub fn rule_name(rule: i32) -> &'static str {
    match pb::DenyRule::try_from(rule) {
        Ok(pb::DenyRule::NodeClosed) => "node_closed",
        Ok(pb::DenyRule::NodePaused) => "node_paused",
        Ok(pb::DenyRule::RateLimit) => "rate_limit",
        Ok(pb::DenyRule::Cap) => "cap",
        Ok(pb::DenyRule::RoleCap) => "role_cap",
        Ok(pb::DenyRule::Funding) => "funding",
        _ => "unknown",
    }
}

fn print_denial(ctx: &Ctx, base: Obj, d: &pb::Denied, scale: u32, currency: &str) {
    let s = Some(scale);
    let nonempty = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    if ctx.json() {
        let denial = Obj::new()
            .set("node_id", d.node_id)
            .set("node_path", d.node_path.clone())
            .set("rule", rule_name(d.rule))
            .set("role", nonempty(&d.role))
            .set("rate_key", nonempty(&d.rate_key))
            .set("window", d.window.as_ref().map(|w| format_window(Some(w))))
            .money("remaining", d.remaining, s)
            .money("requested", d.requested, s)
            .set("retry_after_ms", d.retry_after_ms)
            .set("retry_after", d.retry_after_ms.map(format_duration));
        print_json(
            &base
                .set("result", "denied")
                .set("denial", denial.value())
                .value(),
        );
        return;
    }
    let mut why = rule_name(d.rule).to_owned();
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
    println!("{line}");
}

// ---- commit / release --------------------------------------------------------------------

#[derive(Args)]
pub struct CommitArgs {
    /// The reservation id that `reserve` printed.
    pub reservation_id: u64,
    /// The actual cost, in major units of the hold's currency (0 is allowed).
    #[arg(long, allow_negative_numbers = true, conflicts_with_all = ["tokens", "amount_minor"])]
    pub amount: Option<String>,
    /// The actual cost in minor units: settles a hold that already expired (a late settle),
    /// whose currency the CLI can no longer look up.
    #[arg(long, allow_negative_numbers = true, conflicts_with = "tokens")]
    pub amount_minor: Option<i64>,
    /// Token usage priced by the root's price book:
    /// model=M,input=N,output=N[,cached=N][,reasoning=N][,provider=P].
    #[arg(long, value_name = "USAGE")]
    pub tokens: Option<String>,
    #[command(flatten)]
    pub request: RequestArgs,
}

pub async fn commit(ctx: &Ctx, a: CommitArgs) -> Result<Done, CliError> {
    let mut tokens = a.tokens.as_deref().map(parse::tokens).transpose()?;
    if a.amount.is_none() && a.amount_minor.is_none() && tokens.is_none() {
        return Err("give --amount, --amount-minor or --tokens".into());
    }
    if let Some(text) = &a.amount {
        parse::amount_syntax(text).map_err(|e| format!("--amount: {e}"))?;
    }
    let hold = hold_scale(ctx, a.reservation_id).await?;
    let actual = match (&a.amount, a.amount_minor, &mut tokens) {
        (Some(text), _, _) => {
            let Some((hold, scale)) = &hold else {
                return Err(CliError(format!(
                    "reservation {} has no open hold (settled, released, expired or unknown); \
                     a late settle of an expired hold takes --amount-minor",
                    a.reservation_id
                )));
            };
            let minor = parse::amount(text, *scale, &hold.currency)
                .map_err(|e| format!("--amount: {e}"))?;
            pb::commit_request::Actual::Amount(to_wire(minor))
        }
        (None, Some(minor), _) => pb::commit_request::Actual::Amount(minor),
        (None, None, Some(usage)) => {
            // The price book is keyed by provider: default to the one the hold was made for.
            if usage.provider.is_empty() {
                if let Some(provider) = hold
                    .as_ref()
                    .and_then(|(h, _)| h.attributes.as_ref())
                    .and_then(|attrs| attrs.provider.clone())
                {
                    usage.provider = provider;
                }
            }
            pb::commit_request::Actual::Tokens(usage.clone())
        }
        (None, None, None) => return Err("give --amount, --amount-minor or --tokens".into()),
    };
    let meta = a.request.meta();
    let request = pb::CommitRequest {
        request_id: meta.request_id.clone(),
        sent_at_ms: meta.sent_at_ms,
        reservation_id: a.reservation_id,
        actual: Some(actual),
    };
    let response = rpc!(ctx, budget_client::BudgetClient, commit, request)?;
    let settlement = response.settlement.unwrap_or_default();
    let scale = match &hold {
        Some((_, scale)) => Some(*scale),
        None => settlement_scale(ctx, &settlement).await,
    };
    let currency = hold
        .as_ref()
        .map_or(settlement.currency.clone(), |(h, _)| h.currency.clone());
    let base = meta
        .obj(response.duplicate, response.log_index)
        .set("result", "settled");
    print_settlement(ctx, base, &settlement, scale, &currency, a.reservation_id);
    Ok(Done::Ok)
}

/// The scale of a settlement's currency, for a hold the CLI could not look up beforehand.
async fn settlement_scale(ctx: &Ctx, s: &pb::Settlement) -> Option<u32> {
    if s.node_id == 0 || s.currency.is_empty() {
        return None;
    }
    let view = show_node(ctx, parse::node_id_ref(s.node_id)).await.ok()?;
    scale_in(&view, &s.currency).ok()
}

fn print_settlement(
    ctx: &Ctx,
    base: Obj,
    s: &pb::Settlement,
    scale: Option<u32>,
    currency: &str,
    reservation_id: u64,
) {
    if ctx.json() {
        let plan: Vec<Value> = s.plan.iter().map(|p| part_json(p, scale)).collect();
        let obj = base
            .set(
                "reservation_id",
                s.reservation_id
                    .or((reservation_id != 0).then_some(reservation_id)),
            )
            .set("node_id", s.node_id)
            .set("currency", currency)
            .money("charged", s.charged, scale)
            .money("released", s.released, scale)
            .money("overrun", s.overrun, scale)
            .money("debt", s.debt, scale)
            .set("late", s.late)
            .set("plan", plan);
        print_json(&obj.value());
        return;
    }
    let what = match s
        .reservation_id
        .or((reservation_id != 0).then_some(reservation_id))
    {
        Some(id) => format!("reservation {id}"),
        None => "charge".to_owned(),
    };
    let mut line = format!(
        "settled {what}: charged {}",
        money_text(s.charged, scale, currency)
    );
    if s.released > 0 {
        line.push_str(&format!(
            ", released {}",
            money_text(s.released, scale, currency)
        ));
    }
    if s.overrun > 0 {
        line.push_str(&format!(
            ", overrun {}",
            money_text(s.overrun, scale, currency)
        ));
    }
    if s.debt > 0 {
        line.push_str(&format!(", debt {}", money_text(s.debt, scale, currency)));
    }
    if s.late {
        line.push_str(" (late: the hold had expired)");
    }
    println!("{line}");
    for p in &s.plan {
        println!(
            "  paid by grant {} (node {}): {}",
            p.grant_id,
            p.node_id,
            money_text(p.amount, scale, currency)
        );
    }
}

#[derive(Args)]
pub struct ReleaseArgs {
    /// The reservation id that `reserve` printed.
    pub reservation_id: u64,
    #[command(flatten)]
    pub request: RequestArgs,
}

pub async fn release(ctx: &Ctx, a: ReleaseArgs) -> Result<Done, CliError> {
    // Looked up first only to print the amount in major units: the release itself reports
    // an unknown or expired hold with the server's own error.
    let hold = hold_scale(ctx, a.reservation_id).await?;
    let meta = a.request.meta();
    let request = pb::ReleaseRequest {
        request_id: meta.request_id.clone(),
        sent_at_ms: meta.sent_at_ms,
        reservation_id: a.reservation_id,
    };
    let response = rpc!(ctx, budget_client::BudgetClient, release, request)?;
    let scale = hold.as_ref().map(|(_, s)| *s);
    let currency = hold
        .as_ref()
        .map_or(String::new(), |(h, _)| h.currency.clone());
    if ctx.json() {
        let obj = meta
            .obj(response.duplicate, response.log_index)
            .set("result", "released")
            .set("reservation_id", a.reservation_id)
            .set("currency", currency)
            .money("amount", response.amount, scale);
        print_json(&obj.value());
    } else {
        println!(
            "released reservation {}: {}",
            a.reservation_id,
            money_text(response.amount, scale, &currency)
        );
    }
    Ok(Done::Ok)
}

// ---- charge ------------------------------------------------------------------------------

#[derive(Args)]
pub struct ChargeArgs {
    /// The node that spent, e.g. acme/research/alice.
    pub path: String,
    /// A currency of the node's root, e.g. usd.
    #[arg(long)]
    pub currency: String,
    /// The cost, positive, in major units.
    #[arg(long, allow_negative_numbers = true)]
    pub amount: String,
    /// Attribution: user, model, provider, credential_type, or any other key as a tag.
    #[arg(long = "attr", value_name = "KEY=VALUE")]
    pub attrs: Vec<String>,
    #[command(flatten)]
    pub request: RequestArgs,
}

pub async fn charge(ctx: &Ctx, a: ChargeArgs) -> Result<Done, CliError> {
    let attributes = parse::attributes(&a.attrs)?;
    parse::amount_syntax(&a.amount).map_err(|e| format!("--amount: {e}"))?;
    let (_, scale) = node_scale(ctx, &a.path, &a.currency).await?;
    let minor =
        parse::amount(&a.amount, scale, &a.currency).map_err(|e| format!("--amount: {e}"))?;
    let meta = a.request.meta();
    let request = pb::ChargeRequest {
        request_id: meta.request_id.clone(),
        sent_at_ms: meta.sent_at_ms,
        node: Some(parse::node_ref(&a.path)),
        currency: a.currency.clone(),
        actual: Some(pb::charge_request::Actual::Amount(to_wire(minor))),
        attributes: Some(attributes),
    };
    let response = rpc!(ctx, budget_client::BudgetClient, charge, request)?;
    let base = meta
        .obj(response.duplicate, response.log_index)
        .set("path", a.path.clone());
    match response.result {
        Some(pb::charge_response::Result::Charged(s)) => {
            print_settlement(
                ctx,
                base.set("result", "charged"),
                &s,
                Some(scale),
                &a.currency,
                0,
            );
            Ok(Done::Ok)
        }
        Some(pb::charge_response::Result::Denied(d)) => {
            print_denial(
                ctx,
                base.set("currency", a.currency.clone()),
                &d,
                scale,
                &a.currency,
            );
            Ok(Done::Denied)
        }
        None => Err("the server answered Charge without a result".into()),
    }
}

// ---- show --------------------------------------------------------------------------------

#[derive(Args)]
pub struct ShowArgs {
    /// The node, e.g. acme/research.
    pub path: String,
    /// Answer from any member's applied state, without asking the leader (may be stale).
    #[arg(long)]
    pub stale: bool,
}

pub fn status_name(status: i32) -> &'static str {
    match pb::NodeStatus::try_from(status) {
        Ok(pb::NodeStatus::Active) => "active",
        Ok(pb::NodeStatus::Paused) => "paused",
        Ok(pb::NodeStatus::Closed) => "closed",
        _ => "unknown",
    }
}

pub fn mode_name(mode: i32) -> &'static str {
    match pb::LimitMode::try_from(mode) {
        Ok(pb::LimitMode::Soft) => "soft",
        _ => "hard",
    }
}

pub fn on_exhausted_name(value: i32) -> &'static str {
    match pb::OnExhausted::try_from(value) {
        Ok(pb::OnExhausted::Pause) => "pause",
        _ => "deny",
    }
}

pub fn grant_kind_name(kind: i32) -> &'static str {
    match pb::GrantKind::try_from(kind) {
        Ok(pb::GrantKind::Included) => "included",
        Ok(pb::GrantKind::Free) => "free",
        Ok(pb::GrantKind::Promotional) => "promotional",
        Ok(pb::GrantKind::Prepaid) => "prepaid",
        Ok(pb::GrantKind::Commitment) => "commitment",
        Ok(pb::GrantKind::OnDemand) => "on_demand",
        _ => "unknown",
    }
}

pub async fn show(ctx: &Ctx, a: ShowArgs) -> Result<Done, CliError> {
    let path = parse::node_path(&a.path)?;
    let request = pb::ShowRequest {
        node: Some(parse::node_ref(&path)),
        allow_stale: a.stale,
    };
    let view = rpc!(ctx, budget_client::BudgetClient, show, request)?
        .node
        .ok_or("the server answered Show without a node")?;
    let scales: HashMap<&str, u32> = view
        .accounts
        .iter()
        .map(|a| (a.currency.as_str(), a.scale))
        .collect();
    let scale = |currency: &str| scales.get(currency).copied();
    if ctx.json() {
        print_json(&show_json(&view, &scale));
    } else {
        print!("{}", show_text(&view, &scale));
    }
    Ok(Done::Ok)
}

fn rate_kind(kind: Option<&pb::RateKind>) -> (String, Option<&str>) {
    match kind.and_then(|k| k.kind.as_ref()) {
        Some(pb::rate_kind::Kind::Requests(_)) => ("requests".into(), None),
        Some(pb::rate_kind::Kind::CostCurrency(c)) => (format!("cost:{c}"), Some(c.as_str())),
        None => ("unknown".into(), None),
    }
}

fn show_json(v: &pb::NodeView, scale: &dyn Fn(&str) -> Option<u32>) -> Value {
    let tags: Vec<Value> = v
        .tags
        .iter()
        .map(|t| json!({"key": t.key, "value": t.value}))
        .collect();
    let accounts: Vec<Value> = v
        .accounts
        .iter()
        .map(|a| {
            let s = Some(a.scale);
            Obj::new()
                .set("currency", a.currency.clone())
                .set("scale", a.scale)
                .set("funded", a.funded)
                .money("held", a.held, s)
                .money("spent_total", a.spent_total, s)
                .money("debt", a.debt, s)
                .value()
        })
        .collect();
    let limits: Vec<Value> = v
        .limits
        .iter()
        .map(|l| {
            let s = scale(&l.currency);
            Obj::new()
                .set("role", l.role.clone())
                .set("currency", l.currency.clone())
                .set("window", format_window(l.window.as_ref()))
                .set("mode", mode_name(l.mode))
                .money("amount", l.amount, s)
                .money("spent", l.spent, s)
                .money("held", l.held, s)
                .money("remaining", l.remaining, s)
                .set("thresholds", l.thresholds.clone())
                .set("on_exhausted", on_exhausted_name(l.on_exhausted))
                .time("window_start", l.window_start_ms)
                .time("window_end", l.window_end_ms)
                .value()
        })
        .collect();
    let rate_limits: Vec<Value> = v
        .rate_limits
        .iter()
        .map(|r| {
            let (kind, currency) = rate_kind(r.kind.as_ref());
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
        })
        .collect();
    let grants: Vec<Value> = v
        .grants
        .iter()
        .map(|g| grant_json(g, scale(&g.currency)))
        .collect();
    Obj::new()
        .set("id", v.id)
        .set("path", v.path.clone())
        .set("parent_id", v.parent_id)
        .set("root_id", v.root_id)
        .set("depth", v.depth)
        .set("kind", v.kind.clone())
        .set("status", status_name(v.status))
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

pub fn grant_json(g: &pb::GrantView, s: Option<u32>) -> Value {
    Obj::new()
        .set("id", g.id)
        .set("node_id", g.node_id)
        .set("currency", g.currency.clone())
        .set("kind", grant_kind_name(g.kind))
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

fn show_text(v: &pb::NodeView, scale: &dyn Fn(&str) -> Option<u32>) -> String {
    let amount = |minor: u64, currency: &str| match scale(currency) {
        Some(s) => format_amount(minor, s),
        None => format!("{minor} (minor)"),
    };
    let mut out = format!(
        "{}  (node {}, {}, {})\n",
        v.path,
        v.id,
        v.kind,
        status_name(v.status)
    );
    let parent = v
        .parent_id
        .map_or("none (a root)".to_owned(), |p| p.to_string());
    out.push_str(&format!(
        "parent: {parent}  root: {}  depth: {}  children: {}  open holds: {}\n",
        v.root_id, v.depth, v.children, v.holds_open
    ));
    if !v.tags.is_empty() {
        let tags: Vec<String> = v
            .tags
            .iter()
            .map(|t| format!("{}={}", t.key, t.value))
            .collect();
        out.push_str(&format!("tags: {}\n", tags.join(", ")));
    }
    if !v.roles.is_empty() {
        out.push_str(&format!("roles: {}\n", v.roles.join(", ")));
    }
    let rows: Vec<Vec<String>> = v
        .accounts
        .iter()
        .map(|a| {
            vec![
                a.currency.clone(),
                a.scale.to_string(),
                if a.funded { "funded" } else { "capped" }.into(),
                format_amount(a.held, a.scale),
                format_amount(a.spent_total, a.scale),
                format_amount(a.debt, a.scale),
            ]
        })
        .collect();
    section(
        &mut out,
        "accounts",
        &["CURRENCY", "SCALE", "TYPE", "HELD", "SPENT", "DEBT"],
        &rows,
    );
    let rows: Vec<Vec<String>> = v
        .limits
        .iter()
        .map(|l| {
            vec![
                l.currency.clone(),
                format_window(l.window.as_ref()),
                mode_name(l.mode).into(),
                amount(l.amount, &l.currency),
                amount(l.spent, &l.currency),
                amount(l.held, &l.currency),
                amount(l.remaining, &l.currency),
                l.window_end_ms.map_or("-".into(), format_time),
                l.role
                    .as_ref()
                    .map_or("own".into(), |r| format!("role {r}")),
            ]
        })
        .collect();
    section(
        &mut out,
        "limits",
        &[
            "CURRENCY",
            "WINDOW",
            "MODE",
            "AMOUNT",
            "SPENT",
            "HELD",
            "REMAINING",
            "RESETS",
            "FROM",
        ],
        &rows,
    );
    let rows: Vec<Vec<String>> = v
        .rate_limits
        .iter()
        .map(|r| {
            let (kind, currency) = rate_kind(r.kind.as_ref());
            let n = |x: u64| currency.map_or(x.to_string(), |c| amount(x, c));
            vec![
                r.key.clone(),
                kind,
                n(r.amount),
                format_duration(r.period_ms),
                n(r.available),
            ]
        })
        .collect();
    section(
        &mut out,
        "rate limits",
        &["KEY", "KIND", "AMOUNT", "PERIOD", "AVAILABLE"],
        &rows,
    );
    let rows: Vec<Vec<String>> = v
        .grants
        .iter()
        .map(|g| {
            let mut expires = g.expires_at_ms.map_or("never".into(), format_time);
            if g.expired {
                expires.push_str(" (expired)");
            }
            vec![
                g.id.to_string(),
                g.currency.clone(),
                grant_kind_name(g.kind).into(),
                g.priority.to_string(),
                amount(g.amount, &g.currency),
                amount(g.remaining, &g.currency),
                amount(g.held, &g.currency),
                expires,
                g.recur.map_or("-", parse::period_name).into(),
            ]
        })
        .collect();
    section(
        &mut out,
        "grants",
        &[
            "ID",
            "CURRENCY",
            "KIND",
            "PRIORITY",
            "AMOUNT",
            "REMAINING",
            "HELD",
            "EXPIRES",
            "RECUR",
        ],
        &rows,
    );
    out
}

fn section(out: &mut String, title: &str, header: &[&str], rows: &[Vec<String>]) {
    if rows.is_empty() {
        return;
    }
    out.push_str(&format!("{title}:\n"));
    for line in table(header, rows).lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
}
