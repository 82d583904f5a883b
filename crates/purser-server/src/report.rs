//! Reports from the rollups: grouping, filtering, the `Reports` gRPC service and the plain
//! HTTP endpoint `GET /v1/report` (CSV or JSON), which share one implementation.

use std::collections::BTreeMap;
use std::sync::Arc;

use purser_core::{NodeRef, State};
use purser_proto::pb;
use purser_storage::store::{RollupKey, Totals};
use tonic::{Request, Response, Status};

use crate::node::{now_ms, PurserNode};
use crate::services::write_status;

const DAY_MS: u64 = 86_400_000;
const HOUR_MS: u64 = 3_600_000;
/// Rows in one answer at most (group by fewer dimensions or a shorter range for more).
pub const REPORT_ROWS_MAX: usize = 100_000;
/// A range of at most ten years of hours.
const RANGE_MS_MAX: u64 = 10 * 366 * DAY_MS;

/// A validated report request.
pub struct Query {
    pub from_ms: u64,
    pub to_ms: u64,
    pub group_by: Vec<String>,
    filters: pb::ReportFilters,
    allow_stale: bool,
}

impl Query {
    pub fn parse(request: pb::ReportRequest) -> Result<Query, Status> {
        let to_ms = if request.to_ms == 0 {
            now_ms() + 1
        } else {
            request.to_ms
        };
        if request.from_ms >= to_ms {
            return Err(Status::invalid_argument(format!(
                "from {} must be before to {to_ms}",
                request.from_ms
            )));
        }
        if to_ms - request.from_ms > RANGE_MS_MAX {
            return Err(Status::invalid_argument(
                "a report covers at most ten years",
            ));
        }
        let mut group_by = Vec::new();
        for g in request.group_by {
            let g = g.trim().to_owned();
            if !purser_proto::report::DIMENSIONS.contains(&g.as_str()) {
                return Err(Status::invalid_argument(format!(
                    "cannot group by {g:?}: one of {}",
                    purser_proto::report::DIMENSIONS.join(", ")
                )));
            }
            if !group_by.contains(&g) {
                group_by.push(g);
            }
        }
        let filters = request.filters.unwrap_or_default();
        if let Some(tag) = &filters.tag {
            if !tag.contains('=') {
                return Err(Status::invalid_argument("a tag filter is key=value"));
            }
        }
        Ok(Query {
            from_ms: request.from_ms,
            to_ms,
            group_by,
            filters,
            allow_stale: request.allow_stale,
        })
    }

    fn by(&self, dimension: &str) -> bool {
        self.group_by.iter().any(|g| g == dimension)
    }
}

/// Group key: every dimension (absent when not grouped by) plus the currency.
type GroupKey = (
    Option<u64>,
    Option<u64>,
    Option<u64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

/// Filters and groups rollup rows. `state` resolves node filters and paths.
pub fn group(
    query: &Query,
    rows: Vec<(RollupKey, Totals)>,
    state: &State,
) -> Result<Vec<pb::ReportRow>, Status> {
    let f = &query.filters;
    let subtree = match &f.node {
        None => None,
        Some(node) => {
            let node = NodeRef::try_from(node.clone())?;
            let id = state
                .resolve(&node)
                .map_err(|e| purser_proto::convert::status_from_error(&e))?;
            Some(
                state
                    .path_of(id)
                    .map_err(|e| purser_proto::convert::status_from_error(&e))?,
            )
        }
    };
    let tag_filter = f.tag.as_ref().and_then(|t| t.split_once('='));
    let mut paths: BTreeMap<u64, String> = BTreeMap::new();
    let mut groups: BTreeMap<GroupKey, Totals> = BTreeMap::new();
    for (key, totals) in rows {
        let mismatch =
            |wanted: &Option<String>, value: &str| wanted.as_deref().is_some_and(|w| w != value);
        if mismatch(&f.user, &key.user)
            || mismatch(&f.model, &key.model)
            || mismatch(&f.provider, &key.provider)
            || mismatch(&f.credential_type, &key.credential_type)
            || mismatch(&f.currency, &key.currency)
        {
            continue;
        }
        if let Some((k, v)) = tag_filter {
            if !key.tags.iter().any(|(tk, tv)| tk == k && tv == v) {
                continue;
            }
        }
        let path = paths
            .entry(key.node)
            .or_insert_with(|| state.path_of(key.node).unwrap_or_default())
            .clone();
        if let Some(top) = &subtree {
            if !crate::meter::in_subtree(&path, top) {
                continue;
            }
        }
        let tags: Vec<Option<String>> = if query.by("tag") {
            if key.tags.is_empty() {
                vec![Some(String::new())]
            } else {
                key.tags
                    .iter()
                    .map(|(k, v)| Some(format!("{k}={v}")))
                    .collect()
            }
        } else {
            vec![None]
        };
        for tag in tags {
            let group: GroupKey = (
                query.by("hour").then_some(key.hour_ms),
                query
                    .by("day")
                    .then_some(key.hour_ms - key.hour_ms % DAY_MS),
                query.by("node").then_some(key.node),
                query.by("user").then(|| key.user.clone()),
                query.by("model").then(|| key.model.clone()),
                tag,
                query.by("provider").then(|| key.provider.clone()),
                query
                    .by("credential_type")
                    .then(|| key.credential_type.clone()),
                key.currency.clone(),
            );
            groups.entry(group).or_default().add(&totals);
            if groups.len() > REPORT_ROWS_MAX {
                return Err(Status::resource_exhausted(format!(
                    "more than {REPORT_ROWS_MAX} rows: group by fewer dimensions or narrow the range"
                )));
            }
        }
    }
    Ok(groups
        .into_iter()
        .map(
            |((hour, day, node, user, model, tag, provider, credential, currency), t)| {
                pb::ReportRow {
                    hour_ms: hour,
                    day_ms: day,
                    node_id: node,
                    node_path: node.map(|n| paths.get(&n).cloned().unwrap_or_default()),
                    user,
                    model,
                    provider,
                    credential_type: credential,
                    tag,
                    currency,
                    requests: t.requests,
                    input_tokens: t.input_tokens,
                    output_tokens: t.output_tokens,
                    cached_input_tokens: t.cached_input_tokens,
                    reasoning_tokens: t.reasoning_tokens,
                    cost: t.cost,
                    market_cost: t.market_cost,
                }
            },
        )
        .collect())
}

/// Runs a report on this member: after a read barrier unless stale reads are allowed, folds
/// what is applied, then groups.
pub async fn run(node: &Arc<PurserNode>, query: &Query) -> Result<Vec<pb::ReportRow>, Status> {
    if !query.allow_stale {
        node.read(|_, _| ()).await.map_err(write_status)?;
    }
    let sm = node.sm.clone();
    let (from, to) = (query.from_ms - query.from_ms % HOUR_MS, query.to_ms);
    let rows = tokio::task::spawn_blocking(move || sm.rollups(from, to))
        .await
        .map_err(|e| Status::internal(format!("report task: {e}")))?
        .map_err(|e| Status::internal(format!("reading rollups: {e}")))?;
    node.read_local(|state, _| group(query, rows, state))
}

#[derive(Clone)]
pub struct ReportService {
    node: Arc<PurserNode>,
}

impl ReportService {
    pub fn new(node: Arc<PurserNode>) -> Self {
        ReportService { node }
    }
}

#[tonic::async_trait]
impl pb::reports_server::Reports for ReportService {
    async fn report(
        &self,
        request: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        let query = Query::parse(request.into_inner())?;
        let rows = run(&self.node, &query).await?;
        Ok(Response::new(pb::ReportResponse { rows }))
    }
}
