//! Reports from the rollups: a request checked, rows filtered and grouped. The `Reports` gRPC
//! service (`service/report.rs`) and the HTTP endpoint `GET /v1/report` (`http.rs`) share this
//! one implementation.

use std::collections::BTreeMap;

use purser_core::{Access, Need, NodeRef, State};
use purser_proto::convert::status_from_error;
use purser_proto::pb;
use purser_storage::store::{RollupKey, Totals};
use tonic::Status;

use crate::clock::now_ms;
use crate::events::in_subtree;
use crate::write::WritePath;

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

    /// Keeps the report within what `caller` may see: a node filter must lie in its scope,
    /// and a report without one is the report of its scope node.
    pub fn restrict_to(&mut self, path: &WritePath, caller: Option<u64>) -> Result<(), Status> {
        let Some(actor) = caller else {
            return Ok(());
        };
        match &self.filters.node {
            Some(node) => {
                let node = NodeRef::try_from(node.clone())?;
                path.authorize(caller, Need::Node(&node, Access::Viewer))?;
            }
            None => {
                let scope = path
                    .read_local(|state, _| state.token_scope(actor))
                    .map_err(|e| status_from_error(&e))?;
                self.filters.node = scope.map(|id| pb::NodeRef {
                    node: Some(pb::node_ref::Node::Id(id)),
                });
            }
        }
        Ok(())
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
    let subtree = subtree_of(&query.filters, state)?;
    let mut paths: BTreeMap<u64, String> = BTreeMap::new();
    let mut groups: BTreeMap<GroupKey, Totals> = BTreeMap::new();
    for (key, totals) in rows {
        if !admits(&query.filters, &key) {
            continue;
        }
        let path = paths
            .entry(key.node)
            .or_insert_with(|| state.path_of(key.node).unwrap_or_default());
        if subtree.as_ref().is_some_and(|top| !in_subtree(path, top)) {
            continue;
        }
        for group in group_keys(query, &key) {
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
        .map(|(group, totals)| report_row(group, &totals, &paths))
        .collect())
}

/// The path of the subtree a report is filtered to, if it is.
fn subtree_of(filters: &pb::ReportFilters, state: &State) -> Result<Option<String>, Status> {
    let Some(node) = &filters.node else {
        return Ok(None);
    };
    let node = NodeRef::try_from(node.clone())?;
    let path = state
        .resolve(&node)
        .and_then(|id| state.path_of(id))
        .map_err(|e| status_from_error(&e))?;
    Ok(Some(path))
}

/// Whether a row passes the filters on its dimensions (the subtree is checked apart).
fn admits(filters: &pb::ReportFilters, key: &RollupKey) -> bool {
    let matches =
        |wanted: &Option<String>, value: &str| wanted.as_deref().is_none_or(|w| w == value);
    let tag_ok = match filters.tag.as_ref().and_then(|t| t.split_once('=')) {
        None => true,
        Some((k, v)) => key.tags.iter().any(|(tk, tv)| tk == k && tv == v),
    };
    matches(&filters.user, &key.user)
        && matches(&filters.model, &key.model)
        && matches(&filters.provider, &key.provider)
        && matches(&filters.credential_type, &key.credential_type)
        && matches(&filters.currency, &key.currency)
        && tag_ok
}

/// The groups one row counts in: one, or one per tag when grouped by tag (a row without
/// tags under "").
fn group_keys(query: &Query, key: &RollupKey) -> Vec<GroupKey> {
    let tags: Vec<Option<String>> = if !query.by("tag") {
        vec![None]
    } else if key.tags.is_empty() {
        vec![Some(String::new())]
    } else {
        key.tags
            .iter()
            .map(|(k, v)| Some(format!("{k}={v}")))
            .collect()
    };
    tags.into_iter()
        .map(|tag| {
            (
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
            )
        })
        .collect()
}

fn report_row(group: GroupKey, t: &Totals, paths: &BTreeMap<u64, String>) -> pb::ReportRow {
    let (hour, day, node, user, model, tag, provider, credential, currency) = group;
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
}

/// Runs a report on this member: after a read barrier unless stale reads are allowed, folds
/// what is applied, then groups.
pub async fn run(path: &WritePath, query: &Query) -> Result<Vec<pb::ReportRow>, Status> {
    if !query.allow_stale {
        path.read(|_, _| ()).await?;
    }
    let sm = path.sm.clone();
    let (from, to) = (query.from_ms - query.from_ms % HOUR_MS, query.to_ms);
    let rows = tokio::task::spawn_blocking(move || sm.rollups(from, to))
        .await
        .map_err(|e| Status::internal(format!("report task: {e}")))?
        .map_err(|e| Status::internal(format!("reading rollups: {e}")))?;
    path.read_local(|state, _| group(query, rows, state))
}
