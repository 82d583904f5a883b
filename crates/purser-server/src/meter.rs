//! The Meter service: `Watch` streams the events a member has applied, from any index, with
//! filters on kind and subtree. Indices are global (the same log on every member), so a client
//! resumes anywhere with its last index + 1.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use purser_core::webhook::{is_event_kind, kind_matches};
use purser_core::{Event, GovernanceEvent, NodeRef, State};
use purser_proto::pb;
use purser_storage::store::{EventRecord, EventsError};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::node::PurserNode;

/// Events read from storage per step, and events queued per watcher before it waits for the
/// client to take them.
const WATCH_CHUNK: usize = 1024;
/// Filter kinds per request at most.
const WATCH_KINDS_MAX: usize = 64;

#[derive(Clone)]
pub struct MeterService {
    node: Arc<PurserNode>,
}

impl MeterService {
    pub fn new(node: Arc<PurserNode>) -> Self {
        MeterService { node }
    }
}

/// What a watcher asked to see.
struct Filter {
    kinds: Vec<String>,
    /// `root/.../node` of the subtree, when one was given.
    subtree: Option<String>,
}

impl Filter {
    fn admits(&self, kind: &str, path: Option<&str>) -> bool {
        let kind_ok = self.kinds.is_empty() || self.kinds.iter().any(|k| kind_matches(k, kind));
        let node_ok = match (&self.subtree, path) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(top), Some(path)) => in_subtree(path, top),
        };
        kind_ok && node_ok
    }
}

/// `path` is `top` or a node below it (`acme/dev` is under `acme`, `acme/devops` is not
/// under `acme/dev`): the one subtree test of watches and reports.
pub(crate) fn in_subtree(path: &str, top: &str) -> bool {
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

fn to_wire(
    record: &EventRecord,
    kind: String,
    node_id: u64,
    json: serde_json::Value,
) -> pb::WatchEvent {
    pb::WatchEvent {
        index: record.index,
        log_index: record.log_index,
        at_ms: record.at_ms,
        kind,
        node_id,
        json: json.to_string(),
    }
}

fn events_status(error: EventsError) -> Status {
    match error {
        EventsError::NotKept { .. } => Status::out_of_range(error.to_string()),
        EventsError::Io(e) => Status::internal(format!("reading events: {e}")),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::meter_server::Meter for MeterService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let request = request.into_inner();
        if request.kinds.len() > WATCH_KINDS_MAX {
            return Err(Status::invalid_argument(format!(
                "at most {WATCH_KINDS_MAX} kinds"
            )));
        }
        if let Some(unknown) = request.kinds.iter().find(|k| !is_event_kind(k)) {
            return Err(Status::invalid_argument(format!(
                "unknown event kind {unknown:?}: usage, monetization, balance, governance or governance.<kind>"
            )));
        }
        let subtree = match request.node {
            None => None,
            Some(node) => {
                let node = NodeRef::try_from(node)?;
                let path = self
                    .node
                    .read_local(|state, _| state.resolve(&node).and_then(|id| state.path_of(id)))
                    .map_err(|e| purser_proto::convert::status_from_error(&e))?;
                Some(path)
            }
        };
        let filter = Filter {
            kinds: request.kinds,
            subtree,
        };
        let mut cursor = request.from_index.max(1);
        // Refuse at once what is not kept, rather than in the middle of the stream.
        self.node.sm.events_from(cursor, 1).map_err(events_status)?;
        let (tx, rx) = mpsc::channel::<Result<pb::WatchEvent, Status>>(WATCH_CHUNK);
        let node = self.node.clone();
        tokio::spawn(async move {
            let mut written = node.sm.events_written();
            loop {
                let records = match node.sm.events_from(cursor, WATCH_CHUNK) {
                    Ok(records) => records,
                    Err(e) => {
                        let _ = tx.send(Err(events_status(e))).await;
                        return;
                    }
                };
                if records.is_empty() {
                    tokio::select! {
                        changed = written.changed() => if changed.is_err() { return },
                        () = tx.closed() => return,
                    }
                    continue;
                }
                let described: Vec<_> = node.read_local(|state, _| {
                    records
                        .iter()
                        .map(|r| {
                            let (kind, node_id, json) = describe(&r.event, state);
                            let path = (node_id != 0)
                                .then(|| state.path_of(node_id).ok())
                                .flatten();
                            (kind, node_id, json, path)
                        })
                        .collect()
                });
                for (record, (kind, node_id, json, path)) in records.iter().zip(described) {
                    cursor = record.index + 1;
                    if filter.admits(&kind, path.as_deref())
                        && tx
                            .send(Ok(to_wire(record, kind, node_id, json)))
                            .await
                            .is_err()
                    {
                        return;
                    }
                }
            }
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_kind_prefixes_and_subtrees_only_at_boundaries() {
        let f = Filter {
            kinds: vec!["governance".into(), "usage".into()],
            subtree: Some("acme/dev".into()),
        };
        assert!(f.admits("governance.paused", Some("acme/dev")));
        assert!(f.admits("usage", Some("acme/dev/alice")));
        assert!(!f.admits("governance.paused", Some("acme/devops")));
        assert!(!f.admits("balance", Some("acme/dev")));
        assert!(!f.admits("usage", None));
        assert!(!f.admits("usagex", Some("acme/dev")));
        let all = Filter {
            kinds: vec![],
            subtree: None,
        };
        assert!(all.admits("monetization", None));
        assert_eq!(snake_case("ThresholdCrossed"), "threshold_crossed");
    }
}
