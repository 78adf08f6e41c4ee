//! `EnvironmentService`: tenant owners and admins create and delete
//! environments; quota admission happens in the store, under the tenant lock.

use mtp_core::environments::NewEnvironment;
use mtp_proto::v1 as pb;
use mtp_proto::v1::environment_service_server::EnvironmentService;
use mtp_store::EnvironmentFilter;
use tonic::{Request, Response, Status};

use super::Api;
use super::convert::{FromRequest, environment_to_pb, non_empty};
use super::error::ApiResult;

impl Api {
    async fn create_environment_inner(
        &self,
        request: Request<pb::CreateEnvironmentRequest>,
    ) -> ApiResult<pb::Environment> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        // Authorization comes before the rest of validation: a caller who may
        // not write this tenant's environments learns nothing from the rest of
        // its request. The tenant name has to be well-formed to be checked.
        mtp_core::names::validate_tenant_name("tenant", &r.tenant)?;
        caller.principal.check_write_environments(&r.tenant)?;
        let new = NewEnvironment::from_request(r)?;
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
        let tenant = caller
            .principal
            .list_scope(non_empty(r.tenant).as_deref())?;
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
