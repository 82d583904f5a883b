//! The words the CLI prints for the API's enums (the same in text and JSON). A value this
//! binary does not know yet, from a newer server, prints as `unknown` rather than failing.

use purser_client::pb;

pub fn status(status: i32) -> &'static str {
    match pb::NodeStatus::try_from(status) {
        Ok(pb::NodeStatus::Active) => "active",
        Ok(pb::NodeStatus::Paused) => "paused",
        Ok(pb::NodeStatus::Closed) => "closed",
        _ => "unknown",
    }
}

pub fn mode(mode: i32) -> &'static str {
    match pb::LimitMode::try_from(mode) {
        Ok(pb::LimitMode::Soft) => "soft",
        _ => "hard",
    }
}

pub fn on_exhausted(value: i32) -> &'static str {
    match pb::OnExhausted::try_from(value) {
        Ok(pb::OnExhausted::Pause) => "pause",
        _ => "deny",
    }
}

pub fn grant_kind(kind: i32) -> &'static str {
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

pub fn rule(rule: i32) -> &'static str {
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

pub fn role(role: i32) -> &'static str {
    match pb::RaftRole::try_from(role) {
        Ok(pb::RaftRole::Leader) => "leader",
        Ok(pb::RaftRole::Candidate) => "candidate",
        Ok(pb::RaftRole::Follower) => "follower",
        Ok(pb::RaftRole::Learner) => "learner",
        Ok(pb::RaftRole::Shutdown) => "shutdown",
        _ => "unknown",
    }
}

/// A rate limit's kind, and the currency whose amounts it counts (none for a request rate).
pub fn rate_kind(kind: Option<&pb::RateKind>) -> (String, Option<&str>) {
    match kind.and_then(|k| k.kind.as_ref()) {
        Some(pb::rate_kind::Kind::Requests(_)) => ("requests".into(), None),
        Some(pb::rate_kind::Kind::CostCurrency(c)) => (format!("cost:{c}"), Some(c.as_str())),
        None => ("unknown".into(), None),
    }
}
