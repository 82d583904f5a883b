//! The Meter service: `Watch` streams the events a member has applied, from any index, with
//! filters on kind and subtree. Indices are global (the same log on every member), so a client
//! resumes anywhere with its last index + 1.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use pb::meter_server::{Meter, MeterServer};
use purser_core::webhook::{is_event_kind, kind_matches};
use purser_core::{Access, Need, NodeRef};
use purser_proto::convert::status_from_error;
use purser_proto::pb;
use purser_storage::store::{EventRecord, EventsError};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::events::{describe, in_subtree};
use crate::write::WritePath;

/// Events read from storage per step, and events queued per watcher before it waits for the
/// client to take them.
const WATCH_CHUNK: usize = 1024;
/// Filter kinds per request at most.
const WATCH_KINDS_MAX: usize = 64;

#[derive(Clone)]
pub struct MeterService {
    path: Arc<WritePath>,
}

impl MeterService {
    pub fn server(path: Arc<WritePath>) -> MeterServer<Self> {
        MeterServer::new(MeterService { path })
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
        token_id: record.actor.unwrap_or(0),
    }
}

fn events_status(error: EventsError) -> Status {
    match error {
        EventsError::NotKept { .. } => Status::out_of_range(error.to_string()),
        EventsError::Io(e) => Status::internal(format!("reading events: {e}")),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;
type Sent = mpsc::Sender<Result<pb::WatchEvent, Status>>;

impl MeterService {
    /// What a request asks to see, checked: never more than the caller's scope (a watch
    /// without a node is a watch of the caller's scope node).
    fn filter(
        &self,
        caller: Option<u64>,
        kinds: Vec<String>,
        node: Option<pb::NodeRef>,
    ) -> Result<Filter, Status> {
        if kinds.len() > WATCH_KINDS_MAX {
            return Err(Status::invalid_argument(format!(
                "at most {WATCH_KINDS_MAX} kinds"
            )));
        }
        if let Some(unknown) = kinds.iter().find(|k| !is_event_kind(k)) {
            return Err(Status::invalid_argument(format!(
                "unknown event kind {unknown:?}: usage, monetization, balance, governance or governance.<kind>"
            )));
        }
        let top = match node {
            Some(node) => {
                let node = NodeRef::try_from(node)?;
                self.path
                    .authorize(caller, Need::Node(&node, Access::Viewer))?;
                Some(node)
            }
            None => match caller {
                Some(actor) => self
                    .path
                    .read_local(|state, _| state.token_scope(actor))
                    .map_err(|e| status_from_error(&e))?
                    .map(NodeRef::Id),
                None => None,
            },
        };
        let subtree = match top {
            None => None,
            Some(node) => Some(
                self.path
                    .read_local(|state, _| state.resolve(&node).and_then(|id| state.path_of(id)))
                    .map_err(|e| status_from_error(&e))?,
            ),
        };
        Ok(Filter { kinds, subtree })
    }
}

/// Sends what `filter` admits from `cursor` on, as events are applied, until the watcher
/// leaves or an event it needs is no longer kept.
async fn follow(path: Arc<WritePath>, filter: Filter, mut cursor: u64, tx: Sent) {
    let mut written = path.sm.events_written();
    loop {
        let records = match path.sm.events_from(cursor, WATCH_CHUNK) {
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
        let described = path.read_local(|state, _| {
            records
                .iter()
                .map(|r| {
                    let (kind, node_id, json) = describe(&r.event, state);
                    let node_path = (node_id != 0)
                        .then(|| state.path_of(node_id).ok())
                        .flatten();
                    (kind, node_id, json, node_path)
                })
                .collect::<Vec<_>>()
        });
        for (record, (kind, node_id, json, node_path)) in records.iter().zip(described) {
            cursor = record.index + 1;
            if filter.admits(&kind, node_path.as_deref())
                && tx
                    .send(Ok(to_wire(record, kind, node_id, json)))
                    .await
                    .is_err()
            {
                return;
            }
        }
    }
}

#[tonic::async_trait]
impl Meter for MeterService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = self.path.caller(&request)?;
        let request = request.into_inner();
        let filter = self.filter(caller, request.kinds, request.node)?;
        let cursor = request.from_index.max(1);
        // Refuse at once what is not kept, rather than in the middle of the stream.
        self.path.sm.events_from(cursor, 1).map_err(events_status)?;
        let (tx, rx) = mpsc::channel(WATCH_CHUNK);
        tokio::spawn(follow(self.path.clone(), filter, cursor, tx));
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
    }
}
