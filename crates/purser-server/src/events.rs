//! How an applied event shows outside the cluster: its kind (the vocabulary `Watch` filters
//! and webhooks subscribe with), the node it is about, and its fields as JSON. Shared by the
//! Meter service, webhook deliveries and reports.

use purser_core::{Event, GovernanceEvent, State};

/// `path` is `top` or a node below it (`acme/dev` is under `acme`, `acme/devops` is not
/// under `acme/dev`): the one subtree test of watches and reports.
pub fn in_subtree(path: &str, top: &str) -> bool {
    path.strip_prefix(top)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The kind, the node an event is about (0 when none) and its fields as a JSON object.
pub fn describe(event: &Event, state: &State) -> (String, u64, serde_json::Value) {
    let owner = |grant_id: u64| state.grant(grant_id).map_or(0, |g| g.node);
    let (kind, node) = match event {
        Event::Usage(e) => ("usage".to_owned(), e.node),
        Event::Monetization(e) => ("monetization".to_owned(), e.node),
        Event::Balance(e) => (
            "balance".to_owned(),
            e.windows
                .first()
                .map(|w| w.node)
                .or_else(|| e.grants.first().map(|g| owner(g.grant_id)))
                .unwrap_or(0),
        ),
        Event::Governance(g) => {
            let node = match g {
                GovernanceEvent::ThresholdCrossed { node, .. }
                | GovernanceEvent::SoftLimitExceeded { node, .. }
                | GovernanceEvent::Paused { node, .. }
                | GovernanceEvent::Resumed { node }
                | GovernanceEvent::WindowReset { node, .. }
                | GovernanceEvent::DebtPaid { node, .. }
                | GovernanceEvent::Overrun { node, .. }
                | GovernanceEvent::HoldExpired { node, .. } => *node,
                GovernanceEvent::GrantExpired { grant_id, .. }
                | GovernanceEvent::GrantExhausted { grant_id }
                | GovernanceEvent::GrantRenewed { grant_id, .. } => owner(*grant_id),
            };
            let json = serde_json::to_value(g).unwrap_or_default();
            let name = json
                .as_object()
                .and_then(|o| o.keys().next().cloned())
                .unwrap_or_default();
            (format!("governance.{}", snake_case(&name)), node)
        }
    };
    // Externally tagged: `{"Usage": {...}}`, `{"Governance": {"Paused": {...}}}`; keep the
    // innermost object.
    let mut json = serde_json::to_value(event).unwrap_or_default();
    while let Some(inner) = json
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.values().next())
        .filter(|v| v.is_object())
        .cloned()
    {
        json = inner;
    }
    (kind, node, json)
}

fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_snake_case_and_subtrees_end_at_a_slash() {
        assert_eq!(snake_case("ThresholdCrossed"), "threshold_crossed");
        assert!(in_subtree("acme/dev/alice", "acme/dev"));
        assert!(in_subtree("acme/dev", "acme/dev"));
        assert!(!in_subtree("acme/devops", "acme/dev"));
    }
}
