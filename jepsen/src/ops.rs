//! Sends one operation through purser-client (leader discovery, redirects, retries with the
//! same request) and turns the answer into the history's terms.

use purser_client::{pb, prepaid_grant, Acknowledged, Client, ClientError, Mutated};
use tonic::Code;

use crate::history::{Answer, Args, Expiry, GrantView, Part, Window};

/// Currency of the workload tree.
pub const CURRENCY: &str = "usd";
/// The TTL of a hold meant to outlive the run (the default bound is 1 day).
pub const HOLD_TTL_MS: u64 = crate::history::LEGACY_TTL_MS;
/// Events read per `Watch` before the final phase gives up on a member.
pub const WATCH_EVENTS_MAX: usize = 2_000_000;
/// A `Watch` that delivers nothing for this long is given up (the marker never came).
pub const WATCH_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

/// What the cluster answered: the answer, the log index, whether it was a duplicate.
pub struct Reply {
    pub answer: Answer,
    pub log_index: Option<u64>,
    pub duplicate: bool,
}

/// How an operation ended when it did not get an answer.
pub enum Failure {
    /// Certainly not applied.
    Definite(String),
    /// Maybe applied.
    Unknown(String),
}

fn path(p: &str) -> Option<pb::NodeRef> {
    Some(pb::NodeRef {
        node: Some(pb::node_ref::Node::Path(p.into())),
    })
}

fn failure(e: ClientError) -> Failure {
    match e.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::ResourceExhausted
        | Code::OutOfRange
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::Unimplemented => Failure::Definite(format!("{:?}: {e}", e.code())),
        _ => Failure::Unknown(format!("{:?}: {e}", e.code())),
    }
}

fn window(w: Window) -> pb::Window {
    use pb::window::Kind;
    let kind = match w {
        Window::Lifetime => Kind::Lifetime(pb::window::Lifetime {}),
        Window::Month => Kind::Calendar(pb::Period::Month as i32),
        Window::Sliding { ms } => Kind::SlidingMs(ms),
        Window::FirstUse { ms } => Kind::FirstUseMs(ms),
    };
    pb::Window { kind: Some(kind) }
}

fn window_of(w: &pb::Window) -> Option<Window> {
    use pb::window::Kind;
    Some(match w.kind.as_ref()? {
        Kind::Lifetime(_) => Window::Lifetime,
        Kind::Calendar(p) if *p == pb::Period::Month as i32 => Window::Month,
        Kind::Calendar(_) => return None,
        Kind::SlidingMs(ms) => Window::Sliding { ms: *ms },
        Kind::FirstUseMs(ms) => Window::FirstUse { ms: *ms },
    })
}

fn deny_rule(rule: i32) -> String {
    match pb::DenyRule::try_from(rule) {
        Ok(pb::DenyRule::NodeClosed) => "closed",
        Ok(pb::DenyRule::NodePaused) => "paused",
        Ok(pb::DenyRule::RateLimit) => "rate_limit",
        Ok(pb::DenyRule::Cap) => "cap",
        Ok(pb::DenyRule::RoleCap) => "role_cap",
        Ok(pb::DenyRule::Funding) => "funding",
        _ => "unspecified",
    }
    .into()
}

fn parts(plan: &[pb::FundingPart]) -> Vec<Part> {
    plan.iter().map(|p| (p.grant_id, p.amount)).collect()
}

fn denied(d: &pb::Denied) -> Answer {
    Answer::Denied {
        node_id: d.node_id,
        remaining: d.remaining,
        requested: d.requested,
        rule: Some(deny_rule(d.rule)),
    }
}

fn limit(amount: u64, w: Window) -> pb::LimitSpec {
    pb::LimitSpec {
        currency: CURRENCY.into(),
        amount: amount as i64,
        window: Some(window(w)),
        mode: pb::LimitMode::Hard as i32,
        thresholds: vec![],
        on_exhausted: pb::OnExhausted::Deny as i32,
    }
}

fn recorded_settle(first: &Option<pb::Recorded>) -> Option<(u64, u64)> {
    match first.as_ref()?.kind.as_ref()? {
        pb::recorded::Kind::Settled(s) => Some((s.reservation_id, s.charged)),
        _ => None,
    }
}

