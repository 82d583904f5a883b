//! The request path: reserve, commit, release, charge, and `show`. Each command checks what
//! it can offline, looks up the currency's scale where a decimal must become minor units,
//! calls, and hands the answer to `render::budget`.

use clap::builder::NonEmptyStringValueParser;
use clap::Args;
use purser_client::pb;

use crate::parse::{self, to_wire, Flagged};
use crate::render::budget::{scale_of, Asked, Denial, Granted, Released, Settled, Shown};
use crate::render::Ack;
use crate::{CliError, Ctx, Done};

/// The idempotency key of a mutating command.
#[derive(Args, Clone, Debug)]
pub struct RequestArgs {
    /// Request id, reused to retry safely: the cluster answers a retry with the first outcome.
    /// Generated when absent.
    #[arg(long, value_name = "ID", value_parser = NonEmptyStringValueParser::new())]
    pub request_id: Option<String>,
    /// When the request was first sent (ms since the epoch), for a retry of an earlier
    /// attempt: the cluster refuses a request older than its retention, so that a forgotten
    /// id can never apply twice. Defaults to now.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub sent_at_ms: Option<u64>,
}

impl RequestArgs {
    /// The `request_id` and `sent_at_ms` to send: empty and 0 where none was given, which the
    /// client fills in once, before the first attempt, so that every retry is the same request.
    pub fn ids(&self) -> (String, u64) {
        (
            self.request_id.clone().unwrap_or_default(),
            self.sent_at_ms.unwrap_or(0),
        )
    }
}

pub async fn show_node(ctx: &Ctx, node: pb::NodeRef) -> Result<pb::NodeView, CliError> {
    let request = pb::ShowRequest {
        node: Some(node),
        allow_stale: false,
    };
    ctx.client
        .show(request)
        .await?
        .node
        .ok_or_else(|| "the server answered Show without a node".into())
}

