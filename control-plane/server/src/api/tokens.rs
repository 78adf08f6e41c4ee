//! `TokenService`: minting (secret shown once), listing and revoking API tokens.

use mtp_proto::v1 as pb;
use mtp_proto::v1::token_service_server::TokenService;
use mtp_store::NewToken;
use tonic::{Request, Response, Status};

use super::Api;
use super::convert::{from_timestamp, non_empty, role, token_to_pb};
use super::error::ApiResult;

impl Api {
    async fn create_token_inner(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> ApiResult<pb::CreateTokenResponse> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let role = role("role", r.role)?;
        let tenant = non_empty(r.tenant);
        if let Some(t) = &tenant {
            caller.principal.check_read_tenant(t)?;
        }
        caller
            .principal
            .check_create_token(role, tenant.as_deref())?;
        let new = NewToken {
            role,
            tenant,
            description: r.description,
            expire_time: r
                .expire_time
                .as_ref()
                .map(|t| from_timestamp("expire_time", t))
                .transpose()?,
        };
        let (token, secret) = self.store.create_token(&caller.ctx, &new).await?;
        tracing::info!(token = %token.id, role = role.as_str(), "token created");
        Ok(pb::CreateTokenResponse {
            token: Some(token_to_pb(&token)),
            secret,
        })
    }

    async fn list_tokens_inner(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> ApiResult<pb::ListTokensResponse> {
        let caller = self.caller(&request).await?;
        let scope = caller.principal.tenant_scope();
        if scope.is_none() {
            caller.principal.require_admin("listing all tokens")?;
        }
        let tokens = self.store.list_tokens(scope).await?;
        Ok(pb::ListTokensResponse {
            tokens: tokens.iter().map(token_to_pb).collect(),
        })
    }

    async fn revoke_token_inner(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> ApiResult<pb::Token> {
        let caller = self.caller(&request).await?;
        if caller.principal.role == mtp_core::access::Role::ReadOnly {
            return Err(mtp_core::Error::PermissionDenied("this token is read-only".into()).into());
        }
        let id = &request.get_ref().id;
        let token = self
            .store
            .revoke_token(&caller.ctx, id, caller.principal.tenant_scope())
            .await?;
        tracing::info!(token = %id, "token revoked");
        Ok(token_to_pb(&token))
    }
}

#[tonic::async_trait]
impl TokenService for Api {
    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        Ok(Response::new(self.create_token_inner(request).await?))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        Ok(Response::new(self.list_tokens_inner(request).await?))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        Ok(Response::new(self.revoke_token_inner(request).await?))
    }
}