/// Sends one operation. A mutation carries `request_id` and `sent_at_ms` (the history's
/// invoke event names them before the call); a read ignores both.
pub async fn execute(
    client: &Client,
    args: &Args,
    request_id: &str,
    sent_at_ms: u64,
) -> Result<Reply, Failure> {
    let ids = Ids {
        request_id: request_id.to_owned(),
        sent_at_ms,
    };
    match args {
        Args::Reserve {
            node,
            min,
            max,
            exact,
            ttl_ms,
        } => reserve(client, ids, node, (*min, *max, *exact), *ttl_ms).await,
        Args::Commit {
            reservation_id,
            actual,
        } => commit(client, ids, *reservation_id, *actual).await,
        Args::Release { reservation_id } => release(client, ids, *reservation_id).await,
        Args::Charge { node, amount } => charge(client, ids, node, *amount).await,
        Args::SetLimit {
            node,
            amount,
            window,
        } => {
            let r = pb::SetLimitRequest {
                request_id: ids.request_id.clone(),
                sent_at_ms,
                node: path(node),
                limit: Some(limit(*amount, *window)),
            };
            let resp = client.set_limit(r).await.map_err(failure)?;
            Ok(reply(&ids, &resp, Answer::Done))
        }
        Args::AddGrant { node, amount } => add_grant(client, ids, node, *amount).await,
        Args::Pause { node } => {
            let r = pb::PauseNodeRequest {
                request_id: ids.request_id.clone(),
                sent_at_ms,
                node: path(node),
            };
            let resp = client.pause_node(r).await.map_err(failure)?;
            Ok(reply(&ids, &resp, Answer::Done))
        }
        Args::CreateNode { path: p, funded } => create_node(client, ids, p, *funded).await,
        Args::Show { node } => show(client, node).await,
        Args::Holds { node } => holds(client, node).await,
        Args::Grants { node } => grants(client, node).await,
        Args::Expiries { marker } => watch_expiries(client, marker).await,
    }
}

/// The ids a mutation is sent with, as the history's invoke event records them.
struct Ids {
    request_id: String,
    sent_at_ms: u64,
}

/// A mutation's reply. The ids the client sent must be those the history recorded: that is
/// what the idempotency checker reads.
fn reply<T: Acknowledged>(ids: &Ids, resp: &Mutated<T>, answer: Answer) -> Reply {
    assert_eq!(
        (resp.request_id.as_str(), resp.sent_at_ms),
        (ids.request_id.as_str(), ids.sent_at_ms),
        "the client sent other ids than the history records"
    );
    Reply {
        answer,
        log_index: Some(resp.log_index()),
        duplicate: resp.duplicate(),
    }
}

/// A read's reply: no log index, never a duplicate.
fn read(answer: Answer) -> Reply {
    Reply {
        answer,
        log_index: None,
        duplicate: false,
    }
}

async fn reserve(
    client: &Client,
    ids: Ids,
    node: &str,
    (min, max, exact): (u64, u64, bool),
    ttl_ms: u64,
) -> Result<Reply, Failure> {
    let amount = if exact {
        pb::reserve_request::Amount::Exact(min as i64)
    } else {
        pb::reserve_request::Amount::Range(pb::AmountRange {
            min: min as i64,
            max: max as i64,
        })
    };
    let r = pb::ReserveRequest {
        request_id: ids.request_id.clone(),
        sent_at_ms: ids.sent_at_ms,
        node: path(node),
        currency: CURRENCY.into(),
        amount: Some(amount),
        ttl_ms,
        attributes: None,
    };
    let resp = client.reserve(r).await.map_err(failure)?;
    let answer = match &resp.result {
        Some(pb::reserve_response::Result::Granted(g)) => Answer::Granted {
            reservation_id: g.reservation_id,
            amount: g.amount,
            expires_at_ms: Some(g.expires_at_ms).filter(|&e| e > 0),
            plan: (!resp.duplicate).then(|| parts(&g.plan)),
        },
        Some(pb::reserve_response::Result::Denied(d)) => denied(d),
        None => return Err(Failure::Unknown("a reserve answer without result".into())),
    };
    Ok(reply(&ids, &resp, answer))
}

