//! The Reports service: where the money went, from the rollups (`report.rs`).

use std::sync::Arc;

use pb::reports_server::{Reports, ReportsServer};
use purser_proto::pb;
use tonic::{Request, Response, Status};

use crate::report::{run, Query};
use crate::write::WritePath;

#[derive(Clone)]
pub struct ReportService {
    path: Arc<WritePath>,
}

impl ReportService {
    pub fn server(path: Arc<WritePath>) -> ReportsServer<Self> {
        ReportsServer::new(ReportService { path })
    }
}

#[tonic::async_trait]
impl Reports for ReportService {
    async fn report(
        &self,
        request: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        let caller = self.path.caller(&request)?;
        let mut query = Query::parse(request.into_inner())?;
        query.restrict_to(&self.path, caller)?;
        let rows = run(&self.path, &query).await?;
        Ok(Response::new(pb::ReportResponse { rows }))
    }
}