/// The scale of `currency` as the node's root declares it.
pub fn scale_in(view: &pb::NodeView, currency: &str) -> Result<u32, CliError> {
    scale_of(view, currency).ok_or_else(|| {
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

/// The scale of one of a node's currencies: the CLI's way to turn decimals into minor units.
/// It also refuses an unknown node before any write is attempted.
async fn node_scale(ctx: &Ctx, path: &str, currency: &str) -> Result<u32, CliError> {
    let path = parse::node_path(path)?;
    let view = show_node(ctx, parse::node_ref(&path)).await?;
    scale_in(&view, currency)
}

/// The `--amount` of a node's currency in minor units, with the currency's scale. Its syntax
/// is checked before the scale is looked up: a typo never costs a round trip.
pub async fn node_amount(
    ctx: &Ctx,
    path: &str,
    currency: &str,
    text: &str,
) -> Result<(u32, u64), CliError> {
    parse::amount_syntax(text).flag("--amount")?;
    let scale = node_scale(ctx, path, currency).await?;
    let minor = parse::amount(text, scale, currency).flag("--amount")?;
    Ok((scale, minor))
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
    let holds = match ctx.client.holds(request).await {
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

/// The amount a reservation asks for, as typed (syntax already checked).
enum Ask<'a> {
    Exact(&'a str),
    Range { min: &'a str, max: &'a str },
}

impl<'a> Ask<'a> {
    fn of(a: &'a ReserveArgs) -> Result<Ask<'a>, CliError> {
        let ask = match (&a.amount, &a.min, &a.max) {
            (Some(x), _, _) => Ask::Exact(x),
            (None, Some(min), Some(max)) => Ask::Range { min, max },
            _ => return Err("give --amount, or --min and --max".into()),
        };
        for (flag, text) in ask.texts() {
            parse::amount_syntax(text).flag(flag)?;
        }
        Ok(ask)
    }

    fn texts(&self) -> Vec<(&'static str, &'a str)> {
        match *self {
            Ask::Exact(x) => vec![("--amount", x)],
            Ask::Range { min, max } => vec![("--min", min), ("--max", max)],
        }
    }

    fn wire(&self, scale: u32, currency: &str) -> Result<pb::reserve_request::Amount, CliError> {
        let minor =
            |text: &str, flag: &str| parse::amount(text, scale, currency).flag(flag).map(to_wire);
        Ok(match *self {
            Ask::Exact(x) => pb::reserve_request::Amount::Exact(minor(x, "--amount")?),
            Ask::Range { min, max } => pb::reserve_request::Amount::Range(pb::AmountRange {
                min: minor(min, "--min")?,
                max: minor(max, "--max")?,
            }),
        })
    }
}

pub async fn reserve(ctx: &Ctx, a: ReserveArgs) -> Result<Done, CliError> {
    // Everything that needs no server is checked first: a typo never costs a round trip.
    let ttl_ms = parse::duration_ms(&a.ttl).flag("--ttl")?;
    let attributes = parse::attributes(&a.attrs)?;
    parse::node_path(&a.path)?;
    let ask = Ask::of(&a)?;
    let scale = node_scale(ctx, &a.path, &a.currency).await?;
    let (request_id, sent_at_ms) = a.request.ids();
    let request = pb::ReserveRequest {
        request_id,
        sent_at_ms,
        node: Some(parse::node_ref(&a.path)),
        currency: a.currency.clone(),
        amount: Some(ask.wire(scale, &a.currency)?),
        ttl_ms,
        attributes: Some(attributes),
    };
    let answer = ctx.client.reserve(request).await?;
    let asked = Asked {
        ack: Ack::of(&answer),
        path: &a.path,
        currency: &a.currency,
        scale,
    };
    match &answer.result {
        Some(pb::reserve_response::Result::Granted(granted)) => {
            ctx.print(&Granted { asked, granted });
            Ok(Done::Ok)
        }
        Some(pb::reserve_response::Result::Denied(denied)) => {
            ctx.print(&Denial { asked, denied });
            Ok(Done::Denied)
        }
        None => Err("the server answered Reserve without a result".into()),
    }
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
    let tokens = a.tokens.as_deref().map(parse::tokens).transpose()?;
    if a.amount.is_none() && a.amount_minor.is_none() && tokens.is_none() {
        return Err("give --amount, --amount-minor or --tokens".into());
    }
    if let Some(text) = &a.amount {
        parse::amount_syntax(text).flag("--amount")?;
    }
    let hold = hold_scale(ctx, a.reservation_id).await?;
    let actual = actual_cost(&a, hold.as_ref(), tokens)?;
    let (request_id, sent_at_ms) = a.request.ids();
    let request = pb::CommitRequest {
        request_id,
        sent_at_ms,
        reservation_id: a.reservation_id,
        actual: Some(actual),
    };
    let answer = ctx.client.settle(request).await?;
    let settlement = answer.settlement.clone().unwrap_or_default();
    let scale = match &hold {
        Some((_, scale)) => Some(*scale),
        None => settlement_scale(ctx, &settlement).await,
    };
    let currency = hold
        .as_ref()
        .map_or(settlement.currency.as_str(), |(h, _)| h.currency.as_str());
    ctx.print(&Settled {
        ack: Ack::of(&answer),
        path: None,
        result: "settled",
        reservation_id: a.reservation_id,
        currency,
        scale,
        settlement: &settlement,
    });
    Ok(Done::Ok)
}

/// What `commit` settles for: a decimal in the hold's currency, minor units, or tokens.
fn actual_cost(
    a: &CommitArgs,
    hold: Option<&(pb::HoldView, u32)>,
    tokens: Option<pb::TokenUsage>,
) -> Result<pb::commit_request::Actual, CliError> {
    Ok(match (&a.amount, a.amount_minor, tokens) {
        (Some(text), _, _) => {
            let Some((hold, scale)) = hold else {
                return Err(CliError(format!(
                    "reservation {} has no open hold (settled, released, expired or unknown); \
                     a late settle of an expired hold takes --amount-minor",
                    a.reservation_id
                )));
            };
            let minor = parse::amount(text, *scale, &hold.currency).flag("--amount")?;
            pb::commit_request::Actual::Amount(to_wire(minor))
        }
        (None, Some(minor), _) => pb::commit_request::Actual::Amount(minor),
        (None, None, Some(mut usage)) => {
            // The price book is keyed by provider: default to the one the hold was made for.
            if usage.provider.is_empty() {
                if let Some(provider) = hold
                    .and_then(|(h, _)| h.attributes.as_ref())
                    .and_then(|attrs| attrs.provider.clone())
                {
                    usage.provider = provider;
                }
            }
            pb::commit_request::Actual::Tokens(usage)
        }
        (None, None, None) => return Err("give --amount, --amount-minor or --tokens".into()),
    })
}

/// The scale of a settlement's currency, for a hold the CLI could not look up beforehand.
async fn settlement_scale(ctx: &Ctx, s: &pb::Settlement) -> Option<u32> {
    if s.node_id == 0 || s.currency.is_empty() {
        return None;
    }
    let view = show_node(ctx, parse::node_id_ref(s.node_id)).await.ok()?;
    scale_of(&view, &s.currency)
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
    let (request_id, sent_at_ms) = a.request.ids();
    let request = pb::ReleaseRequest {
        request_id,
        sent_at_ms,
        reservation_id: a.reservation_id,
    };
    let answer = ctx.client.release(request).await?;
    ctx.print(&Released {
        ack: Ack::of(&answer),
        reservation_id: a.reservation_id,
        currency: hold.as_ref().map_or("", |(h, _)| h.currency.as_str()),
        scale: hold.as_ref().map(|(_, s)| *s),
        amount: answer.amount,
    });
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
    let (scale, minor) = node_amount(ctx, &a.path, &a.currency, &a.amount).await?;
    let (request_id, sent_at_ms) = a.request.ids();
    let request = pb::ChargeRequest {
        request_id,
        sent_at_ms,
        node: Some(parse::node_ref(&a.path)),
        currency: a.currency.clone(),
        actual: Some(pb::charge_request::Actual::Amount(to_wire(minor))),
        attributes: Some(attributes),
    };
    let answer = ctx.client.charge(request).await?;
    let ack = Ack::of(&answer);
    match &answer.result {
        Some(pb::charge_response::Result::Charged(settlement)) => {
            ctx.print(&Settled {
                ack,
                path: Some(&a.path),
                result: "charged",
                reservation_id: 0,
                currency: &a.currency,
                scale: Some(scale),
                settlement,
            });
            Ok(Done::Ok)
        }
        Some(pb::charge_response::Result::Denied(denied)) => {
            let asked = Asked {
                ack,
                path: &a.path,
                currency: &a.currency,
                scale,
            };
            ctx.print(&Denial { asked, denied });
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

pub async fn show(ctx: &Ctx, a: ShowArgs) -> Result<Done, CliError> {
    let path = parse::node_path(&a.path)?;
    let request = pb::ShowRequest {
        node: Some(parse::node_ref(&path)),
        allow_stale: a.stale,
    };
    let view = ctx
        .client
        .show(request)
        .await?
        .node
        .ok_or("the server answered Show without a node")?;
    ctx.print(&Shown(&view));
    Ok(Done::Ok)
}