async fn commit(
    client: &Client,
    ids: Ids,
    reservation_id: u64,
    actual: u64,
) -> Result<Reply, Failure> {
    let r = pb::CommitRequest {
        request_id: ids.request_id.clone(),
        sent_at_ms: ids.sent_at_ms,
        reservation_id,
        actual: Some(pb::commit_request::Actual::Amount(actual as i64)),
    };
    let resp = client.settle(r).await.map_err(failure)?;
    let answer = if resp.duplicate {
        let (rid, charged) = recorded_settle(&resp.first_outcome)
            .or(resp
                .settlement
                .as_ref()
                .map(|s| (s.reservation_id.unwrap_or(0), s.charged)))
            .unwrap_or((0, 0));
        Answer::Settled {
            reservation_id: rid,
            charged,
            released: None,
            overrun: None,
            late: None,
            debt: None,
            plan: None,
        }
    } else {
        let s = resp.settlement.clone().unwrap_or_default();
        Answer::Settled {
            reservation_id: s.reservation_id.unwrap_or(0),
            charged: s.charged,
            released: Some(s.released),
            overrun: Some(s.overrun),
            late: Some(s.late),
            debt: Some(s.debt),
            plan: Some(parts(&s.plan)),
        }
    };
    Ok(reply(&ids, &resp, answer))
}

async fn release(client: &Client, ids: Ids, reservation_id: u64) -> Result<Reply, Failure> {
    let r = pb::ReleaseRequest {
        request_id: ids.request_id.clone(),
        sent_at_ms: ids.sent_at_ms,
        reservation_id,
    };
    let resp = client.release(r).await.map_err(failure)?;
    let answer = Answer::Released {
        reservation_id: resp.reservation_id,
        amount: resp.amount,
    };
    Ok(reply(&ids, &resp, answer))
}

async fn charge(client: &Client, ids: Ids, node: &str, amount: u64) -> Result<Reply, Failure> {
    let r = pb::ChargeRequest {
        request_id: ids.request_id.clone(),
        sent_at_ms: ids.sent_at_ms,
        node: path(node),
        currency: CURRENCY.into(),
        actual: Some(pb::charge_request::Actual::Amount(amount as i64)),
        attributes: None,
    };
    let resp = client.charge(r).await.map_err(failure)?;
    let answer = match &resp.result {
        Some(pb::charge_response::Result::Charged(s)) => Answer::Charged {
            charged: s.charged,
            // A duplicate's record keeps the amount only.
            debt: (!resp.duplicate).then_some(s.debt),
            plan: (!resp.duplicate).then(|| parts(&s.plan)),
        },
        Some(pb::charge_response::Result::Denied(d)) => denied(d),
        None => return Err(Failure::Unknown("a charge answer without result".into())),
    };
    Ok(reply(&ids, &resp, answer))
}

async fn add_grant(client: &Client, ids: Ids, node: &str, amount: u64) -> Result<Reply, Failure> {
    let r = pb::AddGrantRequest {
        request_id: ids.request_id.clone(),
        sent_at_ms: ids.sent_at_ms,
        node: path(node),
        grant: Some(prepaid_grant(CURRENCY, amount as i64)),
    };
    let resp = client.add_grant(r).await.map_err(failure)?;
    let grant_id = match resp.first_outcome.as_ref().and_then(|f| f.kind.as_ref()) {
        Some(pb::recorded::Kind::GrantAdded(g)) => g.grant_id,
        _ => resp.grant_id,
    };
    Ok(reply(&ids, &resp, Answer::GrantAdded { grant_id }))
}

async fn create_node(client: &Client, ids: Ids, p: &str, funded: bool) -> Result<Reply, Failure> {
    let (parent, name) = match p.rsplit_once('/') {
        Some((parent, name)) => (path(parent), name.to_owned()),
        None => (None, p.to_owned()),
    };
    let root = parent.is_none().then(|| pb::RootSpec {
        currencies: vec![pb::CurrencySpec {
            code: CURRENCY.into(),
            scale: 6,
            funded,
        }],
        no_default_cap: true,
    });
    let r = pb::CreateNodeRequest {
        request_id: ids.request_id.clone(),
        sent_at_ms: ids.sent_at_ms,
        parent,
        name,
        kind: if root.is_some() { "org" } else { "team" }.into(),
        tags: vec![],
        root,
    };
    let resp = client.create_node(r).await.map_err(failure)?;
    Ok(reply(&ids, &resp, Answer::Done))
}

