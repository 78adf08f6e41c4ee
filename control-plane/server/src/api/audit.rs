//! `AuditService`: reading the audit log (tenant-bound callers see their
//! tenant's events only) and verifying its hash chain.

use mtp_proto::v1 as pb;
use mtp_proto::v1::audit_service_server::AuditService;
use mtp_store::AuditFilter;
use tonic::{Request, Response, Status};

use super::Api;
use super::convert::{audit_event_to_pb, audit_limit, non_empty};
use super::error::ApiResult;

impl Api {
    async fn list_audit_events_inner(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> ApiResult<pb::ListAuditEventsResponse> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let tenant = caller
            .principal
            .list_scope(non_empty(r.tenant).as_deref())?;
        let filter = AuditFilter {
            tenant,
            after_sequence: r.after_sequence,
            limit: audit_limit(r.limit)?,
        };
        let events = self.store.list_audit_events(&filter).await?;
        Ok(pb::ListAuditEventsResponse {
            events: events.iter().map(audit_event_to_pb).collect(),
        })
    }

    async fn verify_audit_log_inner(
        &self,
        request: Request<pb::VerifyAuditLogRequest>,
    ) -> ApiResult<pb::VerifyAuditLogResponse> {
        let caller = self.caller(&request).await?;
        // Verification reads every tenant's events: not for tenant-bound tokens.
        if caller.principal.tenant_scope().is_some() {
            return Err(mtp_core::Error::PermissionDenied(
                "verifying the whole audit log needs a token that is not bound to a tenant".into(),
            )
            .into());
        }
        let report = self.store.verify_audit_log().await?;
        if let Some((seq, problem)) = &report.broken {
            tracing::error!(sequence = seq, %problem, "audit log verification found a broken link");
        }
        Ok(pb::VerifyAuditLogResponse {
            intact: report.broken.is_none(),
            events_checked: report.events_checked,
            first_broken_sequence: report.broken.as_ref().map_or(0, |(s, _)| *s),
            problem: report.broken.map(|(_, p)| p).unwrap_or_default(),
        })
    }
}

#[tonic::async_trait]
impl AuditService for Api {
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        Ok(Response::new(self.list_audit_events_inner(request).await?))
    }

    async fn verify_audit_log(
        &self,
        request: Request<pb::VerifyAuditLogRequest>,
    ) -> Result<Response<pb::VerifyAuditLogResponse>, Status> {
        Ok(Response::new(self.verify_audit_log_inner(request).await?))
    }
}
