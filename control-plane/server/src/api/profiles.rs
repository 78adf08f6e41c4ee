//! `ProfileService`: everyone reads profiles; platform admins define new ones.

use mtp_proto::v1 as pb;
use mtp_proto::v1::profile_service_server::ProfileService;
use tonic::{Request, Response, Status};

use super::Api;
use mtp_core::profiles::Profile;

use super::convert::{FromRequest, profile_to_pb};
use super::error::ApiResult;

impl Api {
    async fn list_profiles_inner(
        &self,
        request: Request<pb::ListProfilesRequest>,
    ) -> ApiResult<pb::ListProfilesResponse> {
        self.caller(&request).await?;
        let profiles = self.store.list_profiles().await?;
        Ok(pb::ListProfilesResponse {
            profiles: profiles.iter().map(profile_to_pb).collect(),
        })
    }

    async fn get_profile_inner(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> ApiResult<pb::Profile> {
        self.caller(&request).await?;
        Ok(profile_to_pb(
            &self.store.get_profile(&request.get_ref().name).await?,
        ))
    }

    async fn create_profile_inner(
        &self,
        request: Request<pb::CreateProfileRequest>,
    ) -> ApiResult<pb::Profile> {
        let caller = self.caller(&request).await?;
        caller.principal.require_admin("defining profiles")?;
        let p = Profile::from_request(request.into_inner())?;
        let stored = self.store.create_profile(&caller.ctx, &p).await?;
        tracing::info!(profile = %stored.name, "profile created");
        Ok(profile_to_pb(&stored))
    }
}

#[tonic::async_trait]
impl ProfileService for Api {
    async fn list_profiles(
        &self,
        request: Request<pb::ListProfilesRequest>,
    ) -> Result<Response<pb::ListProfilesResponse>, Status> {
        Ok(Response::new(self.list_profiles_inner(request).await?))
    }

    async fn get_profile(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::Profile>, Status> {
        Ok(Response::new(self.get_profile_inner(request).await?))
    }

    async fn create_profile(
        &self,
        request: Request<pb::CreateProfileRequest>,
    ) -> Result<Response<pb::Profile>, Status> {
        Ok(Response::new(self.create_profile_inner(request).await?))
    }
}
