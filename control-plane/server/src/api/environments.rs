//! `EnvironmentService`: tenant owners and admins create and delete
//! environments; quota admission happens in the store, under the tenant lock.

use mtp_core::environments::NewEnvironment;
use mtp_core::names::{validate_environment_name, validate_object_name, validate_tenant_name};
use mtp_proto::v1 as pb;
use mtp_proto::v1::environment_service_server::EnvironmentService;
use mtp_store::EnvironmentFilter;
use tonic::{Request, Response, Status};

use super::Api;
use super::convert::{environment_to_pb, from_timestamp, non_empty, quota_override};
use super::error::ApiResult;

impl Api {
    async fn create_environment_inner(
        &self,
        request: Request<pb::CreateEnvironmentRequest>,
    ) -> ApiResult<pb::Environment> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        validate_tenant_name("tenant", &r.tenant)?;
        caller.principal.check_write_environments(&r.tenant)?;
        validate_environment_name("name", &r.name)?;
        validate_object_name("cluster", &r.cluster)?;
        validate_object_name("profile", &r.profile)?;
        let expire_time = r
            .expire_time
            .as_ref()
            .map(|t| from_timestamp("expire_time", t))
            .transpose()?;
        if expire_time.is_some_and(|t| t <= chrono::Utc::now()) {
            return Err(mtp_core::Error::invalid("expire_time", "must be in the future").into());
        }
        let new = NewEnvironment {
            quota_override: quota_override("quota_override", &r.quota_override)?,
            tenant: r.tenant,
            name: r.name,
            cluster: r.cluster,
            profile: r.profile,
            expire_time,
        };
        let env = self.store.create_environment(&caller.ctx, &new).await?;
        Ok(environment_to_pb(&env))
    }

    async fn get_environment_inner(
        &self,
        request: Request<pb::GetEnvironmentRequest>,
    ) -> ApiResult<pb::Environment> {
        let caller = self.caller(&request).await?;
        let r = request.get_ref();
        caller.principal.check_read_tenant(&r.tenant)?;
        Ok(environment_to_pb(
            &self.store.get_environment(&r.tenant, &r.name).await?,
        ))
    }

    async fn list_environments_inner(
        &self,
        request: Request<pb::ListEnvironmentsRequest>,
    ) -> ApiResult<pb::ListEnvironmentsResponse> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let mut tenant = non_empty(r.tenant);
        if let Some(t) = &tenant {
            caller.principal.check_read_tenant(t)?;
        }
        // Tenant-bound callers only ever see their own tenant.
        if let Some(scope) = caller.principal.tenant_scope() {
            tenant = Some(scope.to_owned());
        }
        let filter = EnvironmentFilter {
            tenant,
            cluster: non_empty(r.cluster),
            include_deleted: r.include_deleted,
        };
        let envs = self.store.list_environments(&filter).await?;
        Ok(pb::ListEnvironmentsResponse {
            environments: envs.iter().map(environment_to_pb).collect(),
        })
    }

    async fn delete_environment_inner(
        &self,
        request: Request<pb::DeleteEnvironmentRequest>,
    ) -> ApiResult<pb::Environment> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        caller.principal.check_write_environments(&r.tenant)?;
        let env = self
            .store
            .delete_environment(&caller.ctx, &r.tenant, &r.name)
            .await?;
        tracing::info!(tenant = %r.tenant, env = %r.name, "environment deletion requested");
        Ok(environment_to_pb(&env))
    }
}

#[tonic::async_trait]
impl EnvironmentService for Api {
    async fn create_environment(
        &self,
        request: Request<pb::CreateEnvironmentRequest>,
    ) -> Result<Response<pb::Environment>, Status> {
        Ok(Response::new(self.create_environment_inner(request).await?))
    }

    async fn get_environment(
        &self,
        request: Request<pb::GetEnvironmentRequest>,
    ) -> Result<Response<pb::Environment>, Status> {
        Ok(Response::new(self.get_environment_inner(request).await?))
    }

    async fn list_environments(
        &self,
        request: Request<pb::ListEnvironmentsRequest>,
    ) -> Result<Response<pb::ListEnvironmentsResponse>, Status> {
        Ok(Response::new(self.list_environments_inner(request).await?))
    }

    async fn delete_environment(
        &self,
        request: Request<pb::DeleteEnvironmentRequest>,
    ) -> Result<Response<pb::Environment>, Status> {
        Ok(Response::new(self.delete_environment_inner(request).await?))
    }
}