async fn show(client: &Client, node: &str) -> Result<Reply, Failure> {
    let r = pb::ShowRequest {
        node: path(node),
        allow_stale: false,
    };
    let resp = client.show(r).await.map_err(failure)?;
    let view = resp.node.unwrap_or_default();
    let account = view.accounts.iter().find(|a| a.currency == CURRENCY);
    let limit = view
        .limits
        .iter()
        .find(|l| l.currency == CURRENCY && l.role.is_none());
    let grants: Vec<&pb::GrantView> = view
        .grants
        .iter()
        .filter(|g| g.currency == CURRENCY)
        .collect();
    Ok(read(Answer::Account {
        held: account.map_or(0, |a| a.held),
        spent: account.map_or(0, |a| a.spent_total),
        cap: limit.map(|l| l.amount),
        limit_spent: limit.map(|l| l.spent),
        limit_held: limit.map(|l| l.held),
        window: limit.and_then(|l| l.window.as_ref()).and_then(window_of),
        debt: account.map(|a| a.debt),
        pool: (!grants.is_empty()).then(|| {
            (
                grants.iter().map(|g| g.remaining).sum(),
                grants.iter().map(|g| g.held).sum(),
            )
        }),
    }))
}

async fn holds(client: &Client, node: &str) -> Result<Reply, Failure> {
    let r = pb::HoldsRequest {
        target: path(node).map(pb::holds_request::Target::Node),
        allow_stale: false,
    };
    let resp = client.holds(r).await.map_err(failure)?;
    Ok(read(Answer::Holds {
        holds: resp
            .holds
            .iter()
            .map(|h| (h.reservation_id, h.amount))
            .collect(),
    }))
}

async fn grants(client: &Client, node: &str) -> Result<Reply, Failure> {
    let r = pb::GrantsRequest {
        target: path(node).map(pb::grants_request::Target::Node),
        allow_stale: false,
    };
    let resp = client.grants(r).await.map_err(failure)?;
    Ok(read(Answer::Grants {
        grants: resp
            .grants
            .iter()
            .filter(|g| g.currency == CURRENCY)
            .map(|g| GrantView {
                id: g.id,
                amount: g.amount,
                remaining: g.remaining,
                held: g.held,
                expired: g.expired,
            })
            .collect(),
    }))
}

/// Reads the `hold_expired` events from the first event on, from the member the client tries
/// first, until the `Paused` event of `marker` (paused just before, and by nothing else):
/// every expiry before the marker is then in the answer. A member that no longer keeps the
/// first event (it joined through a snapshot) answers OUT_OF_RANGE: a definite failure, so
/// that the caller tries another member.
async fn watch_expiries(client: &Client, marker: &str) -> Result<Reply, Failure> {
    let r = pb::WatchRequest {
        from_index: 1,
        kinds: vec!["governance.hold_expired".into(), "governance.paused".into()],
        node: None,
    };
    let show = pb::ShowRequest {
        node: path(marker),
        allow_stale: true,
    };
    let marker_id = client
        .show(show)
        .await
        .map_err(failure)?
        .node
        .map_or(0, |n| n.id);
    let mut stream = client.watch(r).await.map_err(failure)?;
    let mut expired = Vec::new();
    for _ in 0..WATCH_EVENTS_MAX {
        let next = tokio::time::timeout(WATCH_IDLE, stream.message())
            .await
            .map_err(|_| Failure::Unknown("the watch went idle before the marker".into()))?;
        let event = match next {
            Ok(Some(event)) => event,
            Ok(None) => return Err(Failure::Unknown("the watch ended before the marker".into())),
            Err(status) => return Err(failure(ClientError::Status(status))),
        };
        if event.kind == "governance.paused" && event.node_id == marker_id {
            return Ok(Reply {
                answer: Answer::Expiries { expired },
                log_index: Some(event.log_index),
                duplicate: false,
            });
        }
        if event.kind != "governance.hold_expired" {
            continue;
        }
        let json: serde_json::Value = serde_json::from_str(&event.json)
            .map_err(|e| Failure::Unknown(format!("an event that is not JSON: {e}")))?;
        let field = |name: &str| json.get(name).and_then(serde_json::Value::as_u64);
        let (Some(reservation_id), Some(amount)) = (field("reservation_id"), field("amount"))
        else {
            return Err(Failure::Unknown(format!(
                "a hold_expired event without its fields: {}",
                event.json
            )));
        };
        expired.push(Expiry {
            reservation_id,
            node_id: event.node_id,
            amount,
            log_index: event.log_index,
            at_ms: event.at_ms,
        });
    }
    Err(Failure::Unknown("too many events before the marker".into()))
}
