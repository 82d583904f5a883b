//! Sends one operation through purser-client (leader discovery, redirects, retries with the
//! same request) and turns the answer into the history's terms.

use purser_client::{pb, Client, ClientError};
use tonic::Code;

use crate::history::{Answer, Args};

/// Currency of the workload tree.
pub const CURRENCY: &str = "usd";
/// Holds live long enough never to expire during a run: the model has no expiry.
pub const HOLD_TTL_MS: u64 = 12 * 60 * 60 * 1000;

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

fn lifetime_limit(node: &str, amount: u64) -> pb::LimitSpec {
    let _ = node;
    pb::LimitSpec {
        currency: CURRENCY.into(),
        amount: amount as i64,
        window: Some(pb::Window {
            kind: Some(pb::window::Kind::Lifetime(pb::window::Lifetime {})),
        }),
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

pub async fn execute(
    client: &Client,
    args: &Args,
    request_id: &str,
    sent_at_ms: u64,
) -> Result<Reply, Failure> {
    let request_id = request_id.to_owned();
    match args {
        Args::Reserve {
            node,
            min,
            max,
            exact,
        } => {
            let amount = if *exact {
                pb::reserve_request::Amount::Exact(*min as i64)
            } else {
                pb::reserve_request::Amount::Range(pb::AmountRange {
                    min: *min as i64,
                    max: *max as i64,
                })
            };
            let r = pb::ReserveRequest {
                request_id,
                sent_at_ms,
                node: path(node),
                currency: CURRENCY.into(),
                amount: Some(amount),
                ttl_ms: HOLD_TTL_MS,
                attributes: None,
            };
            let resp = client
                .call(|ch| {
                    let r = r.clone();
                    async move { pb::budget_client::BudgetClient::new(ch).reserve(r).await }
                })
                .await
                .map_err(failure)?;
            let answer = match resp.result {
                Some(pb::reserve_response::Result::Granted(g)) => Answer::Granted {
                    reservation_id: g.reservation_id,
                    amount: g.amount,
                },
                Some(pb::reserve_response::Result::Denied(d)) => Answer::Denied {
                    node_id: d.node_id,
                    remaining: d.remaining,
                    requested: d.requested,
                },
                None => return Err(Failure::Unknown("a reserve answer without result".into())),
            };
            Ok(Reply {
                answer,
                log_index: Some(resp.log_index),
                duplicate: resp.duplicate,
            })
        }
        Args::Commit {
            reservation_id,
            actual,
        } => {
            let r = pb::CommitRequest {
                request_id,
                sent_at_ms,
                reservation_id: *reservation_id,
                actual: Some(pb::commit_request::Actual::Amount(*actual as i64)),
            };
            let resp = client
                .call(|ch| {
                    let r = r.clone();
                    async move { pb::budget_client::BudgetClient::new(ch).commit(r).await }
                })
                .await
                .map_err(failure)?;
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
                }
            } else {
                let s = resp.settlement.unwrap_or_default();
                Answer::Settled {
                    reservation_id: s.reservation_id.unwrap_or(0),
                    charged: s.charged,
                    released: Some(s.released),
                    overrun: Some(s.overrun),
                }
            };
            Ok(Reply {
                answer,
                log_index: Some(resp.log_index),
                duplicate: resp.duplicate,
            })
        }
        Args::Release { reservation_id } => {
            let r = pb::ReleaseRequest {
                request_id,
                sent_at_ms,
                reservation_id: *reservation_id,
            };
            let resp = client
                .call(|ch| {
                    let r = r.clone();
                    async move { pb::budget_client::BudgetClient::new(ch).release(r).await }
                })
                .await
                .map_err(failure)?;
            Ok(Reply {
                answer: Answer::Released {
                    reservation_id: resp.reservation_id,
                    amount: resp.amount,
                },
                log_index: Some(resp.log_index),
                duplicate: resp.duplicate,
            })
        }
        Args::Charge { node, amount } => {
            let r = pb::ChargeRequest {
                request_id,
                sent_at_ms,
                node: path(node),
                currency: CURRENCY.into(),
                actual: Some(pb::charge_request::Actual::Amount(*amount as i64)),
                attributes: None,
            };
            let resp = client
                .call(|ch| {
                    let r = r.clone();
                    async move { pb::budget_client::BudgetClient::new(ch).charge(r).await }
                })
                .await
                .map_err(failure)?;
            let answer = match resp.result {
                Some(pb::charge_response::Result::Charged(s)) => {
                    Answer::Charged { charged: s.charged }
                }
                Some(pb::charge_response::Result::Denied(d)) => Answer::Denied {
                    node_id: d.node_id,
                    remaining: d.remaining,
                    requested: d.requested,
                },
                None => return Err(Failure::Unknown("a charge answer without result".into())),
            };
            Ok(Reply {
                answer,
                log_index: Some(resp.log_index),
                duplicate: resp.duplicate,
            })
        }
        Args::SetLimit { node, amount } => {
            let r = pb::SetLimitRequest {
                request_id,
                sent_at_ms,
                node: path(node),
                limit: Some(lifetime_limit(node, *amount)),
            };
            let resp = client
                .call(|ch| {
                    let r = r.clone();
                    async move { pb::admin_client::AdminClient::new(ch).set_limit(r).await }
                })
                .await
                .map_err(failure)?;
            Ok(Reply {
                answer: Answer::Done,
                log_index: Some(resp.log_index),
                duplicate: resp.duplicate,
            })
        }
        Args::CreateNode { path: p } => {
            let (parent, name) = match p.rsplit_once('/') {
                Some((parent, name)) => (path(parent), name.to_owned()),
                None => (None, p.clone()),
            };
            let root = parent.is_none().then(|| pb::RootSpec {
                currencies: vec![pb::CurrencySpec {
                    code: CURRENCY.into(),
                    scale: 6,
                    funded: false,
                }],
                no_default_cap: true,
            });
            let r = pb::CreateNodeRequest {
                request_id,
                sent_at_ms,
                parent,
                name,
                kind: if root.is_some() { "org" } else { "team" }.into(),
                tags: vec![],
                root,
            };
            let resp = client
                .call(|ch| {
                    let r = r.clone();
                    async move { pb::admin_client::AdminClient::new(ch).create_node(r).await }
                })
                .await
                .map_err(failure)?;
            Ok(Reply {
                answer: Answer::Done,
                log_index: Some(resp.log_index),
                duplicate: resp.duplicate,
            })
        }
        Args::Show { node } => {
            let r = pb::ShowRequest {
                node: path(node),
                allow_stale: false,
            };
            let resp = client
                .call(|ch| {
                    let r = r.clone();
                    async move { pb::budget_client::BudgetClient::new(ch).show(r).await }
                })
                .await
                .map_err(failure)?;
            let view = resp.node.unwrap_or_default();
            let account = view.accounts.iter().find(|a| a.currency == CURRENCY);
            let limit = view
                .limits
                .iter()
                .find(|l| l.currency == CURRENCY && l.role.is_none());
            Ok(Reply {
                answer: Answer::Account {
                    held: account.map_or(0, |a| a.held),
                    spent: account.map_or(0, |a| a.spent_total),
                    cap: limit.map(|l| l.amount),
                    limit_spent: limit.map(|l| l.spent),
                    limit_held: limit.map(|l| l.held),
                },
                log_index: None,
                duplicate: false,
            })
        }
        Args::Holds { node } => {
            let r = pb::HoldsRequest {
                target: Some(pb::holds_request::Target::Node(pb::NodeRef {
                    node: Some(pb::node_ref::Node::Path(node.clone())),
                })),
                allow_stale: false,
            };
            let resp = client
                .call(|ch| {
                    let r = r.clone();
                    async move { pb::budget_client::BudgetClient::new(ch).holds(r).await }
                })
                .await
                .map_err(failure)?;
            Ok(Reply {
                answer: Answer::Holds {
                    holds: resp
                        .holds
                        .iter()
                        .map(|h| (h.reservation_id, h.amount))
                        .collect(),
                },
                log_index: None,
                duplicate: false,
            })
        }
    }
}
