//! `TenantService`: tenants are created and changed by platform admins and
//! read by anyone whose token can see them.

use mtp_core::tenants::{TenantSpec, TenantUpdate};
use mtp_proto::v1 as pb;
use mtp_proto::v1::tenant_service_server::TenantService;
use tonic::{Request, Response, Status};

use super::Api;
use super::convert::{FromRequest, tenant_to_pb};
use super::error::ApiResult;

impl Api {
    async fn create_tenant_inner(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> ApiResult<pb::Tenant> {
        let caller = self.caller(&request).await?;
        caller.principal.require_admin("creating tenants")?;
        let spec = TenantSpec::from_request(request.into_inner())?;
        let tenant = self.store.create_tenant(&caller.ctx, &spec).await?;
        tracing::info!(tenant = %spec.name, "tenant created");
        Ok(tenant_to_pb(&tenant))
    }

    async fn get_tenant_inner(
        &self,
        request: Request<pb::GetTenantRequest>,
    ) -> ApiResult<pb::Tenant> {
        let caller = self.caller(&request).await?;
        let name = &request.get_ref().name;
        caller.principal.check_read_tenant(name)?;
        Ok(tenant_to_pb(&self.store.get_tenant(name).await?))
    }

    async fn list_tenants_inner(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> ApiResult<pb::ListTenantsResponse> {
        let caller = self.caller(&request).await?;
        let tenants = self
            .store
            .list_tenants(caller.principal.tenant_scope())
            .await?;
        Ok(pb::ListTenantsResponse {
            tenants: tenants.iter().map(tenant_to_pb).collect(),
        })
    }

    async fn update_tenant_inner(
        &self,
        request: Request<pb::UpdateTenantRequest>,
    ) -> ApiResult<pb::Tenant> {
        let caller = self.caller(&request).await?;
        let name = request.get_ref().name.clone();
        caller.principal.check_read_tenant(&name)?;
        caller.principal.require_admin("changing tenants")?;
        let update = TenantUpdate::from_request(request.into_inner())?;
        let tenant = self
            .store
            .update_tenant(&caller.ctx, &name, &update)
            .await?;
        tracing::info!(tenant = %name, "tenant updated");
        Ok(tenant_to_pb(&tenant))
    }

    async fn delete_tenant_inner(
        &self,
        request: Request<pb::DeleteTenantRequest>,
    ) -> ApiResult<pb::DeleteTenantResponse> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        caller.principal.check_read_tenant(&r.name)?;
        caller.principal.require_admin("deleting tenants")?;
        let deleted = self
            .store
            .delete_tenant(&caller.ctx, &r.name, r.cascade)
            .await?;
        tracing::info!(tenant = %r.name, cascade = r.cascade, environments = deleted.len(), "tenant deleted");
        Ok(pb::DeleteTenantResponse {
            deleted_environments: deleted,
        })
    }
}

#[tonic::async_trait]
impl TenantService for Api {
    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        Ok(Response::new(self.create_tenant_inner(request).await?))
    }

    async fn get_tenant(
        &self,
        request: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        Ok(Response::new(self.get_tenant_inner(request).await?))
    }

    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        Ok(Response::new(self.list_tenants_inner(request).await?))
    }

    async fn update_tenant(
        &self,
        request: Request<pb::UpdateTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        Ok(Response::new(self.update_tenant_inner(request).await?))
    }

    async fn delete_tenant(
        &self,
        request: Request<pb::DeleteTenantRequest>,
    ) -> Result<Response<pb::DeleteTenantResponse>, Status> {
        Ok(Response::new(self.delete_tenant_inner(request).await?))
    }
}
